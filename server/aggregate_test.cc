#include "server/aggregate.h"

#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(SyncAggregatorTest, MeanOfExactlyTheWorkersPushes) {
  SyncAggregator agg(2, 3);
  const float a[2] = {1, 2}, b[2] = {3, 4}, c[2] = {5, 9};
  ASSERT_TRUE(agg.Check(0, 1, 0).ok());
  EXPECT_FALSE(agg.Add(0, a));
  ASSERT_TRUE(agg.Check(2, 1, 0).ok());
  EXPECT_FALSE(agg.Add(2, c));
  EXPECT_EQ(agg.pending(), 2u);
  ASSERT_TRUE(agg.Check(1, 1, 0).ok());
  EXPECT_TRUE(agg.Add(1, b));
  const float* mean = agg.Mean();
  EXPECT_FLOAT_EQ(mean[0], 3.0f);
  EXPECT_FLOAT_EQ(mean[1], 5.0f);
  agg.Reset();
  EXPECT_EQ(agg.pending(), 0u);
  // The next step starts from zero, not from the previous sum.
  ASSERT_TRUE(agg.Check(0, 2, 1).ok());
  agg.Add(0, a);
  agg.Add(1, a);
  EXPECT_TRUE(agg.Add(2, a));
  EXPECT_FLOAT_EQ(agg.Mean()[1], 2.0f);
}

TEST(SyncAggregatorTest, RejectsStaleFutureAndDuplicatePushes) {
  SyncAggregator agg(1, 2);
  EXPECT_EQ(agg.Check(0, 3, 3).code(), absl::StatusCode::kFailedPrecondition);  // applied
  EXPECT_EQ(agg.Check(0, 2, 3).code(), absl::StatusCode::kFailedPrecondition);  // applied
  EXPECT_EQ(agg.Check(0, 5, 3).code(), absl::StatusCode::kFailedPrecondition);  // ahead
  const float g = 1;
  ASSERT_TRUE(agg.Check(0, 4, 3).ok());
  agg.Add(0, &g);
  EXPECT_EQ(agg.Check(0, 4, 3).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(agg.Check(1, 4, 3).ok());
}

TEST(SyncAggregatorTest, SingleWorkerAppliesEveryPush) {
  SyncAggregator agg(1, 1);
  const float g = 7;
  EXPECT_TRUE(agg.Add(0, &g));
  EXPECT_FLOAT_EQ(agg.Mean()[0], 7.0f);
}

}  // namespace
}  // namespace psrv

#include "server/aggregate.h"

#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(SyncAggregatorTest, MeanOfExactlyTheWorkersPushes) {
  SyncAggregator agg(2, 3);
  const float a[2] = {1, 2}, b[2] = {3, 4}, c[2] = {5, 9};
  ASSERT_TRUE(agg.Check(0, 1, 0, 0, 2).ok());
  EXPECT_FALSE(agg.Add(0, 1, 0, 2, a));
  ASSERT_TRUE(agg.Check(2, 1, 0, 0, 2).ok());
  EXPECT_FALSE(agg.Add(2, 1, 0, 2, c));
  EXPECT_EQ(agg.pending(), 2u);
  ASSERT_TRUE(agg.Check(1, 1, 0, 0, 2).ok());
  EXPECT_TRUE(agg.Add(1, 1, 0, 2, b));
  const float* mean = agg.Mean();
  EXPECT_FLOAT_EQ(mean[0], 3.0f);
  EXPECT_FLOAT_EQ(mean[1], 5.0f);
  agg.Reset();
  EXPECT_EQ(agg.pending(), 0u);
  // The next step starts from zero, not from the previous sum.
  ASSERT_TRUE(agg.Check(0, 2, 1, 0, 2).ok());
  agg.Add(0, 2, 0, 2, a);
  agg.Add(1, 2, 0, 2, a);
  EXPECT_TRUE(agg.Add(2, 2, 0, 2, a));
  EXPECT_FLOAT_EQ(agg.Mean()[1], 2.0f);
}

TEST(SyncAggregatorTest, ChunksCompleteAWorkersPush) {
  SyncAggregator agg(4, 2);
  const float ones[4] = {1, 1, 1, 1}, threes[4] = {3, 3, 3, 3};
  ASSERT_TRUE(agg.Check(0, 1, 0, 2, 2).ok());
  EXPECT_FALSE(agg.Add(0, 1, 2, 2, ones));
  EXPECT_FALSE(agg.Add(1, 1, 0, 4, threes));  // Worker 1 done; worker 0 has half.
  // Overlapping chunks are refused, adjacent ones are fine.
  EXPECT_EQ(agg.Check(0, 1, 0, 1, 2).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(agg.Check(0, 1, 0, 3, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(agg.Check(1, 1, 0, 0, 1).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(agg.Check(0, 1, 0, 0, 2).ok());
  EXPECT_TRUE(agg.Add(0, 1, 0, 2, ones));
  const float* mean = agg.Mean();
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(mean[i], 2.0f);
  EXPECT_EQ(agg.pending(), 3u);
}

TEST(SyncAggregatorTest, RejectsStaleFutureAndDuplicatePushes) {
  SyncAggregator agg(1, 2);
  EXPECT_EQ(agg.Check(0, 3, 3, 0, 1).code(), absl::StatusCode::kAlreadyExists);  // applied
  EXPECT_EQ(agg.Check(0, 2, 3, 0, 1).code(), absl::StatusCode::kAlreadyExists);  // applied
  EXPECT_EQ(agg.Check(0, 0, 3, 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.Check(0, 5, 3, 0, 1).code(), absl::StatusCode::kFailedPrecondition);  // ahead
  const float g = 1;
  ASSERT_TRUE(agg.Check(0, 4, 3, 0, 1).ok());
  agg.Add(0, 4, 0, 1, &g);
  EXPECT_EQ(agg.Check(0, 4, 3, 0, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(agg.Check(1, 4, 3, 0, 1).ok());
}

TEST(SyncAggregatorTest, SingleWorkerAppliesEveryPush) {
  SyncAggregator agg(1, 1);
  const float g = 7;
  EXPECT_TRUE(agg.Add(0, 1, 0, 1, &g));
  EXPECT_FLOAT_EQ(agg.Mean()[0], 7.0f);
}

TEST(SyncAggregatorTest, AWorkerLeavingMidStepCompletesItWithoutIt) {
  SyncAggregator agg(4, 3);
  const float a[4] = {3, 3, 3, 3}, c[2] = {6, 6};
  agg.Add(0, 1, 0, 4, a);
  EXPECT_FALSE(agg.Add(2, 1, 0, 2, c));  // Rank 2 pushed half its keys, then died.
  EXPECT_EQ(agg.IncompleteWorkers(), (std::vector<uint32_t>{1, 2}));
  // Rank 1 never pushed: removing it alone leaves rank 2 incomplete.
  const uint64_t never = SyncAggregator::kNever;
  EXPECT_FALSE(*agg.SetWorkers({0, never, 0}, 1));
  EXPECT_EQ(agg.IncompleteWorkers(), (std::vector<uint32_t>{2}));
  // Rank 2 removed too: the step completes; its keys count where it pushed them.
  EXPECT_TRUE(*agg.SetWorkers({0, never, never}, 1));
  const float* mean = agg.Mean();
  EXPECT_FLOAT_EQ(mean[0], 4.5f);  // (3 + 6) / 2
  EXPECT_FLOAT_EQ(mean[1], 4.5f);
  EXPECT_FLOAT_EQ(mean[2], 3.0f);  // Rank 0 alone.
  EXPECT_FLOAT_EQ(mean[3], 3.0f);
  agg.Reset();
  // Removed ranks' pushes are refused; the next step is rank 0's alone.
  EXPECT_EQ(agg.Check(1, 2, 1, 0, 4).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(agg.Check(0, 2, 1, 0, 4).ok());
  EXPECT_TRUE(agg.Add(0, 2, 0, 4, a));
  EXPECT_FLOAT_EQ(agg.Mean()[3], 3.0f);
}

TEST(SyncAggregatorTest, AJoiningWorkerCountsFromItsFirstStep) {
  SyncAggregator agg(1, 2);
  const uint64_t never = SyncAggregator::kNever;
  ASSERT_TRUE(agg.SetWorkers({0, never}, 1).ok());
  ASSERT_TRUE(agg.SetWorkers({0, 3}, 1).ok());  // Rank 1 (a new worker) joins at step 3.
  const float g = 2, h = 4;
  EXPECT_EQ(agg.Check(1, 2, 1, 0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(agg.Add(0, 2, 0, 1, &g));  // Step 2: rank 0 alone.
  agg.Reset();
  EXPECT_FALSE(agg.Add(0, 3, 0, 1, &g));  // Step 3 waits for rank 1.
  EXPECT_TRUE(agg.Add(1, 3, 0, 1, &h));
  EXPECT_FLOAT_EQ(agg.Mean()[0], 3.0f);
  EXPECT_EQ(agg.SetWorkers({never, never}, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.SetWorkers({0}, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace psrv

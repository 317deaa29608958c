// The parsers of ps_worker's trainer flags (--overlap, --compute, --slowdown).
#include "worker/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace psrv {
namespace {

TEST(ParseSlowdownTest, TakesAFactorAndAnOptionalProbability) {
  TrainerOptions options;
  ASSERT_TRUE(ParseSlowdown("4@0.1", &options).ok());
  EXPECT_EQ(options.slowdown.factor, 4);
  EXPECT_DOUBLE_EQ(options.slowdown.probability, 0.1);
  ASSERT_TRUE(ParseSlowdown("3", &options).ok());
  EXPECT_EQ(options.slowdown.factor, 3);
  EXPECT_EQ(options.slowdown.probability, 1);
  ASSERT_TRUE(ParseSlowdown("1", &options).ok());
  EXPECT_EQ(options.slowdown.factor, 1);
}

TEST(ParseSlowdownTest, RefusesWhatIsNotAFactorInRangeAndAProbability) {
  for (const char* bad : {"", "0.5", "4@", "4@1.5", "4@-0.1", "x", "4@0.1@2", "1001", "nan"}) {
    TrainerOptions options;
    const absl::Status status = ParseSlowdown(bad, &options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()), testing::HasSubstr("FACTOR")) << bad;
    EXPECT_EQ(options.slowdown.factor, 1) << bad;  // Unchanged.
  }
}

TEST(ParseComputeTest, TakesModelOrSyntheticMilliseconds) {
  TrainerOptions options;
  ASSERT_TRUE(ParseCompute("synthetic:10", &options).ok());
  EXPECT_EQ(options.synthetic_compute, absl::Milliseconds(10));
  ASSERT_TRUE(ParseCompute("model", &options).ok());
  EXPECT_LT(options.synthetic_compute, absl::ZeroDuration());
  EXPECT_EQ(ParseCompute("synthetic:-1", &options).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCompute("gpu", &options).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseOverlapTest, TakesAutoOnOff) {
  TrainerOptions options;
  ASSERT_TRUE(ParseOverlap("off", &options).ok());
  EXPECT_EQ(options.overlap, TrainerOptions::Overlap::kOff);
  ASSERT_TRUE(ParseOverlap("on", &options).ok());
  EXPECT_EQ(options.overlap, TrainerOptions::Overlap::kOn);
  EXPECT_EQ(ParseOverlap("sometimes", &options).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace psrv

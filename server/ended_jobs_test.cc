#include "server/ended_jobs.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

using Jobs = std::vector<std::string>;

TEST(EndedJobsTest, DropsEachJobOnceItsTimeToLiveIsOver) {
  EndedJobs ended(absl::Minutes(10));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(ended.Add(Jobs{"a"}, t0), 1u);
  // Reported again with every heartbeat: keeps its first time.
  EXPECT_EQ(ended.Add(Jobs{"a", "b"}, t0 + absl::Minutes(5)), 2u);
  EXPECT_TRUE(ended.TakeExpired(t0 + absl::Minutes(9)).empty());
  EXPECT_EQ(ended.TakeExpired(t0 + absl::Minutes(10)), Jobs{"a"});
  EXPECT_TRUE(ended.TakeExpired(t0 + absl::Minutes(11)).empty());  // Once.
  EXPECT_EQ(ended.TakeExpired(t0 + absl::Minutes(15)), Jobs{"b"});
  EXPECT_EQ(ended.Add(Jobs{"a", "b"}, t0 + absl::Minutes(20)), 2u);  // Not again.
  EXPECT_TRUE(ended.TakeExpired(t0 + absl::Hours(1)).empty());
}

TEST(EndedJobsTest, AnInfiniteTimeToLiveKeepsEverything) {
  EndedJobs ended(absl::InfiniteDuration());
  ended.Add(Jobs{"a"}, absl::UnixEpoch());
  EXPECT_TRUE(ended.TakeExpired(absl::InfiniteFuture()).empty());
}

}  // namespace
}  // namespace psrv

#include "common/event_rate.h"

#include <gtest/gtest.h>

namespace psrv {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000000);

TEST(EventRateTest, SteadyRateOverTheWindow) {
  EventRate rate(kStart);
  // 5 events per second for 30 s.
  for (int ms = 0; ms < 30000; ms += 200) rate.Add(kStart + absl::Milliseconds(ms));
  EXPECT_NEAR(rate.PerSecond(kStart + absl::Seconds(30)), 5.0, 0.6);
}

TEST(EventRateTest, YoungRatesUseTheTimeSinceTheStart) {
  EventRate rate(kStart);
  for (int i = 0; i < 20; ++i) rate.Add(kStart + absl::Milliseconds(100 * i));
  // 20 events in the first 2 s: 10/s, not 2/s over a 10-s window.
  EXPECT_NEAR(rate.PerSecond(kStart + absl::Seconds(2)), 10.0, 0.01);
  // Within the first second the divisor is one second.
  EventRate fresh(kStart);
  fresh.Add(kStart);
  EXPECT_EQ(fresh.PerSecond(kStart + absl::Milliseconds(10)), 1.0);
}

TEST(EventRateTest, OldEventsLeaveTheWindow) {
  EventRate rate(kStart);
  for (int i = 0; i < 100; ++i) rate.Add(kStart + absl::Milliseconds(10 * i), 2.0);  // Bytes.
  EXPECT_GT(rate.PerSecond(kStart + absl::Seconds(5)), 0);
  EXPECT_EQ(rate.PerSecond(kStart + absl::Seconds(11)), 0);
  // A bucket reused for a later second starts from zero.
  rate.Add(kStart + absl::Seconds(20), 3.0);
  EXPECT_NEAR(rate.PerSecond(kStart + absl::Seconds(20) + absl::Milliseconds(500)), 3.0 / 9.5,
              1e-9);
}

}  // namespace
}  // namespace psrv

#include "coordinator/server_calls.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(CallEachTest, CallsEveryAddressAtOnceAndKeepsTheOrder) {
  // Each call waits for all the others to have begun: only concurrent calls return.
  std::atomic<int> begun{0};
  const std::vector<std::string> addresses = {"a", "b", "c"};
  const std::vector<std::string> results = CallEach(addresses, [&](const std::string& address) {
    ++begun;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (begun < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    return begun == 3 ? address + "!" : std::string("alone");
  });
  EXPECT_EQ(results, (std::vector<std::string>{"a!", "b!", "c!"}));
}

TEST(ServerCallsTest, ARoundIsWaitedForUntilItsCallsReturnOrTheDeadline) {
  ServerCalls calls;
  const CallRound round;
  absl::Notification release;
  std::atomic<bool> nested_ran{false};
  ASSERT_TRUE(calls.Start(
      [&] {
        // A call may start another in the same round: the round waits for it too.
        calls.Start([&] { nested_ran = true; }, &round);
      },
      &round));
  round.WaitUntil(absl::InfiniteFuture());
  EXPECT_TRUE(nested_ran);

  ASSERT_TRUE(calls.Start([&] { release.WaitForNotification(); }, &round));
  const absl::Time start = absl::Now();
  round.WaitUntil(start + absl::Milliseconds(100));  // The call is still blocked: gives up.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  EXPECT_FALSE(release.HasBeenNotified());
  release.Notify();
  round.WaitUntil(absl::InfiniteFuture());
}

TEST(ServerCallsTest, StopWaitsForTheRunningCallsAndStartsNoMore) {
  ServerCalls calls;
  std::atomic<bool> finished{false};
  ASSERT_TRUE(calls.Start([&] {
    absl::SleepFor(absl::Milliseconds(50));
    finished = true;
  }));
  calls.Stop();
  EXPECT_TRUE(finished);
  EXPECT_FALSE(calls.Start([] {}));
}

}  // namespace
}  // namespace psrv

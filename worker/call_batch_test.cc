#include "worker/call_batch.h"

#include <memory>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(CallBatchTest, WaitsForCompletionsAndReleases) {
  auto batch = std::make_shared<CallBatch>(1, 1);
  std::thread grpc([batch] {
    absl::SleepFor(absl::Milliseconds(20));
    batch->Done(absl::OkStatus(), "a:1");
    absl::SleepFor(absl::Milliseconds(20));
    CallBatch::ReleaseCallback(new std::shared_ptr<CallBatch>(batch));
  });
  const absl::Time start = absl::Now();
  EXPECT_TRUE(batch->Wait().ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(35));  // The release too.
  grpc.join();
}

TEST(CallBatchTest, AFailedCallsPayloadIsNotWaitedForeverAndOutlivesTheCaller) {
  // gRPC may keep a failed call's payload until its connection is torn down.
  auto batch = std::make_shared<CallBatch>(1, 1);
  auto* held = new std::shared_ptr<CallBatch>(batch);  // The slice's release argument.
  batch->Done(absl::UnavailableError("connection reset"), "a:1");
  EXPECT_EQ(batch->Wait(absl::Milliseconds(10)).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(batch->unreachable().count("a:1"), 1u);
  batch.reset();  // The caller moves on...
  CallBatch::ReleaseCallback(held);  // ...and the late release is still safe.
}

}  // namespace
}  // namespace psrv

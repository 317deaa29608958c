// ProgressReporter against an in-process coordinator that holds its first reply: ordinary reports
// made meanwhile are skipped, one with a validation loss is sent once the reply came (the job's
// validation history must not lose it), and the job's final report goes after it.
#include "worker/progress_reporter.h"

#include <atomic>
#include <memory>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

// Records every report; the first waits until `release` is notified.
class HoldingCoordinator final : public Coordinator::Service {
 public:
  grpc::Status ReportProgress(grpc::ServerContext*, const ReportProgressRequest* request,
                              ReportProgressResponse*) override {
    bool first;
    {
      absl::MutexLock lock(&mu_);
      first = received_.empty();
      received_.push_back(*request);
    }
    if (first) release.WaitForNotification();
    return grpc::Status::OK;
  }
  std::vector<ReportProgressRequest> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  size_t count() {
    absl::MutexLock lock(&mu_);
    return received_.size();
  }
  absl::Notification release;

 private:
  absl::Mutex mu_;
  std::vector<ReportProgressRequest> received_;
};

TEST(ProgressReporterTest, AValidationLossIsNotSkippedWhileAReportIsInFlight) {
  HoldingCoordinator coordinator;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&coordinator);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<Coordinator::Stub> stub = Coordinator::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  WorkAssignment assignment;
  assignment.set_job_id("job-1");
  std::atomic<bool> cancel{false};
  {
    ProgressReporter reporter(stub.get(), assignment, "worker-0", &cancel);
    reporter.Report(1, 4.0f, 100.0f, 0.0f, /*done=*/false);
    while (coordinator.count() < 1) absl::SleepFor(absl::Milliseconds(1));  // held there
    reporter.Report(2, 3.9f, 100.0f, 0.0f, /*done=*/false);  // skipped
    reporter.Report(3, 3.8f, 100.0f, 3.5f, /*done=*/false);  // waits: it has a validation loss
    reporter.Report(4, 3.7f, 100.0f, 0.0f, /*done=*/false);  // skipped
    coordinator.release.Notify();
    // The final report waits for those in flight and waiting, then goes.
    reporter.Report(5, 3.6f, 100.0f, 3.4f, /*done=*/true);
  }
  const std::vector<ReportProgressRequest> received = coordinator.received();
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[0].step(), 1u);
  EXPECT_EQ(received[1].step(), 3u);
  EXPECT_EQ(received[1].val_loss(), 3.5f);
  EXPECT_FALSE(received[1].done());
  EXPECT_EQ(received[2].step(), 5u);
  EXPECT_TRUE(received[2].done());
  server->Shutdown();
}

}  // namespace
}  // namespace psrv

// ps_worker: registers with the coordinator, waits for a job, and trains it (pull -> compute ->
// push) against the parameter servers; see trainer.h.
#include <unistd.h>

#include <atomic>
#include <deque>
#include <set>
#include <string>
#include <thread>

#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/membership.h"
#include "common/shutdown.h"
#include "worker/model/openblas_env.h"
#include "worker/trainer.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "host:port of ps_coordinator.");
ABSL_FLAG(int, max_jobs, 0, "Exit after this many jobs (0: run jobs until terminated).");

namespace psrv {
namespace {

// Assignments arriving on heartbeats, for the main loop. Thread-safe.
class AssignmentQueue {
 public:
  void OnHeartbeat(const HeartbeatResponse& response) {
    absl::MutexLock lock(&mu_);
    if (response.cancel()) cancel_ = true;
    if (!response.has_assignment()) return;
    const std::string& job = response.assignment().job_id();
    if (job == running_ || seen_.count(job) > 0) return;
    seen_.insert(job);
    pending_.push_back(response.assignment());
  }

  // Waits up to `timeout` for the next assignment.
  bool Next(WorkAssignment* assignment, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto ready = [this] { return !pending_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return false;
    *assignment = pending_.front();
    pending_.pop_front();
    running_ = assignment->job_id();
    cancel_ = false;
    return true;
  }

  bool TakeCancel() {
    absl::MutexLock lock(&mu_);
    bool c = cancel_;
    cancel_ = false;
    return c;
  }

 private:
  absl::Mutex mu_;
  std::deque<WorkAssignment> pending_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  std::string running_ ABSL_GUARDED_BY(mu_);
  bool cancel_ ABSL_GUARDED_BY(mu_) = false;
};

int Run() {
  absl::Notification* terminate = InstallTerminationHandler();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  AssignmentQueue queue;
  std::atomic<bool> cancel{false};
  Membership membership(
      Membership::Options{absl::GetFlag(FLAGS_coordinator), WORKER,
                          absl::StrCat(host, "/pid-", getpid())},
      [&](const HeartbeatResponse& response) {
        queue.OnHeartbeat(response);
        if (queue.TakeCancel()) cancel = true;
      });
  absl::Status status = membership.Start(absl::Seconds(30));
  if (!status.ok()) {
    LOG(ERROR) << status;
    return 1;
  }
  // Termination cancels the running job.
  std::thread watcher([&] {
    terminate->WaitForNotification();
    cancel = true;
  });
  watcher.detach();

  int jobs = 0, failures = 0;
  const int max_jobs = absl::GetFlag(FLAGS_max_jobs);
  while (!terminate->HasBeenNotified() && (max_jobs == 0 || jobs < max_jobs)) {
    WorkAssignment assignment;
    if (!queue.Next(&assignment, absl::Milliseconds(200))) continue;
    cancel = false;
    LOG(INFO) << "running job " << assignment.job_id() << " as rank " << assignment.rank();
    absl::Status result =
        RunJob(assignment, membership.stub(), membership.node_id(), &cancel);
    LOG(INFO) << "job " << assignment.job_id() << " ended: " << result;
    if (!result.ok() && result.code() != absl::StatusCode::kCancelled) ++failures;
    ++jobs;
  }
  membership.Stop();
  return failures > 0 ? 1 : 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  psrv::ConfigureOpenBlas(argv);
  absl::SetProgramUsageMessage(
      "Training worker: pulls parameters, computes gradients on its part of the data, pushes.\n"
      "Usage: ps_worker --coordinator=HOST:PORT [--max_jobs=N]");
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  return psrv::Run();
}

// A worker's link to the coordinator during a job: progress reports (the last one retried until it
// is delivered), unreachable servers, and the job's current shard map.
#ifndef PSRV_WORKER_PROGRESS_REPORTER_H_
#define PSRV_WORKER_PROGRESS_REPORTER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/client_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {

struct ProgressReporterOptions {
  // How long the final report of a run is retried while the coordinator is unreachable.
  absl::Duration final_report_patience = absl::Minutes(2);
  // Called with the final report if the coordinator stayed unreachable that long (the worker
  // then sends it with its heartbeats: Membership::CarryFinalReport). Unset: it is dropped.
  std::function<void(const ReportProgressRequest&)> undelivered_final_report;
  // This run is the worker's last (--max_jobs): its final report says so
  // (ReportProgressRequest.leaving).
  bool last_run = false;
};

// Thread-compatible. Without a stub (null) every call is a no-op.
class ProgressReporter {
 public:
  using Options = ProgressReporterOptions;

  // `stub`, `assignment` and `cancel` are not owned and must outlive the reporter.
  ProgressReporter(Coordinator::Stub* stub, const WorkAssignment& assignment, std::string node_id,
                   const std::atomic<bool>* cancel, Options options = {})
      : stub_(stub),
        assignment_(assignment),
        node_id_(std::move(node_id)),
        cancel_(cancel),
        options_(std::move(options)) {}
  // Waits for the report in flight, if any (at most its 2 s deadline).
  ~ProgressReporter();

  // The mean step time sent with the next reports.
  void set_step_seconds(float seconds) { step_seconds_ = seconds; }

  // Tells the coordinator a server did not answer (it checks and, if so, fails it over at once).
  void ReportUnreachable(const std::string& address);

  // The job's shard map as the coordinator has it now.
  absl::StatusOr<ShardMap> CurrentShardMap();

  // Ordinary reports are a single attempt that does not wait for the reply (the training thread
  // never waits on the coordinator): one is in flight at a time, and a report made while one is
  // still in flight (the coordinator away, restarting or frozen) is skipped; the next one carries
  // the same totals. One that carries a validation loss is not skipped but sent once the reply
  // came (the latest such one, if several wait), so that the job's validation history has it. The last report of a job (`done`, or an `error`) waits for the one in
  // flight, then is retried while the coordinator is unreachable, for up to
  // `final_report_patience`, then handed to `undelivered_final_report`, so that the job's end is
  // not lost. Returns true if the coordinator wants the worker to stop (for an ordinary report:
  // said in the reply to an earlier one).
  bool Report(uint64_t step, float loss, float tokens_per_sec, float val_loss, bool done,
              const std::string& error = "", const std::string& sample = "");

 private:
  Coordinator::Stub* const stub_;
  const WorkAssignment& assignment_;
  const std::string node_id_;
  const std::atomic<bool>* const cancel_;  // Set: stop retrying.
  // The ordinary report in flight: what its asynchronous call needs until its reply.
  struct InFlight {
    grpc::ClientContext context;
    ReportProgressRequest request;
    ReportProgressResponse response;
  };
  // Starts `request` without waiting for its reply (see Report for one in flight already).
  void Send(const ReportProgressRequest& request);
  // Starts the call; busy_ is set until a reply came and no report waits (pending_).
  void StartLocked(const ReportProgressRequest& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until no report is in flight.
  void AwaitReply();

  const Options options_;
  float step_seconds_ = 0;
  std::atomic<bool> cancel_asked_{false};  // A reply to an ordinary report said `cancel`.
  absl::Mutex mu_;
  std::unique_ptr<InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<InFlight> ended_ ABSL_GUARDED_BY(mu_);  // The call before in_flight_.
  // A report with a validation loss made while another was in flight: sent after its reply.
  std::unique_ptr<ReportProgressRequest> pending_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // `in_flight_` awaits its reply.
  uint64_t skipped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace psrv

#endif  // PSRV_WORKER_PROGRESS_REPORTER_H_

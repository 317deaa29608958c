// A worker's link to the coordinator during a job: progress reports (the last one retried until it
// is delivered), unreachable servers, and the job's current shard map.
#ifndef PSRV_WORKER_PROGRESS_REPORTER_H_
#define PSRV_WORKER_PROGRESS_REPORTER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {

struct ProgressReporterOptions {
  // How long the final report of a run is retried while the coordinator is unreachable.
  absl::Duration final_report_patience = absl::Minutes(2);
  // Called with the final report if the coordinator stayed unreachable that long (the worker
  // then sends it with its heartbeats: Membership::CarryFinalReport). Unset: it is dropped.
  std::function<void(const ReportProgressRequest&)> undelivered_final_report;
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

  // The mean step time sent with the next reports.
  void set_step_seconds(float seconds) { step_seconds_ = seconds; }

  // Tells the coordinator a server did not answer (it checks and, if so, fails it over at once).
  void ReportUnreachable(const std::string& address);

  // The job's shard map as the coordinator has it now.
  absl::StatusOr<ShardMap> CurrentShardMap();

  // Ordinary reports are a single attempt: training goes on while the coordinator is away (e.g.
  // restarting), and the next report carries the same totals. The last report of a job (`done`,
  // or an `error`) is retried while the coordinator is unreachable, for up to
  // `final_report_patience`, then handed to `undelivered_final_report`, so that the job's end is
  // not lost. Returns true if the coordinator wants the worker to stop.
  bool Report(uint64_t step, float loss, float tokens_per_sec, float val_loss, bool done,
              const std::string& error = "", const std::string& sample = "");

 private:
  Coordinator::Stub* const stub_;
  const WorkAssignment& assignment_;
  const std::string node_id_;
  const std::atomic<bool>* const cancel_;  // Set: stop retrying.
  const Options options_;
  float step_seconds_ = 0;
};

}  // namespace psrv

#endif  // PSRV_WORKER_PROGRESS_REPORTER_H_

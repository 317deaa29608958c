// Workers' progress reports: each rank's step, loss and throughput, the job's curves, and the
// job's end when every rank is done (or one reports an error).
#ifndef PSRV_COORDINATOR_PROGRESS_H_
#define PSRV_COORDINATOR_PROGRESS_H_

#include "absl/status/statusor.h"
#include "coordinator/cluster_state.h"
#include "proto/coordinator.pb.h"

namespace psrv {

// Thread-safe: takes the cluster's lock.
class JobProgress {
 public:
  explicit JobProgress(ClusterContext cluster) : cluster_(cluster) {}

  // RPC semantics are those of proto/coordinator.proto.
  absl::StatusOr<ReportProgressResponse> ReportProgress(const ReportProgressRequest& request);

 private:
  // Records the rank's report in the job's status, and the job's step, loss and curves.
  void Record(const ReportProgressRequest& request, Job* job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Frees the worker of the rank that reported (done or failed).
  void FreeWorker(const std::string& node_id, const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);

  ClusterContext cluster_;
};

// Every rank is done or vacant (and at least one is done): SUCCEEDED.
bool AllRanksFinished(const Job& job);

}  // namespace psrv

#endif  // PSRV_COORDINATOR_PROGRESS_H_

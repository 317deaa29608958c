// Step timeouts (SYNC jobs, training.step_timeout_seconds): a worker whose compute hangs while its
// heartbeats go on would stall its job for ever. Every second the coordinator reads how long the
// job's primaries have been waiting for a step, and for whom (ShardStatus.waiting_ms,
// waiting_for_workers); a rank waited for longer than the timeout is lost, as if its worker were
// dead (Failover vacates it; the step goes on without it).
#ifndef PSRV_COORDINATOR_STEP_TIMEOUTS_H_
#define PSRV_COORDINATOR_STEP_TIMEOUTS_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "coordinator/cluster_state.h"
#include "coordinator/server_calls.h"

namespace psrv {

// Thread-safe: takes the cluster's lock, never across a call to a server.
class StepTimeouts {
 public:
  explicit StepTimeouts(ClusterContext cluster) : cluster_(cluster) {}

  // Every second, for each RUNNING SYNC job with a step timeout, reads its primaries' status at
  // once (in `round`) and marks the ranks a step waited for too long (Job.stalled_ranks).
  void CheckSteps(const CallRound& round);

 private:
  void CheckPrimaries(const std::string& job_id, uint64_t run,
                      const std::vector<std::string>& primaries);

  ClusterContext cluster_;
  absl::Time last_check_ ABSL_GUARDED_BY(cluster_.mu);
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_STEP_TIMEOUTS_H_

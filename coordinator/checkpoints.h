// Consistent checkpoints of SYNC jobs, on demand (CheckpointJob) and periodic (every N steps or
// seconds), and the manifests kept in the job's status.
#ifndef PSRV_COORDINATOR_CHECKPOINTS_H_
#define PSRV_COORDINATOR_CHECKPOINTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/cluster_state.h"

namespace psrv {

// Thread-safe: takes the cluster's lock, and releases it while the servers write.
class Checkpoints {
 public:
  explicit Checkpoints(ClusterContext cluster) : cluster_(cluster) {}

  // See ClusterCoordinator::CheckpointJob.
  absl::StatusOr<CheckpointManifest> CheckpointJob(const std::string& job_id,
                                                   const std::string& directory);
  // Starts the periodic checkpoints that are due, each on a thread of its own.
  void StartDueCheckpoints();

 private:
  // The servers of a checkpoint, and where they write.
  struct Plan {
    std::string job_id;
    std::string directory;
    std::vector<std::string> addresses;
    std::vector<std::string> server_ids;  // Per address.
  };
  // Checks that the job can be checkpointed now and marks it checkpointing.
  absl::StatusOr<Plan> Begin(const std::string& job_id, const std::string& directory);
  // Has every server save the job's shards at one step none has reached; without the lock.
  absl::StatusOr<CheckpointManifest> Write(const Plan& plan);
  // The version of the job's furthest shard.
  absl::StatusOr<uint64_t> FurthestVersion(const Plan& plan);
  // Has every server save the job's shards at `step`, all at once.
  absl::StatusOr<CheckpointManifest> SaveAt(const Plan& plan, uint64_t step);
  // Records the manifest (if any; with its time) in the job; ends its checkpointing.
  void Finish(const std::string& job_id, absl::StatusOr<CheckpointManifest>* manifest);

  ClusterContext cluster_;
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_CHECKPOINTS_H_

// Scheduling: a PENDING job starts once enough healthy servers and idle workers exist. The
// scheduler picks them, plans the shards (each with its backup when replicated, restored from
// the job's latest good checkpoint when it restarts) and creates them on every server at once.
#ifndef PSRV_COORDINATOR_SCHEDULER_H_
#define PSRV_COORDINATOR_SCHEDULER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/key_range.h"
#include "coordinator/cluster_state.h"
#include "coordinator/server_calls.h"

namespace psrv {

// Thread-safe: takes the cluster's lock, never across a call to a server.
class Scheduler {
 public:
  explicit Scheduler(ClusterContext cluster) : cluster_(cluster) {}

  // Starts one startable PENDING job (in submission order): reserves its nodes, then creates its
  // shards in `round`; the job is RUNNING once every server created them.
  void StartJobs(const CallRound& round);

  // RESOURCE_EXHAUSTED, naming the sizes, if the shards of a job with `spec` (valid) cannot fit
  // the servers registered now: more than the memory of its num_servers largest servers that
  // are not DEAD (RegisterRequest.memory_bytes). Said only when that many servers with a known
  // memory are there (a job waiting for servers is not judged); the servers still check each
  // shard they are asked to create.
  absl::Status CheckFits(const JobSpec& spec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);

 private:
  // Where a job is to run, and the shards to create.
  struct Placement {
    std::string job_id;
    std::vector<ServerSlot> servers;
    std::vector<std::string> workers;  // Node id per rank.
    ShardMap shard_map;
    std::map<std::string, CreateShardsRequest> requests;  // By server address.
    uint64_t restore_step = 0;  // A restarted job: the checkpoint's step.
    std::string restore_error;  // The checkpoint does not fit the shard plan.
  };
  // Picks the first healthy servers and idle workers for `job`; false if there are too few.
  bool PickNodes(const Job& job, Placement* placement) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // The shard map and the CreateShards requests: each table cut over the servers, and each
  // shard's backup (replicas = 2) on the next server of the job, created like its primary.
  absl::Status PlanJobShards(const Job& job, Placement* placement);
  // A restarted job: the checkpoint file of every shard, restored by its primary and backup.
  void AddRestoreFiles(const Job& job, Placement* placement);
  // Reserves the picked workers for the job.
  void Reserve(Job* job, const Placement& placement) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);

  // Creates the shards (after dropping a restarted job's leftovers) on every server at once;
  // then the job RUNS, or gets another try, or FAILS.
  void Create(const Placement& placement);
  // DropJob of the job on `addresses`, at once.
  void Drop(const std::string& job_id, const std::vector<std::string>& addresses,
            const std::string& why);
  void Started(Job* job, Placement placement) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  void StartFailed(Job* job, const Placement& placement, const absl::Status& status, bool retry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);

  ClusterContext cluster_;
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_SCHEDULER_H_

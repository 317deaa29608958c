// The workers of SYNC steps: the servers of a job are told which ranks each step waits for
// (SetWorkers) when a rank goes vacant or is taken over, and an idle worker takes a vacant rank
// over (of any job) from a step no shard has reached. In a pipeline job the servers' ranks are
// its groups, and a vacant group is re-formed at once by P idle workers, one per stage.
#ifndef PSRV_COORDINATOR_WORKER_SETS_H_
#define PSRV_COORDINATOR_WORKER_SETS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/cluster_state.h"
#include "coordinator/server_calls.h"

namespace psrv {

// Thread-safe: takes the cluster's lock, never across a call to a server.
class WorkerSets {
 public:
  explicit WorkerSets(ClusterContext cluster) : cluster_(cluster) {}

  // Sends SYNC jobs' changed worker sets to all their servers at once (one job's at a time), in
  // `round`.
  void SendWorkerSets(const CallRound& round);
  // Gives a vacant rank of a RUNNING job to an idle worker (one per call; a pipeline job's vacant
  // group to P idle workers), in `round`.
  void FillVacantRanks(const CallRound& round);

 private:
  struct WorkerSet {
    std::string job_id;
    uint64_t worker_set = 0;  // Job::worker_set when sent.
    std::vector<std::string> addresses;
    SetWorkersRequest request;
  };
  void Send(const WorkerSet& set);

  // Workers reserved for vacant ranks (one, or a pipeline group's P), and what the job's servers
  // are to be told.
  struct Takeover {
    std::string job_id;
    uint64_t run = 0;
    std::vector<std::string> node_ids;  // One per rank of `ranks`.
    std::vector<uint32_t> ranks;
    uint32_t server_rank = 0;  // What the servers call them: the rank, or the pipeline group.
    bool sync = false;
    std::vector<std::string> addresses;
    std::vector<uint64_t> from_step;  // Per server rank (SetWorkersRequest.from_step).
    uint64_t start_step = 0;          // The workers' first step.
  };
  // Reserves an idle worker for the first vacant rank of `job` (a pipeline job: P idle workers
  // for a vacant group); false if there are not enough.
  bool Reserve(Job* job, Takeover* takeover) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // SYNC: tells the servers that the rank's steps wait for the new worker from a step no shard
  // has applied yet; then gives it the rank.
  void TakeOver(Takeover takeover);
  absl::Status TellServers(Takeover* takeover);
  void Finish(const Takeover& takeover, const absl::Status& status);

  ClusterContext cluster_;
};

// Per rank the servers know (a worker; in a pipeline job a group: the last of its stages' first
// steps, never while one is vacant), the first step they wait for its pushes
// (SetWorkersRequest.from_step).
std::vector<uint64_t> FromSteps(const Job& job);

}  // namespace psrv

#endif  // PSRV_COORDINATOR_WORKER_SETS_H_

// Fail-over: what the coordinator does for RUNNING jobs whose servers or workers were lost. A
// lost primary's backups are promoted (a new shard map, then Promote on their servers); a job
// that cannot fail over restarts from its latest good checkpoint, or FAILS; a lost worker's rank
// goes vacant (worker_sets.h gives it to another worker).
#ifndef PSRV_COORDINATOR_FAILOVER_H_
#define PSRV_COORDINATOR_FAILOVER_H_

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/cluster_state.h"
#include "coordinator/server_calls.h"

namespace psrv {

// (server address, job id) of shards to drop.
using Drops = std::vector<std::pair<std::string, std::string>>;

// Thread-safe: takes the cluster's lock, never across a call to a server.
class Failover {
 public:
  explicit Failover(ClusterContext cluster) : cluster_(cluster) {}

  // Restarts or fails RUNNING jobs that lost a server, fails their shards over to backups, vacates
  // the ranks of lost workers (see ClusterCoordinator::Tick); then sends the promotions it made,
  // and any still unconfirmed, and drops the shards of restarted jobs, all in `round`.
  void HandleLostNodes(const CallRound& round);

 private:
  // What a job lost: its lost servers (ids) and ranks, and a sentence for each kind.
  struct Losses {
    std::set<std::string> servers;
    std::string server_reason;
    std::vector<uint32_t> ranks;
    std::string rank_reason;
  };
  Losses LossesOf(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Ranks whose worker is DEAD or left; servers of the job's shards that are.
  void AddLostRanks(const Job& job, absl::Time now, Losses* losses)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  void AddLostServers(const Job& job, absl::Time now, Losses* losses)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Handles one RUNNING job's losses.
  void HandleLosses(Job* job, Losses losses, Drops* drops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Fails the shards of every lost server over to their backups: all or nothing.
  bool FailOverAll(Job* job, const std::set<std::string>& server_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Fails the shards held by lost server `server_id` over to their backups: the backups become
  // primaries in the shard map (a new epoch; `promoted_from` marks them until SendPromotions has
  // their servers' confirmation). Shards the lost server backed up lose their backup. False
  // (nothing changed) if some shard of it has no live backup.
  bool PromoteBackups(Job* job, const std::string& server_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Takes `job` back to PENDING so that the scheduler restores it from its latest good
  // checkpoint: frees its workers (telling them to stop) and appends the shards to drop to
  // `drops`. False (nothing changed) if the job cannot be restarted: not SYNC, no good
  // checkpoint, or out of restarts.
  bool RestartFromCheckpoint(Job* job, const std::string& reason, Drops* drops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Marks the ranks vacant and tells their workers to stop. False (nothing changed) if no worker
  // would be left to compute.
  bool VacateRanks(Job* job, const std::vector<uint32_t>& ranks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);

  // The Promote calls of one job: one per server holding promoted shards.
  struct Promotions {
    std::string job_id;
    uint64_t run = 0;
    std::vector<std::string> addresses;  // The promoted copies' servers...
    std::vector<std::string> failed;     // ...and the lost server each took over from.
    uint64_t reported = 0;               // The furthest step the job's workers reported.
  };
  // Sends Promote (idempotent on the servers) for every shard marked `promoted_from` of every
  // RUNNING job without a Promote in flight.
  void SendPromotions(const CallRound& round);
  // Promotes on every server of `promotions` at once, then applies the replies.
  void Promote(const Promotions& promotions, const CallRound& round);
  // The reply of server `i` of `promotions`: confirms its promoted shards, or (when the backups
  // cannot take over) restarts or fails the job.
  void ApplyReply(const Promotions& promotions, size_t i,
                  const absl::StatusOr<PromoteResponse>& reply, Job* job, Drops* drops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // DropJob on each server, each call on a thread of its own.
  void SendDrops(const Drops& drops, const CallRound& round);

  ClusterContext cluster_;
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_FAILOVER_H_

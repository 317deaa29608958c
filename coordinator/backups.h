// Backup repair for jobs with replicas = 2: a shard whose backup was lost (or dropped by its
// primary) gets a new one on another healthy server, by AddBackup on its primary.
#ifndef PSRV_COORDINATOR_BACKUPS_H_
#define PSRV_COORDINATOR_BACKUPS_H_

#include <string>
#include <vector>

#include "coordinator/cluster_state.h"
#include "coordinator/server_calls.h"

namespace psrv {

// Thread-safe: takes the cluster's lock, never across a call to a server.
class BackupRepair {
 public:
  explicit BackupRepair(ClusterContext cluster) : cluster_(cluster) {}

  // Every second, asks the primaries of RUNNING replicated jobs which backups they dropped
  // (Admin.GetStatus, ShardStatus.backup_lost; one job's primaries at once, in `round`) and takes
  // those out of the shard map, so they get a new backup and are never promoted.
  void ForgetDroppedBackups(const CallRound& round);
  // Gives one shard without a backup (of a RUNNING job with replicas = 2) a backup on another
  // healthy server, by AddBackup on its primary (on a thread of its own, one at a time per job:
  // the copy can take a while).
  void RepairBackups();

 private:
  // Reads the status of the job's `primaries` at once, then forgets the backups they dropped.
  void CheckPrimaries(const std::string& job_id, uint64_t run,
                      const std::vector<std::string>& primaries);
  // Clears the backups in the job's shard map that the primary at `address` no longer has.
  bool ForgetDropped(const std::string& address, const ServerStatus& held, Job* job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // The server for a new backup of `shard`: a healthy one other than its primary, one of the
  // job's own first (it has the job's data already). Empty: none.
  std::pair<std::string, std::string> PickBackupServer(const Job& job,
                                                       const ShardAssignment& shard)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // AddBackup on the primary, then the new backup into the shard map.
  void AddBackup(const AddBackupRequest& request, const std::string& primary_address,
                 const std::string& backup_id, uint64_t run);

  ClusterContext cluster_;
  absl::Time last_check_ ABSL_GUARDED_BY(cluster_.mu) = absl::InfinitePast();
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_BACKUPS_H_

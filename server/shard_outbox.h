// What a Shard method decided under the shard's lock and delivers after releasing it (callbacks,
// replication and installation RPCs): Shard::Deliver. Internal to shard.cc and
// shard_replication.cc.
#ifndef PSRV_SERVER_SHARD_OUTBOX_H_
#define PSRV_SERVER_SHARD_OUTBOX_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/shard.h"

namespace psrv {

struct Shard::Outbox {
  struct PullReply {
    PullCallback done;
    absl::Status status;
    uint64_t version = 0;
    PullPayload values;
  };
  std::vector<std::pair<SnapshotCallback, absl::StatusOr<ShardCheckpoint>>> snapshots;
  std::vector<PullReply> pulls;
  std::vector<double> pull_waits;  // SYNC: seconds each answered pull waited.
  std::vector<std::pair<PushCallback, absl::StatusOr<uint64_t>>> pushes;
  std::vector<std::pair<AddBackupCallback, absl::StatusOr<uint64_t>>> backups;
  // An update to send to the backup.
  std::shared_ptr<Replicator> replicate_to;
  ReplicateRequest replicate;
  std::shared_ptr<PooledBuffer> gradient;
  // A copy to install on a new backup.
  std::shared_ptr<Replicator> install_on;
  std::string own_address;
  ShardCheckpoint install;
  std::vector<uint64_t> install_from_step;  // SYNC: the worker set (num_workers).
  std::vector<uint64_t> install_applied_pushes;  // ASYNC: RecentPushes::keys().
  AddBackupCallback install_done;
};

}  // namespace psrv

#endif  // PSRV_SERVER_SHARD_OUTBOX_H_

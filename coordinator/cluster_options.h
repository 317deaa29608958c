// What a ClusterCoordinator is given: its timings, its state store, and the calls it makes to the
// servers (gRPC in ps_coordinator, fakes in tests). Every call has a deadline of its own.
#ifndef PSRV_COORDINATOR_CLUSTER_OPTIONS_H_
#define PSRV_COORDINATOR_CLUSTER_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "coordinator/state_store.h"
#include "proto/admin.pb.h"
#include "proto/parameter_server.pb.h"

namespace psrv {

// Creates shards on the server at `address` (the coordinator passes a gRPC call; tests a fake).
using ShardCreator =
    std::function<absl::Status(const std::string& address, const CreateShardsRequest& request)>;
// The highest version of `job_id`'s shards on the server at `address` (Admin.GetStatus).
using ShardVersionReader =
    std::function<absl::StatusOr<uint64_t>(const std::string& address, const std::string& job_id)>;
// ParameterServer.SaveCheckpoint on the server at `address`; blocks until the files are written.
using CheckpointSaver = std::function<absl::StatusOr<SaveCheckpointResponse>(
    const std::string& address, const SaveCheckpointRequest& request)>;
// ParameterServer.SetWorkers on the server at `address`.
using WorkerSetSender =
    std::function<absl::Status(const std::string& address, const SetWorkersRequest& request)>;
// ParameterServer.Promote on the server at `address` (the backup of a lost primary).
using BackupPromoter = std::function<absl::StatusOr<PromoteResponse>(
    const std::string& address, const PromoteRequest& request)>;
// ParameterServer.AddBackup on the server at `address` (a primary that lost its backup).
using BackupAdder = std::function<absl::StatusOr<AddBackupResponse>(
    const std::string& address, const AddBackupRequest& request)>;
// Admin.GetStatus of `job_id`'s shards on the server at `address`.
using ServerStatusReader = std::function<absl::StatusOr<ServerStatus>(
    const std::string& address, const std::string& job_id)>;
// Whether the server at `address` answers at all (any gRPC reply within a short deadline), and
// the incarnation of the process that answered (0: unknown).
using ServerProbe = std::function<absl::StatusOr<uint64_t>(const std::string& address)>;
// ParameterServer.DropJob on the server at `address`.
using ShardDropper =
    std::function<absl::Status(const std::string& address, const std::string& job_id)>;

// The calls are made without the coordinator's lock, several at once (on threads of their own),
// so they must be thread-safe.
struct ClusterOptions {
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  ShardCreator create_shards;
  ShardVersionReader shard_version;  // Both needed for checkpoints.
  CheckpointSaver save_checkpoint;
  ShardDropper drop_job;  // Needed to restart jobs from checkpoints.
  WorkerSetSender set_workers;  // Needed to go on without lost workers (SYNC).
  BackupPromoter promote;       // Needed to fail over to backups (JobSpec.replicas = 2).
  BackupAdder add_backup;       // Needed to give shards a new backup.
  ServerProbe probe;            // Needed by ReportUnreachable.
  // Read every second for jobs with backups, to notice a backup its primary dropped.
  ServerStatusReader server_status;

  // Restarts from a checkpoint a job may take before a lost node FAILS it.
  uint32_t max_restarts = 10;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  StateStore* state = nullptr;  // Not owned; null: jobs and nodes are kept in memory only.
  // How long Tick() waits (in real time, not `clock`) for the replies to the calls it made
  // before it returns; a reply that comes later is applied when it comes. A server that does
  // not answer delays one Tick by this much at most, and no other job's calls at all.
  absl::Duration reply_wait = absl::Milliseconds(200);
  // How often the caller runs Tick() (ps_coordinator: every 100 ms). A tick that starts much
  // later than this plus reply_wait after the previous one means the coordinator itself was
  // stopped (SIGSTOP, a paused VM, starved of CPU): see Membership::ExcusePause.
  absl::Duration tick_interval = absl::Milliseconds(100);
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_CLUSTER_OPTIONS_H_

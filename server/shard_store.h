// Every shard this server holds, by job and table, and the validation of every request against
// them; the replication of its shards (one Replicator per backup server). The gRPC services
// (parameter_service.h, admin_service.h) are thin adapters over this class.
#ifndef PSRV_SERVER_SHARD_STORE_H_
#define PSRV_SERVER_SHARD_STORE_H_

#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/work_queue.h"
#include "proto/admin.pb.h"
#include "proto/parameter_server.pb.h"
#include "server/replication_client.h"
#include "server/replicator.h"
#include "server/shard.h"

namespace psrv {

// Thread-safe. Never blocks on another server: replication answers through callbacks.
class ShardStore {
 public:
  struct Options {
    // If set, the store records push staleness, SYNC step and pull waits there and exports every
    // shard's statistics at each scrape (docs/METRICS.md). Not owned; the store must outlive the
    // scrapes of it.
    MetricsRegistry* metrics = nullptr;
    std::function<absl::Time()> clock = [] { return absl::Now(); };
    // The transport to a backup server, called once per address. Unset: gRPC (GrpcReplicator
    // with `replication`'s deadlines).
    std::function<std::shared_ptr<Replicator>(const std::string& address)> connect_backup;
    GrpcReplicator::Options replication;
    // The folder every path a request names must resolve under (SaveCheckpoint's directory,
    // CreateShards' restore_from and init_from_safetensors files; common/files.h
    // ResolvePathUnder): PERMISSION_DENIED otherwise. "/": anywhere (paths must be absolute).
    std::string checkpoint_root = "/";
    // The most memory the shards held here may take (ShardMemoryBytes of each, server/shard_spec.h):
    // CreateShards and InstallShard answer RESOURCE_EXHAUSTED, allocating nothing, beyond it.
    uint64_t max_memory_bytes = std::numeric_limits<uint64_t>::max();
  };

  ShardStore() : ShardStore(Options()) {}
  explicit ShardStore(Options options);

  // See ParameterServer.CreateShards in proto/parameter_server.proto.
  absl::Status CreateShards(const CreateShardsRequest& request);

  // Drops a job's shards; their waiting pulls fail with CANCELLED.
  absl::Status DropJob(const std::string& job_id);

  // See ParameterServer.SetWorkers: checks every shard of the job (PRIMARY and BACKUP), then
  // changes them all.
  absl::Status SetWorkers(const SetWorkersRequest& request);

  // Validates and answers a pull (possibly later, see Shard::Pull). `done` is always called once.
  void Pull(const PullRequest& request, PullCallback done);

  // Validates and applies a push whose payload (of the request's dtype, FP32 or BF16: the shard
  // converts) is `payload`. `done` is always called once, maybe later (a replicated shard answers
  // once its backup has the update). `finite` as Shard::Push (for dense pushes; sparse ones are
  // checked once widened).
  void Push(const PushRequest& request, PooledBuffer payload, PushCallback done,
            FiniteCheck finite = FiniteCheck::kUnchecked);
  // The checks Push makes before it hands the payload to the shard, for a payload of
  // `payload_bytes` (the gRPC service makes them before it takes a buffer): the shard, or the
  // error (recorded as a rejected push when the shard exists).
  absl::StatusOr<std::shared_ptr<Shard>> CheckPush(const PushRequest& request,
                                                   size_t payload_bytes);

  // See ParameterServer.CommitStep. Applies the steps it completes before returning.
  absl::Status CommitStep(const CommitStepRequest& request);

  // Replication; see the rpcs of the same names in proto/parameter_server.proto.
  absl::StatusOr<uint64_t> Replicate(const ReplicateRequest& request, const char* payload,
                                     size_t payload_bytes);
  absl::StatusOr<uint64_t> InstallShard(const InstallShardRequest& request, const char* payload,
                                        size_t payload_bytes);
  // `done` is called once, later (when the backup answered InstallShard) or at once.
  using AddBackupCallback = std::function<void(absl::StatusOr<AddBackupResponse>)>;
  void AddBackup(const AddBackupRequest& request, AddBackupCallback done);
  using PromoteCallback = std::function<void(absl::StatusOr<PromoteResponse>)>;
  void Promote(const PromoteRequest& request, PromoteCallback done);

  // See ParameterServer.SaveCheckpoint. `done` is called once, maybe later (SYNC: from the thread
  // that applies the update reaching the version).
  using SaveCheckpointCallback = std::function<void(absl::StatusOr<SaveCheckpointResponse>)>;
  void SaveCheckpoint(const SaveCheckpointRequest& request, SaveCheckpointCallback done);

  // Status of every shard (of `job_id` only, if non-empty).
  ServerStatus Status(const std::string& job_id);

  // A random number drawn when the store was made, never 0: tells this process from one that
  // replaced it at the same address (RegisterRequest.incarnation).
  uint64_t incarnation() const { return incarnation_; }

  // Ids of the jobs with shards here.
  std::vector<std::string> JobIds();

  // Fails all waiting pulls (used on shutdown).
  void CancelAllWaiters();

  // The identity reported by Status(): coordinator-assigned id and reachable address.
  void SetIdentity(const std::string& server_id, const std::string& address);

  // Memory taken by the shards held here and those being built (ShardMemoryBytes of each).
  uint64_t memory_bytes();

 private:
  // Memory reserved for shards about to be built: what is not kept (Keep) goes back to the store
  // when the reservation is destroyed. Movable.
  class MemoryReservation {
   public:
    MemoryReservation(ShardStore* store, uint64_t bytes) : store_(store), bytes_(bytes) {}
    MemoryReservation(MemoryReservation&& other)
        : store_(other.store_), bytes_(std::exchange(other.bytes_, 0)) {}
    ~MemoryReservation() {
      if (bytes_ > 0) store_->ReleaseMemory(bytes_);
    }
    void Keep(uint64_t bytes) { bytes_ -= bytes; }

   private:
    ShardStore* store_;
    uint64_t bytes_;
  };
  // Reserves `bytes` for shards of `job_id`: RESOURCE_EXHAUSTED naming the sizes if that would
  // take the store over options_.max_memory_bytes.
  absl::StatusOr<MemoryReservation> ReserveMemory(const std::string& job_id, uint64_t bytes);
  void ReleaseMemory(uint64_t bytes);

  // CreateShards' initial values (init_from_safetensors at `path`) and restore_from files, into
  // the shards `created` (of the request's `configs`, not held yet).
  absl::Status InitializeFrom(const std::string& path,
                              const std::vector<std::shared_ptr<Shard>>& created);
  absl::Status RestoreFrom(const CreateShardsRequest& request,
                           const std::vector<ShardConfig>& configs,
                           const std::vector<std::shared_ptr<Shard>>& created);

  // A path a request names, resolved under options_.checkpoint_root (INVALID_ARGUMENT if not
  // absolute, PERMISSION_DENIED if outside).
  absl::StatusOr<std::string> ConfinedPath(const std::string& path);

  using TableShards = std::vector<std::shared_ptr<Shard>>;
  using JobTables = absl::flat_hash_map<std::string, TableShards>;

  // The shard of (job, table) containing `range`: NOT_FOUND or INVALID_ARGUMENT otherwise.
  absl::StatusOr<std::shared_ptr<Shard>> Find(const std::string& job_id, const std::string& table,
                                              const KeyRange& range);

  // The shard held here with exactly the range of `config` (of its job and table), or null if no
  // shard overlaps it; ALREADY_EXISTS if a shard with another range overlaps it.
  absl::StatusOr<std::shared_ptr<Shard>> Overlapping(const ShardConfig& config)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As Overlapping, and ALREADY_EXISTS if the shard held is configured differently.
  absl::StatusOr<std::shared_ptr<Shard>> HeldShard(const ShardConfig& config)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The Replicator for a backup server (one per address, shared by its shards).
  std::shared_ptr<Replicator> BackupAt(const std::string& address);
  // INVALID_ARGUMENT for an empty address or this server's own.
  absl::Status CheckBackupAddress(const std::string& address);
  std::string address();

  std::vector<std::shared_ptr<Shard>> AllShards(const std::string& job_id);

  // Adds every shard's statistics to a scrape of the metrics.
  void CollectMetrics(CollectedMetrics* out);
  // The environment of a new shard of `job_id` (its histograms carry the job's label).
  ShardEnv EnvFor(const std::string& job_id);

  const Options options_;
  HistogramFamily* staleness_ = nullptr;  // Set with options_.metrics.
  HistogramFamily* step_wait_ = nullptr;
  HistogramFamily* pull_wait_ = nullptr;
  const int64_t start_time_ms_;
  const uint64_t incarnation_;
  absl::Mutex mu_;
  std::string server_id_ ABSL_GUARDED_BY(mu_) = "standalone";
  std::string address_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, JobTables> jobs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<Replicator>> backups_ ABSL_GUARDED_BY(mu_);
  uint64_t memory_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // See memory_bytes().
  // Writes checkpoint files (SaveCheckpoint), off the gRPC threads. Last: joined first.
  WorkQueue checkpoint_writer_;
};

// FP32 and BF16 (converted to and from the shard's FP32 at this boundary): INVALID_ARGUMENT for an
// unset dtype, UNIMPLEMENTED for FP16.
absl::Status CheckWireDType(DType dtype);

// Bytes per value of a wire dtype (FP32 4, BF16 2).
size_t WireBytesPerValue(DType dtype);

// A sparse push's key offsets (PushRequest.indices), or a row-sparse push's row offsets
// (PushRequest.rows; `field` "rows", range_size then counts rows): INVALID_ARGUMENT unless each is
// below `range_size` and greater than the one before.
absl::Status CheckSparseIndices(const google::protobuf::RepeatedField<uint32_t>& indices,
                                uint64_t range_size, absl::string_view field = "indices");

// A row-sparse push's or pull's shape: INVALID_ARGUMENT for a row_width of 0 (with rows),
// indices as well, or a row_width that does not divide the range's keys.
absl::Status CheckRowSparseShape(uint32_t row_width, bool with_indices, const KeyRange& range);

}  // namespace psrv

#endif  // PSRV_SERVER_SHARD_STORE_H_

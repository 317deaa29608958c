// One shard: a contiguous key range of one table of one job, with its parameters, optimizer state,
// SYNC aggregation, waiting pulls, traffic statistics, and its role in replication (a PRIMARY
// sending its updates to a backup, or a BACKUP applying them).
#ifndef PSRV_SERVER_SHARD_H_
#define PSRV_SERVER_SHARD_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/buffer_pool.h"
#include "common/event_rate.h"
#include "common/metrics.h"
#include "proto/admin.pb.h"
#include "proto/parameter_server.pb.h"
#include "server/aggregate.h"
#include "server/apply.h"
#include "server/checkpoint.h"
#include "server/gradient_check.h"
#include "server/recent_pushes.h"
#include "server/replicator.h"

namespace psrv {

struct ShardConfig {
  std::string job_id;
  TableSpec table;
  KeyRange range;
  ConsistencyMode consistency = SYNC;
  OptimizerConfig optimizer;
  uint32_t num_workers = 1;
  uint32_t staleness = 0;  // SSP: the bound (TrainingSpec.staleness).
  // SYNC with backup workers: a step is applied once this many workers pushed it (0: all; see
  // SyncAggregator and TrainingSpec.aggregate_first).
  uint32_t aggregate_first = 0;
  // Where the shard came in its CreateShards request (the shard map's order: the model's layout,
  // i.e. the order forward reads it). CommitStep applies a step's shards in this order.
  uint32_t position = 0;
};

// How a shard starts out (CreateShards' ShardSpec): its role, and where its copy is.
struct ShardReplication {
  ShardRole role = PRIMARY;
  std::shared_ptr<Replicator> backup;  // PRIMARY: where updates go; null: not replicated.
  std::string primary_address;         // BACKUP: the server holding the primary (Promote).
};

// What a shard needs from its surroundings: the time (tests move it) and where to record the
// distributions the Prometheus metrics show (optional; not owned).
struct ShardEnv {
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  Histogram* staleness = nullptr;  // Pushes: shard version at arrival minus PushRequest.base_version.
  Histogram* step_wait = nullptr;  // SYNC: seconds from a step's first push to its update.
  Histogram* pull_wait = nullptr;  // SYNC: seconds a pull waited for its step.
  // Sends of one update before its backup is dropped; only UNAVAILABLE and DEADLINE_EXCEEDED are
  // tried again (the Replicator bounds each send with its deadline).
  int replicate_attempts = 2;
};

// What a pull is answered with: the values of its range in its dtype (FP32 or BF16,
// little-endian), read from an immutable snapshot of the shard that `owner` keeps alive. The
// reply aliases it: no copy per pull. Thread-compatible.
class PullPayload {
 public:
  PullPayload() = default;
  PullPayload(std::shared_ptr<const void> owner, const char* data, size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}

  const char* data() const { return data_; }
  size_t size() const { return size_; }

  // Hands the snapshot's reference to a C callback (a grpc::Slice destructor): Release returns an
  // opaque pointer that ReturnReleased(pointer) later drops.
  void* Release() { return new std::shared_ptr<const void>(std::move(owner_)); }
  static void ReturnReleased(void* released) {
    delete static_cast<std::shared_ptr<const void>*>(released);
  }

 private:
  std::shared_ptr<const void> owner_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// Called once per pull with the values of the requested range and the shard's version when they
// were read. May run on the thread that applied an update.
using PullCallback = std::function<void(absl::Status status, uint64_t version, PullPayload values)>;

// Called once per push with the shard's version after it, or why it was refused.
using PushCallback = std::function<void(absl::StatusOr<uint64_t> version)>;

// Thread-safe. Create it with std::make_shared: replication answers hold a reference to it.
//
// Replication (PRIMARY with a backup): an update (a SYNC step's mean, an ASYNC push) is applied
// here, then sent to the backup; only once the backup has it (or was dropped after failing) does
// the update become visible: the push that made it is answered, waiting pulls and checkpoints are
// served. Until then the shard takes no further update (pushes wait, in order), so updates reach
// the backup one at a time and in order. The shard mutex is NOT held while the backup is called:
// gRPC's callback API runs every handler of a process on very few threads (2 on a 2-core machine,
// measured with gRPC 1.51), so a handler blocked on a backup, or on a mutex held across such a
// call, could deadlock two servers that back each other up. Callbacks never run under the mutex.
class Shard : public std::enable_shared_from_this<Shard> {
 public:
  // Initialises the values from the table's InitSpec. `config` must be valid (ShardStore checks).
  explicit Shard(ShardConfig config, ShardEnv env = ShardEnv(),
                 ShardReplication replication = ShardReplication());

  const ShardConfig& config() const { return config_; }
  // BACKUP: its primary's address; after Promote, the server it was promoted from.
  const std::string& primary_address() const { return primary_address_; }
  ShardRole role();

  // Applies (ASYNC) or aggregates (SYNC) a gradient for `request.range()`, which must lie inside
  // this shard; `gradient` holds its (range size) values of request.dtype() (FP32 or BF16; the
  // caller checked the length). Validates everything before changing anything. `done` gets the
  // version after the push: at once, or once the update the push made has reached the backup, or
  // once an update being replicated has and this push was applied. UNAVAILABLE on a BACKUP.
  // `finite`: kChecked when the caller already found every value finite (ParameterService checks
  // them as it copies them off the wire); otherwise this checks them.
  void Push(const PushRequest& request, PooledBuffer gradient, PushCallback done,
            FiniteCheck finite = FiniteCheck::kUnchecked);

  // SYNC: worker `rank`'s factor for its pushes of `step` sent with scale_follows (see
  // ParameterServer.CommitStep and SyncAggregator::CheckCommit for the codes). Applies the step
  // if this completes it. UNAVAILABLE on a BACKUP.
  absl::Status Commit(uint32_t rank, uint64_t step, float scale);

  // Answers now, or (SYNC) once step `request.step() - 1` is applied, or once the update being
  // replicated has reached the backup, in request.dtype() (FP32 or BF16: narrowed once per
  // version, for every BF16 pull of it). UNAVAILABLE on a BACKUP.
  void Pull(const PullRequest& request, PullCallback done);

  // Fails every waiting pull, push, checkpoint and AddBackup with `status` (job dropped, server
  // stopping). An update already sent to the backup is still answered when the backup answers.
  void CancelWaiters(const absl::Status& status);

  ShardStatus Status();

  // Counts a push refused before it reached Push (bad dtype or length, ...) and keeps its error
  // for the admin API.
  void RecordRejectedPush(const PushRequest& request, const absl::Status& error);

  // Calls `done` with a copy of the values and optimizer state at version `version` (0: now):
  // at once if the shard is there, when the update that reaches it is applied (and replicated) if
  // it is not there yet (SYNC: all shards of a job checkpoint the same step), FAILED_PRECONDITION
  // if it is past it.
  using SnapshotCallback = std::function<void(absl::StatusOr<ShardCheckpoint>)>;
  void Snapshot(uint64_t version, SnapshotCallback done);

  // SYNC: which workers the steps wait for; see ParameterServer.SetWorkers and
  // SyncAggregator::SetWorkers. On a PRIMARY it may complete the step being aggregated, which is
  // then applied and replicated like a step a push completes (after the update or install in
  // flight, if any; the pulls and checkpoints waiting for it are answered once the backup has it).
  // A BACKUP only takes the new set, for when it is promoted. Changes nothing on error:
  // INVALID_ARGUMENT, FAILED_PRECONDITION (ASYNC; a joining rank's first step already applied).
  absl::Status SetWorkers(const std::vector<uint64_t>& from_step);
  // The checks of SetWorkers alone.
  absl::Status CheckSetWorkers(const std::vector<uint64_t>& from_step);
  // SYNC: the worker set (SyncAggregator::from_step) of another copy of this shard, taken as it is
  // when the copy is installed here (InstallShard). INVALID_ARGUMENT: an ASYNC shard, not one
  // entry per rank, or no rank left for the next step.
  absl::Status RestoreWorkers(const std::vector<uint64_t>& from_step);
  // ASYNC, a backup being installed: the pushes its primary applied lately
  // (InstallShardRequest.applied_pushes), remembered as if applied here.
  void RestoreAppliedPushes(const std::vector<uint64_t>& keys);

  // Replaces the values (size of the shard's range) before training starts.
  void LoadValues(const float* values);

  // Replaces the values, optimizer state and version with a checkpoint's. INVALID_ARGUMENT if the
  // checkpoint is of another job, table or key range, or has the wrong optimizer state.
  absl::Status Restore(ShardCheckpoint checkpoint);

  // BACKUP: applies an update its primary applied (see ParameterServer.Replicate); `gradient`
  // holds (request range size) floats. Returns the version after it.
  absl::StatusOr<uint64_t> ApplyReplicated(const ReplicateRequest& request, const float* gradient);

  // PRIMARY: copies the shard (once no update is in flight), installs the copy on `backup`
  // (InstallShard; `own_address` becomes the copy's primary_address) and replicates every later
  // update there. `done` gets the version installed, or the error (then nothing changed).
  using AddBackupCallback = std::function<void(absl::StatusOr<uint64_t> version)>;
  void AddBackup(std::shared_ptr<Replicator> backup, const std::string& own_address,
                 AddBackupCallback done);

  // Makes a BACKUP the PRIMARY (idempotent); SYNC: the next step is aggregated afresh. Returns the
  // version it took over at.
  uint64_t Promote();

  // PRIMARY: where updates go now ("" if not replicated).
  std::string backup_address();

 private:
  struct Waiter {
    uint64_t min_version;
    uint64_t offset;  // Into values_.
    uint64_t count;
    DType dtype;
    PullCallback done;
    absl::Time since;  // When the pull arrived.
    uint64_t ssp_step = 0;  // SSP: the pull's step, which must be within the bound; 0: none.
  };

  // An update applied here whose Replicate has not been answered yet.
  struct InFlight {
    ReplicateRequest request;
    std::shared_ptr<PooledBuffer> gradient;  // (request range size) floats.
    PushCallback done;                       // The push that made the update; may be empty.
    std::shared_ptr<Replicator> backup;      // Where it is being sent.
    int attempts = 0;
  };

  // What to do once mu_ is released: every callback, and the call to the backup to start.
  struct Outbox;

  // A push, AddBackup or step completed by SetWorkers that came while an update or install was in
  // flight.
  struct Deferred {
    std::function<void(Outbox*)> run;                 // Under mu_, once the shard is not busy.
    std::function<void(const absl::Status&)> cancel;  // Without mu_.
  };

  // Takes a push (or defers it while busy) and records what to answer in `out`.
  void StartPush(const PushRequest& request, std::shared_ptr<PooledBuffer> gradient,
                 PushCallback done, Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After an update was applied to values_: counts it and sends it to the backup, or (not
  // replicated) makes it visible at once.
  // `push_id`: ASYNC, the push's (PushRequest.push_id), sent on to the backup.
  void Updated(const KeyRange& range, std::shared_ptr<PooledBuffer> gradient, PushCallback done,
               absl::Time now, Outbox* out, uint64_t push_id = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // SYNC: applies the mean of the step aggregated (every worker taking part pushed it all), then
  // as Updated. `done`: the push that completed the step; empty if SetWorkers did.
  void ApplyStep(PushCallback done, absl::Time now, Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // SYNC, PRIMARY: applies the step SetWorkers completed, or (busy) defers it behind the pushes
  // already waiting, like a push.
  void ApplyStepWithoutPush(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The update at version_ is acknowledged: answers its push, waiting pulls and checkpoints.
  void Acknowledge(PushCallback done, Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers the waiting pulls whose version is there and (SSP) whose step is within the bound.
  // Only while no update is in flight.
  void ServeWaiters(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // SSP: whether a pull for `step` may be answered: step - 1 is at most config_.staleness steps
  // past the clock of the slowest live rank (a rank's clock: the last step it pushed here, or
  // the step before the one it joins at). True while some live rank's clock is unknown.
  bool WithinStaleness(uint64_t step) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Backup workers: whether a push refused with `refusal` came after its step was applied
  // without it (dropped and counted, not an error), rather than being a resend.
  bool IsLate(const PushRequest& request, const absl::Status& refusal) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Runs deferred pushes, steps and AddBackups in order until one makes the shard busy again.
  void RunDeferred(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartAddBackup(std::shared_ptr<Replicator> backup, const std::string& own_address,
                      AddBackupCallback done, Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops replicating after `error` (the shard continues unreplicated).
  void DropBackup(const absl::Status& error, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Busy() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return in_flight_ != nullptr || installing_; }

  // Runs what `out` holds; never under mu_.
  void Deliver(Outbox* out);
  void OnReplicated(uint64_t version, const absl::Status& status);
  void OnInstalled(std::shared_ptr<Replicator> backup, uint64_t version, const absl::Status& status,
                   AddBackupCallback done);

  ShardCheckpoint MakeCheckpoint() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RefuseOnBackup(const char* what) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status CheckSetWorkersLocked(const std::vector<uint64_t>& from_step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The optimizer step (learning-rate schedule, Adam bias correction) of the n-th update.
  uint64_t OptimizerStep(uint64_t update) const;

  // The reply to a pull of keys [offset, offset + count) in `dtype`: a view of values_ (FP32) or
  // of its bf16 copy, narrowed here if this version has none yet.
  PullPayload PullReply(uint64_t offset, uint64_t count, DType dtype)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Before an update of keys [offset, offset + count): where to read the values (`in`) and write
  // the new ones (`out`). In place while no pull reply holds values_ (the usual case); else into
  // another buffer (the rest of the shard copied there), which becomes values_.
  struct UpdateBuffers {
    const float* in;
    float* out;
  };
  UpdateBuffers BeginUpdate(uint64_t offset, uint64_t count) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The optimizer step of the next update over keys [offset, offset + count) with gradient
  // `grad` (count values, as Gradient::Values gives them, times its scale), split over threads
  // for big ranges.
  void ApplyUpdate(const Gradient& grad, uint64_t offset, uint64_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyUpdate(const float* grad, float scale, uint64_t offset, uint64_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ApplyUpdate(Gradient{grad, scale, {}}, offset, count);
  }
  void RecordPull(uint64_t count, uint32_t rank, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordRejection(const PushRequest& request, const absl::Status& error, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ShardConfig config_;
  const ShardEnv env_;
  const uint64_t size_;
  const std::string primary_address_;

  absl::Mutex mu_;
  // (size_) the parameters: shared with the pull replies being sent, which never see it change
  // (see BeginUpdate). Replaced, never resized.
  std::shared_ptr<std::vector<float>> values_ ABSL_GUARDED_BY(mu_);
  // (size_) an earlier values_ some reply still held when it was replaced; reused once free.
  std::shared_ptr<std::vector<float>> spare_ ABSL_GUARDED_BY(mu_);
  // (size_) values_ as bfloat16 for BF16 pulls, valid while bf16_valid_ (one narrowing per
  // version however many workers pull it).
  std::shared_ptr<std::vector<uint16_t>> bf16_ ABSL_GUARDED_BY(mu_);
  bool bf16_valid_ ABSL_GUARDED_BY(mu_) = false;
  bool pulls_bf16_ ABSL_GUARDED_BY(mu_) = false;  // The last pull was BF16: updates narrow too.
  std::unique_ptr<Optimizer> optimizer_ ABSL_GUARDED_BY(mu_);
  SyncAggregator aggregator_ ABSL_GUARDED_BY(mu_);
  // SSP, per rank: the last step it pushed here; whether that is known (not after a promotion or
  // an install, until it pushes again); the step it takes part from (SetWorkers; kNever: its rank
  // is vacant, and it leaves the minimum).
  std::vector<uint64_t> clocks_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> clock_known_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> ssp_from_step_ ABSL_GUARDED_BY(mu_);
  // Updates applied here. Visible to workers and checkpoints: version_, or version_ - 1 while
  // in_flight_ (that update is not acknowledged yet).
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, SnapshotCallback>> snapshot_waiters_ ABSL_GUARDED_BY(mu_);

  // Replication.
  ShardRole role_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Replicator> backup_ ABSL_GUARDED_BY(mu_);  // PRIMARY: null if unreplicated.
  std::unique_ptr<InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  bool installing_ ABSL_GUARDED_BY(mu_) = false;  // An AddBackup copy is being installed.
  std::deque<Deferred> deferred_ ABSL_GUARDED_BY(mu_);
  bool backup_lost_ ABSL_GUARDED_BY(mu_) = false;
  // Not OK once the backup answered that it was promoted (Replicate: ABORTED): this copy was
  // failed over and answers workers with this (UNAVAILABLE) from then on.
  absl::Status deposed_ ABSL_GUARDED_BY(mu_);
  std::string backup_error_ ABSL_GUARDED_BY(mu_);
  int64_t backup_error_ms_ ABSL_GUARDED_BY(mu_) = 0;

  // Statistics for the admin API.
  uint64_t pushes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rejected_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t duplicate_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  // Backup workers: pushes dropped because their step was complete without them (late), and
  // the ranks whose pushes made the last step applied here (by rank; resends of theirs are not
  // late).
  uint64_t late_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<bool> last_contributors_ ABSL_GUARDED_BY(mu_);
  // SSP and ASYNC: staleness (version at arrival minus base version) of accepted pushes: sum,
  // count and largest. SSP: seconds answered pulls waited, in total.
  double staleness_sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t staleness_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t staleness_max_ ABSL_GUARDED_BY(mu_) = 0;
  double ssp_blocked_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  // ASYNC: pushes applied lately (here, or on the primary this backup copies), by id.
  RecentPushes applied_pushes_ ABSL_GUARDED_BY(mu_);
  uint64_t pulls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_in_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_out_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_update_ms_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<uint32_t> workers_seen_ ABSL_GUARDED_BY(mu_);
  EventRate push_rate_ ABSL_GUARDED_BY(mu_);
  EventRate pull_rate_ ABSL_GUARDED_BY(mu_);
  EventRate bytes_in_rate_ ABSL_GUARDED_BY(mu_);
  EventRate bytes_out_rate_ ABSL_GUARDED_BY(mu_);
  absl::Time step_started_ ABSL_GUARDED_BY(mu_);  // SYNC: first push of the step aggregated.
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  int64_t last_error_ms_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace psrv

#endif  // PSRV_SERVER_SHARD_H_

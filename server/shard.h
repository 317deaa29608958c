// One shard: a contiguous key range of one table of one job, with its parameters, optimizer state,
// SYNC aggregation, waiting pulls and traffic statistics.
#ifndef PSRV_SERVER_SHARD_H_
#define PSRV_SERVER_SHARD_H_

#include <cstdint>
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

namespace psrv {

struct ShardConfig {
  std::string job_id;
  TableSpec table;
  KeyRange range;
  ConsistencyMode consistency = SYNC;
  OptimizerConfig optimizer;
  uint32_t num_workers = 1;
};

// What a shard needs from its surroundings: the time (tests move it) and where to record the
// distributions the Prometheus metrics show (optional; not owned).
struct ShardEnv {
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  Histogram* staleness = nullptr;  // Pushes: shard version at arrival minus PushRequest.base_version.
  Histogram* step_wait = nullptr;  // SYNC: seconds from a step's first push to its update.
  Histogram* pull_wait = nullptr;  // SYNC: seconds a pull waited for its step.
};

// Called once per pull with the values of the requested range (FP32, little-endian) and the
// shard's version when they were read. May run on the thread that applied an update.
using PullCallback = std::function<void(absl::Status status, uint64_t version, PooledBuffer values)>;

// Thread-safe.
class Shard {
 public:
  // Initialises the values from the table's InitSpec. `config` must be valid (ShardStore checks).
  explicit Shard(ShardConfig config, ShardEnv env = ShardEnv());

  const ShardConfig& config() const { return config_; }

  // Applies (ASYNC) or aggregates (SYNC) a gradient for `request.range()`, which must lie inside
  // this shard. `values` holds `count` floats. Validates everything before changing anything.
  // Returns the version after the push.
  absl::StatusOr<uint64_t> Push(const PushRequest& request, const float* values, size_t count);

  // Answers now, or (SYNC) once step `request.step() - 1` is applied.
  void Pull(const PullRequest& request, PullCallback done);

  // Fails every waiting pull with `status` (job dropped, server stopping).
  void CancelWaiters(const absl::Status& status);

  ShardStatus Status();

  // Counts a push refused before it reached Push (bad dtype or length, ...) and keeps its error
  // for the admin API.
  void RecordRejectedPush(const PushRequest& request, const absl::Status& error);

  // Calls `done` with a copy of the values and optimizer state at version `version` (0: now):
  // at once if the shard is there, when the update that reaches it is applied if it is not there
  // yet (SYNC: all shards of a job checkpoint the same step), FAILED_PRECONDITION if it is past it.
  using SnapshotCallback = std::function<void(absl::StatusOr<ShardCheckpoint>)>;
  void Snapshot(uint64_t version, SnapshotCallback done);

  // SYNC: which workers the steps wait for; see ParameterServer.SetWorkers and
  // SyncAggregator::SetWorkers. May complete (apply) the step being aggregated. Changes nothing
  // on error: INVALID_ARGUMENT, FAILED_PRECONDITION (ASYNC; a joining rank's first step already
  // applied).
  absl::Status SetWorkers(const std::vector<uint64_t>& from_step);
  // The checks of SetWorkers alone.
  absl::Status CheckSetWorkers(const std::vector<uint64_t>& from_step);

  // Replaces the values (size of the shard's range) before training starts.
  void LoadValues(const float* values);

  // Replaces the values, optimizer state and version with a checkpoint's. INVALID_ARGUMENT if the
  // checkpoint is of another job, table or key range, or has the wrong optimizer state.
  absl::Status Restore(const ShardCheckpoint& checkpoint);

 private:
  struct Waiter {
    uint64_t min_version;
    uint64_t offset;  // Into values_.
    uint64_t count;
    PullCallback done;
    absl::Time since;  // When the pull arrived.
  };

  using ReadySnapshot = std::pair<ShardCheckpoint, SnapshotCallback>;

  ShardCheckpoint MakeCheckpoint() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Applies one update (grad: count values for keys [offset, offset + count)) and collects the
  // pulls and snapshots it releases, to be answered by Answer() once the lock is released.
  void ApplyLocked(const float* grad, uint64_t offset, uint64_t count, absl::Time now,
                   std::vector<Waiter>* ready, std::vector<ReadySnapshot>* snapshots)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Answer(std::vector<Waiter> ready, std::vector<ReadySnapshot> snapshots)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CheckSetWorkersLocked(const std::vector<uint64_t>& from_step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The optimizer step (learning-rate schedule, Adam bias correction) of the n-th update.
  uint64_t OptimizerStep(uint64_t update) const;

  // Copies values_[offset, offset + count) into a pooled buffer.
  PooledBuffer CopyOut(uint64_t offset, uint64_t count) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void RecordPull(uint64_t count, uint32_t rank, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordRejection(const PushRequest& request, const absl::Status& error, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ShardConfig config_;
  const ShardEnv env_;
  const uint64_t size_;

  absl::Mutex mu_;
  std::vector<float> values_ ABSL_GUARDED_BY(mu_);  // (size_) the parameters.
  std::unique_ptr<Optimizer> optimizer_ ABSL_GUARDED_BY(mu_);
  SyncAggregator aggregator_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // Updates applied.
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, SnapshotCallback>> snapshot_waiters_ ABSL_GUARDED_BY(mu_);

  // Statistics for the admin API.
  uint64_t pushes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rejected_pushes_ ABSL_GUARDED_BY(mu_) = 0;
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

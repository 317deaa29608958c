// Aggregate: how the gradients that workers push become one update. SYNC mode sums the pushes of
// one step and releases their mean once every worker has pushed the whole shard (a worker may send
// it as several non-overlapping chunks); ASYNC mode has no aggregation: each push goes straight to
// the optimizer (see Shard::Push).
//
// A worker that clips its gradient to a global norm knows the clipping factor only once backward
// is done, after it sent most of its gradient (worker/step_pipeline.h): it pushes with
// `scale_follows` and sends the factor afterwards (Commit). Those pushes wait, unscaled, in a
// buffer of the worker's own until then; at the end of the step they are added to the sum in rank
// order, each times its worker's factor, so the result is the same as if the workers had scaled
// before pushing, and does not depend on the order pushes arrived in. A job's single worker has
// nothing to sum: its pushes stay in their payload buffers and the optimizer reads them there
// (Result's Gradient::parts).
#ifndef PSRV_SERVER_AGGREGATE_H_
#define PSRV_SERVER_AGGREGATE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/buffer_pool.h"
#include "proto/types.pb.h"

namespace psrv {

// A gradient for the optimizer's pass over keys [0, n) of an update: values(i) * scale, where
// values are either contiguous FP32 (`grad`) or pieces of FP32 or BF16 as pushes brought them
// (`parts`, in key order, covering [0, n) without overlap; `grad` is null).
struct Gradient {
  struct Part {
    size_t offset;       // First key.
    size_t count;        // Keys.
    const void* values;  // count values of dtype.
    DType dtype;
  };
  const float* grad = nullptr;
  float scale = 1.0f;
  std::vector<Part> parts;

  // Values [begin, begin + n) as FP32: a pointer into `grad` or into an FP32 part that holds them
  // all, else `scratch` (room for n values) filled from the parts (BF16 widened exactly).
  const float* Values(size_t begin, size_t n, float* scratch) const;
};

// The sum of one step's pushes for one shard. Not thread-safe: the owning Shard serialises calls.
class SyncAggregator {
 public:
  // `aggregate_first` (backup workers, TrainingSpec.aggregate_first): a step is complete once
  // that many of the workers taking part in it pushed all of it; the mean is theirs alone, and
  // what the others pushed for the step is dropped (DroppedPushes). 0, or at least the workers
  // taking part: all of them.
  SyncAggregator(size_t size, uint32_t num_workers, uint32_t aggregate_first = 0);

  // Rank r takes part in steps >= from_step[r]; kNever: in none (it left the job).
  static constexpr uint64_t kNever = UINT64_MAX;

  // Whether worker `rank` may push keys [offset, offset + count) of the shard for `step` now, given
  // `applied_steps` steps already applied. INVALID_ARGUMENT: step 0, or scale_follows unlike the
  // worker's other pushes (or commit) of the step. ALREADY_EXISTS: the step was already applied,
  // or this worker already pushed some of these keys for it (a resend). FAILED_PRECONDITION: the
  // step is ahead of the next one, or the worker takes no part in it. Changes nothing.
  absl::Status Check(uint32_t rank, uint64_t step, uint64_t applied_steps, size_t offset,
                     size_t count, bool scale_follows = false) const;

  // Adds a push of `step` that passed Check: `count` values of `dtype` (FP32 or BF16, checked
  // finite) for keys [offset, offset + count). Returns true when the step is complete: every
  // worker taking part has pushed every key, and committed if its pushes wait for a scale.
  // `payload`, if given, is the buffer `grad` points into: a BF16 push that must wait (for its
  // worker's scale, or to know whether the worker is among the first to complete the step) is
  // then kept in it until the step completes, instead of widened into an FP32 staging buffer
  // (half the memory, one pass less; the same sums).
  bool Add(uint32_t rank, uint64_t step, size_t offset, size_t count, const void* grad,
           DType dtype, bool scale_follows, std::shared_ptr<PooledBuffer> payload = nullptr);
  bool Add(uint32_t rank, uint64_t step, size_t offset, size_t count, const float* grad) {
    return Add(rank, step, offset, count, grad, FP32, false);
  }

  // Whether worker `rank` may commit `step` with `scale` (the factor of its pushes with
  // scale_follows). INVALID_ARGUMENT: a scale that is not finite and > 0, a worker whose pushes of
  // the step are final already, or one that committed the step with another scale.
  // ALREADY_EXISTS: the step was applied, or committed with this scale (a resend).
  // FAILED_PRECONDITION: as Check.
  absl::Status CheckCommit(uint32_t rank, uint64_t step, uint64_t applied_steps,
                           float scale) const;
  // Records a commit that passed CheckCommit; returns true when the step is complete.
  bool Commit(uint32_t rank, uint64_t step, float scale);

  // Changes which workers take part in which steps (`from_step`: one entry per rank), while `step`
  // is the step being aggregated. A worker leaving in the middle of a step keeps what it pushed
  // for it: those keys are averaged over the workers that pushed them (pushes still waiting for a
  // scale that never came are dropped). Returns true if the step now has pushes and every worker
  // still taking part has pushed every key (apply it). INVALID_ARGUMENT (nothing changes): not
  // one entry per rank, or no worker takes part in `step`.
  absl::StatusOr<bool> SetWorkers(const std::vector<uint64_t>& from_step, uint64_t step);
  const std::vector<uint64_t>& from_step() const { return from_step_; }

  // The mean of the step's (scaled) pushes, as values(i) * scale (size values): valid once the
  // step is complete, until Reset. The scale is left for the optimizer's pass to apply, saving one.
  // With a single worker whose pushes all came with their payload buffers (Add's `payload`), the
  // values are read from those buffers as received, BF16 or FP32, block by block as the optimizer
  // goes (Gradient::parts): no FP32 sum of the shard's size is written and read back.
  using MeanGradient = Gradient;
  MeanGradient Result();
  // The same, multiplied out (for replication, and tests).
  const float* Mean();

  // Starts the next step.
  void Reset();

  // Pushes (chunks) received for the step being aggregated.
  uint32_t pending() const { return pushes_; }
  // Backup workers, once the step is complete: the ranks whose pushes make its mean (rank order),
  // and the pushes (chunks) of the step from the others, dropped.
  std::vector<uint32_t> Contributors() const;
  uint32_t DroppedPushes() const;
  // Backup workers: fewer workers than take part complete a step.
  bool backup_workers() const { return aggregate_first_ > 0 && aggregate_first_ < num_workers_; }
  // Ranks taking part in the step being aggregated that have not pushed every key of it (or not
  // committed it).
  std::vector<uint32_t> IncompleteWorkers() const;
  size_t bytes() const;

 private:
  struct Rank {
    std::map<size_t, size_t> pushed;  // Key ranges [begin, end) pushed this step, by begin.
    size_t pushed_keys = 0;           // Keys covered so far.
    enum class Kind { kUnknown, kFinal, kScaleFollows } kind = Kind::kUnknown;
    bool committed = false;
    float scale = 1.0f;
    // (size) Pushes waiting for the scale (with backup workers: every push, until it is known
    // whether the rank is among the first to complete the step); allocated on first use, kept
    // for later steps. With a single worker the sum itself holds them.
    std::vector<float> staged;
    // The waiting BF16 pushes that came with their payload buffer, kept as received instead of
    // in `staged` (a single worker: every push with its payload buffer, BF16 or FP32, instead of
    // in the sum): pushed range begin -> the buffer (the range's values from its first byte).
    struct Held {
      std::shared_ptr<PooledBuffer> payload;
      DType dtype;
    };
    std::map<size_t, Held> held;
  };

  bool TakesPart(uint32_t rank, uint64_t step) const { return from_step_[rank] <= step; }
  // The checks of Check and CheckCommit on the step alone.
  absl::Status CheckStep(uint32_t rank, uint64_t step, uint64_t applied_steps) const;
  bool RankComplete(const Rank& rank) const {
    return rank.pushed_keys == size_ && (rank.kind != Rank::Kind::kScaleFollows || rank.committed);
  }
  // Every worker taking part in step_ has pushed every key (and committed) (and one takes part);
  // with backup workers, aggregate_first of them (or all, if fewer take part).
  bool Complete() const;
  // Writes (first contribution to a key this step) or adds `count` values (FP32 or BF16) times
  // `scale` into sum_ at `offset`.
  void Accumulate(size_t offset, size_t count, const void* grad, DType dtype, float scale);
  // Whether a push's values can be kept in their payload buffer: `grad` is its first byte.
  static bool Holdable(const void* grad, DType dtype, const PooledBuffer* payload);
  // Keeps a push that must wait: in r.held (BF16 with its payload buffer) or widened into
  // r.staged.
  void Stage(Rank& r, size_t offset, size_t count, const void* grad, DType dtype,
             std::shared_ptr<PooledBuffer> payload);
  // Adds every range rank `r` pushed, from r.held or r.staged, times `scale`, into sum_ (ranges in
  // key order).
  void AddWaiting(Rank& r, float scale);
  // A single worker (no backup workers): the pushes it kept in r.held go into sum_, where its
  // other pushes are already (then r.held is empty).
  void AddHeld(Rank& r);
  // A single worker whose every push is in r.held: the result reads them (Gradient::parts).
  bool ReadsHeld() const;
  // Adds the committed staged pushes of every rank (backup workers: of the contributors), in rank
  // order, into sum_. Returns the number of workers whose gradients make the mean.
  size_t AddStaged();
  size_t TakingPart() const;

  const size_t size_;
  const uint32_t num_workers_;
  const uint32_t aggregate_first_;
  std::vector<uint64_t> from_step_;  // (num_workers) see SetWorkers.
  uint64_t step_ = 0;                // The step being aggregated (set by Add and SetWorkers).
  std::vector<float> sum_;  // (size) lazily allocated; only the keys in covered_ are valid.
  std::map<size_t, size_t> covered_;  // Key ranges of sum_ written this step, merged, by begin.
  std::vector<Rank> ranks_;           // (num_workers)
  // Key ranges pushed this step by workers that left during it: one more contribution each.
  std::vector<std::pair<size_t, size_t>> left_ranges_;
  uint32_t pushes_ = 0;  // Pushes (chunks) this step.
  bool staged_added_ = false;  // AddStaged ran for this step.
  float mean_scale_ = 1.0f;    // Result's scale while it is not multiplied out.
};

}  // namespace psrv

#endif  // PSRV_SERVER_AGGREGATE_H_

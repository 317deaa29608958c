// Aggregate: how the gradients that workers push become one update. SYNC mode sums the pushes of
// one step and releases their mean once every worker has pushed the whole shard (a worker may send
// it as several non-overlapping chunks); ASYNC mode has no aggregation: each push goes straight to
// the optimizer (see Shard::Push).
#ifndef PSRV_SERVER_AGGREGATE_H_
#define PSRV_SERVER_AGGREGATE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace psrv {

// The sum of one step's pushes for one shard. Not thread-safe: the owning Shard serialises calls.
class SyncAggregator {
 public:
  SyncAggregator(size_t size, uint32_t num_workers);

  // Rank r takes part in steps >= from_step[r]; kNever: in none (it left the job).
  static constexpr uint64_t kNever = UINT64_MAX;

  // Whether worker `rank` may push keys [offset, offset + count) of the shard for `step` now, given
  // `applied_steps` steps already applied. INVALID_ARGUMENT: step 0. ALREADY_EXISTS: the step was
  // already applied, or this worker already pushed some of these keys for it (a resend).
  // FAILED_PRECONDITION: the step is ahead of the next one, or the worker takes no part in it.
  // Changes nothing.
  absl::Status Check(uint32_t rank, uint64_t step, uint64_t applied_steps, size_t offset,
                     size_t count) const;

  // Adds a push of `step` that passed Check: grad (count) for keys [offset, offset + count).
  // Returns true when every worker taking part in the step has pushed every key of it.
  bool Add(uint32_t rank, uint64_t step, size_t offset, size_t count, const float* grad);

  // Changes which workers take part in which steps (`from_step`: one entry per rank), while `step`
  // is the step being aggregated. A worker leaving in the middle of a step keeps what it pushed
  // for it: those keys are averaged over the workers that pushed them. Returns true if the step
  // now has pushes and every worker still taking part has pushed every key (apply it).
  // INVALID_ARGUMENT (nothing changes): not one entry per rank, or no worker takes part in `step`.
  absl::StatusOr<bool> SetWorkers(const std::vector<uint64_t>& from_step, uint64_t step);
  const std::vector<uint64_t>& from_step() const { return from_step_; }

  // The mean of the step's pushes (size); valid after Add returned true, until Reset.
  const float* Mean();

  // Starts the next step.
  void Reset();

  // Pushes (chunks) received for the step being aggregated.
  uint32_t pending() const { return pushes_; }
  // Ranks taking part in the step being aggregated that have not pushed every key of it.
  std::vector<uint32_t> IncompleteWorkers() const;
  size_t bytes() const { return sum_.capacity() * sizeof(float); }

 private:
  bool TakesPart(uint32_t rank, uint64_t step) const { return from_step_[rank] <= step; }
  // Every worker taking part in step_ has pushed every key (and at least one takes part).
  bool Complete() const;

  const size_t size_;
  const uint32_t num_workers_;
  std::vector<uint64_t> from_step_;  // (num_workers) see SetWorkers.
  uint64_t step_ = 0;                // The step being aggregated (set by Add and SetWorkers).
  std::vector<float> sum_;  // (size) lazily allocated; zero at the start of a step.
  // Per worker: the key ranges [begin, end) pushed for the current step, by begin.
  std::vector<std::map<size_t, size_t>> pushed_;  // (num_workers)
  std::vector<size_t> pushed_keys_;               // (num_workers) keys covered so far.
  // Key ranges pushed this step by workers that left during it: one more contribution each.
  std::vector<std::pair<size_t, size_t>> left_ranges_;
  uint32_t pushes_ = 0;                           // Pushes (chunks) this step.
};

}  // namespace psrv

#endif  // PSRV_SERVER_AGGREGATE_H_

// Aggregate: how the gradients that workers push become one update. SYNC mode sums the pushes of
// one step and releases their mean once every worker has pushed; ASYNC mode has no aggregation:
// each push goes straight to the optimizer (see Shard::Push).
#ifndef PSRV_SERVER_AGGREGATE_H_
#define PSRV_SERVER_AGGREGATE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace psrv {

// The sum of one step's pushes for one shard. Not thread-safe: the owning Shard serialises calls.
class SyncAggregator {
 public:
  SyncAggregator(size_t size, uint32_t num_workers);

  // Whether worker `rank` may push `step` now, given `applied_steps` steps already applied.
  // FAILED_PRECONDITION: step already applied or not the next one; ALREADY_EXISTS: this worker
  // already pushed this step. Changes nothing.
  absl::Status Check(uint32_t rank, uint64_t step, uint64_t applied_steps) const;

  // Adds a push that passed Check. Returns true when every worker has pushed the step.
  bool Add(uint32_t rank, const float* grad);

  // The mean of the step's pushes (size); valid after Add returned true, until Reset.
  const float* Mean();

  // Starts the next step.
  void Reset();

  uint32_t pending() const { return pushed_count_; }
  size_t bytes() const { return sum_.capacity() * sizeof(float); }

 private:
  const size_t size_;
  const uint32_t num_workers_;
  std::vector<float> sum_;          // (size) lazily allocated.
  std::vector<bool> pushed_;        // (num_workers) who pushed the current step.
  uint32_t pushed_count_ = 0;
};

}  // namespace psrv

#endif  // PSRV_SERVER_AGGREGATE_H_

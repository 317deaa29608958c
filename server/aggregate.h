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

namespace psrv {

// The sum of one step's pushes for one shard. Not thread-safe: the owning Shard serialises calls.
class SyncAggregator {
 public:
  SyncAggregator(size_t size, uint32_t num_workers);

  // Whether worker `rank` may push keys [offset, offset + count) of the shard for `step` now, given
  // `applied_steps` steps already applied. FAILED_PRECONDITION: step already applied or not the
  // next one; ALREADY_EXISTS: this worker already pushed some of these keys for this step.
  // Changes nothing.
  absl::Status Check(uint32_t rank, uint64_t step, uint64_t applied_steps, size_t offset,
                     size_t count) const;

  // Adds a push that passed Check: grad (count) for keys [offset, offset + count). Returns true
  // when every worker has pushed every key of the step.
  bool Add(uint32_t rank, size_t offset, size_t count, const float* grad);

  // The mean of the step's pushes (size); valid after Add returned true, until Reset.
  const float* Mean();

  // Starts the next step.
  void Reset();

  // Pushes (chunks) received for the step being aggregated.
  uint32_t pending() const { return pushes_; }
  // Ranks that have not pushed every key of the step being aggregated, ascending.
  std::vector<uint32_t> IncompleteWorkers() const;
  size_t bytes() const { return sum_.capacity() * sizeof(float); }

 private:
  const size_t size_;
  const uint32_t num_workers_;
  std::vector<float> sum_;  // (size) lazily allocated; zero at the start of a step.
  // Per worker: the key ranges [begin, end) pushed for the current step, by begin.
  std::vector<std::map<size_t, size_t>> pushed_;  // (num_workers)
  std::vector<size_t> pushed_keys_;               // (num_workers) keys covered so far.
  uint32_t complete_workers_ = 0;                 // Workers that covered every key.
  uint32_t pushes_ = 0;                           // Pushes (chunks) this step.
};

}  // namespace psrv

#endif  // PSRV_SERVER_AGGREGATE_H_

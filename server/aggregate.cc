#include "server/aggregate.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace psrv {

SyncAggregator::SyncAggregator(size_t size, uint32_t num_workers)
    : size_(size), num_workers_(num_workers), pushed_(num_workers), pushed_keys_(num_workers, 0) {}

absl::Status SyncAggregator::Check(uint32_t rank, uint64_t step, uint64_t applied_steps,
                                   size_t offset, size_t count) const {
  if (step <= applied_steps) {
    return absl::FailedPreconditionError(absl::StrCat(
        "step ", step, " was already applied (the shard is at step ", applied_steps, ")"));
  }
  if (step > applied_steps + 1) {
    return absl::FailedPreconditionError(absl::StrCat("step ", step, " is ahead: step ",
                                                      applied_steps + 1,
                                                      " has not been applied yet"));
  }
  // Overlap with an earlier chunk: the first range starting at or after `offset`, or the one
  // before it reaching past `offset`.
  const std::map<size_t, size_t>& ranges = pushed_[rank];
  auto next = ranges.lower_bound(offset);
  const bool overlaps = (next != ranges.end() && next->first < offset + count) ||
                        (next != ranges.begin() && std::prev(next)->second > offset);
  if (overlaps) {
    return absl::AlreadyExistsError(absl::StrCat("worker ", rank, " already pushed keys in [",
                                                 offset, ", ", offset + count, ") of step ",
                                                 step, " for this shard"));
  }
  return absl::OkStatus();
}

bool SyncAggregator::Add(uint32_t rank, size_t offset, size_t count, const float* grad) {
  if (sum_.size() != size_) sum_.assign(size_, 0.0f);
  float* __restrict sum = sum_.data() + offset;
  for (size_t i = 0; i < count; ++i) sum[i] += grad[i];
  pushed_[rank].emplace(offset, offset + count);
  ++pushes_;
  pushed_keys_[rank] += count;
  if (pushed_keys_[rank] == size_) ++complete_workers_;
  return complete_workers_ == num_workers_;
}

std::vector<uint32_t> SyncAggregator::IncompleteWorkers() const {
  std::vector<uint32_t> ranks;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (pushed_keys_[rank] != size_) ranks.push_back(rank);
  }
  return ranks;
}

const float* SyncAggregator::Mean() {
  const float scale = 1.0f / static_cast<float>(num_workers_);
  for (float& x : sum_) x *= scale;
  return sum_.data();
}

void SyncAggregator::Reset() {
  for (auto& ranges : pushed_) ranges.clear();
  std::fill(pushed_keys_.begin(), pushed_keys_.end(), 0);
  complete_workers_ = 0;
  pushes_ = 0;
  std::fill(sum_.begin(), sum_.end(), 0.0f);
}

}  // namespace psrv

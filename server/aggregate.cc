#include "server/aggregate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace psrv {

SyncAggregator::SyncAggregator(size_t size, uint32_t num_workers)
    : size_(size), num_workers_(num_workers), pushed_(num_workers, false) {}

absl::Status SyncAggregator::Check(uint32_t rank, uint64_t step, uint64_t applied_steps) const {
  if (step <= applied_steps) {
    return absl::FailedPreconditionError(absl::StrCat(
        "step ", step, " was already applied (the shard is at step ", applied_steps, ")"));
  }
  if (step > applied_steps + 1) {
    return absl::FailedPreconditionError(absl::StrCat("step ", step, " is ahead: step ",
                                                      applied_steps + 1,
                                                      " has not been applied yet"));
  }
  if (pushed_[rank]) {
    return absl::AlreadyExistsError(
        absl::StrCat("worker ", rank, " already pushed step ", step));
  }
  return absl::OkStatus();
}

bool SyncAggregator::Add(uint32_t rank, const float* grad) {
  if (pushed_count_ == 0) {
    sum_.assign(grad, grad + size_);
  } else {
    float* sum = sum_.data();
    for (size_t i = 0; i < size_; ++i) sum[i] += grad[i];
  }
  pushed_[rank] = true;
  ++pushed_count_;
  return pushed_count_ == num_workers_;
}

const float* SyncAggregator::Mean() {
  const float scale = 1.0f / static_cast<float>(num_workers_);
  for (float& x : sum_) x *= scale;
  return sum_.data();
}

void SyncAggregator::Reset() {
  std::fill(pushed_.begin(), pushed_.end(), false);
  pushed_count_ = 0;
}

}  // namespace psrv

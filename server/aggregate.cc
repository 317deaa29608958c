#include "server/aggregate.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace psrv {

SyncAggregator::SyncAggregator(size_t size, uint32_t num_workers)
    : size_(size),
      num_workers_(num_workers),
      from_step_(num_workers, 0),
      pushed_(num_workers),
      pushed_keys_(num_workers, 0) {}

absl::Status SyncAggregator::Check(uint32_t rank, uint64_t step, uint64_t applied_steps,
                                   size_t offset, size_t count) const {
  if (step == 0) return absl::InvalidArgumentError("steps start at 1");
  if (step <= applied_steps) {
    // A resend (e.g. after a fail-over): this worker's gradient is in the applied update.
    return absl::AlreadyExistsError(absl::StrCat(
        "step ", step, " was already applied (the shard is at step ", applied_steps, ")"));
  }
  if (step > applied_steps + 1) {
    return absl::FailedPreconditionError(absl::StrCat("step ", step, " is ahead: step ",
                                                      applied_steps + 1,
                                                      " has not been applied yet"));
  }
  if (!TakesPart(rank, step)) {
    return absl::FailedPreconditionError(
        from_step_[rank] == kNever
            ? absl::StrCat("worker rank ", rank, " was removed from the job")
            : absl::StrCat("worker rank ", rank, " joins the job at step ", from_step_[rank]));
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

bool SyncAggregator::Add(uint32_t rank, uint64_t step, size_t offset, size_t count,
                         const float* grad) {
  if (sum_.size() != size_) sum_.assign(size_, 0.0f);
  step_ = step;
  float* __restrict sum = sum_.data() + offset;
  for (size_t i = 0; i < count; ++i) sum[i] += grad[i];
  pushed_[rank].emplace(offset, offset + count);
  ++pushes_;
  pushed_keys_[rank] += count;
  return Complete();
}

bool SyncAggregator::Complete() const {
  uint32_t taking_part = 0;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (!TakesPart(rank, step_)) continue;
    if (pushed_keys_[rank] != size_) return false;
    ++taking_part;
  }
  return taking_part > 0;
}

absl::StatusOr<bool> SyncAggregator::SetWorkers(const std::vector<uint64_t>& from_step,
                                                uint64_t step) {
  if (from_step.size() != num_workers_) {
    return absl::InvalidArgumentError(absl::StrCat("from_step has ", from_step.size(),
                                                   " entries; the job has ", num_workers_,
                                                   " workers"));
  }
  if (std::none_of(from_step.begin(), from_step.end(), [step](uint64_t s) { return s <= step; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("no worker would take part in step ", step));
  }
  step_ = step;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (TakesPart(rank, step) && from_step[rank] > step) {
      // Leaving now: what it pushed for this step stays in the sum, counted where it covers.
      for (const auto& [begin, end] : pushed_[rank]) left_ranges_.emplace_back(begin, end);
      pushed_[rank].clear();
      pushed_keys_[rank] = 0;
    }
  }
  from_step_ = from_step;
  return pushes_ > 0 && Complete();
}

std::vector<uint32_t> SyncAggregator::IncompleteWorkers() const {
  std::vector<uint32_t> ranks;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (TakesPart(rank, step_) && pushed_keys_[rank] != size_) ranks.push_back(rank);
  }
  return ranks;
}

const float* SyncAggregator::Mean() {
  uint32_t taking_part = 0;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) taking_part += TakesPart(rank, step_);
  const float scale = 1.0f / static_cast<float>(taking_part);
  if (left_ranges_.empty()) {
    for (float& x : sum_) x *= scale;
    return sum_.data();
  }
  // Keys also pushed by workers that left mid-step: divide by the number of pushes they got.
  std::map<size_t, int> edges;  // Key -> change in the count of extra pushes from there on.
  for (const auto& [begin, end] : left_ranges_) {
    ++edges[begin];
    --edges[end];
  }
  edges[size_] += 0;
  size_t key = 0;
  int extra = 0;
  for (const auto& [edge, change] : edges) {
    const float s = 1.0f / static_cast<float>(taking_part + extra);
    for (; key < edge; ++key) sum_[key] *= s;
    extra += change;
  }
  return sum_.data();
}

void SyncAggregator::Reset() {
  for (auto& ranges : pushed_) ranges.clear();
  std::fill(pushed_keys_.begin(), pushed_keys_.end(), 0);
  left_ranges_.clear();
  pushes_ = 0;
  std::fill(sum_.begin(), sum_.end(), 0.0f);
}

}  // namespace psrv

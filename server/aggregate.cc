#include "server/aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"
#include "common/vector_clones.h"

namespace psrv {
namespace {

// out[i] = in[i] * scale, or out[i] += in[i] * scale, for FP32 or BF16 input. Written out per case
// so that each loop vectorizes (the product is rounded before the sum: -ffp-contract=off).
template <bool kAdd, typename In>
void ScaleInto(const In* __restrict in, size_t count, float scale, float* __restrict out) {
  for (size_t i = 0; i < count; ++i) {
    float g;
    if constexpr (sizeof(In) == 2) {
      g = Bf16ToFloat(in[i]);
    } else {
      g = in[i];
    }
    if constexpr (kAdd) {
      out[i] += g * scale;
    } else {
      out[i] = g * scale;
    }
  }
}

template <bool kAdd>
void ScaleInto(const void* in, DType dtype, size_t count, float scale, float* out) {
  if (dtype == BF16) {
    ScaleInto<kAdd>(static_cast<const uint16_t*>(in), count, scale, out);
  } else {
    ScaleInto<kAdd>(static_cast<const float*>(in), count, scale, out);
  }
}

const void* Advance(const void* values, DType dtype, size_t n) {
  return static_cast<const char*>(values) + n * (dtype == BF16 ? 2 : sizeof(float));
}

}  // namespace

const float* Gradient::Values(size_t begin, size_t n, float* scratch) const {
  if (grad != nullptr) return grad + begin;
  // The part holding `begin` (the parts cover the update from key 0, in key order).
  auto part = std::upper_bound(parts.begin(), parts.end(), begin,
                               [](size_t key, const Part& p) { return key < p.offset; });
  --part;
  if (part->dtype == FP32 && begin + n <= part->offset + part->count) {
    return static_cast<const float*>(part->values) + (begin - part->offset);
  }
  const size_t end = begin + n;
  for (size_t key = begin; key < end; ++part) {
    const size_t stop = std::min(end, part->offset + part->count);
    const void* in = Advance(part->values, part->dtype, key - part->offset);
    if (part->dtype == BF16) {
      Bf16ToFloats(static_cast<const uint16_t*>(in), stop - key, scratch + (key - begin));
    } else {
      std::memcpy(scratch + (key - begin), in, (stop - key) * sizeof(float));
    }
    key = stop;
  }
  return scratch;
}

SyncAggregator::SyncAggregator(size_t size, uint32_t num_workers, uint32_t aggregate_first)
    : size_(size),
      num_workers_(num_workers),
      aggregate_first_(aggregate_first),
      from_step_(num_workers, 0),
      ranks_(num_workers) {}

absl::Status SyncAggregator::CheckStep(uint32_t rank, uint64_t step,
                                       uint64_t applied_steps) const {
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
  return absl::OkStatus();
}

absl::Status SyncAggregator::Check(uint32_t rank, uint64_t step, uint64_t applied_steps,
                                   size_t offset, size_t count, bool scale_follows) const {
  if (absl::Status status = CheckStep(rank, step, applied_steps); !status.ok()) return status;
  // Overlap with an earlier chunk: the first range starting at or after `offset`, or the one
  // before it reaching past `offset`.
  const Rank& r = ranks_[rank];
  auto next = r.pushed.lower_bound(offset);
  const bool overlaps = (next != r.pushed.end() && next->first < offset + count) ||
                        (next != r.pushed.begin() && std::prev(next)->second > offset);
  if (overlaps) {
    return absl::AlreadyExistsError(absl::StrCat("worker ", rank, " already pushed keys in [",
                                                 offset, ", ", offset + count, ") of step ",
                                                 step, " for this shard"));
  }
  const Rank::Kind kind = scale_follows ? Rank::Kind::kScaleFollows : Rank::Kind::kFinal;
  if (r.kind != Rank::Kind::kUnknown && r.kind != kind) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker ", rank, " sent step ", step, " both with and without scale_follows (or committed "
        "it): a worker's pushes of a step are either all final or all scaled by its commit"));
  }
  return absl::OkStatus();
}

absl::Status SyncAggregator::CheckCommit(uint32_t rank, uint64_t step, uint64_t applied_steps,
                                         float scale) const {
  if (!std::isfinite(scale) || scale <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("grad_scale must be a finite number > 0, got ", scale));
  }
  if (absl::Status status = CheckStep(rank, step, applied_steps); !status.ok()) return status;
  const Rank& r = ranks_[rank];
  if (r.kind == Rank::Kind::kFinal) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker ", rank, " pushed step ", step, " without scale_follows: nothing to scale"));
  }
  if (r.committed) {
    if (r.scale == scale) {
      return absl::AlreadyExistsError(
          absl::StrCat("worker ", rank, " already committed step ", step));
    }
    return absl::InvalidArgumentError(absl::StrCat("worker ", rank, " committed step ", step,
                                                   " with grad_scale ", r.scale, ", not ", scale));
  }
  return absl::OkStatus();
}

PSRV_VECTOR_CLONES void SyncAggregator::Accumulate(size_t offset, size_t count, const void* grad, DType dtype,
                                float scale) {
  if (sum_.size() != size_) sum_.resize(size_);
  float* sum = sum_.data();
  // Keys nobody contributed to yet this step are written, the others added to.
  size_t key = offset;
  const size_t end = offset + count;
  auto it = covered_.upper_bound(key);
  if (it != covered_.begin()) --it;
  while (key < end) {
    while (it != covered_.end() && it->second <= key) ++it;
    const bool inside = it != covered_.end() && it->first <= key;
    const size_t stop = inside ? std::min(end, it->second)
                               : std::min(end, it != covered_.end() ? it->first : end);
    const void* in = Advance(grad, dtype, key - offset);
    if (inside) {
      ScaleInto<true>(in, dtype, stop - key, scale, sum + key);
    } else {
      ScaleInto<false>(in, dtype, stop - key, scale, sum + key);
    }
    key = stop;
  }
  // Merge [offset, end) into covered_.
  size_t begin = offset, last = end;
  auto first = covered_.upper_bound(begin);
  if (first != covered_.begin() && std::prev(first)->second >= begin) --first;
  auto stop = first;
  while (stop != covered_.end() && stop->first <= last) {
    begin = std::min(begin, stop->first);
    last = std::max(last, stop->second);
    ++stop;
  }
  covered_.erase(first, stop);
  covered_.emplace(begin, last);
}

bool SyncAggregator::Holdable(const void* grad, DType dtype, const PooledBuffer* payload) {
  return payload != nullptr && payload->data() == grad &&
         (dtype == BF16 || reinterpret_cast<uintptr_t>(grad) % alignof(float) == 0);
}

void SyncAggregator::Stage(Rank& r, size_t offset, size_t count, const void* grad, DType dtype,
                           std::shared_ptr<PooledBuffer> payload) {
  if (dtype == BF16 && Holdable(grad, dtype, payload.get())) {
    r.held.emplace(offset, Rank::Held{std::move(payload), BF16});
    return;
  }
  if (r.staged.size() != size_) r.staged.resize(size_);
  ScaleInto<false>(grad, dtype, count, 1.0f, r.staged.data() + offset);
}

void SyncAggregator::AddWaiting(Rank& r, float scale) {
  for (const auto& [begin, end] : r.pushed) {
    auto held = r.held.find(begin);
    if (held != r.held.end()) {
      Accumulate(begin, end - begin, held->second.payload->data(), held->second.dtype, scale);
    } else {
      Accumulate(begin, end - begin, r.staged.data() + begin, FP32, scale);
    }
  }
  r.held.clear();  // Back to the pool.
}

void SyncAggregator::AddHeld(Rank& r) {
  for (const auto& [begin, held] : r.held) {
    Accumulate(begin, r.pushed.at(begin) - begin, held.payload->data(), held.dtype, 1.0f);
  }
  r.held.clear();  // Back to the pool.
}

bool SyncAggregator::ReadsHeld() const {
  if (num_workers_ != 1 || backup_workers() || !left_ranges_.empty()) return false;
  const Rank& r = ranks_[0];
  return !r.held.empty() && r.held.size() == r.pushed.size();
}

bool SyncAggregator::Add(uint32_t rank, uint64_t step, size_t offset, size_t count,
                         const void* grad, DType dtype, bool scale_follows,
                         std::shared_ptr<PooledBuffer> payload) {
  step_ = step;
  Rank& r = ranks_[rank];
  if (backup_workers()) {
    // Staged until the step is complete: only the first ranks to complete it are summed.
    r.kind = scale_follows ? Rank::Kind::kScaleFollows : Rank::Kind::kFinal;
    Stage(r, offset, count, grad, dtype, std::move(payload));
  } else if (num_workers_ == 1 && Holdable(grad, dtype, payload.get())) {
    // The only worker: the optimizer reads its pushes where they are (Result).
    r.kind = scale_follows ? Rank::Kind::kScaleFollows : Rank::Kind::kFinal;
    r.held.emplace(offset, Rank::Held{std::move(payload), dtype});
  } else if (!scale_follows) {
    r.kind = Rank::Kind::kFinal;
    Accumulate(offset, count, grad, dtype, 1.0f);
  } else {
    r.kind = Rank::Kind::kScaleFollows;
    if (num_workers_ == 1) {
      Accumulate(offset, count, grad, dtype, 1.0f);  // The only worker: the sum is its buffer.
    } else {
      Stage(r, offset, count, grad, dtype, std::move(payload));
    }
  }
  r.pushed.emplace(offset, offset + count);
  r.pushed_keys += count;
  ++pushes_;
  return Complete();
}

bool SyncAggregator::Commit(uint32_t rank, uint64_t step, float scale) {
  step_ = step;
  Rank& r = ranks_[rank];
  r.kind = Rank::Kind::kScaleFollows;
  r.committed = true;
  r.scale = scale;
  return pushes_ > 0 && Complete();
}

bool SyncAggregator::Complete() const {
  uint32_t taking_part = 0, complete = 0;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (!TakesPart(rank, step_)) continue;
    ++taking_part;
    if (RankComplete(ranks_[rank])) {
      ++complete;
    } else if (!backup_workers()) {
      return false;
    }
  }
  if (taking_part == 0) return false;
  return complete >= std::min(taking_part, backup_workers() ? aggregate_first_ : taking_part);
}

std::vector<uint32_t> SyncAggregator::Contributors() const {
  std::vector<uint32_t> ranks;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (TakesPart(rank, step_) && RankComplete(ranks_[rank])) ranks.push_back(rank);
  }
  return ranks;
}

uint32_t SyncAggregator::DroppedPushes() const {
  if (!backup_workers()) return 0;
  uint32_t dropped = 0;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    const Rank& r = ranks_[rank];
    if (!(TakesPart(rank, step_) && RankComplete(r))) dropped += r.pushed.size();
  }
  return dropped;
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
    Rank& r = ranks_[rank];
    if (!(TakesPart(rank, step) && from_step[rank] > step)) continue;
    // Leaving now: what it pushed for this step stays in the sum, counted where it covers;
    // pushes still waiting for its scale are dropped unless it committed.
    // (Backup workers: dropped, as a rank that does not complete the step.)
    const bool in_sum = !backup_workers() &&
                        (r.kind == Rank::Kind::kFinal ||
                         (r.kind == Rank::Kind::kScaleFollows && r.committed));
    if (in_sum) {
      if (r.kind == Rank::Kind::kScaleFollows && num_workers_ != 1) AddWaiting(r, r.scale);
      for (const auto& [begin, end] : r.pushed) left_ranges_.emplace_back(begin, end);
    }
    r.held.clear();
    r.pushed.clear();
    r.pushed_keys = 0;
    r.kind = Rank::Kind::kUnknown;
    r.committed = false;
  }
  from_step_ = from_step;
  return pushes_ > 0 && Complete();
}

std::vector<uint32_t> SyncAggregator::IncompleteWorkers() const {
  std::vector<uint32_t> ranks;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    if (TakesPart(rank, step_) && !RankComplete(ranks_[rank])) ranks.push_back(rank);
  }
  return ranks;
}

size_t SyncAggregator::TakingPart() const {
  size_t taking_part = 0;
  for (uint32_t rank = 0; rank < num_workers_; ++rank) taking_part += TakesPart(rank, step_);
  return taking_part;
}

size_t SyncAggregator::AddStaged() {
  if (backup_workers()) {
    const std::vector<uint32_t> contributors = Contributors();
    for (uint32_t rank : contributors) {  // Complete: every key pushed (and committed).
      Rank& r = ranks_[rank];
      AddWaiting(r, r.kind == Rank::Kind::kScaleFollows ? r.scale : 1.0f);
    }
    return contributors.size();
  }
  if (num_workers_ == 1) return TakingPart();  // Staged in the sum itself.
  for (uint32_t rank = 0; rank < num_workers_; ++rank) {
    Rank& r = ranks_[rank];
    if (!TakesPart(rank, step_) || r.kind != Rank::Kind::kScaleFollows || !r.committed) continue;
    AddWaiting(r, r.scale);
  }
  return TakingPart();
}

SyncAggregator::MeanGradient SyncAggregator::Result() {
  if (!staged_added_) {
    const float taking_part = static_cast<float>(AddStaged());
    staged_added_ = true;
    mean_scale_ = 1.0f / taking_part;
    const Rank& only = ranks_[0];
    if (num_workers_ == 1 && only.kind == Rank::Kind::kScaleFollows) {
      // (g * s) * 1 as a worker that scaled before pushing would have it: g * s.
      mean_scale_ = only.scale * mean_scale_;
    }
    if (!left_ranges_.empty()) {
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
        const float s = 1.0f / (taking_part + static_cast<float>(extra));
        for (; key < edge; ++key) sum_[key] *= s;
        extra += change;
      }
      mean_scale_ = 1.0f;
    }
  }
  if (ReadsHeld()) {
    MeanGradient mean;
    mean.scale = mean_scale_;
    const Rank& only = ranks_[0];
    mean.parts.reserve(only.held.size());
    for (const auto& [begin, held] : only.held) {
      mean.parts.push_back(Gradient::Part{begin, only.pushed.at(begin) - begin,
                                          held.payload->data(), held.dtype});
    }
    return mean;
  }
  if (num_workers_ == 1) AddHeld(ranks_[0]);  // Some of its pushes came without a payload.
  return MeanGradient{sum_.data(), mean_scale_, {}};
}

const float* SyncAggregator::Mean() {
  Result();
  if (num_workers_ == 1) AddHeld(ranks_[0]);
  if (mean_scale_ != 1.0f) {
    for (float& x : sum_) x *= mean_scale_;
    mean_scale_ = 1.0f;
  }
  return sum_.data();
}

void SyncAggregator::Reset() {
  for (Rank& r : ranks_) {
    r.held.clear();
    r.pushed.clear();
    r.pushed_keys = 0;
    r.kind = Rank::Kind::kUnknown;
    r.committed = false;
    r.scale = 1.0f;
  }
  covered_.clear();
  left_ranges_.clear();
  pushes_ = 0;
  staged_added_ = false;
  mean_scale_ = 1.0f;
}

size_t SyncAggregator::bytes() const {
  size_t bytes = sum_.capacity() * sizeof(float);
  for (const Rank& r : ranks_) {
    bytes += r.staged.capacity() * sizeof(float);
    for (const auto& [begin, held] : r.held) bytes += held.payload->size();
  }
  return bytes;
}

}  // namespace psrv

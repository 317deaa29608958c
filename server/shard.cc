#include "server/shard.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/initializer.h"
#include "common/key_range.h"
#include "common/status.h"

namespace psrv {
namespace {

// Index of the first NaN or Inf in values (count), or count. The scan has no early exit so that it
// vectorizes; only a bad push pays for the second pass.
size_t FirstNonFinite(const float* values, size_t count) {
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(values);
  uint32_t any = 0;
  for (size_t i = 0; i < count; ++i) any |= ((bits[i] & 0x7f800000u) == 0x7f800000u);
  if (!any) return count;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return count;
}

}  // namespace

Shard::Shard(ShardConfig config, ShardEnv env)
    : config_(std::move(config)),
      env_(std::move(env)),
      size_(RangeSize(config_.range)),
      values_(size_),
      optimizer_(Optimizer::Create(config_.optimizer, config_.table, size_)),
      aggregator_(size_, config_.num_workers),
      push_rate_(env_.clock()),
      pull_rate_(env_.clock()),
      bytes_in_rate_(env_.clock()),
      bytes_out_rate_(env_.clock()) {
  InitializeRange(config_.table, config_.range.begin(), size_, values_.data());
}

absl::StatusOr<uint64_t> Shard::Push(const PushRequest& request, const float* values,
                                     size_t count) {
  const uint64_t offset = request.range().begin() - config_.range.begin();
  // Checks that need no lock: a bad push never touches the shard.
  absl::Status invalid;
  if (const size_t bad = FirstNonFinite(values, count); bad < count) {
    invalid = absl::InvalidArgumentError(absl::StrCat(
        "gradient for table \"", config_.table.name(), "\" has ",
        std::isnan(values[bad]) ? "NaN" : "Inf", " at key ", request.range().begin() + bad,
        "; nothing was applied"));
  }
  std::vector<Waiter> ready;
  std::vector<ReadySnapshot> snapshots;
  uint64_t version;
  {
    const absl::Time now = env_.clock();
    absl::MutexLock lock(&mu_);
    if (invalid.ok() && config_.consistency == SYNC) {
      invalid = aggregator_.Check(request.worker_rank(), request.step(), version_, offset, count);
    }
    if (!invalid.ok()) {
      RecordRejection(request, invalid, now);
      return invalid;
    }
    ++pushes_;
    bytes_in_ += count * sizeof(float);
    workers_seen_.insert(request.worker_rank());
    push_rate_.Add(now);
    bytes_in_rate_.Add(now, static_cast<double>(count * sizeof(float)));
    if (env_.staleness != nullptr && request.has_base_version()) {
      env_.staleness->Observe(version_ > request.base_version()
                                  ? static_cast<double>(version_ - request.base_version())
                                  : 0.0);
    }
    bool apply = true;
    if (config_.consistency == SYNC) {
      if (aggregator_.pending() == 0) step_started_ = now;
      apply = aggregator_.Add(request.worker_rank(), request.step(), offset, count, values);
    }
    if (apply) {
      if (config_.consistency == SYNC) {
        ApplyLocked(aggregator_.Mean(), 0, size_, now, &ready, &snapshots);
      } else {
        ApplyLocked(values, offset, count, now, &ready, &snapshots);
      }
    }
    version = version_;
  }
  Answer(std::move(ready), std::move(snapshots));
  return version;
}

void Shard::ApplyLocked(const float* grad, uint64_t offset, uint64_t count, absl::Time now,
                        std::vector<Waiter>* ready, std::vector<ReadySnapshot>* snapshots) {
  optimizer_->Apply(grad, values_.data(), offset, count, OptimizerStep(version_ + 1));
  if (config_.consistency == SYNC) {
    aggregator_.Reset();
    if (env_.step_wait != nullptr) {
      env_.step_wait->Observe(absl::ToDoubleSeconds(now - step_started_));
    }
  }
  ++version_;
  last_update_ms_ = absl::ToUnixMillis(now);
  // Checkpoints waiting for this version are taken now, before any later update.
  for (auto it = snapshot_waiters_.begin(); it != snapshot_waiters_.end();) {
    if (it->first == version_) {
      snapshots->emplace_back(MakeCheckpoint(), std::move(it->second));
      it = snapshot_waiters_.erase(it);
    } else {
      ++it;
    }
  }
  // Hand the values to every pull that was waiting for this version.
  std::vector<Waiter> still_waiting;
  for (Waiter& w : waiters_) {
    (w.min_version <= version_ ? *ready : still_waiting).push_back(std::move(w));
  }
  waiters_ = std::move(still_waiting);
}

void Shard::Answer(std::vector<Waiter> ready, std::vector<ReadySnapshot> snapshots) {
  for (auto& [checkpoint, done] : snapshots) done(std::move(checkpoint));
  if (ready.empty()) return;
  // Copy under a shared lock, answer outside it.
  std::vector<PooledBuffer> copies;
  uint64_t ready_version;
  {
    absl::ReaderMutexLock lock(&mu_);
    ready_version = version_;
    for (const Waiter& w : ready) copies.push_back(CopyOut(w.offset, w.count));
  }
  if (env_.pull_wait != nullptr) {
    const absl::Time now = env_.clock();
    for (const Waiter& w : ready) env_.pull_wait->Observe(absl::ToDoubleSeconds(now - w.since));
  }
  for (size_t i = 0; i < ready.size(); ++i) {
    ready[i].done(absl::OkStatus(), ready_version, std::move(copies[i]));
  }
}

absl::Status Shard::SetWorkers(const std::vector<uint64_t>& from_step) {
  std::vector<Waiter> ready;
  std::vector<ReadySnapshot> snapshots;
  {
    const absl::Time now = env_.clock();
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckSetWorkersLocked(from_step));
    absl::StatusOr<bool> complete = aggregator_.SetWorkers(from_step, version_ + 1);
    if (!complete.ok()) return complete.status();
    if (*complete) ApplyLocked(aggregator_.Mean(), 0, size_, now, &ready, &snapshots);
  }
  Answer(std::move(ready), std::move(snapshots));
  return absl::OkStatus();
}

absl::Status Shard::CheckSetWorkers(const std::vector<uint64_t>& from_step) {
  absl::MutexLock lock(&mu_);
  return CheckSetWorkersLocked(from_step);
}

absl::Status Shard::CheckSetWorkersLocked(const std::vector<uint64_t>& from_step) {
  if (config_.consistency != SYNC) {
    return absl::FailedPreconditionError("only SYNC jobs have a set of workers a step waits for");
  }
  if (from_step.size() != config_.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("from_step has ", from_step.size(),
                                                   " entries; the job has ",
                                                   config_.num_workers, " workers"));
  }
  for (uint32_t rank = 0; rank < from_step.size(); ++rank) {
    const uint64_t first = from_step[rank];
    if (first != aggregator_.from_step()[rank] && first != SyncAggregator::kNever &&
        first <= version_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", rank, " cannot join at step ", first, ": table ", config_.table.name(),
          " already applied step ", version_));
    }
  }
  if (std::none_of(from_step.begin(), from_step.end(),
                   [next = version_ + 1](uint64_t s) { return s <= next; })) {
    return absl::InvalidArgumentError("no worker would be left to push the next step");
  }
  return absl::OkStatus();
}

uint64_t Shard::OptimizerStep(uint64_t update) const {
  // SYNC: one update per step. ASYNC: every worker's push is an update; the schedule advances
  // once per round of num_workers pushes, so it spans the same steps as in SYNC mode.
  if (config_.consistency == SYNC) return update;
  return (update + config_.num_workers - 1) / config_.num_workers;
}

void Shard::Pull(const PullRequest& request, PullCallback done) {
  const uint64_t offset = request.range().begin() - config_.range.begin();
  const uint64_t count = RangeSize(request.range());
  // SYNC: computing step s needs the parameters after step s-1.
  const uint64_t min_version =
      config_.consistency == SYNC && request.step() > 0 ? request.step() - 1 : 0;
  PooledBuffer values;
  uint64_t version;
  {
    const absl::Time now = env_.clock();
    absl::MutexLock lock(&mu_);
    RecordPull(count, request.worker_rank(), now);
    if (version_ < min_version) {
      waiters_.push_back(Waiter{min_version, offset, count, std::move(done), now});
      return;
    }
    version = version_;
    values = CopyOut(offset, count);
  }
  if (config_.consistency == SYNC && env_.pull_wait != nullptr) env_.pull_wait->Observe(0);
  done(absl::OkStatus(), version, std::move(values));
}

void Shard::CancelWaiters(const absl::Status& status) {
  std::vector<Waiter> waiters;
  std::vector<std::pair<uint64_t, SnapshotCallback>> snapshots;
  {
    absl::MutexLock lock(&mu_);
    waiters.swap(waiters_);
    snapshots.swap(snapshot_waiters_);
  }
  for (Waiter& w : waiters) w.done(status, 0, PooledBuffer());
  for (auto& [version, done] : snapshots) done(status);
}

PooledBuffer Shard::CopyOut(uint64_t offset, uint64_t count) {
  PooledBuffer buffer = BufferPool::Global()->Acquire(count * sizeof(float));
  std::memcpy(buffer.data(), values_.data() + offset, count * sizeof(float));
  return buffer;
}

void Shard::RecordPull(uint64_t count, uint32_t rank, absl::Time now) {
  ++pulls_;
  bytes_out_ += count * sizeof(float);
  workers_seen_.insert(rank);
  pull_rate_.Add(now);
  bytes_out_rate_.Add(now, static_cast<double>(count * sizeof(float)));
}

void Shard::RecordRejection(const PushRequest& request, const absl::Status& error,
                            absl::Time now) {
  ++rejected_pushes_;
  last_error_ = absl::StrCat(absl::StatusCodeToString(error.code()), ": ", error.message(),
                             " (worker ", request.worker_rank(), ", step ", request.step(), ")");
  last_error_ms_ = absl::ToUnixMillis(now);
}

ShardCheckpoint Shard::MakeCheckpoint() {
  ShardCheckpoint checkpoint;
  checkpoint.job_id = config_.job_id;
  checkpoint.table = config_.table.name();
  checkpoint.range = config_.range;
  checkpoint.version = version_;
  checkpoint.values = values_;
  for (const std::vector<float>* state : optimizer_->state()) {
    checkpoint.optimizer_state.push_back(*state);
  }
  return checkpoint;
}

void Shard::Snapshot(uint64_t version, SnapshotCallback done) {
  absl::StatusOr<ShardCheckpoint> result;
  {
    absl::MutexLock lock(&mu_);
    if (version != 0 && version_ < version) {
      snapshot_waiters_.emplace_back(version, std::move(done));
      return;
    }
    if (version != 0 && version_ > version) {
      result = absl::FailedPreconditionError(absl::StrCat(
          "shard ", config_.table.name(), " is at version ", version_, ", past ", version));
    } else {
      result = MakeCheckpoint();
    }
  }
  done(std::move(result));
}

void Shard::LoadValues(const float* values) {
  absl::MutexLock lock(&mu_);
  values_.assign(values, values + size_);
}

absl::Status Shard::Restore(const ShardCheckpoint& checkpoint) {
  if (checkpoint.job_id != config_.job_id || checkpoint.table != config_.table.name() ||
      checkpoint.range.begin() != config_.range.begin() ||
      checkpoint.range.end() != config_.range.end() || checkpoint.values.size() != size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint of ", checkpoint.job_id, " table ", checkpoint.table, " [",
        checkpoint.range.begin(), ", ", checkpoint.range.end(), ") does not fit shard ",
        config_.job_id, " table ", config_.table.name(), " [", config_.range.begin(), ", ",
        config_.range.end(), ")"));
  }
  absl::MutexLock lock(&mu_);
  std::vector<std::vector<float>*> state = optimizer_->state();
  if (state.size() != checkpoint.optimizer_state.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint has ", checkpoint.optimizer_state.size(), " optimizer state arrays, the ",
        OptimizerKind_Name(config_.optimizer.kind()), " optimizer ", state.size()));
  }
  for (size_t i = 0; i < state.size(); ++i) *state[i] = checkpoint.optimizer_state[i];
  values_ = checkpoint.values;
  version_ = checkpoint.version;
  aggregator_.Reset();
  return absl::OkStatus();
}

void Shard::RecordRejectedPush(const PushRequest& request, const absl::Status& error) {
  const absl::Time now = env_.clock();
  absl::MutexLock lock(&mu_);
  RecordRejection(request, error, now);
}

ShardStatus Shard::Status() {
  const absl::Time now = env_.clock();
  absl::ReaderMutexLock lock(&mu_);
  ShardStatus status;
  status.set_job_id(config_.job_id);
  status.set_table(config_.table.name());
  *status.mutable_range() = config_.range;
  status.set_elements(size_);
  status.set_bytes(values_.size() * sizeof(float) + optimizer_->state_bytes() +
                   aggregator_.bytes());
  status.set_version(version_);
  status.set_consistency(config_.consistency);
  status.set_pushes(pushes_);
  status.set_pulls(pulls_);
  status.set_bytes_in(bytes_in_);
  status.set_bytes_out(bytes_out_);
  status.set_last_update_ms(last_update_ms_);
  for (uint32_t w : workers_seen_) status.add_workers_seen(w);
  status.set_pending_pushes(aggregator_.pending());
  status.set_rejected_pushes(rejected_pushes_);
  status.set_push_rate(push_rate_.PerSecond(now));
  status.set_pull_rate(pull_rate_.PerSecond(now));
  status.set_bytes_in_rate(bytes_in_rate_.PerSecond(now));
  status.set_bytes_out_rate(bytes_out_rate_.PerSecond(now));
  if (config_.consistency == SYNC && aggregator_.pending() > 0) {
    for (uint32_t rank : aggregator_.IncompleteWorkers()) status.add_waiting_for_workers(rank);
    status.set_waiting_ms(std::max<int64_t>(0, absl::ToInt64Milliseconds(now - step_started_)));
  }
  status.set_last_error(last_error_);
  status.set_last_error_ms(last_error_ms_);
  return status;
}

}  // namespace psrv

// A shard: one contiguous key range of a table, its values and optimizer state; pushes,
// pulls, SYNC steps and their application (shard.h). The primary/backup half is in
// shard_replication.cc.
#include "server/shard.h"

#include <atomic>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <utility>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/initializer.h"
#include "common/key_range.h"
#include "common/status_macros.h"
#include "server/gradient_check.h"
#include "server/shard_outbox.h"

namespace psrv {

Shard::Shard(ShardConfig config, ShardEnv env, ShardReplication replication)
    : config_(std::move(config)),
      env_(std::move(env)),
      size_(RangeSize(config_.range)),
      primary_address_(std::move(replication.primary_address)),
      values_(std::make_shared<std::vector<float>>(size_)),
      optimizer_(Optimizer::Create(config_.optimizer, config_.table, size_)),
      aggregator_(size_, config_.num_workers, config_.aggregate_first),
      role_(replication.role),
      backup_(replication.role == PRIMARY ? std::move(replication.backup) : nullptr),
      push_rate_(env_.clock()),
      pull_rate_(env_.clock()),
      bytes_in_rate_(env_.clock()),
      bytes_out_rate_(env_.clock()) {
  InitializeRange(config_.table, config_.range.begin(), size_, values_->data());
  if (config_.consistency == SSP) {
    clocks_.assign(config_.num_workers, 0);
    clock_known_.assign(config_.num_workers, role_ == PRIMARY);  // A fresh job: every rank at 0.
    ssp_from_step_.assign(config_.num_workers, 1);
  }
}

ShardRole Shard::role() {
  absl::ReaderMutexLock lock(&mu_);
  return role_;
}

std::string Shard::backup_address() {
  absl::ReaderMutexLock lock(&mu_);
  return backup_ != nullptr ? backup_->address() : "";
}

absl::Status Shard::RefuseOnBackup(const char* what) {
  // Workers' pulls and pushes: UNAVAILABLE, so that a worker that reached a backup before its
  // promotion (the coordinator publishes the new shard map, then promotes) retries.
  const bool from_worker = std::string(what) == "push" || std::string(what) == "pull";
  return absl::Status(
      from_worker ? absl::StatusCode::kUnavailable : absl::StatusCode::kFailedPrecondition,
      absl::StrCat(what, " refused: job ", config_.job_id, " table \"", config_.table.name(),
                   "\" [", config_.range.begin(), ", ", config_.range.end(),
                   "): this server holds the backup of this shard; its primary is elsewhere (",
                   primary_address_, ")"));
}

void Shard::Push(const PushRequest& request, PooledBuffer gradient, PushCallback done,
                 FiniteCheck finite) {
  // Checked without the lock: a bad push never touches the shard.
  absl::Status invalid =
      finite == FiniteCheck::kChecked
          ? absl::OkStatus()
          : CheckFinite(config_.table.name(), gradient.data(), request.dtype(),
                        RangeSize(request.range()), request.range().begin());
  if (invalid.ok() && request.scale_follows() && config_.consistency != SYNC) {
    invalid = absl::InvalidArgumentError(
        "scale_follows is for SYNC jobs: an ASYNC push is applied when it arrives");
  }
  Outbox out;
  {
    absl::MutexLock lock(&mu_);
    if (invalid.ok()) {
      StartPush(request, std::make_shared<PooledBuffer>(std::move(gradient)), std::move(done),
                &out);
    } else {
      RecordRejection(request, invalid, env_.clock());
      out.pushes.emplace_back(std::move(done), invalid);
    }
  }
  Deliver(&out);
}

void Shard::StartPush(const PushRequest& request, std::shared_ptr<PooledBuffer> gradient,
                      PushCallback done, Outbox* out) {
  if (Busy()) {
    // Applied once the update in flight has reached the backup: updates go there in order.
    deferred_.push_back(Deferred{
        [this, request, gradient, done](Outbox* o) { StartPush(request, gradient, done, o); },
        [done](const absl::Status& status) { done(status); }});
    return;
  }
  const absl::Time now = env_.clock();
  const uint64_t offset = request.range().begin() - config_.range.begin();
  const uint64_t count = RangeSize(request.range());
  absl::Status invalid;
  if (role_ == BACKUP) {
    invalid = RefuseOnBackup("push");
  } else if (!deposed_.ok()) {
    invalid = deposed_;
  } else if (config_.consistency == SYNC) {
    invalid = aggregator_.Check(request.worker_rank(), request.step(), version_, offset, count,
                                request.scale_follows());
  } else if (config_.consistency == SSP && request.worker_rank() >= config_.num_workers) {
    invalid = absl::InvalidArgumentError(absl::StrCat("worker_rank ", request.worker_rank(),
                                                      " is out of range: the job has ",
                                                      config_.num_workers, " workers"));
  }
  if (!invalid.ok()) {
    if (IsLate(request, invalid)) {
      ++late_pushes_;  // Dropped, as its step was; answered as applied (ALREADY_EXISTS).
    } else {
      RecordRejection(request, invalid, now);
    }
    out->pushes.emplace_back(std::move(done), invalid);
    return;
  }
  if (config_.consistency != SYNC) {
    const uint64_t key = RecentPushes::Key(request.push_id(), request.range().begin());
    if (applied_pushes_.Contains(key)) {
      // A resend of a push applied already (its answer was lost, or it reached the primary this
      // shard took over from): answered, not applied again.
      ++duplicate_pushes_;
      out->pushes.emplace_back(std::move(done), version_);
      return;
    }
    applied_pushes_.Add(key);
  }
  ++pushes_;
  bytes_in_ += count * sizeof(float);
  workers_seen_.insert(request.worker_rank());
  push_rate_.Add(now);
  bytes_in_rate_.Add(now, static_cast<double>(count * sizeof(float)));
  if (request.has_base_version()) {
    const uint64_t staleness =
        version_ > request.base_version() ? version_ - request.base_version() : 0;
    if (env_.staleness != nullptr) env_.staleness->Observe(static_cast<double>(staleness));
    if (config_.consistency != SYNC) {
      staleness_sum_ += static_cast<double>(staleness);
      ++staleness_count_;
      staleness_max_ = std::max(staleness_max_, staleness);
    }
  }
  if (config_.consistency == SSP) {  // The rank's clock moves (pulls may be answered after it).
    const uint32_t rank = request.worker_rank();
    clocks_[rank] = clock_known_[rank] ? std::max(clocks_[rank], request.step()) : request.step();
    clock_known_[rank] = true;
  }
  if (config_.consistency != SYNC) {
    if (request.dtype() == BF16) {  // The optimizer and the backup take FP32.
      auto widened =
          std::make_shared<PooledBuffer>(BufferPool::Global()->Acquire(count * sizeof(float)));
      Bf16ToFloats(reinterpret_cast<const uint16_t*>(gradient->data()), count,
                   reinterpret_cast<float*>(widened->data()));
      gradient = std::move(widened);
    }
    ApplyUpdate(reinterpret_cast<const float*>(gradient->data()), 1.0f, offset, count);
    Updated(request.range(), std::move(gradient), std::move(done), now, out, request.push_id());
    return;
  }
  if (aggregator_.pending() == 0) step_started_ = now;
  if (!aggregator_.Add(request.worker_rank(), request.step(), offset, count, gradient->data(),
                       request.dtype(), request.scale_follows(), gradient)) {
    out->pushes.emplace_back(std::move(done), version_);  // The step waits for more pushes.
    return;
  }
  ApplyStep(std::move(done), now, out);
}

absl::Status Shard::Commit(uint32_t rank, uint64_t step, float scale) {
  Outbox out;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (role_ == BACKUP) return RefuseOnBackup("commit");
    if (!deposed_.ok()) return deposed_;
    if (config_.consistency != SYNC) {
      return absl::FailedPreconditionError("CommitStep is for SYNC jobs");
    }
    status = aggregator_.CheckCommit(rank, step, version_, scale);
    if (!status.ok()) return status;
    if (Busy()) {
      // After the update in flight, like a push (its step may be the one this commits).
      deferred_.push_back(Deferred{
          [this, rank, step, scale](Outbox* o) {
            const absl::Status valid = aggregator_.CheckCommit(rank, step, version_, scale);
            if (!valid.ok()) {
              // (Answered OK already: the worker's pulls will wait, time out and send it again.)
              if (!absl::IsAlreadyExists(valid)) LOG(WARNING) << "commit dropped: " << valid;
              return;
            }
            if (aggregator_.Commit(rank, step, scale)) ApplyStep(PushCallback(), env_.clock(), o);
          },
          [](const absl::Status&) {}});
      return absl::OkStatus();
    }
    if (aggregator_.Commit(rank, step, scale)) ApplyStep(PushCallback(), env_.clock(), &out);
  }
  Deliver(&out);
  return status;
}

Shard::UpdateBuffers Shard::BeginUpdate(uint64_t offset, uint64_t count) {
  bf16_valid_ = false;
  float* current = values_->data();
  if (values_.use_count() == 1) {
    // Every reply that held values_ has dropped it: see their reads before writing.
    std::atomic_thread_fence(std::memory_order_acquire);
    return UpdateBuffers{current, current};
  }
  // A pull reply is still sending values_ (only this thread, under mu_, adds references): the
  // update goes to another buffer, and the reply keeps what it started with.
  std::shared_ptr<std::vector<float>> next;
  if (spare_ != nullptr && spare_.use_count() == 1) {
    std::atomic_thread_fence(std::memory_order_acquire);
    next = std::move(spare_);
  } else {
    next = std::make_shared<std::vector<float>>(size_);
  }
  if (offset > 0) std::memcpy(next->data(), current, offset * sizeof(float));
  if (offset + count < size_) {
    std::memcpy(next->data() + offset + count, current + offset + count,
                (size_ - offset - count) * sizeof(float));
  }
  spare_ = std::move(values_);
  values_ = std::move(next);
  return UpdateBuffers{current, values_->data()};
}

void Shard::ApplyUpdate(const Gradient& grad, uint64_t offset, uint64_t count) {
  const UpdateBuffers buffers = BeginUpdate(offset, count);
  const uint64_t t = OptimizerStep(version_ + 1);
  // Workers pulling BF16 get the new values narrowed in the same pass, chunk by chunk while each
  // is in cache (whole-shard updates: SYNC steps).
  uint16_t* narrowed = nullptr;
  if (pulls_bf16_ && count == size_) {
    if (bf16_ == nullptr || bf16_.use_count() > 1) {  // A reply may still send the old copy.
      bf16_ = std::make_shared<std::vector<uint16_t>>(size_);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    narrowed = bf16_->data();
  }
  // A sparse table's chunks hold whole rows (LazyRows decides per row).
  const size_t row = config_.table.sparse_row_width();
  const size_t grain = row > 0 ? (kApplyGrain + row - 1) / row * row : kApplyGrain;
  // Narrowed block by block right after the update, while the block's new values are still in
  // L2 (a chunk's are not: the pass streams five arrays of its size).
  const size_t block = row > 0 ? std::max<size_t>(1, kNarrowBlock / row) * row : kNarrowBlock;
  // A gradient in pieces as pushes brought it (BF16 or FP32) is read a block at a time into a
  // buffer of the thread's that stays in L1/L2.
  const bool contiguous = grad.parts.empty();
  ParallelChunks(count, grain, [&](size_t begin, size_t end) {
    if (narrowed == nullptr && contiguous) {
      optimizer_->ApplyScaled(grad.grad + begin, grad.scale, buffers.in, buffers.out,
                              offset + begin, end - begin, t);
      return;
    }
    thread_local std::vector<float> scratch;
    if (!contiguous && scratch.size() < block) scratch.resize(block);
    for (size_t b = begin; b < end; b += block) {
      const size_t n = std::min(block, end - b);
      optimizer_->ApplyScaled(grad.Values(b, n, scratch.data()), grad.scale, buffers.in,
                              buffers.out, offset + b, n, t);
      if (narrowed != nullptr) FloatsToBf16(buffers.out + offset + b, n, narrowed + offset + b);
    }
  });
  bf16_valid_ = narrowed != nullptr;
}

bool Shard::IsLate(const PushRequest& request, const absl::Status& refusal) const {
  if (!aggregator_.backup_workers() || !absl::IsAlreadyExists(refusal) ||
      request.step() > version_) {
    return false;
  }
  // A rank whose push made the last step resends it (after a fail-over): not late.
  const uint32_t rank = request.worker_rank();
  return !(request.step() == version_ && rank < last_contributors_.size() &&
           last_contributors_[rank]);
}

void Shard::ApplyStep(PushCallback done, absl::Time now, Outbox* out) {
  if (aggregator_.backup_workers()) {
    late_pushes_ += aggregator_.DroppedPushes();
    last_contributors_.assign(config_.num_workers, false);
    for (uint32_t rank : aggregator_.Contributors()) last_contributors_[rank] = true;
  }
  const SyncAggregator::MeanGradient mean = aggregator_.Result();
  std::shared_ptr<PooledBuffer> applied;
  if (backup_ != nullptr) {  // The backup gets the mean; the aggregator starts the next step.
    applied = std::make_shared<PooledBuffer>(BufferPool::Global()->Acquire(size_ * sizeof(float)));
    const float* mean_values = aggregator_.Mean();
    std::memcpy(applied->data(), mean_values, size_ * sizeof(float));
    ApplyUpdate(mean_values, 1.0f, 0, size_);
  } else {
    ApplyUpdate(mean, 0, size_);
  }
  aggregator_.Reset();
  if (env_.step_wait != nullptr) {
    env_.step_wait->Observe(absl::ToDoubleSeconds(now - step_started_));
  }
  Updated(config_.range, std::move(applied), std::move(done), now, out);
}

absl::Status Shard::SetWorkers(const std::vector<uint64_t>& from_step) {
  Outbox out;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckSetWorkersLocked(from_step));
    if (config_.consistency == SSP) {
      // A vacant rank leaves the minimum: pulls it held back may go on.
      ssp_from_step_ = from_step;
      if (!Busy()) ServeWaiters(&out);
    } else {
      ASSIGN_OR_RETURN(const bool complete, aggregator_.SetWorkers(from_step, version_ + 1));
      // A backup applies only what its primary replicates (and aggregates nothing).
      if (complete && role_ == PRIMARY) ApplyStepWithoutPush(&out);
    }
  }
  Deliver(&out);
  return absl::OkStatus();
}

void Shard::ApplyStepWithoutPush(Outbox* out) {
  if (Busy()) {  // Its turn comes after the update or install in flight, as a push's would.
    deferred_.push_back(Deferred{[this](Outbox* o) { ApplyStepWithoutPush(o); },
                                 [](const absl::Status&) {}});
    return;
  }
  // Meanwhile a later SetWorkers may have applied the step, or made it wait for a joining rank.
  if (aggregator_.pending() == 0 || !aggregator_.IncompleteWorkers().empty()) return;
  ApplyStep(PushCallback(), env_.clock(), out);
}

absl::Status Shard::CheckSetWorkers(const std::vector<uint64_t>& from_step) {
  absl::MutexLock lock(&mu_);
  return CheckSetWorkersLocked(from_step);
}

absl::Status Shard::CheckSetWorkersLocked(const std::vector<uint64_t>& from_step) {
  if (config_.consistency == ASYNC) {
    return absl::FailedPreconditionError(
        "only SYNC and SSP jobs have a set of workers their steps wait for");
  }
  if (from_step.size() != config_.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("from_step has ", from_step.size(),
                                                   " entries; the job has ",
                                                   config_.num_workers, " workers"));
  }
  if (config_.consistency == SSP) {  // Pushes are applied as they come: any step will do.
    if (std::all_of(from_step.begin(), from_step.end(),
                    [](uint64_t s) { return s == SyncAggregator::kNever; })) {
      return absl::InvalidArgumentError("no worker would be left in the job");
    }
    return absl::OkStatus();
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

void Shard::RestoreAppliedPushes(const std::vector<uint64_t>& keys) {
  absl::MutexLock lock(&mu_);
  for (uint64_t key : keys) applied_pushes_.Add(key);
}

absl::Status Shard::RestoreWorkers(const std::vector<uint64_t>& from_step) {
  absl::MutexLock lock(&mu_);
  if (config_.consistency == SSP) {
    RETURN_IF_ERROR(CheckSetWorkersLocked(from_step));
    ssp_from_step_ = from_step;
    return absl::OkStatus();
  }
  if (config_.consistency != SYNC) {
    return absl::InvalidArgumentError("only SYNC jobs have a set of workers a step waits for");
  }
  return aggregator_.SetWorkers(from_step, version_ + 1).status();
}

void Shard::Updated(const KeyRange& range, std::shared_ptr<PooledBuffer> gradient,
                    PushCallback done, absl::Time now, Outbox* out, uint64_t push_id) {
  ++version_;
  last_update_ms_ = absl::ToUnixMillis(now);
  if (backup_ == nullptr) {
    Acknowledge(std::move(done), out);
    return;
  }
  in_flight_ = std::make_unique<InFlight>();
  in_flight_->request.set_job_id(config_.job_id);
  in_flight_->request.set_table(config_.table.name());
  *in_flight_->request.mutable_range() = range;
  in_flight_->request.set_version(version_);
  in_flight_->request.set_push_id(push_id);
  in_flight_->gradient = std::move(gradient);
  in_flight_->done = std::move(done);
  in_flight_->backup = backup_;
  in_flight_->attempts = 1;
  out->replicate_to = backup_;
  out->replicate = in_flight_->request;
  out->gradient = in_flight_->gradient;
}

void Shard::Acknowledge(PushCallback done, Outbox* out) {
  if (done) out->pushes.emplace_back(std::move(done), version_);
  // Checkpoints waiting for this version are taken now, before any later update.
  for (auto it = snapshot_waiters_.begin(); it != snapshot_waiters_.end();) {
    if (it->first == version_) {
      out->snapshots.emplace_back(std::move(it->second), MakeCheckpoint());
      it = snapshot_waiters_.erase(it);
    } else {
      ++it;
    }
  }
  ServeWaiters(out);
}

void Shard::ServeWaiters(Outbox* out) {
  // Hand the values to every pull that was waiting for this version (SSP: for its step to come
  // within the bound).
  const absl::Time now = env_.clock();
  std::vector<Waiter> still_waiting;
  for (Waiter& w : waiters_) {
    if (w.min_version > version_ || (w.ssp_step > 0 && !WithinStaleness(w.ssp_step))) {
      still_waiting.push_back(std::move(w));
      continue;
    }
    out->pulls.push_back(
        {std::move(w.done), absl::OkStatus(), version_, PullReply(w.offset, w.count, w.dtype)});
    if (config_.consistency != ASYNC) {
      out->pull_waits.push_back(absl::ToDoubleSeconds(now - w.since));
    }
    if (w.ssp_step > 0) ssp_blocked_seconds_ += absl::ToDoubleSeconds(now - w.since);
  }
  waiters_ = std::move(still_waiting);
}

bool Shard::WithinStaleness(uint64_t step) const {
  if (step <= 1) return true;
  uint64_t slowest = SyncAggregator::kNever;
  for (size_t rank = 0; rank < clocks_.size(); ++rank) {
    const uint64_t from = ssp_from_step_[rank];
    if (from == SyncAggregator::kNever) continue;
    if (!clock_known_[rank]) return true;
    slowest = std::min(slowest, std::max(clocks_[rank], from > 0 ? from - 1 : 0));
  }
  return slowest == SyncAggregator::kNever || step - 1 <= slowest + config_.staleness;
}

void Shard::RunDeferred(Outbox* out) {
  while (!Busy() && !deferred_.empty()) {
    Deferred next = std::move(deferred_.front());
    deferred_.pop_front();
    next.run(out);
  }
}

void Shard::Deliver(Outbox* out) {
  if (env_.pull_wait != nullptr) {
    for (double seconds : out->pull_waits) env_.pull_wait->Observe(seconds);
  }
  for (auto& [done, checkpoint] : out->snapshots) done(std::move(checkpoint));
  for (auto& reply : out->pulls) reply.done(reply.status, reply.version, std::move(reply.values));
  for (auto& [done, version] : out->pushes) done(std::move(version));
  for (auto& [done, version] : out->backups) done(std::move(version));
  if (out->replicate_to != nullptr) {
    out->replicate_to->Replicate(
        out->replicate, std::move(out->gradient),
        [self = shared_from_this(), version = out->replicate.version()](absl::Status status) {
          self->OnReplicated(version, status);
        });
  }
  if (out->install_on != nullptr) {
    InstallShardRequest header;
    header.set_job_id(config_.job_id);
    header.set_consistency(config_.consistency);
    *header.mutable_optimizer() = config_.optimizer;
    header.set_num_workers(config_.num_workers);
    header.set_staleness(config_.staleness);
    header.set_aggregate_first(config_.aggregate_first);
    *header.mutable_shard()->mutable_table() = config_.table;
    *header.mutable_shard()->mutable_range() = config_.range;
    header.mutable_shard()->set_role(BACKUP);
    header.mutable_shard()->set_primary_address(out->own_address);
    for (uint64_t step : out->install_from_step) header.add_from_step(step);
    for (uint64_t key : out->install_applied_pushes) header.add_applied_pushes(key);
    Replicator::Done installed = [self = shared_from_this(), backup = out->install_on,
                                  version = out->install.version,
                                  done = std::move(out->install_done)](absl::Status status) {
      self->OnInstalled(backup, version, status, done);
    };
    absl::StatusOr<std::string> state = EncodeShardCheckpoint(out->install);
    if (state.ok()) {
      out->install_on->Install(header, std::move(*state), std::move(installed));
    } else {
      installed(state.status());
    }
  }
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
  Outbox out;
  {
    const absl::Time now = env_.clock();
    absl::MutexLock lock(&mu_);
    if (role_ == BACKUP || !deposed_.ok()) {
      out.pulls.push_back(
          {std::move(done), role_ == BACKUP ? RefuseOnBackup("pull") : deposed_, 0, PullPayload()});
    } else {
      RecordPull(count, request.worker_rank(), now);
      // SSP: a worker too far ahead of the slowest waits for it.
      const uint64_t ssp_step = config_.consistency == SSP ? request.step() : 0;
      // An update not yet on the backup is not shown.
      if (version_ < min_version || in_flight_ != nullptr ||
          (ssp_step > 0 && !WithinStaleness(ssp_step))) {
        waiters_.push_back(Waiter{min_version, offset, count, request.dtype(), std::move(done),
                                  now, ssp_step});
        return;
      }
      out.pulls.push_back(
          {std::move(done), absl::OkStatus(), version_, PullReply(offset, count, request.dtype())});
      if (config_.consistency != ASYNC) out.pull_waits.push_back(0);
    }
  }
  Deliver(&out);
}

void Shard::CancelWaiters(const absl::Status& status) {
  std::vector<Waiter> waiters;
  std::vector<std::pair<uint64_t, SnapshotCallback>> snapshots;
  std::deque<Deferred> deferred;
  {
    absl::MutexLock lock(&mu_);
    waiters.swap(waiters_);
    snapshots.swap(snapshot_waiters_);
    deferred.swap(deferred_);
  }
  for (Waiter& w : waiters) w.done(status, 0, PullPayload());
  for (auto& [version, done] : snapshots) done(status);
  for (Deferred& d : deferred) d.cancel(status);
}

PullPayload Shard::PullReply(uint64_t offset, uint64_t count, DType dtype) {
  pulls_bf16_ = dtype == BF16;
  if (dtype == BF16) {
    if (!bf16_valid_) {
      if (bf16_ == nullptr || bf16_.use_count() > 1) {  // A reply may still send the old copy.
        bf16_ = std::make_shared<std::vector<uint16_t>>(size_);
      }
      std::atomic_thread_fence(std::memory_order_acquire);
      FloatsToBf16(values_->data(), size_, bf16_->data());
      bf16_valid_ = true;
    }
    return PullPayload(bf16_, reinterpret_cast<const char*>(bf16_->data() + offset),
                       count * sizeof(uint16_t));
  }
  return PullPayload(values_, reinterpret_cast<const char*>(values_->data() + offset),
                     count * sizeof(float));
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
  checkpoint.values = *values_;
  for (const std::vector<float>* state : optimizer_->state()) {
    checkpoint.optimizer_state.push_back(*state);
  }
  return checkpoint;
}

void Shard::Snapshot(uint64_t version, SnapshotCallback done) {
  absl::StatusOr<ShardCheckpoint> result;
  {
    absl::MutexLock lock(&mu_);
    // While an update is in flight, values_ hold it but it is not acknowledged yet: wait for it.
    if (version == 0 && in_flight_ != nullptr) version = version_;
    if (version != 0 && version_ > version) {
      result = absl::FailedPreconditionError(absl::StrCat(
          "shard ", config_.table.name(), " is at version ", version_, ", past ", version));
    } else if (version != 0 && (version_ < version || in_flight_ != nullptr)) {
      snapshot_waiters_.emplace_back(version, std::move(done));
      return;
    } else {
      result = MakeCheckpoint();
    }
  }
  done(std::move(result));
}

void Shard::LoadValues(const float* values) {
  absl::MutexLock lock(&mu_);
  BeginUpdate(0, size_);
  std::memcpy(values_->data(), values, size_ * sizeof(float));
}

absl::Status Shard::Restore(ShardCheckpoint checkpoint) {
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
  for (size_t i = 0; i < state.size(); ++i) *state[i] = std::move(checkpoint.optimizer_state[i]);
  values_ = std::make_shared<std::vector<float>>(std::move(checkpoint.values));
  bf16_valid_ = false;
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
  status.set_bytes(values_->size() * sizeof(float) + optimizer_->state_bytes() +
                   aggregator_.bytes() + (bf16_ != nullptr ? bf16_->size() * sizeof(uint16_t) : 0));
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
  status.set_duplicate_pushes(duplicate_pushes_);
  status.set_push_rate(push_rate_.PerSecond(now));
  status.set_pull_rate(pull_rate_.PerSecond(now));
  status.set_bytes_in_rate(bytes_in_rate_.PerSecond(now));
  status.set_bytes_out_rate(bytes_out_rate_.PerSecond(now));
  if (config_.consistency == SSP) {
    for (size_t rank = 0; rank < clocks_.size(); ++rank) {
      status.add_worker_clocks(clock_known_[rank] ? clocks_[rank] : 0);
    }
    status.set_staleness(config_.staleness);
    uint32_t blocked = 0;
    for (const Waiter& w : waiters_) blocked += w.ssp_step > 0 && !WithinStaleness(w.ssp_step);
    status.set_blocked_pulls(blocked);
    status.set_blocked_seconds(ssp_blocked_seconds_);
  }
  if (config_.aggregate_first > 0) {
    status.set_aggregate_first(config_.aggregate_first);
    status.set_late_pushes(late_pushes_);
  }
  if (staleness_count_ > 0) {
    status.set_mean_push_staleness(staleness_sum_ / static_cast<double>(staleness_count_));
    status.set_max_push_staleness(staleness_max_);
  }
  if (config_.consistency == SYNC && aggregator_.pending() > 0) {
    for (uint32_t rank : aggregator_.IncompleteWorkers()) status.add_waiting_for_workers(rank);
    status.set_waiting_ms(std::max<int64_t>(0, absl::ToInt64Milliseconds(now - step_started_)));
  }
  status.set_last_error(last_error_);
  status.set_last_error_ms(last_error_ms_);
  status.set_role(role_);
  if (backup_ != nullptr) status.set_backup_address(backup_->address());
  status.set_backup_lost(backup_lost_);
  status.set_backup_error(backup_error_);
  status.set_backup_error_ms(backup_error_ms_);
  status.set_primary_address(primary_address_);
  return status;
}

}  // namespace psrv

#include "worker/step_pipeline.h"

#include <algorithm>
#include <cmath>

#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/status_macros.h"

namespace psrv {

StepPipeline::StepPipeline(ResilientClient* client, const Options& options)
    : client_(client),
      options_(options),
      n_(client->num_parameters()),
      // Compressed pushes carry the clipped gradient: error feedback must not mix steps' scales.
      defer_scale_(options.consistency == SYNC && options.grad_clip > 0 &&
                   !client->compressing()) {
  for (int b = 0; b < 2; ++b) {
    params_[b].resize(n_);
    grads_[b].resize(n_);
  }
  const size_t targets = client_->targets().size();
  ready_keys_.resize(targets);
  pushed_.resize(targets);
  squares_.resize(targets);
  pulled_.resize(targets);
}

StepPipeline::~StepPipeline() {
  DrainPushes();
  client_->Shutdown();
}

void StepPipeline::Start(uint64_t first) {
  ResilientClient::Corked together(client_);
  for (size_t t = 0; t < client_->targets().size(); ++t) {
    client_->StartPull(t, first, params_[0].data());
  }
}

void StepPipeline::BeginStep(uint64_t step) {
  step_ = step;
  buffer_ = 1 - buffer_;
  // grads_[buffer_] held the pushes of the step before the previous one: gRPC must be done
  // sending them.
  if (buffer_step_[buffer_] != 0) client_->AwaitReleased(buffer_step_[buffer_]);
  buffer_step_[buffer_] = step;
  std::fill(ready_keys_.begin(), ready_keys_.end(), 0);
  std::fill(pushed_.begin(), pushed_.end(), 0);
  std::fill(squares_.begin(), squares_.end(), -1.0);
  std::fill(pulled_.begin(), pulled_.end(), 0);
}

void StepPipeline::AwaitParameters(const FlatRange& range) {
  const std::vector<ShardTarget>& targets = client_->targets();
  for (size_t t = client_->TargetAt(range.offset);
       status_.ok() && t < targets.size() && targets[t].flat_offset < range.offset + range.count;
       ++t) {
    if (pulled_[t]) continue;
    const absl::Time start = absl::Now();
    status_ = client_->AwaitPull(t);
    waited_ += absl::Now() - start;
    pulled_[t] = status_.ok();
  }
}

absl::StatusOr<uint64_t> StepPipeline::CatchUp() {
  RETURN_IF_ERROR(AwaitAllParameters());
  uint64_t applied = UINT64_MAX;  // Steps every shard applied.
  for (size_t t = 0; t < client_->targets().size(); ++t) {
    applied = std::min(applied, client_->pulled_version(t));
  }
  if (applied == UINT64_MAX || applied < step_) return step_;
  // The previous step's pushes (refused as late, or applied) must be done: its push slot and
  // buffers may be the new step's.
  const uint64_t previous = buffer_step_[1 - buffer_];
  if (previous != 0) {
    RETURN_IF_ERROR(client_->AwaitPushed(previous));
    client_->AwaitReleased(previous);
  }
  step_ = applied + 1;
  buffer_step_[buffer_] = step_;
  return step_;
}

absl::Status StepPipeline::AwaitAllParameters() {
  AwaitParameters(FlatRange{0, n_});
  return status_;
}

void StepPipeline::GradientsReady(const FlatRange& range) {
  const std::vector<ShardTarget>& targets = client_->targets();
  for (size_t t = client_->TargetAt(range.offset);
       status_.ok() && t < targets.size() && targets[t].flat_offset < range.offset + range.count;
       ++t) {
    const size_t begin = std::max<size_t>(range.offset, targets[t].flat_offset);
    const size_t end =
        std::min<size_t>(range.offset + range.count, targets[t].flat_offset + targets[t].count());
    ready_keys_[t] += end - begin;
    if (ready_keys_[t] != targets[t].count() || !options_.overlap || targets[t].pull_only) continue;
    // Final: out it goes, unless its scale must be known first (ASYNC with clipping).
    if (defer_scale_ || options_.grad_clip <= 0) {
      pushed_[t] = 1;
      next_pusher_ = (next_pusher_ + 1) % kPushers;
      pushers_[next_pusher_].Run([this, t] {
        const bool narrowed = NarrowTarget(t);
        sender_.Run([this, t, narrowed] { SendTarget(t, defer_scale_, narrowed); });
      });
    }
  }
}

double StepPipeline::SumOfSquares(size_t t) const {
  const ShardTarget& target = client_->targets()[t];
  return psrv::SumOfSquares(grads_[buffer_].data() + target.flat_offset, target.count());
}

void StepPipeline::DrainPushes() {
  for (WorkQueue& pusher : pushers_) pusher.Drain();  // Every push handed over was narrowed,
  sender_.Drain();                                    // and has started.
}

void StepPipeline::PushTarget(size_t t, bool scale_follows) {
  SendTarget(t, scale_follows, NarrowTarget(t));
}

bool StepPipeline::NarrowTarget(size_t t) {
  const float* grads = grads_[buffer_].data();
  // Compressed pushes are narrowed by the client, after the selection.
  uint16_t* wire = client_->compressing() ? nullptr : client_->Bf16Payloads(step_);
  if (wire != nullptr) {
    // One pass: the norm's part and the bf16 payload.
    const ShardTarget& target = client_->targets()[t];
    const double squares = FloatsToBf16SumOfSquares(grads + target.flat_offset, target.count(),
                                                    wire + target.flat_offset);
    if (squares_[t] < 0) squares_[t] = squares;
  } else if (squares_[t] < 0) {
    squares_[t] = SumOfSquares(t);
  }
  return wire != nullptr;
}

void StepPipeline::SendTarget(size_t t, bool scale_follows, bool narrowed) {
  pushed_[t] = 1;
  client_->StartPush(t, step_, grads_[buffer_].data(), scale_follows, narrowed);
  if (options_.consistency == SYNC && options_.overlap) {
    // Answered by the server once it applied this step on the shard.
    client_->StartPull(t, step_ + 1, params_[1 - buffer_].data());
  }
}

absl::Status StepPipeline::FinishStep() {
  DrainPushes();  // squares_ is complete for the pushes handed over.
  RETURN_IF_ERROR(status_);
  const size_t targets = client_->targets().size();
  const std::vector<ShardTarget>& plan = client_->targets();
  auto push_the_rest = [&] {
    for (size_t t = 0; t < targets; ++t) {
      if (!pushed_[t] && !plan[t].pull_only) PushTarget(t, defer_scale_);
    }
  };
  {
    // The pushes still to go (all of them, without overlap), the commit and (SYNC) the next
    // pulls leave together: each connection's small ones as one batch call.
    ResilientClient::Corked together(client_);
    // Pushes the norm does not change (the clipping factor follows them, or there is none) go
    // first: each is narrowed and its squares summed in one pass, no pass of the norm's own.
    const bool clip_before_push = !defer_scale_ && options_.grad_clip > 0;
    if (!clip_before_push) push_the_rest();
    // The global norm: every target's sum of squares, added in target order (the same whether
    // targets were pushed during backward, before the norm or after it).
    double sum = 0;
    for (size_t t = 0; t < targets; ++t) {
      if (plan[t].pull_only) continue;  // Another stage pushes (and norms) it.
      if (squares_[t] < 0) squares_[t] = SumOfSquares(t);
      sum += squares_[t];
    }
    if (options_.combine_squares) {
      ASSIGN_OR_RETURN(sum, options_.combine_squares(sum));
    }
    grad_norm_ = std::sqrt(sum);
    const float scale = GradientClipScale(grad_norm_, options_.grad_clip);
    if (clip_before_push) {
      // ASYNC, or compressed pushes: clipped here, before anything is pushed.
      if (scale != 1.0f) {
        float* g = grads_[buffer_].data();
        for (size_t i = 0; i < n_; ++i) g[i] *= scale;
      }
      push_the_rest();
    }
    if (defer_scale_) client_->StartCommit(step_, scale);
    if (options_.consistency == SYNC) StartPulls();
  }
  if (options_.consistency != SYNC) {
    // ASYNC: the next pulls once every push was applied. (A SYNC server holds a pull until its
    // step is applied: those went out with the pushes.)
    RETURN_IF_ERROR(client_->AwaitPushed(step_));
    ResilientClient::Corked together(client_);
    StartPulls();
  }
  return absl::OkStatus();
}

void StepPipeline::StartPulls() {
  for (size_t t = 0; t < client_->targets().size(); ++t) {
    client_->StartPull(t, step_ + 1, params_[1 - buffer_].data());
  }
}

absl::Status StepPipeline::FinishRun() {
  step_ += 1;
  buffer_ = 1 - buffer_;
  std::fill(pulled_.begin(), pulled_.end(), 0);
  return AwaitAllParameters();
}

}  // namespace psrv

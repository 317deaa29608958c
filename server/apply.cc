#include "server/apply.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "common/vector_clones.h"

namespace psrv {
namespace {

absl::Status CheckUnit(const char* name, float value) {
  if (!std::isfinite(value) || value < 0.0f || value >= 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be in [0, 1), got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

void ParallelChunks(size_t n, size_t grain, absl::FunctionRef<void(size_t, size_t)> fn) {
  if (grain < 1) grain = 1;
  // Never destroyed: threads outlive main. Its loops come once per step or shard update: idle
  // threads sleep at once instead of spinning (that CPU is the workers' on a shared machine).
  static ThreadPool* const pool = new ThreadPool(0, /*spin_yields=*/0);
  static absl::Mutex* const busy = new absl::Mutex();
  if (n > grain && pool->threads() > 1 && busy->TryLock()) {
    pool->ParallelFor(static_cast<int64_t>(n), static_cast<int64_t>(grain),
                      [&](int64_t begin, int64_t end) { fn(begin, end); });
    busy->Unlock();
    return;
  }
  for (size_t begin = 0; begin < n; begin += grain) fn(begin, std::min(n, begin + grain));
}

float ScheduledLearningRate(const OptimizerConfig& config, uint64_t t) {
  const double lr = config.learning_rate();
  const uint64_t warmup = config.warmup_steps();
  if (t < 1) t = 1;
  if (warmup > 0 && t <= warmup) return static_cast<float>(lr * t / warmup);
  const uint64_t decay = config.decay_steps();
  if (decay <= warmup) return static_cast<float>(lr);
  const double floor = config.min_learning_rate();
  if (t >= decay) return static_cast<float>(floor);
  const double progress = static_cast<double>(t - warmup) / static_cast<double>(decay - warmup);
  return static_cast<float>(floor + 0.5 * (1.0 + std::cos(M_PI * progress)) * (lr - floor));
}

absl::Status Optimizer::Validate(const OptimizerConfig& config) {
  if (config.kind() != SGD && config.kind() != MOMENTUM && config.kind() != ADAMW) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown optimizer kind ", OptimizerKind_Name(config.kind()),
                     " (supported: SGD, MOMENTUM, ADAMW)"));
  }
  const float lr = config.learning_rate();
  if (!std::isfinite(lr) || lr <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning_rate must be a finite number > 0, got ", lr));
  }
  const float floor = config.min_learning_rate();
  if (!std::isfinite(floor) || floor < 0.0f || floor > lr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_learning_rate must be in [0, learning_rate = ", lr, "], got ", floor));
  }
  if (config.kind() == MOMENTUM) {
    if (absl::Status s = CheckUnit("momentum", config.momentum()); !s.ok()) return s;
  }
  if (config.kind() == ADAMW) {
    if (absl::Status s = CheckUnit("beta1", config.beta1()); !s.ok()) return s;
    if (absl::Status s = CheckUnit("beta2", config.beta2()); !s.ok()) return s;
    if (!std::isfinite(config.epsilon()) || config.epsilon() <= 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("epsilon must be a finite number > 0, got ", config.epsilon()));
    }
    if (!std::isfinite(config.weight_decay()) || config.weight_decay() < 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight_decay must be a finite number >= 0, got ", config.weight_decay()));
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<Optimizer> Optimizer::Create(const OptimizerConfig& config,
                                             const TableSpec& table, size_t size) {
  std::unique_ptr<Optimizer> optimizer;
  switch (config.kind()) {
    case MOMENTUM:
      optimizer = std::make_unique<MomentumSgd>(config, size);
      break;
    case ADAMW:
      optimizer = std::make_unique<AdamW>(config, table.weight_decay(), size);
      break;
    default:
      optimizer = std::make_unique<Sgd>(config);
  }
  if (table.sparse_row_width() > 0) {
    return std::make_unique<LazyRows>(std::move(optimizer), table.sparse_row_width());
  }
  return optimizer;
}

void LazyRows::ApplyScaled(const float* grad, float grad_scale, const float* params_in,
                           float* params_out, size_t offset, size_t count, uint64_t t) {
  if (offset % width_ != 0 || count % width_ != 0) {
    inner_->ApplyScaled(grad, grad_scale, params_in, params_out, offset, count, t);
    return;
  }
  auto zero_row = [&](size_t r) {
    const float* g = grad + r * width_;
    for (size_t c = 0; c < width_; ++c) {
      if (g[c] != 0.0f) return false;
    }
    return true;
  };
  // Runs of rows with a gradient go to `inner` in one call each; skipped rows keep their
  // weights (copied when the update is out of place) and their state.
  const size_t rows = count / width_;
  for (size_t r = 0; r < rows;) {
    size_t end = r;
    while (end < rows && !zero_row(end)) ++end;
    if (end > r) {
      inner_->ApplyScaled(grad + r * width_, grad_scale, params_in, params_out,
                          offset + r * width_, (end - r) * width_, t);
      r = end;
      continue;
    }
    if (params_in != params_out) {
      std::copy(params_in + offset + r * width_, params_in + offset + (r + 1) * width_,
                params_out + offset + r * width_);
    }
    ++r;
  }
}

// The loops below are written once per case, in place (one pointer) and out of place (two
// pointers declared not to alias), so that both vectorize: GCC would guard a loop whose input and
// output may alias with an overlap test that sends the in-place case down a scalar path. They are
// free functions so that they can be built for AVX2 too (PSRV_VECTOR_CLONES; virtual functions
// cannot be).
namespace {

// `in` and `out` (count values) are the same, or do not overlap; likewise for every loop below.
PSRV_VECTOR_CLONES void SgdLoop(const float* grad, float grad_scale, float lr, const float* in,
                                float* out, size_t count) {
  const float* __restrict g = grad;
  if (in == out) {
    float* __restrict w = out;
    for (size_t i = 0; i < count; ++i) w[i] -= lr * (g[i] * grad_scale);
  } else {
    const float* __restrict a = in;
    float* __restrict b = out;
    for (size_t i = 0; i < count; ++i) b[i] = a[i] - lr * (g[i] * grad_scale);
  }
}

PSRV_VECTOR_CLONES void MomentumLoop(const float* grad, float grad_scale, float lr,
                                     float momentum, float* velocity, const float* in, float* out,
                                     size_t count) {
  const float* __restrict g = grad;
  float* __restrict v = velocity;
  if (in == out) {
    float* __restrict w = out;
    for (size_t i = 0; i < count; ++i) {
      v[i] = momentum * v[i] + g[i] * grad_scale;
      w[i] -= lr * v[i];
    }
  } else {
    const float* __restrict a = in;
    float* __restrict b = out;
    for (size_t i = 0; i < count; ++i) {
      v[i] = momentum * v[i] + g[i] * grad_scale;
      b[i] = a[i] - lr * v[i];
    }
  }
}

struct AdamWStep {
  float lr, b1, b2, eps, wd, c1, c2;
};

PSRV_VECTOR_CLONES void AdamWLoop(const float* grad, float grad_scale, const AdamWStep& s,
                                  float* m_state, float* v_state, const float* in, float* out,
                                  size_t count) {
  const float* __restrict gr = grad;
  float* __restrict m = m_state;
  float* __restrict v = v_state;
  const float lr = s.lr, b1 = s.b1, b2 = s.b2, eps = s.eps, wd = s.wd, c1 = s.c1, c2 = s.c2;
  // w' = w - lr * (m^ / (sqrt(v^) + eps) + wd * w), with the moments updated first.
  auto step = [&](float g, float w, size_t i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = b2 * v[i] + (1.0f - b2) * g * g;
    return w - lr * ((m[i] * c1) / (std::sqrt(v[i] * c2) + eps) + wd * w);
  };
  if (in == out) {
    float* __restrict w = out;
    for (size_t i = 0; i < count; ++i) w[i] = step(gr[i] * grad_scale, w[i], i);
  } else {
    const float* __restrict a = in;
    float* __restrict b = out;
    for (size_t i = 0; i < count; ++i) b[i] = step(gr[i] * grad_scale, a[i], i);
  }
}

}  // namespace

void Sgd::ApplyScaled(const float* grad, float grad_scale, const float* params_in,
                      float* params_out, size_t offset, size_t count, uint64_t t) {
  SgdLoop(grad, grad_scale, ScheduledLearningRate(config_, t), params_in + offset,
          params_out + offset, count);
}

void MomentumSgd::ApplyScaled(const float* grad, float grad_scale, const float* params_in,
                              float* params_out, size_t offset, size_t count, uint64_t t) {
  MomentumLoop(grad, grad_scale, ScheduledLearningRate(config_, t), config_.momentum(),
               velocity_.data() + offset, params_in + offset, params_out + offset, count);
}

void AdamW::ApplyScaled(const float* grad, float grad_scale, const float* params_in,
                        float* params_out, size_t offset, size_t count, uint64_t t) {
  const float b1 = config_.beta1(), b2 = config_.beta2();
  const AdamWStep step{
      ScheduledLearningRate(config_, t),
      b1,
      b2,
      config_.epsilon(),
      decay_ ? config_.weight_decay() : 0.0f,
      1.0f / (1.0f - static_cast<float>(std::pow(b1, static_cast<double>(t)))),
      1.0f / (1.0f - static_cast<float>(std::pow(b2, static_cast<double>(t)))),
  };
  AdamWLoop(grad, grad_scale, step, m_.data() + offset, v_.data() + offset, params_in + offset,
            params_out + offset, count);
}

}  // namespace psrv

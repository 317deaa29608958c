// Apply: the optimizer step that turns a shard's aggregated gradient into new parameters. Each
// optimizer owns its state (momentum, Adam moments) for exactly the shard's key range, so optimizer
// state is sharded with the parameters.
#ifndef PSRV_SERVER_APPLY_H_
#define PSRV_SERVER_APPLY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "proto/types.pb.h"

namespace psrv {

// Calls fn(begin, end) on chunks of [0, n) (a few hundred thousand keys each), on the threads of a
// process-wide pool (one per core) when it is free, else all on the calling thread: the optimizer's
// pass over a big shard, or a step's shards. One caller uses the pool at a time; another that
// finds it busy runs its own chunks (the cores are busy anyway). Returns when all have run.
void ParallelChunks(size_t n, size_t grain, absl::FunctionRef<void(size_t, size_t)> fn);
inline constexpr size_t kApplyGrain = 1 << 18;  // Keys per chunk of an optimizer pass.
// Keys per block of a chunk that is updated, then narrowed to BF16 for pulls, before the next.
inline constexpr size_t kNarrowBlock = 1 << 14;

// The learning rate at optimizer step t (1-based): linear warm-up, then cosine decay to the floor
// (see OptimizerConfig in proto/types.proto).
float ScheduledLearningRate(const OptimizerConfig& config, uint64_t t);

// Not thread-safe: the owning Shard serialises calls.
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // INVALID_ARGUMENT for an unknown kind or an out-of-range hyperparameter.
  static absl::Status Validate(const OptimizerConfig& config);

  // An optimizer for a shard of `size` elements of `table`. `config` must pass Validate. A sparse
  // table's (TableSpec.sparse_row_width) is wrapped in LazyRows.
  static std::unique_ptr<Optimizer> Create(const OptimizerConfig& config, const TableSpec& table,
                                           size_t size);

  // Updates keys [offset, offset + count) of the shard as optimizer step `t` (1-based; sets the
  // learning rate and Adam's bias correction) with the gradient grad[i] * grad_scale (grad:
  // (count)): reads params_in, writes params_out (whole-shard buffers; the same one for an update
  // in place, or two distinct ones). Keys outside the range are not touched. Calls on disjoint
  // ranges may run concurrently (each key's state is its own).
  virtual void ApplyScaled(const float* grad, float grad_scale, const float* params_in,
                           float* params_out, size_t offset, size_t count, uint64_t t) = 0;

  // In place, gradient as it is.
  void Apply(const float* grad, float* params, size_t offset, size_t count, uint64_t t) {
    ApplyScaled(grad, 1.0f, params, params, offset, count, t);
  }

  // Bytes of optimizer state held.
  virtual size_t state_bytes() const = 0;

  // The state arrays (each of the shard's size), for checkpoints: none for SGD, the velocity for
  // MOMENTUM, the first and second moments for ADAMW.
  virtual std::vector<std::vector<float>*> state() { return {}; }
};

// Lazy updates of a sparse table (an untied GPT's input embedding): a row of `width` keys whose
// gradient is all zero (no example of the step had its token) is left as it is, weights and
// optimizer state, as PyTorch's SparseAdam does; the other rows get `inner`'s update. Rows are
// counted from the shard's first key (shards of sparse tables start at row boundaries). A call
// whose range does not start and end at row boundaries updates every key (`inner` as it is).
class LazyRows : public Optimizer {
 public:
  LazyRows(std::unique_ptr<Optimizer> inner, size_t width)
      : inner_(std::move(inner)), width_(width) {}
  void ApplyScaled(const float* grad, float grad_scale, const float* params_in, float* params_out,
                   size_t offset, size_t count, uint64_t t) override;
  size_t state_bytes() const override { return inner_->state_bytes(); }
  std::vector<std::vector<float>*> state() override { return inner_->state(); }
  size_t width() const { return width_; }

 private:
  const std::unique_ptr<Optimizer> inner_;
  const size_t width_;
};

// w -= lr(t) * g
class Sgd : public Optimizer {
 public:
  explicit Sgd(const OptimizerConfig& config) : config_(config) {}
  void ApplyScaled(const float* grad, float grad_scale, const float* params_in, float* params_out,
                   size_t offset, size_t count, uint64_t t) override;
  size_t state_bytes() const override { return 0; }

 private:
  const OptimizerConfig config_;
};

// v = momentum * v + g; w -= lr(t) * v
class MomentumSgd : public Optimizer {
 public:
  MomentumSgd(const OptimizerConfig& config, size_t size) : config_(config), velocity_(size, 0.0f) {}
  void ApplyScaled(const float* grad, float grad_scale, const float* params_in, float* params_out,
                   size_t offset, size_t count, uint64_t t) override;
  size_t state_bytes() const override { return velocity_.size() * sizeof(float); }
  std::vector<std::vector<float>*> state() override { return {&velocity_}; }

 private:
  const OptimizerConfig config_;
  std::vector<float> velocity_;  // (size)
};

// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// w -= lr(t) * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * w)   (wd only if decayed table)
class AdamW : public Optimizer {
 public:
  AdamW(const OptimizerConfig& config, bool decay, size_t size)
      : config_(config), decay_(decay), m_(size, 0.0f), v_(size, 0.0f) {}
  void ApplyScaled(const float* grad, float grad_scale, const float* params_in, float* params_out,
                   size_t offset, size_t count, uint64_t t) override;
  size_t state_bytes() const override { return (m_.size() + v_.size()) * sizeof(float); }
  std::vector<std::vector<float>*> state() override { return {&m_, &v_}; }

 private:
  const OptimizerConfig config_;
  const bool decay_;
  std::vector<float> m_;  // (size) first moment.
  std::vector<float> v_;  // (size) second moment.
};

}  // namespace psrv

#endif  // PSRV_SERVER_APPLY_H_

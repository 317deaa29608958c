// Apply: the optimizer step that turns a shard's aggregated gradient into new parameters. Each
// optimizer owns its state (e.g. momentum) for exactly the shard's key range, so optimizer state is
// sharded with the parameters.
#ifndef PSRV_SERVER_APPLY_H_
#define PSRV_SERVER_APPLY_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/types.pb.h"

namespace psrv {

// Not thread-safe: the owning Shard serialises calls.
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // INVALID_ARGUMENT for an unknown kind, a non-finite or non-positive learning rate, or a
  // momentum outside [0, 1).
  static absl::Status Validate(const OptimizerConfig& config);

  // An optimizer for a shard of `size` elements. `config` must pass Validate.
  static std::unique_ptr<Optimizer> Create(const OptimizerConfig& config, size_t size);

  // params (size) -= step computed from grad (size).
  virtual void Apply(const float* grad, float* params) = 0;

  // Bytes of optimizer state held.
  virtual size_t state_bytes() const = 0;
};

// w -= lr * g
class Sgd : public Optimizer {
 public:
  Sgd(float learning_rate, size_t size) : lr_(learning_rate), size_(size) {}
  void Apply(const float* grad, float* params) override;
  size_t state_bytes() const override { return 0; }

 private:
  const float lr_;
  const size_t size_;
};

// v = momentum * v + g; w -= lr * v
class MomentumSgd : public Optimizer {
 public:
  MomentumSgd(float learning_rate, float momentum, size_t size)
      : lr_(learning_rate), momentum_(momentum), velocity_(size, 0.0f) {}
  void Apply(const float* grad, float* params) override;
  size_t state_bytes() const override { return velocity_.size() * sizeof(float); }

 private:
  const float lr_;
  const float momentum_;
  std::vector<float> velocity_;  // (size)
};

}  // namespace psrv

#endif  // PSRV_SERVER_APPLY_H_

#include "server/apply.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace psrv {

absl::Status Optimizer::Validate(const OptimizerConfig& config) {
  if (config.kind() != SGD && config.kind() != MOMENTUM) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown optimizer kind ", OptimizerKind_Name(config.kind()),
                     " (supported: SGD, MOMENTUM)"));
  }
  const float lr = config.learning_rate();
  if (!std::isfinite(lr) || lr <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning_rate must be a finite number > 0, got ", lr));
  }
  if (config.kind() == MOMENTUM &&
      (!std::isfinite(config.momentum()) || config.momentum() < 0.0f || config.momentum() >= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("momentum must be in [0, 1), got ", config.momentum()));
  }
  return absl::OkStatus();
}

std::unique_ptr<Optimizer> Optimizer::Create(const OptimizerConfig& config, size_t size) {
  if (config.kind() == MOMENTUM) {
    return std::make_unique<MomentumSgd>(config.learning_rate(), config.momentum(), size);
  }
  return std::make_unique<Sgd>(config.learning_rate(), size);
}

void Sgd::Apply(const float* grad, float* params) {
  for (size_t i = 0; i < size_; ++i) params[i] -= lr_ * grad[i];
}

void MomentumSgd::Apply(const float* grad, float* params) {
  float* v = velocity_.data();
  for (size_t i = 0; i < velocity_.size(); ++i) {
    v[i] = momentum_ * v[i] + grad[i];
    params[i] -= lr_ * v[i];
  }
}

}  // namespace psrv

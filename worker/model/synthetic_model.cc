#include "worker/model/synthetic_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/model_layout.h"
#include "worker/model/gpt_views.h"
#include "worker/model/model_factory.h"

namespace psrv {

absl::StatusOr<std::unique_ptr<SyntheticModel>> SyntheticModel::Create(const ModelSpec& spec,
                                                                       int vocab_size,
                                                                       absl::Duration compute) {
  if (compute < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic compute time must be >= 0, got ", absl::FormatDuration(compute)));
  }
  // The real model validates the sizes and knows the window.
  absl::StatusOr<std::unique_ptr<LanguageModel>> real = CreateLanguageModel(spec, vocab_size);
  if (!real.ok()) return real.status();
  std::unique_ptr<SyntheticModel> model(new SyntheticModel());
  model->window_ = (*real)->window();
  model->predictions_per_row_ = (*real)->predictions_per_row();
  model->vocab_ = (*real)->vocab_size();
  model->max_context_ = (*real)->max_context();
  model->compute_ = compute;
  const size_t n = (*real)->num_parameters();
  if (spec.kind() == "gpt") {
    model->groups_ = GptParameterGroups(spec.layers(), spec.width(), spec.context(), vocab_size);
  } else {
    model->groups_ = {{FlatRange{0, n}}};
  }
  for (const ParameterGroup& group : model->groups_) {
    size_t size = 0;
    for (const FlatRange& range : group) size += range.count;
    model->shares_.push_back(n > 0 ? static_cast<double>(size) / n : 0.0);
  }
  model->pattern_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t h = static_cast<uint32_t>(i * 2654435761u) >> 11;  // Knuth's hash of the key.
    model->pattern_[i] = 1e-3f * (static_cast<float>(h % 2001) - 1000.0f) / 1000.0f;
  }
  return model;
}

float SyntheticModel::ForwardBackward(const float* params, const int32_t*, int, uint64_t,
                                      float* grads) {
  const absl::Time start = absl::Now();
  const absl::Duration forward = compute_ / 3;
  const absl::Duration backward = compute_ - forward;
  double done = 0;  // Fraction of the phase's time used up.
  for (const ParameterGroup& group : groups_) {
    AwaitParameters(group);
    done += shares_[&group - groups_.data()];
    absl::SleepFor(start + forward * done - absl::Now());
  }
  const float loss = LossOf(params);
  const absl::Time backward_start = std::max(absl::Now(), start + forward);
  done = 0;
  // A GPU's gradients reach host memory by DMA, costing the CPU nothing: each gradient buffer is
  // filled once, the first time it is seen (the trainer keeps two and leaves them as they are).
  const bool fill = std::find(filled_.begin(), filled_.end(), grads) == filled_.end();
  if (fill) filled_.push_back(grads);
  for (size_t g = groups_.size(); g-- > 0;) {
    for (const FlatRange& range : groups_[g]) {
      if (fill) {
        std::memcpy(grads + range.offset, pattern_.data() + range.offset,
                    range.count * sizeof(float));
      }
    }
    done += shares_[g];
    absl::SleepFor(backward_start + backward * done - absl::Now());
    GradientsReady(groups_[g]);
  }
  return loss;
}

float SyntheticModel::LossOf(const float* params) const {
  // 1024 keys spread over the buffer.
  const size_t n = pattern_.size();
  if (n == 0) return 3.0f;
  double sum = 0;
  const size_t samples = std::min<size_t>(n, 1024);
  for (size_t k = 0; k < samples; ++k) sum += params[k * n / samples];
  return static_cast<float>(3.0 + sum / samples);
}

float SyntheticModel::Loss(const float* params, const int32_t*, int) { return LossOf(params); }

void SyntheticModel::NextTokenLogits(const float*, const int32_t*, int, float* logits) {
  std::fill(logits, logits + vocab_, 0.0f);
}

}  // namespace psrv

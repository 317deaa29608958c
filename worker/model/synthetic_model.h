// A stand-in for a model's forward and backward that takes a fixed time and leaves the CPU free,
// as a GPU would, and writes fixed gradients: `ps_worker --compute=synthetic:MS` measures the
// parameter-server path (pull, push, aggregate, apply, and their overlap with compute) at GPU-like
// step times on any machine (bench/step_bench.cc). It trains nothing.
#ifndef PSRV_WORKER_MODEL_SYNTHETIC_MODEL_H_
#define PSRV_WORKER_MODEL_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/job.pb.h"
#include "worker/model/language_model.h"

namespace psrv {

// The parameter layout, window and vocabulary of `spec`'s model (gpt or mlp, as
// common/model_layout.h has it), with this ForwardBackward: forward takes a third of
// `compute`, backward the rest, each group of parameters (a GPT layer; the whole buffer for an MLP)
// a share proportional to its size; forward awaits each group before its share (parameter
// stream), backward writes each group's gradients and reports them after its share, last group
// first, as a real backward does. Time is spent sleeping. The gradient is the same every step:
// (deterministic) small values in [-1e-3, 1e-3] from the key alone, written into a gradient buffer
// only the first time it is seen (a GPU's gradients reach the host by DMA, at no CPU cost; the
// trainer's SYNC pipeline leaves them unchanged, ASYNC clipping scales them in place). Losses are 3 plus the mean of
// a fixed sample of the parameters, so they follow the updates. Thread-compatible.
class SyntheticModel : public LanguageModel {
 public:
  // INVALID_ARGUMENT for a negative time, or what CreateLanguageModel would refuse.
  static absl::StatusOr<std::unique_ptr<SyntheticModel>> Create(const ModelSpec& spec,
                                                                int vocab_size,
                                                                absl::Duration compute);

  int window() const override { return window_; }
  int predictions_per_row() const override { return predictions_per_row_; }
  int vocab_size() const override { return vocab_; }
  int max_context() const override { return max_context_; }
  size_t num_parameters() const override { return pattern_.size(); }
  bool streams_parameters() const override { return true; }

  float ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                        float* grads) override;
  float Loss(const float* params, const int32_t* rows, int batch) override;
  void NextTokenLogits(const float* params, const int32_t* tokens, int length,
                       float* logits) override;

 private:
  SyntheticModel() = default;
  float LossOf(const float* params) const;

  int window_ = 0;
  int predictions_per_row_ = 0;
  int vocab_ = 0;
  int max_context_ = 0;
  absl::Duration compute_;
  std::vector<ParameterGroup> groups_;  // Forward order; they cover the whole buffer.
  std::vector<double> shares_;          // (groups_) fraction of the parameters in each group.
  std::vector<float> pattern_;          // (num_parameters) the gradient of every step.
  std::vector<float*> filled_;          // Gradient buffers already holding pattern_.
};

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_SYNTHETIC_MODEL_H_

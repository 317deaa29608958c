// Pipeline parallelism, part 2b: what a stage computes with. A stage's part of the GPT (GptPart:
// a block of layers, the embeddings and/or the head) on one device, with activations kept for up to
// `slots` micro-batches between their forward and their backward. One step is
//   BeginStep(params, grads)  Forward(slot, ...) ... Backward(slot, ...) ...  EndStep(M)
// and leaves in `grads` the mean over the M backwards of d(loss)/d(the part's parameters), summed
// g0 + g1 + ... in backward order and then scaled by 1/M, as LanguageModel::AccumulateGradients
// sums. Implementations: the CPU GptModel (CreateCpuStageModel, below) and the CUDA model
// (worker/cuda/gpt_cuda_stage.h; worker/cuda/device_model.h chooses). Thread-compatible.
#ifndef PSRV_WORKER_PIPELINE_STAGE_MODEL_H_
#define PSRV_WORKER_PIPELINE_STAGE_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/gpt_config.h"
#include "worker/model/gpt_views.h"

namespace psrv {

class StageModel {
 public:
  virtual ~StageModel() = default;

  virtual const GptConfig& config() const = 0;
  virtual const GptPart& part() const = 0;
  // Of the part: the length of its parameter and gradient buffers (GptPartLayout).
  virtual size_t num_parameters() const = 0;
  // Bytes of activations one micro-batch of `batch` rows holds from its forward to its backward.
  virtual size_t ActivationBytes(int batch) const = 0;
  // "cpu", or e.g. "cuda:0 (NVIDIA H100 80GB HBM3)": for the worker's log.
  virtual std::string device() const = 0;

  // The parameters (host, num_parameters, the part's layout) the next Forwards and Backwards
  // read; the buffer must stay unchanged until EndStep (or the next BeginStep). `grads` (host,
  // num_parameters): where EndStep leaves the step's mean gradient; null for forwards only
  // (evaluation).
  virtual absl::Status BeginStep(const float* params, float* grads) = 0;
  // Forward of one micro-batch of `batch` rows into activation `slot`: `rows` (batch, T+1) token
  // ids (the part with the embeddings reads their inputs, the one with the head their targets);
  // `input` (batch, T, C) the previous stage's output (ignored with the embeddings); dropout from
  // `seed`, as the whole model draws it for the same layers. Writes `output` (batch, T, C) unless
  // the part has the head; returns the micro-batch's mean loss with the head, else 0; NaN for a
  // token id out of range. `training` false: no dropout, and no Backward of this slot.
  virtual absl::StatusOr<float> Forward(int slot, const int32_t* rows, const float* input,
                                        int batch, uint64_t seed, float* output,
                                        bool training) = 0;
  // Backward of the micro-batch Forward put in `slot`: `doutput` (batch, T, C) d(loss)/d(output)
  // from the next stage (ignored with the head, which starts from its loss). Adds d(loss)/d(the
  // part's parameters) to the step's sum (the first Backward of a step starts it) and, unless the
  // part has the embeddings, writes d(loss)/d(input) into `dinput` (batch, T, C). Frees the slot.
  virtual absl::Status Backward(int slot, const float* doutput, float* dinput) = 0;
  // grads (BeginStep's) = the step's sum * (1 / micro_batches). FAILED_PRECONDITION without a
  // Backward since BeginStep, or without grads.
  virtual absl::Status EndStep(int micro_batches) = 0;
};

// `part` of `config` on the CPU (GptModel::CreateStage). INVALID_ARGUMENT for a bad config, part
// or slot count.
absl::StatusOr<std::unique_ptr<StageModel>> CreateCpuStageModel(const GptConfig& config,
                                                                const GptPart& part, int slots);

}  // namespace psrv

#endif  // PSRV_WORKER_PIPELINE_STAGE_MODEL_H_

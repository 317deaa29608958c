// A pipeline stage's part of the GPT on one CUDA GPU, as a StageModel
// (worker/pipeline/stage_model.h): the step's fp32 parameters go up once (BeginStep), every
// micro-batch's activations in and out and their gradients cross as fp32 host tensors, and the
// micro-batches' parameter gradients are summed on the GPU and come down once (EndStep), in the
// host's order of operations (GptCuda::AccumulateGrads).
#ifndef PSRV_WORKER_CUDA_GPT_CUDA_STAGE_H_
#define PSRV_WORKER_CUDA_GPT_CUDA_STAGE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/cuda/gpt_cuda.h"
#include "worker/pipeline/stage_model.h"

namespace psrv {
namespace cuda {

// `part` of `config` on GPU `config.device` with `slots` activation slots; `description` is
// what device() answers (e.g. "cuda:0 (NVIDIA H100 80GB HBM3)").
absl::StatusOr<std::unique_ptr<StageModel>> CreateCudaStageModel(const GptCudaConfig& config,
                                                                 const GptPart& part, int slots,
                                                                 std::string description);

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_GPT_CUDA_STAGE_H_

// Choosing where the worker's model runs: --device=auto|cuda|cpu. Builds with and without CUDA
// (--define=cuda=off) share this header; only the implementation differs.
//
//   cpu  -> the CPU model (CreateLanguageModel).
//   cuda -> the CUDA model on GPU 0; FAILED_PRECONDITION when there is no usable GPU (or the
//           binary was built without CUDA), UNIMPLEMENTED for a kind with no CUDA model (mlp).
//   auto -> the CUDA model when a GPU is usable and the kind has one, else the CPU model.
#ifndef PSRV_WORKER_CUDA_DEVICE_MODEL_H_
#define PSRV_WORKER_CUDA_DEVICE_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/job.pb.h"
#include "worker/model/gpt_config.h"
#include "worker/model/gpt_views.h"
#include "worker/model/language_model.h"
#include "worker/pipeline/stage_model.h"

namespace psrv {

enum class Device { kAuto, kCuda, kCpu };

// "auto", "cuda" or "cpu" (the --device flag); INVALID_ARGUMENT otherwise.
absl::StatusOr<Device> ParseDevice(absl::string_view name);
// The flag spelling of `device`.
const char* DeviceFlagName(Device device);

// Whether this binary was built with the CUDA backend (not --define=cuda=off).
bool BuiltWithCuda();

// Number of usable CUDA GPUs; 0 when there is none, the driver is missing or too old, or the binary
// was built without CUDA, with the reason in `why_none` (if given).
int UsableCudaDevices(std::string* why_none = nullptr);

// Where CreateLanguageModelOnDevice put the model, and why, for the worker's log.
struct DeviceChoice {
  Device device = Device::kCpu;  // kCuda or kCpu
  // e.g. "cuda:0 (NVIDIA H100 80GB HBM3)", or "cpu (auto: no CUDA GPU found (cudaGetDeviceCount:
  // cudaErrorInsufficientDriver (...)))".
  std::string description;
};

// How the CUDA model computes (ignored on the CPU).
struct CudaModelOptions {
  // Attention through the flash kernels (head size <= 64) instead of cuBLAS products around a
  // materialised (T, T) softmax: ps_worker --cuda_attention=flash (tensor cores,
  // worker/cuda/flash_attention_tc.cu) or flash_fp32 (fp32 CUDA cores, flash_attention.cu).
  bool flash_attention = false;
  bool flash_fp32 = false;
  // The MLP's GELU output recomputed in the backward instead of kept (GptCudaConfig::
  // recompute_gelu): ps_worker --cuda_recompute_gelu.
  bool recompute_gelu = true;
  // The MLP's fc product and GELU as one cuBLASLt product (GptCudaConfig::gelu_epilogue):
  // ps_worker --cuda_gelu_epilogue.
  bool gelu_epilogue = false;
  // The whole step as one CUDA graph (GptCudaConfig::cuda_graph): ps_worker --cuda_graph. Only
  // whole steps use it (overlap off, or gradient accumulation), not the overlapped step of one
  // micro-batch, which waits for the host per layer.
  bool cuda_graph = false;
};

// Description of the attention path for the worker's log: "", ", flash attention" or
// ", flash attention (fp32)".
const char* CudaAttentionSuffix(const CudaModelOptions& options);
// CudaAttentionSuffix, then ", GELU output kept" without recompute_gelu, ", GELU in the
// epilogue" with gelu_epilogue and ", CUDA graph" with cuda_graph: how the worker's log line
// describes the CUDA model.
std::string CudaModelSuffix(const CudaModelOptions& options);

// "materialized", "flash" or "flash_fp32" (the --cuda_attention flag) into `options`;
// INVALID_ARGUMENT otherwise.
absl::Status ParseCudaAttention(absl::string_view name, CudaModelOptions* options);

// The model of spec.kind() over `vocab_size` tokens on `device` (see the top of this file).
// INVALID_ARGUMENT for an unknown kind or sizes out of range, as CreateLanguageModel, and for
// flash attention with a head size over 64 on the GPU.
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModelOnDevice(
    const ModelSpec& spec, int vocab_size, Device device, DeviceChoice* choice = nullptr,
    const CudaModelOptions& cuda_options = {});

// A pipeline stage's part of the GPT `config` (worker/pipeline/stage_model.h) with `slots`
// activation slots, on `device` as above (the GPT has a CUDA model: auto takes a usable GPU).
// StageModel::device() says where it went and why.
absl::StatusOr<std::unique_ptr<StageModel>> CreateStageModelOnDevice(
    const GptConfig& config, const GptPart& part, int slots, Device device,
    const CudaModelOptions& cuda_options = {});

// OK for a CPU model; for a CUDA model, its first CUDA/cuBLAS error (LanguageModel's calls return
// no Status: a failed call returns a NaN loss). Check it when a loss is NaN.
absl::Status DeviceModelStatus(const LanguageModel& model);

}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_DEVICE_MODEL_H_

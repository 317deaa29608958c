// Device selection in a build with the CUDA backend (see device_model.h).
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/cuda/device.h"
#include "worker/cuda/device_model.h"
#include "worker/cuda/gpt_cuda_model.h"
#include "common/model_layout.h"
#include "worker/cuda/gpt_cuda_stage.h"
#include "worker/model/model_factory.h"

namespace psrv {
namespace {

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateOnCpu(const ModelSpec& spec, int vocab_size,
                                                           const std::string& description,
                                                           DeviceChoice* choice) {
  absl::StatusOr<std::unique_ptr<LanguageModel>> model = CreateLanguageModel(spec, vocab_size);
  if (model.ok() && choice != nullptr) {
    choice->device = Device::kCpu;
    choice->description = description;
  }
  return model;
}

// The CUDA model of `config` on device 0, computing as `options` say.
cuda::GptCudaConfig CudaConfigOf(const GptConfig& config, const CudaModelOptions& options) {
  cuda::GptCudaConfig cuda_config;
  static_cast<GptConfig&>(cuda_config) = config;
  cuda_config.device = 0;
  cuda_config.flash_attention = options.flash_attention;
  cuda_config.flash_fp32 = options.flash_fp32;
  cuda_config.recompute_gelu = options.recompute_gelu;
  cuda_config.gelu_epilogue = options.gelu_epilogue;
  cuda_config.cuda_graph = options.cuda_graph;
  return cuda_config;
}

}  // namespace

bool BuiltWithCuda() { return true; }

int UsableCudaDevices(std::string* why_none) {
  std::string why;
  absl::StatusOr<int> count = cuda::CudaDeviceCount(&why);
  if (!count.ok()) {
    why = std::string(count.status().message());
  }
  int n = count.ok() ? *count : 0;
  if (n > 0) {  // Device 0 is the one used: too old a GPU counts as none, with the reason.
    const absl::Status supported = cuda::CheckDeviceSupported(0);
    if (!supported.ok()) {
      why = std::string(supported.message());
      n = 0;
    }
  }
  if (n == 0 && why_none != nullptr) *why_none = why;
  return n;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModelOnDevice(const ModelSpec& spec,
                                                                           int vocab_size,
                                                                           Device device,
                                                                           DeviceChoice* choice,
                                                                           const CudaModelOptions& cuda_options) {
  if (device == Device::kCpu) return CreateOnCpu(spec, vocab_size, "cpu", choice);
  // The CUDA GPT has tied embeddings only.
  const bool has_cuda_model = spec.kind() == "gpt" && TiesEmbeddings(spec);
  if (device == Device::kCuda && !has_cuda_model) {
    // An unknown kind keeps CreateLanguageModel's INVALID_ARGUMENT.
    absl::StatusOr<std::unique_ptr<LanguageModel>> cpu = CreateLanguageModel(spec, vocab_size);
    if (!cpu.ok()) return cpu.status();
    return absl::UnimplementedError(
        absl::StrCat("model kind \"", spec.kind(), "\"",
                     spec.kind() == "gpt" ? " with untied embeddings" : "",
                     " has no CUDA implementation (only gpt with tied embeddings); use "
                     "--device=cpu or auto"));
  }
  std::string why_none;
  const int gpus = UsableCudaDevices(&why_none);
  if (gpus == 0) {
    if (device == Device::kCuda) {
      return absl::FailedPreconditionError(
          absl::StrCat("no CUDA GPU found (", why_none, "); use --device=cpu or auto"));
    }
    return CreateOnCpu(spec, vocab_size,
                       absl::StrCat("cpu (auto: no CUDA GPU found: ", why_none, ")"), choice);
  }
  if (!has_cuda_model) {  // auto
    return CreateOnCpu(
        spec, vocab_size,
        absl::StrCat("cpu (auto: model kind \"", spec.kind(), "\"",
                     spec.kind() == "gpt" ? " with untied embeddings" : "", " has no CUDA model)"),
        choice);
  }
  absl::StatusOr<std::unique_ptr<cuda::GptCudaModel>> model = cuda::GptCudaModel::Create(
      CudaConfigOf(GptConfigFromSpec(spec, vocab_size), cuda_options));
  if (!model.ok()) return model.status();
  if (choice != nullptr) {
    absl::StatusOr<std::string> name = cuda::DeviceName(0);
    choice->device = Device::kCuda;
    choice->description = absl::StrCat("cuda:0 (", name.ok() ? *name : "unknown device", ")",
                                       CudaModelSuffix(cuda_options));
  }
  return std::unique_ptr<LanguageModel>(std::move(*model));
}

absl::StatusOr<std::unique_ptr<StageModel>> CreateStageModelOnDevice(
    const GptConfig& config, const GptPart& part, int slots, Device device,
    const CudaModelOptions& cuda_options) {
  if (device == Device::kCpu) return CreateCpuStageModel(config, part, slots);
  std::string why_none;
  if (UsableCudaDevices(&why_none) == 0) {
    if (device == Device::kCuda) {
      return absl::FailedPreconditionError(
          absl::StrCat("no CUDA GPU found (", why_none, "); use --device=cpu or auto"));
    }
    return CreateCpuStageModel(config, part, slots);
  }
  absl::StatusOr<std::string> name = cuda::DeviceName(0);
  return cuda::CreateCudaStageModel(
      CudaConfigOf(config, cuda_options), part, slots,
      absl::StrCat("cuda:0 (", name.ok() ? *name : "unknown device", ")",
                   CudaModelSuffix(cuda_options)));
}

absl::Status DeviceModelStatus(const LanguageModel& model) {
  const auto* cuda_model = dynamic_cast<const cuda::GptCudaModel*>(&model);
  return cuda_model != nullptr ? cuda_model->status() : absl::OkStatus();
}

}  // namespace psrv

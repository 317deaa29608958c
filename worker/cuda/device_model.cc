// The --device and --cuda_attention flags' values (shared by the CUDA and CPU-only builds of device_model).
#include "worker/cuda/device_model.h"

#include "absl/strings/str_cat.h"

namespace psrv {

absl::StatusOr<Device> ParseDevice(absl::string_view name) {
  if (name == "auto") return Device::kAuto;
  if (name == "cuda") return Device::kCuda;
  if (name == "cpu") return Device::kCpu;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device \"", name, "\" (known: auto, cuda, cpu)"));
}

absl::Status ParseCudaAttention(absl::string_view name, CudaModelOptions* options) {
  if (name == "materialized" || name == "flash" || name == "flash_fp32") {
    options->flash_attention = name != "materialized";
    options->flash_fp32 = name == "flash_fp32";
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown attention \"", name, "\" (known: materialized, flash, flash_fp32)"));
}

const char* CudaAttentionSuffix(const CudaModelOptions& options) {
  if (!options.flash_attention) return "";
  return options.flash_fp32 ? ", flash attention (fp32)" : ", flash attention";
}

std::string CudaModelSuffix(const CudaModelOptions& options) {
  return absl::StrCat(CudaAttentionSuffix(options),
                      options.recompute_gelu ? "" : ", GELU output kept",
                      options.gelu_epilogue ? ", GELU in the epilogue" : "",
                      options.cuda_graph ? ", CUDA graph" : "");
}

const char* DeviceFlagName(Device device) {
  switch (device) {
    case Device::kAuto:
      return "auto";
    case Device::kCuda:
      return "cuda";
    case Device::kCpu:
      return "cpu";
  }
  return "?";
}

}  // namespace psrv

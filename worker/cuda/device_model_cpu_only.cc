// Device selection in a build without CUDA (--define=cuda=off): everything runs on the CPU.
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/cuda/device_model.h"
#include "worker/model/model_factory.h"

namespace psrv {
namespace {

constexpr char kNoCuda[] = "built without CUDA (--define=cuda=off)";

}  // namespace

bool BuiltWithCuda() { return false; }

int UsableCudaDevices(std::string* why_none) {
  if (why_none != nullptr) *why_none = kNoCuda;
  return 0;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModelOnDevice(const ModelSpec& spec,
                                                                           int vocab_size,
                                                                           Device device,
                                                                           DeviceChoice* choice,
                                                                           const CudaModelOptions&) {
  if (device == Device::kCuda) {
    return absl::FailedPreconditionError(absl::StrCat(kNoCuda, "; use --device=cpu or auto"));
  }
  absl::StatusOr<std::unique_ptr<LanguageModel>> model = CreateLanguageModel(spec, vocab_size);
  if (model.ok() && choice != nullptr) {
    choice->device = Device::kCpu;
    choice->description =
        device == Device::kCpu ? "cpu" : absl::StrCat("cpu (auto: ", kNoCuda, ")");
  }
  return model;
}

absl::StatusOr<std::unique_ptr<StageModel>> CreateStageModelOnDevice(const GptConfig& config,
                                                                      const GptPart& part,
                                                                      int slots, Device device,
                                                                      const CudaModelOptions&) {
  if (device == Device::kCuda) {
    return absl::FailedPreconditionError(absl::StrCat(kNoCuda, "; use --device=cpu or auto"));
  }
  return CreateCpuStageModel(config, part, slots);
}

absl::Status DeviceModelStatus(const LanguageModel&) { return absl::OkStatus(); }

}  // namespace psrv

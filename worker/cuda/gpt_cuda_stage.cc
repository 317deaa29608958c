#include "worker/cuda/gpt_cuda_stage.h"

#include <utility>

#include "common/status_macros.h"

namespace psrv {
namespace cuda {
namespace {

class GptCudaStage : public StageModel {
 public:
  GptCudaStage(std::unique_ptr<GptCuda> gpt, std::string description)
      : gpt_(std::move(gpt)), description_(std::move(description)) {}

  const GptConfig& config() const override { return gpt_->config(); }
  const GptPart& part() const override { return gpt_->part(); }
  size_t num_parameters() const override { return gpt_->num_parameters(); }
  size_t ActivationBytes(int batch) const override { return gpt_->SlotBytes(batch); }
  std::string device() const override { return description_; }

  absl::Status BeginStep(const float* params, float* grads) override {
    grads_ = grads;
    backwards_ = 0;
    return gpt_->UploadParams(params);
  }

  absl::StatusOr<float> Forward(int slot, const int32_t* rows, const float* input, int batch,
                                uint64_t seed, float* output, bool training) override {
    return gpt_->StageForward(slot, rows, input, batch, seed, output, training);
  }

  absl::Status Backward(int slot, const float* doutput, float* dinput) override {
    if (grads_ == nullptr) return absl::FailedPreconditionError("Backward without gradients");
    RETURN_IF_ERROR(gpt_->StageBackward(slot, doutput, dinput));
    RETURN_IF_ERROR(gpt_->AccumulateGrads(/*first=*/backwards_ == 0));
    ++backwards_;
    return absl::OkStatus();
  }

  absl::Status EndStep(int micro_batches) override {
    if (grads_ == nullptr || backwards_ == 0) {
      return absl::FailedPreconditionError("EndStep without a Backward");
    }
    // The CPU stage scales only for several micro-batches; * 1.0f changes nothing.
    return gpt_->DownloadGradSum(
        grads_, micro_batches > 1 ? 1.0f / static_cast<float>(micro_batches) : 1.0f);
  }

 private:
  std::unique_ptr<GptCuda> gpt_;
  const std::string description_;
  float* grads_ = nullptr;
  int backwards_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StageModel>> CreateCudaStageModel(const GptCudaConfig& config,
                                                                 const GptPart& part, int slots,
                                                                 std::string description) {
  ASSIGN_OR_RETURN(std::unique_ptr<GptCuda> gpt, GptCuda::CreateStage(config, part, slots));
  return std::unique_ptr<StageModel>(new GptCudaStage(std::move(gpt), std::move(description)));
}

}  // namespace cuda
}  // namespace psrv

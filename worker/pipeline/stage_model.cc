#include "worker/pipeline/stage_model.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/gpt_model.h"

namespace psrv {
namespace {

// GptModel's StageForward/StageBackward with the step's sum on the host: the first backward
// writes straight into the caller's grads, the others into scratch_ and are added.
class CpuStageModel : public StageModel {
 public:
  explicit CpuStageModel(std::unique_ptr<GptModel> model)
      : model_(std::move(model)), scratch_(model_->num_parameters()) {}

  const GptConfig& config() const override { return model_->config(); }
  const GptPart& part() const override { return model_->part(); }
  size_t num_parameters() const override { return model_->num_parameters(); }
  size_t ActivationBytes(int batch) const override { return model_->ActivationBytes(batch); }
  std::string device() const override { return "cpu"; }

  absl::Status BeginStep(const float* params, float* grads) override {
    params_ = params;
    grads_ = grads;
    backwards_ = 0;
    return absl::OkStatus();
  }

  absl::StatusOr<float> Forward(int slot, const int32_t* rows, const float* input, int batch,
                                uint64_t seed, float* output, bool training) override {
    RETURN_IF_ERROR(Check(slot));
    return model_->StageForward(params_, slot, rows, input, batch, seed, output, training);
  }

  absl::Status Backward(int slot, const float* doutput, float* dinput) override {
    RETURN_IF_ERROR(Check(slot));
    if (grads_ == nullptr) return absl::FailedPreconditionError("Backward without gradients");
    float* out = backwards_ == 0 ? grads_ : scratch_.data();
    model_->StageBackward(params_, slot, doutput, out, dinput);
    if (backwards_ > 0) {
      const size_t n = scratch_.size();
      for (size_t i = 0; i < n; ++i) grads_[i] += out[i];
    }
    ++backwards_;
    return absl::OkStatus();
  }

  absl::Status EndStep(int micro_batches) override {
    if (grads_ == nullptr || backwards_ == 0) {
      return absl::FailedPreconditionError("EndStep without a Backward");
    }
    if (micro_batches > 1) {
      const float scale = 1.0f / static_cast<float>(micro_batches);
      const size_t n = scratch_.size();
      for (size_t i = 0; i < n; ++i) grads_[i] *= scale;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Check(int slot) const {
    if (params_ == nullptr) return absl::FailedPreconditionError("no BeginStep");
    if (slot < 0 || slot >= model_->slots()) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", slot, " of a stage with ", model_->slots()));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<GptModel> model_;
  std::vector<float> scratch_;
  const float* params_ = nullptr;
  float* grads_ = nullptr;
  int backwards_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StageModel>> CreateCpuStageModel(const GptConfig& config,
                                                                const GptPart& part, int slots) {
  ASSIGN_OR_RETURN(std::unique_ptr<GptModel> model, GptModel::CreateStage(config, part, slots));
  return std::unique_ptr<StageModel>(new CpuStageModel(std::move(model)));
}

}  // namespace psrv

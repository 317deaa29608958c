// Pipeline stages on the CUDA backend (gpt_cuda_stage.h, GptCuda::StageForward/StageBackward):
// for one step of M micro-batches, the gradients of P = 2 and P = 3 CUDA pipelines (GPipe and
// 1F1B, stages as threads linked by mailboxes) against the whole CUDA model's gradient
// accumulation over the same micro-batches and seeds (dropout on: every layer must draw the mask
// it draws in the whole model). Tolerance: the loss and every table but wte bit for bit (the
// same kernels on the same values, the residual stream and its gradient crossing as fp32); wte's
// gradient is the sum of the embedding's part (first stage) and the head's (last stage), added
// in a different order than in the whole model: ||pipeline - whole|| <= 1e-5 ||whole||.
// Also the stage API's errors, memory per stage, and a bad token. Tagged "gpu" (skips without a
// GPU); gpt_cuda_stage_simt_test runs it on the SIMT simulator.
#include "worker/cuda/gpt_cuda_stage.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/gpt_cuda.h"
#include "worker/cuda/gpu_test_util.h"
#include "worker/pipeline/in_process_pipeline.h"
#include "worker/pipeline/schedule.h"
#include "worker/pipeline/stage_plan.h"

namespace psrv {
namespace cuda {
namespace {

constexpr int kMicro = 3;
constexpr int kBatch = 2;

GptCudaConfig Tiny() {
  GptCudaConfig c;
  c.layers = 3, c.heads = 2, c.width = 8, c.context = 5, c.vocab = 11, c.dropout = 0.1f;
  c.threads = 1;
  return c;
}

class GptCudaStageTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.2f);
    for (const GptParamTable& table : GptCudaTables(config_)) {
      for (size_t i = 0; i < table.size; ++i) {
        whole_params_.push_back((table.init == GptParamTable::kOnes ? 1.0f : 0.0f) +
                                normal(rng));
      }
    }
    rows_.resize(static_cast<size_t>(kMicro) * kBatch * (config_.context + 1));
    for (int32_t& token : rows_) token = static_cast<int32_t>(rng() % config_.vocab);
  }

  // The whole model's mean gradient over the micro-batches, summed on the GPU as a single
  // worker's gradient accumulation sums it; and the mean loss, as PipelineStage takes it.
  std::vector<float> WholeGradient(float* loss) {
    absl::StatusOr<std::unique_ptr<GptCuda>> whole = GptCuda::Create(config_);
    EXPECT_TRUE(whole.ok()) << whole.status();
    EXPECT_TRUE((*whole)->UploadParams(whole_params_.data()).ok());
    double total = 0;
    const size_t per_micro = static_cast<size_t>(kBatch) * (config_.context + 1);
    for (int m = 0; m < kMicro; ++m) {
      absl::StatusOr<float> micro =
          (*whole)->ForwardBackward(rows_.data() + m * per_micro, kBatch, seeds_[m]);
      EXPECT_TRUE(micro.ok()) << micro.status();
      total += *micro;
      EXPECT_TRUE((*whole)->AccumulateGrads(/*first=*/m == 0).ok());
    }
    std::vector<float> grads(whole_params_.size());
    EXPECT_TRUE((*whole)->DownloadGradSum(grads.data(), 1.0f / kMicro).ok());
    *loss = static_cast<float>(total / kMicro);
    return grads;
  }

  StageModelFactory CudaStages() {
    return [this](const GptPart& part, int slots) {
      return CreateCudaStageModel(config_, part, slots, "cuda:0");
    };
  }

  GptCudaConfig config_ = Tiny();
  std::vector<float> whole_params_;
  std::vector<int32_t> rows_;
  const std::vector<uint64_t> seeds_ = {11, 12, 13};
};

TEST_F(GptCudaStageTest, PipelinesOfTwoAndThreeStagesGiveTheWholeModelsGradient) {
  float whole_loss = 0;
  const std::vector<float> whole = WholeGradient(&whole_loss);
  const GptTableOffsets at = GptLayout<size_t>(0, config_.layers, config_.width, config_.context,
                                               config_.vocab);
  const size_t wte = static_cast<size_t>(config_.vocab) * config_.width;
  for (int P : {2, 3}) {
    for (PipelineSchedule schedule : {PipelineSchedule::kGpipe, PipelineSchedule::kOneFOneB}) {
      SCOPED_TRACE(::testing::Message() << "P = " << P << ", schedule " << static_cast<int>(schedule));
      absl::StatusOr<std::vector<StagePlan>> plans = PlanStages(config_, P);
      ASSERT_TRUE(plans.ok()) << plans.status();
      std::vector<std::vector<float>> params;
      std::vector<const float*> pointers;
      for (const StagePlan& plan : *plans) {
        params.push_back(PartOfWhole(config_, plan.part, whole_params_.data()));
      }
      for (const std::vector<float>& p : params) pointers.push_back(p.data());
      absl::StatusOr<std::unique_ptr<InProcessPipeline>> pipeline = InProcessPipeline::Create(
          config_, *plans, schedule, kMicro, kBatch, CudaStages());
      ASSERT_TRUE(pipeline.ok()) << pipeline.status();
      absl::StatusOr<PipelineStepResult> result =
          (*pipeline)->Step(pointers, rows_.data(), seeds_.data());
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->loss, whole_loss);
      std::vector<float> combined(whole.size(), 0.0f);
      for (int s = 0; s < P; ++s) {
        AddPartToWhole(config_, (*plans)[s].part, result->grads[s].data(), combined.data());
      }
      // Every table after wte bit for bit.
      EXPECT_EQ(std::memcmp(combined.data() + at.wpe, whole.data() + at.wpe,
                            (whole.size() - at.wpe) * sizeof(float)),
                0);
      double diff = 0, norm = 0;
      for (size_t i = 0; i < wte; ++i) {
        diff += (combined[i] - whole[i]) * (combined[i] - whole[i]);
        norm += whole[i] * whole[i];
      }
      EXPECT_GT(norm, 0);
      EXPECT_LE(std::sqrt(diff), 1e-5 * std::sqrt(norm));
    }
  }
}

TEST_F(GptCudaStageTest, AStageHoldsOnlyItsPartAndRefusesWholeModelCallsAndBadSlots) {
  absl::StatusOr<std::vector<StagePlan>> plans = PlanStages(config_, 3);
  ASSERT_TRUE(plans.ok());
  const GptPart middle = (*plans)[1].part;
  ASSERT_FALSE(middle.embeddings || middle.head);
  absl::StatusOr<std::unique_ptr<GptCuda>> whole = GptCuda::Create(config_);
  absl::StatusOr<std::unique_ptr<GptCuda>> part = GptCuda::CreateStage(config_, middle, 2);
  ASSERT_TRUE(whole.ok() && part.ok());
  EXPECT_EQ((*part)->num_parameters(),
            GptPartSize(middle, config_.width, config_.context, config_.vocab));
  EXPECT_LT((*part)->num_parameters(), (*whole)->num_parameters());
  // A middle stage keeps no head activations (logits): less per micro-batch than the whole.
  EXPECT_LT((*part)->SlotBytes(kBatch), (*whole)->SlotBytes(kBatch));
  EXPECT_EQ((*part)->ForwardBackward(rows_.data(), kBatch, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<float> params = PartOfWhole(config_, middle, whole_params_.data());
  ASSERT_TRUE((*part)->UploadParams(params.data()).ok());
  const size_t btc = static_cast<size_t>(kBatch) * config_.context * config_.width;
  std::vector<float> input(btc, 0.5f), output(btc), dinput(btc);
  EXPECT_EQ((*part)->StageForward(2, rows_.data(), input.data(), kBatch, 1, output.data(), true)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*part)->StageBackward(0, output.data(), dinput.data()).code(),
            absl::StatusCode::kFailedPrecondition)
      << "no forward in slot 0 yet";
  ASSERT_TRUE(
      (*part)->StageForward(0, rows_.data(), input.data(), kBatch, 1, output.data(), true).ok());
  // A larger batch while slot 0 holds a micro-batch would drop its activations.
  std::vector<float> big_input(2 * btc, 0.5f), big_output(2 * btc);
  std::vector<int32_t> big_rows(rows_.begin(), rows_.begin() + 2 * kBatch * (config_.context + 1));
  EXPECT_EQ((*part)
                ->StageForward(1, big_rows.data(), big_input.data(), 2 * kBatch, 1,
                               big_output.data(), true)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*part)->StageBackward(0, output.data(), dinput.data()).ok());
  EXPECT_EQ((*part)->StageBackward(0, output.data(), dinput.data()).code(),
            absl::StatusCode::kFailedPrecondition)
      << "the slot was freed";
}

TEST_F(GptCudaStageTest, ATokenOutOfRangeGivesANanLossAndStaysInBounds) {
  absl::StatusOr<std::vector<StagePlan>> plans = PlanStages(config_, 2);
  ASSERT_TRUE(plans.ok());
  absl::StatusOr<std::unique_ptr<StageModel>> first =
      CreateCudaStageModel(config_, (*plans)[0].part, 1, "cuda:0");
  ASSERT_TRUE(first.ok()) << first.status();
  std::vector<float> params = PartOfWhole(config_, (*plans)[0].part, whole_params_.data());
  std::vector<float> grads((*first)->num_parameters());
  ASSERT_TRUE((*first)->BeginStep(params.data(), grads.data()).ok());
  std::vector<int32_t> rows(rows_.begin(), rows_.begin() + kBatch * (config_.context + 1));
  rows[3] = config_.vocab;  // One past the last id.
  std::vector<float> output(static_cast<size_t>(kBatch) * config_.context * config_.width);
  absl::StatusOr<float> loss =
      (*first)->Forward(0, rows.data(), nullptr, kBatch, 1, output.data(), true);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isnan(*loss));
  EXPECT_EQ((*first)->EndStep(1).code(), absl::StatusCode::kFailedPrecondition)
      << "no backward yet";
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

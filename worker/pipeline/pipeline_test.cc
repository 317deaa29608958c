// Pipeline parallelism in one process: the stage plan, the schedules, and the gradients of P = 1,
// 2 and 3 stage pipelines (GPipe and 1F1B) against a single worker's gradient accumulation over
// the same micro-batches.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/model/gpt_config.h"
#include "worker/model/gpt_model.h"
#include "worker/pipeline/in_process_pipeline.h"
#include "worker/pipeline/schedule.h"
#include "worker/pipeline/stage_plan.h"

namespace psrv {
namespace {

GptConfig SmallGpt() {
  GptConfig config;
  config.layers = 6;
  config.heads = 2;
  config.width = 16;
  config.context = 8;
  config.vocab = 13;
  config.dropout = 0.1f;  // Each layer must draw the mask it draws in the whole model.
  config.threads = 1;
  return config;
}

TEST(StagePlanTest, EqualLayersSplitEvenlyAndTheHeadWeighsOnTheLastStage) {
  GptConfig config = SmallGpt();
  config.vocab = 2;  // A head that costs next to nothing.
  absl::StatusOr<std::vector<StagePlan>> two = PlanStages(config, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].part.first_layer, 0u);
  EXPECT_EQ((*two)[0].part.layers, 3u);
  EXPECT_TRUE((*two)[0].part.embeddings);
  EXPECT_FALSE((*two)[0].part.head);
  EXPECT_EQ((*two)[1].part.first_layer, 3u);
  EXPECT_EQ((*two)[1].part.layers, 3u);
  EXPECT_TRUE((*two)[1].part.head);
  // A head as costly as two layers: the last stage gets fewer layers. (3, 2, 1) and (2, 3, 1)
  // both cost 3 layers at most; the tie goes to fewer parameters: the first stage also holds the
  // embeddings.
  config.vocab = static_cast<int>(std::lround(2 * GptLayerFlops(config) / (2.0 * config.width)));
  absl::StatusOr<std::vector<StagePlan>> three = PlanStages(config, 3);
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ((*three)[0].part.layers, 2u);
  EXPECT_EQ((*three)[1].part.layers, 3u);
  EXPECT_EQ((*three)[2].part.layers, 1u);
  size_t layers = 0;
  for (const StagePlan& plan : *three) {
    EXPECT_EQ(plan.part.first_layer, layers);
    layers += plan.part.layers;
  }
  EXPECT_EQ(layers, 6u);
}

TEST(StagePlanTest, RefusesMoreStagesThanLayers) {
  EXPECT_EQ(PlanStages(SmallGpt(), 7).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanStages(SmallGpt(), 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(PlanStages(SmallGpt(), 6).ok());
}

TEST(ScheduleTest, GpipeRunsAllForwardsThenAllBackwards) {
  const std::vector<StageOp> ops = StageOps(PipelineSchedule::kGpipe, 3, 1, 4);
  EXPECT_EQ(OpsString(ops), "F0 F1 F2 F3 B0 B1 B2 B3");
  EXPECT_EQ(MaxInFlight(ops), 4);
}

TEST(ScheduleTest, OneFOneBHoldsAtMostPMinusSMicroBatches) {
  EXPECT_EQ(OpsString(StageOps(PipelineSchedule::kOneFOneB, 3, 0, 4)), "F0 F1 F2 B0 F3 B1 B2 B3");
  EXPECT_EQ(OpsString(StageOps(PipelineSchedule::kOneFOneB, 3, 1, 4)), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(OpsString(StageOps(PipelineSchedule::kOneFOneB, 3, 2, 4)), "F0 B0 F1 B1 F2 B2 F3 B3");
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(MaxInFlight(StageOps(PipelineSchedule::kOneFOneB, 3, s, 8)), 3 - s);
  }
  // Fewer micro-batches than stages: only M in flight.
  EXPECT_EQ(OpsString(StageOps(PipelineSchedule::kOneFOneB, 4, 0, 2)), "F0 F1 B0 B1");
  EXPECT_DOUBLE_EQ(TheoreticalBubble(4, 8), 3.0 / 11.0);
}

class PipelineGradientTest
    : public ::testing::TestWithParam<std::tuple<int, PipelineSchedule>> {};

// The gradient of one global batch (M = 4 micro-batches of 2 rows, dropout on) through a P-stage
// pipeline equals a single worker's gradient accumulation over the same micro-batches: bit for bit
// for every table but the tied token embedding wte (each stage runs the very kernels the whole
// model runs, on the same inputs, and sums micro-batches in the same order). wte's gradient is
// the sum of two parts, the embedding's (first stage) and the head's (last stage), which the
// parameter servers add; a single worker adds them inside each micro-batch instead, so the fp32
// sums are associated differently: equal within a few roundings of the largest term (tolerance
// 1e-6 of the largest |gradient| of wte; the roundings are ~6e-8 each).
TEST_P(PipelineGradientTest, EqualsASingleWorkersAccumulatedGradient) {
  const auto [stages, schedule] = GetParam();
  const GptConfig config = SmallGpt();
  constexpr int kBatch = 2, kMicro = 4;
  std::mt19937 random(7);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  absl::StatusOr<std::unique_ptr<GptModel>> whole = GptModel::Create(config);
  ASSERT_TRUE(whole.ok());
  const size_t n = (*whole)->num_parameters();
  std::vector<float> params(n);
  for (float& p : params) p = normal(random);
  std::vector<int32_t> rows(static_cast<size_t>(kMicro) * kBatch * (config.context + 1));
  for (int32_t& token : rows) token = static_cast<int32_t>(random() % config.vocab);
  const std::vector<uint64_t> seeds = {11, 12, 13, 14};
  std::vector<float> expected(n), scratch(n);
  const float expected_loss = (*whole)->AccumulateGradients(
      params.data(), rows.data(), kBatch, kMicro, seeds.data(), expected.data(), scratch.data());

  absl::StatusOr<std::vector<StagePlan>> plans = PlanStages(config, stages);
  ASSERT_TRUE(plans.ok()) << plans.status();
  absl::StatusOr<std::unique_ptr<InProcessPipeline>> pipeline =
      InProcessPipeline::Create(config, *plans, schedule, kMicro, kBatch);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  std::vector<std::vector<float>> stage_params;
  std::vector<const float*> pointers;
  for (const StagePlan& plan : *plans) {
    stage_params.push_back(PartOfWhole(config, plan.part, params.data()));
  }
  for (const auto& p : stage_params) pointers.push_back(p.data());
  absl::StatusOr<PipelineStepResult> step = (*pipeline)->Step(pointers, rows.data(), seeds.data());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(step->loss, expected_loss);
  std::vector<float> got(n, 0.0f);
  for (int s = 0; s < stages; ++s) {
    AddPartToWhole(config, (*plans)[s].part, step->grads[s].data(), got.data());
  }
  const size_t wte = static_cast<size_t>(config.vocab) * config.width;  // wte is first.
  float largest = 0;
  for (size_t i = 0; i < wte; ++i) largest = std::max(largest, std::fabs(expected[i]));
  int wte_off = 0, exact_off = 0, wte_bitwise = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i < wte) {
      wte_off += std::fabs(got[i] - expected[i]) > 1e-6f * largest;
      wte_bitwise += got[i] == expected[i];
    } else {
      exact_off += std::memcmp(&got[i], &expected[i], sizeof(float)) != 0;
    }
  }
  EXPECT_EQ(exact_off, 0) << "of " << n - wte << " gradients outside wte";
  EXPECT_EQ(wte_off, 0) << "of " << wte << " wte gradients (largest " << largest << ")";
  if (stages == 1) EXPECT_EQ(wte_bitwise, static_cast<int>(wte)) << "one stage: bit for bit";
  for (int s = 0; s < stages; ++s) {
    const int in_flight = step->times[s].peak_in_flight;
    EXPECT_EQ(in_flight, schedule == PipelineSchedule::kGpipe ? kMicro
                                                              : std::min(kMicro, stages - s));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Stages, PipelineGradientTest,
    ::testing::Combine(::testing::Values(1, 2, 3),
                       ::testing::Values(PipelineSchedule::kGpipe, PipelineSchedule::kOneFOneB)));

// A bad token id fails the step on every stage (NaN loss), instead of training on garbage.
TEST(PipelineTest, ABadTokenGivesANanLoss) {
  const GptConfig config = SmallGpt();
  absl::StatusOr<std::vector<StagePlan>> plans = PlanStages(config, 2);
  ASSERT_TRUE(plans.ok());
  absl::StatusOr<std::unique_ptr<InProcessPipeline>> pipeline =
      InProcessPipeline::Create(config, *plans, PipelineSchedule::kOneFOneB, 2, 1);
  ASSERT_TRUE(pipeline.ok());
  std::vector<std::vector<float>> params;
  std::vector<const float*> pointers;
  for (const StagePlan& plan : *plans) params.emplace_back(plan.parameters, 0.01f);
  for (const auto& p : params) pointers.push_back(p.data());
  std::vector<int32_t> rows(2 * (config.context + 1), 1);
  rows[3] = config.vocab;  // Out of range.
  const std::vector<uint64_t> seeds = {1, 2};
  absl::StatusOr<PipelineStepResult> step = (*pipeline)->Step(pointers, rows.data(), seeds.data());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_TRUE(std::isnan(step->loss));
}

}  // namespace
}  // namespace psrv

// The whole CUDA GPT against the CPU GptModel on the same flat parameters and rows: loss, logits
// and every table's gradient, with and without dropout (the masks are equal), through cuBLASLt,
// through GemmEx and with flash attention, and the LanguageModel adapter and --device selection
// on a GPU. Tolerances (bf16 products and activations against fp32):
//   loss: |gpu - cpu| <= 1e-2 * cpu;
//   logits: |gpu - cpu| <= 3e-2 + 3e-2 * |cpu|;
//   gradients, per table and per q/k/v part of the qkv tables: ||gpu - cpu|| / ||cpu|| <= 5e-2.
// Also: bitwise reproducibility, gradients overwritten, NaN and zero gradients for a bad token,
// batches that grow and shrink. Tagged "gpu": skips without a GPU.
#include "worker/cuda/gpt_cuda.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "worker/cuda/device_model.h"
#include "worker/cuda/gpt_cuda_model.h"
#include "worker/cuda/gpu_test_util.h"
#include "worker/cuda/gradient_parts.h"
#include "worker/model/gpt_model.h"
#include "worker/model/sampling.h"

namespace psrv {
namespace cuda {
namespace {

GptConfig CpuConfig(const GptCudaConfig& c) {
  GptConfig config = c;
  config.threads = 1;
  return config;
}

// Tiny (odd sizes; cuBLASLt may decline them) and small (16-byte-aligned sizes).
GptCudaConfig Tiny(float dropout = 0.0f) {
  GptCudaConfig c;
  c.layers = 2, c.heads = 2, c.width = 8, c.context = 5, c.vocab = 11, c.dropout = dropout;
  return c;
}

GptCudaConfig Small(float dropout = 0.0f) {
  GptCudaConfig c;
  c.layers = 2, c.heads = 4, c.width = 128, c.context = 64, c.vocab = 96, c.dropout = dropout;
  return c;
}

// Weights N(0, stddev) (the initialisation's 0.02 makes every logit ~0), LayerNorm weights
// 1 + N(0, 0.1), biases N(0, 0.02): no gradient trivially zero.
std::vector<float> RandomParams(const GptCudaConfig& config, uint64_t seed, float stddev) {
  std::vector<float> params;
  std::mt19937_64 rng(seed);
  for (const GptParamTable& table : GptCudaTables(config)) {
    std::normal_distribution<float> normal(
        table.init == GptParamTable::kOnes ? 1.0f : 0.0f,
        table.init == GptParamTable::kNormal ? stddev
                                             : (table.init == GptParamTable::kOnes ? 0.1f : 0.02f));
    for (size_t i = 0; i < table.size; ++i) params.push_back(normal(rng));
  }
  return params;
}

std::vector<int32_t> RandomRows(int batch, int window, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> rows(static_cast<size_t>(batch) * window);
  for (int32_t& t : rows) t = static_cast<int32_t>(rng() % vocab);
  return rows;
}

std::unique_ptr<GptModel> MakeCpu(const GptCudaConfig& config) {
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(CpuConfig(config));
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

std::unique_ptr<GptCuda> MakeGpu(GptCudaConfig config, bool use_cublaslt) {
  config.use_cublaslt = use_cublaslt;
  absl::StatusOr<std::unique_ptr<GptCuda>> model = GptCuda::Create(config);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// Per table and per q, k, v part: ||gpu - cpu|| / ||cpu|| <= tolerance, named on failure.
void ExpectGradientsClose(const GptCudaConfig& config, const std::vector<float>& gpu,
                          const std::vector<float>& cpu, double tolerance) {
  for (const GradientPart& part : GradientParts(config)) {
    const double error =
        RelativeError(gpu.data() + part.offset, cpu.data() + part.offset, part.size);
    EXPECT_LE(error, tolerance) << part.name;
    double norm = 0.0;
    for (size_t i = 0; i < part.size; ++i) norm += cpu[part.offset + i] * cpu[part.offset + i];
    EXPECT_GT(norm, 0.0) << part.name << ": a zero gradient tests nothing";
  }
}

// Parameters: the kernel path (0: GemmEx products; 1: cuBLASLt; 2: cuBLASLt and flash attention
// on tensor cores; 3: cuBLASLt and the fp32 flash kernels), dropout, and Small (else Tiny).
class GptCudaTest : public GpuTest,
                    public ::testing::WithParamInterface<std::tuple<int, float, bool>> {
 protected:
  bool use_cublaslt() const { return std::get<0>(GetParam()) >= 1; }
  float dropout() const { return std::get<1>(GetParam()); }
  GptCudaConfig config() const {
    GptCudaConfig c = std::get<2>(GetParam()) ? Small(dropout()) : Tiny(dropout());
    c.flash_attention = std::get<0>(GetParam()) >= 2;
    c.flash_fp32 = std::get<0>(GetParam()) == 3;
    return c;
  }
};

const char* PathName(int path) {
  static const char* const kNames[] = {"_GemmEx", "_Lt", "_LtFlash", "_LtFlashFp32"};
  return kNames[path];
}

INSTANTIATE_TEST_SUITE_P(Configs, GptCudaTest,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3),
                                            ::testing::Values(0.0f, 0.2f), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<int, float, bool>>& info) {
                           return std::string(std::get<2>(info.param) ? "Small" : "Tiny") +
                                  PathName(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) > 0.0f ? "_Dropout" : "_NoDropout");
                         });

TEST_P(GptCudaTest, TableLayoutIsGptTables) {
  const GptCudaConfig c = config();
  const std::vector<TableSpec> tables = GptTables(CpuConfig(c), 0);
  const std::vector<GptParamTable> cuda_tables = GptCudaTables(c);
  ASSERT_EQ(tables.size(), cuda_tables.size());
  size_t offset = 0;
  for (size_t i = 0; i < tables.size(); ++i) {
    size_t n = 1;
    for (uint64_t d : tables[i].shape()) n *= d;
    EXPECT_EQ(cuda_tables[i].name, tables[i].name());
    EXPECT_EQ(cuda_tables[i].offset, offset);
    EXPECT_EQ(cuda_tables[i].size, n);
    offset += n;
  }
}

TEST_P(GptCudaTest, LossAndGradientsMatchCpu) {
  const GptCudaConfig c = config();
  std::unique_ptr<GptModel> cpu = MakeCpu(c);
  std::unique_ptr<GptCuda> gpu = MakeGpu(c, use_cublaslt());
  ASSERT_NE(gpu, nullptr);
  const size_t n = cpu->num_parameters();
  ASSERT_EQ(gpu->num_parameters(), n);
  const std::vector<float> params = RandomParams(c, 1, c.width > 32 ? 0.05f : 0.1f);
  ASSERT_TRUE(gpu->UploadParams(params.data()).ok());
  // Batches that grow and shrink: the activations re-carve and strides follow the batch.
  for (int batch : {1, 4, 2}) {
    SCOPED_TRACE(::testing::Message() << "batch " << batch);
    const std::vector<int32_t> rows = RandomRows(batch, c.context + 1, c.vocab, 10 + batch);
    const uint64_t seed = 77 + batch;
    std::vector<float> cpu_grads(n);
    const float cpu_loss =
        cpu->ForwardBackward(params.data(), rows.data(), batch, seed, cpu_grads.data());
    absl::StatusOr<float> gpu_loss = gpu->ForwardBackward(rows.data(), batch, seed);
    ASSERT_TRUE(gpu_loss.ok()) << gpu_loss.status();
    std::vector<float> gpu_grads(n, std::numeric_limits<float>::quiet_NaN());
    ASSERT_TRUE(gpu->DownloadGrads(gpu_grads.data()).ok());
    std::printf("batch %d: loss cpu %.6f gpu %.6f\n", batch, cpu_loss, *gpu_loss);
    EXPECT_NEAR(*gpu_loss, cpu_loss, 1e-2 * cpu_loss);
    ExpectGradientsClose(c, gpu_grads, cpu_grads, 5e-2);

    absl::StatusOr<float> gpu_eval = gpu->Loss(rows.data(), batch);
    ASSERT_TRUE(gpu_eval.ok()) << gpu_eval.status();
    const float cpu_eval = cpu->Loss(params.data(), rows.data(), batch);
    EXPECT_NEAR(*gpu_eval, cpu_eval, 1e-2 * cpu_eval);
  }
  if (use_cublaslt() && c.width >= 128) {
    EXPECT_GT(gpu->blas().lt_calls(), 0);
  }
}

TEST_P(GptCudaTest, NextTokenLogitsMatchCpu) {
  const GptCudaConfig c = config();
  std::unique_ptr<GptModel> cpu = MakeCpu(c);
  std::unique_ptr<GptCuda> gpu = MakeGpu(c, use_cublaslt());
  ASSERT_NE(gpu, nullptr);
  const std::vector<float> params = RandomParams(c, 2, c.width > 32 ? 0.05f : 0.1f);
  ASSERT_TRUE(gpu->UploadParams(params.data()).ok());
  // Shorter than, equal to and longer than the context; one id out of range (clamped).
  for (int length : {1, 3, c.context, c.context + 4}) {
    std::vector<int32_t> tokens = RandomRows(1, length, c.vocab, 30 + length);
    if (length > 2) tokens[length - 2] = c.vocab + 5;
    std::vector<float> want(c.vocab), got(c.vocab, std::nanf(""));
    cpu->NextTokenLogits(params.data(), tokens.data(), length, want.data());
    ASSERT_TRUE(gpu->NextTokenLogits(tokens.data(), length, got.data()).ok());
    for (int v = 0; v < c.vocab; ++v) {
      EXPECT_NEAR(got[v], want[v], 3e-2 + 3e-2 * std::abs(want[v]))
          << "length " << length << " token " << v;
    }
  }
}

TEST_P(GptCudaTest, ReproducibleAndOverwritten) {
  const GptCudaConfig c = config();
  std::unique_ptr<GptCuda> gpu = MakeGpu(c, use_cublaslt());
  ASSERT_NE(gpu, nullptr);
  const size_t n = gpu->num_parameters();
  const std::vector<float> params = RandomParams(c, 3, 0.05f);
  ASSERT_TRUE(gpu->UploadParams(params.data()).ok());
  const int batch = 3;
  const std::vector<int32_t> rows = RandomRows(batch, c.context + 1, c.vocab, 5);
  const std::vector<int32_t> other = RandomRows(batch, c.context + 1, c.vocab, 6);
  std::vector<float> first(n), second(n);
  absl::StatusOr<float> loss1 = gpu->ForwardBackward(rows.data(), batch, 11);
  ASSERT_TRUE(loss1.ok()) << loss1.status();
  ASSERT_TRUE(gpu->DownloadGrads(first.data()).ok());
  for (float g : first) ASSERT_TRUE(std::isfinite(g));  // every gradient written (NaN-filled)
  ASSERT_TRUE(gpu->ForwardBackward(other.data(), batch, 12).ok());  // different step in between
  absl::StatusOr<float> loss2 = gpu->ForwardBackward(rows.data(), batch, 11);
  ASSERT_TRUE(loss2.ok()) << loss2.status();
  ASSERT_TRUE(gpu->DownloadGrads(second.data()).ok());
  EXPECT_EQ(*loss1, *loss2);
  EXPECT_EQ(std::memcmp(first.data(), second.data(), n * sizeof(float)), 0)
      << "gradients differ between identical steps";
  if (c.dropout > 0.0f) {
    absl::StatusOr<float> loss3 = gpu->ForwardBackward(rows.data(), batch, 13);
    ASSERT_TRUE(loss3.ok());
    EXPECT_NE(*loss3, *loss1) << "another seed should draw other dropout masks";
  }
}

// The GELU output recomputed in the backward (the default) gives the loss and gradients of the
// one kept from the forward, bit for bit, and holds 4C bf16 per token and layer less.
TEST_P(GptCudaTest, RecomputedGeluEqualsKeptGeluBitForBit) {
  GptCudaConfig kept_config = config();
  kept_config.recompute_gelu = false;
  ASSERT_TRUE(config().recompute_gelu);
  std::unique_ptr<GptCuda> recomputed = MakeGpu(config(), use_cublaslt());
  std::unique_ptr<GptCuda> kept = MakeGpu(kept_config, use_cublaslt());
  ASSERT_NE(recomputed, nullptr);
  ASSERT_NE(kept, nullptr);
  const GptCudaConfig& c = kept_config;
  const size_t n = kept->num_parameters();
  const std::vector<float> params = RandomParams(c, 14, 0.05f);
  const int batch = 2;
  const std::vector<int32_t> rows = RandomRows(batch, c.context + 1, c.vocab, 15);
  std::vector<float> want(n), got(n);
  ASSERT_TRUE(kept->UploadParams(params.data()).ok());
  absl::StatusOr<float> want_loss = kept->ForwardBackward(rows.data(), batch, 16);
  ASSERT_TRUE(want_loss.ok()) << want_loss.status();
  ASSERT_TRUE(kept->DownloadGrads(want.data()).ok());
  ASSERT_TRUE(recomputed->UploadParams(params.data()).ok());
  absl::StatusOr<float> got_loss = recomputed->ForwardBackward(rows.data(), batch, 16);
  ASSERT_TRUE(got_loss.ok()) << got_loss.status();
  ASSERT_TRUE(recomputed->DownloadGrads(got.data()).ok());
  EXPECT_EQ(*got_loss, *want_loss);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), n * sizeof(float)), 0);
  const size_t gelu_bytes = static_cast<size_t>(c.layers) * batch * c.context * 4 * c.width * 2;
  EXPECT_GE(kept->device_bytes(), recomputed->device_bytes() + gelu_bytes);
}

// The MLP's fc product with its GELU in the epilogue (GptCudaConfig::gelu_epilogue), through
// cuBLASLt (the epilogue) and GemmEx (the GELU kernel after it), the GELU output recomputed or
// kept: loss and gradients within the CPU tolerances above, bitwise reproducible.
class GptCudaGeluEpilogueTest : public GpuTest,
                                public ::testing::WithParamInterface<std::tuple<bool, bool>> {};

INSTANTIATE_TEST_SUITE_P(Paths, GptCudaGeluEpilogueTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& info) {
                           return std::string(std::get<0>(info.param) ? "Lt" : "GemmEx") +
                                  (std::get<1>(info.param) ? "_Recomputed" : "_Kept");
                         });

TEST_P(GptCudaGeluEpilogueTest, MatchesCpuAndIsReproducible) {
  GptCudaConfig c = Small(0.2f);
  c.gelu_epilogue = true;
  c.recompute_gelu = std::get<1>(GetParam());
  std::unique_ptr<GptModel> cpu = MakeCpu(c);
  std::unique_ptr<GptCuda> gpu = MakeGpu(c, std::get<0>(GetParam()));
  ASSERT_NE(gpu, nullptr);
  const size_t n = cpu->num_parameters();
  const std::vector<float> params = RandomParams(c, 31, 0.05f);
  ASSERT_TRUE(gpu->UploadParams(params.data()).ok());
  const int batch = 2;
  const std::vector<int32_t> rows = RandomRows(batch, c.context + 1, c.vocab, 32);
  std::vector<float> cpu_grads(n), first(n, std::nanf("")), second(n, std::nanf(""));
  const float cpu_loss =
      cpu->ForwardBackward(params.data(), rows.data(), batch, 33, cpu_grads.data());
  const int64_t lt_before = gpu->blas().lt_calls();
  absl::StatusOr<float> loss1 = gpu->ForwardBackward(rows.data(), batch, 33);
  ASSERT_TRUE(loss1.ok()) << loss1.status();
  ASSERT_TRUE(gpu->DownloadGrads(first.data()).ok());
  EXPECT_NEAR(*loss1, cpu_loss, 1e-2 * cpu_loss);
  ExpectGradientsClose(c, first, cpu_grads, 5e-2);
  if (std::get<0>(GetParam())) {
    EXPECT_GT(gpu->blas().lt_calls(), lt_before);
  }
  absl::StatusOr<float> loss2 = gpu->ForwardBackward(rows.data(), batch, 33);
  ASSERT_TRUE(loss2.ok()) << loss2.status();
  ASSERT_TRUE(gpu->DownloadGrads(second.data()).ok());
  EXPECT_EQ(*loss2, *loss1);
  EXPECT_EQ(std::memcmp(first.data(), second.data(), n * sizeof(float)), 0);
}

// ForwardBackward as a CUDA graph (GptCudaConfig::cuda_graph) equals the eager steps bit for bit
// over steps that change the seed (dropout masks), the rows (token buckets) and the batch (the
// activations re-allocated): the graph is captured each step, so nothing is stale. Two steps of
// the same shape reuse one instance. Through cuBLASLt and GemmEx, materialised and flash attention.
TEST_P(GptCudaTest, GraphStepsEqualEagerStepsBitForBit) {
  if (std::get<2>(GetParam()) && dropout() == 0.0f) {
    GTEST_SKIP() << "Small runs with dropout only (the simulator's time; Tiny runs both)";
  }
  GptCudaConfig graph_config = config();
  graph_config.cuda_graph = true;
  std::unique_ptr<GptCuda> eager = MakeGpu(config(), use_cublaslt());
  std::unique_ptr<GptCuda> graphed = MakeGpu(graph_config, use_cublaslt());
  ASSERT_NE(eager, nullptr);
  ASSERT_NE(graphed, nullptr);
  const GptCudaConfig& c = graph_config;
  const size_t n = eager->num_parameters();
  const std::vector<float> params = RandomParams(c, 41, 0.05f);
  ASSERT_TRUE(eager->UploadParams(params.data()).ok());
  ASSERT_TRUE(graphed->UploadParams(params.data()).ok());
  int step = 0;
  for (int batch : {2, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << "step " << step << ", batch " << batch);
    const std::vector<int32_t> rows = RandomRows(batch, c.context + 1, c.vocab, 42 + step);
    const uint64_t seed = 43 + step;
    std::vector<float> want(n, std::nanf("")), got(n, std::nanf(""));
    absl::StatusOr<float> want_loss = eager->ForwardBackward(rows.data(), batch, seed);
    ASSERT_TRUE(want_loss.ok()) << want_loss.status();
    ASSERT_TRUE(eager->DownloadGrads(want.data()).ok());
    absl::StatusOr<float> got_loss = graphed->ForwardBackward(rows.data(), batch, seed);
    ASSERT_TRUE(got_loss.ok()) << got_loss.status();
    ASSERT_TRUE(graphed->DownloadGrads(got.data()).ok());
    EXPECT_EQ(*got_loss, *want_loss);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), n * sizeof(float)), 0);
    ++step;
    EXPECT_EQ(graphed->graph_launches(), step);
    if (step == 2) {
      EXPECT_EQ(graphed->graph_instantiations(), 1);
    }
  }
  EXPECT_EQ(eager->graph_launches(), 0);
  // The other calls run eagerly beside it, and a bad token still gives NaN and zero gradients.
  const std::vector<int32_t> rows = RandomRows(2, c.context + 1, c.vocab, 50);
  absl::StatusOr<float> want_eval = eager->Loss(rows.data(), 2);
  absl::StatusOr<float> got_eval = graphed->Loss(rows.data(), 2);
  ASSERT_TRUE(want_eval.ok() && got_eval.ok());
  EXPECT_EQ(*got_eval, *want_eval);
  std::vector<int32_t> bad = rows;
  bad[1] = c.vocab;
  absl::StatusOr<float> nan_loss = graphed->ForwardBackward(bad.data(), 2, 51);
  ASSERT_TRUE(nan_loss.ok()) << nan_loss.status();
  EXPECT_TRUE(std::isnan(*nan_loss));
}

TEST_P(GptCudaTest, OutOfRangeTokenGivesNanAndZeroGradients) {
  const GptCudaConfig c = config();
  std::unique_ptr<GptCuda> gpu = MakeGpu(c, use_cublaslt());
  ASSERT_NE(gpu, nullptr);
  const std::vector<float> params = RandomParams(c, 4, 0.05f);
  ASSERT_TRUE(gpu->UploadParams(params.data()).ok());
  std::vector<int32_t> rows = RandomRows(2, c.context + 1, c.vocab, 7);
  rows[c.context + 3] = c.vocab;  // a target of row 1
  absl::StatusOr<float> loss = gpu->ForwardBackward(rows.data(), 2, 1);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isnan(*loss));
  std::vector<float> grads(gpu->num_parameters(), 1.0f);
  ASSERT_TRUE(gpu->DownloadGrads(grads.data()).ok());
  for (float g : grads) ASSERT_EQ(g, 0.0f);
  rows[0] = -1;
  absl::StatusOr<float> eval = gpu->Loss(rows.data(), 2);
  ASSERT_TRUE(eval.ok());
  EXPECT_TRUE(std::isnan(*eval));
}

using GptCudaModelTest = GpuTest;

TEST_F(GptCudaModelTest, FlashAttentionNeedsASmallHeadSize) {
  GptCudaConfig c = Small();
  c.heads = 1;  // head size 128
  c.flash_attention = true;
  const absl::StatusOr<std::unique_ptr<GptCuda>> model = GptCuda::Create(c);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
}

TEST_F(GptCudaModelTest, LanguageModelAdapterMatchesCpu) {
  const GptCudaConfig c = Small(0.1f);
  std::unique_ptr<GptModel> cpu = MakeCpu(c);
  absl::StatusOr<std::unique_ptr<GptCudaModel>> gpu = GptCudaModel::Create(CpuConfig(c));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  LanguageModel& model = **gpu;
  EXPECT_EQ(model.window(), cpu->window());
  EXPECT_EQ(model.predictions_per_row(), cpu->predictions_per_row());
  EXPECT_EQ(model.vocab_size(), cpu->vocab_size());
  EXPECT_EQ(model.max_context(), cpu->max_context());
  ASSERT_EQ(model.num_parameters(), cpu->num_parameters());
  const size_t n = model.num_parameters();
  const std::vector<float> params = RandomParams(c, 5, 0.05f);
  const std::vector<int32_t> rows = RandomRows(4, model.window(), c.vocab, 8);
  std::vector<float> cpu_grads(n), gpu_grads(n, std::nanf(""));
  const float cpu_loss = cpu->ForwardBackward(params.data(), rows.data(), 4, 9, cpu_grads.data());
  const float gpu_loss = model.ForwardBackward(params.data(), rows.data(), 4, 9, gpu_grads.data());
  ASSERT_TRUE((*gpu)->status().ok()) << (*gpu)->status();
  EXPECT_NEAR(gpu_loss, cpu_loss, 1e-2 * cpu_loss);
  ExpectGradientsClose(c, gpu_grads, cpu_grads, 5e-2);
  EXPECT_NEAR(model.Loss(params.data(), rows.data(), 4), cpu->Loss(params.data(), rows.data(), 4),
              1e-2 * cpu_loss);
  // Sampling goes through NextTokenLogits; greedy sampling should mostly agree with the CPU.
  const std::vector<int32_t> greedy_gpu = Sample(model, params.data(), {1, 2, 3}, 8, 0.0f, 0, 1);
  const std::vector<int32_t> greedy_cpu = Sample(*cpu, params.data(), {1, 2, 3}, 8, 0.0f, 0, 1);
  EXPECT_EQ(greedy_gpu.size(), 8u);
  EXPECT_TRUE(DeviceModelStatus(model).ok());
  int same = 0;
  for (size_t i = 0; i < greedy_gpu.size(); ++i) same += greedy_gpu[i] == greedy_cpu[i];
  std::printf("greedy samples agree on %d of 8 tokens\n", same);
}

// Gradient accumulation summed on the GPU equals the host's sum of per-micro-batch gradients
// (LanguageModel's default) bit for bit, and the CPU model's within the usual tolerance.
TEST_F(GptCudaModelTest, AccumulationOnTheGpuEqualsTheHostSum) {
  const GptCudaConfig c = Small(0.1f);
  std::unique_ptr<GptModel> cpu = MakeCpu(c);
  absl::StatusOr<std::unique_ptr<GptCudaModel>> gpu = GptCudaModel::Create(CpuConfig(c));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  GptCudaModel& model = **gpu;
  const size_t n = model.num_parameters();
  const std::vector<float> params = RandomParams(c, 6, 0.05f);
  constexpr int kBatch = 2, kMicro = 3;
  const std::vector<int32_t> rows = RandomRows(kMicro * kBatch, model.window(), c.vocab, 9);
  const std::vector<uint64_t> seeds = {11, 12, 13};
  std::vector<float> on_gpu(n, std::nanf("")), on_host(n, std::nanf("")), cpu_grads(n),
      scratch(n);
  const float gpu_loss = model.AccumulateGradients(params.data(), rows.data(), kBatch, kMicro,
                                                   seeds.data(), on_gpu.data(), nullptr);
  ASSERT_TRUE(model.status().ok()) << model.status();
  const float host_loss = model.LanguageModel::AccumulateGradients(
      params.data(), rows.data(), kBatch, kMicro, seeds.data(), on_host.data(), scratch.data());
  EXPECT_EQ(gpu_loss, host_loss);
  EXPECT_EQ(std::memcmp(on_gpu.data(), on_host.data(), n * sizeof(float)), 0);
  const float cpu_loss = cpu->AccumulateGradients(params.data(), rows.data(), kBatch, kMicro,
                                                  seeds.data(), cpu_grads.data(), scratch.data());
  EXPECT_NEAR(gpu_loss, cpu_loss, 1e-2 * cpu_loss);
  ExpectGradientsClose(c, on_gpu, cpu_grads, 5e-2);
}

// A step whose parameters are awaited group by group and whose gradients are handed over group
// by group (the worker's overlapped pipeline) equals the whole step bit for bit; forward awaits
// every key before backward reports any, each once, the embeddings first and last.
void ExpectAStreamedStepEqualsTheWholeStep(const GptCudaConfig& c) {
  absl::StatusOr<std::unique_ptr<GptCudaModel>> gpu = GptCudaModel::Create(c);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  GptCudaModel& model = **gpu;
  const size_t n = model.num_parameters();
  const std::vector<float> params = RandomParams(c, 8, 0.05f);
  const std::vector<int32_t> rows = RandomRows(2, model.window(), c.vocab, 10);
  const uint64_t seed = 21;
  std::vector<float> whole(n, std::nanf("")), streamed(n, std::nanf(""));
  const float whole_loss =
      model.AccumulateGradients(params.data(), rows.data(), 2, 1, &seed, whole.data(), nullptr);
  struct Recorder : ParameterStream {
    std::vector<int> awaited, reported;
    bool reporting = false, await_after_report = false;
    size_t first_reported = SIZE_MAX, last_reported = SIZE_MAX;
    void AwaitParameters(const FlatRange& r) override {
      await_after_report |= reporting;
      for (size_t i = r.offset; i < r.offset + r.count; ++i) ++awaited[i];
    }
    void GradientsReady(const FlatRange& r) override {
      if (!reporting) first_reported = r.offset;
      reporting = true;
      last_reported = r.offset;
      for (size_t i = r.offset; i < r.offset + r.count; ++i) ++reported[i];
    }
  } recorder;
  recorder.awaited.assign(n, 0);
  recorder.reported.assign(n, 0);
  model.set_parameter_stream(&recorder);
  const float streamed_loss = model.AccumulateGradients(params.data(), rows.data(), 2, 1, &seed,
                                                        streamed.data(), nullptr);
  model.set_parameter_stream(nullptr);
  ASSERT_TRUE(model.status().ok()) << model.status();
  EXPECT_EQ(streamed_loss, whole_loss);
  EXPECT_EQ(std::memcmp(streamed.data(), whole.data(), n * sizeof(float)), 0);
  EXPECT_FALSE(recorder.await_after_report);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(recorder.awaited[i], 1) << i;
    ASSERT_EQ(recorder.reported[i], 1) << i;
  }
  const size_t C = c.width, V = c.vocab;
  EXPECT_EQ(recorder.first_reported, n - 2 * C);  // The final LayerNorm first...
  EXPECT_EQ(recorder.last_reported, V * C);       // ...the embeddings (wte, then wpe) last.
}

TEST_F(GptCudaModelTest, AStreamedStepEqualsTheWholeStep) {
  ExpectAStreamedStepEqualsTheWholeStep(Small(0.1f));
}

TEST_F(GptCudaModelTest, AStreamedStepEqualsTheWholeStepWithTheGeluEpilogue) {
  GptCudaConfig c = Small(0.1f);
  c.gelu_epilogue = true;
  ExpectAStreamedStepEqualsTheWholeStep(c);
}

// A validation loss through MeanLoss (one parameter upload) equals LanguageModel's default
// (Loss per batch) exactly, and the CPU model's within tolerance.
// A batch whose activations cannot fit in the GPU's free memory is refused before anything is
// freed or allocated, naming the sizes and what to change; the model goes on with smaller ones.
TEST_F(GptCudaModelTest, ABatchTooBigForTheGpuIsRefusedWithTheSizes) {
  const GptCudaConfig c = Small();
  std::unique_ptr<GptCuda> gpu = MakeGpu(c, /*use_cublaslt=*/true);
  ASSERT_NE(gpu, nullptr);
  const std::vector<float> params = RandomParams(c, 17, 0.05f);
  ASSERT_TRUE(gpu->UploadParams(params.data()).ok());
  const std::vector<int32_t> small = RandomRows(2, c.context + 1, c.vocab, 18);
  absl::StatusOr<float> before = gpu->ForwardBackward(small.data(), 2, 19);
  ASSERT_TRUE(before.ok()) << before.status();
  // About 250k rows of 64 tokens: hundreds of GB of activations, more than any GPU holds.
  const int huge = 65535 * 256 / c.context;
  const std::vector<int32_t> rows(static_cast<size_t>(huge) * (c.context + 1), 1);
  absl::StatusOr<float> refused = gpu->ForwardBackward(rows.data(), huge, 19);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  const std::string message(refused.status().message());
  EXPECT_NE(message.find("the activations of a batch of " + std::to_string(huge) + " x 64 tokens"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("free of"), std::string::npos) << message;
  EXPECT_NE(message.find("training.batch_size"), std::string::npos) << message;
  absl::StatusOr<float> after = gpu->ForwardBackward(small.data(), 2, 19);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, *before);
}

TEST_F(GptCudaModelTest, MeanLossEqualsLossPerBatch) {
  const GptCudaConfig c = Small();
  std::unique_ptr<GptModel> cpu = MakeCpu(c);
  absl::StatusOr<std::unique_ptr<GptCudaModel>> gpu = GptCudaModel::Create(CpuConfig(c));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  GptCudaModel& model = **gpu;
  const std::vector<float> params = RandomParams(c, 7, 0.05f);
  constexpr int kBatch = 2, kBatches = 3;
  const std::vector<int32_t> rows = RandomRows(kBatch * kBatches, model.window(), c.vocab, 4);
  auto feeder = [&rows, &model] {
    return [&rows, &model, b = 0](int32_t* out) mutable {
      const size_t n = static_cast<size_t>(kBatch) * model.window();
      std::copy(rows.begin() + b * n, rows.begin() + (b + 1) * n, out);
      ++b;
    };
  };
  const float once = model.MeanLoss(params.data(), kBatch, kBatches, feeder());
  ASSERT_TRUE(model.status().ok()) << model.status();
  const float per_batch = model.LanguageModel::MeanLoss(params.data(), kBatch, kBatches, feeder());
  EXPECT_EQ(once, per_batch);
  const float on_cpu = cpu->MeanLoss(params.data(), kBatch, kBatches, feeder());
  EXPECT_NEAR(once, on_cpu, 1e-2 * on_cpu);
}

TEST_F(GptCudaModelTest, AutoAndCudaChooseTheGpu) {
  ModelSpec spec;
  spec.set_kind("gpt");
  spec.set_layers(1);
  spec.set_heads(2);
  spec.set_width(32);
  spec.set_context(16);
  for (Device device : {Device::kAuto, Device::kCuda}) {
    DeviceChoice choice;
    auto model = CreateLanguageModelOnDevice(spec, 20, device, &choice);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_NE(dynamic_cast<GptCudaModel*>(model->get()), nullptr);
    EXPECT_EQ(choice.device, Device::kCuda);
    std::printf("%s chose: %s\n", DeviceFlagName(device), choice.description.c_str());
  }
  // Each ps_worker --cuda_* option reaches the GPU model's config and the worker's log line.
  CudaModelOptions flash;
  flash.flash_attention = true;
  CudaModelOptions kept = flash;  // --cuda_attention=flash --cuda_recompute_gelu=false
  kept.recompute_gelu = false;
  CudaModelOptions fused;  // --cuda_gelu_epilogue
  fused.gelu_epilogue = true;
  CudaModelOptions graphed;  // --cuda_graph
  graphed.cuda_graph = true;
  struct Case {
    const CudaModelOptions* options;
    const char* description;
  };
  for (const Case& test : {Case{&flash, ", flash attention"},
                           Case{&kept, ", flash attention, GELU output kept"},
                           Case{&fused, ", GELU in the epilogue"}, Case{&graphed, ", CUDA graph"}}) {
    SCOPED_TRACE(test.description);
    DeviceChoice choice;
    auto model = CreateLanguageModelOnDevice(spec, 20, Device::kAuto, &choice, *test.options);
    ASSERT_TRUE(model.ok()) << model.status();
    auto* gpu = dynamic_cast<GptCudaModel*>(model->get());
    ASSERT_NE(gpu, nullptr);
    const GptCudaConfig& config = gpu->gpt().config();
    EXPECT_EQ(config.flash_attention, test.options->flash_attention);
    EXPECT_EQ(config.recompute_gelu, test.options->recompute_gelu);
    EXPECT_EQ(config.gelu_epilogue, test.options->gelu_epilogue);
    EXPECT_EQ(config.cuda_graph, test.options->cuda_graph);
    EXPECT_TRUE(absl::EndsWith(choice.description, test.description)) << choice.description;
  }
  DeviceChoice choice;
  // Head size 64 is the flash kernels' largest: 128 is refused with the reason.
  spec.set_heads(1);
  spec.set_width(128);
  auto wide = CreateLanguageModelOnDevice(spec, 20, Device::kAuto, &choice, flash);
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument) << wide.status();
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

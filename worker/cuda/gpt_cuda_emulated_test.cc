// The CUDA GPT's host code (gpt_cuda.cc, layers.cc, the GemmArgs mappings: unchanged) run on the
// CPU against emulation/ (the CUDA runtime, the kernel launchers and Blas as plain loops with the
// same dtypes and roundings), compared with the CPU GptModel. Runs without a GPU; it checks the
// wiring that the GPU tests cannot check here: which buffer feeds which layer, strides for every
// batch size, the staging of tokens and buckets, dropout sites, the head, overwritten gradients.
// Same tolerances as gpt_cuda_test (bf16 against fp32): loss 1e-2 relative, logits 3e-2 + 3e-2
// relative, gradients per table and per q/k/v part 5e-2 relative L2 (measured here:
// 0.3-1.3%; a transposed dk product gives > 100%, a wrong dropout site fails dozens of parts).
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/gpt_cuda.h"
#include "worker/cuda/gradient_parts.h"
#include "worker/model/gpt_model.h"

namespace psrv {
namespace cuda {
namespace {

GptConfig CpuConfig(const GptCudaConfig& c) {
  GptConfig config;
  config.layers = c.layers;
  config.heads = c.heads;
  config.width = c.width;
  config.context = c.context;
  config.vocab = c.vocab;
  config.dropout = c.dropout;
  config.threads = 1;
  return config;
}

std::vector<float> RandomParams(const GptCudaConfig& config, uint64_t seed, float stddev) {
  std::vector<float> params;
  std::mt19937_64 rng(seed);
  for (const GptParamTable& table : GptCudaTables(config)) {
    const bool ones = table.init == GptParamTable::kOnes;
    std::normal_distribution<float> normal(
        ones ? 1.0f : 0.0f, table.init == GptParamTable::kNormal ? stddev : (ones ? 0.1f : 0.02f));
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

double RelativeError(const float* got, const float* want, size_t n) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    diff += (got[i] - static_cast<double>(want[i])) * (got[i] - static_cast<double>(want[i]));
    norm += static_cast<double>(want[i]) * want[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

class GptCudaEmulatedTest : public ::testing::TestWithParam<std::tuple<bool, float>> {
 protected:
  GptCudaConfig Config() const {
    GptCudaConfig c;
    if (std::get<0>(GetParam())) {  // 16-byte-aligned sizes, several heads
      c.layers = 2, c.heads = 4, c.width = 32, c.context = 16, c.vocab = 24;
    } else {  // odd sizes
      c.layers = 2, c.heads = 2, c.width = 8, c.context = 5, c.vocab = 11;
    }
    c.dropout = std::get<1>(GetParam());
    return c;
  }
};

INSTANTIATE_TEST_SUITE_P(Configs, GptCudaEmulatedTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(0.0f, 0.2f)),
                         [](const ::testing::TestParamInfo<std::tuple<bool, float>>& info) {
                           return std::string(std::get<0>(info.param) ? "Small" : "Tiny") +
                                  (std::get<1>(info.param) > 0.0f ? "_Dropout" : "_NoDropout");
                         });

TEST_P(GptCudaEmulatedTest, LossGradientsAndLogitsMatchCpu) {
  const GptCudaConfig c = Config();
  absl::StatusOr<std::unique_ptr<GptModel>> cpu = GptModel::Create(CpuConfig(c));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<std::unique_ptr<GptCuda>> gpu = GptCuda::Create(c);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const size_t n = (*cpu)->num_parameters();
  ASSERT_EQ((*gpu)->num_parameters(), n);
  const std::vector<float> params = RandomParams(c, 1, 0.1f);
  ASSERT_TRUE((*gpu)->UploadParams(params.data()).ok());

  for (int batch : {1, 3, 2}) {  // grows, then shrinks
    SCOPED_TRACE(::testing::Message() << "batch " << batch);
    const std::vector<int32_t> rows = RandomRows(batch, c.context + 1, c.vocab, 10 + batch);
    const uint64_t seed = 77 + batch;
    std::vector<float> cpu_grads(n), gpu_grads(n, std::nanf(""));
    const float cpu_loss =
        (*cpu)->ForwardBackward(params.data(), rows.data(), batch, seed, cpu_grads.data());
    absl::StatusOr<float> gpu_loss = (*gpu)->ForwardBackward(rows.data(), batch, seed);
    ASSERT_TRUE(gpu_loss.ok()) << gpu_loss.status();
    ASSERT_TRUE((*gpu)->DownloadGrads(gpu_grads.data()).ok());
    EXPECT_NEAR(*gpu_loss, cpu_loss, 1e-2 * cpu_loss);
    for (const GradientPart& part : GradientParts(c)) {
      const double error =
          RelativeError(gpu_grads.data() + part.offset, cpu_grads.data() + part.offset, part.size);
      if (batch == 3) std::printf("  %-28s relative error %.4f\n", part.name.c_str(), error);
      EXPECT_LE(error, 5e-2) << part.name;
    }
    absl::StatusOr<float> gpu_eval = (*gpu)->Loss(rows.data(), batch);
    ASSERT_TRUE(gpu_eval.ok()) << gpu_eval.status();
    const float cpu_eval = (*cpu)->Loss(params.data(), rows.data(), batch);
    EXPECT_NEAR(*gpu_eval, cpu_eval, 1e-2 * cpu_eval);
  }

  for (int length : {1, 3, c.context, c.context + 4}) {
    std::vector<int32_t> tokens = RandomRows(1, length, c.vocab, 30 + length);
    if (length > 2) tokens[length - 2] = c.vocab + 5;  // clamped
    std::vector<float> want(c.vocab), got(c.vocab, std::nanf(""));
    (*cpu)->NextTokenLogits(params.data(), tokens.data(), length, want.data());
    ASSERT_TRUE((*gpu)->NextTokenLogits(tokens.data(), length, got.data()).ok());
    for (int v = 0; v < c.vocab; ++v) {
      EXPECT_NEAR(got[v], want[v], 3e-2 + 3e-2 * std::abs(want[v]))
          << "length " << length << " token " << v;
    }
  }
}

TEST_P(GptCudaEmulatedTest, EveryGradientWrittenAndReproducible) {
  const GptCudaConfig c = Config();
  absl::StatusOr<std::unique_ptr<GptCuda>> gpu = GptCuda::Create(c);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const size_t n = (*gpu)->num_parameters();
  const std::vector<float> params = RandomParams(c, 3, 0.1f);
  ASSERT_TRUE((*gpu)->UploadParams(params.data()).ok());
  const std::vector<int32_t> rows = RandomRows(2, c.context + 1, c.vocab, 5);
  std::vector<float> first(n), second(n);
  // The device gradients start as NaNs (GptCuda::Init): a table some step forgot stays NaN.
  ASSERT_TRUE((*gpu)->ForwardBackward(rows.data(), 2, 9).ok());
  ASSERT_TRUE((*gpu)->DownloadGrads(first.data()).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(first[i])) << "gradient " << i;
  ASSERT_TRUE((*gpu)->ForwardBackward(RandomRows(3, c.context + 1, c.vocab, 6).data(), 3, 1).ok());
  ASSERT_TRUE((*gpu)->ForwardBackward(rows.data(), 2, 9).ok());
  ASSERT_TRUE((*gpu)->DownloadGrads(second.data()).ok());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), n * sizeof(float)), 0);

  std::vector<int32_t> bad = rows;
  bad[3] = -1;
  absl::StatusOr<float> loss = (*gpu)->ForwardBackward(bad.data(), 2, 9);
  ASSERT_TRUE(loss.ok());
  EXPECT_TRUE(std::isnan(*loss));
  ASSERT_TRUE((*gpu)->DownloadGrads(second.data()).ok());
  for (float g : second) ASSERT_EQ(g, 0.0f);
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

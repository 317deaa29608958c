// Tests of MlpModel: gradients against a double-precision reference, initial loss, learning a small
// text, sampling, and spec validation.
#include "worker/model/mlp_model.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/model_layout.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

ModelSpec MlpSpec(int context, int embedding_dim, int hidden_dim) {
  ModelSpec spec;
  spec.set_kind("mlp");
  spec.set_context(context);
  spec.set_embedding_dim(embedding_dim);
  spec.set_hidden_dim(hidden_dim);
  return spec;
}

// The flat buffer initialised as ModelTables says (N(0, scale^2) or zeros), with the test's own RNG.
std::vector<float> InitialParams(const ModelSpec& spec, uint64_t seed) {
  absl::StatusOr<std::vector<TableSpec>> tables = ModelTables(spec, seed);
  EXPECT_TRUE(tables.ok()) << tables.status();
  std::mt19937_64 rng(seed);
  std::vector<float> params;
  for (const TableSpec& table : *tables) {
    std::normal_distribution<float> normal(0.0f, table.init().scale());
    for (uint64_t i = 0; i < TableElements(table); ++i) {
      params.push_back(table.init().kind() == InitSpec::NORMAL ? normal(rng) : 0.0f);
    }
  }
  return params;
}

// Independent double-precision forward pass with naive loops: mean cross-entropy of `windows`
// (batch, k+1) under `params` in the flat layout.
double ReferenceLoss(const ModelSpec& spec, const std::vector<double>& params,
                     const std::vector<uint8_t>& windows, int batch) {
  const int k = spec.context(), E = spec.embedding_dim(), H = spec.hidden_dim(), V = 256;
  const int D = k * E;
  const double* embedding = params.data();  // (V, E)
  const double* wh = embedding + V * E;      // (D, H)
  const double* bh = wh + D * H;             // (H)
  const double* wo = bh + H;                 // (H, V)
  const double* bo = wo + H * V;             // (V)
  double total = 0.0;
  for (int b = 0; b < batch; ++b) {
    const uint8_t* window = windows.data() + b * (k + 1);
    std::vector<double> x(D), h(H), logits(V);
    for (int j = 0; j < k; ++j) {
      for (int e = 0; e < E; ++e) x[j * E + e] = embedding[window[j] * E + e];
    }
    for (int c = 0; c < H; ++c) {
      double pre = bh[c];
      for (int d = 0; d < D; ++d) pre += x[d] * wh[d * H + c];
      h[c] = std::tanh(pre);
    }
    double max = -1e300;
    for (int v = 0; v < V; ++v) {
      logits[v] = bo[v];
      for (int c = 0; c < H; ++c) logits[v] += h[c] * wo[c * V + v];
      max = std::max(max, logits[v]);
    }
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::exp(logits[v] - max);
    total += std::log(sum) + max - logits[window[k]];
  }
  return total / batch;
}

// `batch` windows of k+1 bytes drawn from `alphabet`.
std::vector<uint8_t> RandomWindows(int batch, int context, const std::string& alphabet,
                                   uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> windows(batch * (context + 1));
  for (uint8_t& byte : windows) byte = alphabet[rng() % alphabet.size()];
  return windows;
}

TEST(MlpModelTest, GradientsMatchCentralDifferencesOfReference) {
  const ModelSpec spec = MlpSpec(/*context=*/3, /*embedding_dim=*/4, /*hidden_dim=*/5);
  absl::StatusOr<MlpModel> model = MlpModel::Create(spec);
  ASSERT_TRUE(model.ok()) << model.status();
  const size_t n = model->num_parameters();
  ASSERT_EQ(n, 256u * 4 + 12 * 5 + 5 + 5 * 256 + 256);

  // Every parameter (biases included) ~ N(0, 0.5^2), so no gradient is trivially tiny.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> params(n);
  for (float& p : params) p = normal(rng);
  // A small alphabet makes bytes repeat within and across windows, exercising the scatter-add.
  const int batch = 6;
  const std::vector<uint8_t> windows = RandomWindows(batch, 3, "abcd\xff", 11);

  std::vector<float> grads(n, std::nanf(""));  // Must be overwritten, NaNs included.
  const float loss = model->ForwardBackward(params.data(), windows.data(), batch, grads.data());

  std::vector<double> reference(params.begin(), params.end());
  EXPECT_NEAR(loss, ReferenceLoss(spec, reference, windows, batch), 1e-5);
  EXPECT_FLOAT_EQ(model->Loss(params.data(), windows.data(), batch), loss);

  // All coordinates of every table. Tolerance: |analytic - numeric| <= 1e-3 * max(|numeric|, 1e-2),
  // i.e. 0.1% relative with an absolute floor of 1e-5 (float gradients are good to ~1e-6 here).
  const char* const kTables[] = {"embedding", "hidden.weight", "hidden.bias", "output.weight",
                                 "output.bias"};
  const size_t kEnds[] = {256 * 4, 256 * 4 + 60, 256 * 4 + 65, 256 * 4 + 65 + 1280, n};
  const double eps = 1e-5;
  int table = 0, nonzero = 0;
  for (size_t i = 0; i < n; ++i) {
    while (i >= kEnds[table]) ++table;
    const double saved = reference[i];
    reference[i] = saved + eps;
    const double plus = ReferenceLoss(spec, reference, windows, batch);
    reference[i] = saved - eps;
    const double minus = ReferenceLoss(spec, reference, windows, batch);
    reference[i] = saved;
    const double numeric = (plus - minus) / (2 * eps);
    ASSERT_LE(std::abs(grads[i] - numeric), 1e-3 * std::max(std::abs(numeric), 1e-2))
        << kTables[table] << " element " << i << ": analytic " << grads[i] << " numeric "
        << numeric;
    if (numeric != 0.0) ++nonzero;
  }
  // Embedding rows of unused bytes are zero; everything else is not.
  EXPECT_EQ(nonzero, 5 * 4 + 60 + 5 + 1280 + 256);
}

TEST(MlpModelTest, BatchSizeCanChangeBetweenCalls) {
  const ModelSpec spec = MlpSpec(4, 6, 7);
  MlpModel big = *MlpModel::Create(spec);
  MlpModel fresh = *MlpModel::Create(spec);
  const std::vector<float> params = InitialParams(spec, 3);
  const std::vector<uint8_t> windows = RandomWindows(9, 4, "0123456789", 5);
  std::vector<float> grads_big(big.num_parameters()), grads_fresh(fresh.num_parameters());
  big.ForwardBackward(params.data(), windows.data(), 9, grads_big.data());
  const float loss_big = big.ForwardBackward(params.data(), windows.data(), 2, grads_big.data());
  const float loss_fresh =
      fresh.ForwardBackward(params.data(), windows.data(), 2, grads_fresh.data());
  EXPECT_EQ(loss_big, loss_fresh);
  EXPECT_EQ(grads_big, grads_fresh);
}

TEST(MlpModelTest, InitialLossIsNearUniform) {
  const ModelSpec spec = MlpSpec(8, 24, 256);
  MlpModel model = *MlpModel::Create(spec);
  const std::vector<float> params = InitialParams(spec, 42);
  ASSERT_EQ(params.size(), model.num_parameters());
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::vector<uint8_t> windows = RandomWindows(512, 8, all_bytes, 1);
  EXPECT_NEAR(model.Loss(params.data(), windows.data(), 512), std::log(256.0), 0.05);
}

TEST(MlpModelTest, SgdLearnsRepeatedText) {
  const ModelSpec spec = MlpSpec(4, 8, 64);
  MlpModel model = *MlpModel::Create(spec);
  std::vector<float> params = InitialParams(spec, 5);
  std::string text;
  for (int i = 0; i < 20; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  const int window = spec.context() + 1, batch = 32;
  std::mt19937_64 rng(9);
  auto sample = [&](int n) {
    std::vector<uint8_t> windows(n * window);
    for (int b = 0; b < n; ++b) {
      const size_t start = rng() % (text.size() - window + 1);
      for (int j = 0; j < window; ++j) windows[b * window + j] = text[start + j];
    }
    return windows;
  };
  const std::vector<uint8_t> eval = sample(256);
  const float initial = model.Loss(params.data(), eval.data(), 256);
  std::vector<float> grads(model.num_parameters());
  const float learning_rate = 0.5f;
  for (int step = 0; step < 400; ++step) {
    const std::vector<uint8_t> windows = sample(batch);
    model.ForwardBackward(params.data(), windows.data(), batch, grads.data());
    for (size_t i = 0; i < params.size(); ++i) params[i] -= learning_rate * grads[i];
  }
  const float final_loss = model.Loss(params.data(), eval.data(), 256);
  EXPECT_NEAR(initial, std::log(256.0f), 0.05);
  // Only "the " is ambiguous (quick or lazy), so the best achievable mean loss is ~0.03 nats.
  EXPECT_LT(final_loss, 0.5f) << "initial " << initial;

  // Near-greedy sampling follows the text: every (k+1)-gram it produces occurs in the text.
  const std::string prompt = "brown ";
  const std::string generated = model.Generate(params.data(), prompt, 60, 0.1f, 1);
  const std::string all = prompt + generated;
  for (size_t i = 0; i + window <= all.size(); ++i) {
    EXPECT_NE(text.find(all.substr(i, window)), std::string::npos)
        << "\"" << all.substr(i, window) << "\" in \"" << all << "\"";
  }
}

TEST(MlpModelTest, GenerateIsDeterministicPerSeed) {
  const ModelSpec spec = MlpSpec(8, 16, 32);
  MlpModel model = *MlpModel::Create(spec);
  const std::vector<float> params = InitialParams(spec, 8);
  const std::string a = model.Generate(params.data(), "hi", 50, 1.0f, 123);
  EXPECT_EQ(a.size(), 50u);
  EXPECT_EQ(model.Generate(params.data(), "hi", 50, 1.0f, 123), a);
  EXPECT_NE(model.Generate(params.data(), "hi", 50, 1.0f, 124), a);
  // A prompt longer than the context and an empty one both work.
  EXPECT_EQ(model.Generate(params.data(), std::string(100, 'x'), 7, 0.8f, 1).size(), 7u);
  EXPECT_EQ(model.Generate(params.data(), "", 3, 0.8f, 1).size(), 3u);
  EXPECT_EQ(model.Generate(params.data(), "hi", 0, 1.0f, 1), "");
  // Only the last `context` bytes of the prompt matter; '\n' pads a short one.
  EXPECT_EQ(model.Generate(params.data(), "abcdefgh", 20, 1.0f, 5),
            model.Generate(params.data(), "zzzabcdefgh", 20, 1.0f, 5));
  EXPECT_EQ(model.Generate(params.data(), "ab", 20, 1.0f, 5),
            model.Generate(params.data(), "\n\n\n\n\n\nab", 20, 1.0f, 5));
}

TEST(MlpModelTest, CreateRejectsBadSpecs) {
  EXPECT_TRUE(MlpModel::Create(MlpSpec(8, 24, 256)).ok());
  ModelSpec wrong_kind = MlpSpec(8, 24, 256);
  wrong_kind.set_kind("transformer");
  ModelSpec no_kind = MlpSpec(8, 24, 256);
  no_kind.clear_kind();
  for (const ModelSpec& spec :
       {wrong_kind, no_kind, MlpSpec(0, 24, 256), MlpSpec(8, 0, 256), MlpSpec(8, 24, 0),
        MlpSpec(65, 24, 256), MlpSpec(8, 1025, 256), MlpSpec(8, 24, 16385)}) {
    absl::StatusOr<MlpModel> model = MlpModel::Create(spec);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << spec.DebugString();
  }
}

TEST(MlpModelTest, NumParametersMatchesLayout) {
  const ModelSpec spec = MlpSpec(8, 24, 256);
  EXPECT_EQ(MlpModel::Create(spec)->num_parameters(), TotalElements(*ModelTables(spec, 0)));
  EXPECT_EQ(MlpModel::Create(spec)->context(), 8);
}

}  // namespace
}  // namespace psrv

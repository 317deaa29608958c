// Tests of GptModel: gradients of the whole model against a naive double-precision GPT, dropout,
// initial loss, learning a small text, NextTokenLogits, the table layout and config validation.
#include "worker/model/gpt_model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/initializer.h"
#include "gtest/gtest.h"
#include "worker/model/language_model.h"
#include "worker/model/tokenizer.h"
#include "worker/model/sampling.h"

namespace psrv {
namespace {

GptConfig TinyConfig(float dropout = 0.0f) {
  GptConfig config;
  config.layers = 2;
  config.heads = 2;
  config.width = 8;
  config.context = 5;
  config.vocab = 11;
  config.dropout = dropout;
  return config;
}

std::unique_ptr<GptModel> MakeModel(const GptConfig& config) {
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(config);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

// The flat buffer initialised as the parameter servers do it (GptTables + InitializeRange).
std::vector<float> InitialParams(const GptConfig& config, uint64_t seed) {
  std::vector<float> params;
  for (const TableSpec& table : GptTables(config, seed)) {
    uint64_t n = 1;
    for (uint64_t d : table.shape()) n *= d;
    const size_t offset = params.size();
    params.resize(offset + n);
    InitializeRange(table, 0, n, params.data() + offset);
  }
  return params;
}

// Every parameter random: N(0, 0.3^2), LayerNorm weights 1 + N(0, 0.3^2), so that no gradient is
// trivially small or zero.
std::vector<float> RandomParams(const GptConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<float> params;
  for (const TableSpec& table : GptTables(config, 0)) {
    uint64_t n = 1;
    for (uint64_t d : table.shape()) n *= d;
    const float base = table.init().kind() == InitSpec::ONES ? 1.0f : 0.0f;
    for (uint64_t i = 0; i < n; ++i) params.push_back(base + normal(rng));
  }
  return params;
}

std::vector<int32_t> RandomRows(int batch, int window, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> rows(static_cast<size_t>(batch) * window);
  for (int32_t& t : rows) t = static_cast<int32_t>(rng() % vocab);
  return rows;
}

// ---- A naive double-precision GPT over the flat buffer, tables found by name ----

class ReferenceGpt {
 public:
  explicit ReferenceGpt(const GptConfig& config) : c_(config) {
    size_t offset = 0;
    for (const TableSpec& table : GptTables(config, 0)) {
      offsets_[table.name()] = offset;
      uint64_t n = 1;
      for (uint64_t d : table.shape()) n *= d;
      offset += n;
    }
  }

  // Mean cross-entropy of rows (batch, T+1), no dropout.
  double Loss(const std::vector<double>& params, const std::vector<int32_t>& rows,
              int batch) const {
    const int T = c_.context, C = c_.width, V = c_.vocab, NH = c_.heads, hs = C / NH;
    auto table = [&](const char* name) { return params.data() + offsets_.at(name); };
    double total = 0.0;
    for (int b = 0; b < batch; ++b) {
      const int32_t* row = rows.data() + b * (T + 1);
      std::vector<double> x(T * C);  // (T, C) residual stream
      for (int t = 0; t < T; ++t) {
        for (int c = 0; c < C; ++c) {
          x[t * C + c] = table("wte")[row[t] * C + c] + table("wpe")[t * C + c];
        }
      }
      for (int l = 0; l < c_.layers; ++l) {
        const std::vector<double> h1 =
            LayerNorm(x, table("h.ln1.weight") + l * C, table("h.ln1.bias") + l * C, T, C);
        const std::vector<double> qkv = Linear(h1, table("h.attn.qkv.weight") + l * 3 * C * C,
                                               table("h.attn.qkv.bias") + l * 3 * C, T, C, 3 * C);
        std::vector<double> y(T * C, 0.0);
        for (int h = 0; h < NH; ++h) {
          for (int t = 0; t < T; ++t) {
            std::vector<double> w(t + 1);
            double max = -1e300, sum = 0.0;
            for (int t2 = 0; t2 <= t; ++t2) {
              double dot = 0.0;
              for (int i = 0; i < hs; ++i) {
                dot += qkv[t * 3 * C + h * hs + i] * qkv[t2 * 3 * C + C + h * hs + i];
              }
              w[t2] = dot / std::sqrt(static_cast<double>(hs));
              max = std::max(max, w[t2]);
            }
            for (int t2 = 0; t2 <= t; ++t2) sum += (w[t2] = std::exp(w[t2] - max));
            for (int t2 = 0; t2 <= t; ++t2) {
              for (int i = 0; i < hs; ++i) {
                y[t * C + h * hs + i] += w[t2] / sum * qkv[t2 * 3 * C + 2 * C + h * hs + i];
              }
            }
          }
        }
        const std::vector<double> proj = Linear(y, table("h.attn.proj.weight") + l * C * C,
                                                table("h.attn.proj.bias") + l * C, T, C, C);
        for (int i = 0; i < T * C; ++i) x[i] += proj[i];
        const std::vector<double> h2 =
            LayerNorm(x, table("h.ln2.weight") + l * C, table("h.ln2.bias") + l * C, T, C);
        std::vector<double> fc = Linear(h2, table("h.mlp.fc.weight") + l * 4 * C * C,
                                        table("h.mlp.fc.bias") + l * 4 * C, T, C, 4 * C);
        for (double& u : fc) {
          u = 0.5 * u * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (u + 0.044715 * u * u * u)));
        }
        const std::vector<double> out = Linear(fc, table("h.mlp.proj.weight") + l * 4 * C * C,
                                               table("h.mlp.proj.bias") + l * C, T, 4 * C, C);
        for (int i = 0; i < T * C; ++i) x[i] += out[i];
      }
      const std::vector<double> f = LayerNorm(x, table("lnf.weight"), table("lnf.bias"), T, C);
      const std::vector<double> logits =
          Linear(f, table(offsets_.count("lm_head") ? "lm_head" : "wte"), nullptr, T, C, V);
      for (int t = 0; t < T; ++t) {
        double max = -1e300, sum = 0.0;
        for (int v = 0; v < V; ++v) max = std::max(max, logits[t * V + v]);
        for (int v = 0; v < V; ++v) sum += std::exp(logits[t * V + v] - max);
        total += std::log(sum) + max - logits[t * V + row[t + 1]];
      }
    }
    return total / (batch * T);
  }

 private:
  static std::vector<double> LayerNorm(const std::vector<double>& x, const double* w,
                                       const double* b, int N, int C) {
    std::vector<double> out(N * C);
    for (int r = 0; r < N; ++r) {
      double mean = 0.0, var = 0.0;
      for (int c = 0; c < C; ++c) mean += x[r * C + c] / C;
      for (int c = 0; c < C; ++c) var += (x[r * C + c] - mean) * (x[r * C + c] - mean) / C;
      for (int c = 0; c < C; ++c) {
        out[r * C + c] = (x[r * C + c] - mean) / std::sqrt(var + 1e-5) * w[c] + b[c];
      }
    }
    return out;
  }

  // x (N, in) @ w^T (w: (out, in)) + b.
  static std::vector<double> Linear(const std::vector<double>& x, const double* w, const double* b,
                                    int N, int in, int out) {
    std::vector<double> y(N * out);
    for (int r = 0; r < N; ++r) {
      for (int o = 0; o < out; ++o) {
        double s = b != nullptr ? b[o] : 0.0;
        for (int i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
        y[r * out + o] = s;
      }
    }
    return y;
  }

  GptConfig c_;
  std::map<std::string, size_t> offsets_;
};

// Tied (the head reuses wte) or untied (a table lm_head of its own).
void CheckGradientsMatchCentralDifferences(bool tie_embeddings) {
  GptConfig config = TinyConfig();
  config.tie_embeddings = tie_embeddings;
  std::unique_ptr<GptModel> model = MakeModel(config);
  const size_t n = model->num_parameters();
  const std::vector<float> params = RandomParams(config, 7);
  ASSERT_EQ(params.size(), n);
  const int batch = 2;
  const std::vector<int32_t> rows = RandomRows(batch, model->window(), config.vocab, 3);

  std::vector<float> grads(n, std::nanf(""));  // Must be overwritten, NaNs included.
  const float loss = model->ForwardBackward(params.data(), rows.data(), batch, 1, grads.data());
  const ReferenceGpt reference(config);
  std::vector<double> p(params.begin(), params.end());
  EXPECT_NEAR(loss, reference.Loss(p, rows, batch), 1e-5);

  // Every parameter. Tolerance: |analytic - numeric| <= 1e-3 * |numeric| + 1e-5 (the gradients
  // are O(1e-2..1); float rounding through two layers stays below ~1e-6).
  const double eps = 1e-6;
  std::vector<std::string> table_of(n);
  size_t offset = 0;
  for (const TableSpec& table : GptTables(config, 0)) {
    uint64_t size = 1;
    for (uint64_t d : table.shape()) size *= d;
    for (uint64_t i = 0; i < size; ++i) table_of[offset + i] = table.name();
    offset += size;
  }
  int nonzero = 0;
  for (size_t i = 0; i < n; ++i) {
    const double saved = p[i];
    p[i] = saved + eps;
    const double plus = reference.Loss(p, rows, batch);
    p[i] = saved - eps;
    const double minus = reference.Loss(p, rows, batch);
    p[i] = saved;
    const double numeric = (plus - minus) / (2 * eps);
    ASSERT_LE(std::abs(grads[i] - numeric), 1e-3 * std::abs(numeric) + 1e-5)
        << table_of[i] << " (flat index " << i << "): analytic " << grads[i] << " numeric "
        << numeric;
    nonzero += std::abs(numeric) > 1e-9;
  }
  // Only the embedding rows of tokens absent from the inputs and targets can have zero gradient.
  EXPECT_GT(nonzero, static_cast<int>(n) - config.vocab * config.width);
  if (!tie_embeddings) {
    // Untied: wte's gradient is exactly zero on the rows of tokens not in the inputs (targets do
    // not count: the head is lm_head), and nonzero on the others.
    std::vector<bool> input(config.vocab, false);
    for (int b = 0; b < batch; ++b) {
      for (int t = 0; t < config.context; ++t) input[rows[b * model->window() + t]] = true;
    }
    for (int v = 0; v < config.vocab; ++v) {
      float row_abs = 0;
      for (int c = 0; c < config.width; ++c) row_abs += std::abs(grads[v * config.width + c]);
      if (input[v]) {
        EXPECT_GT(row_abs, 0.0f) << "token " << v;
      } else {
        EXPECT_EQ(row_abs, 0.0f) << "token " << v;
      }
    }
  }
}

TEST(GptModelTest, GradientsMatchCentralDifferencesOfReference) {
  CheckGradientsMatchCentralDifferences(/*tie_embeddings=*/true);
}

TEST(GptModelTest, UntiedGradientsMatchCentralDifferencesAndEmbeddingRowsAreSparse) {
  CheckGradientsMatchCentralDifferences(/*tie_embeddings=*/false);
}

TEST(GptModelTest, ZeroDropoutTrainingLossEqualsEvalLoss) {
  const GptConfig config = TinyConfig();
  std::unique_ptr<GptModel> model = MakeModel(config);
  const std::vector<float> params = RandomParams(config, 1);
  const std::vector<int32_t> rows = RandomRows(3, model->window(), config.vocab, 2);
  std::vector<float> grads(model->num_parameters());
  const float train = model->ForwardBackward(params.data(), rows.data(), 3, 99, grads.data());
  EXPECT_EQ(train, model->Loss(params.data(), rows.data(), 3));
}

TEST(GptModelTest, DropoutIsDeterministicPerSeed) {
  const GptConfig config = TinyConfig(/*dropout=*/0.2f);
  std::unique_ptr<GptModel> model = MakeModel(config);
  std::unique_ptr<GptModel> other = MakeModel(config);
  const std::vector<float> params = RandomParams(config, 1);
  const std::vector<int32_t> rows = RandomRows(3, model->window(), config.vocab, 2);
  const size_t n = model->num_parameters();
  std::vector<float> g1(n), g2(n), g3(n);
  const float l1 = model->ForwardBackward(params.data(), rows.data(), 3, 5, g1.data());
  const float l2 = other->ForwardBackward(params.data(), rows.data(), 3, 5, g2.data());
  const float l3 = model->ForwardBackward(params.data(), rows.data(), 3, 6, g3.data());
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1, g2);
  EXPECT_NE(l1, l3);
  EXPECT_NE(g1, g3);
  // Evaluation mode has no dropout, and is itself deterministic.
  const float eval = model->Loss(params.data(), rows.data(), 3);
  EXPECT_NE(eval, l1);
  EXPECT_EQ(eval, model->Loss(params.data(), rows.data(), 3));
}

// With dropout the loss for a fixed seed is still a smooth function of the parameters; the
// gradient must match its directional derivative (float central differences with step 1e-3 along a
// direction of N(0, 1) entries: 1% tolerance).
TEST(GptModelTest, DropoutGradientsMatchDirectionalDerivative) {
  const GptConfig config = TinyConfig(/*dropout=*/0.3f);
  std::unique_ptr<GptModel> model = MakeModel(config);
  const size_t n = model->num_parameters();
  const std::vector<float> params = RandomParams(config, 4);
  const std::vector<int32_t> rows = RandomRows(2, model->window(), config.vocab, 5);
  std::vector<float> grads(n), scratch(n);
  model->ForwardBackward(params.data(), rows.data(), 2, 77, grads.data());
  for (uint64_t trial = 0; trial < 3; ++trial) {
    std::mt19937_64 rng(trial);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> direction(n), plus(n), minus(n);
    double analytic = 0.0;
    const float eps = 1e-3f;
    for (size_t i = 0; i < n; ++i) {
      direction[i] = normal(rng);
      analytic += static_cast<double>(grads[i]) * direction[i];
      plus[i] = params[i] + eps * direction[i];
      minus[i] = params[i] - eps * direction[i];
    }
    const double numeric =
        (static_cast<double>(
             model->ForwardBackward(plus.data(), rows.data(), 2, 77, scratch.data())) -
         model->ForwardBackward(minus.data(), rows.data(), 2, 77, scratch.data())) /
        (2 * eps);
    EXPECT_NEAR(analytic, numeric, 0.01 * std::abs(numeric) + 1e-3) << "trial " << trial;
  }
}

// Large enough that the kernels' loops run in parallel (B*T*C = 32768), with the matrix products
// threaded by OpenBLAS or (single-threaded OpenBLAS) split over the model's pool.
void CheckResultsDoNotDependOnThreads() {
  GptConfig config;
  config.layers = 1;
  config.heads = 2;
  config.width = 64;
  config.context = 32;
  config.vocab = 11;
  config.dropout = 0.1f;
  config.threads = 1;
  std::unique_ptr<GptModel> one = MakeModel(config);
  config.threads = 3;
  std::unique_ptr<GptModel> three = MakeModel(config);
  const std::vector<float> params = RandomParams(config, 1);
  const int batch = 16;
  const std::vector<int32_t> rows = RandomRows(batch, one->window(), config.vocab, 2);
  std::vector<float> g1(one->num_parameters()), g2(one->num_parameters());
  const float l1 = one->ForwardBackward(params.data(), rows.data(), batch, 3, g1.data());
  const float l2 = three->ForwardBackward(params.data(), rows.data(), batch, 3, g2.data());
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1, g2);
}

TEST(GptModelTest, ResultsDoNotDependOnThreads) { CheckResultsDoNotDependOnThreads(); }

TEST(GptModelTest, ResultsDoNotDependOnThreadsWithSingleThreadedBlas) {
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  CheckResultsDoNotDependOnThreads();
  openblas_set_num_threads(blas_threads);
}

TEST(GptModelTest, BatchSizeCanChangeBetweenCalls) {
  const GptConfig config = TinyConfig(0.1f);
  std::unique_ptr<GptModel> big = MakeModel(config);
  std::unique_ptr<GptModel> fresh = MakeModel(config);
  const std::vector<float> params = RandomParams(config, 3);
  const std::vector<int32_t> rows = RandomRows(9, big->window(), config.vocab, 5);
  std::vector<float> g_big(big->num_parameters()), g_fresh(fresh->num_parameters());
  big->ForwardBackward(params.data(), rows.data(), 9, 1, g_big.data());
  const float l_big = big->ForwardBackward(params.data(), rows.data(), 2, 1, g_big.data());
  const float l_fresh = fresh->ForwardBackward(params.data(), rows.data(), 2, 1, g_fresh.data());
  EXPECT_EQ(l_big, l_fresh);
  EXPECT_EQ(g_big, g_fresh);
}

TEST(GptModelTest, OutOfRangeTokenGivesNan) {
  const GptConfig config = TinyConfig();
  std::unique_ptr<GptModel> model = MakeModel(config);
  const std::vector<float> params = RandomParams(config, 1);
  std::vector<int32_t> rows = RandomRows(2, model->window(), config.vocab, 2);
  rows[7] = config.vocab;
  std::vector<float> grads(model->num_parameters(), 1.0f);
  EXPECT_TRUE(std::isnan(model->ForwardBackward(params.data(), rows.data(), 2, 0, grads.data())));
  EXPECT_EQ(*std::max_element(grads.begin(), grads.end()), 0.0f);
  EXPECT_EQ(*std::min_element(grads.begin(), grads.end()), 0.0f);
  rows[7] = -1;
  EXPECT_TRUE(std::isnan(model->Loss(params.data(), rows.data(), 2)));
}

// The loss of a row is the mean over positions t of the cross-entropy of NextTokenLogits(row[0..t])
// against row[t+1]: the model is causal and NextTokenLogits reads prefixes of any length.
TEST(GptModelTest, NextTokenLogitsAgreeWithLoss) {
  const GptConfig config = TinyConfig();
  std::unique_ptr<GptModel> model = MakeModel(config);
  const std::vector<float> params = RandomParams(config, 8);
  const std::vector<int32_t> row = RandomRows(1, model->window(), config.vocab, 9);
  std::vector<float> logits(config.vocab);
  double total = 0.0;
  for (int t = 1; t <= config.context; ++t) {
    model->NextTokenLogits(params.data(), row.data(), t, logits.data());
    double max = -1e300, sum = 0.0;
    for (float l : logits) max = std::max<double>(max, l);
    for (float l : logits) sum += std::exp(l - max);
    total += std::log(sum) + max - logits[row[t]];
  }
  EXPECT_NEAR(model->Loss(params.data(), row.data(), 1), total / config.context, 1e-5);
  // Longer inputs use their last T tokens.
  std::vector<int32_t> longer = {3, 1, 4};
  longer.insert(longer.end(), row.begin(), row.begin() + config.context);
  std::vector<float> from_longer(config.vocab);
  model->NextTokenLogits(params.data(), longer.data(), longer.size(), from_longer.data());
  model->NextTokenLogits(params.data(), row.data(), config.context, logits.data());
  EXPECT_EQ(from_longer, logits);
}

TEST(GptModelTest, InitialLossIsNearUniform) {
  GptConfig config;  // The nanoGPT shakespeare_char CPU config: L=4, H=4, C=128, T=64, V=65.
  std::unique_ptr<GptModel> model = MakeModel(config);
  const std::vector<float> params = InitialParams(config, 42);
  ASSERT_EQ(params.size(), model->num_parameters());
  const std::vector<int32_t> rows = RandomRows(4, model->window(), config.vocab, 1);
  // With std 0.02 embeddings the logits have std ~0.02*sqrt(C) = 0.23: loss ~ ln(V) + 0.03.
  EXPECT_NEAR(model->Loss(params.data(), rows.data(), 4), std::log(65.0), 0.1);
}

// Adam on a small repeated text: the loss must fall from ~ln(V) to well below 1 nat, and
// near-greedy sampling must then follow the text.
TEST(GptModelTest, AdamLearnsRepeatedText) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  const CharTokenizer tokenizer = CharTokenizer::FromText(text);
  const std::vector<int32_t> ids = *tokenizer.Encode(text);
  GptConfig config;
  config.layers = 2;
  config.heads = 2;
  config.width = 32;
  config.context = 16;
  config.vocab = tokenizer.vocab_size();
  config.dropout = 0.0f;
  std::unique_ptr<GptModel> model = MakeModel(config);
  std::vector<float> params = InitialParams(config, 5);
  const int window = model->window(), batch = 8;
  std::mt19937_64 rng(9);
  auto sample = [&](int n) {
    std::vector<int32_t> rows(static_cast<size_t>(n) * window);
    for (int b = 0; b < n; ++b) {
      const size_t start = rng() % (ids.size() - window + 1);
      std::copy(ids.begin() + start, ids.begin() + start + window, rows.begin() + b * window);
    }
    return rows;
  };
  const std::vector<int32_t> eval = sample(32);
  const float initial = model->Loss(params.data(), eval.data(), 32);

  const size_t n = params.size();
  std::vector<float> grads(n), m(n, 0.0f), v(n, 0.0f);
  const float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.99f;
  for (int step = 1; step <= 150; ++step) {
    const std::vector<int32_t> rows = sample(batch);
    model->ForwardBackward(params.data(), rows.data(), batch, step, grads.data());
    const float c1 = 1.0f - std::pow(beta1, step), c2 = 1.0f - std::pow(beta2, step);
    for (size_t i = 0; i < n; ++i) {
      m[i] = beta1 * m[i] + (1 - beta1) * grads[i];
      v[i] = beta2 * v[i] + (1 - beta2) * grads[i] * grads[i];
      params[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + 1e-8f);
    }
  }
  const float final_loss = model->Loss(params.data(), eval.data(), 32);
  EXPECT_NEAR(initial, std::log(static_cast<float>(config.vocab)), 0.1);
  EXPECT_LT(final_loss, 0.5f) << "initial " << initial;

  // Greedy sampling follows the text: every 6-gram it produces occurs in the text.
  const std::vector<int32_t> prompt = *tokenizer.Encode("brown ");
  const std::vector<int32_t> generated = Sample(*model, params.data(), prompt, 60, 1.0f, 1, 3);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string all_text = tokenizer.Decode(all);
  for (size_t i = 0; i + 6 <= all_text.size(); ++i) {
    EXPECT_NE(text.find(all_text.substr(i, 6)), std::string::npos)
        << "\"" << all_text.substr(i, 6) << "\" in \"" << all_text << "\"";
  }
}

TEST(GptModelTest, TablesFollowTheDocumentedLayout) {
  GptConfig config;
  config.layers = 3;
  config.heads = 2;
  config.width = 10;
  config.context = 7;
  config.vocab = 13;
  const std::vector<TableSpec> tables = GptTables(config, 17);
  const std::vector<std::pair<std::string, std::vector<uint64_t>>> want = {
      {"wte", {13, 10}},
      {"wpe", {7, 10}},
      {"h.ln1.weight", {3, 10}},
      {"h.ln1.bias", {3, 10}},
      {"h.attn.qkv.weight", {3, 30, 10}},
      {"h.attn.qkv.bias", {3, 30}},
      {"h.attn.proj.weight", {3, 10, 10}},
      {"h.attn.proj.bias", {3, 10}},
      {"h.ln2.weight", {3, 10}},
      {"h.ln2.bias", {3, 10}},
      {"h.mlp.fc.weight", {3, 40, 10}},
      {"h.mlp.fc.bias", {3, 40}},
      {"h.mlp.proj.weight", {3, 10, 40}},
      {"h.mlp.proj.bias", {3, 10}},
      {"lnf.weight", {10}},
      {"lnf.bias", {10}},
  };
  ASSERT_EQ(tables.size(), want.size());
  uint64_t total = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const TableSpec& t = tables[i];
    EXPECT_EQ(t.name(), want[i].first);
    EXPECT_EQ(std::vector<uint64_t>(t.shape().begin(), t.shape().end()), want[i].second)
        << t.name();
    EXPECT_EQ(t.init().seed(), 17u);
    uint64_t size = 1;
    for (uint64_t d : t.shape()) size *= d;
    total += size;
    const bool matrix = t.name() == "wte" || t.name() == "wpe" ||
                        (t.name().find("weight") != std::string::npos && t.shape_size() == 3);
    EXPECT_EQ(t.weight_decay(), matrix) << t.name();
    EXPECT_EQ(GptTableHasWeightDecay(t.name()), matrix) << t.name();
    if (t.name().find("ln") != std::string::npos) {
      EXPECT_EQ(t.init().kind(),
                t.name().find("weight") != std::string::npos ? InitSpec::ONES : InitSpec::ZEROS)
          << t.name();
    } else if (t.name().find("bias") != std::string::npos) {
      EXPECT_EQ(t.init().kind(), InitSpec::ZEROS) << t.name();
    } else {
      EXPECT_EQ(t.init().kind(), InitSpec::NORMAL) << t.name();
      const float std =
          t.name().find("proj.weight") != std::string::npos ? 0.02f / std::sqrt(6.0f) : 0.02f;
      EXPECT_FLOAT_EQ(t.init().scale(), std) << t.name();
    }
  }
  EXPECT_EQ(total, MakeModel(config)->num_parameters());
}

TEST(GptModelTest, CreateRejectsBadConfigs) {
  EXPECT_TRUE(GptModel::Create(TinyConfig()).ok());
  std::vector<GptConfig> bad(7, TinyConfig());
  bad[0].layers = 0;
  bad[1].heads = 3;  // Does not divide width 8.
  bad[2].heads = 0;
  bad[3].width = 0;
  bad[4].context = 0;
  bad[5].vocab = 0;
  bad[6].dropout = 1.0f;
  for (const GptConfig& config : bad) {
    EXPECT_EQ(GptModel::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  }
  GptConfig negative = TinyConfig();
  negative.dropout = -0.1f;
  EXPECT_EQ(GptModel::Create(negative).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace psrv

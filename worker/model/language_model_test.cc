// Tests of CreateLanguageModel and Sample over both model kinds, and of the MLP through the
// LanguageModel interface.
#include "worker/model/language_model.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/initializer.h"
#include "gtest/gtest.h"
#include "worker/model/gpt_model.h"
#include "worker/model/mlp_model.h"
#include "worker/model/model_factory.h"
#include "worker/model/sampling.h"

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

ModelSpec GptSpec(int layers, int heads, int width, int context, float dropout) {
  ModelSpec spec;
  spec.set_kind("gpt");
  spec.set_layers(layers);
  spec.set_heads(heads);
  spec.set_width(width);
  spec.set_context(context);
  spec.set_dropout(dropout);
  return spec;
}

// A model of each kind over 13 tokens with parameters that make the logits far from uniform.
struct Fixture {
  std::unique_ptr<LanguageModel> model;
  std::vector<float> params;
};

Fixture MakeGpt() {
  GptConfig config{/*layers=*/2,  /*heads=*/2,  /*width=*/16,
                   /*context=*/8, /*vocab=*/13, 0.0f};
  Fixture f{std::move(*CreateGptModel(config)), InitializeTables(GptTables(config, 3))};
  // Larger embeddings than the 0.02 init: sharper next-token distributions.
  for (size_t i = 0; i < 13 * 16; ++i) f.params[i] *= 20.0f;
  return f;
}

Fixture MakeMlp() {
  const ModelSpec spec = MlpSpec(4, 6, 10);
  Fixture f{std::move(*CreateLanguageModel(spec, 13)), InitializeTables(MlpTables(spec, 13, 3))};
  for (float& p : f.params) p *= 3.0f;
  return f;
}

TEST(CreateLanguageModelTest, BuildsEachKind) {
  absl::StatusOr<std::unique_ptr<LanguageModel>> mlp = CreateLanguageModel(MlpSpec(8, 24, 256), 65);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ((*mlp)->window(), 9);
  EXPECT_EQ((*mlp)->predictions_per_row(), 1);
  EXPECT_EQ((*mlp)->max_context(), 8);
  EXPECT_EQ((*mlp)->vocab_size(), 65);
  EXPECT_EQ((*mlp)->num_parameters(), 65u * 24 + 8 * 24 * 256 + 256 + 256 * 65 + 65);

  absl::StatusOr<std::unique_ptr<LanguageModel>> gpt =
      CreateLanguageModel(GptSpec(4, 4, 128, 64, 0.1f), 65);
  ASSERT_TRUE(gpt.ok()) << gpt.status();
  EXPECT_EQ((*gpt)->window(), 65);
  EXPECT_EQ((*gpt)->predictions_per_row(), 64);
  EXPECT_EQ((*gpt)->max_context(), 64);
  EXPECT_EQ((*gpt)->vocab_size(), 65);
  // nanoGPT's count for this config without position embeddings is 0.80M.
  const uint64_t C = 128, L = 4;
  EXPECT_EQ((*gpt)->num_parameters(), 65 * C + 64 * C + L * (12 * C * C + 13 * C) + 2 * C);

  ModelSpec unknown = MlpSpec(8, 24, 256);
  unknown.set_kind("rnn");
  EXPECT_EQ(CreateLanguageModel(unknown, 65).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateLanguageModel(GptSpec(4, 3, 128, 64, 0.0f), 65).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateLanguageModel(GptSpec(4, 4, 128, 64, 1.5f), 65).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateLanguageModel(MlpSpec(8, 24, 256), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The next-token distribution the model gives after `context` (its last max_context() tokens).
std::vector<float> LogitsAfter(Fixture& f, const std::vector<int32_t>& context) {
  std::vector<float> logits(f.model->vocab_size());
  const int take = std::min<int>(context.size(), f.model->max_context());
  f.model->NextTokenLogits(f.params.data(), context.data() + context.size() - take, take,
                           logits.data());
  return logits;
}

void CheckSampling(Fixture f) {
  LanguageModel& model = *f.model;
  const float* params = f.params.data();
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> a = Sample(model, params, prompt, 40, 1.0f, 0, 7);
  ASSERT_EQ(a.size(), 40u);
  EXPECT_EQ(Sample(model, params, prompt, 40, 1.0f, 0, 7), a);
  EXPECT_NE(Sample(model, params, prompt, 40, 1.0f, 0, 8), a);
  // top_k 0 and top_k >= V both mean all tokens.
  EXPECT_EQ(Sample(model, params, prompt, 40, 1.0f, model.vocab_size(), 7), a);
  EXPECT_EQ(Sample(model, params, prompt, 40, 1.0f, 1000, 7), a);
  for (int32_t t : a) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, model.vocab_size());
  }

  // top_k = 1 and temperature 0 are greedy: each token is its step's argmax.
  const std::vector<int32_t> greedy = Sample(model, params, prompt, 20, 1.0f, 1, 7);
  EXPECT_EQ(Sample(model, params, prompt, 20, 0.0f, 0, 99), greedy);
  std::vector<int32_t> context = prompt;
  for (int32_t t : greedy) {
    const std::vector<float> logits = LogitsAfter(f, context);
    EXPECT_EQ(t, std::max_element(logits.begin(), logits.end()) - logits.begin());
    context.push_back(t);
  }

  // top_k = 3 at a high temperature: every token is among its step's 3 most likely, and more than
  // one of them occurs.
  const int k = 3;
  const std::vector<int32_t> top3 = Sample(model, params, prompt, 60, 5.0f, k, 11);
  context = prompt;
  int not_argmax = 0;
  for (int32_t t : top3) {
    const std::vector<float> logits = LogitsAfter(f, context);
    const int higher =
        std::count_if(logits.begin(), logits.end(), [&](float l) { return l > logits[t]; });
    EXPECT_LT(higher, k) << "token " << t;
    not_argmax += higher > 0;
    context.push_back(t);
  }
  EXPECT_GT(not_argmax, 5);

  // Prompts: empty (starts from token 0), longer than the context (only its tail matters).
  EXPECT_EQ(Sample(model, params, {}, 10, 1.0f, 0, 3), Sample(model, params, {0}, 10, 1.0f, 0, 3));
  std::vector<int32_t> long_prompt(50, 4);
  std::vector<int32_t> tail(long_prompt.end() - model.max_context(), long_prompt.end());
  long_prompt[0] = 9;
  EXPECT_EQ(Sample(model, params, long_prompt, 10, 1.0f, 0, 3),
            Sample(model, params, tail, 10, 1.0f, 0, 3));
  EXPECT_TRUE(Sample(model, params, prompt, 0, 1.0f, 0, 3).empty());
}

TEST(SampleTest, Gpt) { CheckSampling(MakeGpt()); }

TEST(SampleTest, Mlp) { CheckSampling(MakeMlp()); }

TEST(MlpLanguageModelTest, TokenApiMatchesByteApi) {
  const ModelSpec spec = MlpSpec(3, 4, 5);
  MlpModel model = *MlpModel::Create(spec);
  const std::vector<float> params = InitializeTables(MlpTables(spec, 256, 1));
  std::mt19937_64 rng(2);
  const int batch = 7;
  std::vector<uint8_t> bytes(batch * 4);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  const std::vector<int32_t> ids(bytes.begin(), bytes.end());
  std::vector<float> g_bytes(model.num_parameters()), g_ids(model.num_parameters());
  const float l_bytes = model.ForwardBackward(params.data(), bytes.data(), batch, g_bytes.data());
  const float l_ids = model.ForwardBackward(params.data(), ids.data(), batch, 123, g_ids.data());
  EXPECT_EQ(l_bytes, l_ids);
  EXPECT_EQ(g_bytes, g_ids);
  EXPECT_EQ(model.Loss(params.data(), bytes.data(), batch),
            model.Loss(params.data(), ids.data(), batch));
}

TEST(MlpLanguageModelTest, SmallVocabulary) {
  const ModelSpec spec = MlpSpec(3, 4, 5);
  MlpModel model = *MlpModel::Create(spec, 11);
  EXPECT_EQ(model.vocab_size(), 11);
  EXPECT_EQ(model.num_parameters(), 11u * 4 + 12 * 5 + 5 + 5 * 11 + 11);
  const std::vector<float> params = InitializeTables(MlpTables(spec, 11, 1));
  ASSERT_EQ(params.size(), model.num_parameters());
  // Loss of a row = cross-entropy of NextTokenLogits(inputs) against the target.
  const std::vector<int32_t> row = {3, 10, 0, 7};
  std::vector<float> logits(11);
  model.NextTokenLogits(params.data(), row.data(), 3, logits.data());
  double max = -1e300, sum = 0.0;
  for (float l : logits) max = std::max<double>(max, l);
  for (float l : logits) sum += std::exp(l - max);
  EXPECT_NEAR(model.Loss(params.data(), row.data(), 1), std::log(sum) + max - logits[7], 1e-5);
  // A short input is left-padded with token 0.
  std::vector<float> padded(11);
  const std::vector<int32_t> with_pad = {0, 0, 5};
  model.NextTokenLogits(params.data(), with_pad.data() + 2, 1, logits.data());
  model.NextTokenLogits(params.data(), with_pad.data(), 3, padded.data());
  EXPECT_EQ(logits, padded);
  // Ids outside the vocabulary: NaN loss and zero gradients.
  const std::vector<int32_t> bad = {3, 11, 0, 7};
  std::vector<float> grads(model.num_parameters(), 1.0f);
  EXPECT_TRUE(std::isnan(model.ForwardBackward(params.data(), bad.data(), 1, 0, grads.data())));
  EXPECT_EQ(*std::max_element(grads.begin(), grads.end()), 0.0f);
  EXPECT_TRUE(std::isnan(model.Loss(params.data(), bad.data(), 1)));
}

}  // namespace
}  // namespace psrv

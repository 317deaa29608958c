#include "worker/compute.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/initializer.h"
#include "common/model_layout.h"
#include "gtest/gtest.h"
#include "worker/model/tokenizer.h"
#include "worker/model/model_factory.h"

namespace psrv {
namespace {

struct Fixture {
  ModelSpec spec;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<LanguageModel> model;
  ByteToToken vocabulary;
  Corpus corpus = Corpus::FromText("");
  std::vector<float> params;

  Fixture() {
    std::string text;
    for (int i = 0; i < 50; ++i) text += "the quick brown fox jumps over the lazy dog. ";
    corpus = Corpus::FromText(text);
    spec.set_kind("mlp");
    spec.set_context(4);
    spec.set_embedding_dim(6);
    spec.set_hidden_dim(16);
    spec.set_tokenizer("char");
    spec.set_vocabulary(" .abcdefghijklmnopqrstuvwxyz");
    tokenizer = *CreateTokenizer(spec);
    model = *CreateLanguageModel(spec, tokenizer->vocab_size());
    vocabulary = ByteToTokenTable(*tokenizer);
    params = InitializeTables(*ModelTables(spec, 7));
  }
};

TEST(GradientComputerTest, AccumulatedMicroBatchesEqualOneBigBatch) {
  Fixture f;
  const size_t n = f.model->num_parameters();
  GradientComputer big(f.model.get(), &f.corpus, &f.vocabulary, 8, 11, 1);
  GradientComputer accumulated(f.model.get(), &f.corpus, &f.vocabulary, 4, 11, 2);
  EXPECT_EQ(big.tokens_per_step(), accumulated.tokens_per_step());
  std::vector<float> g_big(n), g_acc(n);
  const float loss_big = big.Compute(1, f.params.data(), g_big.data());
  const float loss_acc = accumulated.Compute(1, f.params.data(), g_acc.data());
  EXPECT_NEAR(loss_big, loss_acc, 1e-5);
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(g_big[i], g_acc[i], 1e-6) << i;
}

TEST(GradientComputerTest, AStepsGradientDependsOnlyOnSeedAndStep) {
  Fixture f;
  const size_t n = f.model->num_parameters();
  GradientComputer first(f.model.get(), &f.corpus, &f.vocabulary, 4, 5);
  GradientComputer resumed(f.model.get(), &f.corpus, &f.vocabulary, 4, 5);
  std::vector<float> a(n), b(n), c(n);
  for (uint64_t step = 1; step <= 3; ++step) first.Compute(step, f.params.data(), a.data());
  resumed.Compute(3, f.params.data(), b.data());  // A worker resumed at step 3.
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(a[i], b[i]) << i;
  resumed.Compute(4, f.params.data(), c.data());  // Another step draws other batches.
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) same += b[i] == c[i];
  EXPECT_LT(same, n);
}

TEST(GradientComputerTest, ValidationLossIsTheSameEachTime) {
  Fixture f;
  const float a = ValidationLoss(f.model.get(), f.params.data(), f.corpus, f.vocabulary, 4, 3);
  const float b = ValidationLoss(f.model.get(), f.params.data(), f.corpus, f.vocabulary, 4, 3);
  EXPECT_EQ(a, b);
  EXPECT_NEAR(a, std::log(28.0f), 1.0f);
}

}  // namespace
}  // namespace psrv

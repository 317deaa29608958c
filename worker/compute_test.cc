#include "worker/compute.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <memory>
#include <string>
#include <vector>

#include "common/bpe.h"
#include "common/initializer.h"
#include "common/job_spec.h"
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

// Equal texts; else where they first differ (not the whole corpus).
void ExpectSameText(const std::string& a, const std::string& b) {
  if (a == b) return;
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  ADD_FAILURE() << "sizes " << a.size() << " and " << b.size() << ", first difference at " << i
                << ": \"" << a.substr(i > 20 ? i - 20 : 0, 60) << "\" vs \""
                << b.substr(i > 20 ? i - 20 : 0, 60) << "\"";
}

// Tokenizer "bpe": each worker encodes its own bytes; the parts' tokens decode back to the split's
// text, and a file that is not UTF-8 fails naming itself.
TEST(LoadCorpusTest, BpeWorkersEncodeTheirOwnBytes) {
  std::string why;
  if (!BpeAvailable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
  JobSpec spec;
  spec.mutable_data()->set_path(std::string(std::getenv("TEST_SRCDIR")) +
                                "/psrv/tests/testdata/shakespeare_200k.txt");
  spec.mutable_data()->set_validation_fraction(0.1f);
  spec.mutable_model()->set_tokenizer("bpe");
  spec.mutable_model()->set_vocab_size(400);
  ASSERT_TRUE(FillVocabulary(&spec).ok());
  std::unique_ptr<Tokenizer> tokenizer = *CreateTokenizer(spec.model());
  std::ifstream in(spec.data().path(), std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  std::string decoded;
  for (int rank = 0; rank < 2; ++rank) {
    absl::StatusOr<Corpus> part = LoadCorpus(spec, rank, 2, Split::kTrain);
    ASSERT_TRUE(part.ok()) << part.status();
    ASSERT_TRUE(part->is_tokens());
    EXPECT_LT(part->size(), 90000u * 2 / 3);  // Fewer tokens than bytes.
    // Every window holds valid ids.
    std::mt19937_64 rng(1);
    std::vector<int32_t> rows(4 * 16);
    ByteToToken unused{};
    part->SampleTokens(rng, 4, 16, unused, rows.data());
    for (int32_t id : rows) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 400);
    }
    // The whole part, decoded.
    std::vector<int32_t> all(part->size());
    std::mt19937_64 once(0);
    part->SampleTokens(once, 1, static_cast<int>(part->size()), unused, all.data());
    decoded += tokenizer->Decode(all);
  }
  // The split is Corpus::Load's: 90% of the bytes, rounded down (0.1f is a little over 0.1).
  EXPECT_NEAR(static_cast<double>(decoded.size()), 180000.0, 1.0);
  ExpectSameText(decoded, file.substr(0, decoded.size()));
  absl::StatusOr<Corpus> validation = LoadCorpus(spec, 0, 1, Split::kValidation);
  ASSERT_TRUE(validation.ok()) << validation.status();
  std::vector<int32_t> all(validation->size());
  std::mt19937_64 once(0);
  ByteToToken unused{};
  validation->SampleTokens(once, 1, static_cast<int>(validation->size()), unused, all.data());
  ExpectSameText(tokenizer->Decode(all), file.substr(decoded.size()));

  const std::string latin1 = ::testing::TempDir() + "/latin1.txt";
  std::ofstream(latin1, std::ios::binary) << "caf\xe9 au lait\n" << std::string(100, 'x');
  spec.mutable_data()->set_path(latin1);
  absl::StatusOr<Corpus> bad = LoadCorpus(spec, 0, 1, Split::kTrain);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(latin1), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("byte 0xe9 at offset 3"), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace psrv

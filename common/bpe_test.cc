// Tests of BPE training and the SentencePiece model wrapper: exact vocabulary size, lossless round
// trips (spaces, newlines, characters never seen in training), and models that are refused.
#include "common/bpe.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

// A few hundred lines of varied English, enough for a few hundred merges.
std::string TrainingText() {
  const std::vector<std::string> words = {
      "the", "king", "queen", "speak", "hear", "what", "shall", "we", "do", "with", "this",
      "noble", "lord", "my", "heart", "is", "heavy", "and", "yet", "there", "was", "never",
      "such", "a", "night", "in", "rome", "citizen", "first", "second", "come", "away"};
  std::string text;
  unsigned state = 12345;
  for (int line = 0; line < 400; ++line) {
    const int n = 3 + line % 7;
    for (int i = 0; i < n; ++i) {
      state = state * 1103515245u + 12345u;
      if (i > 0) text += ' ';
      text += words[(state >> 16) % words.size()];
    }
    text += line % 3 == 0 ? ".\n" : ",\n";
  }
  return text;
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = std::string(::testing::TempDir()) + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// Every test: SentencePiece is not loadable in AddressSanitizer builds (bpe.h).
class BpeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!BpeAvailable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
  }
};

std::unique_ptr<BpeModel> TrainAndLoad(const std::string& text, int vocab_size) {
  const std::string path = WriteTemp("bpe_train.txt", text);
  std::string serialized;
  const std::string error = TrainBpe(path, text.size(), vocab_size, &serialized);
  EXPECT_EQ(error, "");
  std::string load_error;
  std::unique_ptr<BpeModel> model = BpeModel::Load(serialized, &load_error);
  EXPECT_NE(model, nullptr) << load_error;
  return model;
}

TEST_F(BpeTest, TrainsTheExactVocabularyAndRoundTripsText) {
  const std::string text = TrainingText();
  std::unique_ptr<BpeModel> model = TrainAndLoad(text, 320);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->vocab_size(), 320);
  const std::vector<int32_t> ids = model->Encode(text);
  EXPECT_LT(ids.size(), text.size() * 2 / 3) << "merges should make tokens longer than a byte";
  for (int32_t id : ids) {
    EXPECT_GE(id, 1);  // Never <unk>: byte fallback covers everything.
    EXPECT_LT(id, 320);
  }
  EXPECT_EQ(model->Decode(ids), text);
  EXPECT_EQ(model->Piece(model->Encode("\n").at(0)), "\n");
}

TEST_F(BpeTest, RoundTripsWhatTrainingNeverSaw) {
  std::unique_ptr<BpeModel> model = TrainAndLoad(TrainingText(), 300);
  ASSERT_NE(model, nullptr);
  for (const std::string& text :
       {std::string(" leading space"), std::string("two  spaces\tand a tab "), std::string("\n\n\n"),
        std::string("caf\xc3\xa9 \xe2\x82\xac 5 \xf0\x9f\x98\x80"), std::string("ZQX{}~"),
        std::string("")}) {
    EXPECT_EQ(model->Decode(model->Encode(text)), text) << text;
  }
  // Ids out of range are skipped.
  std::vector<int32_t> ids = model->Encode("the king");
  std::vector<int32_t> with_bad = ids;
  with_bad.insert(with_bad.begin(), -1);
  with_bad.push_back(300);
  EXPECT_EQ(model->Decode(with_bad), "the king");
}

TEST_F(BpeTest, RefusesBadVocabularySizesAndFiles) {
  const std::string path = WriteTemp("bpe_small.txt", TrainingText());
  std::string model;
  EXPECT_NE(TrainBpe(path, 1 << 20, 258, &model).find("259..65536"), std::string::npos);
  EXPECT_NE(TrainBpe(path, 1 << 20, 65537, &model).find("259..65536"), std::string::npos);
  EXPECT_NE(TrainBpe("/nonexistent/file.txt", 1 << 20, 300, &model).find("/nonexistent/file.txt"),
            std::string::npos);
  // Far more pieces than this text can make.
  const std::string too_many = TrainBpe(path, 1 << 20, 60000, &model);
  EXPECT_NE(too_many.find("failed"), std::string::npos) << too_many;
  EXPECT_TRUE(model.empty());
}

TEST_F(BpeTest, RefusesWhatIsNotAByteFallbackModel) {
  std::string error;
  EXPECT_EQ(BpeModel::Load("", &error), nullptr);
  EXPECT_NE(error, "");
  error.clear();
  EXPECT_EQ(BpeModel::Load("\x0a\x05garbage and more garbage", &error), nullptr);
  EXPECT_NE(error, "");
}

TEST_F(BpeTest, TrainsOnlyOnTheFirstBytes) {
  // The second half holds words the first half never has: with a limit of the first half, no
  // piece spells them.
  std::string text = TrainingText();
  const uint64_t half = text.size();
  for (int i = 0; i < 300; ++i) text += "zyzzyva quokka\n";
  const std::string path = WriteTemp("bpe_limit.txt", text);
  std::string serialized;
  ASSERT_EQ(TrainBpe(path, half, 300, &serialized), "");
  std::string error;
  std::unique_ptr<BpeModel> model = BpeModel::Load(serialized, &error);
  ASSERT_NE(model, nullptr) << error;
  EXPECT_GE(model->Encode("quokka").size(), 4u);
  EXPECT_EQ(model->Decode(model->Encode("zyzzyva quokka")), "zyzzyva quokka");
}

}  // namespace
}  // namespace psrv

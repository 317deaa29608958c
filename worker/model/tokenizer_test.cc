// Tests of the byte, character and BPE tokenizers: round trips, vocabularies and errors.
#include "worker/model/tokenizer.h"

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/bpe.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(ByteTokenizerTest, RoundTripsEveryByte) {
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(all);
  ASSERT_TRUE(ids.ok()) << ids.status();
  for (int b = 0; b < 256; ++b) EXPECT_EQ((*ids)[b], b);
  EXPECT_EQ(tokenizer.Decode(*ids), all);
  EXPECT_TRUE(tokenizer.Encode("")->empty());
  // Out-of-range ids are skipped.
  EXPECT_EQ(tokenizer.Decode({104, -1, 105, 256}), "hi");
}

TEST(CharTokenizerTest, FromTextSortsDistinctBytes) {
  const CharTokenizer tokenizer = CharTokenizer::FromText("hello world\n");
  EXPECT_EQ(tokenizer.vocabulary(), "\n dehlorw");
  EXPECT_EQ(tokenizer.vocab_size(), 9);
  EXPECT_EQ(*tokenizer.Encode("\n"), std::vector<int32_t>{0});
  EXPECT_EQ(*tokenizer.Encode("hello"), (std::vector<int32_t>{4, 3, 5, 5, 6}));
  EXPECT_EQ(tokenizer.Decode({4, 3, 5, 5, 6, 1, 8, 6, 7, 5, 2, 0}), "hello world\n");
}

TEST(CharTokenizerTest, RoundTripsItsCorpus) {
  std::string text = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
  text += "caf\xc3\xa9 \xff\x01";  // Non-ASCII bytes are characters too; ids follow unsigned order.
  const CharTokenizer tokenizer = CharTokenizer::FromText(text);
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(tokenizer.Decode(*ids), text);
  EXPECT_EQ(tokenizer.vocabulary().front(), '\x01');
  EXPECT_EQ(tokenizer.vocabulary().back(), '\xff');
  for (int32_t id : *ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tokenizer.vocab_size());
  }
}

TEST(CharTokenizerTest, CreateSortsAndChecksTheVocabulary) {
  absl::StatusOr<CharTokenizer> tokenizer = CharTokenizer::Create("cab");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocabulary(), "abc");
  EXPECT_EQ(*tokenizer->Encode("cab"), (std::vector<int32_t>{2, 0, 1}));
  // The same vocabulary from text and from its string agree.
  EXPECT_EQ(CharTokenizer::FromText("abcabc").vocabulary(), tokenizer->vocabulary());

  EXPECT_EQ(CharTokenizer::Create("").status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status repeated = CharTokenizer::Create("abca").status();
  EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(repeated.message().find("'a'"), std::string::npos) << repeated;
}

TEST(CharTokenizerTest, EncodeNamesTheFirstUnknownCharacterAndItsOffset) {
  const CharTokenizer tokenizer = CharTokenizer::FromText("abc ");
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode("abc cab xyz");
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("'x'"), std::string::npos) << ids.status();
  EXPECT_NE(ids.status().message().find("offset 8"), std::string::npos) << ids.status();
  // Unprintable bytes are shown in hex.
  ids = tokenizer.Encode("ab\ncd");
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("0x0a"), std::string::npos) << ids.status();
  EXPECT_NE(ids.status().message().find("offset 2"), std::string::npos) << ids.status();
  // Out-of-range ids are skipped by Decode.
  EXPECT_EQ(tokenizer.Decode({1, 4, -3, 3}), "ac");  // Vocabulary " abc".
}

TEST(CharTokenizerTest, EmptyTextGivesEmptyVocabulary) {
  const CharTokenizer tokenizer = CharTokenizer::FromText("");
  EXPECT_EQ(tokenizer.vocab_size(), 0);
  EXPECT_TRUE(tokenizer.Encode("")->empty());
  EXPECT_FALSE(tokenizer.Encode("a").ok());
}

TEST(CreateTokenizerTest, FollowsTheModelSpec) {
  ModelSpec spec;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = CreateTokenizer(spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 256);
  spec.set_tokenizer("byte");
  EXPECT_EQ((*CreateTokenizer(spec))->vocab_size(), 256);

  spec.set_tokenizer("char");
  spec.set_vocabulary("\n abc");
  tokenizer = CreateTokenizer(spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 5);
  EXPECT_EQ(*(*tokenizer)->Encode("a b\n"), (std::vector<int32_t>{2, 1, 3, 0}));

  spec.set_vocabulary("");
  EXPECT_EQ(CreateTokenizer(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.set_vocabulary("aa");
  EXPECT_EQ(CreateTokenizer(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.set_tokenizer("bpe");
  EXPECT_EQ(CreateTokenizer(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IdTokenizerTest, WritesAndReadsIdsAsNumbers) {
  IdTokenizer tokenizer(50304);
  EXPECT_EQ(tokenizer.vocab_size(), 50304);
  // Ids out of range are left out.
  EXPECT_EQ(tokenizer.Decode({15496, 11, 995, 50304, -1}), "15496 11 995");
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(" 15496 11\n995 ");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{15496, 11, 995}));
  EXPECT_EQ(tokenizer.Encode("12 x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokenizer.Encode("50304").status().code(), absl::StatusCode::kInvalidArgument);
  ModelSpec spec;
  spec.set_tokenizer("ids");
  EXPECT_EQ(CreateTokenizer(spec).status().code(), absl::StatusCode::kInvalidArgument);  // No size.
  spec.set_vocab_size(65);
  absl::StatusOr<std::unique_ptr<Tokenizer>> created = CreateTokenizer(spec);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ((*created)->vocab_size(), 65);
}

}  // namespace
}  // namespace psrv

namespace psrv {
namespace {

// A BPE model of `pieces` trained on a few hundred lines of text; "" where SentencePiece cannot
// be loaded (AddressSanitizer builds).
std::string TrainSmallBpeModel(int pieces) {
  std::string text;
  const char* words[] = {"to", "be", "or", "not", "that", "is", "the", "question", "whether",
                         "tis", "nobler", "in", "mind", "suffer", "slings", "arrows"};
  for (int line = 0; line < 300; ++line) {
    for (int i = 0; i < 6; ++i) text += std::string(words[(line * 7 + i * 3) % 16]) + " ";
    text += "\n";
  }
  const std::string path = ::testing::TempDir() + "/bpe_words.txt";
  std::ofstream(path) << text;
  std::string model;
  EXPECT_EQ(TrainBpe(path, text.size(), pieces, &model), "");
  return model;
}

TEST(BpeTokenizerTest, RoundTripsUtf8AndRefusesOtherBytes) {
  std::string why;
  if (!BpeAvailable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
  ModelSpec spec;
  spec.set_tokenizer("bpe");
  spec.set_vocabulary(TrainSmallBpeModel(280));
  spec.set_vocab_size(280);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = CreateTokenizer(spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 280);
  for (const std::string text : {"to be or not to be\n", "  Whether 'tis\n\nnobler ",
                                 "na\xc3\xafve \xe2\x80\x94 \xf0\x9f\x8e\xad", ""}) {
    absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ((*tokenizer)->Decode(*ids), text);
  }
  EXPECT_LT((*tokenizer)->Encode("to be or not to be")->size(), 18u);  // Some bytes merged.
  absl::StatusOr<std::vector<int32_t>> bad = (*tokenizer)->Encode("ok\xff");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("byte 0xff at offset 2 is not valid UTF-8"),
            std::string::npos)
      << bad.status();

  // The model and the size must agree; a model must be one.
  spec.set_vocab_size(281);
  EXPECT_EQ(CreateTokenizer(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.set_vocabulary("not a model");
  EXPECT_EQ(CreateTokenizer(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace psrv

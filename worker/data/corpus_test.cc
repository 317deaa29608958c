// Tests of Corpus: file partitioning across workers, window sampling and errors.
#include "worker/data/corpus.h"

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

// Writes `contents` to a fresh file under TEST_TMPDIR and returns its path.
std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

// `n` bytes of every value 0..255 (so NULs and high bytes survive the round trip).
std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

TEST(CorpusTest, PartsCoverTheFileExactlyOnce) {
  for (size_t n : {100u, 1001u, 4099u}) {
    const std::string contents = RandomBytes(n, n);
    const std::string path = WriteTempFile(absl::StrCat("partition_", n), contents);
    for (int m : {1, 2, 3, 7}) {
      std::string joined;
      uint64_t expected_begin = 0;
      for (int rank = 0; rank < m; ++rank) {
        absl::StatusOr<Corpus> part = Corpus::Load(path, rank, m);
        ASSERT_TRUE(part.ok()) << part.status();
        // Parts are contiguous, in rank order, and differ in size by at most one byte.
        EXPECT_EQ(part->begin_offset(), expected_begin) << "n=" << n << " m=" << m << " r=" << rank;
        EXPECT_GE(part->size(), n / m);
        EXPECT_LE(part->size(), n / m + 1);
        EXPECT_EQ(part->text(), contents.substr(part->begin_offset(), part->size()));
        expected_begin += part->size();
        joined += part->text();
      }
      EXPECT_EQ(joined, contents) << "n=" << n << " m=" << m;
    }
  }
}

TEST(CorpusTest, WindowsAreSubstringsOfThePart) {
  const std::string contents = RandomBytes(3000, 1);
  const std::string path = WriteTempFile("windows", contents);
  const Corpus part = *Corpus::Load(path, 1, 3);  // Bytes [1000, 2000).
  const std::string rest = contents.substr(0, 1000) + contents.substr(2000);
  const int batch = 200, window = 9;
  ASSERT_TRUE(part.CheckWindow(window).ok());
  std::vector<uint8_t> windows(batch * window);
  std::mt19937_64 rng(5);
  part.SampleBatch(rng, batch, window, windows.data());
  for (int b = 0; b < batch; ++b) {
    const std::string w(reinterpret_cast<const char*>(windows.data()) + b * window, window);
    EXPECT_NE(part.text().find(w), std::string::npos) << "window " << b;
    EXPECT_EQ(rest.find(w), std::string::npos) << "window " << b;  // Random bytes: no false hits.
  }
}

TEST(CorpusTest, SamplingReachesEveryStartIncludingTheLast) {
  const Corpus corpus = Corpus::FromText("abcdef");
  EXPECT_EQ(corpus.begin_offset(), 0u);
  std::vector<uint8_t> windows(2 * 300);
  std::mt19937_64 rng(3);
  corpus.SampleBatch(rng, 300, 2, windows.data());
  std::vector<int> starts(5, 0);
  for (int b = 0; b < 300; ++b) ++starts[windows[2 * b] - 'a'];
  for (int count : starts) EXPECT_GT(count, 30);  // ~60 each.
  // A window as long as the text is the whole text.
  corpus.SampleBatch(rng, 1, 6, windows.data());
  EXPECT_EQ(std::string(windows.begin(), windows.begin() + 6), "abcdef");
}

TEST(CorpusTest, SamplingIsDeterministicPerSeed) {
  const Corpus corpus = Corpus::FromText(RandomBytes(500, 2));
  std::vector<uint8_t> a(64 * 9), b(64 * 9), c(64 * 9);
  std::mt19937_64 rng_a(42), rng_b(42), rng_c(43);
  corpus.SampleBatch(rng_a, 64, 9, a.data());
  corpus.SampleBatch(rng_b, 64, 9, b.data());
  corpus.SampleBatch(rng_c, 64, 9, c.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // The next batch from the same stream differs from the first.
  corpus.SampleBatch(rng_a, 64, 9, a.data());
  EXPECT_NE(a, b);
}

TEST(CorpusTest, CheckWindow) {
  const Corpus corpus = Corpus::FromText("0123456789");
  EXPECT_TRUE(corpus.CheckWindow(1).ok());
  EXPECT_TRUE(corpus.CheckWindow(10).ok());
  EXPECT_EQ(corpus.CheckWindow(11).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(corpus.CheckWindow(0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CorpusTest, LoadErrors) {
  const std::string path = WriteTempFile("errors", "0123456789");
  EXPECT_EQ(Corpus::Load(path + ".missing", 0, 1).status().code(), absl::StatusCode::kNotFound);
  const char* dir = std::getenv("TEST_TMPDIR");
  EXPECT_EQ(Corpus::Load(dir != nullptr ? dir : "/tmp", 0, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Corpus::Load(path, 2, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Corpus::Load(path, -1, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Corpus::Load(path, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  // 10 bytes over 5 workers is 2 each; over 6, some get 1.
  EXPECT_TRUE(Corpus::Load(path, 4, 5).ok());
  EXPECT_EQ(Corpus::Load(path, 0, 6).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Corpus::Load(WriteTempFile("empty", ""), 0, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace psrv

namespace psrv {
namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(CorpusSplitTest, TrainPartsAndValidationCoverTheFileOnce) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text.push_back(static_cast<char>('a' + i % 26));
  const std::string path = WriteTemp("split.txt", text);
  std::string joined;
  for (int rank = 0; rank < 3; ++rank) {
    absl::StatusOr<Corpus> part = Corpus::Load(path, rank, 3, Split::kTrain, 0.1);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(part->begin_offset(), joined.size());
    joined += part->text();
  }
  EXPECT_EQ(joined.size(), 900u);  // The first 90%.
  absl::StatusOr<Corpus> validation = Corpus::Load(path, 2, 3, Split::kValidation, 0.1);
  ASSERT_TRUE(validation.ok()) << validation.status();
  EXPECT_EQ(validation->begin_offset(), 900u);
  joined += validation->text();
  EXPECT_EQ(joined, text);
  EXPECT_EQ(Corpus::Load(path, 0, 1, Split::kTrain, 1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CorpusSplitTest, TokensFollowTheVocabulary) {
  Corpus corpus = Corpus::FromText("abcab");
  ByteToToken vocabulary;
  vocabulary.fill(-1);
  vocabulary['a'] = 0;
  vocabulary['b'] = 1;
  absl::Status missing = corpus.CheckVocabulary(vocabulary);
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.message().find("offset 2"), std::string::npos) << missing;
  vocabulary['c'] = 2;
  ASSERT_TRUE(corpus.CheckVocabulary(vocabulary).ok());
  std::mt19937_64 rng_bytes(5), rng_tokens(5);
  std::vector<uint8_t> bytes(4 * 3);
  std::vector<int32_t> tokens(4 * 3);
  corpus.SampleBatch(rng_bytes, 4, 3, bytes.data());
  corpus.SampleTokens(rng_tokens, 4, 3, vocabulary, tokens.data());
  for (size_t i = 0; i < bytes.size(); ++i) EXPECT_EQ(tokens[i], vocabulary[bytes[i]]);
}

// The bytes of `ids` as little-endian uint16, after an llm.c header saying `count` tokens (or
// none for nanoGPT's raw format), with `magic`.
std::string TokenFile(const std::vector<uint16_t>& ids, bool llmc, int32_t count = -1,
                      int32_t magic = 20240520) {
  std::string bytes;
  if (llmc) {
    int32_t header[256] = {};
    header[0] = magic;
    header[1] = 1;
    header[2] = count >= 0 ? count : static_cast<int32_t>(ids.size());
    bytes.append(reinterpret_cast<const char*>(header), sizeof(header));
  }
  bytes.append(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(uint16_t));
  return bytes;
}

TEST(CorpusTokensTest, NanoGptAndLlmcFilesSplitByTokenPosition) {
  std::vector<uint16_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<uint16_t>((i * 7919) % 50257);
  for (bool llmc : {false, true}) {
    const std::string path = WriteTempFile(llmc ? "tokens.llmc" : "tokens.nanogpt",
                                           TokenFile(ids, llmc));
    const Corpus::TokenFormat format =
        llmc ? Corpus::TokenFormat::kLlmcBin : Corpus::TokenFormat::kNanoGptBin;
    // 3 workers over the first 90%; the validation split is the last 100 tokens.
    std::vector<int32_t> seen;
    for (int rank = 0; rank < 3; ++rank) {
      absl::StatusOr<Corpus> part =
          Corpus::LoadTokens(path, format, 50257, rank, 3, Split::kTrain, 0.1);
      ASSERT_TRUE(part.ok()) << part.status();
      EXPECT_TRUE(part->is_tokens());
      EXPECT_EQ(part->size(), 300u);
      // A window covering the whole part is the part itself.
      std::mt19937_64 rng(1);
      std::vector<int32_t> rows(300);
      part->SampleTokens(rng, 1, 300, ByteToToken{}, rows.data());
      seen.insert(seen.end(), rows.begin(), rows.end());
    }
    absl::StatusOr<Corpus> validation =
        Corpus::LoadTokens(path, format, 50257, 0, 1, Split::kValidation, 0.1);
    ASSERT_TRUE(validation.ok()) << validation.status();
    std::vector<int32_t> rows(100);
    std::mt19937_64 rng(2);
    validation->SampleTokens(rng, 1, 100, ByteToToken{}, rows.data());
    seen.insert(seen.end(), rows.begin(), rows.end());
    EXPECT_EQ(seen, std::vector<int32_t>(ids.begin(), ids.end())) << (llmc ? "llmc" : "nanogpt");
  }
}

TEST(CorpusTokensTest, FilesThatDoNotFitAreRefusedNamingTheFile) {
  const std::vector<uint16_t> ids = {1, 2, 3, 4, 5, 6};
  auto load = [](const std::string& path, bool llmc, int vocab = 100) {
    return Corpus::LoadTokens(path, llmc ? Corpus::TokenFormat::kLlmcBin
                                         : Corpus::TokenFormat::kNanoGptBin,
                              vocab, 0, 1);
  };
  struct Case {
    std::string name;
    std::string contents;
    bool llmc;
    int vocab;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"odd.bin", TokenFile(ids, false) + "x", false, 100, "not a whole number of uint16"},
      {"magic.bin", TokenFile(ids, true, -1, 12345), true, 100, "not an llm.c token shard"},
      {"count.bin", TokenFile(ids, true, 7), true, 100, "the header says 7 tokens"},
      {"short.bin", "abc", true, 100, "too short for an llm.c header"},
      {"vocab.bin", TokenFile(ids, false), false, 5, "token 5 at position 4"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteTempFile(c.name, c.contents);
    absl::StatusOr<Corpus> corpus = load(path, c.llmc, c.vocab);
    ASSERT_FALSE(corpus.ok()) << c.name;
    EXPECT_EQ(corpus.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(corpus.status().message().find(path), std::string::npos) << corpus.status();
    EXPECT_NE(corpus.status().message().find(c.message), std::string::npos) << corpus.status();
  }
  EXPECT_EQ(load("/nonexistent/tokens.bin", false).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace psrv

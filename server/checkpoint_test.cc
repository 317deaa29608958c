#include "server/checkpoint.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace psrv {
namespace {

ShardCheckpoint Example() {
  ShardCheckpoint c;
  c.job_id = "job-7";
  c.table = "h.attn.qkv.weight";
  c.range.set_begin(100);
  c.range.set_end(164);
  c.version = 42;
  for (int i = 0; i < 64; ++i) c.values.push_back(0.25f * i);
  c.optimizer_state = {std::vector<float>(64, 1.0f), std::vector<float>(64, -2.0f)};
  return c;
}

std::string Path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

TEST(CheckpointTest, RoundTrip) {
  const std::string path = Path("roundtrip.ckpt");
  absl::StatusOr<uint32_t> crc = WriteShardCheckpoint(path, Example());
  ASSERT_TRUE(crc.ok()) << crc.status();
  absl::StatusOr<ShardCheckpoint> read = ReadShardCheckpoint(path, &*crc);
  ASSERT_TRUE(read.ok()) << read.status();
  const ShardCheckpoint want = Example();
  EXPECT_EQ(read->job_id, want.job_id);
  EXPECT_EQ(read->table, want.table);
  EXPECT_EQ(read->range.begin(), 100u);
  EXPECT_EQ(read->range.end(), 164u);
  EXPECT_EQ(read->version, 42u);
  EXPECT_EQ(read->values, want.values);
  EXPECT_EQ(read->optimizer_state, want.optimizer_state);
  // No temporary file is left behind.
  struct stat st;
  EXPECT_NE(stat((path + ".tmp." + std::to_string(getpid())).c_str(), &st), 0);
}

TEST(CheckpointTest, TruncatedAndFlippedFilesAreDataLoss) {
  const std::string path = Path("corrupt.ckpt");
  ASSERT_TRUE(WriteShardCheckpoint(path, Example()).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (size_t cut : {size_t{0}, size_t{5}, bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, cut);
    EXPECT_EQ(ReadShardCheckpoint(path).status().code(), absl::StatusCode::kDataLoss) << cut;
  }
  for (size_t at : {size_t{3}, size_t{20}, bytes.size() / 2, bytes.size() - 2}) {
    std::string flipped = bytes;
    flipped[at] ^= 0x10;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << flipped;
    EXPECT_EQ(ReadShardCheckpoint(path).status().code(), absl::StatusCode::kDataLoss) << at;
  }
  // Intact again, but not the file the manifest recorded.
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  EXPECT_TRUE(ReadShardCheckpoint(path).ok());
  const uint32_t wrong = 12345;
  EXPECT_EQ(ReadShardCheckpoint(path, &wrong).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CheckpointTest, MissingFileIsNotFoundAndBadInputIsRejected) {
  EXPECT_EQ(ReadShardCheckpoint(Path("nope.ckpt")).status().code(), absl::StatusCode::kNotFound);
  ShardCheckpoint bad = Example();
  bad.values.pop_back();
  EXPECT_EQ(WriteShardCheckpoint(Path("bad.ckpt"), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteShardCheckpoint("/nonexistent-dir/x.ckpt", Example()).status().code(),
            absl::StatusCode::kInternal);
}

TEST(CheckpointTest, BytesRoundTripWithTheFilesCrcAndCorruptBytesAreDataLoss) {
  uint32_t crc = 0;
  absl::StatusOr<std::string> bytes = EncodeShardCheckpoint(Example(), &crc);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::string path = Path("bytes.ckpt");
  ASSERT_EQ(*WriteShardCheckpoint(path, Example()), crc);  // The file holds the same bytes.
  absl::StatusOr<ShardCheckpoint> decoded = DecodeShardCheckpoint(*bytes, "in memory", &crc);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->values, Example().values);
  EXPECT_EQ(decoded->optimizer_state, Example().optimizer_state);
  EXPECT_EQ(decoded->version, 42u);
  std::string flipped = *bytes;
  flipped[flipped.size() / 2] ^= 1;
  const absl::Status corrupt = DecodeShardCheckpoint(flipped, "in memory").status();
  EXPECT_EQ(corrupt.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(corrupt.message().find("in memory"), absl::string_view::npos) << corrupt;
  EXPECT_EQ(DecodeShardCheckpoint(bytes->substr(0, 10), "x").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(CheckpointTest, RewriteReplacesAtomically) {
  const std::string path = Path("rewrite.ckpt");
  ShardCheckpoint c = Example();
  ASSERT_TRUE(WriteShardCheckpoint(path, c).ok());
  c.version = 43;
  c.values[0] = 99.0f;
  ASSERT_TRUE(WriteShardCheckpoint(path, c).ok());
  absl::StatusOr<ShardCheckpoint> read = ReadShardCheckpoint(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->version, 43u);
  EXPECT_EQ(read->values[0], 99.0f);
}

}  // namespace
}  // namespace psrv

#include "common/safetensors.h"

#include <fstream>

#include "gtest/gtest.h"

namespace psrv {
namespace {

std::string Path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

TEST(SafetensorsTest, RoundTripWithNamesShapesAndMetadata) {
  std::vector<NamedTensor> tensors = {
      {"wte", {3, 2}, {1, 2, 3, 4, 5, 6}},
      {"h.ln1.weight", {2, 1}, {0.5f, -0.5f}},
      {"lnf.bias", {1}, {7}},
  };
  const std::string path = Path("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"job_id", "job-1"}, {"step", "100"}}).ok());
  std::map<std::string, std::string> metadata;
  absl::StatusOr<std::vector<NamedTensor>> read = ReadSafetensors(path, &metadata);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*read)[i].name, tensors[i].name);
    EXPECT_EQ((*read)[i].shape, tensors[i].shape);
    EXPECT_EQ((*read)[i].values, tensors[i].values);
  }
  EXPECT_EQ(metadata["job_id"], "job-1");
  EXPECT_EQ(metadata["step"], "100");
  // The data starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t length = 0;
  in.read(reinterpret_cast<char*>(&length), 8);
  EXPECT_EQ((8 + length) % 8, 0u);
}

TEST(SafetensorsTest, BadInputIsRejected) {
  EXPECT_EQ(WriteSafetensors(Path("x.safetensors"), {{"a", {2}, {1}}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(Path("x.safetensors"), {{"a", {1}, {1}}, {"a", {1}, {2}}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadSafetensors(Path("missing.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
  const std::string garbage = Path("garbage.safetensors");
  std::ofstream(garbage, std::ios::binary) << "\x10\0\0\0\0\0\0\0{not json";
  EXPECT_EQ(ReadSafetensors(garbage).status().code(), absl::StatusCode::kInvalidArgument);
  // A BF16 tensor is reported, not misread.
  const std::string header = R"({"t":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}})";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + "ab";
  std::ofstream(Path("bf16.safetensors"), std::ios::binary) << bytes;
  absl::Status status = ReadSafetensors(Path("bf16.safetensors")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("only F32"), std::string::npos) << status;
}

}  // namespace
}  // namespace psrv

#include "server/gradient_check.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

// Copies `bytes` (from an odd address, as a payload in gRPC's buffers may be) in pieces of
// `piece` bytes through CopyCheckingFinite; returns what it said, and the copy in `out`.
FiniteCheck CopyInPieces(const std::vector<char>& bytes, DType dtype, size_t piece,
                         std::vector<char>* out) {
  std::vector<char> unaligned(bytes.size() + 1);
  std::memcpy(unaligned.data() + 1, bytes.data(), bytes.size());
  out->assign(bytes.size(), 0);
  CopyCheckingFinite copy(out->data(), dtype);
  for (size_t at = 0; at < bytes.size(); at += piece) {
    copy.Add(unaligned.data() + 1 + at, std::min(piece, bytes.size() - at), at);
  }
  return copy.result();
}

template <typename T>
std::vector<char> Bytes(const std::vector<T>& values) {
  std::vector<char> bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

TEST(GradientCheckTest, CopyingChecksEveryValueWhereverThePiecesEnd) {
  std::vector<float> fp32(300);
  std::vector<uint16_t> bf16(300);
  for (size_t i = 0; i < fp32.size(); ++i) {
    fp32[i] = 0.01f * static_cast<float>(i) - 1.0f;
    bf16[i] = FloatToBf16(fp32[i]);
  }
  for (size_t piece : {1, 3, 5, 64, 5000}) {
    std::vector<char> out;
    EXPECT_EQ(CopyInPieces(Bytes(fp32), FP32, piece, &out), FiniteCheck::kChecked) << piece;
    EXPECT_EQ(out, Bytes(fp32));
    EXPECT_EQ(CopyInPieces(Bytes(bf16), BF16, piece, &out), FiniteCheck::kChecked) << piece;
    EXPECT_EQ(out, Bytes(bf16));
    // A NaN or Inf anywhere (first, last, in the middle of a piece or split between two) leaves
    // the check to Shard::Push, which names it; the copy is still whole.
    for (size_t bad : {size_t{0}, size_t{1}, size_t{150}, fp32.size() - 1}) {
      std::vector<float> f = fp32;
      f[bad] = bad % 2 ? INFINITY : std::nanf("");
      std::vector<uint16_t> b = bf16;
      b[bad] = FloatToBf16(f[bad]);
      EXPECT_EQ(CopyInPieces(Bytes(f), FP32, piece, &out), FiniteCheck::kUnchecked) << bad;
      EXPECT_EQ(out, Bytes(f));
      EXPECT_EQ(CopyInPieces(Bytes(b), BF16, piece, &out), FiniteCheck::kUnchecked) << bad;
      EXPECT_EQ(out, Bytes(b));
    }
  }
}

TEST(GradientCheckTest, CheckFiniteNamesTheFirstBadKey) {
  std::vector<float> values(10, 1.0f);
  EXPECT_TRUE(CheckFinite("t", values.data(), FP32, values.size(), 100).ok());
  values[4] = std::nanf("");
  values[7] = INFINITY;
  absl::Status status = CheckFinite("t", values.data(), FP32, values.size(), 100);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("NaN at key 104"), std::string::npos) << status;
}

}  // namespace
}  // namespace psrv

#include "common/bf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(Bf16Test, ExactValuesRoundTrip) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.0f, 0.5f, 1024.0f, -3.140625f}) {
    EXPECT_EQ(Bf16ToFloat(FloatToBf16(v)), v) << v;
  }
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity()))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Bf16Test, RoundsToNearestEvenWithinHalfAnUlp) {
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  for (float v = -10.0f; v < 10.0f; v += 0.0137f) {
    const float r = Bf16ToFloat(FloatToBf16(v));
    EXPECT_LE(std::abs(r - v), std::abs(v) * (1.0f / 256) + 1e-30f) << v;
  }
}

TEST(Bf16Test, ArrayConversions) {
  std::vector<float> in = {1.5f, -0.25f, 7.0f};
  std::vector<uint16_t> mid(3);
  std::vector<float> out(3);
  FloatsToBf16(in.data(), 3, mid.data());
  Bf16ToFloats(mid.data(), 3, out.data());
  EXPECT_EQ(out, in);
}

TEST(Bf16Test, WidenerPutsValuesSplitBetweenPiecesTogether) {
  // A payload as gRPC's buffers may hold it: an odd offset (no alignment) and pieces of every
  // small size, so that values are split between pieces; and whole-buffer conversion alike.
  std::vector<uint16_t> values(1000);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = FloatToBf16(0.37f * static_cast<float>(i) - 100.0f);
  }
  values[17] = 0x7fc1;  // A NaN keeps its bits.
  std::vector<float> expected(values.size());
  Bf16ToFloats(values.data(), values.size(), expected.data());
  std::vector<char> bytes(1 + 2 * values.size());
  std::memcpy(bytes.data() + 1, values.data(), 2 * values.size());
  for (bool streaming : {false, true}) {
    for (size_t piece : {1, 2, 3, 7, 64, 2000}) {
      std::vector<float> out(values.size(), -1.0f);
      Bf16Widener widener(out.data(), streaming);
      for (size_t at = 0; at < 2 * values.size(); at += piece) {
        widener.Add(bytes.data() + 1 + at, std::min(piece, 2 * values.size() - at));
      }
      EXPECT_EQ(widener.count(), values.size()) << piece;
      EXPECT_EQ(std::memcmp(out.data(), expected.data(), 4 * values.size()), 0)
          << piece << (streaming ? " streaming" : "");
    }
  }
  std::vector<float> out(values.size());
  Bf16BytesToFloats(bytes.data() + 1, values.size(), out.data());
  EXPECT_EQ(std::memcmp(out.data(), expected.data(), 4 * values.size()), 0);
}

// The streamed widening writes the same floats, whatever the output's alignment (its plain-store
// head and tail) and the count's remainder, and nothing outside [out, out + count).
TEST(Bf16Test, StreamingWideningEqualsThePlainOneAtEveryAlignment) {
  std::vector<char> bytes(2 * 301 + 1);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 37 + 11);
  for (size_t shift = 0; shift < 4; ++shift) {
    for (size_t count : {0, 1, 3, 7, 8, 9, 15, 16, 17, 300}) {
      std::vector<float> plain(count + 8, -2.0f), streamed(count + 8, -2.0f);
      Bf16BytesToFloats(bytes.data() + 1, count, plain.data() + shift);
      Bf16BytesToFloatsStreaming(bytes.data() + 1, count, streamed.data() + shift);
      EXPECT_EQ(std::memcmp(plain.data(), streamed.data(), 4 * plain.size()), 0)
          << "shift " << shift << ", count " << count;
    }
  }
}

// The array conversions and norms run in the version built for this CPU (AVX2 or the x86-64
// baseline: common/vector_clones.h); each must give the scalar formula's bits, for every kind of
// float (zeros, denormals, NaNs with any payload, infinities) and every length remainder, also
// across FloatsToBf16SumOfSquares' blocks of 2048 values.
TEST(Bf16Test, VectorizedLoopsEqualTheScalarFormulaBitForBit) {
  std::vector<float> in(13001);
  uint32_t state = 12345;
  for (float& x : in) {
    state = state * 1664525u + 1013904223u;  // Every bit pattern is possible.
    std::memcpy(&x, &state, sizeof(x));
  }
  in[0] = 0.0f;
  in[1] = -0.0f;
  in[2] = std::numeric_limits<float>::infinity();
  in[3] = std::numeric_limits<float>::denorm_min();
  std::vector<float> finite;
  for (float x : in) {
    if (std::isfinite(x) && std::abs(x) < 1e30f) finite.push_back(x);
  }
  ASSERT_GT(finite.size(), 4200u);  // (About half of all bit patterns.)
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{33}, size_t{2048},
                   size_t{2049}, size_t{2056}, size_t{4103}, in.size()}) {
    std::vector<uint16_t> narrowed(n), narrowed2(n);
    FloatsToBf16(in.data(), n, narrowed.data());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(narrowed[i], FloatToBf16(in[i])) << i;
    std::vector<float> widened(n);
    Bf16ToFloats(narrowed.data(), n, widened.data());
    for (size_t i = 0; i < n; ++i) {
      const float expected = Bf16ToFloat(narrowed[i]);
      ASSERT_EQ(std::memcmp(&widened[i], &expected, 4), 0) << i;
    }
    const size_t m = std::min(n, finite.size());
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
      for (int k = 0; k < 8; ++k) lane[k] += static_cast<double>(finite[i + k]) * finite[i + k];
    }
    for (; i < m; ++i) lane[0] += static_cast<double>(finite[i]) * finite[i];
    const double sum =
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    EXPECT_EQ(SumOfSquares(finite.data(), m), sum) << n;
    EXPECT_EQ(FloatsToBf16SumOfSquares(finite.data(), m, narrowed2.data()), sum) << n;
    for (size_t j = 0; j < m; ++j) ASSERT_EQ(narrowed2[j], FloatToBf16(finite[j])) << j;
  }
}

}  // namespace
}  // namespace psrv

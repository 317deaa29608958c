#include "common/bf16.h"

#include <cmath>
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

}  // namespace
}  // namespace psrv

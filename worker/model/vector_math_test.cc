// Tests of the vectorised exp and tanh against libm.
#include "worker/model/vector_math.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

// Every 1/1024 over [lo, hi], plus hi.
std::vector<float> Grid(float lo, float hi) {
  std::vector<float> x;
  for (float v = lo; v < hi; v += 1.0f / 1024) x.push_back(v);
  x.push_back(hi);
  return x;
}

TEST(VectorMathTest, ExpShiftedMatchesLibm) {
  const std::vector<float> args = Grid(-86.0f, 87.5f);
  for (float shift : {0.0f, 0.5f, -0.25f}) {
    std::vector<float> x = args;
    ExpShiftedInPlace(x.data(), x.size(), shift);
    for (size_t i = 0; i < x.size(); ++i) {
      const double expected = std::exp(static_cast<double>(args[i] - shift));
      ASSERT_NEAR(x[i], expected, 3e-7 * expected) << "exp(" << args[i] << " - " << shift << ")";
    }
  }
}

TEST(VectorMathTest, ExpShiftedReturnsTheSum) {
  const std::vector<float> args = Grid(-10.0f, 10.0f);
  std::vector<float> x = args;
  const float sum = ExpShiftedInPlace(x.data(), x.size(), 2.0f);
  double expected_sum = 0.0;
  for (float a : args) expected_sum += std::exp(static_cast<double>(a) - 2.0);
  EXPECT_NEAR(sum, expected_sum, 1e-5 * expected_sum);
}

TEST(VectorMathTest, ExpShiftedHandlesTailsAndExtremes) {
  // Lengths that are not a multiple of the vector width; the sum must not count padding.
  for (size_t n = 0; n < 11; ++n) {
    std::vector<float> x(n, 1.0f);
    EXPECT_NEAR(ExpShiftedInPlace(x.data(), n, 1.0f), static_cast<float>(n), 1e-6f) << n;
    for (float v : x) EXPECT_NEAR(v, 1.0f, 1e-7f);
  }
  std::vector<float> x = {-1000.0f, -std::numeric_limits<float>::infinity(), 1000.0f,
                          std::nanf("")};
  ExpShiftedInPlace(x.data(), x.size(), 0.0f);
  EXPECT_LT(x[0], 1e-37f);
  EXPECT_GE(x[0], 0.0f);
  EXPECT_LT(x[1], 1e-37f);
  EXPECT_GT(x[2], 1e38f);
  EXPECT_TRUE(std::isfinite(x[2]));
  EXPECT_TRUE(std::isnan(x[3]));
}

TEST(VectorMathTest, TanhMatchesLibm) {
  std::vector<float> x = Grid(-20.0f, 20.0f);
  const std::vector<float> args = x;
  x.push_back(1000.0f);
  x.push_back(-1000.0f);
  x.push_back(std::nanf(""));
  TanhInPlace(x.data(), x.size());
  for (size_t i = 0; i < args.size(); ++i) {
    ASSERT_NEAR(x[i], std::tanh(static_cast<double>(args[i])), 3e-7) << "tanh(" << args[i] << ")";
  }
  EXPECT_EQ(x[args.size()], 1.0f);
  EXPECT_EQ(x[args.size() + 1], -1.0f);
  EXPECT_TRUE(std::isnan(x[args.size() + 2]));
}

}  // namespace
}  // namespace psrv

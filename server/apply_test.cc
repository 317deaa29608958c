#include "server/apply.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace psrv {
namespace {

OptimizerConfig Config(OptimizerKind kind, float lr, float momentum = 0) {
  OptimizerConfig c;
  c.set_kind(kind);
  c.set_learning_rate(lr);
  c.set_momentum(momentum);
  return c;
}

TEST(OptimizerTest, SgdSubtractsScaledGradient) {
  auto sgd = Optimizer::Create(Config(SGD, 0.5f), 3);
  float w[3] = {1, 2, 3};
  const float g[3] = {2, -4, 0};
  sgd->Apply(g, w);
  EXPECT_FLOAT_EQ(w[0], 0.0f);
  EXPECT_FLOAT_EQ(w[1], 4.0f);
  EXPECT_FLOAT_EQ(w[2], 3.0f);
  EXPECT_EQ(sgd->state_bytes(), 0u);
}

TEST(OptimizerTest, MomentumAccumulatesVelocity) {
  auto m = Optimizer::Create(Config(MOMENTUM, 0.1f, 0.9f), 1);
  float w = 1.0f;
  const float g = 1.0f;
  m->Apply(&g, &w);  // v = 1, w = 1 - 0.1
  EXPECT_FLOAT_EQ(w, 0.9f);
  m->Apply(&g, &w);  // v = 1.9, w = 0.9 - 0.19
  EXPECT_FLOAT_EQ(w, 0.71f);
  m->Apply(&g, &w);  // v = 2.71, w = 0.71 - 0.271
  EXPECT_NEAR(w, 0.439f, 1e-6);
  EXPECT_EQ(m->state_bytes(), sizeof(float));
}

TEST(OptimizerTest, ValidateRejectsBadConfigs) {
  EXPECT_TRUE(Optimizer::Validate(Config(SGD, 0.1f)).ok());
  EXPECT_TRUE(Optimizer::Validate(Config(MOMENTUM, 0.1f, 0.9f)).ok());
  EXPECT_EQ(Optimizer::Validate(Config(OPTIMIZER_UNSPECIFIED, 0.1f)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(SGD, 0.0f)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(SGD, std::numeric_limits<float>::quiet_NaN())).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(MOMENTUM, 0.1f, 1.0f)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(MOMENTUM, 0.1f, -0.1f)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace psrv

#include "server/apply.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

OptimizerConfig Config(OptimizerKind kind, float lr, float momentum = 0) {
  OptimizerConfig c;
  c.set_kind(kind);
  c.set_learning_rate(lr);
  c.set_momentum(momentum);
  c.set_beta1(0.9f);
  c.set_beta2(0.99f);
  c.set_epsilon(1e-8f);
  return c;
}

TableSpec Table(bool decay) {
  TableSpec t;
  t.set_name("t");
  t.set_weight_decay(decay);
  return t;
}

TEST(OptimizerTest, SgdSubtractsScaledGradient) {
  auto sgd = Optimizer::Create(Config(SGD, 0.5f), Table(false), 3);
  float w[3] = {1, 2, 3};
  const float g[3] = {2, -4, 0};
  sgd->Apply(g, w, 0, 3, 1);
  EXPECT_FLOAT_EQ(w[0], 0.0f);
  EXPECT_FLOAT_EQ(w[1], 4.0f);
  EXPECT_FLOAT_EQ(w[2], 3.0f);
  EXPECT_EQ(sgd->state_bytes(), 0u);
}

// A sparse table's rows with an all-zero gradient keep their weights and AdamW state (weight
// decay included); the others get AdamW's update, the same as a dense table's, in place or not.
TEST(OptimizerTest, LazyRowsLeaveRowsWithoutGradientAlone) {
  OptimizerConfig config = Config(ADAMW, 0.1f);
  config.set_weight_decay(0.5f);
  TableSpec sparse = Table(true);
  sparse.set_sparse_row_width(2);
  const size_t n = 6;  // 3 rows of 2.
  for (bool in_place : {true, false}) {
    auto lazy = Optimizer::Create(config, sparse, n);
    auto dense = Optimizer::Create(config, Table(true), n);
    std::vector<float> w = {1, 2, 3, 4, 5, 6}, w_dense = w;
    const float g1[6] = {0.5f, 0, 0, 0, -1, 0};  // Row 1 untouched; rows 0 and 2 partly zero.
    std::vector<float> out(n, -99.0f);
    if (in_place) {
      lazy->Apply(g1, w.data(), 0, n, 1);
    } else {
      lazy->ApplyScaled(g1, 1.0f, w.data(), out.data(), 0, n, 1);
      w = out;
    }
    dense->Apply(g1, w_dense.data(), 0, n, 1);
    EXPECT_EQ(w[2], 3.0f);  // Untouched row: not even decayed.
    EXPECT_EQ(w[3], 4.0f);
    for (size_t i : {0u, 1u, 4u, 5u}) EXPECT_EQ(w[i], w_dense[i]) << i;  // Touched rows.
    EXPECT_NE(w[1], 2.0f);  // Decayed: its row has a gradient.
    // Step 2 touches row 1 only: its moments start from zero, as if step 1 never ran for it.
    const float g2[6] = {0, 0, 0.25f, 0.25f, 0, 0};
    auto fresh = Optimizer::Create(config, Table(true), 2);
    std::vector<float> row1 = {3, 4};
    fresh->Apply(g2 + 2, row1.data(), 0, 2, 2);
    lazy->Apply(g2, w.data(), 0, n, 2);
    EXPECT_EQ(w[2], row1[0]);
    EXPECT_EQ(w[3], row1[1]);
  }
}

TEST(OptimizerTest, MomentumAccumulatesVelocity) {
  auto m = Optimizer::Create(Config(MOMENTUM, 0.1f, 0.9f), Table(false), 1);
  float w = 1.0f;
  const float g = 1.0f;
  m->Apply(&g, &w, 0, 1, 1);  // v = 1, w = 1 - 0.1
  EXPECT_FLOAT_EQ(w, 0.9f);
  m->Apply(&g, &w, 0, 1, 2);  // v = 1.9, w = 0.9 - 0.19
  EXPECT_FLOAT_EQ(w, 0.71f);
  m->Apply(&g, &w, 0, 1, 3);  // v = 2.71, w = 0.71 - 0.271
  EXPECT_NEAR(w, 0.439f, 1e-6);
  EXPECT_EQ(m->state_bytes(), sizeof(float));
}

// Reference AdamW in double precision.
TEST(OptimizerTest, AdamWMatchesReferenceWithDecayOnlyOnDecayedTables) {
  OptimizerConfig config = Config(ADAMW, 0.01f);
  config.set_weight_decay(0.1f);
  for (bool decay : {false, true}) {
    auto adam = Optimizer::Create(config, Table(decay), 2);
    float w[2] = {1.0f, -2.0f};
    double rw[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
    const float grads[3][2] = {{0.5f, -1.0f}, {0.1f, 2.0f}, {-0.3f, 0.0f}};
    for (int t = 1; t <= 3; ++t) {
      adam->Apply(grads[t - 1], w, 0, 2, t);
      for (int i = 0; i < 2; ++i) {
        const double g = grads[t - 1][i];
        m[i] = 0.9 * m[i] + 0.1 * g;
        v[i] = 0.99 * v[i] + 0.01 * g * g;
        const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.99, t));
        rw[i] -= 0.01 * (mh / (std::sqrt(vh) + 1e-8) + (decay ? 0.1 : 0.0) * rw[i]);
      }
      for (int i = 0; i < 2; ++i) EXPECT_NEAR(w[i], rw[i], 1e-6) << "t=" << t << " decay=" << decay;
    }
    EXPECT_EQ(adam->state_bytes(), 4 * sizeof(float));
  }
}

TEST(OptimizerTest, SubRangeTouchesOnlyItsKeysAndState) {
  auto m = Optimizer::Create(Config(MOMENTUM, 1.0f, 0.5f), Table(false), 4);
  float w[4] = {0, 0, 0, 0};
  const float g[2] = {1, 1};
  m->Apply(g, w, 2, 2, 1);
  EXPECT_FLOAT_EQ(w[0], 0.0f);
  EXPECT_FLOAT_EQ(w[1], 0.0f);
  EXPECT_FLOAT_EQ(w[2], -1.0f);
  m->Apply(g, w, 1, 2, 2);  // key 1 has no velocity yet, key 2 has 1.
  EXPECT_FLOAT_EQ(w[1], -1.0f);
  EXPECT_FLOAT_EQ(w[2], -1.0f - 1.5f);
}

TEST(ScheduleTest, WarmupThenCosineToTheFloor) {
  OptimizerConfig c = Config(SGD, 1e-3f);
  c.set_warmup_steps(100);
  c.set_decay_steps(2000);
  c.set_min_learning_rate(1e-4f);
  EXPECT_NEAR(ScheduledLearningRate(c, 1), 1e-5, 1e-9);
  EXPECT_NEAR(ScheduledLearningRate(c, 50), 5e-4, 1e-9);
  EXPECT_NEAR(ScheduledLearningRate(c, 100), 1e-3, 1e-9);
  EXPECT_NEAR(ScheduledLearningRate(c, 1050), 5.5e-4, 1e-7);  // Halfway: mean of peak and floor.
  EXPECT_NEAR(ScheduledLearningRate(c, 2000), 1e-4, 1e-9);
  EXPECT_NEAR(ScheduledLearningRate(c, 5000), 1e-4, 1e-9);
  // Monotone after warm-up.
  for (uint64_t t = 101; t < 2000; t += 37) {
    EXPECT_LE(ScheduledLearningRate(c, t + 37), ScheduledLearningRate(c, t));
  }
  OptimizerConfig constant = Config(SGD, 0.1f);
  EXPECT_FLOAT_EQ(ScheduledLearningRate(constant, 1), 0.1f);
  EXPECT_FLOAT_EQ(ScheduledLearningRate(constant, 100000), 0.1f);
}

TEST(OptimizerTest, ValidateRejectsBadConfigs) {
  EXPECT_TRUE(Optimizer::Validate(Config(SGD, 0.1f)).ok());
  EXPECT_TRUE(Optimizer::Validate(Config(MOMENTUM, 0.1f, 0.9f)).ok());
  EXPECT_TRUE(Optimizer::Validate(Config(ADAMW, 0.1f)).ok());
  EXPECT_EQ(Optimizer::Validate(Config(OPTIMIZER_UNSPECIFIED, 0.1f)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(SGD, 0.0f)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(SGD, std::numeric_limits<float>::quiet_NaN())).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(MOMENTUM, 0.1f, 1.0f)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Optimizer::Validate(Config(MOMENTUM, 0.1f, -0.1f)).code(),
            absl::StatusCode::kInvalidArgument);
  OptimizerConfig bad = Config(ADAMW, 0.1f);
  bad.set_beta2(1.0f);
  EXPECT_EQ(Optimizer::Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Config(ADAMW, 0.1f);
  bad.set_epsilon(0);
  EXPECT_EQ(Optimizer::Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Config(ADAMW, 0.1f);
  bad.set_weight_decay(-1);
  EXPECT_EQ(Optimizer::Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Config(SGD, 0.1f);
  bad.set_min_learning_rate(0.2f);
  EXPECT_EQ(Optimizer::Validate(bad).code(), absl::StatusCode::kInvalidArgument);
}

// The optimizers' loops run in the version built for this CPU (AVX2 or the x86-64 baseline:
// common/vector_clones.h); each must give the bits of the same formula in scalar float (built for
// the baseline here), in place and out of place, with a grad_scale, at every position of a vector.
TEST(OptimizerTest, VectorizedLoopsEqualTheScalarFormulaBitForBit) {
  constexpr size_t kCount = 1031;  // Not a multiple of any vector width.
  std::vector<float> w0(kCount), g(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    w0[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
    g[i] = std::cos(0.11f * static_cast<float>(i)) * (i % 5 == 0 ? 1e-4f : 2.0f);
  }
  const float scale = 0.731f;
  OptimizerConfig adam_config = Config(ADAMW, 0.01f);
  adam_config.set_weight_decay(0.1f);
  for (OptimizerKind kind : {SGD, MOMENTUM, ADAMW}) {
    const OptimizerConfig config = kind == ADAMW ? adam_config : Config(kind, 0.05f, 0.9f);
    for (bool in_place : {true, false}) {
      auto optimizer = Optimizer::Create(config, Table(true), kCount);
      std::vector<float> w = w0, next(kCount), ref = w0, m(kCount), v(kCount);
      for (uint64_t t = 1; t <= 3; ++t) {
        if (in_place) {
          optimizer->ApplyScaled(g.data(), scale, w.data(), w.data(), 0, kCount, t);
        } else {
          optimizer->ApplyScaled(g.data(), scale, w.data(), next.data(), 0, kCount, t);
          w = next;
        }
        const float lr = ScheduledLearningRate(config, t);
        const double t_d = static_cast<double>(t);
        const float c1 = 1.0f / (1.0f - static_cast<float>(std::pow(double{0.9f}, t_d)));
        const float c2 = 1.0f / (1.0f - static_cast<float>(std::pow(double{0.99f}, t_d)));
        for (size_t i = 0; i < kCount; ++i) {
          const float gi = g[i] * scale;
          if (kind == SGD) {
            ref[i] = ref[i] - lr * gi;
          } else if (kind == MOMENTUM) {
            m[i] = 0.9f * m[i] + gi;
            ref[i] = ref[i] - lr * m[i];
          } else {
            m[i] = 0.9f * m[i] + (1.0f - 0.9f) * gi;
            v[i] = 0.99f * v[i] + (1.0f - 0.99f) * gi * gi;
            ref[i] = ref[i] - lr * ((m[i] * c1) / (std::sqrt(v[i] * c2) + 1e-8f) + 0.1f * ref[i]);
          }
        }
        for (size_t i = 0; i < kCount; ++i) {
          ASSERT_EQ(w[i], ref[i]) << OptimizerKind_Name(kind) << " in_place=" << in_place
                                  << " t=" << t << " i=" << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace psrv

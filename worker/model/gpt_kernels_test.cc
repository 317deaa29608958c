// Each GPT kernel against a naive double-precision reference: the forward to ~1e-5, the backward to
// central differences of the reference (eps 1e-6) of J = sum(out * R) for a random R, i.e. with
// dout = R. Gradient tolerance: |analytic - numeric| <= 1e-3 * |numeric| + 1e-4 * max|numeric|.
#include "worker/model/gpt_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

using Doubles = std::vector<double>;

// Three threads; the loops of these small tests mostly run inline (below the parallel threshold),
// the GELU test's does not. The model tests check thread-count independence at scale.
ThreadPool* Pool() {
  static ThreadPool* pool = new ThreadPool(3);
  return pool;
}

using Floats = std::vector<float>;

Floats RandomFloats(size_t n, uint64_t seed, float std = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, std);
  Floats v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

Doubles ToDoubles(const Floats& v) { return Doubles(v.begin(), v.end()); }

// d(sum(f(x) * r))/dx by central differences.
Doubles NumericGrad(const std::function<Doubles(const Doubles&)>& f, Doubles x, const Floats& r) {
  constexpr double kEps = 1e-6;
  Doubles grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kEps;
    const Doubles plus = f(x);
    x[i] = saved - kEps;
    const Doubles minus = f(x);
    x[i] = saved;
    double d = 0.0;
    for (size_t j = 0; j < r.size(); ++j) d += (plus[j] - minus[j]) * r[j];
    grad[i] = d / (2 * kEps);
  }
  return grad;
}

void ExpectGradNear(const Floats& analytic, const Doubles& numeric, const char* what) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  double max = 0.0;
  for (double n : numeric) max = std::max(max, std::abs(n));
  ASSERT_GT(max, 0.0) << what << ": all-zero gradient tests nothing";
  for (size_t i = 0; i < numeric.size(); ++i) {
    ASSERT_LE(std::abs(analytic[i] - numeric[i]), 1e-3 * std::abs(numeric[i]) + 1e-4 * max)
        << what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric[i];
  }
}

void ExpectForwardNear(const Floats& out, const Doubles& reference, const char* what) {
  ASSERT_EQ(out.size(), reference.size()) << what;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_NEAR(out[i], reference[i], 1e-5 * std::max(1.0, std::abs(reference[i])))
        << what << "[" << i << "]";
  }
}

Floats Minus(const Floats& a, const Floats& b) {
  Floats d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// ---- Double-precision references ----

Doubles RefEmbedding(const std::vector<int32_t>& tokens, const Doubles& wte, const Doubles& wpe,
                     int B, int T, int C) {
  Doubles out(B * T * C);
  for (int bt = 0; bt < B * T; ++bt) {
    for (int c = 0; c < C; ++c) out[bt * C + c] = wte[tokens[bt] * C + c] + wpe[(bt % T) * C + c];
  }
  return out;
}

Doubles RefLayerNorm(const Doubles& x, const Doubles& w, const Doubles& b, int N, int C) {
  Doubles out(N * C);
  for (int r = 0; r < N; ++r) {
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < C; ++c) mean += x[r * C + c] / C;
    for (int c = 0; c < C; ++c) var += (x[r * C + c] - mean) * (x[r * C + c] - mean) / C;
    const double rstd = 1.0 / std::sqrt(var + 1e-5);
    for (int c = 0; c < C; ++c) out[r * C + c] = (x[r * C + c] - mean) * rstd * w[c] + b[c];
  }
  return out;
}

Doubles RefMatmul(const Doubles& x, const Doubles& w, const Doubles* bias, int N, int C, int OC) {
  Doubles out(N * OC);
  for (int r = 0; r < N; ++r) {
    for (int o = 0; o < OC; ++o) {
      double s = bias != nullptr ? (*bias)[o] : 0.0;
      for (int c = 0; c < C; ++c) s += x[r * C + c] * w[o * C + c];
      out[r * OC + o] = s;
    }
  }
  return out;
}

// mask: (B, NH, T, T) or empty for none.
Doubles RefAttention(const Doubles& qkv, const Floats& mask, int B, int T, int C, int NH) {
  const int hs = C / NH;
  Doubles out(B * T * C, 0.0);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * 3 * C + h * hs];
        Doubles w(t + 1);
        double max = -1e300;
        for (int t2 = 0; t2 <= t; ++t2) {
          const double* k = &qkv[(b * T + t2) * 3 * C + C + h * hs];
          double dot = 0.0;
          for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
          w[t2] = dot / std::sqrt(static_cast<double>(hs));
          max = std::max(max, w[t2]);
        }
        double sum = 0.0;
        for (int t2 = 0; t2 <= t; ++t2) sum += (w[t2] = std::exp(w[t2] - max));
        for (int t2 = 0; t2 <= t; ++t2) {
          double a = w[t2] / sum;
          if (!mask.empty()) a *= mask[((b * NH + h) * T + t) * T + t2];
          const double* v = &qkv[(b * T + t2) * 3 * C + 2 * C + h * hs];
          for (int i = 0; i < hs; ++i) out[(b * T + t) * C + h * hs + i] += a * v[i];
        }
      }
    }
  }
  return out;
}

Doubles RefGelu(const Doubles& x) {
  Doubles out(x.size());
  const double s = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = 0.5 * x[i] * (1.0 + std::tanh(s * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  }
  return out;
}

// Per-row losses (N).
Doubles RefCrossEntropy(const Doubles& logits, const std::vector<int32_t>& targets, int N, int V) {
  Doubles losses(N);
  for (int r = 0; r < N; ++r) {
    double max = -1e300, sum = 0.0;
    for (int v = 0; v < V; ++v) max = std::max(max, logits[r * V + v]);
    for (int v = 0; v < V; ++v) sum += std::exp(logits[r * V + v] - max);
    losses[r] = std::log(sum) + max - logits[r * V + targets[r]];
  }
  return losses;
}

// ---- Tests ----

TEST(GptKernelsTest, Embedding) {
  const int B = 2, T = 5, C = 8, V = 7;
  const std::vector<int32_t> tokens = {0, 3, 3, 6, 1, 2, 3, 0, 0, 5};  // (B, T), repeats
  const Floats wte = RandomFloats(V * C, 1), wpe = RandomFloats(T * C, 2);
  Floats out(B * T * C);
  EmbeddingForward(tokens.data(), wte.data(), wpe.data(), B, T, C, out.data(), Pool());
  ExpectForwardNear(out, RefEmbedding(tokens, ToDoubles(wte), ToDoubles(wpe), B, T, C), "out");

  const Floats dout = RandomFloats(B * T * C, 3);
  const Floats dwte_before = RandomFloats(V * C, 4);  // dwte accumulates.
  Floats dwte = dwte_before, dwpe(T * C, std::nanf(""));
  EmbeddingBackward(dout.data(), tokens.data(), B, T, C, dwte.data(), dwpe.data(), Pool());
  const Doubles wte_d = ToDoubles(wte), wpe_d = ToDoubles(wpe);
  ExpectGradNear(
      Minus(dwte, dwte_before),
      NumericGrad([&](const Doubles& x) { return RefEmbedding(tokens, x, wpe_d, B, T, C); }, wte_d,
                  dout),
      "dwte");
  ExpectGradNear(
      dwpe,
      NumericGrad([&](const Doubles& x) { return RefEmbedding(tokens, wte_d, x, B, T, C); }, wpe_d,
                  dout),
      "dwpe");
}

TEST(GptKernelsTest, LayerNorm) {
  // C = 70: more than one column block of the weight gradients, one of them partial.
  const int N = 6, C = 70;
  const Floats x = RandomFloats(N * C, 1, 2.0f), w = RandomFloats(C, 2), b = RandomFloats(C, 3);
  Floats out(N * C), mean(N), rstd(N);
  LayerNormForward(x.data(), w.data(), b.data(), N, C, out.data(), mean.data(), rstd.data(),
                   Pool());
  const Doubles xd = ToDoubles(x), wd = ToDoubles(w), bd = ToDoubles(b);
  ExpectForwardNear(out, RefLayerNorm(xd, wd, bd, N, C), "out");

  const Floats dout = RandomFloats(N * C, 4);
  const Floats dx_before = RandomFloats(N * C, 5);  // dinp accumulates.
  Floats dx = dx_before, dw(C, std::nanf("")), db(C, std::nanf(""));
  LayerNormBackward(dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C, dx.data(),
                    dw.data(), db.data(), Pool());
  ExpectGradNear(
      Minus(dx, dx_before),
      NumericGrad([&](const Doubles& v) { return RefLayerNorm(v, wd, bd, N, C); }, xd, dout),
      "dinp");
  ExpectGradNear(
      dw, NumericGrad([&](const Doubles& v) { return RefLayerNorm(xd, v, bd, N, C); }, wd, dout),
      "dweight");
  ExpectGradNear(
      db, NumericGrad([&](const Doubles& v) { return RefLayerNorm(xd, wd, v, N, C); }, bd, dout),
      "dbias");
}

// With OpenBLAS single-threaded the products are split over the pool in chunks of 64 rows: N and
// OC above 64 exercise the split of both the (N, .) products and the (OC, C) weight gradient.
void CheckMatmul(int N, int C, int OC) {
  const Floats x = RandomFloats(N * C, 1), w = RandomFloats(OC * C, 2), b = RandomFloats(OC, 3);
  const Doubles xd = ToDoubles(x), wd = ToDoubles(w), bd = ToDoubles(b);
  Floats out(N * OC);
  MatmulForward(x.data(), w.data(), b.data(), N, C, OC, out.data(), Pool());
  ExpectForwardNear(out, RefMatmul(xd, wd, &bd, N, C, OC), "out");
  MatmulForward(x.data(), w.data(), nullptr, N, C, OC, out.data(), Pool());
  ExpectForwardNear(out, RefMatmul(xd, wd, nullptr, N, C, OC), "out without bias");

  const Floats dout = RandomFloats(N * OC, 4);
  Floats dx(N * C, std::nanf("")), dw(OC * C, std::nanf("")), db(OC, std::nanf(""));
  MatmulBackward(dout.data(), x.data(), w.data(), N, C, OC, /*accumulate_dinp=*/false, dx.data(),
                 dw.data(), db.data(), Pool());
  const Doubles numeric_dx =
      NumericGrad([&](const Doubles& v) { return RefMatmul(v, wd, &bd, N, C, OC); }, xd, dout);
  ExpectGradNear(dx, numeric_dx, "dinp");
  ExpectGradNear(
      dw, NumericGrad([&](const Doubles& v) { return RefMatmul(xd, v, &bd, N, C, OC); }, wd, dout),
      "dweight");
  ExpectGradNear(
      db, NumericGrad([&](const Doubles& v) { return RefMatmul(xd, wd, &v, N, C, OC); }, bd, dout),
      "dbias");

  const Floats dx_before = RandomFloats(N * C, 5);
  dx = dx_before;
  MatmulBackward(dout.data(), x.data(), w.data(), N, C, OC, /*accumulate_dinp=*/true, dx.data(),
                 dw.data(), nullptr, Pool());
  ExpectGradNear(Minus(dx, dx_before), numeric_dx, "accumulated dinp");
}

TEST(GptKernelsTest, MatmulWithBias) {
  CheckMatmul(10, 8, 24);
  CheckMatmul(150, 8, 80);
}

TEST(GptKernelsTest, MatmulWithBiasSingleThreadedBlas) {
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  CheckMatmul(10, 8, 24);
  CheckMatmul(150, 8, 80);
  openblas_set_num_threads(blas_threads);
}

void CheckAttention(float dropout) {
  const int B = 2, T = 5, C = 8, NH = 2;
  const Floats qkv = RandomFloats(B * T * 3 * C, 1);
  Floats mask;  // (B, NH, T, T)
  if (dropout > 0.0f) {
    mask.resize(B * NH * T * T);
    DropoutMask(/*seed=*/9, /*stream=*/1, dropout, mask.size(), mask.data(), Pool());
  }
  const float* mask_ptr = mask.empty() ? nullptr : mask.data();
  Floats att(B * NH * T * T), att_dropped(B * NH * T * T), out(B * T * C);
  AttentionForward(qkv.data(), mask_ptr, B, T, C, NH, att.data(), att_dropped.data(), out.data(),
                   Pool());
  const Doubles qkv_d = ToDoubles(qkv);
  ExpectForwardNear(out, RefAttention(qkv_d, mask, B, T, C, NH), "out");
  for (int bh = 0; bh < B * NH; ++bh) {
    for (int t = 0; t < T; ++t) {
      double sum = 0.0;
      for (int t2 = 0; t2 < T; ++t2) {
        const float a = att[(bh * T + t) * T + t2];
        if (t2 > t) {
          EXPECT_EQ(a, 0.0f);
        }
        sum += a;
      }
      EXPECT_NEAR(sum, 1.0, 1e-6);
    }
  }

  const Floats dout = RandomFloats(B * T * C, 2);
  Floats datt(B * NH * T * T), dqkv(B * T * 3 * C, std::nanf(""));
  AttentionBackward(dout.data(), qkv.data(), att.data(), att_dropped.data(), mask_ptr, B, T, C, NH,
                    datt.data(), dqkv.data(), Pool());
  ExpectGradNear(dqkv,
                 NumericGrad([&](const Doubles& v) { return RefAttention(v, mask, B, T, C, NH); },
                             qkv_d, dout),
                 "dqkv");
}

TEST(GptKernelsTest, Attention) { CheckAttention(0.0f); }

TEST(GptKernelsTest, AttentionWithDropout) { CheckAttention(0.3f); }

TEST(GptKernelsTest, Gelu) {
  // Enough for the parallel loop (several chunks, a partial one last), over [-6, 6].
  const size_t n = 40000;
  Floats x(n);
  for (size_t i = 0; i < n; ++i) x[i] = -6.0f + 12.0f * i / (n - 1);
  Floats out(n), tanh_values(n);
  GeluForward(x.data(), n, out.data(), tanh_values.data(), Pool());
  const Doubles xd = ToDoubles(x);
  ExpectForwardNear(out, RefGelu(xd), "out");

  const Floats dout = RandomFloats(n, 2);
  Floats dx(n);
  GeluBackward(dout.data(), x.data(), tanh_values.data(), n, dx.data(), Pool());
  // Elementwise, so the numeric gradient is d gelu(x_i)/dx_i * dout_i.
  Doubles numeric(n);
  for (size_t i = 0; i < n; ++i) {
    const double eps = 1e-6;
    numeric[i] = (RefGelu({xd[i] + eps})[0] - RefGelu({xd[i] - eps})[0]) / (2 * eps) * dout[i];
  }
  ExpectGradNear(dx, numeric, "dinp");
  // In place (dinp aliasing dout) gives the same.
  Floats in_place = dout;
  GeluBackward(in_place.data(), x.data(), tanh_values.data(), n, in_place.data(), Pool());
  EXPECT_EQ(in_place, dx);
}

TEST(GptKernelsTest, SoftmaxCrossEntropy) {
  const int N = 6, V = 11;
  const Floats logits = RandomFloats(N * V, 1, 3.0f);
  const std::vector<int32_t> targets = {0, 10, 5, 5, 3, 7};
  Floats probs(N * V), losses(N);
  const float mean = SoftmaxCrossEntropyForward(logits.data(), targets.data(), N, V, probs.data(),
                                                losses.data(), Pool());
  const Doubles logits_d = ToDoubles(logits);
  const Doubles ref = RefCrossEntropy(logits_d, targets, N, V);
  ExpectForwardNear(losses, ref, "losses");
  double ref_mean = 0.0;
  for (double l : ref) ref_mean += l / N;
  EXPECT_NEAR(mean, ref_mean, 1e-5);
  for (int r = 0; r < N; ++r) {
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += probs[r * V + v];
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
  // Gradient of the mean loss: scale 1/N, i.e. R = 1/N per row.
  Floats dlogits(N * V);
  SoftmaxCrossEntropyBackward(probs.data(), targets.data(), N, V, 1.0f / N, dlogits.data(), Pool());
  ExpectGradNear(dlogits,
                 NumericGrad([&](const Doubles& v) { return RefCrossEntropy(v, targets, N, V); },
                             logits_d, Floats(N, 1.0f / N)),
                 "dlogits");
  // In place: logits -> probs -> dlogits in one buffer.
  Floats buffer = logits;
  SoftmaxCrossEntropyForward(buffer.data(), targets.data(), N, V, buffer.data(), losses.data(),
                             Pool());
  SoftmaxCrossEntropyBackward(buffer.data(), targets.data(), N, V, 1.0f / N, buffer.data(), Pool());
  EXPECT_EQ(buffer, dlogits);
}

TEST(GptKernelsTest, DropoutMask) {
  const size_t n = 100000;
  Floats a(n), b(n), other_stream(n), other_seed(n);
  DropoutMask(7, 3, 0.25f, n, a.data(), Pool());
  DropoutMask(7, 3, 0.25f, n, b.data(), Pool());
  DropoutMask(7, 4, 0.25f, n, other_stream.data(), Pool());
  DropoutMask(8, 3, 0.25f, n, other_seed.data(), Pool());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other_stream);
  EXPECT_NE(a, other_seed);
  size_t dropped = 0;
  for (float m : a) {
    ASSERT_TRUE(m == 0.0f || m == 1.0f / 0.75f) << m;
    dropped += m == 0.0f;
  }
  // Binomial(1e5, 0.25): standard deviation ~137.
  EXPECT_NEAR(static_cast<double>(dropped), 25000.0, 800.0);
  DropoutMask(7, 3, 0.0f, n, a.data(), Pool());
  EXPECT_EQ(*std::min_element(a.begin(), a.end()), 1.0f);
}

TEST(GptKernelsTest, ResidualAndMultiply) {
  const Floats a = {1, 2, 3}, b = {10, 20, 30}, mask = {0, 2, 1};
  Floats out(3);
  ResidualForward(a.data(), b.data(), nullptr, 3, out.data(), Pool());
  EXPECT_EQ(out, (Floats{11, 22, 33}));
  ResidualForward(a.data(), b.data(), mask.data(), 3, out.data(), Pool());
  EXPECT_EQ(out, (Floats{1, 42, 33}));
  Multiply(b.data(), mask.data(), 3, out.data(), Pool());
  EXPECT_EQ(out, (Floats{0, 40, 30}));
}

}  // namespace
}  // namespace psrv

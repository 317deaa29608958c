// Each CUDA kernel of kernels.h against a plain-loop CPU reference (the formulas of
// worker/model/gpt_kernels.cc) on the same inputs; bf16 inputs are rounded to bf16 on the host
// first, so that only the kernel's own arithmetic differs. Tolerances, |got - want| <= rel*|want|
// + abs*max|want|:
//   fp32 outputs of fp32 arithmetic (embedding, residual, LayerNorm statistics, losses, masks):
//     exact or rel 1e-5;
//   fp32 sums in another order (embedding/LayerNorm/bias gradients): rel 1e-4, abs 1e-5;
//   bf16 outputs (one rounding, 2^-9 relative): rel 1e-2, abs 1e-3.
// Tagged "gpu": skips without a GPU.
#include "worker/cuda/kernels.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/gpu_test_util.h"
#include "worker/cuda/token_buckets.h"

namespace psrv {
namespace cuda {
namespace {

using KernelsTest = GpuTest;

TEST_F(KernelsTest, DropoutMaskEqualsTheCpuMask) {
  const size_t n = 100003;
  for (float p : {0.0f, 0.1f, 0.5f}) {
    for (uint64_t stream : {0u, 7u}) {
      const uint64_t seed = 12345;
      DeviceBuffer mask = DeviceFilled<float>(n);
      ASSERT_EQ(DropoutMask(MakeDropout(seed, stream, p), n, mask.as<float>(), 0), cudaSuccess);
      const std::vector<float> got = ToHost<float>(mask, n);
      size_t dropped = 0;
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(got[i], HostDropoutMask(seed, stream, p, i)) << "p " << p << " at " << i;
        dropped += got[i] == 0.0f;
      }
      EXPECT_NEAR(static_cast<double>(dropped) / n, p, 0.01);
    }
  }
}

TEST_F(KernelsTest, ToBf16AndDropoutBf16) {
  const size_t n = 5000;
  const std::vector<float> x = RandomFloats(n, 1);
  const Dropout dropout = MakeDropout(3, 4, 0.25f);
  DeviceBuffer dx = ToDevice(x);
  DeviceBuffer out = DeviceFilled<bf16>(n);
  ASSERT_EQ(ToBf16(dx.as<float>(), dropout, n, out.as<bf16>(), 0), cudaSuccess);
  std::vector<float> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = x[i] * HostDropoutMask(3, 4, 0.25f, i);
  ExpectClose(Bf16ToHost(out, n), RoundToBf16(want), 0.0, 0.0, "ToBf16");  // one rounding: exact

  const std::vector<float> xb = RoundToBf16(x);
  DeviceBuffer dxb = ToDevice(ToBf16Vector(xb));
  ASSERT_EQ(DropoutBf16(dxb.as<bf16>(), dropout, n, out.as<bf16>(), 0), cudaSuccess);
  for (size_t i = 0; i < n; ++i) want[i] = xb[i] * HostDropoutMask(3, 4, 0.25f, i);
  ExpectClose(Bf16ToHost(out, n), RoundToBf16(want), 0.0, 0.0, "DropoutBf16");
}

TEST_F(KernelsTest, EmbeddingForward) {
  const int B = 3, T = 7, C = 40, V = 13;
  std::vector<int32_t> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * 5 + 3) % V;
  const std::vector<float> wte = RandomFloats(V * C, 2), wpe = RandomFloats((T + 2) * C, 3);
  DeviceBuffer dtokens = ToDevice(tokens), dwte = ToDevice(wte), dwpe = ToDevice(wpe);
  for (float p : {0.0f, 0.2f}) {
    DeviceBuffer out = DeviceFilled<float>(B * T * C);
    ASSERT_EQ(EmbeddingForward(dtokens.as<int32_t>(), dwte.as<float>(), dwpe.as<float>(), B, T, C,
                               MakeDropout(9, 0, p), out.as<float>(), 0),
              cudaSuccess);
    std::vector<float> want(B * T * C);
    for (int bt = 0; bt < B * T; ++bt) {
      for (int c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>(bt) * C + c;
        want[i] = (wte[tokens[bt] * C + c] + wpe[(bt % T) * C + c]) * HostDropoutMask(9, 0, p, i);
      }
    }
    ExpectClose(ToHost<float>(out, B * T * C), want, 0.0, 0.0, "EmbeddingForward");
  }
}

TEST_F(KernelsTest, EmbeddingBackward) {
  const int B = 4, T = 9, C = 300, V = 17;  // C > one block of threads
  std::vector<int32_t> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * i + 1) % V;
  tokens[0] = tokens[5] = tokens[20] = 2;  // repeated tokens
  const std::vector<float> dout = RandomFloats(B * T * C, 4);
  const std::vector<float> dwte_initial = RandomFloats(V * C, 5);
  std::vector<int32_t> counts;
  TokenBuckets buckets;
  BuildTokenBuckets(tokens.data(), B * T, V, &counts, &buckets);
  DeviceBuffer ddout = ToDevice(dout), btokens = ToDevice(buckets.token_ids),
               bstarts = ToDevice(buckets.starts), bpositions = ToDevice(buckets.positions);
  for (float p : {0.0f, 0.3f}) {
    const Dropout dropout = MakeDropout(11, 0, p);
    DeviceBuffer dwte = ToDevice(dwte_initial);
    DeviceBuffer dwpe = DeviceFilled<float>(T * C);
    ASSERT_EQ(EmbeddingBackwardWte(ddout.as<float>(), dropout, btokens.as<int32_t>(),
                                   bstarts.as<int32_t>(), bpositions.as<int32_t>(),
                                   buckets.num_buckets(), C, dwte.as<float>(), 0),
              cudaSuccess);
    ASSERT_EQ(EmbeddingBackwardWpe(ddout.as<float>(), dropout, B, T, C, dwpe.as<float>(), 0),
              cudaSuccess);
    std::vector<double> want_wte(dwte_initial.begin(), dwte_initial.end());
    std::vector<double> want_wpe(T * C, 0.0);
    for (int bt = 0; bt < B * T; ++bt) {
      for (int c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>(bt) * C + c;
        const double d = dout[i] * HostDropoutMask(11, 0, p, i);
        want_wte[tokens[bt] * C + c] += d;
        want_wpe[(bt % T) * C + c] += d;
      }
    }
    ExpectClose(ToHost<float>(dwte, V * C), want_wte, 1e-4, 1e-5, "dwte");
    ExpectClose(ToHost<float>(dwpe, T * C), want_wpe, 1e-4, 1e-5, "dwpe");
  }
}

struct LayerNormReference {
  std::vector<double> out, mean, rstd;
};

LayerNormReference LayerNormCpu(const std::vector<float>& x, const std::vector<float>& w,
                                const std::vector<float>& b, int N, int C) {
  LayerNormReference r{std::vector<double>(N * C), std::vector<double>(N), std::vector<double>(N)};
  for (int n = 0; n < N; ++n) {
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    v /= C;
    const double s = 1.0 / std::sqrt(v + 1e-5);
    for (int c = 0; c < C; ++c) r.out[n * C + c] = (x[n * C + c] - m) * s * w[c] + b[c];
    r.mean[n] = m;
    r.rstd[n] = s;
  }
  return r;
}

TEST_F(KernelsTest, LayerNormForward) {
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{37, 8}, {300, 200}, {9, 1000}}) {
    const std::vector<float> x = RandomFloats(N * C, 6, 2.0f, 0.5f);
    const std::vector<float> w = RandomFloats(C, 7, 0.3f, 1.0f), b = RandomFloats(C, 8, 0.3f);
    DeviceBuffer dx = ToDevice(x), dw = ToDevice(w), db = ToDevice(b);
    DeviceBuffer out = DeviceFilled<bf16>(N * C), mean = DeviceFilled<float>(N),
                 rstd = DeviceFilled<float>(N);
    ASSERT_EQ(LayerNormForward(dx.as<float>(), dw.as<float>(), db.as<float>(), N, C, out.as<bf16>(),
                               mean.as<float>(), rstd.as<float>(), 0),
              cudaSuccess);
    const LayerNormReference want = LayerNormCpu(x, w, b, N, C);
    ExpectClose(Bf16ToHost(out, N * C), want.out, 1e-2, 1e-3, "LayerNorm out");
    ExpectClose(ToHost<float>(mean, N), want.mean, 1e-5, 1e-6, "LayerNorm mean");
    ExpectClose(ToHost<float>(rstd, N), want.rstd, 1e-4, 0.0, "LayerNorm rstd");
  }
}

TEST_F(KernelsTest, LayerNormBackward) {
  // N > one reduction chunk (256 rows), C not a multiple of the 32-column tile.
  const int N = 600, C = 72;
  const std::vector<float> x = RandomFloats(N * C, 9, 1.5f, -0.3f);
  const std::vector<float> w = RandomFloats(C, 10, 0.3f, 1.0f), b = RandomFloats(C, 11, 0.3f);
  const std::vector<float> dout = RoundToBf16(RandomFloats(N * C, 12));
  const std::vector<float> dinp_initial = RandomFloats(N * C, 13);
  const LayerNormReference ln = LayerNormCpu(x, w, b, N, C);
  std::vector<float> mean(ln.mean.begin(), ln.mean.end()), rstd(ln.rstd.begin(), ln.rstd.end());
  DeviceBuffer dx = ToDevice(x), dw = ToDevice(w), dmean = ToDevice(mean), drstd = ToDevice(rstd),
               ddout = ToDevice(ToBf16Vector(dout)), ddinp = ToDevice(dinp_initial);
  DeviceBuffer dweight = DeviceFilled<float>(C), dbias = DeviceFilled<float>(C);
  DeviceBuffer scratch = DeviceFilled<float>(LayerNormBackwardScratch(N, C));
  ASSERT_EQ(LayerNormBackward(ddout.as<bf16>(), dx.as<float>(), dw.as<float>(), dmean.as<float>(),
                              drstd.as<float>(), N, C, ddinp.as<float>(), dweight.as<float>(),
                              dbias.as<float>(), scratch.as<float>(), 0),
            cudaSuccess);
  std::vector<double> want_dinp(dinp_initial.begin(), dinp_initial.end());
  std::vector<double> want_dw(C, 0.0), want_db(C, 0.0);
  for (int n = 0; n < N; ++n) {
    double dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
    for (int c = 0; c < C; ++c) {
      const double norm = (x[n * C + c] - mean[n]) * static_cast<double>(rstd[n]);
      dnorm_mean += w[c] * dout[n * C + c];
      dnorm_norm_mean += w[c] * dout[n * C + c] * norm;
      want_dw[c] += dout[n * C + c] * norm;
      want_db[c] += dout[n * C + c];
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (int c = 0; c < C; ++c) {
      const double norm = (x[n * C + c] - mean[n]) * static_cast<double>(rstd[n]);
      want_dinp[n * C + c] +=
          rstd[n] * (w[c] * dout[n * C + c] - dnorm_mean - norm * dnorm_norm_mean);
    }
  }
  ExpectClose(ToHost<float>(ddinp, N * C), want_dinp, 1e-4, 1e-5, "LayerNorm dinp");
  ExpectClose(ToHost<float>(dweight, C), want_dw, 1e-4, 1e-5, "LayerNorm dweight");
  ExpectClose(ToHost<float>(dbias, C), want_db, 1e-4, 1e-5, "LayerNorm dbias");
}

TEST_F(KernelsTest, ResidualForward) {
  const size_t n = 7777;
  const std::vector<float> a = RandomFloats(n, 14), b = RoundToBf16(RandomFloats(n, 15));
  DeviceBuffer da = ToDevice(a), db = ToDevice(ToBf16Vector(b));
  for (float p : {0.0f, 0.4f}) {
    DeviceBuffer out = DeviceFilled<float>(n);
    ASSERT_EQ(
        ResidualForward(da.as<float>(), db.as<bf16>(), MakeDropout(5, 2, p), n, out.as<float>(), 0),
        cudaSuccess);
    std::vector<float> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + b[i] * HostDropoutMask(5, 2, p, i);
    // The device may fuse a + b * mask into one FMA: 1 ulp.
    ExpectClose(ToHost<float>(out, n), want, 1e-6, 1e-7, "ResidualForward");
  }
}

// The fused residual + LayerNorm gives exactly what ResidualForward then LayerNormForward give:
// the residual, the normalized rows and the saved statistics, with and without dropout, in place.
TEST_F(KernelsTest, ResidualLayerNormForwardEqualsTheTwoKernels) {
  const int N = 37, C = 70;
  const size_t n = static_cast<size_t>(N) * C;
  const std::vector<float> a = RandomFloats(n, 24), b = RoundToBf16(RandomFloats(n, 25));
  const std::vector<float> weight = RandomFloats(C, 26), bias = RandomFloats(C, 27);
  DeviceBuffer da = ToDevice(a), db = ToDevice(ToBf16Vector(b));
  DeviceBuffer dw = ToDevice(weight), dbias = ToDevice(bias);
  for (float p : {0.0f, 0.3f}) {
    const Dropout dropout = MakeDropout(9, 4, p);
    DeviceBuffer residual = DeviceFilled<float>(n), out = DeviceFilled<bf16>(n);
    DeviceBuffer mean = DeviceFilled<float>(N), rstd = DeviceFilled<float>(N);
    ASSERT_EQ(ResidualForward(da.as<float>(), db.as<bf16>(), dropout, n, residual.as<float>(), 0),
              cudaSuccess);
    ASSERT_EQ(LayerNormForward(residual.as<float>(), dw.as<float>(), dbias.as<float>(), N, C,
                               out.as<bf16>(), mean.as<float>(), rstd.as<float>(), 0),
              cudaSuccess);
    // Fused, in place over a copy of a.
    DeviceBuffer fused_residual = ToDevice(a), fused_out = DeviceFilled<bf16>(n);
    DeviceBuffer fused_mean = DeviceFilled<float>(N), fused_rstd = DeviceFilled<float>(N);
    ASSERT_EQ(ResidualLayerNormForward(fused_residual.as<float>(), db.as<bf16>(), dropout,
                                       fused_residual.as<float>(), dw.as<float>(),
                                       dbias.as<float>(), N, C, fused_out.as<bf16>(),
                                       fused_mean.as<float>(), fused_rstd.as<float>(), 0),
              cudaSuccess);
    EXPECT_EQ(ToHost<float>(fused_residual, n), ToHost<float>(residual, n)) << "p " << p;
    EXPECT_EQ(Bf16ToHost(fused_out, n), Bf16ToHost(out, n)) << "p " << p;
    EXPECT_EQ(ToHost<float>(fused_mean, N), ToHost<float>(mean, N)) << "p " << p;
    EXPECT_EQ(ToHost<float>(fused_rstd, N), ToHost<float>(rstd, N)) << "p " << p;
  }
}

TEST_F(KernelsTest, AddBiasAndBiasBackward) {
  const int N = 515, OC = 70;
  const std::vector<float> out0 = RoundToBf16(RandomFloats(N * OC, 16));
  const std::vector<float> bias = RoundToBf16(RandomFloats(OC, 17));
  DeviceBuffer dout = ToDevice(ToBf16Vector(out0)), dbias = ToDevice(ToBf16Vector(bias));
  ASSERT_EQ(AddBias(dbias.as<bf16>(), N, OC, dout.as<bf16>(), 0), cudaSuccess);
  std::vector<float> want(N * OC);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < OC; ++c) want[n * OC + c] = out0[n * OC + c] + bias[c];
  }
  ExpectClose(Bf16ToHost(dout, N * OC), want, 1e-2, 1e-3, "AddBias");

  DeviceBuffer d = ToDevice(ToBf16Vector(out0));
  DeviceBuffer grad = DeviceFilled<float>(OC);
  DeviceBuffer scratch = DeviceFilled<float>(BiasBackwardScratch(N, OC));
  ASSERT_EQ(BiasBackward(d.as<bf16>(), N, OC, grad.as<float>(), scratch.as<float>(), 0),
            cudaSuccess);
  std::vector<double> want_grad(OC, 0.0);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < OC; ++c) want_grad[c] += out0[n * OC + c];
  }
  ExpectClose(ToHost<float>(grad, OC), want_grad, 1e-4, 1e-5, "BiasBackward");
}

// The bias gradient fused into the kernel that makes the product's output gradient gives exactly
// what that kernel then BiasBackward give: the stored gradient and its column sums (N over two
// row chunks and a part, OC over two column tiles and a part); GELU's in place, as the model
// calls it, the conversion with and without dropout, the merge of q's, k's and v's heads.
TEST_F(KernelsTest, FusedBiasGradientsEqualTheTwoKernels) {
  const int N = 515, OC = 70;
  const size_t n = static_cast<size_t>(N) * OC;
  DeviceBuffer scratch = DeviceFilled<float>(BiasBackwardScratch(N, OC));
  DeviceBuffer want_bias = DeviceFilled<float>(OC), got_bias = DeviceFilled<float>(OC);

  const std::vector<float> x = RoundToBf16(RandomFloats(n, 40, 2.0f));
  const std::vector<float> dout = RoundToBf16(RandomFloats(n, 41));
  DeviceBuffer dx = ToDevice(ToBf16Vector(x)), want = ToDevice(ToBf16Vector(dout));
  ASSERT_EQ(GeluBackward(want.as<bf16>(), dx.as<bf16>(), n, want.as<bf16>(), 0), cudaSuccess);
  ASSERT_EQ(BiasBackward(want.as<bf16>(), N, OC, want_bias.as<float>(), scratch.as<float>(), 0),
            cudaSuccess);
  DeviceBuffer got = ToDevice(ToBf16Vector(dout));
  ASSERT_EQ(GeluBackwardBias(got.as<bf16>(), dx.as<bf16>(), N, OC, got.as<bf16>(),
                             got_bias.as<float>(), scratch.as<float>(), 0),
            cudaSuccess);
  EXPECT_EQ(Bf16ToHost(got, n), Bf16ToHost(want, n)) << "GeluBackwardBias";
  EXPECT_EQ(ToHost<float>(got_bias, OC), ToHost<float>(want_bias, OC)) << "GeluBackwardBias";

  const std::vector<float> residual = RandomFloats(n, 42);
  DeviceBuffer dresidual = ToDevice(residual);
  for (float p : {0.0f, 0.3f}) {
    const Dropout dropout = MakeDropout(5, 6, p);
    DeviceBuffer want_out = DeviceFilled<bf16>(n), got_out = DeviceFilled<bf16>(n);
    ASSERT_EQ(ToBf16(dresidual.as<float>(), dropout, n, want_out.as<bf16>(), 0), cudaSuccess);
    ASSERT_EQ(BiasBackward(want_out.as<bf16>(), N, OC, want_bias.as<float>(),
                           scratch.as<float>(), 0),
              cudaSuccess);
    ASSERT_EQ(ToBf16Bias(dresidual.as<float>(), dropout, N, OC, got_out.as<bf16>(),
                         got_bias.as<float>(), scratch.as<float>(), 0),
              cudaSuccess);
    EXPECT_EQ(Bf16ToHost(got_out, n), Bf16ToHost(want_out, n)) << "ToBf16Bias p " << p;
    EXPECT_EQ(ToHost<float>(got_bias, OC), ToHost<float>(want_bias, OC)) << "ToBf16Bias p " << p;
  }

  // dqkvr (3, B, NH, T, hs) merged into dqkv (B, T, 3C) as three MergeHeads calls merge it.
  {
    const int B = 2, T = 37, NH = 3, hs = 8, C = NH * hs;
    const size_t m = static_cast<size_t>(B) * T * 3 * C;
    DeviceBuffer dqkvr = ToDevice(ToBf16Vector(RoundToBf16(RandomFloats(m, 43))));
    DeviceBuffer want_dqkv = DeviceFilled<bf16>(m), got_dqkv = DeviceFilled<bf16>(m);
    DeviceBuffer qkv_scratch = DeviceFilled<float>(BiasBackwardScratch(B * T, 3 * C));
    DeviceBuffer want_qkv_bias = DeviceFilled<float>(3 * C);
    DeviceBuffer got_qkv_bias = DeviceFilled<float>(3 * C);
    for (int part = 0; part < 3; ++part) {
      ASSERT_EQ(MergeHeads(dqkvr.as<bf16>() + part * m / 3, B, T, NH, hs, 3 * C,
                           want_dqkv.as<bf16>() + part * C, 0),
                cudaSuccess);
    }
    ASSERT_EQ(BiasBackward(want_dqkv.as<bf16>(), B * T, 3 * C, want_qkv_bias.as<float>(),
                           qkv_scratch.as<float>(), 0),
              cudaSuccess);
    ASSERT_EQ(MergeQkvBias(dqkvr.as<bf16>(), B, T, NH, hs, got_dqkv.as<bf16>(),
                           got_qkv_bias.as<float>(), qkv_scratch.as<float>(), 0),
              cudaSuccess);
    EXPECT_EQ(Bf16ToHost(got_dqkv, m), Bf16ToHost(want_dqkv, m)) << "MergeQkvBias";
    EXPECT_EQ(ToHost<float>(got_qkv_bias, 3 * C), ToHost<float>(want_qkv_bias, 3 * C))
        << "MergeQkvBias";
  }

  // No rows: a zero gradient, nothing written.
  ASSERT_EQ(ToBf16Bias(dresidual.as<float>(), Dropout(), 0, OC, nullptr, got_bias.as<float>(),
                       scratch.as<float>(), 0),
            cudaSuccess);
  EXPECT_EQ(ToHost<float>(got_bias, OC), std::vector<float>(OC, 0.0f));
}

double GeluCpu(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

TEST_F(KernelsTest, Gelu) {
  const size_t n = 10000;
  const std::vector<float> x = RoundToBf16(RandomFloats(n, 18, 2.0f));
  const std::vector<float> dout = RoundToBf16(RandomFloats(n, 19));
  DeviceBuffer dx = ToDevice(ToBf16Vector(x)), ddout = ToDevice(ToBf16Vector(dout));
  DeviceBuffer out = DeviceFilled<bf16>(n);
  ASSERT_EQ(GeluForward(dx.as<bf16>(), n, out.as<bf16>(), 0), cudaSuccess);
  std::vector<double> want(n), want_grad(n);
  for (size_t i = 0; i < n; ++i) {
    want[i] = GeluCpu(x[i]);
    const double t = std::tanh(std::sqrt(2.0 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i]));
    const double local = 0.5 * (1.0 + t) + 0.5 * x[i] * (1.0 - t * t) * std::sqrt(2.0 / M_PI) *
                                               (1.0 + 3.0 * 0.044715 * x[i] * x[i]);
    want_grad[i] = dout[i] * local;
  }
  ExpectClose(Bf16ToHost(out, n), want, 1e-2, 1e-3, "GeluForward");
  // In place, as the model calls it.
  ASSERT_EQ(GeluBackward(ddout.as<bf16>(), dx.as<bf16>(), n, ddout.as<bf16>(), 0), cudaSuccess);
  ExpectClose(Bf16ToHost(ddout, n), want_grad, 1e-2, 1e-3, "GeluBackward");
}

TEST_F(KernelsTest, SplitAndMergeHeadsAreInverse) {
  const int B = 2, T = 5, NH = 3, hs = 4, C = NH * hs;
  const std::vector<float> qkv = RoundToBf16(RandomFloats(B * T * 3 * C, 20));
  DeviceBuffer dqkv = ToDevice(ToBf16Vector(qkv));
  DeviceBuffer heads = DeviceFilled<bf16>(B * NH * T * hs);
  // k: columns [C, 2C) of each row.
  ASSERT_EQ(SplitHeads(dqkv.as<bf16>() + C, B, T, NH, hs, 3 * C, heads.as<bf16>(), 0), cudaSuccess);
  const std::vector<float> got = Bf16ToHost(heads, B * NH * T * hs);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        for (int d = 0; d < hs; ++d) {
          ASSERT_EQ(got[((b * NH + h) * T + t) * hs + d],
                    qkv[(b * T + t) * 3 * C + C + h * hs + d]);
        }
      }
    }
  }
  DeviceBuffer merged = DeviceFilled<bf16>(B * T * 3 * C);
  ASSERT_EQ(MergeHeads(heads.as<bf16>(), B, T, NH, hs, 3 * C, merged.as<bf16>() + C, 0),
            cudaSuccess);
  const std::vector<float> back = Bf16ToHost(merged, B * T * 3 * C);
  for (int bt = 0; bt < B * T; ++bt) {
    for (int c = 0; c < 3 * C; ++c) {
      if (c >= C && c < 2 * C) {
        ASSERT_EQ(back[bt * 3 * C + c], qkv[bt * 3 * C + c]);
      } else {
        ASSERT_TRUE(std::isnan(back[bt * 3 * C + c])) << "MergeHeads wrote outside its columns";
      }
    }
  }
}

TEST_F(KernelsTest, CausalSoftmaxForwardAndBackward) {
  const int BH = 6, T = 70;  // T > a warp
  const float scale = 0.25f;
  const std::vector<float> preatt = RandomFloats(BH * T * T, 21, 3.0f);
  const std::vector<float> datt = RandomFloats(BH * T * T, 22);
  DeviceBuffer dpre = ToDevice(preatt), ddatt = ToDevice(datt);
  for (float p : {0.0f, 0.2f}) {
    const Dropout dropout = MakeDropout(8, 1, p);
    DeviceBuffer att = DeviceFilled<bf16>(BH * T * T), dropped = DeviceFilled<bf16>(BH * T * T);
    ASSERT_EQ(CausalSoftmaxForward(dpre.as<float>(), BH, T, dropout, att.as<bf16>(),
                                   dropped.as<bf16>(), 0),
              cudaSuccess);
    const std::vector<float> got_att = Bf16ToHost(att, BH * T * T);
    std::vector<double> want(BH * T * T, 0.0), want_dropped(BH * T * T, 0.0);
    std::vector<double> want_dpre(BH * T * T, 0.0);
    for (int r = 0; r < BH * T; ++r) {
      const int t = r % T;
      const float* x = &preatt[static_cast<size_t>(r) * T];
      double max = -1e300, sum = 0.0;
      for (int t2 = 0; t2 <= t; ++t2) max = std::max<double>(max, x[t2]);
      for (int t2 = 0; t2 <= t; ++t2) sum += std::exp(x[t2] - max);
      for (int t2 = 0; t2 <= t; ++t2) {
        const size_t i = static_cast<size_t>(r) * T + t2;
        want[i] = std::exp(x[t2] - max) / sum;
        want_dropped[i] = got_att[i] * HostDropoutMask(8, 1, p, i);
      }
      // Backward from the kernel's own (bf16) att, as the model uses it.
      double dot = 0.0;
      for (int t2 = 0; t2 <= t; ++t2) {
        const size_t i = static_cast<size_t>(r) * T + t2;
        dot += got_att[i] * (datt[i] * HostDropoutMask(8, 1, p, i));
      }
      for (int t2 = 0; t2 <= t; ++t2) {
        const size_t i = static_cast<size_t>(r) * T + t2;
        want_dpre[i] = scale * got_att[i] * (datt[i] * HostDropoutMask(8, 1, p, i) - dot);
      }
    }
    ExpectClose(got_att, want, 1e-2, 1e-3, "CausalSoftmaxForward att");  // zeros above diagonal
    if (p > 0.0f) {
      ExpectClose(Bf16ToHost(dropped, BH * T * T), want_dropped, 1e-2, 0.0, "att_dropped");
    }
    DeviceBuffer dpreatt = DeviceFilled<bf16>(BH * T * T);
    ASSERT_EQ(CausalSoftmaxBackward(ddatt.as<float>(), att.as<bf16>(), BH, T, scale, dropout,
                                    dpreatt.as<bf16>(), 0),
              cudaSuccess);
    ExpectClose(Bf16ToHost(dpreatt, BH * T * T), want_dpre, 1e-2, 1e-3, "CausalSoftmaxBackward");
  }
}

// Per row of logits (N, V), in double: the loss against its target and dscale * (softmax - onehot).
void SoftmaxCrossEntropyReference(const std::vector<float>& logits,
                                  const std::vector<int32_t>& targets, int V, double dscale,
                                  std::vector<double>* loss, std::vector<double>* d) {
  const size_t N = targets.size();
  loss->assign(N, 0.0);
  d->assign(N * V, 0.0);
  for (size_t r = 0; r < N; ++r) {
    const float* x = &logits[r * V];
    double max = -1e300, sum = 0.0;
    for (int v = 0; v < V; ++v) max = std::max<double>(max, x[v]);
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - max);
    (*loss)[r] = std::log(sum) + max - x[targets[r]];
    for (int v = 0; v < V; ++v) {
      (*d)[r * V + v] = dscale * (std::exp(x[v] - max) / sum - (v == targets[r] ? 1.0 : 0.0));
    }
  }
}

TEST_F(KernelsTest, SoftmaxCrossEntropy) {
  for (const int V : {11, 65, 9000}) {  // both block sizes
    const int N = 40;
    const float dscale = 1.0f / N;
    const std::vector<float> logits = RandomFloats(N * V, 23, 3.0f);
    std::vector<int32_t> targets(N);
    for (int r = 0; r < N; ++r) targets[r] = (r * 7919) % V;
    DeviceBuffer dlogits_in = ToDevice(logits), dtargets = ToDevice(targets);
    DeviceBuffer losses = DeviceFilled<float>(N), dlogits = DeviceFilled<bf16>(N * V);
    ASSERT_EQ(SoftmaxCrossEntropy(dlogits_in.as<float>(), dtargets.as<int32_t>(), N, V, dscale,
                                  losses.as<float>(), dlogits.as<bf16>(), 0),
              cudaSuccess);
    std::vector<double> want_loss, want_d;
    SoftmaxCrossEntropyReference(logits, targets, V, dscale, &want_loss, &want_d);
    ExpectClose(ToHost<float>(losses, N), want_loss, 1e-5, 1e-6, "losses");
    ExpectClose(Bf16ToHost(dlogits, N * V), want_d, 1e-2, 1e-3, "dlogits");
    // Forward only: dlogits untouched.
    DeviceBuffer untouched = DeviceFilled<bf16>(N * V);
    ASSERT_EQ(SoftmaxCrossEntropy(dlogits_in.as<float>(), dtargets.as<int32_t>(), N, V, dscale,
                                  losses.as<float>(), nullptr, 0),
              cudaSuccess);
    ExpectClose(ToHost<float>(losses, N), want_loss, 1e-5, 1e-6, "losses (forward only)");

    // The fused classifier: the same from the logits rounded to bf16, the gradient written over
    // them in place; forward only leaves them as they were.
    const std::vector<bf16> rounded = ToBf16Vector(logits);
    const std::vector<float> widened = FromBf16Vector(rounded);
    std::vector<double> want_loss16, want_d16;
    SoftmaxCrossEntropyReference(widened, targets, V, dscale, &want_loss16, &want_d16);
    DeviceBuffer in_place = ToDevice(rounded);
    ASSERT_EQ(FusedClassifier(in_place.as<bf16>(), dtargets.as<int32_t>(), N, V, dscale,
                              losses.as<float>(), /*backward=*/false, 0),
              cudaSuccess);
    ExpectClose(ToHost<float>(losses, N), want_loss16, 1e-5, 1e-6, "classifier losses");
    ExpectClose(Bf16ToHost(in_place, N * V), std::vector<double>(widened.begin(), widened.end()),
                0, 0, "classifier logits (forward only)");
    ASSERT_EQ(FusedClassifier(in_place.as<bf16>(), dtargets.as<int32_t>(), N, V, dscale,
                              losses.as<float>(), /*backward=*/true, 0),
              cudaSuccess);
    ExpectClose(ToHost<float>(losses, N), want_loss16, 1e-5, 1e-6, "classifier losses (training)");
    ExpectClose(Bf16ToHost(in_place, N * V), want_d16, 1e-2, 1e-3, "classifier dlogits");
    // Against the fp32 logits: the loss moves by the logits' bf16 rounding only.
    ExpectClose(ToHost<float>(losses, N), want_loss, 2e-2, 1e-2, "classifier vs fp32 losses");
  }
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

// The cuBLAS products (Blas, through cuBLASLt and through GemmEx) and the layers built on them
// (layers.h: Linear and causal attention, forward and backward, with and without dropout) against
// double-precision CPU loops on the same bf16-rounded inputs. Tolerances, |got - want| <=
// rel*|want| + abs*max|want|:
//   fp32 results of bf16 products (fp32 accumulation): rel 1e-4, abs 1e-5;
//   bf16 results of one product: rel 1e-2, abs 1e-3;
//   attention (bf16 weights between two products): forward rel 2e-2, abs 5e-3; backward (two more
//   bf16 roundings) rel 5e-2, abs 1e-2.
// Shapes include odd sizes (cuBLASLt may decline them: GemmEx then runs) and 16-byte-aligned ones.
// The Linear with its GELU in the epilogue: the same bf16 tolerance for both results.
// Tagged "gpu": skips without a GPU.
#include "worker/cuda/layers.h"

#include <cmath>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/blas.h"
#include "worker/cuda/gpu_test_util.h"

namespace psrv {
namespace cuda {
namespace {

class LayersTest : public GpuTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    BlasOptions options;
    options.use_cublaslt = GetParam();
    absl::StatusOr<std::unique_ptr<Blas>> blas = Blas::Create(/*stream=*/0, options);
    ASSERT_TRUE(blas.ok()) << blas.status();
    blas_ = std::move(*blas);
  }
  std::unique_ptr<Blas> blas_;
};

INSTANTIATE_TEST_SUITE_P(CublasLtOnOff, LayersTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Lt" : "GemmEx";
                         });

struct LinearShape {
  int N, C, OC;
};

TEST_P(LayersTest, LinearForwardAndBackward) {
  for (const LinearShape& s : {LinearShape{5, 8, 24}, LinearShape{64, 128, 384},
                               LinearShape{33, 40, 11}, LinearShape{256, 64, 256}}) {
    SCOPED_TRACE(::testing::Message() << "N " << s.N << " C " << s.C << " OC " << s.OC);
    const std::vector<float> inp = RoundToBf16(RandomFloats(s.N * s.C, 1));
    const std::vector<float> weight = RoundToBf16(RandomFloats(s.OC * s.C, 2, 0.2f));
    const std::vector<float> bias = RoundToBf16(RandomFloats(s.OC, 3));
    const std::vector<float> dout = RoundToBf16(RandomFloats(s.N * s.OC, 4));
    DeviceBuffer dinp_in = ToDevice(ToBf16Vector(inp)), dweight_in = ToDevice(ToBf16Vector(weight)),
                 dbias_in = ToDevice(ToBf16Vector(bias)), ddout = ToDevice(ToBf16Vector(dout));
    DeviceBuffer out = DeviceFilled<bf16>(s.N * s.OC);
    ASSERT_TRUE(LinearForward(*blas_, dinp_in.as<bf16>(), dweight_in.as<bf16>(),
                              dbias_in.as<bf16>(), s.N, s.C, s.OC, out.as<bf16>())
                    .ok());
    DeviceBuffer dinp = DeviceFilled<bf16>(s.N * s.C), dweight = DeviceFilled<float>(s.OC * s.C),
                 dbias = DeviceFilled<float>(s.OC),
                 scratch = DeviceFilled<float>(LinearBackwardScratch(s.N, s.OC));
    ASSERT_TRUE(LinearBackward(*blas_, ddout.as<bf16>(), dinp_in.as<bf16>(), dweight_in.as<bf16>(),
                               s.N, s.C, s.OC, dinp.as<bf16>(), dweight.as<float>(),
                               dbias.as<float>(), scratch.as<float>())
                    .ok());

    std::vector<double> want_out(s.N * s.OC), want_dinp(s.N * s.C, 0.0),
        want_dweight(s.OC * s.C, 0.0), want_dbias(s.OC, 0.0);
    for (int n = 0; n < s.N; ++n) {
      for (int o = 0; o < s.OC; ++o) {
        double sum = bias[o];
        const double d = dout[n * s.OC + o];
        for (int c = 0; c < s.C; ++c) {
          sum += static_cast<double>(inp[n * s.C + c]) * weight[o * s.C + c];
          want_dinp[n * s.C + c] += d * weight[o * s.C + c];
          want_dweight[o * s.C + c] += d * inp[n * s.C + c];
        }
        want_out[n * s.OC + o] = sum;
        want_dbias[o] += d;
      }
    }
    ExpectClose(Bf16ToHost(out, s.N * s.OC), want_out, 1e-2, 1e-3, "linear out");
    ExpectClose(Bf16ToHost(dinp, s.N * s.C), want_dinp, 1e-2, 1e-3, "linear dinp");
    ExpectClose(ToHost<float>(dweight, s.OC * s.C), want_dweight, 1e-4, 1e-5, "linear dweight");
    ExpectClose(ToHost<float>(dbias, s.OC), want_dbias, 1e-4, 1e-5, "linear dbias");
  }
  if (GetParam()) {
    // The aligned shapes should have found a cuBLASLt algorithm (else everything fell back).
    EXPECT_GT(blas_->lt_calls(), 0);
  } else {
    EXPECT_EQ(blas_->lt_calls(), 0);
  }
}

// The Linear with the GELU in its epilogue: pre is the Linear's output, out its GELU (tanh
// approximation), each within the bf16 tolerance of double loops; the aligned shapes run through
// cuBLASLt's epilogue, the others (and every shape without cuBLASLt) through GemmEx and the GELU
// kernel. Bad requests are refused.
TEST_P(LayersTest, LinearGeluForwardIsTheLinearThenGelu) {
  const int64_t lt_before = blas_->lt_calls();
  for (const LinearShape& s : {LinearShape{64, 128, 512}, LinearShape{33, 40, 11},
                               LinearShape{256, 64, 256}}) {
    SCOPED_TRACE(::testing::Message() << "N " << s.N << " C " << s.C << " OC " << s.OC);
    const std::vector<float> inp = RoundToBf16(RandomFloats(s.N * s.C, 5));
    const std::vector<float> weight = RoundToBf16(RandomFloats(s.OC * s.C, 6, 0.2f));
    const std::vector<float> bias = RoundToBf16(RandomFloats(s.OC, 7));
    DeviceBuffer dinp = ToDevice(ToBf16Vector(inp)), dweight = ToDevice(ToBf16Vector(weight)),
                 dbias = ToDevice(ToBf16Vector(bias));
    DeviceBuffer pre = DeviceFilled<bf16>(s.N * s.OC), out = DeviceFilled<bf16>(s.N * s.OC);
    ASSERT_TRUE(LinearGeluForward(*blas_, dinp.as<bf16>(), dweight.as<bf16>(), dbias.as<bf16>(),
                                  s.N, s.C, s.OC, pre.as<bf16>(), out.as<bf16>())
                    .ok());
    std::vector<double> want_pre(s.N * s.OC), want_out(s.N * s.OC);
    for (int n = 0; n < s.N; ++n) {
      for (int o = 0; o < s.OC; ++o) {
        double sum = bias[o];
        for (int c = 0; c < s.C; ++c) {
          sum += static_cast<double>(inp[n * s.C + c]) * weight[o * s.C + c];
        }
        want_pre[n * s.OC + o] = sum;
        want_out[n * s.OC + o] =
            0.5 * sum * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (sum + 0.044715 * sum * sum * sum)));
      }
    }
    ExpectClose(Bf16ToHost(pre, s.N * s.OC), want_pre, 1e-2, 1e-3, "linear-gelu pre");
    ExpectClose(Bf16ToHost(out, s.N * s.OC), want_out, 1e-2, 1e-3, "linear-gelu out");
  }
  if (GetParam()) {
    EXPECT_GT(blas_->lt_calls(), lt_before) << "the aligned shapes should take the epilogue";
  } else {
    EXPECT_EQ(blas_->lt_calls(), 0);
  }
  // The epilogue needs an aux result, one product, beta 0 and a dense bf16 D; refused otherwise,
  // before anything is written.
  DeviceBuffer a = DeviceFilled<bf16>(64), d = DeviceFilled<bf16>(64);
  GemmArgs args = RowMajorABt(8, 8, 8, a.as<bf16>(), a.as<bf16>(), d.as<bf16>(), GemmType::kBf16);
  args.epilogue = GemmEpilogue::kGeluAux;
  EXPECT_EQ(blas_->Gemm(args).code(), absl::StatusCode::kInvalidArgument) << "no aux";
  args.aux = d.as<bf16>();
  args.beta = 1.0f;
  EXPECT_EQ(blas_->Gemm(args).code(), absl::StatusCode::kInvalidArgument) << "beta";
  args.beta = 0.0f;
  args.d_type = GemmType::kF32;
  EXPECT_EQ(blas_->Gemm(args).code(), absl::StatusCode::kInvalidArgument) << "fp32 D";
}

// Causal attention in double precision: forward out (B, T, C), and the backward's dqkv from dout.
struct AttentionReference {
  std::vector<double> out, dqkv;
};

AttentionReference AttentionCpu(const std::vector<float>& qkv, const std::vector<float>& dout,
                                int B, int T, int C, int NH, uint64_t seed, uint64_t stream,
                                float p) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  AttentionReference r{std::vector<double>(B * T * C, 0.0),
                       std::vector<double>(B * T * 3 * C, 0.0)};
  auto at = [&](int b, int t, int part, int h, int d) {
    return (static_cast<size_t>(b) * T + t) * 3 * C + part * C + h * hs + d;
  };
  std::vector<double> att(T * T), mask(T * T), datt(T * T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const size_t head = (static_cast<size_t>(b) * NH + h) * T * T;
      for (int t = 0; t < T; ++t) {
        double max = -1e300, sum = 0.0;
        std::vector<double> s(t + 1);
        for (int t2 = 0; t2 <= t; ++t2) {
          double dot = 0.0;
          for (int d = 0; d < hs; ++d) dot += qkv[at(b, t, 0, h, d)] * qkv[at(b, t2, 1, h, d)];
          s[t2] = dot * scale;
          max = std::max(max, s[t2]);
        }
        for (int t2 = 0; t2 <= t; ++t2) sum += std::exp(s[t2] - max);
        for (int t2 = 0; t2 < T; ++t2) {
          att[t * T + t2] = t2 <= t ? std::exp(s[t2] - max) / sum : 0.0;
          mask[t * T + t2] = HostDropoutMask(seed, stream, p, head + t * T + t2);
        }
      }
      for (int t = 0; t < T; ++t) {
        for (int t2 = 0; t2 <= t; ++t2) {
          const double w = att[t * T + t2] * mask[t * T + t2];
          for (int d = 0; d < hs; ++d) {
            r.out[(static_cast<size_t>(b) * T + t) * C + h * hs + d] += w * qkv[at(b, t2, 2, h, d)];
          }
        }
      }
      // Backward.
      for (int t = 0; t < T; ++t) {
        double dot = 0.0;
        for (int t2 = 0; t2 <= t; ++t2) {
          double dw = 0.0;  // d(loss)/d(dropped weight)
          for (int d = 0; d < hs; ++d) {
            dw += dout[(static_cast<size_t>(b) * T + t) * C + h * hs + d] * qkv[at(b, t2, 2, h, d)];
          }
          datt[t * T + t2] = dw * mask[t * T + t2];
          dot += att[t * T + t2] * datt[t * T + t2];
          // dv[t2] += dropped weight * dy[t]
          for (int d = 0; d < hs; ++d) {
            r.dqkv[at(b, t2, 2, h, d)] += att[t * T + t2] * mask[t * T + t2] *
                                          dout[(static_cast<size_t>(b) * T + t) * C + h * hs + d];
          }
        }
        for (int t2 = 0; t2 <= t; ++t2) {
          const double ds = att[t * T + t2] * (datt[t * T + t2] - dot) * scale;
          for (int d = 0; d < hs; ++d) {
            r.dqkv[at(b, t, 0, h, d)] += ds * qkv[at(b, t2, 1, h, d)];
            r.dqkv[at(b, t2, 1, h, d)] += ds * qkv[at(b, t, 0, h, d)];
          }
        }
      }
    }
  }
  return r;
}

struct AttentionShape {
  int B, T, C, NH;
};

// One attention case: random bf16 inputs, device buffers filled with NaN for what both paths
// write, and the double-precision reference to check them against.
struct AttentionCase {
  AttentionCase(const AttentionShape& s, float p)
      : B(s.B),
        T(s.T),
        C(s.C),
        NH(s.NH),
        hs(s.C / s.NH),
        p(p),
        qkv(RoundToBf16(RandomFloats(B * T * 3 * C, 5, 1.0f))),
        dout(RoundToBf16(RandomFloats(B * T * C, 6))),
        dqkv_in(ToDevice(ToBf16Vector(qkv))),
        ddout(ToDevice(ToBf16Vector(dout))),
        qkvr(DeviceFilled<bf16>(3 * B * T * C)),
        out(DeviceFilled<bf16>(B * T * C)),
        dqkv(DeviceFilled<bf16>(B * T * 3 * C)),
        heads(DeviceFilled<bf16>(B * NH * T * hs)),
        dqkvr(DeviceFilled<bf16>(3 * B * NH * T * hs)),
        dbias(DeviceFilled<float>(3 * C)),
        reduce(DeviceFilled<float>(BiasBackwardScratch(B * T, 3 * C))),
        dropout(MakeDropout(kSeed, kStream, p)) {}

  void ExpectMatchesReference(const char* out_name, const char* dqkv_name) {
    const AttentionReference want = AttentionCpu(qkv, dout, B, T, C, NH, kSeed, kStream, p);
    ExpectClose(Bf16ToHost(out, B * T * C), want.out, 2e-2, 5e-3, out_name);
    ExpectClose(Bf16ToHost(dqkv, B * T * 3 * C), want.dqkv, 5e-2, 1e-2, dqkv_name);
    // The bias gradient the backward summed while merging dqkv: BiasBackward's bits.
    DeviceBuffer want_bias = DeviceFilled<float>(3 * C);
    ASSERT_EQ(BiasBackward(dqkv.as<bf16>(), B * T, 3 * C, want_bias.as<float>(),
                           reduce.as<float>(), 0),
              cudaSuccess);
    EXPECT_EQ(ToHost<float>(dbias, 3 * C), ToHost<float>(want_bias, 3 * C)) << dqkv_name;
  }

  static constexpr uint64_t kSeed = 99, kStream = 4;
  const int B, T, C, NH, hs;
  const float p;
  const std::vector<float> qkv, dout;
  DeviceBuffer dqkv_in, ddout, qkvr, out, dqkv, heads, dqkvr, dbias, reduce;
  const Dropout dropout;
};

::testing::Message Describe(const AttentionShape& s, float p) {
  return ::testing::Message() << "B " << s.B << " T " << s.T << " C " << s.C << " NH " << s.NH
                              << " dropout " << p;
}

TEST_P(LayersTest, AttentionForwardAndBackward) {
  for (const AttentionShape& s :
       {AttentionShape{2, 5, 8, 2}, AttentionShape{2, 64, 128, 4}, AttentionShape{1, 37, 48, 3}}) {
    for (float p : {0.0f, 0.25f}) {
      SCOPED_TRACE(Describe(s, p));
      AttentionCase c(s, p);
      DeviceBuffer att = DeviceFilled<bf16>(c.B * c.NH * c.T * c.T),
                   scores = DeviceFilled<float>(c.B * c.NH * c.T * c.T),
                   weights = DeviceFilled<bf16>(c.B * c.NH * c.T * c.T);
      const AttentionScratch scratch{c.heads.as<bf16>(), scores.as<float>(), weights.as<bf16>(),
                                     c.dqkvr.as<bf16>(), nullptr, c.reduce.as<float>()};
      absl::Status status =
          AttentionForward(*blas_, c.dqkv_in.as<bf16>(), c.B, c.T, c.C, c.NH, c.dropout,
                           c.qkvr.as<bf16>(), att.as<bf16>(), c.out.as<bf16>(), scratch);
      ASSERT_TRUE(status.ok()) << status;
      status = AttentionBackward(*blas_, c.ddout.as<bf16>(), c.qkvr.as<bf16>(), att.as<bf16>(), c.B,
                                 c.T, c.C, c.NH, c.dropout, c.dqkv.as<bf16>(),
                                 c.dbias.as<float>(), scratch);
      ASSERT_TRUE(status.ok()) << status;
      c.ExpectMatchesReference("attention out", "attention dqkv");
    }
  }
}

// The flash kernels, on tensor cores and in fp32, against the same reference: head sizes padded
// to 16, 32 and 64 (4, 16, 33, 64) and sequences that end inside a tile or span several tiles
// (the tensor-core kernels' blocks are 64 rows, their tiles 32).
// The tensor-core kernels give the same bits whether the heads are read and written in place
// (q, k, v inside qkv; out, dq, dk, dv side by side, as the model runs them) or split out one
// after another (ContiguousHeads, then merged back): the layouts change addresses, not arithmetic.
TEST_P(LayersTest, TensorCoreFlashInPlaceEqualsSplitHeads) {
  if (GetParam()) GTEST_SKIP() << "no products: the cuBLASLt setting does not apply";
  for (const AttentionShape& s : {AttentionShape{2, 70, 128, 2}, AttentionShape{1, 37, 99, 3}}) {
    SCOPED_TRACE(Describe(s, 0.25f));
    AttentionCase c(s, 0.25f);
    const int hs = c.hs, BH = c.B * c.NH;
    const size_t n = static_cast<size_t>(c.B) * c.T * c.C;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    const HeadLayout qkv_layout = InterleavedHeads(c.T, c.NH, hs, 3 * c.C);
    const HeadLayout out_layout = InterleavedHeads(c.T, c.NH, hs, c.C);
    const HeadLayout split = ContiguousHeads(c.T, hs);
    const bf16* qkv = c.dqkv_in.as<bf16>();
    DeviceBuffer lse = DeviceFilled<float>(BH * c.T), split_lse = DeviceFilled<float>(BH * c.T);
    DeviceBuffer delta = DeviceFilled<float>(BH * c.T);
    ASSERT_EQ(FlashAttentionForwardTensorCores(qkv, qkv + c.C, qkv + 2 * c.C, qkv_layout, BH, c.T,
                                               hs, scale, c.dropout, c.out.as<bf16>(),
                                               out_layout, lse.as<float>(), 0),
              cudaSuccess);
    // The same through split heads.
    DeviceBuffer heads = DeviceFilled<bf16>(3 * n), y = DeviceFilled<bf16>(n);
    DeviceBuffer merged = DeviceFilled<bf16>(n);
    for (int part = 0; part < 3; ++part) {
      ASSERT_EQ(SplitHeads(qkv + part * c.C, c.B, c.T, c.NH, hs, 3 * c.C,
                           heads.as<bf16>() + part * n, 0),
                cudaSuccess);
    }
    const bf16 *q = heads.as<bf16>(), *k = q + n, *v = q + 2 * n;
    ASSERT_EQ(FlashAttentionForwardTensorCores(q, k, v, split, BH, c.T, hs, scale, c.dropout,
                                               y.as<bf16>(), split, split_lse.as<float>(), 0),
              cudaSuccess);
    ASSERT_EQ(MergeHeads(y.as<bf16>(), c.B, c.T, c.NH, hs, c.C, merged.as<bf16>(), 0), cudaSuccess);
    EXPECT_EQ(Bf16ToHost(c.out, n), Bf16ToHost(merged, n));
    EXPECT_EQ(ToHost<float>(lse, BH * c.T), ToHost<float>(split_lse, BH * c.T));

    // Backward: in place into dqkv, against split dout and split dq, dk, dv merged back.
    ASSERT_EQ(FlashAttentionDelta(c.ddout.as<bf16>(), c.out.as<bf16>(), c.B, c.T, c.NH, hs,
                                  delta.as<float>(), 0),
              cudaSuccess);
    ASSERT_EQ(FlashAttentionBackwardTensorCores(
                  qkv, qkv + c.C, qkv + 2 * c.C, qkv_layout, c.ddout.as<bf16>(), out_layout,
                  lse.as<float>(), delta.as<float>(), BH, c.T, hs, scale, c.dropout,
                  c.dqkv.as<bf16>(), c.dqkv.as<bf16>() + c.C, c.dqkv.as<bf16>() + 2 * c.C,
                  qkv_layout, 0),
              cudaSuccess);
    DeviceBuffer dy = DeviceFilled<bf16>(n), dheads = DeviceFilled<bf16>(3 * n);
    DeviceBuffer dmerged = DeviceFilled<bf16>(3 * n);
    ASSERT_EQ(SplitHeads(c.ddout.as<bf16>(), c.B, c.T, c.NH, hs, c.C, dy.as<bf16>(), 0),
              cudaSuccess);
    bf16* dq = dheads.as<bf16>();
    ASSERT_EQ(FlashAttentionBackwardTensorCores(q, k, v, split, dy.as<bf16>(), split,
                                                lse.as<float>(), delta.as<float>(), BH, c.T, hs,
                                                scale, c.dropout, dq, dq + n, dq + 2 * n, split,
                                                0),
              cudaSuccess);
    for (int part = 0; part < 3; ++part) {
      ASSERT_EQ(MergeHeads(dq + part * n, c.B, c.T, c.NH, hs, 3 * c.C,
                           dmerged.as<bf16>() + part * c.C, 0),
                cudaSuccess);
    }
    EXPECT_EQ(Bf16ToHost(c.dqkv, 3 * n), Bf16ToHost(dmerged, 3 * n));
  }
}

TEST_P(LayersTest, FlashAttentionForwardAndBackward) {
  if (GetParam()) GTEST_SKIP() << "no products: the cuBLASLt setting does not apply";
  for (const FlashKernels kernels : {FlashKernels::kTensorCores, FlashKernels::kFp32}) {
    for (const AttentionShape& s :
         {AttentionShape{2, 5, 8, 2}, AttentionShape{1, 37, 48, 3}, AttentionShape{1, 40, 99, 3},
          AttentionShape{2, 70, 128, 2}, AttentionShape{1, 130, 64, 4}}) {
      for (float p : {0.0f, 0.25f}) {
        SCOPED_TRACE(Describe(s, p) << (kernels == FlashKernels::kTensorCores ? " tensor cores"
                                                                              : " fp32"));
        AttentionCase c(s, p);
        DeviceBuffer lse = DeviceFilled<float>(c.B * c.NH * c.T),
                     delta = DeviceFilled<float>(c.B * c.NH * c.T);
        const AttentionScratch scratch{c.heads.as<bf16>(), nullptr, nullptr, c.dqkvr.as<bf16>(),
                                       delta.as<float>(), c.reduce.as<float>()};
        absl::Status status = AttentionForwardFlash(
            c.dqkv_in.as<bf16>(), c.B, c.T, c.C, c.NH, c.dropout, c.qkvr.as<bf16>(),
            lse.as<float>(), c.out.as<bf16>(), scratch, kernels, blas_->stream());
        ASSERT_TRUE(status.ok()) << status;
        status = AttentionBackwardFlash(c.ddout.as<bf16>(), c.qkvr.as<bf16>(), c.out.as<bf16>(),
                                        lse.as<float>(), c.B, c.T, c.C, c.NH, c.dropout,
                                        c.dqkv.as<bf16>(), c.dbias.as<float>(), scratch,
                                        kernels, blas_->stream());
        ASSERT_TRUE(status.ok()) << status;
        c.ExpectMatchesReference("flash attention out", "flash attention dqkv");
      }
    }
  }
  // Head sizes past the registers' budget are refused, not computed wrong.
  const AttentionScratch none{nullptr, nullptr, nullptr, nullptr, nullptr};
  const absl::Status too_wide =
      AttentionForwardFlash(nullptr, 1, 4, 2 * (kFlashMaxHeadSize + 1), 2, Dropout{}, nullptr,
                            nullptr, nullptr, none, FlashKernels::kTensorCores, blas_->stream());
  EXPECT_EQ(too_wide.code(), absl::StatusCode::kInvalidArgument) << too_wide;
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

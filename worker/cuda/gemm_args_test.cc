// The row-major -> cuBLAS mapping of gemm_args.h, executed by a column-major reference GEMM with
// cuBLAS's exact semantics (op, leading dimensions, batch strides) on fp32 buffers, against naive
// row-major products. A transposition or leading-dimension mistake fails here, without a GPU.
#include "worker/cuda/gemm_args.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace cuda {
namespace {

// cuBLAS's gemm on column-major fp32 data: D = alpha op(A) op(B) + beta D (+ bias on every column),
// for each batch entry.
void ReferenceGemm(const GemmArgs& g) {
  for (int batch = 0; batch < g.batch_count; ++batch) {
    const float* a = static_cast<const float*>(g.a) + batch * g.stride_a;
    const float* b = static_cast<const float*>(g.b) + batch * g.stride_b;
    float* d = static_cast<float*>(g.d) + batch * g.stride_d;
    for (int i = 0; i < g.m; ++i) {
      for (int j = 0; j < g.n; ++j) {
        double sum = 0.0;
        for (int p = 0; p < g.k; ++p) {
          const float op_a = g.trans_a ? a[p + static_cast<int64_t>(i) * g.lda]
                                       : a[i + static_cast<int64_t>(p) * g.lda];
          const float op_b = g.trans_b ? b[j + static_cast<int64_t>(p) * g.ldb]
                                       : b[p + static_cast<int64_t>(j) * g.ldb];
          sum += static_cast<double>(op_a) * op_b;
        }
        float& out = d[i + static_cast<int64_t>(j) * g.ldd];
        out = static_cast<float>(g.alpha * sum + (g.beta != 0.0f ? g.beta * out : 0.0f));
        if (g.bias != nullptr) out += static_cast<const float*>(g.bias)[i];
      }
    }
  }
}

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = uniform(rng);
  return v;
}

// Row-major helpers: element (r, c) of a (rows, cols) matrix.
struct Matrix {
  const float* data;
  int cols;
  float operator()(int r, int c) const { return data[static_cast<size_t>(r) * cols + c]; }
};

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << "at " << i;
}

constexpr int kM = 5, kN = 7, kK = 3, kBatch = 3;

TEST(GemmArgsTest, ABtIsLinearForwardWithBias) {
  const std::vector<float> a = Random(kM * kK, 1), b = Random(kN * kK, 2), bias = Random(kN, 3);
  std::vector<float> out(kM * kN, NAN);
  GemmArgs args = RowMajorABt(kM, kN, kK, a.data(), b.data(), out.data(), GemmType::kF32);
  args.bias = bias.data();
  ReferenceGemm(args);
  std::vector<double> want(kM * kN);
  for (int i = 0; i < kM; ++i) {
    for (int j = 0; j < kN; ++j) {
      double s = bias[j];
      for (int p = 0; p < kK; ++p) s += Matrix{a.data(), kK}(i, p) * Matrix{b.data(), kK}(j, p);
      want[i * kN + j] = s;
    }
  }
  ExpectNear(out, want);
  EXPECT_EQ(args.ldd, args.m);  // what a bias needs
}

TEST(GemmArgsTest, AB) {
  const std::vector<float> a = Random(kM * kK, 4), b = Random(kK * kN, 5);
  std::vector<float> out(kM * kN, NAN);
  ReferenceGemm(RowMajorAB(kM, kN, kK, a.data(), b.data(), out.data(), GemmType::kF32));
  std::vector<double> want(kM * kN);
  for (int i = 0; i < kM; ++i) {
    for (int j = 0; j < kN; ++j) {
      double s = 0.0;
      for (int p = 0; p < kK; ++p) s += Matrix{a.data(), kK}(i, p) * Matrix{b.data(), kN}(p, j);
      want[i * kN + j] = s;
    }
  }
  ExpectNear(out, want);
}

TEST(GemmArgsTest, AtB) {
  const std::vector<float> a = Random(kK * kM, 6), b = Random(kK * kN, 7);
  std::vector<float> out(kM * kN, NAN);
  ReferenceGemm(RowMajorAtB(kM, kN, kK, a.data(), b.data(), out.data(), GemmType::kF32));
  std::vector<double> want(kM * kN);
  for (int i = 0; i < kM; ++i) {
    for (int j = 0; j < kN; ++j) {
      double s = 0.0;
      for (int p = 0; p < kK; ++p) s += Matrix{a.data(), kM}(p, i) * Matrix{b.data(), kN}(p, j);
      want[i * kN + j] = s;
    }
  }
  ExpectNear(out, want);
}

TEST(GemmArgsTest, BatchStridesFollowTheRowMajorOperands) {
  // A: batch of (M, K), B: batch of (N, K) with a padded stride, out: batch of (M, N).
  const int64_t stride_a = kM * kK, stride_b = kN * kK + 2, stride_out = kM * kN;
  const std::vector<float> a = Random(kBatch * stride_a, 8), b = Random(kBatch * stride_b, 9);
  std::vector<float> out(kBatch * stride_out, NAN);
  GemmArgs args = RowMajorABt(kM, kN, kK, a.data(), b.data(), out.data(), GemmType::kF32,
                              {kBatch, stride_a, stride_b, stride_out});
  args.alpha = 0.5f;
  ReferenceGemm(args);
  std::vector<double> want(out.size());
  for (int z = 0; z < kBatch; ++z) {
    for (int i = 0; i < kM; ++i) {
      for (int j = 0; j < kN; ++j) {
        double s = 0.0;
        for (int p = 0; p < kK; ++p) {
          s +=
              Matrix{a.data() + z * stride_a, kK}(i, p) * Matrix{b.data() + z * stride_b, kK}(j, p);
        }
        want[z * stride_out + i * kN + j] = 0.5 * s;
      }
    }
  }
  ExpectNear(out, want);
}

TEST(GemmArgsTest, BatchedAtBAndAB) {
  const int64_t sa = kK * kM, sb = kK * kN, so = kM * kN;
  const std::vector<float> a = Random(kBatch * sa, 10), b = Random(kBatch * sb, 11);
  std::vector<float> out(kBatch * so, NAN);
  ReferenceGemm(RowMajorAtB(kM, kN, kK, a.data(), b.data(), out.data(), GemmType::kF32,
                            {kBatch, sa, sb, so}));
  std::vector<double> want(out.size());
  for (int z = 0; z < kBatch; ++z) {
    for (int i = 0; i < kM; ++i) {
      for (int j = 0; j < kN; ++j) {
        double s = 0.0;
        for (int p = 0; p < kK; ++p) {
          s += Matrix{a.data() + z * sa, kM}(p, i) * Matrix{b.data() + z * sb, kN}(p, j);
        }
        want[z * so + i * kN + j] = s;
      }
    }
  }
  ExpectNear(out, want);

  const int64_t sa2 = kM * kK, sb2 = kK * kN;
  const std::vector<float> a2 = Random(kBatch * sa2, 12), b2 = Random(kBatch * sb2, 13);
  std::vector<float> out2(kBatch * so, NAN);
  ReferenceGemm(RowMajorAB(kM, kN, kK, a2.data(), b2.data(), out2.data(), GemmType::kF32,
                           {kBatch, sa2, sb2, so}));
  for (int z = 0; z < kBatch; ++z) {
    for (int i = 0; i < kM; ++i) {
      for (int j = 0; j < kN; ++j) {
        double s = 0.0;
        for (int p = 0; p < kK; ++p) {
          s += Matrix{a2.data() + z * sa2, kK}(i, p) * Matrix{b2.data() + z * sb2, kN}(p, j);
        }
        want[z * so + i * kN + j] = s;
      }
    }
  }
  ExpectNear(out2, want);
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

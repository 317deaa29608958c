// CPU kernels of the GPT model (see gpt_kernels.h); the loops follow llm.c's train_gpt2.c.
//
// Each kernel splits its work over the pool and runs the pieces in a function built for several
// instruction sets (PSRV_MULTIVERSION: x86-64-v4 = AVX-512, x86-64-v3 = AVX2+FMA, baseline; picked
// at load time from the CPU's features; GCC 12's CPU-name dispatch, "arch=skylake-avx512", misses
// newer CPUs such as this VM's), so that the loops vectorise to the machine's widest vectors
// without -march flags. Reductions keep 16 independent partial sums, which the compiler vectorises
// without reordering float additions.
#include "worker/model/gpt_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "worker/model/vector_math.h"

// Not under sanitizers, whose runtimes are not ready when ifunc resolvers run at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define PSRV_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PSRV_MULTIVERSION
#endif

namespace psrv {
namespace {

// Elements per chunk of the parallel loops: big enough that claiming a chunk costs nothing, small
// enough that two threads share a (B, T, C) tensor in several chunks each. A loop of one chunk runs
// on the calling thread without waking the pool.
constexpr int64_t kGrain = 8192;
// Rows per chunk of a matrix product split over the pool (OpenBLAS single-threaded).
constexpr int kGemmRows = 64;
constexpr int kLanes = 16;

// Chunk sizes in rows of `width` elements, and in columns of `height` rows (a multiple of kLanes,
// so that column loops vectorise).
inline int64_t RowGrain(int64_t width) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(width, 1));
}
inline int64_t ColumnGrain(int64_t height) {
  const int64_t columns = std::max<int64_t>(1, kGrain / std::max<int64_t>(height, 1));
  return (columns + kLanes - 1) / kLanes * kLanes;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Sum of f(c) for c < n, with kLanes partial sums; inlined into the multiversioned callers.
template <typename F>
inline float LaneSum(int n, F f) {
  float acc[kLanes] = {};
  int c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += f(c + j);
  }
  float sum = 0.0f;
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  for (; c < n; ++c) sum += f(c);
  return sum;
}

// ---- Pieces of the kernels, each over a range of its parallel loop ----

PSRV_MULTIVERSION
void EmbeddingForwardRows(const int32_t* tokens, const float* wte, const float* wpe, int T, int C,
                          int64_t bt0, int64_t bt1, float* out) {
  for (int64_t bt = bt0; bt < bt1; ++bt) {
    const float* te = wte + static_cast<size_t>(tokens[bt]) * C;  // (C)
    const float* pe = wpe + static_cast<size_t>(bt % T) * C;      // (C)
    float* o = out + static_cast<size_t>(bt) * C;                 // (C)
    for (int c = 0; c < C; ++c) o[c] = te[c] + pe[c];
  }
}

// Columns [c0, c1) of dwte (accumulated) and dwpe (overwritten).
PSRV_MULTIVERSION
void EmbeddingBackwardColumns(const float* dout, const int32_t* tokens, int BT, int T, int C,
                              int64_t c0, int64_t c1, float* dwte, float* dwpe) {
  const int width = static_cast<int>(c1 - c0);
  for (int t = 0; t < T; ++t) std::fill_n(dwpe + static_cast<size_t>(t) * C + c0, width, 0.0f);
  for (int bt = 0; bt < BT; ++bt) {
    const float* d = dout + static_cast<size_t>(bt) * C + c0;
    float* dt = dwte + static_cast<size_t>(tokens[bt]) * C + c0;
    float* dp = dwpe + static_cast<size_t>(bt % T) * C + c0;
    for (int c = 0; c < width; ++c) {
      dt[c] += d[c];
      dp[c] += d[c];
    }
  }
}

PSRV_MULTIVERSION
void LayerNormForwardRows(const float* inp, const float* weight, const float* bias, int C,
                          int64_t r0, int64_t r1, float* out, float* mean, float* rstd) {
  constexpr float kEps = 1e-5f;
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = inp + static_cast<size_t>(r) * C;  // (C)
    float* o = out + static_cast<size_t>(r) * C;        // (C)
    const float m = LaneSum(C, [x](int c) { return x[c]; }) / C;
    const float var = LaneSum(C, [x, m](int c) { return (x[c] - m) * (x[c] - m); }) / C;
    const float s = 1.0f / std::sqrt(var + kEps);
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

PSRV_MULTIVERSION
void LayerNormBackwardRows(const float* dout, const float* inp, const float* weight,
                           const float* mean, const float* rstd, int C, int64_t r0, int64_t r1,
                           float* dinp) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* d = dout + static_cast<size_t>(r) * C;  // (C)
    const float* x = inp + static_cast<size_t>(r) * C;   // (C)
    float* dx = dinp + static_cast<size_t>(r) * C;       // (C)
    const float m = mean[r], s = rstd[r];
    // The two reductions of the backward: mean(dnorm) and mean(dnorm * norm).
    const float dnorm_mean = LaneSum(C, [=](int c) { return weight[c] * d[c]; }) / C;
    const float dnorm_norm_mean =
        LaneSum(C, [=](int c) { return weight[c] * d[c] * ((x[c] - m) * s); }) / C;
    for (int c = 0; c < C; ++c) {
      const float norm = (x[c] - m) * s;
      dx[c] += s * (weight[c] * d[c] - dnorm_mean - norm * dnorm_norm_mean);
    }
  }
}

// Columns [c0, c1) of dweight and dbias, summed over all N rows in order. Blocks of kLanes
// columns accumulate in registers.
PSRV_MULTIVERSION
void LayerNormParamColumns(const float* dout, const float* inp, const float* mean,
                           const float* rstd, int N, int C, int64_t c0, int64_t c1,
                           float* dweight, float* dbias) {
  for (int64_t b0 = c0; b0 < c1; b0 += kLanes) {
    const int width = static_cast<int>(std::min<int64_t>(kLanes, c1 - b0));
    float dw[kLanes] = {}, db[kLanes] = {};
    for (int r = 0; r < N; ++r) {
      const float* d = dout + static_cast<size_t>(r) * C + b0;
      const float* x = inp + static_cast<size_t>(r) * C + b0;
      const float m = mean[r], s = rstd[r];
      if (width == kLanes) {
        for (int j = 0; j < kLanes; ++j) {
          dw[j] += d[j] * ((x[j] - m) * s);
          db[j] += d[j];
        }
      } else {
        for (int j = 0; j < width; ++j) {
          dw[j] += d[j] * ((x[j] - m) * s);
          db[j] += d[j];
        }
      }
    }
    std::memcpy(dweight + b0, dw, width * sizeof(float));
    std::memcpy(dbias + b0, db, width * sizeof(float));
  }
}

// out[c0, c1) = column sums of m (N, C) over all rows in order.
PSRV_MULTIVERSION
void ColumnSumRange(const float* m, int N, int C, int64_t c0, int64_t c1, float* out) {
  for (int64_t b0 = c0; b0 < c1; b0 += kLanes) {
    const int width = static_cast<int>(std::min<int64_t>(kLanes, c1 - b0));
    float sum[kLanes] = {};
    for (int r = 0; r < N; ++r) {
      const float* row = m + static_cast<size_t>(r) * C + b0;
      if (width == kLanes) {
        for (int j = 0; j < kLanes; ++j) sum[j] += row[j];
      } else {
        for (int j = 0; j < width; ++j) sum[j] += row[j];
      }
    }
    std::memcpy(out + b0, sum, width * sizeof(float));
  }
}

void ColumnSums(const float* m, int N, int C, float* out, ThreadPool* pool) {
  ParallelFor(pool, C, ColumnGrain(N),
              [&](int64_t c0, int64_t c1) { ColumnSumRange(m, N, C, c0, c1, out); });
}

// C (M, N) = alpha * op(A) @ op(B) + beta * C, row-major. When OpenBLAS runs single-threaded
// (OPENBLAS_NUM_THREADS=1), split over the pool in chunks of kGemmRows rows of C; otherwise one
// call, threaded by OpenBLAS. Either way the result does not depend on the pool's size.
void Gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, ThreadPool* pool) {
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if (openblas_get_num_threads() > 1) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  ParallelFor(pool, M, kGemmRows, [&](int64_t m0, int64_t m1) {
    // Rows m0.. of op(A): rows of A, or columns when A is transposed.
    const float* a = trans_a ? A + m0 : A + m0 * lda;
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m1 - m0), N, K, alpha, a, lda, B, ldb, beta,
                C + m0 * ldc, ldc);
  });
}

// Softmax over t2 <= t of each row t of one head's scores (T, T), zero above the diagonal, and
// the dropout mask applied into `dropped` (both may be null for none).
PSRV_MULTIVERSION
void CausalSoftmax(int T, float* a, const float* mask, float* dropped) {
  for (int t = 0; t < T; ++t) {
    float* row = a + static_cast<size_t>(t) * T;  // (T)
    const float max = *std::max_element(row, row + t + 1);
    const float inv_sum = 1.0f / ExpShiftedInPlace(row, t + 1, max);
    for (int t2 = 0; t2 <= t; ++t2) row[t2] *= inv_sum;
    for (int t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;
  }
  if (mask != nullptr) {
    for (int i = 0; i < T * T; ++i) dropped[i] = a[i] * mask[i];
  }
}

// One head's d(weights) (T, T) in place -> d(scores) * scale: through the dropout mask (may be
// null) and the causal softmax whose output is a (T, T).
PSRV_MULTIVERSION
void CausalSoftmaxBackward(int T, const float* a, const float* mask, float scale, float* da) {
  for (int t = 0; t < T; ++t) {
    float* drow = da + static_cast<size_t>(t) * T;       // (T)
    const float* arow = a + static_cast<size_t>(t) * T;  // (T)
    if (mask != nullptr) {
      const float* mrow = mask + static_cast<size_t>(t) * T;
      for (int t2 = 0; t2 <= t; ++t2) drow[t2] *= mrow[t2];
    }
    const float dot = LaneSum(t + 1, [=](int t2) { return arow[t2] * drow[t2]; });
    for (int t2 = 0; t2 <= t; ++t2) drow[t2] = scale * arow[t2] * (drow[t2] - dot);
    for (int t2 = t + 1; t2 < T; ++t2) drow[t2] = 0.0f;
  }
}

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;

PSRV_MULTIVERSION
void GeluForwardRange(const float* inp, int64_t i0, int64_t i1, float* out, float* tanh_out) {
  for (int64_t i = i0; i < i1; ++i) {
    const float x = inp[i];
    tanh_out[i] = kGeluScale * (x + kGeluCubic * x * x * x);
  }
  TanhInPlace(tanh_out + i0, i1 - i0);
  for (int64_t i = i0; i < i1; ++i) out[i] = 0.5f * inp[i] * (1.0f + tanh_out[i]);
}

PSRV_MULTIVERSION
void GeluBackwardRange(const float* dout, const float* inp, const float* tanh_values, int64_t i0,
                       int64_t i1, float* dinp) {
  for (int64_t i = i0; i < i1; ++i) {
    const float x = inp[i], t = tanh_values[i];
    const float local = 0.5f * (1.0f + t) +
                        0.5f * x * (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
    dinp[i] = dout[i] * local;
  }
}

PSRV_MULTIVERSION
void SoftmaxCrossEntropyRows(const float* logits, const int32_t* targets, int V, int64_t r0,
                             int64_t r1, float* probs, float* losses) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* l = logits + static_cast<size_t>(r) * V;  // (V)
    float* p = probs + static_cast<size_t>(r) * V;         // (V)
    const float target_logit = l[targets[r]];
    const float max = *std::max_element(l, l + V);
    if (p != l) std::memcpy(p, l, V * sizeof(float));
    const float sum = ExpShiftedInPlace(p, V, max);
    const float inv_sum = 1.0f / sum;
    for (int v = 0; v < V; ++v) p[v] *= inv_sum;
    // -log p[target] = log(sum exp(logit - max)) + max - logit[target]
    losses[r] = std::log(sum) + max - target_logit;
  }
}

PSRV_MULTIVERSION
void SoftmaxCrossEntropyBackwardRows(const float* probs, const int32_t* targets, int V, float scale,
                                     int64_t r0, int64_t r1, float* dlogits) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = probs + static_cast<size_t>(r) * V;  // (V)
    float* d = dlogits + static_cast<size_t>(r) * V;      // (V)
    for (int v = 0; v < V; ++v) d[v] = scale * p[v];
    d[targets[r]] -= scale;
  }
}

PSRV_MULTIVERSION
void DropoutMaskRange(uint64_t base, uint64_t threshold, float keep_scale, int64_t i0, int64_t i1,
                      float* mask) {
  for (int64_t i = i0; i < i1; ++i) {
    mask[i] = (SplitMix64(base + i) >> 32) < threshold ? 0.0f : keep_scale;
  }
}

PSRV_MULTIVERSION
void ResidualRange(const float* a, const float* b, const float* mask, int64_t i0, int64_t i1,
                   float* out) {
  if (mask == nullptr) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  } else {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i] * mask[i];
  }
}

PSRV_MULTIVERSION
void MultiplyRange(const float* x, const float* mask, int64_t i0, int64_t i1, float* out) {
  for (int64_t i = i0; i < i1; ++i) out[i] = x[i] * mask[i];
}

}  // namespace

void EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                      int C, float* out, ThreadPool* pool) {
  ParallelFor(pool, static_cast<int64_t>(B) * T, RowGrain(C), [&](int64_t bt0, int64_t bt1) {
    EmbeddingForwardRows(tokens, wte, wpe, T, C, bt0, bt1, out);
  });
}

void EmbeddingBackward(const float* dout, const int32_t* tokens, int B, int T, int C, float* dwte,
                       float* dwpe, ThreadPool* pool) {
  // Each chunk owns a range of columns of dwte and dwpe: no two threads touch one element.
  ParallelFor(pool, C, ColumnGrain(static_cast<int64_t>(B) * T), [&](int64_t c0, int64_t c1) {
    EmbeddingBackwardColumns(dout, tokens, B * T, T, C, c0, c1, dwte, dwpe);
  });
}

void LayerNormForward(const float* inp, const float* weight, const float* bias, int N, int C,
                      float* out, float* mean, float* rstd, ThreadPool* pool) {
  ParallelFor(pool, N, RowGrain(C), [&](int64_t r0, int64_t r1) {
    LayerNormForwardRows(inp, weight, bias, C, r0, r1, out, mean, rstd);
  });
}

void LayerNormBackward(const float* dout, const float* inp, const float* weight, const float* mean,
                       const float* rstd, int N, int C, float* dinp, float* dweight, float* dbias,
                       ThreadPool* pool) {
  ParallelFor(pool, N, RowGrain(C), [&](int64_t r0, int64_t r1) {
    LayerNormBackwardRows(dout, inp, weight, mean, rstd, C, r0, r1, dinp);
  });
  ParallelFor(pool, C, ColumnGrain(N), [&](int64_t c0, int64_t c1) {
    LayerNormParamColumns(dout, inp, mean, rstd, N, C, c0, c1, dweight, dbias);
  });
}

void MatmulForward(const float* inp, const float* weight, const float* bias, int N, int C, int OC,
                   float* out, ThreadPool* pool) {
  float beta = 0.0f;
  if (bias != nullptr) {
    ParallelFor(pool, N, RowGrain(OC), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        std::memcpy(out + static_cast<size_t>(r) * OC, bias, OC * sizeof(float));
      }
    });
    beta = 1.0f;
  }
  // out (N, OC) = inp (N, C) @ weight^T
  Gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC, pool);
}

void MatmulBackward(const float* dout, const float* inp, const float* weight, int N, int C, int OC,
                    bool accumulate_dinp, float* dinp, float* dweight, float* dbias,
                    ThreadPool* pool) {
  // dinp (N, C) = dout (N, OC) @ weight (OC, C)
  Gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, accumulate_dinp ? 1.0f : 0.0f, dinp, C,
       pool);
  // dweight (OC, C) = dout^T (OC, N) @ inp (N, C)
  Gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 0.0f, dweight, C, pool);
  if (dbias != nullptr) ColumnSums(dout, N, OC, dbias, pool);
}

// Tasks per chunk of the attention loops: one (batch row, head) each unless they are tiny.
inline int64_t HeadGrain(int T, int C, int NH) {
  return std::max<int64_t>(1, 8 * kGrain / (static_cast<int64_t>(T) * T * (C / NH)));
}

void AttentionForward(const float* qkv, const float* mask, int B, int T, int C, int NH, float* att,
                      float* att_dropped, float* out, ThreadPool* pool) {
  const int hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // One task per (batch row, head); the small products run single-threaded inside OpenBLAS.
  ParallelFor(pool, static_cast<int64_t>(B) * NH, HeadGrain(T, C, NH), [&](int64_t i0, int64_t i1) {
    for (int64_t bh = i0; bh < i1; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      const float* q = qkv + b * T * C3 + h * hs;  // (T, hs), stride 3C
      const float* k = q + C;                      // (T, hs), stride 3C
      const float* v = q + 2 * C;                  // (T, hs), stride 3C
      const size_t offset = static_cast<size_t>(bh) * T * T;
      float* a = att + offset;  // (T, T)
      // a = scale * q @ k^T; CausalSoftmax overwrites the entries above the diagonal.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, a,
                  T);
      const float* head_mask = mask != nullptr ? mask + offset : nullptr;
      float* dropped = mask != nullptr ? att_dropped + offset : nullptr;
      CausalSoftmax(T, a, head_mask, dropped);
      // out[b, :, h] (T, hs), stride C = weights @ v
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f,
                  mask != nullptr ? dropped : a, T, v, C3, 0.0f, out + b * T * C + h * hs, C);
    }
  });
}

void AttentionBackward(const float* dout, const float* qkv, const float* att,
                       const float* att_dropped, const float* mask, int B, int T, int C, int NH,
                       float* datt, float* dqkv, ThreadPool* pool) {
  const int hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  ParallelFor(pool, static_cast<int64_t>(B) * NH, HeadGrain(T, C, NH), [&](int64_t i0, int64_t i1) {
    for (int64_t bh = i0; bh < i1; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      const size_t qkv_offset = b * T * C3 + h * hs;
      const float* q = qkv + qkv_offset;  // (T, hs), stride 3C
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + qkv_offset;  // (T, hs), stride 3C
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* dy = dout + b * T * C + h * hs;  // (T, hs), stride C
      const size_t att_offset = static_cast<size_t>(bh) * T * T;
      const float* a = att + att_offset;                                      // (T, T)
      const float* weights = mask != nullptr ? att_dropped + att_offset : a;  // (T, T)
      float* da = datt + att_offset;                                          // (T, T)
      // d(weights) = dy @ v^T, dv = weights^T @ dy.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dy, C, v, C3, 0.0f, da,
                  T);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, weights, T, dy, C, 0.0f,
                  dv, C3);
      CausalSoftmaxBackward(T, a, mask != nullptr ? mask + att_offset : nullptr, scale, da);
      // dq = dscores @ k, dk = dscores^T @ q.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, da, T, k, C3, 0.0f, dq,
                  C3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, da, T, q, C3, 0.0f, dk,
                  C3);
    }
  });
}

void GeluForward(const float* inp, size_t n, float* out, float* tanh_out, ThreadPool* pool) {
  ParallelFor(pool, n, kGrain,
              [&](int64_t i0, int64_t i1) { GeluForwardRange(inp, i0, i1, out, tanh_out); });
}

void GeluBackward(const float* dout, const float* inp, const float* tanh_values, size_t n,
                  float* dinp, ThreadPool* pool) {
  ParallelFor(pool, n, kGrain, [&](int64_t i0, int64_t i1) {
    GeluBackwardRange(dout, inp, tanh_values, i0, i1, dinp);
  });
}

float SoftmaxCrossEntropyForward(const float* logits, const int32_t* targets, int N, int V,
                                 float* probs, float* losses, ThreadPool* pool) {
  ParallelFor(pool, N, RowGrain(V), [&](int64_t r0, int64_t r1) {
    SoftmaxCrossEntropyRows(logits, targets, V, r0, r1, probs, losses);
  });
  double total = 0.0;
  for (int r = 0; r < N; ++r) total += losses[r];
  return static_cast<float>(total / N);
}

void SoftmaxCrossEntropyBackward(const float* probs, const int32_t* targets, int N, int V,
                                 float scale, float* dlogits, ThreadPool* pool) {
  ParallelFor(pool, N, RowGrain(V), [&](int64_t r0, int64_t r1) {
    SoftmaxCrossEntropyBackwardRows(probs, targets, V, scale, r0, r1, dlogits);
  });
}

void DropoutMask(uint64_t seed, uint64_t stream, float p, size_t n, float* mask, ThreadPool* pool) {
  const uint64_t base = SplitMix64(seed ^ SplitMix64(stream ^ 0x243f6a8885a308d3ULL));
  // Element i is dropped when the top 32 bits of its hash fall below p * 2^32.
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  const float keep_scale = 1.0f / (1.0f - p);
  ParallelFor(pool, n, kGrain, [&](int64_t i0, int64_t i1) {
    DropoutMaskRange(base, threshold, keep_scale, i0, i1, mask);
  });
}

void ResidualForward(const float* a, const float* b, const float* mask, size_t n, float* out,
                     ThreadPool* pool) {
  ParallelFor(pool, n, kGrain,
              [&](int64_t i0, int64_t i1) { ResidualRange(a, b, mask, i0, i1, out); });
}

void Multiply(const float* x, const float* mask, size_t n, float* out, ThreadPool* pool) {
  ParallelFor(pool, n, kGrain,
              [&](int64_t i0, int64_t i1) { MultiplyRange(x, mask, i0, i1, out); });
}

}  // namespace psrv

// Fused causal attention on tensor cores (FlashAttention-2's schedule, WMMA 16x16x16 bf16
// products with fp32 accumulation): the same contract as flash_attention.cu (kernels.h), whose
// fp32 CUDA-core kernels are the fallback and the reference these are tested against.
//
// A block is 4 warps; each warp owns 16 rows (queries, or keys in the backward's key pass) and
// keeps them as matrix_a fragments in registers. Tiles of 32 rows of the other side are staged in
// shared memory as bf16 (head size zero-padded to kHs = 16, 32 or 64, rows past T zero). Per tile
// a warp computes its 16 x 32 scores with tensor cores into shared memory, applies the causal mask,
// the scale, softmax (online in the forward, from the saved logsumexp in the backward) and dropout
// there, two lanes per row, and multiplies the bf16 probabilities (or score gradients) back through
// tensor cores. Tiles wholly above a warp's diagonal are skipped. The forward's output rows live in
// shared memory (rescaled per tile, which a fragment's unspecified layout does not allow in
// registers); the backward's dk, dv and dq sums live in accumulator fragments. No atomics: dk/dv
// (per key) and dq (per query) are two passes, so results are bitwise reproducible. Every tensor's
// heads are addressed through its HeadLayout, so q, k, v are read out of qkv (B, T, 3C) and the
// output and gradients written into (B, T, C) and (B, T, 3C) without heads split out or merged.
//
// Requires sm_80 (bf16 WMMA). On the CPU the simulator's emulation/wmma.h stands in for <mma.h>.
#include <cmath>

#include "worker/cuda/common.cuh"

#ifdef PSRV_CUDA_SIMT
#include "worker/cuda/emulation/wmma.h"
#else
#include <mma.h>
#endif

namespace psrv {
namespace cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kWarpRows = 16;                   // rows a warp owns
constexpr int kBlockRows = kWarps * kWarpRows;  // rows a block owns
constexpr int kTile = 32;                       // rows of the other side per shared tile
constexpr int kScoreLd = kTile + 4;             // float row stride of a warp's 16 x kTile scores
constexpr int kProbLd = kTile + 8;              // bf16 row stride of its 16 x kTile probabilities

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__device__ __forceinline__ size_t DropoutIndex(size_t bh, int T, int t, int t2) {
  return (bh * T + t) * static_cast<size_t>(T) + t2;
}

// The first element of head bh (its row 0) in a tensor of that layout (kernels.h).
__device__ __forceinline__ size_t HeadOffset(const HeadLayout& layout, size_t bh) {
  return (bh / layout.heads) * layout.batch_stride + (bh % layout.heads) * layout.head_stride;
}

// Copies rows [r0, r0 + rows) of a (T, hs) head whose rows are ld apart into tile (rows, kLd) as
// bf16, zeros past T and past hs; threads [0, threads) of the caller's group share the work.
// 16-byte copies when a row is exactly kHs wide and every row is 16-byte aligned.
template <int kHs, int kLd>
__device__ __forceinline__ void StageRows(const bf16* head, int T, int hs, size_t ld, int r0,
                                          int rows, bf16* tile, int thread, int threads) {
  if (hs == kHs && ld % 8 == 0 && reinterpret_cast<uintptr_t>(head) % 16 == 0) {
    constexpr int kVectors = kHs / 8;  // 8 bf16 per 16 bytes
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int e = thread; e < rows * kVectors; e += threads) {
      const int r = e / kVectors, c = e % kVectors;
      const int row = r0 + r;
      *reinterpret_cast<uint4*>(tile + r * kLd + c * 8) =
          row < T ? *reinterpret_cast<const uint4*>(head + static_cast<size_t>(row) * ld + c * 8)
                  : zero;
    }
    return;
  }
  for (int e = thread; e < rows * kHs; e += threads) {
    const int r = e / kHs, d = e % kHs;
    const int row = r0 + r;
    tile[r * kLd + d] = row < T && d < hs ? head[static_cast<size_t>(row) * ld + d] : ToBf16(0.0f);
  }
}

// Loads the warp's 16 rows starting at r0 as kHs / 16 matrix_a fragments, through `stage` (the
// warp's own shared memory, at least 16 * (kHs + 8) bf16).
template <int kHs>
__device__ __forceinline__ void LoadRowFragments(const bf16* head, int T, int hs, size_t ld, int r0,
                                                 bf16* stage, FragA (&frags)[kHs / 16]) {
  constexpr int kLd = kHs + 8;
  StageRows<kHs, kLd>(head, T, hs, ld, r0, kWarpRows, stage, threadIdx.x % kWarpSize, kWarpSize);
  __syncwarp();
#pragma unroll
  for (int kk = 0; kk < kHs / 16; ++kk) wmma::load_matrix_sync(frags[kk], stage + kk * 16, kLd);
  __syncwarp();  // `stage` may be written again
}

// out (16 x kTile, row stride kScoreLd) = rows (16 x kHs, fragments) times tile^T, tile (kTile, kHs)
// in shared memory with row stride kLd.
template <int kHs>
__device__ __forceinline__ void RowsTimesTileT(const FragA (&rows)[kHs / 16], const bf16* tile,
                                               float* out) {
  constexpr int kLd = kHs + 8;
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < kHs / 16; ++kk) {
      FragBCol b;
      wmma::load_matrix_sync(b, tile + n * 16 * kLd + kk * 16, kLd);
      wmma::mma_sync(acc, rows[kk], b, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kScoreLd, wmma::mem_row_major);
  }
}

// acc[n] += probs (16 x kTile bf16, row stride kProbLd) times tile (kTile, kHs), column block n.
template <int kHs>
__device__ __forceinline__ void AccumulateProbsTimesTile(const bf16* probs, const bf16* tile,
                                                         FragC (&acc)[kHs / 16]) {
  constexpr int kLd = kHs + 8;
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    FragA a;
    wmma::load_matrix_sync(a, probs + kk * 16, kProbLd);
#pragma unroll
    for (int n = 0; n < kHs / 16; ++n) {
      FragBRow b;
      wmma::load_matrix_sync(b, tile + kk * 16 * kLd + n * 16, kLd);
      wmma::mma_sync(acc[n], a, b, acc[n]);
    }
  }
}

// Writes scale * acc (16 x kHs) as bf16 rows [r0, r0 + 16) of a (T, hs) head whose rows are ld
// apart, through `stage` (the warp's shared memory, at least 16 * 16 floats).
template <int kHs>
__device__ __forceinline__ void StoreRows(const FragC (&acc)[kHs / 16], float scale, int T, int hs,
                                          size_t ld, int r0, float* stage, bf16* head) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int n = 0; n < kHs / 16; ++n) {
    wmma::store_matrix_sync(stage, acc[n], 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 16 * 16; e += kWarpSize) {
      const int r = e / 16, d = n * 16 + e % 16;
      if (r0 + r < T && d < hs) head[static_cast<size_t>(r0 + r) * ld + d] = ToBf16(stage[e] * scale);
    }
    __syncwarp();
  }
}

template <int kHs>
__global__ void __launch_bounds__(kThreads)
    FlashTcForwardKernel(const bf16* q, const bf16* k, const bf16* v, HeadLayout qkv_layout, int T,
                         int hs, float scale, Dropout dropout, bf16* out, HeadLayout out_layout,
                         float* lse) {
  constexpr int kLd = kHs + 8, kOutLd = kHs + 4;
  __shared__ __align__(32) bf16 ks[kTile * kLd];
  __shared__ __align__(32) bf16 vs[kTile * kLd];
  __shared__ __align__(32) float scores[kWarps][kWarpRows * kScoreLd];
  __shared__ __align__(32) bf16 probs[kWarps][kWarpRows * kProbLd];
  __shared__ __align__(32) float outs[kWarps][kWarpRows * kOutLd];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const size_t bh = blockIdx.y;
  const size_t head = HeadOffset(qkv_layout, bh);
  const size_t ld = qkv_layout.row_stride;
  const int t0 = blockIdx.x * kBlockRows;
  const int w0 = t0 + warp * kWarpRows;  // the warp's first query
  FragA qf[kHs / 16];
  LoadRowFragments<kHs>(q + head, T, hs, ld, w0, reinterpret_cast<bf16*>(scores[warp]), qf);
  // Two lanes per query row: row r, columns [half * 16, half * 16 + 16) of a tile's scores and
  // [half * kHs / 2, (half + 1) * kHs / 2) of the output.
  const int r = lane / 2, half = lane % 2;
  const int t = w0 + r;
  float* srow = scores[warp] + r * kScoreLd + half * 16;
  bf16* prow = probs[warp] + r * kProbLd + half * 16;
  float* orow = outs[warp] + r * kOutLd + half * (kHs / 2);
  for (int d = 0; d < kHs / 2; ++d) orow[d] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int last = min(T, t0 + kBlockRows) - 1;  // the block's last query sees keys 0..last
  for (int j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();  // the previous tiles are consumed
    StageRows<kHs, kLd>(k + head, T, hs, ld, j0, kTile, ks, threadIdx.x, kThreads);
    StageRows<kHs, kLd>(v + head, T, hs, ld, j0, kTile, vs, threadIdx.x, kThreads);
    __syncthreads();
    if (j0 > w0 + kWarpRows - 1) continue;  // above the warp's diagonal
    RowsTimesTileT<kHs>(qf, ks, scores[warp]);
    __syncwarp();
    float tile_max = -INFINITY;
    for (int c = 0; c < 16; ++c) {
      const int j = j0 + half * 16 + c;
      const float s = j <= t && j < T ? srow[c] * scale : -INFINITY;
      srow[c] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    // Finite: every row sees key 0 in the first tile.
    const float m_new = fmaxf(m, tile_max);
    const float correction = expf(m - m_new);  // 0 on the first tile
    float sum = 0.0f;
    for (int c = 0; c < 16; ++c) {
      const int j = j0 + half * 16 + c;
      // Rounded before the sum too, so that the weights the product uses sum to exactly 1.
      const float p = ToFloat(ToBf16(expf(srow[c] - m_new)));  // 0 where masked
      sum += p;
      prow[c] = ToBf16(p == 0.0f ? 0.0f : p * DropoutScale(dropout, DropoutIndex(bh, T, t, j)));
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * correction + sum;
    m = m_new;
    for (int d = 0; d < kHs / 2; ++d) orow[d] *= correction;
    __syncwarp();
    FragC acc[kHs / 16];
#pragma unroll
    for (int n = 0; n < kHs / 16; ++n) {
      wmma::load_matrix_sync(acc[n], outs[warp] + n * 16, kOutLd, wmma::mem_row_major);
    }
    AccumulateProbsTimesTile<kHs>(probs[warp], vs, acc);
#pragma unroll
    for (int n = 0; n < kHs / 16; ++n) {
      wmma::store_matrix_sync(outs[warp] + n * 16, acc[n], kOutLd, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (t >= T) return;
  const float inv = 1.0f / l;
  for (int d = 0; d < kHs / 2; ++d) {
    const int dd = half * (kHs / 2) + d;
    if (dd < hs) {
      out[HeadOffset(out_layout, bh) + t * out_layout.row_stride + dd] = ToBf16(orow[d] * inv);
    }
  }
  if (half == 0) lse[bh * T + t] = m + logf(l);
}

// The key pass: the warp's 16 keys j get dk_j = scale * sum_i ds_ij q_i and
// dv_j = sum_i p_ij mask_ij dy_i over the queries i >= j, tiles of queries shared.
template <int kHs>
__global__ void __launch_bounds__(kThreads)
    FlashTcBackwardKeysKernel(const bf16* q, const bf16* k, const bf16* v, HeadLayout qkv_layout,
                              const bf16* dy, HeadLayout dy_layout, const float* lse,
                              const float* delta, int T, int hs, float scale, Dropout dropout,
                              bf16* dk, bf16* dv, HeadLayout dqkv_layout) {
  constexpr int kLd = kHs + 8;
  __shared__ __align__(32) bf16 qs[kTile * kLd];
  __shared__ __align__(32) bf16 dys[kTile * kLd];
  __shared__ float lses[kTile];
  __shared__ float deltas[kTile];
  __shared__ __align__(32) float scores_t[kWarps][kWarpRows * kScoreLd];  // s^T: keys x queries
  __shared__ __align__(32) float dprobs_t[kWarps][kWarpRows * kScoreLd];  // (dy v^T)^T
  __shared__ __align__(32) bf16 probs_t[kWarps][kWarpRows * kProbLd];     // (p * mask)^T
  __shared__ __align__(32) bf16 dscores_t[kWarps][kWarpRows * kProbLd];   // ds^T
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const size_t bh = blockIdx.y;
  const size_t head = HeadOffset(qkv_layout, bh), ld = qkv_layout.row_stride;
  const size_t dy_head = HeadOffset(dy_layout, bh), dy_ld = dy_layout.row_stride;
  const int j0 = blockIdx.x * kBlockRows;
  const int w0 = j0 + warp * kWarpRows;  // the warp's first key
  FragA kf[kHs / 16], vf[kHs / 16];
  LoadRowFragments<kHs>(k + head, T, hs, ld, w0, reinterpret_cast<bf16*>(scores_t[warp]), kf);
  LoadRowFragments<kHs>(v + head, T, hs, ld, w0, reinterpret_cast<bf16*>(dprobs_t[warp]), vf);
  FragC dkacc[kHs / 16], dvacc[kHs / 16];
#pragma unroll
  for (int n = 0; n < kHs / 16; ++n) {
    wmma::fill_fragment(dkacc[n], 0.0f);
    wmma::fill_fragment(dvacc[n], 0.0f);
  }
  const int r = lane / 2, half = lane % 2;  // key row r, query columns [half * 16, +16)
  const int j = w0 + r;
  for (int i0 = j0; i0 < T; i0 += kTile) {  // j0 is a multiple of kTile
    __syncthreads();
    StageRows<kHs, kLd>(q + head, T, hs, ld, i0, kTile, qs, threadIdx.x, kThreads);
    StageRows<kHs, kLd>(dy + dy_head, T, hs, dy_ld, i0, kTile, dys, threadIdx.x, kThreads);
    if (threadIdx.x < kTile) {
      const int i = i0 + threadIdx.x;
      lses[threadIdx.x] = i < T ? lse[bh * T + i] : 0.0f;
      deltas[threadIdx.x] = i < T ? delta[bh * T + i] : 0.0f;
    }
    __syncthreads();
    if (i0 + kTile - 1 < w0) continue;  // every query before the warp's keys
    RowsTimesTileT<kHs>(kf, qs, scores_t[warp]);
    RowsTimesTileT<kHs>(vf, dys, dprobs_t[warp]);
    __syncwarp();
    const float* srow = scores_t[warp] + r * kScoreLd + half * 16;
    const float* dprow = dprobs_t[warp] + r * kScoreLd + half * 16;
    bf16* prow = probs_t[warp] + r * kProbLd + half * 16;
    bf16* dsrow = dscores_t[warp] + r * kProbLd + half * 16;
    for (int c = 0; c < 16; ++c) {
      const int ii = half * 16 + c, i = i0 + ii;
      float pm = 0.0f, ds = 0.0f;
      if (i >= j && i < T && j < T) {
        const float p = expf(srow[c] * scale - lses[ii]);
        const float mask = DropoutScale(dropout, DropoutIndex(bh, T, i, j));
        pm = p * mask;
        ds = p * (dprow[c] * mask - deltas[ii]);
      }
      prow[c] = ToBf16(pm);
      dsrow[c] = ToBf16(ds);
    }
    __syncwarp();
    AccumulateProbsTimesTile<kHs>(probs_t[warp], dys, dvacc);
    AccumulateProbsTimesTile<kHs>(dscores_t[warp], qs, dkacc);
  }
  __syncwarp();
  const size_t d_head = HeadOffset(dqkv_layout, bh), d_ld = dqkv_layout.row_stride;
  StoreRows<kHs>(dkacc, scale, T, hs, d_ld, w0, scores_t[warp], dk + d_head);
  StoreRows<kHs>(dvacc, 1.0f, T, hs, d_ld, w0, scores_t[warp], dv + d_head);
}

// The query pass: the warp's 16 queries i get dq_i = scale * sum_j ds_ij k_j over the keys j <= i.
template <int kHs>
__global__ void __launch_bounds__(kThreads)
    FlashTcBackwardQueriesKernel(const bf16* q, const bf16* k, const bf16* v,
                                 HeadLayout qkv_layout, const bf16* dy, HeadLayout dy_layout,
                                 const float* lse, const float* delta, int T, int hs, float scale,
                                 Dropout dropout, bf16* dq, HeadLayout dqkv_layout) {
  constexpr int kLd = kHs + 8;
  __shared__ __align__(32) bf16 ks[kTile * kLd];
  __shared__ __align__(32) bf16 vs[kTile * kLd];
  __shared__ __align__(32) float scores[kWarps][kWarpRows * kScoreLd];
  __shared__ __align__(32) float dprobs[kWarps][kWarpRows * kScoreLd];
  __shared__ __align__(32) bf16 dscores[kWarps][kWarpRows * kProbLd];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const size_t bh = blockIdx.y;
  const size_t head = HeadOffset(qkv_layout, bh), ld = qkv_layout.row_stride;
  const int i0 = blockIdx.x * kBlockRows;
  const int w0 = i0 + warp * kWarpRows;  // the warp's first query
  FragA qf[kHs / 16], yf[kHs / 16];
  LoadRowFragments<kHs>(q + head, T, hs, ld, w0, reinterpret_cast<bf16*>(scores[warp]), qf);
  LoadRowFragments<kHs>(dy + HeadOffset(dy_layout, bh), T, hs, dy_layout.row_stride, w0,
                        reinterpret_cast<bf16*>(dprobs[warp]), yf);
  FragC dqacc[kHs / 16];
#pragma unroll
  for (int n = 0; n < kHs / 16; ++n) wmma::fill_fragment(dqacc[n], 0.0f);
  const int r = lane / 2, half = lane % 2;  // query row r, key columns [half * 16, +16)
  const int i = w0 + r;
  const float row_lse = i < T ? lse[bh * T + i] : 0.0f;
  const float row_delta = i < T ? delta[bh * T + i] : 0.0f;
  const int last = min(T, i0 + kBlockRows) - 1;
  for (int j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();
    StageRows<kHs, kLd>(k + head, T, hs, ld, j0, kTile, ks, threadIdx.x, kThreads);
    StageRows<kHs, kLd>(v + head, T, hs, ld, j0, kTile, vs, threadIdx.x, kThreads);
    __syncthreads();
    if (j0 > w0 + kWarpRows - 1) continue;  // above the warp's diagonal
    RowsTimesTileT<kHs>(qf, ks, scores[warp]);
    RowsTimesTileT<kHs>(yf, vs, dprobs[warp]);
    __syncwarp();
    const float* srow = scores[warp] + r * kScoreLd + half * 16;
    const float* dprow = dprobs[warp] + r * kScoreLd + half * 16;
    bf16* dsrow = dscores[warp] + r * kProbLd + half * 16;
    for (int c = 0; c < 16; ++c) {
      const int j = j0 + half * 16 + c;
      float ds = 0.0f;
      if (j <= i && i < T) {
        const float p = expf(srow[c] * scale - row_lse);
        const float mask = DropoutScale(dropout, DropoutIndex(bh, T, i, j));
        ds = p * (dprow[c] * mask - row_delta);
      }
      dsrow[c] = ToBf16(ds);
    }
    __syncwarp();
    AccumulateProbsTimesTile<kHs>(dscores[warp], ks, dqacc);
  }
  __syncwarp();
  StoreRows<kHs>(dqacc, scale, T, hs, dqkv_layout.row_stride, w0, scores[warp],
                 dq + HeadOffset(dqkv_layout, bh));
}

}  // namespace

cudaError_t FlashAttentionForwardTensorCores(const bf16* q, const bf16* k, const bf16* v,
                                             const HeadLayout& qkv_layout, int BH, int T, int hs,
                                             float scale, const Dropout& dropout, bf16* out,
                                             const HeadLayout& out_layout, float* lse,
                                             cudaStream_t stream) {
  return WithFlashHeadSize(hs, BH, T, [&](auto padded) {
    constexpr int kHs = decltype(padded)::value;
    PSRV_LAUNCH(FlashTcForwardKernel<kHs>, dim3(CeilDiv(T, kBlockRows), BH), kThreads, 0, stream)
    (q, k, v, qkv_layout, T, hs, scale, dropout, out, out_layout, lse);
    return cudaGetLastError();
  });
}

cudaError_t FlashAttentionBackwardTensorCores(const bf16* q, const bf16* k, const bf16* v,
                                              const HeadLayout& qkv_layout, const bf16* dy,
                                              const HeadLayout& dy_layout, const float* lse,
                                              const float* delta, int BH, int T, int hs,
                                              float scale, const Dropout& dropout, bf16* dq,
                                              bf16* dk, bf16* dv, const HeadLayout& dqkv_layout,
                                              cudaStream_t stream) {
  return WithFlashHeadSize(hs, BH, T, [&](auto padded) {
    constexpr int kHs = decltype(padded)::value;
    const dim3 grid(CeilDiv(T, kBlockRows), BH);
    PSRV_LAUNCH(FlashTcBackwardKeysKernel<kHs>, grid, kThreads, 0, stream)
    (q, k, v, qkv_layout, dy, dy_layout, lse, delta, T, hs, scale, dropout, dk, dv, dqkv_layout);
    PSRV_LAUNCH(FlashTcBackwardQueriesKernel<kHs>, grid, kThreads, 0, stream)
    (q, k, v, qkv_layout, dy, dy_layout, lse, delta, T, hs, scale, dropout, dq, dqkv_layout);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace psrv

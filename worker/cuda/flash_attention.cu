// Fused causal attention, flash-style: the (T, T) scores and weights are never stored. The
// forward keeps, per query row, a running max and sum of exp (online softmax) over tiles of keys
// held in shared memory, and saves only the row's logsumexp; the backward recomputes the weights
// from it. One thread owns one row (a query, or in the backward's first pass a key) and its
// head-size vector in registers; tiles of the other side are shared by the block. CUDA cores in
// fp32 (no tensor cores), no atomics: the backward computes dk/dv (per key) and dq (per query) in
// two passes, so results are bitwise reproducible. Attention dropout draws the same mask as the
// materialised path (element (bh, t, t2) of the (B, NH, T, T) weights).
#include <cmath>

#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

// Rows per block (one warp) and rows per shared tile.
constexpr int kTile = 32;

__device__ __forceinline__ size_t DropoutIndex(size_t bh, int T, int t, int t2) {
  return (bh * T + t) * static_cast<size_t>(T) + t2;
}

// Loads rows [r0, r0 + kTile) of a (T, hs) head into tile (kTile, Stride) as floats, zeros past
// T and past hs. Every thread of the block must call it.
template <int kHs, int kStride>
__device__ __forceinline__ void LoadTile(const bf16* head, int T, int hs, int r0,
                                         float (*tile)[kStride], float scale = 1.0f) {
  for (int e = threadIdx.x; e < kTile * kHs; e += kTile) {
    const int r = e / kHs, d = e % kHs;
    const int row = r0 + r;
    tile[r][d] = row < T && d < hs ? ToFloat(head[static_cast<size_t>(row) * hs + d]) * scale : 0.0f;
  }
}

template <int kHs>
__global__ void __launch_bounds__(kTile)
    FlashForwardKernel(const bf16* q, const bf16* k, const bf16* v, int T, int hs, float scale,
                       Dropout dropout, bf16* out, float* lse) {
  __shared__ float ks[kTile][kHs];
  __shared__ float vs[kTile][kHs];
  const size_t bh = blockIdx.y;
  const size_t head = bh * T * hs;
  const int t0 = blockIdx.x * kTile;
  const int t = t0 + threadIdx.x;
  const bool active = t < T;
  float qr[kHs], o[kHs];
#pragma unroll
  for (int d = 0; d < kHs; ++d) {
    qr[d] = active && d < hs ? ToFloat(q[head + static_cast<size_t>(t) * hs + d]) * scale : 0.0f;
    o[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int last = min(T, t0 + kTile) - 1;  // the block's last query sees keys 0..last
  for (int j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();  // the previous tiles are consumed
    LoadTile<kHs, kHs>(k + head, T, hs, j0, ks);
    LoadTile<kHs, kHs>(v + head, T, hs, j0, vs);
    __syncthreads();
    if (!active) continue;
    const int count = min(kTile, t - j0 + 1);  // keys j0 .. t of this tile
    for (int jj = 0; jj < count; ++jj) {
      float s = 0.0f;
#pragma unroll
      for (int d = 0; d < kHs; ++d) s += qr[d] * ks[jj][d];
      if (s > m) {
        const float c = m == -INFINITY ? 0.0f : expf(m - s);
        l *= c;
#pragma unroll
        for (int d = 0; d < kHs; ++d) o[d] *= c;
        m = s;
      }
      const float p = expf(s - m);
      l += p;
      const float pd = p * DropoutScale(dropout, DropoutIndex(bh, T, t, j0 + jj));
#pragma unroll
      for (int d = 0; d < kHs; ++d) o[d] += pd * vs[jj][d];
    }
  }
  if (!active) return;
  const float inv = 1.0f / l;
  // Unrolled over kHs (a runtime bound would move o[] from registers to local memory).
#pragma unroll
  for (int d = 0; d < kHs; ++d) {
    if (d < hs) out[head + static_cast<size_t>(t) * hs + d] = ToBf16(o[d] * inv);
  }
  lse[bh * T + t] = m + logf(l);
}

// delta[bh, t] = sum over d of dout * out, both (B, T, NH * hs) with the heads side by side.
__global__ void FlashDeltaKernel(const bf16* dout, const bf16* out, int T, int NH, int hs,
                                 size_t rows, float* delta) {
  const size_t row = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;  // (b, h, t)
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  const size_t bh = row / T;
  const int h = static_cast<int>(bh % NH);
  const size_t b = bh / NH;
  const size_t at = (b * T + t) * static_cast<size_t>(NH) * hs + static_cast<size_t>(h) * hs;
  float sum = 0.0f;
  for (int d = 0; d < hs; ++d) sum += ToFloat(dout[at + d]) * ToFloat(out[at + d]);
  delta[row] = sum;
}

// One thread per key j: dk_j = scale * sum_i ds_ij q_i and dv_j = sum_i p_ij mask_ij do_i over
// the queries i >= j, tiles of queries shared.
template <int kHs>
__global__ void __launch_bounds__(kTile)
    FlashBackwardKeysKernel(const bf16* q, const bf16* k, const bf16* v, const bf16* dy,
                            const float* lse, const float* delta, int T, int hs, float scale,
                            Dropout dropout, bf16* dk, bf16* dv) {
  __shared__ float kown[kTile][kHs + 1];  // +1: threads read different rows, conflict-free
  __shared__ float vown[kTile][kHs + 1];
  __shared__ float qs[kTile][kHs];
  __shared__ float dys[kTile][kHs];
  __shared__ float lses[kTile];
  __shared__ float deltas[kTile];
  const size_t bh = blockIdx.y;
  const size_t head = bh * T * hs;
  const int j0 = blockIdx.x * kTile;
  const int x = threadIdx.x;
  const int j = j0 + x;
  const bool active = j < T;
  LoadTile<kHs, kHs + 1>(k + head, T, hs, j0, kown, scale);
  LoadTile<kHs, kHs + 1>(v + head, T, hs, j0, vown);
  float dkacc[kHs], dvacc[kHs];
#pragma unroll
  for (int d = 0; d < kHs; ++d) dkacc[d] = dvacc[d] = 0.0f;
  for (int i0 = j0; i0 < T; i0 += kTile) {
    __syncthreads();
    LoadTile<kHs, kHs>(q + head, T, hs, i0, qs);
    LoadTile<kHs, kHs>(dy + head, T, hs, i0, dys);
    lses[x] = i0 + x < T ? lse[bh * T + i0 + x] : 0.0f;
    deltas[x] = i0 + x < T ? delta[bh * T + i0 + x] : 0.0f;
    __syncthreads();
    if (!active) continue;
    const int end = min(kTile, T - i0);
    for (int ii = max(0, j - i0); ii < end; ++ii) {  // queries i = i0 + ii >= j
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < kHs; ++d) {
        s += qs[ii][d] * kown[x][d];
        dp += dys[ii][d] * vown[x][d];
      }
      const float p = expf(s - lses[ii]);
      const float mask = DropoutScale(dropout, DropoutIndex(bh, T, i0 + ii, j));
      const float ds = p * (dp * mask - deltas[ii]);
#pragma unroll
      for (int d = 0; d < kHs; ++d) {
        dvacc[d] += p * mask * dys[ii][d];
        dkacc[d] += ds * qs[ii][d];
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < kHs; ++d) {
    if (d < hs) {
      dk[head + static_cast<size_t>(j) * hs + d] = ToBf16(dkacc[d] * scale);
      dv[head + static_cast<size_t>(j) * hs + d] = ToBf16(dvacc[d]);
    }
  }
}

// One thread per query i: dq_i = scale * sum_j ds_ij k_j over the keys j <= i.
template <int kHs>
__global__ void __launch_bounds__(kTile)
    FlashBackwardQueriesKernel(const bf16* q, const bf16* k, const bf16* v, const bf16* dy,
                               const float* lse, const float* delta, int T, int hs, float scale,
                               Dropout dropout, bf16* dq) {
  __shared__ float qown[kTile][kHs + 1];
  __shared__ float dyown[kTile][kHs + 1];
  __shared__ float ks[kTile][kHs];
  __shared__ float vs[kTile][kHs];
  const size_t bh = blockIdx.y;
  const size_t head = bh * T * hs;
  const int i0 = blockIdx.x * kTile;
  const int x = threadIdx.x;
  const int i = i0 + x;
  const bool active = i < T;
  LoadTile<kHs, kHs + 1>(q + head, T, hs, i0, qown, scale);
  LoadTile<kHs, kHs + 1>(dy + head, T, hs, i0, dyown);
  const float row_lse = active ? lse[bh * T + i] : 0.0f;
  const float row_delta = active ? delta[bh * T + i] : 0.0f;
  float dqacc[kHs];
#pragma unroll
  for (int d = 0; d < kHs; ++d) dqacc[d] = 0.0f;
  const int last = min(T, i0 + kTile) - 1;
  for (int j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();
    LoadTile<kHs, kHs>(k + head, T, hs, j0, ks);
    LoadTile<kHs, kHs>(v + head, T, hs, j0, vs);
    __syncthreads();
    if (!active) continue;
    const int count = min(kTile, i - j0 + 1);  // keys j0 .. i of this tile
    for (int jj = 0; jj < count; ++jj) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < kHs; ++d) {
        s += qown[x][d] * ks[jj][d];
        dp += dyown[x][d] * vs[jj][d];
      }
      const float p = expf(s - row_lse);
      const float mask = DropoutScale(dropout, DropoutIndex(bh, T, i, j0 + jj));
      const float ds = p * (dp * mask - row_delta);
#pragma unroll
      for (int d = 0; d < kHs; ++d) dqacc[d] += ds * ks[jj][d];
    }
  }
  if (!active) return;
  // ks holds k unscaled and s used the scaled q, so dq = scale * sum ds k.
#pragma unroll
  for (int d = 0; d < kHs; ++d) {
    if (d < hs) dq[head + static_cast<size_t>(i) * hs + d] = ToBf16(dqacc[d] * scale);
  }
}

}  // namespace

bool FlashAttentionSupports(int hs) { return hs >= 1 && hs <= kFlashMaxHeadSize; }

cudaError_t FlashAttentionForward(const bf16* q, const bf16* k, const bf16* v, int BH, int T,
                                  int hs, float scale, const Dropout& dropout, bf16* out,
                                  float* lse, cudaStream_t stream) {
  return WithFlashHeadSize(hs, BH, T, [&](auto padded) {
    constexpr int kHs = decltype(padded)::value;
    PSRV_LAUNCH(FlashForwardKernel<kHs>, dim3(CeilDiv(T, kTile), BH), kTile, 0, stream)
    (q, k, v, T, hs, scale, dropout, out, lse);
    return cudaGetLastError();
  });
}

cudaError_t FlashAttentionDelta(const bf16* dout, const bf16* out, int B, int T, int NH, int hs,
                                float* delta, cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * NH * T;
  if (rows == 0) return cudaSuccess;
  PSRV_LAUNCH(FlashDeltaKernel, CeilDiv(rows, kBlock), kBlock, 0, stream)
  (dout, out, T, NH, hs, rows, delta);
  return cudaGetLastError();
}

cudaError_t FlashAttentionBackward(const bf16* q, const bf16* k, const bf16* v, const bf16* dy,
                                   const float* lse, const float* delta, int BH, int T, int hs,
                                   float scale, const Dropout& dropout, bf16* dq, bf16* dk,
                                   bf16* dv, cudaStream_t stream) {
  return WithFlashHeadSize(hs, BH, T, [&](auto padded) {
    constexpr int kHs = decltype(padded)::value;
    const dim3 grid(CeilDiv(T, kTile), BH);
    PSRV_LAUNCH(FlashBackwardKeysKernel<kHs>, grid, kTile, 0, stream)
    (q, k, v, dy, lse, delta, T, hs, scale, dropout, dk, dv);
    PSRV_LAUNCH(FlashBackwardQueriesKernel<kHs>, grid, kTile, 0, stream)
    (q, k, v, dy, lse, delta, T, hs, scale, dropout, dq);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace psrv

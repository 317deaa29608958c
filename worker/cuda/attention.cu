// Causal multi-head attention's own kernels: moving heads in and out of (B, NH, T, hs) for
// cuBLAS's batched products, and the causal softmax forward and backward (one warp per row of
// the (T, T) weights), with the attention dropout drawn from the element's index.
#include <cmath>

#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

constexpr int kRowsPerBlock = kBlock / kWarpSize;

__global__ void SplitHeadsKernel(const bf16* in, int T, int NH, int hs, int row_stride, size_t n,
                                 bf16* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    // i indexes out (B, NH, T, hs).
    const int d = static_cast<int>(i % hs);
    const size_t bht = i / hs;
    const int t = static_cast<int>(bht % T);
    const size_t bh = bht / T;
    const int h = static_cast<int>(bh % NH);
    const size_t b = bh / NH;
    out[i] = in[(b * T + t) * row_stride + static_cast<size_t>(h) * hs + d];
  }
}

__global__ void MergeHeadsKernel(const bf16* in, int T, int NH, int hs, int row_stride, size_t n,
                                 bf16* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    // i indexes out's (B, T, NH, hs) columns, so that the writes are contiguous.
    const int d = static_cast<int>(i % hs);
    const size_t bth = i / hs;
    const int h = static_cast<int>(bth % NH);
    const size_t bt = bth / NH;
    const int t = static_cast<int>(bt % T);
    const size_t b = bt / T;
    out[bt * row_stride + static_cast<size_t>(h) * hs + d] = in[((b * NH + h) * T + t) * hs + d];
  }
}

__global__ void __launch_bounds__(kBlock)
    CausalSoftmaxForwardKernel(const float* preatt, size_t rows, int T, Dropout dropout, bf16* att,
                               bf16* att_dropped) {
  const size_t row = blockIdx.x * static_cast<size_t>(kRowsPerBlock) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;  // Whole warps.
  const int t = static_cast<int>(row % T);
  const size_t offset = row * T;
  const float* x = preatt + offset;  // (T); entries t2 > t are not read
  float max = -INFINITY;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) max = fmaxf(max, x[t2]);
  max = WarpMax(max);
  float sum = 0.0f;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) sum += expf(x[t2] - max);
  const float inv_sum = 1.0f / WarpSum(sum);
  for (int t2 = lane; t2 < T; t2 += kWarpSize) {
    const bf16 a = ToBf16(t2 <= t ? expf(x[t2] - max) * inv_sum : 0.0f);
    att[offset + t2] = a;
    if (dropout.enabled) {
      att_dropped[offset + t2] = ToBf16(ToFloat(a) * DropoutScale(dropout, offset + t2));
    }
  }
}

__global__ void __launch_bounds__(kBlock)
    CausalSoftmaxBackwardKernel(const float* datt, const bf16* att, size_t rows, int T, float scale,
                                Dropout dropout, bf16* dpreatt) {
  const size_t row = blockIdx.x * static_cast<size_t>(kRowsPerBlock) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  const size_t offset = row * T;
  const float* da = datt + offset;  // (T) d(loss)/d(weights after dropout)
  const bf16* a = att + offset;     // (T)
  // dot = sum over t2 <= t of att * d(att), with d(att) = d(weights) * mask.
  float dot = 0.0f;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) {
    dot += ToFloat(a[t2]) * (da[t2] * DropoutScale(dropout, offset + t2));
  }
  dot = WarpSum(dot);
  for (int t2 = lane; t2 < T; t2 += kWarpSize) {
    float d = 0.0f;
    if (t2 <= t) {
      d = scale * ToFloat(a[t2]) * (da[t2] * DropoutScale(dropout, offset + t2) - dot);
    }
    dpreatt[offset + t2] = ToBf16(d);
  }
}

}  // namespace

cudaError_t SplitHeads(const bf16* in, int B, int T, int NH, int hs, int row_stride, bf16* out,
                       cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * NH * T * hs;
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(SplitHeadsKernel, ElementwiseBlocks(n), kBlock, 0, stream)
  (in, T, NH, hs, row_stride, n, out);
  return cudaGetLastError();
}

cudaError_t MergeHeads(const bf16* in, int B, int T, int NH, int hs, int row_stride, bf16* out,
                       cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * NH * T * hs;
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(MergeHeadsKernel, ElementwiseBlocks(n), kBlock, 0, stream)
  (in, T, NH, hs, row_stride, n, out);
  return cudaGetLastError();
}

cudaError_t CausalSoftmaxForward(const float* preatt, int BH, int T, const Dropout& dropout,
                                 bf16* att, bf16* att_dropped, cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(BH) * T;
  if (rows == 0) return cudaSuccess;
  PSRV_LAUNCH(CausalSoftmaxForwardKernel, CeilDiv(rows, kRowsPerBlock), kBlock, 0, stream)
  (preatt, rows, T, dropout, att, att_dropped);
  return cudaGetLastError();
}

cudaError_t CausalSoftmaxBackward(const float* datt, const bf16* att, int BH, int T, float scale,
                                  const Dropout& dropout, bf16* dpreatt, cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(BH) * T;
  if (rows == 0) return cudaSuccess;
  PSRV_LAUNCH(CausalSoftmaxBackwardKernel, CeilDiv(rows, kRowsPerBlock), kBlock, 0, stream)
  (datt, att, rows, T, scale, dropout, dpreatt);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

// Fused softmax + cross-entropy: one block per row of logits computes the loss (online max/sum in
// one pass) and, in training, d(loss)/d(logits) in a second pass, without storing probabilities.
// The classifier's form reads bf16 logits and writes their gradient over them, in place, so the
// head holds B*T*V bf16 values and no fp32 logits at all.
#include <cmath>

#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

// (max, sum of exp(x - max)) of two parts of a row, combined. -inf max: an empty part.
__device__ __forceinline__ void MergeMaxSum(float& max, float& sum, float other_max,
                                            float other_sum) {
  const float m = fmaxf(max, other_max);
  if (m == -INFINITY) return;
  sum = (max == -INFINITY ? 0.0f : sum * expf(max - m)) +
        (other_max == -INFINITY ? 0.0f : other_sum * expf(other_max - m));
  max = m;
}

__device__ __forceinline__ float Load(const float* x, int v) { return x[v]; }
__device__ __forceinline__ float Load(const bf16* x, int v) { return ToFloat(x[v]); }

// In: float or bf16. dlogits may be `logits` itself (bf16): each thread reads a value before it
// writes the same index, and every read of the first pass is done before the barrier.
template <int kThreads, typename In>
__global__ void __launch_bounds__(kThreads)
    SoftmaxCrossEntropyKernel(const In* logits, const int32_t* targets, int V, float dscale,
                              float* losses, bf16* dlogits) {
  constexpr int kWarps = kThreads / kWarpSize;
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum[kWarps];
  __shared__ float row_max;
  __shared__ float row_sum;
  const size_t row = blockIdx.x;
  const In* x = logits + row * V;  // (V)
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;

  float max = -INFINITY, sum = 0.0f;
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float xv = Load(x, v);
    if (xv > max) {
      sum = (max == -INFINITY ? 0.0f : sum * expf(max - xv)) + 1.0f;
      max = xv;
    } else {
      sum += expf(xv - max);
    }
  }
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const float other_max = __shfl_xor_sync(0xffffffffu, max, offset);
    const float other_sum = __shfl_xor_sync(0xffffffffu, sum, offset);
    MergeMaxSum(max, sum, other_max, other_sum);
  }
  if (lane == 0) {
    warp_max[warp] = max;
    warp_sum[warp] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = warp_max[0], s = warp_sum[0];
    for (int w = 1; w < kWarps; ++w) MergeMaxSum(m, s, warp_max[w], warp_sum[w]);
    row_max = m;
    row_sum = s;
    const int target = targets[row];
    // -log p[target] = log(sum exp(logit - max)) + max - logit[target]
    losses[row] = logf(s) + m - Load(x, target);
  }
  __syncthreads();
  if (dlogits == nullptr) return;
  const float m = row_max, inv_sum = 1.0f / row_sum;
  const int target = targets[row];
  bf16* d = dlogits + row * V;  // (V)
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float p = expf(Load(x, v) - m) * inv_sum;
    d[v] = ToBf16(dscale * (p - (v == target ? 1.0f : 0.0f)));
  }
}

}  // namespace

namespace {

template <typename In>
cudaError_t Launch(const In* logits, const int32_t* targets, int N, int V, float dscale,
                   float* losses, bf16* dlogits, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  // (Named first: a template argument list's comma would split the macro's arguments.)
  constexpr auto big = &SoftmaxCrossEntropyKernel<1024, In>;
  constexpr auto small = &SoftmaxCrossEntropyKernel<128, In>;
  if (V >= 8192) {
    PSRV_LAUNCH(big, N, 1024, 0, stream)(logits, targets, V, dscale, losses, dlogits);
  } else {
    PSRV_LAUNCH(small, N, 128, 0, stream)(logits, targets, V, dscale, losses, dlogits);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* targets, int N, int V,
                                float dscale, float* losses, bf16* dlogits, cudaStream_t stream) {
  return Launch(logits, targets, N, V, dscale, losses, dlogits, stream);
}

cudaError_t FusedClassifier(bf16* logits, const int32_t* targets, int N, int V, float dscale,
                            float* losses, bool backward, cudaStream_t stream) {
  return Launch<bf16>(logits, targets, N, V, dscale, losses, backward ? logits : nullptr, stream);
}

}  // namespace cuda
}  // namespace psrv

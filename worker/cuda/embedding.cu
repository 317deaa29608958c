// Token + position embedding: forward, and the backward as a gather per distinct token (no
// atomics, so dwte is bitwise reproducible).
#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

__global__ void EmbeddingForwardKernel(const int32_t* tokens, const float* wte, const float* wpe,
                                       int T, int C, size_t n, Dropout dropout, float* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t bt = i / C;
    const int c = static_cast<int>(i % C);
    const int t = static_cast<int>(bt % T);
    const float v =
        wte[static_cast<size_t>(tokens[bt]) * C + c] + wpe[static_cast<size_t>(t) * C + c];
    out[i] = dropout.enabled ? v * DropoutScale(dropout, i) : v;
  }
}

// Block (bucket j, columns blockIdx.y * blockDim.x ...): one thread per column, summing the
// bucket's rows in order.
__global__ void EmbeddingBackwardWteKernel(const float* dout, Dropout dropout,
                                           const int32_t* bucket_tokens,
                                           const int32_t* bucket_starts,
                                           const int32_t* bucket_positions, int C, float* dwte) {
  const int j = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.0f;
  for (int k = bucket_starts[j]; k < bucket_starts[j + 1]; ++k) {
    const size_t i = static_cast<size_t>(bucket_positions[k]) * C + c;
    sum += dout[i] * DropoutScale(dropout, i);
  }
  dwte[static_cast<size_t>(bucket_tokens[j]) * C + c] += sum;
}

// One thread per (t, c): the sum over b.
__global__ void EmbeddingBackwardWpeKernel(const float* dout, Dropout dropout, int B, int T, int C,
                                           float* dwpe) {
  const size_t tc = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t TC = static_cast<size_t>(T) * C;
  if (tc >= TC) return;
  float sum = 0.0f;
  for (int b = 0; b < B; ++b) {
    const size_t i = b * TC + tc;
    sum += dout[i] * DropoutScale(dropout, i);
  }
  dwpe[tc] = sum;
}

}  // namespace

cudaError_t EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, int B,
                             int T, int C, const Dropout& dropout, float* out,
                             cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * T * C;
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(EmbeddingForwardKernel, ElementwiseBlocks(n), kBlock, 0, stream)
  (tokens, wte, wpe, T, C, n, dropout, out);
  return cudaGetLastError();
}

cudaError_t EmbeddingBackwardWte(const float* dout, const Dropout& dropout,
                                 const int32_t* bucket_tokens, const int32_t* bucket_starts,
                                 const int32_t* bucket_positions, int num_buckets, int C,
                                 float* dwte, cudaStream_t stream) {
  if (num_buckets == 0 || C == 0) return cudaSuccess;
  const dim3 grid(num_buckets, CeilDiv(C, kBlock));
  PSRV_LAUNCH(EmbeddingBackwardWteKernel, grid, kBlock, 0, stream)
  (dout, dropout, bucket_tokens, bucket_starts, bucket_positions, C, dwte);
  return cudaGetLastError();
}

cudaError_t EmbeddingBackwardWpe(const float* dout, const Dropout& dropout, int B, int T, int C,
                                 float* dwpe, cudaStream_t stream) {
  const size_t TC = static_cast<size_t>(T) * C;
  if (TC == 0) return cudaSuccess;
  PSRV_LAUNCH(EmbeddingBackwardWpeKernel, CeilDiv(TC, kBlock), kBlock, 0, stream)
  (dout, dropout, B, T, C, dwpe);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

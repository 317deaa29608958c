// GELU (tanh approximation) forward and backward on bf16 activations, fp32 arithmetic. The
// backward recomputes the tanh instead of storing it.
#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

__global__ void GeluForwardKernel(const bf16* inp, size_t n, bf16* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = ToFloat(inp[i]);
    const float t = tanhf(kGeluScale * (x + kGeluCubic * x * x * x));
    out[i] = ToBf16(0.5f * x * (1.0f + t));
  }
}

__global__ void GeluBackwardKernel(const bf16* dout, const bf16* inp, size_t n, bf16* dinp) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dinp[i] = ToBf16(GeluGrad(ToFloat(dout[i]), ToFloat(inp[i])));
  }
}

}  // namespace

cudaError_t GeluForward(const bf16* inp, size_t n, bf16* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(GeluForwardKernel, ElementwiseBlocks(n), kBlock, 0, stream)(inp, n, out);
  return cudaGetLastError();
}

cudaError_t GeluBackward(const bf16* dout, const bf16* inp, size_t n, bf16* dinp,
                         cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(GeluBackwardKernel, ElementwiseBlocks(n), kBlock, 0, stream)(dout, inp, n, dinp);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

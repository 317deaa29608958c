// The residual connection: the fp32 stream plus a bf16 branch through its dropout mask; and the
// fp32 sums and scaling of gradient accumulation.
#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

__global__ void ResidualForwardKernel(const float* a, const bf16* b, Dropout dropout, size_t n,
                                      float* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + ToFloat(b[i]) * DropoutScale(dropout, i);
  }
}

__global__ void AddFloatsKernel(const float* x, size_t n, float* sum) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    sum[i] += x[i];
  }
}

__global__ void ScaleFloatsKernel(float scale, size_t n, float* x) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] *= scale;
  }
}

}  // namespace

cudaError_t AddFloats(const float* x, size_t n, float* sum, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(AddFloatsKernel, ElementwiseBlocks(n), kBlock, 0, stream)(x, n, sum);
  return cudaGetLastError();
}

cudaError_t ScaleFloats(float scale, size_t n, float* x, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(ScaleFloatsKernel, ElementwiseBlocks(n), kBlock, 0, stream)(scale, n, x);
  return cudaGetLastError();
}

cudaError_t ResidualForward(const float* a, const bf16* b, const Dropout& dropout, size_t n,
                            float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(ResidualForwardKernel, ElementwiseBlocks(n), kBlock, 0, stream)
  (a, b, dropout, n, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

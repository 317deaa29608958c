// Dropout masks from a counter-based hash (the CPU model's, so masks are equal on both), and the
// bf16 conversions that apply them.
#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

__global__ void DropoutMaskKernel(Dropout dropout, size_t n, float* mask) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    mask[i] = DropoutScale(dropout, i);
  }
}

__global__ void ToBf16Kernel(const float* x, Dropout dropout, size_t n, bf16* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = DropToBf16(x[i], dropout, i);
  }
}

__global__ void DropoutBf16Kernel(const bf16* x, Dropout dropout, size_t n, bf16* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = ToBf16(ToFloat(x[i]) * DropoutScale(dropout, i));
  }
}

}  // namespace

Dropout MakeDropout(uint64_t seed, uint64_t stream, float p) {
  Dropout d;
  if (!(p > 0.0f)) return d;
  d.enabled = true;
  d.base = SplitMix64(seed ^ SplitMix64(stream ^ 0x243f6a8885a308d3ULL));
  d.threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  d.keep_scale = 1.0f / (1.0f - p);
  return d;
}

cudaError_t DropoutMask(const Dropout& dropout, size_t n, float* mask, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(DropoutMaskKernel, ElementwiseBlocks(n), kBlock, 0, stream)(dropout, n, mask);
  return cudaGetLastError();
}

cudaError_t ToBf16(const float* x, const Dropout& dropout, size_t n, bf16* out,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(ToBf16Kernel, ElementwiseBlocks(n), kBlock, 0, stream)(x, dropout, n, out);
  return cudaGetLastError();
}

cudaError_t DropoutBf16(const bf16* x, const Dropout& dropout, size_t n, bf16* out,
                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(DropoutBf16Kernel, ElementwiseBlocks(n), kBlock, 0, stream)(x, dropout, n, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

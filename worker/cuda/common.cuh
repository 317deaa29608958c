// Device helpers shared by the kernels: reductions, the dropout hash, launch geometry.
#ifndef PSRV_WORKER_CUDA_COMMON_CUH_
#define PSRV_WORKER_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

// PSRV_LAUNCH(kernel, grid, block, shared_bytes, stream)(args...) launches a kernel: with nvcc it
// is kernel<<<grid, block, shared_bytes, stream>>>(args...); with PSRV_CUDA_SIMT (g++, the tests
// that run these kernels on the CPU) the grid runs in emulation/simt.h's execution model.
#ifdef PSRV_CUDA_SIMT
#include "worker/cuda/emulation/simt.h"
#define PSRV_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  ::psrv::simt::Launch(kernel, grid, block, shared_bytes, stream)
#else
#define PSRV_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  kernel<<<grid, block, shared_bytes, stream>>>
#endif

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "worker/cuda/kernels.h"

namespace psrv {
namespace cuda {

constexpr int kWarpSize = 32;
// Threads per block of the elementwise kernels.
constexpr int kBlock = 256;
// Rows summed by one block of the column reductions (layernorm.cu, matmul.cu).
constexpr int kReduceRows = 256;

inline unsigned int CeilDiv(size_t a, size_t b) {
  return static_cast<unsigned int>((a + b - 1) / b);
}

// Blocks of kBlock threads for a grid-stride loop over n elements.
inline unsigned int ElementwiseBlocks(size_t n) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  constexpr size_t kMaxBlocks = 1u << 20;
  return static_cast<unsigned int>(blocks == 0 ? 1 : (blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// The CPU model's hash (gpt_kernels.cc); integer arithmetic, so bitwise equal on both sides.
__host__ __device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Multiplier of element i of a dropout site: 1 when disabled, else 0 or keep_scale.
__device__ __forceinline__ float DropoutScale(const Dropout& d, uint64_t i) {
  if (!d.enabled) return 1.0f;
  return (SplitMix64(d.base + i) >> 32) < d.threshold ? 0.0f : d.keep_scale;
}

__device__ __forceinline__ float ToFloat(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 ToBf16(float x) { return __float2bfloat16_rn(x); }

// x times its dropout multiplier, rounded to bf16: one element of ToBf16 (dropout.cu) and of the
// fused ToBf16Bias (matmul.cu).
__device__ __forceinline__ bf16 DropToBf16(float x, const Dropout& d, uint64_t i) {
  return ToBf16(x * DropoutScale(d, i));
}

// GELU, tanh approximation (gelu.cu), and its backward for one element: dout * gelu'(x), the tanh
// recomputed. One definition for GeluBackward and the fused GeluBackwardBias (matmul.cu), so that
// both give the same bits.
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;

__device__ __forceinline__ float GeluGrad(float dout, float x) {
  const float t = tanhf(kGeluScale * (x + kGeluCubic * x * x * x));
  const float local =
      0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
  return dout * local;
}

// Sums partial (chunks, C) over its chunks in order into out (C), overwritten: the second stage of
// the deterministic column reductions. A template so that each .cu file (its own device module,
// no relocatable device code) instantiates its own copy.
template <typename Float = float>
__global__ void SumChunksKernel(const Float* partial, int chunks, int C, Float* out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  Float sum = 0.0f;
  for (int j = 0; j < chunks; ++j) sum += partial[static_cast<size_t>(j) * C + c];
  out[c] = sum;
}

// The flash kernels' launch checks and head-size templates: cudaErrorInvalidValue for a head size
// outside 1..kFlashMaxHeadSize or BH > 65535, cudaSuccess at once for an empty problem, else
// launch(std::integral_constant<int, kHs>()) with hs padded to kHs = 16, 32 or 64.
template <typename Launch>
cudaError_t WithFlashHeadSize(int hs, int BH, int T, Launch&& launch) {
  if (hs < 1 || hs > kFlashMaxHeadSize || BH > 65535) return cudaErrorInvalidValue;
  if (BH == 0 || T == 0) return cudaSuccess;
  if (hs <= 16) return launch(std::integral_constant<int, 16>());
  if (hs <= 32) return launch(std::integral_constant<int, 32>());
  return launch(std::integral_constant<int, 64>());
}

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_COMMON_CUH_

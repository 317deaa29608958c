// The bias of the matrix products (the products themselves run in cuBLAS, blas.cc): adding it when
// cuBLASLt's epilogue is not used, and its gradient as a deterministic column sum.
#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

constexpr int kColumnTile = 32;
constexpr int kRowLanes = 8;

__global__ void AddBiasKernel(const bf16* bias, int OC, size_t n, bf16* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = ToBf16(ToFloat(out[i]) + ToFloat(bias[i % OC]));
  }
}

// Block (column tile, row chunk): partial[chunk, c] = sum over the chunk's rows of dout[r, c].
__global__ void BiasPartialKernel(const bf16* dout, int N, int OC, float* partial) {
  __shared__ float lanes[kRowLanes][kColumnTile + 1];
  const int c = blockIdx.x * kColumnTile + threadIdx.x;
  const int chunk = blockIdx.y;
  const int r0 = chunk * kReduceRows;
  const int r1 = min(N, r0 + kReduceRows);
  float sum = 0.0f;
  if (c < OC) {
    for (int r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      sum += ToFloat(dout[static_cast<size_t>(r) * OC + c]);
    }
  }
  lanes[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float total = 0.0f;
    for (int y = 0; y < kRowLanes; ++y) total += lanes[y][threadIdx.x];
    partial[static_cast<size_t>(chunk) * OC + c] = total;
  }
}

int Chunks(int N) { return static_cast<int>(CeilDiv(N, kReduceRows)); }

}  // namespace

cudaError_t AddBias(const bf16* bias, int N, int OC, bf16* out, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(N) * OC;
  if (n == 0) return cudaSuccess;
  PSRV_LAUNCH(AddBiasKernel, ElementwiseBlocks(n), kBlock, 0, stream)(bias, OC, n, out);
  return cudaGetLastError();
}

size_t BiasBackwardScratch(int N, int OC) { return static_cast<size_t>(Chunks(N)) * OC; }

cudaError_t BiasBackward(const bf16* dout, int N, int OC, float* dbias, float* scratch,
                         cudaStream_t stream) {
  if (OC == 0) return cudaSuccess;
  if (N == 0) return cudaMemsetAsync(dbias, 0, OC * sizeof(float), stream);
  const int chunks = Chunks(N);
  PSRV_LAUNCH(BiasPartialKernel, dim3(CeilDiv(OC, kColumnTile), chunks),
              dim3(kColumnTile, kRowLanes), 0, stream)
  (dout, N, OC, scratch);
  PSRV_LAUNCH(SumChunksKernel<float>, CeilDiv(OC, kBlock), kBlock, 0, stream)
  (scratch, chunks, OC, dbias);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

// The bias of the matrix products (the products themselves run in cuBLAS, blas.cc): adding it when
// cuBLASLt's epilogue is not used, and its gradient as a deterministic column sum, alone or fused
// with the kernel that makes the product's output gradient (GELU's backward, the bf16 conversion of
// the residual gradient, the merge of q's, k's and v's heads), so that it is read once, not twice.
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

// Where a column sum reads its values: dout itself (BiasBackward), or a value computed, stored and
// summed in the same pass (the fused kernels). source(r, c, i) gives element (r, c), i = r * OC + c
// of the (N, OC) result; each is visited by one thread once, so a source may write in place over
// what it reads.
struct ReadBf16 {
  const bf16* dout;
  __device__ float operator()(int, int, size_t i) const { return ToFloat(dout[i]); }
};

struct GeluBackwardSource {  // dinp = GeluBackward(dout, inp)
  const bf16* dout;
  const bf16* inp;
  bf16* dinp;
  __device__ float operator()(int, int, size_t i) const {
    const bf16 v = ToBf16(GeluGrad(ToFloat(dout[i]), ToFloat(inp[i])));
    dinp[i] = v;
    return ToFloat(v);
  }
};

struct ToBf16Source {  // out = ToBf16(x, dropout)
  const float* x;
  Dropout dropout;
  bf16* out;
  __device__ float operator()(int, int, size_t i) const {
    const bf16 v = DropToBf16(x[i], dropout, i);
    out[i] = v;
    return ToFloat(v);
  }
};

struct MergeQkvSource {  // dqkv (N = B*T, 3C) = dqkvr (3, B, NH, T, hs) merged (MergeHeads)
  const bf16* dqkvr;
  bf16* dqkv;
  int T, NH, hs;
  size_t part_elements;  // N * C: one of q, k, v in dqkvr
  __device__ float operator()(int r, int c, size_t i) const {
    const int C = NH * hs, part = c / C, h = (c - part * C) / hs, d = c - part * C - h * hs;
    const int b = r / T, t = r - b * T;
    const bf16 v = dqkvr[part * part_elements +
                         ((static_cast<size_t>(b) * NH + h) * T + t) * hs + d];
    dqkv[i] = v;
    return ToFloat(v);
  }
};

// Block (column tile, row chunk): partial[chunk, c] = sum over the chunk's rows of source(r, c).
template <typename Source>
__global__ void BiasPartialKernel(Source source, int N, int OC, float* partial) {
  __shared__ float lanes[kRowLanes][kColumnTile + 1];
  const int c = blockIdx.x * kColumnTile + threadIdx.x;
  const int chunk = blockIdx.y;
  const int r0 = chunk * kReduceRows;
  const int r1 = min(N, r0 + kReduceRows);
  float sum = 0.0f;
  if (c < OC) {
    for (int r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      sum += source(r, c, static_cast<size_t>(r) * OC + c);
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

// dbias (OC) = the column sums of source over (N, OC), in two deterministic launches.
template <typename Source>
cudaError_t ColumnSums(Source source, int N, int OC, float* dbias, float* scratch,
                       cudaStream_t stream) {
  if (OC == 0) return cudaSuccess;
  if (N == 0) return cudaMemsetAsync(dbias, 0, OC * sizeof(float), stream);
  const int chunks = Chunks(N);
  PSRV_LAUNCH(BiasPartialKernel<Source>, dim3(CeilDiv(OC, kColumnTile), chunks),
              dim3(kColumnTile, kRowLanes), 0, stream)
  (source, N, OC, scratch);
  PSRV_LAUNCH(SumChunksKernel<float>, CeilDiv(OC, kBlock), kBlock, 0, stream)
  (scratch, chunks, OC, dbias);
  return cudaGetLastError();
}

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
  return ColumnSums(ReadBf16{dout}, N, OC, dbias, scratch, stream);
}

cudaError_t GeluBackwardBias(const bf16* dout, const bf16* inp, int N, int OC, bf16* dinp,
                             float* dbias, float* scratch, cudaStream_t stream) {
  return ColumnSums(GeluBackwardSource{dout, inp, dinp}, N, OC, dbias, scratch, stream);
}

cudaError_t ToBf16Bias(const float* x, const Dropout& dropout, int N, int OC, bf16* out,
                       float* dbias, float* scratch, cudaStream_t stream) {
  return ColumnSums(ToBf16Source{x, dropout, out}, N, OC, dbias, scratch, stream);
}

cudaError_t MergeQkvBias(const bf16* dqkvr, int B, int T, int NH, int hs, bf16* dqkv,
                         float* dbias, float* scratch, cudaStream_t stream) {
  const int N = B * T, C = NH * hs;
  const MergeQkvSource source{dqkvr, dqkv, T, NH, hs, static_cast<size_t>(N) * C};
  return ColumnSums(source, N, 3 * C, dbias, scratch, stream);
}

}  // namespace cuda
}  // namespace psrv

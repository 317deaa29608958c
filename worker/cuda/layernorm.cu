// LayerNorm forward and backward: one warp per row; the parameter gradients are column sums over
// the rows, reduced in two deterministic stages (row chunks, then the chunks in order).
#include "worker/cuda/common.cuh"

namespace psrv {
namespace cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = kBlock / kWarpSize;
// The first stage's block: 32 columns by 8 row lanes.
constexpr int kColumnTile = 32;
constexpr int kRowLanes = 8;

// kResidual: the row is first made as ResidualForward makes it, residual = inp + branch * mask,
// written to `residual` (which may alias inp) and normalized from there: the same values, in the
// same order, as ResidualForward followed by LayerNormForward, in one launch.
template <bool kResidual>
__global__ void __launch_bounds__(kBlock)
    LayerNormForwardKernel(const float* inp, const bf16* branch, Dropout dropout, float* residual,
                           const float* weight, const float* bias, int N, int C, bf16* out,
                           float* mean, float* rstd) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= N) return;  // Whole warps: the row is uniform within a warp.
  const size_t start = static_cast<size_t>(row) * C;
  const float* x = (kResidual ? residual : inp) + start;  // (C)
  float sum = 0.0f;
  if (kResidual) {
    for (int c = lane; c < C; c += kWarpSize) {
      const size_t i = start + c;
      residual[i] = inp[i] + ToFloat(branch[i]) * DropoutScale(dropout, i);
    }
  }
  for (int c = lane; c < C; c += kWarpSize) sum += x[c];
  const float m = WarpSum(sum) / C;
  float sq = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float d = x[c] - m;
    sq += d * d;
  }
  const float s = rsqrtf(WarpSum(sq) / C + kEps);
  bf16* o = out + static_cast<size_t>(row) * C;  // (C)
  for (int c = lane; c < C; c += kWarpSize) o[c] = ToBf16((x[c] - m) * s * weight[c] + bias[c]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

__global__ void __launch_bounds__(kBlock)
    LayerNormBackwardRowsKernel(const bf16* dout, const float* inp, const float* weight,
                                const float* mean, const float* rstd, int N, int C, float* dinp) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= N) return;
  const bf16* d = dout + static_cast<size_t>(row) * C;  // (C)
  const float* x = inp + static_cast<size_t>(row) * C;  // (C)
  float* dx = dinp + static_cast<size_t>(row) * C;      // (C)
  const float m = mean[row], s = rstd[row];
  // The two reductions of the backward: mean(dnorm) and mean(dnorm * norm).
  float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float dnorm = weight[c] * ToFloat(d[c]);
    dnorm_sum += dnorm;
    dnorm_norm_sum += dnorm * ((x[c] - m) * s);
  }
  const float dnorm_mean = WarpSum(dnorm_sum) / C;
  const float dnorm_norm_mean = WarpSum(dnorm_norm_sum) / C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float norm = (x[c] - m) * s;
    dx[c] += s * (weight[c] * ToFloat(d[c]) - dnorm_mean - norm * dnorm_norm_mean);
  }
}

// Block (column tile, row chunk): partial_dweight/partial_dbias[chunk, c] = sums over the chunk's
// rows of dout * norm and dout.
__global__ void LayerNormParamPartialKernel(const bf16* dout, const float* inp, const float* mean,
                                            const float* rstd, int N, int C, float* partial_dweight,
                                            float* partial_dbias) {
  __shared__ float dw_lanes[kRowLanes][kColumnTile + 1];
  __shared__ float db_lanes[kRowLanes][kColumnTile + 1];
  const int c = blockIdx.x * kColumnTile + threadIdx.x;
  const int chunk = blockIdx.y;
  const int r0 = chunk * kReduceRows;
  const int r1 = min(N, r0 + kReduceRows);
  float dw = 0.0f, db = 0.0f;
  if (c < C) {
    for (int r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const size_t i = static_cast<size_t>(r) * C + c;
      const float d = ToFloat(dout[i]);
      dw += d * ((inp[i] - mean[r]) * rstd[r]);
      db += d;
    }
  }
  dw_lanes[threadIdx.y][threadIdx.x] = dw;
  db_lanes[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float dw_sum = 0.0f, db_sum = 0.0f;
    for (int y = 0; y < kRowLanes; ++y) {
      dw_sum += dw_lanes[y][threadIdx.x];
      db_sum += db_lanes[y][threadIdx.x];
    }
    partial_dweight[static_cast<size_t>(chunk) * C + c] = dw_sum;
    partial_dbias[static_cast<size_t>(chunk) * C + c] = db_sum;
  }
}

int Chunks(int N) { return static_cast<int>(CeilDiv(N, kReduceRows)); }

}  // namespace

cudaError_t LayerNormForward(const float* inp, const float* weight, const float* bias, int N, int C,
                             bf16* out, float* mean, float* rstd, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  constexpr auto plain = &LayerNormForwardKernel<false>;
  PSRV_LAUNCH(plain, CeilDiv(N, kRowsPerBlock), kBlock, 0, stream)
  (inp, nullptr, Dropout(), nullptr, weight, bias, N, C, out, mean, rstd);
  return cudaGetLastError();
}

cudaError_t ResidualLayerNormForward(const float* inp, const bf16* branch, const Dropout& dropout,
                                     float* residual, const float* weight, const float* bias,
                                     int N, int C, bf16* out, float* mean, float* rstd,
                                     cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  constexpr auto fused = &LayerNormForwardKernel<true>;
  PSRV_LAUNCH(fused, CeilDiv(N, kRowsPerBlock), kBlock, 0, stream)
  (inp, branch, dropout, residual, weight, bias, N, C, out, mean, rstd);
  return cudaGetLastError();
}

size_t LayerNormBackwardScratch(int N, int C) { return 2 * static_cast<size_t>(Chunks(N)) * C; }

cudaError_t LayerNormBackward(const bf16* dout, const float* inp, const float* weight,
                              const float* mean, const float* rstd, int N, int C, float* dinp,
                              float* dweight, float* dbias, float* scratch, cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  PSRV_LAUNCH(LayerNormBackwardRowsKernel, CeilDiv(N, kRowsPerBlock), kBlock, 0, stream)
  (dout, inp, weight, mean, rstd, N, C, dinp);
  const int chunks = Chunks(N);
  float* partial_dweight = scratch;                                  // (chunks, C)
  float* partial_dbias = scratch + static_cast<size_t>(chunks) * C;  // (chunks, C)
  PSRV_LAUNCH(LayerNormParamPartialKernel, dim3(CeilDiv(C, kColumnTile), chunks),
              dim3(kColumnTile, kRowLanes), 0, stream)
  (dout, inp, mean, rstd, N, C, partial_dweight, partial_dbias);
  PSRV_LAUNCH(SumChunksKernel<float>, CeilDiv(C, kBlock), kBlock, 0, stream)
  (partial_dweight, chunks, C, dweight);
  PSRV_LAUNCH(SumChunksKernel<float>, CeilDiv(C, kBlock), kBlock, 0, stream)
  (partial_dbias, chunks, C, dbias);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace psrv

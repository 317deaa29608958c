// The SIMT simulator (simt.h) keeps CUDA's semantics for what the kernels rely on: built-in
// indices in 3-D grids and blocks, __syncthreads() ordering shared-memory writes before reads,
// warp shuffles (xor, down, up, indexed, with widths), per-thread locals across barriers; and it
// turns barrier misuse and shuffles from exited lanes into launch errors. Its nvcuda::wmma
// (wmma.h) computes tile products in rows and columns as documented, and refuses what CUDA
// forbids (unaligned pointers, leading dimensions not a multiple of 16 bytes).
#include "worker/cuda/emulation/simt.h"

#include <vector>

#include "worker/cuda/emulation/wmma.h"

#include "gtest/gtest.h"

namespace {

using ::psrv::simt::LastErrorMessage;
using ::psrv::simt::Launch;
using ::psrv::simt::TakeLastError;

__global__ void RecordIdsKernel(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  out[block * threads + thread] = block * 1000 + thread;
}

TEST(SimtTest, EveryThreadOfEveryBlockRunsOnceWithItsIndices) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  std::vector<unsigned> out(12 * 24, 0xffffffffu);
  Launch(RecordIdsKernel, grid, block, 0, nullptr)(out.data());
  ASSERT_EQ(TakeLastError(), cudaSuccess);
  for (unsigned b = 0; b < 12; ++b) {
    for (unsigned t = 0; t < 24; ++t) EXPECT_EQ(out[b * 24 + t], b * 1000 + t);
  }
}

// Each thread reads its right neighbour's shared value: correct only if every write happened
// before any read, i.e. if __syncthreads() holds the early threads back.
__global__ void NeighbourKernel(const int* in, int* out) {
  __shared__ int values[128];
  const int t = threadIdx.x;
  const int mine = in[blockIdx.x * blockDim.x + t] * 2;  // a local kept across the barrier
  values[t] = mine;
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = values[(t + 1) % blockDim.x] + mine;
}

TEST(SimtTest, SyncThreadsOrdersSharedMemory) {
  std::vector<int> in(256), out(256, -1);
  for (int i = 0; i < 256; ++i) in[i] = i;
  Launch(NeighbourKernel, 2, 128, 0, nullptr)(in.data(), out.data());
  ASSERT_EQ(TakeLastError(), cudaSuccess);
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t < 128; ++t) {
      EXPECT_EQ(out[b * 128 + t], 2 * in[b * 128 + (t + 1) % 128] + 2 * in[b * 128 + t]);
    }
  }
}

// A block-wide tree reduction: shared memory, a barrier per level.
__global__ void BlockSumKernel(const float* in, float* out) {
  __shared__ float partial[256];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

TEST(SimtTest, TreeReduction) {
  std::vector<float> in(3 * 256), out(3, -1.0f);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 7);
  Launch(BlockSumKernel, 3, 256, 0, nullptr)(in.data(), out.data());
  ASSERT_EQ(TakeLastError(), cudaSuccess);
  for (int b = 0; b < 3; ++b) {
    float want = 0.0f;
    for (int i = 0; i < 256; ++i) want += in[b * 256 + i];
    EXPECT_EQ(out[b], want);
  }
}

__global__ void ShuffleKernel(int* xor_sum, int* down, int* up, int* indexed, int* xor16) {
  const int lane = threadIdx.x % 32;
  const int i = threadIdx.x;
  int v = i;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  xor_sum[i] = v;
  down[i] = __shfl_down_sync(0xffffffffu, i, 3);
  up[i] = __shfl_up_sync(0xffffffffu, i, 5, 16);
  indexed[i] = __shfl_sync(0xffffffffu, i * 10, 7);
  int w = lane;
  for (int offset = 8; offset > 0; offset >>= 1) w += __shfl_xor_sync(0xffffffffu, w, offset, 16);
  xor16[i] = w;
}

TEST(SimtTest, WarpShuffles) {
  const int n = 64;
  std::vector<int> xor_sum(n), down(n), up(n), indexed(n), xor16(n);
  Launch(ShuffleKernel, 1, n, 0, nullptr)(xor_sum.data(), down.data(), up.data(), indexed.data(),
                                          xor16.data());
  ASSERT_EQ(TakeLastError(), cudaSuccess) << LastErrorMessage();
  for (int i = 0; i < n; ++i) {
    const int warp = i / 32, lane = i % 32;
    const int warp_sum = 32 * 32 * warp + 31 * 32 / 2;
    EXPECT_EQ(xor_sum[i], warp_sum) << i;
    EXPECT_EQ(down[i], lane + 3 < 32 ? i + 3 : i) << i;  // beyond the warp: own value
    EXPECT_EQ(up[i], lane % 16 >= 5 ? i - 5 : i) << i;   // within groups of 16
    EXPECT_EQ(indexed[i], (warp * 32 + 7) * 10) << i;    // lane 7 of the same warp
    const int group = lane / 16;
    EXPECT_EQ(xor16[i], 16 * 16 * group + 15 * 16 / 2) << i;  // sums within groups of 16
  }
}

__global__ void ShuffleFromExitedLaneKernel(int* out) {
  if (threadIdx.x % 32 == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

TEST(SimtTest, ShuffleFromAnExitedLaneIsALaunchError) {
  std::vector<int> out(32, 0);
  Launch(ShuffleFromExitedLaneKernel, 1, 32, 0, nullptr)(out.data());
  EXPECT_EQ(TakeLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastErrorMessage().find("has exited"), std::string::npos) << LastErrorMessage();
  EXPECT_EQ(TakeLastError(), cudaSuccess);  // read once, then cleared
}

__global__ void DivergentBarrierKernel(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
  }
}

TEST(SimtTest, ThreadsWaitingAtDifferentBarriersAreALaunchError) {
  std::vector<int> out(64, 0);
  Launch(DivergentBarrierKernel, 4, 64, 0, nullptr)(out.data());
  EXPECT_EQ(TakeLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastErrorMessage().find("deadlock"), std::string::npos) << LastErrorMessage();
  // The simulator recovers: the next launch runs normally.
  std::vector<unsigned> ids(8);
  Launch(RecordIdsKernel, 2, 4, 0, nullptr)(ids.data());
  EXPECT_EQ(TakeLastError(), cudaSuccess);
  EXPECT_EQ(ids[7], 1003u);
}

TEST(SimtTest, BadLaunchConfigurations) {
  std::vector<unsigned> ids(2048);
  Launch(RecordIdsKernel, 1, 2048, 0, nullptr)(ids.data());
  EXPECT_EQ(TakeLastError(), cudaErrorInvalidConfiguration);
  Launch(RecordIdsKernel, 0, 32, 0, nullptr)(ids.data());
  EXPECT_EQ(TakeLastError(), cudaErrorInvalidConfiguration);
}

namespace wmma = nvcuda::wmma;

// d (16 x 16, row stride ldd) = a (16 x 16, row-major, stride 24) times b (col-major, stride 24)
// plus c (16 x 16 floats, col-major, stride 16); the product through shared memory as kernels do.
__global__ void WmmaKernel(const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c,
                           float* d, unsigned ldd) {
  __shared__ __align__(32) float staged[16 * 20];
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 24);
  wmma::load_matrix_sync(fb, b, 24);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_col_major);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(staged, acc, 20, wmma::mem_row_major);
  __syncwarp();
  for (int e = threadIdx.x; e < 256; e += 32) {
    d[(e / 16) * ldd + e % 16] = staged[(e / 16) * 20 + e % 16];
  }
}

struct WmmaInputs {
  WmmaInputs() {
    for (int i = 0; i < 16 * 24; ++i) {
      a[i] = __float2bfloat16_rn(static_cast<float>(i % 7) - 3.0f);
      b[i] = __float2bfloat16_rn(static_cast<float>(i % 5) * 0.5f);
    }
    for (int i = 0; i < 256; ++i) c[i] = static_cast<float>(i);
  }
  alignas(32) __nv_bfloat16 a[16 * 24];
  alignas(32) __nv_bfloat16 b[16 * 24];
  alignas(32) float c[256];
};

TEST(SimtTest, WmmaMultipliesTilesInTheirLayouts) {
  WmmaInputs in;
  std::vector<float> d(16 * 16, -1.0f);
  Launch(WmmaKernel, 1, 32, 0, nullptr)(in.a, in.b, in.c, d.data(), 16u);
  ASSERT_EQ(TakeLastError(), cudaSuccess) << LastErrorMessage();
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 16; ++n) {
      float want = in.c[n * 16 + m];  // c is column-major
      for (int k = 0; k < 16; ++k) {
        want += __bfloat162float(in.a[m * 24 + k]) * __bfloat162float(in.b[n * 24 + k]);
      }
      EXPECT_EQ(d[m * 16 + n], want) << m << "," << n;
    }
  }
}

TEST(SimtTest, WmmaRefusesWhatCudaForbids) {
  WmmaInputs in;
  std::vector<float> d(16 * 16);
  // A pointer 16 bytes past a 32-byte boundary.
  Launch(WmmaKernel, 1, 32, 0, nullptr)(in.a + 8, in.b, in.c, d.data(), 16u);
  EXPECT_EQ(TakeLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastErrorMessage().find("256-bit aligned"), std::string::npos) << LastErrorMessage();
}

__global__ void WmmaBadLdmKernel(const float* c) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(acc, c, 18, wmma::mem_row_major);  // 72 bytes: not a multiple of 16
}

TEST(SimtTest, WmmaRefusesALeadingDimensionNotAMultipleOf16Bytes) {
  alignas(32) static float c[16 * 18];
  Launch(WmmaBadLdmKernel, 1, 32, 0, nullptr)(c);
  EXPECT_EQ(TakeLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastErrorMessage().find("ldm 18"), std::string::npos) << LastErrorMessage();
}

}  // namespace

__global__ void AddKernel(int* data, int value) { data[threadIdx.x] += value; }

// Stream capture (emulation/cuda_runtime.cc): work enqueued on a captured stream runs only when
// the graph is launched, with the arguments it was captured with, as often as it is launched; an
// update takes the same work with other arguments and refuses other work; a call that waits for
// the device during a capture fails and invalidates it.
TEST(SimtTest, CapturedWorkRunsWhenTheGraphIsLaunched) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::vector<int> data(4, 1);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(data.data(), 0, 4 * sizeof(int), stream), cudaSuccess);
  Launch(AddKernel, 1, 4, 0, stream)(data.data(), 5);
  Launch(AddKernel, 1, 4, 0, nullptr)(data.data(), 100);  // another stream: runs now
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_EQ(data, std::vector<int>(4, 101));
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  EXPECT_EQ(data, std::vector<int>(4, 5));
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);  // the memset, then +5 again
  EXPECT_EQ(data, std::vector<int>(4, 5));

  // The same work with another argument updates the instance.
  cudaGraph_t other = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(data.data(), 0, 4 * sizeof(int), stream), cudaSuccess);
  Launch(AddKernel, 1, 4, 0, stream)(data.data(), 7);
  ASSERT_EQ(cudaStreamEndCapture(stream, &other), cudaSuccess);
  cudaGraphExecUpdateResultInfo info;
  ASSERT_EQ(cudaGraphExecUpdate(exec, other, &info), cudaSuccess);
  EXPECT_EQ(info.result, cudaGraphExecUpdateSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  EXPECT_EQ(data, std::vector<int>(4, 7));
  ASSERT_EQ(cudaGraphDestroy(other), cudaSuccess);

  // Other work (one kernel more) does not.
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  Launch(AddKernel, 1, 4, 0, stream)(data.data(), 1);
  Launch(AddKernel, 1, 4, 0, stream)(data.data(), 1);
  ASSERT_EQ(cudaStreamEndCapture(stream, &other), cudaSuccess);
  EXPECT_EQ(cudaGraphExecUpdate(exec, other, &info), cudaErrorGraphExecUpdateFailure);
  EXPECT_EQ(info.result, cudaGraphExecUpdateErrorTopologyChanged);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);  // still the memset and +7
  EXPECT_EQ(data, std::vector<int>(4, 7));
  ASSERT_EQ(cudaGraphDestroy(other), cudaSuccess);

  // Waiting for the device inside a capture: refused, and the capture is lost.
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  Launch(AddKernel, 1, 4, 0, stream)(data.data(), 1);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorStreamCaptureUnsupported);
  void* memory = nullptr;
  EXPECT_EQ(cudaMalloc(&memory, 16), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream, &other), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(other, nullptr);
  EXPECT_EQ(data, std::vector<int>(4, 7));  // nothing ran
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);  // after the capture: fine

  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

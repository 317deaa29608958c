// A CUDA execution model on the CPU, so that the real kernels (worker/cuda/*.cu, unchanged) run and
// are tested without a GPU: g++ compiles a .cu file with PSRV_CUDA_SIMT defined (common.cuh then
// includes this header) and every PSRV_LAUNCH runs its grid here, block after block. Each thread of
// a block is a fiber with its own stack, so the kernels keep their SIMT semantics:
// - __syncthreads() suspends the thread until every live thread of its block arrived;
// - warp shuffles (__shfl_xor_sync, __shfl_down_sync, __shfl_up_sync, __shfl_sync) exchange values
//   between the 32 lanes of a warp, each lane suspended until all live lanes of the warp arrived;
// - __shared__ variables are per-block (one block runs at a time on a host thread);
// - threadIdx, blockIdx, blockDim and gridDim are the running thread's.
// What a GPU would do unpredictably becomes a launch error (cudaGetLastError() answers
// cudaErrorLaunchFailure, the reason is in LastErrorMessage() and on stderr): a shuffle that reads
// a lane that has exited or does not exist, and a block whose threads wait at different barriers
// (a __syncthreads() some threads never reach while others wait at a shuffle).
//
// Not modelled: timing, memory coalescing, bank conflicts, atomics, dynamic shared memory,
// cooperative groups; device memory is host memory (emulation/cuda_runtime.cc). Tests only.
#ifndef PSRV_WORKER_CUDA_EMULATION_SIMT_H_
#define PSRV_WORKER_CUDA_EMULATION_SIMT_H_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace psrv {
namespace simt {

// The indices of the thread being run.
struct ThreadIds {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The running thread's indices; only valid inside a kernel run by RunGrid.
const ThreadIds& Current();

// __syncthreads(): suspends the running thread until every live thread of the block arrived.
void SyncThreads();

// __syncwarp(): suspends the running thread until every live lane of its warp arrived.
void SyncWarp();

// The warp exchange under every shuffle: publishes `bits` for the running lane, waits for the
// warp, and returns what lane `source_lane` (0..31 of the same warp) published. A source lane
// that does not exist or has exited is a launch error (the thread gets its own value back).
uint64_t ExchangeInWarp(uint64_t bits, int source_lane);

// The running thread's lane (0..31) in its warp.
int LaneId();

// Runs `thread_body` once for every thread of every block of the grid, blocks one after another,
// the threads of a block as fibers. After a launch error the remaining blocks are skipped.
void RunGrid(dim3 grid, dim3 block, size_t dynamic_shared_bytes,
             const std::function<void()>& thread_body);

// cudaGetLastError() of the emulated runtime: the first launch error since the last call
// (cudaErrorLaunchFailure) or cudaSuccess, cleared by the call.
cudaError_t TakeLastError();

// The reason of the last launch error ("" if none since the process started).
std::string LastErrorMessage();

// Records a launch error found outside RunGrid (a bad launch configuration).
void SetLaunchError(const std::string& message);

// Records a launch error found by the running thread (a misuse of an emulated CUDA function, e.g.
// emulation/wmma.h's alignment rules); the message gets the thread's block and index.
void KernelFault(const std::string& message);

// Stream capture (cudaStreamBeginCapture ... cudaStreamEndCapture, emulation/cuda_runtime.cc):
// work enqueued on a stream being captured is recorded instead of run; it runs, in order, each
// time a graph instantiated from the capture is launched. Runs `work` now unless `stream` is being
// captured; `what` names the work (a kernel, "memcpy", "gemm"...): a graph update must find the
// same names in the same order (stricter than CUDA's cudaGraphExecUpdate, which wants the same
// nodes in the same order but lets a kernel node change its function).
void Enqueue(cudaStream_t stream, const void* what, std::function<void()> work);

// `kernel<<<grid, block, shared_bytes, stream>>>(args...)` is
// `Launch(kernel, grid, block, shared_bytes, stream)(args...)` here: the arguments are converted
// to the kernel's parameter types once (as a launch copies them), and each thread gets its own
// copy of the parameters.
template <typename... Params>
class Launcher {
 public:
  Launcher(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
           cudaStream_t stream)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}

  // Runs the grid now, or records it (with its arguments) on a stream being captured.
  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "wrong number of kernel arguments");
    const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    auto* kernel = kernel_;
    const dim3 grid = grid_, block = block_;
    const size_t shared_bytes = shared_bytes_;
    Enqueue(stream_, reinterpret_cast<const void*>(kernel),
            [params, kernel, grid, block, shared_bytes] {
              RunGrid(grid, block, shared_bytes, [&params, kernel] { std::apply(kernel, params); });
            });
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_;
  dim3 block_;
  size_t shared_bytes_;
  cudaStream_t stream_;
};

template <typename... Params>
Launcher<Params...> Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                           cudaStream_t stream) {
  return Launcher<Params...>(kernel, grid, block, shared_bytes, stream);
}

template <typename T>
T Shuffle(T value, int source_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                "shuffles move up to 8 bytes of plain data");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ExchangeInWarp(bits, source_lane);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace simt
}  // namespace psrv

// ---- The CUDA C++ surface the kernels use, for the host compiler ----

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time on a host thread, so a function-local static per host thread is the
// block's shared memory.
#define __shared__ static thread_local

#define threadIdx (::psrv::simt::Current().thread_idx)
#define blockIdx (::psrv::simt::Current().block_idx)
#define blockDim (::psrv::simt::Current().block_dim)
#define gridDim (::psrv::simt::Current().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::psrv::simt::SyncThreads(); }
inline void __syncwarp(unsigned int /*mask*/ = 0xffffffffu) { ::psrv::simt::SyncWarp(); }

template <typename T>
T __shfl_sync(unsigned int /*mask*/, T var, int src_lane, int width = 32) {
  const int lane = ::psrv::simt::LaneId();
  return ::psrv::simt::Shuffle(var, lane / width * width + src_lane % width);
}

template <typename T>
T __shfl_xor_sync(unsigned int /*mask*/, T var, int lane_mask, int width = 32) {
  const int lane = ::psrv::simt::LaneId();
  const int source = lane ^ lane_mask;
  // A lane may read its own or an earlier group of `width` lanes, else gets its own value.
  return ::psrv::simt::Shuffle(var, source / width > lane / width ? lane : source);
}

template <typename T>
T __shfl_down_sync(unsigned int /*mask*/, T var, unsigned int delta, int width = 32) {
  const int lane = ::psrv::simt::LaneId();
  const int in_group = lane % width + static_cast<int>(delta);
  return ::psrv::simt::Shuffle(var, in_group >= width ? lane : lane + static_cast<int>(delta));
}

template <typename T>
T __shfl_up_sync(unsigned int /*mask*/, T var, unsigned int delta, int width = 32) {
  const int lane = ::psrv::simt::LaneId();
  const int in_group = lane % width - static_cast<int>(delta);
  return ::psrv::simt::Shuffle(var, in_group < 0 ? lane : lane - static_cast<int>(delta));
}

// Device math the host's <cmath> lacks (the GPU's fast versions are approximations of these).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline int min(int a, int b) { return std::min(a, b); }
inline int max(int a, int b) { return std::max(a, b); }
inline unsigned int min(unsigned int a, unsigned int b) { return std::min(a, b); }
inline unsigned int max(unsigned int a, unsigned int b) { return std::max(a, b); }
inline long long min(long long a, long long b) { return std::min(a, b); }
inline long long max(long long a, long long b) { return std::max(a, b); }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return std::min(a, b); }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return std::max(a, b); }
template <typename T>
T __ldg(const T* p) {
  return *p;
}

#endif  // PSRV_WORKER_CUDA_EMULATION_SIMT_H_

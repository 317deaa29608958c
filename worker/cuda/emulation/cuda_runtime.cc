// A stand-in for the CUDA runtime, so that the GPU code runs on the CPU in the *_simt_test
// targets (worker/cuda/BUILD): one "device" (the SIMT simulator, emulation/simt.h) whose memory is
// host memory; streams are placeholders; copies, memsets and kernels run at once, in order.
// cudaGetLastError() reports the simulator's launch errors. Tests only.
//
// Stream capture and graphs: while a stream is captured, the copies, memsets, kernels and products
// enqueued on it are recorded (psrv::simt::Enqueue) and run when the graph is launched. As with
// CUDA's global capture mode, a call that would wait for the device or allocate (a synchronous
// copy, a synchronize, cudaMalloc...) fails with cudaErrorStreamCaptureUnsupported while any
// capture is open, and invalidates it: a capture that reads a device result on the host fails
// here as on a GPU. cudaGraphExecUpdate takes a graph of the same work in the same order (its
// arguments and launch shapes may differ; CUDA would also let a kernel node change its function);
// otherwise cudaErrorGraphExecUpdateFailure.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "worker/cuda/emulation/simt.h"

namespace {

// Recorded work: what it is (for graph updates) and the work.
using Work = std::vector<std::pair<const void*, std::function<void()>>>;

struct Capture {
  Work work;
  bool invalidated = false;
};

// Streams being captured. Tests drive the emulated device from one thread at a time.
std::map<cudaStream_t, Capture>& Captures() {
  static auto* captures = new std::map<cudaStream_t, Capture>;
  return *captures;
}

// cudaGraph_t and cudaGraphExec_t both point to one of these.
struct EmulatedGraph {
  Work work;
};

// cudaErrorStreamCaptureUnsupported (and every open capture invalidated) if a capture is open.
cudaError_t RefuseWhileCapturing() {
  if (Captures().empty()) return cudaSuccess;
  for (auto& [stream, capture] : Captures()) capture.invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}

// Tags of the runtime's own recorded work.
const char kMemcpyTag = 0, kMemsetTag = 0;

// 256-byte aligned like cudaMalloc, and exactly `bytes` long, so that an AddressSanitizer build
// of the *_simt_test targets catches a kernel reading or writing past a buffer.
void* AlignedAlloc(size_t bytes) {
  void* p = nullptr;
  return posix_memalign(&p, 256, bytes == 0 ? 1 : bytes) == 0 ? p : nullptr;
}

}  // namespace

namespace psrv {
namespace simt {

void Enqueue(cudaStream_t stream, const void* what, std::function<void()> work) {
  auto capture = Captures().find(stream);
  if (capture == Captures().end()) {
    work();
  } else {
    capture->second.work.emplace_back(what, std::move(work));
  }
}

}  // namespace simt
}  // namespace psrv

extern "C" {

cudaError_t CUDARTAPI cudaSetDevice(int) { return cudaSuccess; }

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = reinterpret_cast<cudaStream_t>(new char[1]);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  delete[] reinterpret_cast<char*>(stream);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) { return RefuseWhileCapturing(); }

cudaError_t CUDARTAPI cudaMalloc(void** pointer, size_t bytes) {
  if (cudaError_t error = RefuseWhileCapturing(); error != cudaSuccess) return error;
  *pointer = AlignedAlloc(bytes);
  return *pointer != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t CUDARTAPI cudaFree(void* pointer) {
  if (cudaError_t error = RefuseWhileCapturing(); error != cudaSuccess) return error;
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMallocHost(void** pointer, size_t bytes) {
  if (cudaError_t error = RefuseWhileCapturing(); error != cudaSuccess) return error;
  *pointer = AlignedAlloc(bytes);
  return *pointer != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t CUDARTAPI cudaFreeHost(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemset(void* pointer, int value, size_t bytes) {
  if (cudaError_t error = RefuseWhileCapturing(); error != cudaSuccess) return error;
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemsetAsync(void* pointer, int value, size_t bytes,
                                      cudaStream_t stream) {
  psrv::simt::Enqueue(stream, &kMemsetTag,
                      [pointer, value, bytes] { std::memset(pointer, value, bytes); });
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind,
                                      cudaStream_t stream) {
  psrv::simt::Enqueue(stream, &kMemcpyTag, [to, from, bytes] { std::memcpy(to, from, bytes); });
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* to, const void* from, size_t bytes, cudaMemcpyKind) {
  if (cudaError_t error = RefuseWhileCapturing(); error != cudaSuccess) return error;
  std::memcpy(to, from, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) { return RefuseWhileCapturing(); }

// Work runs when it is enqueued: host memory needs no pinning, events are always reached.
cudaError_t CUDARTAPI cudaHostRegister(void*, size_t, unsigned int) {
  return RefuseWhileCapturing();
}
cudaError_t CUDARTAPI cudaHostUnregister(void*) { return cudaSuccess; }

cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = reinterpret_cast<cudaEvent_t>(new char[1]);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  delete[] reinterpret_cast<char*>(event);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t) { return RefuseWhileCapturing(); }
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) {
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (Captures().count(stream) != 0) return cudaErrorIllegalState;
  Captures()[stream];
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  auto capture = Captures().find(stream);
  if (capture == Captures().end()) return cudaErrorIllegalState;
  Capture ended = std::move(capture->second);
  Captures().erase(capture);
  *graph = nullptr;
  if (ended.invalidated) return cudaErrorStreamCaptureInvalidated;
  *graph = reinterpret_cast<cudaGraph_t>(new EmulatedGraph{std::move(ended.work)});
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamIsCapturing(cudaStream_t stream,
                                            cudaStreamCaptureStatus* status) {
  *status = Captures().count(stream) != 0 ? cudaStreamCaptureStatusActive
                                          : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t graph) {
  delete reinterpret_cast<EmulatedGraph*>(graph);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                           unsigned long long) {  // NOLINT(runtime/int)
  if (cudaError_t error = RefuseWhileCapturing(); error != cudaSuccess) return error;
  *exec = reinterpret_cast<cudaGraphExec_t>(
      new EmulatedGraph{reinterpret_cast<EmulatedGraph*>(graph)->work});
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph,
                                          cudaGraphExecUpdateResultInfo* info) {
  Work& to = reinterpret_cast<EmulatedGraph*>(exec)->work;
  const Work& from = reinterpret_cast<EmulatedGraph*>(graph)->work;
  bool same = to.size() == from.size();
  for (size_t i = 0; same && i < to.size(); ++i) same = to[i].first == from[i].first;
  if (info != nullptr) {
    std::memset(info, 0, sizeof(*info));
    info->result = same ? cudaGraphExecUpdateSuccess : cudaGraphExecUpdateErrorTopologyChanged;
  }
  if (!same) return cudaErrorGraphExecUpdateFailure;
  to = from;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  for (const auto& [what, work] : reinterpret_cast<EmulatedGraph*>(exec)->work) {
    psrv::simt::Enqueue(stream, what, work);
  }
  // A GPU reports a kernel's fault at the next synchronisation; the simulator, which has run the
  // graph by now, reports it here (kernel wrappers check cudaGetLastError() at each launch
  // instead, which in a capture sees nothing).
  return Captures().count(stream) != 0 ? cudaSuccess : psrv::simt::TakeLastError();
}

cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete reinterpret_cast<EmulatedGraph*>(exec);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* properties, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  std::memset(properties, 0, sizeof(*properties));
  std::strncpy(properties->name, "psrv SIMT simulator (CPU)", sizeof(properties->name) - 1);
  properties->major = 9;
  properties->warpSize = 32;
  properties->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = size_t{1} << 32;
  *total_bytes = size_t{1} << 32;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDriverGetVersion(int* version) {
  *version = 0;  // no driver
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetLastError(void) { return psrv::simt::TakeLastError(); }

const char* CUDARTAPI cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorGraphExecUpdateFailure:
      return "cudaErrorGraphExecUpdateFailure";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    default:
      return "cudaErrorUnknown";
  }
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t) {
  return "error in the SIMT simulator's emulated CUDA runtime (see stderr)";
}

}  // extern "C"

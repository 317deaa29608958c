// A stand-in for the CUDA runtime, so that the GPU code runs on the CPU in the *_simt_test
// targets (worker/cuda/BUILD): one "device" (the SIMT simulator, emulation/simt.h) whose memory is
// host memory; streams are placeholders; copies, memsets and kernels run at once, in order.
// cudaGetLastError() reports the simulator's launch errors. Tests only.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

#include "worker/cuda/emulation/simt.h"

namespace {

// 256-byte aligned like cudaMalloc, and exactly `bytes` long, so that an AddressSanitizer build
// of the *_simt_test targets catches a kernel reading or writing past a buffer.
void* AlignedAlloc(size_t bytes) {
  void* p = nullptr;
  return posix_memalign(&p, 256, bytes == 0 ? 1 : bytes) == 0 ? p : nullptr;
}

}  // namespace

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

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t CUDARTAPI cudaMalloc(void** pointer, size_t bytes) {
  *pointer = AlignedAlloc(bytes);
  return *pointer != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t CUDARTAPI cudaFree(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMallocHost(void** pointer, size_t bytes) {
  *pointer = AlignedAlloc(bytes);
  return *pointer != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t CUDARTAPI cudaFreeHost(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemset(void* pointer, int value, size_t bytes) {
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t) {
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind,
                                      cudaStream_t) {
  std::memcpy(to, from, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* to, const void* from, size_t bytes, cudaMemcpyKind) {
  std::memcpy(to, from, bytes);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) { return cudaSuccess; }

// Work runs when it is enqueued: host memory needs no pinning, events are always reached.
cudaError_t CUDARTAPI cudaHostRegister(void*, size_t, unsigned int) { return cudaSuccess; }
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
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) {
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
    default:
      return "cudaErrorUnknown";
  }
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t) {
  return "error in the SIMT simulator's emulated CUDA runtime (see stderr)";
}

}  // extern "C"

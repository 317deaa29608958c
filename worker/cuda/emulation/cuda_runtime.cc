// A stand-in for the CUDA runtime, so that the GPU model's host code (gpt_cuda.cc, layers.cc)
// runs on the CPU in //worker/cuda:gpt_cuda_emulated_test: "device" memory is host memory,
// streams are placeholders, copies and memsets happen at once, and every call succeeds. Tests only.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

namespace {

void* AlignedAlloc(size_t bytes) {
  const size_t rounded = (bytes + 255) / 256 * 256;
  return std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
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

cudaError_t CUDARTAPI cudaGetLastError(void) { return cudaSuccess; }

const char* CUDARTAPI cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }

const char* CUDARTAPI cudaGetErrorString(cudaError_t) { return "emulated CUDA runtime"; }

}  // extern "C"

// Owning handles of device memory (cudaMalloc) and pinned host memory (cudaMallocHost).
#ifndef PSRV_WORKER_CUDA_DEVICE_BUFFER_H_
#define PSRV_WORKER_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "worker/cuda/cuda_status.h"

namespace psrv {
namespace cuda {

// Device memory: 256-byte aligned, as cudaMalloc gives.
struct DeviceMemoryKind {
  static constexpr const char* kAllocateCall = "cudaMalloc(&data_, bytes)";
  static cudaError_t Allocate(void** data, size_t bytes) { return cudaMalloc(data, bytes); }
  static void Free(void* data) { cudaFree(data); }
};

// Page-locked host memory: fast, asynchronous copies to and from the device.
struct PinnedMemoryKind {
  static constexpr const char* kAllocateCall = "cudaMallocHost(&data_, bytes)";
  static cudaError_t Allocate(void** data, size_t bytes) { return cudaMallocHost(data, bytes); }
  static void Free(void* data) { cudaFreeHost(data); }
};

// `bytes` of one kind of CUDA memory, or none. Move-only.
template <typename Kind>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  ~CudaBuffer() { Reset(); }
  CudaBuffer(CudaBuffer&& other) noexcept { *this = std::move(other); }
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      std::swap(data_, other.data_);
      std::swap(bytes_, other.bytes_);
    }
    return *this;
  }

  // Frees what it held, then allocates `bytes` (uninitialised).
  absl::Status Allocate(size_t bytes) {
    Reset();
    if (bytes == 0) return absl::OkStatus();
    const cudaError_t error = Kind::Allocate(&data_, bytes);
    if (error != cudaSuccess) {
      data_ = nullptr;
      (void)cudaGetLastError();
      return CudaErrorToStatus(error, Kind::kAllocateCall, __FILE__, __LINE__);
    }
    bytes_ = bytes;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_ != nullptr) Kind::Free(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = CudaBuffer<DeviceMemoryKind>;
using PinnedBuffer = CudaBuffer<PinnedMemoryKind>;

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_DEVICE_BUFFER_H_

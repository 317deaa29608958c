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

// `bytes` of device memory (256-byte aligned, as cudaMalloc gives), or none. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
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
    CUDA_RETURN_IF_ERROR(cudaMalloc(&data_, bytes));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_ != nullptr) cudaFree(data_);
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

// `bytes` of page-locked host memory (fast, asynchronous copies), or none. Move-only.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(PinnedBuffer&& other) noexcept { *this = std::move(other); }
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      std::swap(data_, other.data_);
      std::swap(bytes_, other.bytes_);
    }
    return *this;
  }

  absl::Status Allocate(size_t bytes) {
    Reset();
    if (bytes == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&data_, bytes));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_ != nullptr) cudaFreeHost(data_);
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

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_DEVICE_BUFFER_H_

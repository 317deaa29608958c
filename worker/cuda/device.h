// Which CUDA GPUs this process can use: the probe behind --device=auto|cuda.
#ifndef PSRV_WORKER_CUDA_DEVICE_H_
#define PSRV_WORKER_CUDA_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"

namespace psrv {
namespace cuda {

// Number of CUDA devices. 0, not an error, when there is no GPU or no (recent enough) driver
// (cudaErrorNoDevice, cudaErrorInsufficientDriver, ...); then `why_none`, if given, receives
// "cudaGetDeviceCount: <error name> (<description>)". Other runtime failures are errors.
absl::StatusOr<int> CudaDeviceCount(std::string* why_none = nullptr);

// Name of CUDA device `device` (e.g. "NVIDIA H100 80GB HBM3"); FAILED_PRECONDITION when there is
// no such device.
absl::StatusOr<std::string> DeviceName(int device = 0);

// Free and total bytes of the current device's memory (cudaMemGetInfo).
struct DeviceMemory {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};
absl::StatusOr<DeviceMemory> GetDeviceMemory();

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_DEVICE_H_

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

// The oldest GPUs this build's kernels run on: compute capability 8.0 (Ampere: bf16 tensor cores,
// which cuBLASLt's bf16 products and the flash kernels' WMMA need). The binaries hold machine code
// for sm_80 and sm_90 and PTX for compute_90 (third_party/cuda.bzl), so 8.x, 9.x and newer GPUs
// run them; on 7.x and older no kernel would launch ("no kernel image is available").
constexpr int kMinComputeCapabilityMajor = 8;

// Why a GPU of compute capability major.minor cannot run this build's kernels, naming it (e.g.
// "cuda:0 (Tesla T4) has compute capability 7.5; these kernels need 8.0 or newer (Ampere,
// Hopper, ...)"), or "" when it can.
std::string ComputeCapabilityProblem(int device, const std::string& name, int major, int minor);

// OK when device `device` can run this build's kernels; FAILED_PRECONDITION with
// ComputeCapabilityProblem's reason when it is too old, or when there is no such device.
absl::Status CheckDeviceSupported(int device = 0);

// Free and total bytes of the current device's memory (cudaMemGetInfo).
struct DeviceMemory {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};
absl::StatusOr<DeviceMemory> GetDeviceMemory();

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_DEVICE_H_

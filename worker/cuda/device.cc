// The CUDA device probe (see device.h).
#include "worker/cuda/device.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "worker/cuda/cuda_status.h"

namespace psrv {
namespace cuda {
namespace {

// Errors of cudaGetDeviceCount that mean "no usable GPU here" rather than a fault.
bool MeansNoGpu(cudaError_t error) {
  switch (error) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInitializationError:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorOperatingSystem:
    case cudaErrorStubLibrary:
      return true;
    default:
      return false;
  }
}

// Device `device`'s properties; FAILED_PRECONDITION when there is no such device.
absl::StatusOr<cudaDeviceProp> DeviceProperties(int device) {
  std::string why_none;
  ASSIGN_OR_RETURN(const int count, CudaDeviceCount(&why_none));
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device ", device, " (", count, " found", count == 0 ? "; " + why_none : "", ")"));
  }
  cudaDeviceProp properties;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&properties, device));
  return properties;
}

}  // namespace

absl::StatusOr<int> CudaDeviceCount(std::string* why_none) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();  // Clear it: the probe's failure is not a pending kernel error.
    if (MeansNoGpu(error)) {
      if (why_none != nullptr) {
        *why_none = absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorName(error), " (",
                                 cudaGetErrorString(error), ")");
      }
      return 0;
    }
    return CudaErrorToStatus(error, "cudaGetDeviceCount(&count)", __FILE__, __LINE__);
  }
  if (count == 0 && why_none != nullptr) *why_none = "cudaGetDeviceCount: 0 devices";
  return count;
}

std::string ComputeCapabilityProblem(int device, const std::string& name, int major, int minor) {
  if (major >= kMinComputeCapabilityMajor) return "";
  return absl::StrCat("cuda:", device, " (", name, ") has compute capability ", major, ".", minor,
                      "; these kernels need ", kMinComputeCapabilityMajor,
                      ".0 or newer (Ampere, Hopper, ...)");
}

absl::Status CheckDeviceSupported(int device) {
  ASSIGN_OR_RETURN(const cudaDeviceProp properties, DeviceProperties(device));
  const std::string problem =
      ComputeCapabilityProblem(device, properties.name, properties.major, properties.minor);
  if (problem.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(problem);
}

absl::StatusOr<std::string> DeviceName(int device) {
  ASSIGN_OR_RETURN(const cudaDeviceProp properties, DeviceProperties(device));
  return std::string(properties.name);
}

absl::StatusOr<DeviceMemory> GetDeviceMemory() {
  DeviceMemory memory;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&memory.free_bytes, &memory.total_bytes));
  return memory;
}

}  // namespace cuda
}  // namespace psrv

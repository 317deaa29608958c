// CUDA and cuBLAS errors as absl::Status, with the file and line of the failing call: the worker
// turns every GPU failure into a Status instead of exiting (unlike llm.c's cudaCheck).
#ifndef PSRV_WORKER_CUDA_CUDA_STATUS_H_
#define PSRV_WORKER_CUDA_CUDA_STATUS_H_

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"  // RETURN_IF_ERROR, ASSIGN_OR_RETURN for the CUDA code too

namespace psrv {
namespace cuda {

// The canonical code of a CUDA runtime error: RESOURCE_EXHAUSTED for out-of-memory,
// FAILED_PRECONDITION when there is no usable device or driver, INTERNAL otherwise.
inline absl::StatusCode CudaErrorCode(cudaError_t error) {
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// "file:line: expr: cudaErrorMemoryAllocation (out of memory)".
inline absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file,
                                      int line) {
  return absl::Status(CudaErrorCode(error),
                      absl::StrCat(file, ":", line, ": ", expr, ": ", cudaGetErrorName(error), " (",
                                   cudaGetErrorString(error), ")"));
}

inline absl::StatusCode CublasErrorCode(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::StatusCode::kResourceExhausted;
    case CUBLAS_STATUS_NOT_INITIALIZED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::StatusCode::kFailedPrecondition;
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return absl::StatusCode::kUnimplemented;
    case CUBLAS_STATUS_INVALID_VALUE:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

// "file:line: expr: CUBLAS_STATUS_NOT_SUPPORTED (the functionality requested is not supported)".
inline absl::Status CublasErrorToStatus(cublasStatus_t status, const char* expr, const char* file,
                                        int line) {
  return absl::Status(CublasErrorCode(status),
                      absl::StrCat(file, ":", line, ": ", expr, ": ", cublasGetStatusName(status),
                                   " (", cublasGetStatusString(status), ")"));
}

}  // namespace cuda
}  // namespace psrv

// Returns a Status from the enclosing function when the cudaError_t `expr` is not cudaSuccess.
// The error is also cleared from the runtime's last-error slot (cudaGetLastError), so that a
// non-sticky error does not resurface at the next check.
#define CUDA_RETURN_IF_ERROR(expr)                                                         \
  do {                                                                                     \
    const cudaError_t psrv_cuda_error_ = (expr);                                           \
    if (psrv_cuda_error_ != cudaSuccess) {                                                 \
      (void)cudaGetLastError();                                                            \
      return ::psrv::cuda::CudaErrorToStatus(psrv_cuda_error_, #expr, __FILE__, __LINE__); \
    }                                                                                      \
  } while (0)

// Returns a Status from the enclosing function when the cublasStatus_t `expr` (cuBLAS or
// cuBLASLt) is not CUBLAS_STATUS_SUCCESS.
#define CUBLAS_RETURN_IF_ERROR(expr)                                                            \
  do {                                                                                          \
    const cublasStatus_t psrv_cublas_status_ = (expr);                                          \
    if (psrv_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                         \
      return ::psrv::cuda::CublasErrorToStatus(psrv_cublas_status_, #expr, __FILE__, __LINE__); \
    }                                                                                           \
  } while (0)

#endif  // PSRV_WORKER_CUDA_CUDA_STATUS_H_

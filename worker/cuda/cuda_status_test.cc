// CUDA_RETURN_IF_ERROR and CUBLAS_RETURN_IF_ERROR: canonical codes, and messages naming the file,
// line, call and error. Runs without a GPU (the error tables need no device).
#include "worker/cuda/cuda_status.h"

#include <string>

#include "gtest/gtest.h"

namespace psrv {
namespace cuda {
namespace {

int failing_line = 0;

absl::Status FailCuda(cudaError_t error) {
  failing_line = __LINE__ + 1;
  CUDA_RETURN_IF_ERROR(error);
  return absl::OkStatus();
}

absl::Status FailCublas(cublasStatus_t status) {
  failing_line = __LINE__ + 1;
  CUBLAS_RETURN_IF_ERROR(status);
  return absl::OkStatus();
}

absl::StatusOr<int> Twice(absl::StatusOr<int> value) {
  ASSIGN_OR_RETURN(const int v, value);
  return 2 * v;
}

TEST(CudaStatusTest, SuccessIsOk) {
  EXPECT_TRUE(FailCuda(cudaSuccess).ok());
  EXPECT_TRUE(FailCublas(CUBLAS_STATUS_SUCCESS).ok());
}

TEST(CudaStatusTest, CudaErrorNamesFileLineCallAndError) {
  const absl::Status status = FailCuda(cudaErrorMemoryAllocation);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  const std::string message(status.message());
  EXPECT_NE(message.find("worker/cuda/cuda_status_test.cc:" + std::to_string(failing_line)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("cudaErrorMemoryAllocation"), std::string::npos) << message;
  EXPECT_NE(message.find("out of memory"), std::string::npos) << message;
  EXPECT_NE(message.find("error"), std::string::npos) << message;  // the expression text
}

TEST(CudaStatusTest, CudaErrorCodes) {
  EXPECT_EQ(FailCuda(cudaErrorNoDevice).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FailCuda(cudaErrorInsufficientDriver).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FailCuda(cudaErrorIllegalAddress).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(FailCuda(cudaErrorLaunchFailure).code(), absl::StatusCode::kInternal);
}

TEST(CudaStatusTest, CublasErrorNamesFileLineAndStatus) {
  const absl::Status status = FailCublas(CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  const std::string message(status.message());
  EXPECT_NE(message.find("worker/cuda/cuda_status_test.cc:" + std::to_string(failing_line)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("CUBLAS_STATUS_NOT_SUPPORTED"), std::string::npos) << message;
  EXPECT_EQ(FailCublas(CUBLAS_STATUS_ALLOC_FAILED).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FailCublas(CUBLAS_STATUS_INVALID_VALUE).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FailCublas(CUBLAS_STATUS_EXECUTION_FAILED).code(), absl::StatusCode::kInternal);
}

TEST(CudaStatusTest, AssignOrReturn) {
  EXPECT_EQ(*Twice(21), 42);
  EXPECT_EQ(Twice(absl::NotFoundError("x")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

// The CUDA device probe. On a machine without a GPU or driver it must report 0 devices (not an
// error) with a reason; with a GPU, a count and a name.
#include "worker/cuda/device.h"

#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace psrv {
namespace cuda {
namespace {

TEST(DeviceTest, CountIsZeroWithReasonOrPositiveWithName) {
  std::string why_none;
  absl::StatusOr<int> count = CudaDeviceCount(&why_none);
  ASSERT_TRUE(count.ok()) << count.status();
  if (*count == 0) {
    std::printf("no GPU here: %s\n", why_none.c_str());
    EXPECT_NE(why_none.find("cudaGetDeviceCount"), std::string::npos) << why_none;
    absl::StatusOr<std::string> name = DeviceName(0);
    EXPECT_EQ(name.status().code(), absl::StatusCode::kFailedPrecondition);
  } else {
    absl::StatusOr<std::string> name = DeviceName(0);
    ASSERT_TRUE(name.ok()) << name.status();
    std::printf("GPU 0: %s\n", name->c_str());
    EXPECT_FALSE(name->empty());
    EXPECT_EQ(DeviceName(*count).status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(DeviceTest, GpusOlderThanAmpereAreNamedWithTheReason) {
  EXPECT_EQ(ComputeCapabilityProblem(0, "NVIDIA H100 80GB HBM3", 9, 0), "");
  EXPECT_EQ(ComputeCapabilityProblem(0, "NVIDIA A100-SXM4-40GB", 8, 0), "");
  EXPECT_EQ(ComputeCapabilityProblem(0, "NVIDIA GeForce RTX 4090", 8, 9), "");
  EXPECT_EQ(ComputeCapabilityProblem(0, "NVIDIA B200", 10, 0), "");
  EXPECT_EQ(ComputeCapabilityProblem(1, "Tesla T4", 7, 5),
            "cuda:1 (Tesla T4) has compute capability 7.5; these kernels need 8.0 or newer "
            "(Ampere, Hopper, ...)");
  EXPECT_NE(ComputeCapabilityProblem(0, "Tesla V100-SXM2-16GB", 7, 0), "");
}

TEST(DeviceTest, TheDeviceInUseIsSupportedOrTheReasonIsGiven) {
  absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  const absl::Status supported = CheckDeviceSupported(0);
  if (*count == 0) {
    EXPECT_EQ(supported.code(), absl::StatusCode::kFailedPrecondition) << supported;
  } else if (!supported.ok()) {
    EXPECT_EQ(supported.code(), absl::StatusCode::kFailedPrecondition) << supported;
    EXPECT_NE(supported.message().find("compute capability"), absl::string_view::npos);
  }
}

TEST(DeviceTest, ProbeIsRepeatable) {
  // The failed probe must not leave an error behind that changes the next answer.
  absl::StatusOr<int> first = CudaDeviceCount();
  absl::StatusOr<int> second = CudaDeviceCount();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

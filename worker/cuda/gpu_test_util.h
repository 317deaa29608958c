// Helpers of the GPU tests: skipping cleanly without a GPU, moving vectors to and from the device,
// bf16 rounding on the host, and tolerance checks.
#ifndef PSRV_WORKER_CUDA_GPU_TEST_UTIL_H_
#define PSRV_WORKER_CUDA_GPU_TEST_UTIL_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cuda/device.h"
#include "worker/cuda/device_buffer.h"
#include "worker/cuda/kernels.h"

namespace psrv {
namespace cuda {

// Fixture of every GPU test: SKIP (printed, and GTEST_SKIP) when no CUDA GPU is usable.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why_none;
    absl::StatusOr<int> count = CudaDeviceCount(&why_none);
    if (!count.ok() || *count == 0) {
      const std::string why = count.ok() ? why_none : std::string(count.status().message());
      std::printf("SKIP: no CUDA GPU (%s)\n", why.c_str());
      GTEST_SKIP() << "no CUDA GPU (" << why << ")";
    }
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }
};

inline std::vector<float> RandomFloats(size_t n, uint64_t seed, float stddev = 1.0f,
                                       float mean = 0.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Rounded to bf16 and back: the values a bf16 device buffer holds.
inline std::vector<float> RoundToBf16(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(__float2bfloat16_rn(v[i]));
  return out;
}

inline std::vector<bf16> ToBf16Vector(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}

inline std::vector<float> FromBf16Vector(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// A device copy of `host`.
template <typename T>
DeviceBuffer ToDevice(const std::vector<T>& host) {
  DeviceBuffer buffer;
  EXPECT_TRUE(buffer.Allocate(std::max<size_t>(1, host.size()) * sizeof(T)).ok());
  if (!host.empty()) {
    EXPECT_EQ(
        cudaMemcpy(buffer.as<void>(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
        cudaSuccess);
  }
  return buffer;
}

// n elements of T on the device, every byte 0xff (NaN for floats): unwritten outputs show.
template <typename T>
DeviceBuffer DeviceFilled(size_t n) {
  DeviceBuffer buffer;
  EXPECT_TRUE(buffer.Allocate(std::max<size_t>(1, n) * sizeof(T)).ok());
  EXPECT_EQ(cudaMemset(buffer.as<void>(), 0xff, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
  return buffer;
}

// The first n elements of a device buffer, after the device is idle.
template <typename T>
std::vector<T> ToHost(const DeviceBuffer& buffer, size_t n) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<T> host(n);
  if (n > 0) {
    EXPECT_EQ(cudaMemcpy(host.data(), buffer.as<void>(), n * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

inline std::vector<float> Bf16ToHost(const DeviceBuffer& buffer, size_t n) {
  return FromBf16Vector(ToHost<bf16>(buffer, n));
}

// |got - want| <= rel * |want| + abs * max|want| elementwise (abs relative to the largest
// reference value, so that near-zero entries of a large tensor are not held to a relative bound).
template <typename Want>
void ExpectClose(const std::vector<float>& got, const std::vector<Want>& want, double rel,
                 double abs, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max = 0.0;
  for (const Want& w : want) max = std::max(max, std::abs(static_cast<double>(w)));
  size_t failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = static_cast<double>(want[i]);
    const double tolerance = rel * std::abs(w) + abs * max;
    if (!(std::abs(got[i] - w) <= tolerance)) {
      if (++failures <= 5) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << w << " (tolerance "
                      << tolerance << ")";
      }
    }
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << got.size() << " outside";
}

// ||got - want|| / ||want|| (L2).
template <typename Want>
double RelativeError(const float* got, const Want* want, size_t n) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = got[i] - static_cast<double>(want[i]);
    diff += d * d;
    norm += static_cast<double>(want[i]) * want[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// The CPU model's dropout hash (worker/model/gpt_kernels.cc), written out again so that the tests
// check the GPU masks against an independent copy.
inline uint64_t HostSplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Element i of the CPU's DropoutMask(seed, stream, p).
inline float HostDropoutMask(uint64_t seed, uint64_t stream, float p, uint64_t i) {
  if (!(p > 0.0f)) return 1.0f;
  const uint64_t base = HostSplitMix64(seed ^ HostSplitMix64(stream ^ 0x243f6a8885a308d3ULL));
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  return (HostSplitMix64(base + i) >> 32) < threshold ? 0.0f : 1.0f / (1.0f - p);
}

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_GPU_TEST_UTIL_H_

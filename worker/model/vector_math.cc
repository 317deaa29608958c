// Vectorised exp and tanh: a Cephes-style polynomial for exp on GCC vector types of 16 floats, and
// tanh from it. The plain loops do not vectorise: GCC threads the jumps of the range clamp and then
// sees control flow. On x86-64 the public functions are built for x86-64-v4 (AVX-512), x86-64-v3
// (AVX2+FMA) and the baseline (SSE2), picked at load time from the CPU's features: a 16-float vector
// is one AVX-512 register, two AVX ones or four SSE ones.
#include "worker/model/vector_math.h"

#include <cstdint>
#include <cstring>

namespace psrv {
namespace {

// Not under sanitizers, whose runtimes are not ready when ifunc resolvers run at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define PSRV_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PSRV_MULTIVERSION
#endif

constexpr size_t kLanes = 16;
typedef float Floats __attribute__((vector_size(kLanes * sizeof(float))));     // (kLanes)
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));   // (kLanes)

__attribute__((always_inline)) inline Floats Splat(float v) { return Floats{} + v; }

__attribute__((always_inline)) inline Floats Load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

__attribute__((always_inline)) inline void Store(Floats v, float* p) {
  std::memcpy(p, &v, sizeof(v));
}

// exp(x) for x in [-87, 88] by exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2)/2, with
// exp(r) from the Cephes expf polynomial.
__attribute__((always_inline)) inline Floats Exp(Floats x) {
  // Clamped with selects rather than min/max so that NaN passes through.
  x = x < Splat(-87.0f) ? Splat(-87.0f) : x;
  x = x > Splat(88.0f) ? Splat(88.0f) : x;
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in the default rounding mode.
  const Floats round = Splat(12582912.0f);
  const Floats n = (x * 1.44269504088896341f + round) - round;
  // r = x - n * ln 2, with ln 2 split in two so the first product is exact.
  const Floats r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  Floats p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Floats exp_r = p * r * r + r + 1.0f;
  // 2^n built in the exponent bits; n is in [-126, 127] after the clamp.
  const Ints bits = (__builtin_convertvector(n, Ints) + 127) << 23;
  Floats scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return exp_r * scale;
}

__attribute__((always_inline)) inline Floats Tanh(Floats x) {
  // tanh(v) = 1 - 2 / (exp(2v) + 1): exact limits of +-1 and no cancellation except near 0, where
  // the absolute error stays at float rounding of 1 (~6e-8).
  return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f);
}

}  // namespace

PSRV_MULTIVERSION
float ExpShiftedInPlace(float* x, size_t n, float shift) {
  Floats sums = {};  // (kLanes) partial sums
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const Floats v = Exp(Load(x + i) - shift);
    Store(v, x + i);
    sums += v;
  }
  float sum = 0.0f;
  for (size_t lane = 0; lane < kLanes; ++lane) sum += sums[lane];
  if (i < n) {
    Floats tail = {};
    std::memcpy(&tail, x + i, (n - i) * sizeof(float));
    tail = Exp(tail - shift);
    std::memcpy(x + i, &tail, (n - i) * sizeof(float));
    for (size_t lane = 0; lane < n - i; ++lane) sum += tail[lane];
  }
  return sum;
}

PSRV_MULTIVERSION
void TanhInPlace(float* x, size_t n) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) Store(Tanh(Load(x + i)), x + i);
  if (i < n) {
    Floats tail = {};
    std::memcpy(&tail, x + i, (n - i) * sizeof(float));
    tail = Tanh(tail);
    std::memcpy(x + i, &tail, (n - i) * sizeof(float));
  }
}

}  // namespace psrv

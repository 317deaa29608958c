// Vectorised exp and tanh: a Cephes-style polynomial for exp on GCC vector types (SSE on x86-64,
// NEON on ARM), and tanh from it. The plain loops do not vectorise: GCC threads the jumps of the
// range clamp and then sees control flow.
#include "worker/model/vector_math.h"

#include <cstdint>
#include <cstring>

namespace psrv {
namespace {

constexpr size_t kLanes = 4;
typedef float Floats __attribute__((vector_size(kLanes * sizeof(float))));     // (kLanes)
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));   // (kLanes)

inline Floats Splat(float v) { return Floats{} + v; }

inline Floats Load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(Floats v, float* p) { std::memcpy(p, &v, sizeof(v)); }

// exp(x) for x in [-87, 88] by exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2)/2, with
// exp(r) from the Cephes expf polynomial.
inline Floats Exp(Floats x) {
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

inline Floats Tanh(Floats x) {
  // tanh(v) = 1 - 2 / (exp(2v) + 1): exact limits of +-1 and no cancellation except near 0, where
  // the absolute error stays at float rounding of 1 (~6e-8).
  return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f);
}

}  // namespace

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

// bfloat16 on the wire: the upper 16 bits of an IEEE fp32, rounded to nearest even. Halves the
// bytes of pulls and pushes; fp32 master weights stay on the servers. The array conversions are
// vectorized (branch-free NaN handling).
#ifndef PSRV_COMMON_BF16_H_
#define PSRV_COMMON_BF16_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace psrv {

inline uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN stays a (quiet) NaN.
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);  // Round to nearest, ties to even.
  return static_cast<uint16_t>(bits >> 16);
}

inline float Bf16ToFloat(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// in (count floats) -> out (count bf16).
void FloatsToBf16(const float* in, size_t count, uint16_t* out);

// The sum of the squares of in (count), in double: eight running sums added in a fixed order, so
// the result depends on the values alone (a gradient's norm, chunk by chunk).
double SumOfSquares(const float* in, size_t count);
// FloatsToBf16 and SumOfSquares of the same values in one pass (the same sum).
double FloatsToBf16SumOfSquares(const float* in, size_t count, uint16_t* out);
// in (count bf16) -> out (count floats).
void Bf16ToFloats(const uint16_t* in, size_t count, float* out);

}  // namespace psrv

#endif  // PSRV_COMMON_BF16_H_

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
// The same from little-endian bytes at any address (in: 2 * count bytes).
void Bf16BytesToFloats(const char* in, size_t count, float* out);
// The same values, stored around the caches (non-temporal stores): for an output far bigger than
// the cache that is read much later (a big model's pulled parameters), it saves reading every
// output line in before writing it (43 MB widened: 2.4 ms instead of 3.6-4.7 on a Xeon VM); for
// outputs that fit in the cache it is slower (about 2x at 100k values).
void Bf16BytesToFloatsStreaming(const char* in, size_t count, float* out);
// Outputs from this many values on are widened with the Streaming version (FloatsInto, pulls).
inline constexpr size_t kBf16StreamingMinValues = size_t{1} << 18;  // 1 MiB of floats.

// Widens bf16 values that arrive as pieces of bytes, in order (a payload as gRPC's receive
// buffers hold it: common/wire.h), into out: no copy of the bytes first, any alignment, and a
// value split between two pieces is put together.
class Bf16Widener {
 public:
  // streaming: widen with Bf16BytesToFloatsStreaming (for a big output).
  explicit Bf16Widener(float* out, bool streaming = false) : out_(out), streaming_(streaming) {}
  void Add(const char* data, size_t size);
  // Values written so far (a split value counts once its second byte came).
  size_t count() const { return count_; }

 private:
  float* out_;
  bool streaming_;
  size_t count_ = 0;
  bool has_low_byte_ = false;  // The first byte of a value split between pieces.
  unsigned char low_byte_ = 0;
};

}  // namespace psrv

#endif  // PSRV_COMMON_BF16_H_

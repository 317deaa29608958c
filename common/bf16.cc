#include "common/bf16.h"

#include <emmintrin.h>

#include <algorithm>
#include <cstdint>

#include "common/vector_clones.h"
namespace psrv {
namespace {

// FloatToBf16 without a branch, so that loops of it vectorize.
inline uint16_t ToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x0040u;
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? quiet_nan : rounded);
}

inline double Sum8(const double* lane) {
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// The loops of the functions below, inlined into each of their builds (AVX2 and baseline).
__attribute__((always_inline)) inline void NarrowInto(const float* in, size_t count,
                                                      uint16_t* out) {
  for (size_t i = 0; i < count; ++i) out[i] = ToBf16(in[i]);
}

// lane[k] += in[i]^2 for every i = k (mod 8); `count` a multiple of 8. Each lane adds its values in
// order, whatever the vector width: the sum does not depend on the build.
__attribute__((always_inline)) inline void AddSquaresToLanes(const float* in, size_t count,
                                                             double* lane) {
  for (size_t i = 0; i < count; i += 8) {
    for (int k = 0; k < 8; ++k) lane[k] += static_cast<double>(in[i + k]) * in[i + k];
  }
}

}  // namespace

PSRV_VECTOR_CLONES void FloatsToBf16(const float* in, size_t count, uint16_t* out) {
  NarrowInto(in, count, out);
}

PSRV_VECTOR_CLONES void Bf16ToFloats(const uint16_t* in, size_t count, float* out) {
  for (size_t i = 0; i < count; ++i) out[i] = Bf16ToFloat(in[i]);
}

PSRV_VECTOR_CLONES void Bf16BytesToFloats(const char* in, size_t count, float* out) {
  for (size_t i = 0; i < count; ++i) {
    uint16_t value;
    std::memcpy(&value, in + 2 * i, sizeof(value));  // (Vectorizes; no alignment assumed.)
    out[i] = Bf16ToFloat(value);
  }
}

void Bf16BytesToFloatsStreaming(const char* in, size_t count, float* out) {
  // Plain stores up to the first 16-byte aligned output and after the last whole 8 values; between
  // them 8 values per two streamed stores: a bf16 is the upper half of its float, so interleaving
  // zero halves below the values widens them.
  size_t i = std::min(count, (16 - reinterpret_cast<uintptr_t>(out) % 16) % 16 / sizeof(float));
  Bf16BytesToFloats(in, i, out);
  const __m128i zero = _mm_setzero_si128();
  for (; i + 8 <= count; i += 8) {
    const __m128i values = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm_stream_si128(reinterpret_cast<__m128i*>(out + i), _mm_unpacklo_epi16(zero, values));
    _mm_stream_si128(reinterpret_cast<__m128i*>(out + i + 4), _mm_unpackhi_epi16(zero, values));
  }
  Bf16BytesToFloats(in + 2 * i, count - i, out + i);
  _mm_sfence();  // The streamed stores are seen by other threads before anything written after.
}

void Bf16Widener::Add(const char* data, size_t size) {
  if (size == 0) return;
  if (has_low_byte_) {
    const auto high = static_cast<unsigned char>(data[0]);
    out_[count_++] = Bf16ToFloat(static_cast<uint16_t>(low_byte_ | (high << 8)));
    has_low_byte_ = false;
    ++data;
    --size;
  }
  const size_t whole = size / 2;
  if (streaming_) {
    Bf16BytesToFloatsStreaming(data, whole, out_ + count_);
  } else {
    Bf16BytesToFloats(data, whole, out_ + count_);
  }
  count_ += whole;
  if (size % 2 != 0) {
    low_byte_ = static_cast<unsigned char>(data[size - 1]);
    has_low_byte_ = true;
  }
}

PSRV_VECTOR_CLONES double SumOfSquares(const float* in, size_t count) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const size_t whole = count / 8 * 8;
  AddSquaresToLanes(in, whole, lane);
  for (size_t i = whole; i < count; ++i) lane[0] += static_cast<double>(in[i]) * in[i];
  return Sum8(lane);
}

PSRV_VECTOR_CLONES double FloatsToBf16SumOfSquares(const float* in, size_t count, uint16_t* out) {
  // Two loops over each block while it is in L1, rather than one loop doing both: GCC vectorizes
  // each of the two well (full-width registers), and the fused loop badly (half-width, ~3x the
  // time per value). The squares go to the same lanes as SumOfSquares': the same sum.
  constexpr size_t kBlock = 2048;  // A multiple of 8: 8 KiB of floats.
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const size_t whole = count / 8 * 8;
  for (size_t i = 0; i < whole; i += kBlock) {
    const size_t n = std::min(kBlock, whole - i);
    NarrowInto(in + i, n, out + i);
    AddSquaresToLanes(in + i, n, lane);
  }
  for (size_t i = whole; i < count; ++i) {
    lane[0] += static_cast<double>(in[i]) * in[i];
    out[i] = ToBf16(in[i]);
  }
  return Sum8(lane);
}

}  // namespace psrv

#include "common/bf16.h"

namespace psrv {

void FloatsToBf16(const float* in, size_t count, uint16_t* out) {
  for (size_t i = 0; i < count; ++i) out[i] = FloatToBf16(in[i]);
}

void Bf16ToFloats(const uint16_t* in, size_t count, float* out) {
  for (size_t i = 0; i < count; ++i) out[i] = Bf16ToFloat(in[i]);
}

}  // namespace psrv

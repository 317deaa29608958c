// Refusing gradients that hold NaN or Inf before anything is applied (Push and Replicate).
#ifndef PSRV_SERVER_GRADIENT_CHECK_H_
#define PSRV_SERVER_GRADIENT_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/types.pb.h"

namespace psrv {

// Index of the first NaN or Inf in values (count), or count.
size_t FirstNonFinite(const float* values, size_t count);
// The same for bfloat16 values.
size_t FirstNonFiniteBf16(const uint16_t* values, size_t count);

// INVALID_ARGUMENT naming the first NaN or Inf of a gradient (`count` values of `dtype`, FP32 or
// BF16) for keys from `first_key`.
absl::Status CheckFinite(const std::string& table, const void* values, DType dtype, size_t count,
                         uint64_t first_key);

}  // namespace psrv

#endif  // PSRV_SERVER_GRADIENT_CHECK_H_

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

// Whether the values of a push were checked finite already (ShardStore::Push, Shard::Push).
enum class FiniteCheck { kUnchecked, kChecked };

// Checks a payload of FP32 or BF16 values for NaN and Inf while it is copied into `destination`
// piece by piece (common/wire.h's ParseWithPayloadPieces): each piece is copied, then the values it
// completed are checked while they are still in the cache, instead of in a second pass over the
// whole payload.
class CopyCheckingFinite {
 public:
  CopyCheckingFinite(char* destination, DType dtype)
      : destination_(destination), value_bytes_(dtype == BF16 ? 2 : 4) {}
  void Add(const char* data, size_t size, size_t offset);
  // kChecked if every value copied was finite (the caller must have copied all of them).
  FiniteCheck result() const { return finite_ ? FiniteCheck::kChecked : FiniteCheck::kUnchecked; }

 private:
  char* destination_;
  size_t value_bytes_;
  size_t checked_ = 0;  // Values checked so far.
  bool finite_ = true;
};

}  // namespace psrv

#endif  // PSRV_SERVER_GRADIENT_CHECK_H_

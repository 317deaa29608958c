#include "server/gradient_check.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"
#include "common/vector_clones.h"

namespace psrv {

// Index of the first NaN or Inf in values (count), or count. The scan has no early exit so that it
// vectorizes; only a bad push pays for the second pass.
PSRV_VECTOR_CLONES size_t FirstNonFinite(const float* values, size_t count) {
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(values);
  uint32_t any = 0;
  for (size_t i = 0; i < count; ++i) any |= ((bits[i] & 0x7f800000u) == 0x7f800000u);
  if (!any) return count;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return count;
}

// The same for bfloat16 values (exponent bits all set).
PSRV_VECTOR_CLONES size_t FirstNonFiniteBf16(const uint16_t* values, size_t count) {
  uint32_t any = 0;
  for (size_t i = 0; i < count; ++i) any |= ((values[i] & 0x7f80u) == 0x7f80u);
  if (!any) return count;
  for (size_t i = 0; i < count; ++i) {
    if ((values[i] & 0x7f80u) == 0x7f80u) return i;
  }
  return count;
}

// INVALID_ARGUMENT naming the first NaN or Inf of a gradient (`count` values of `dtype`, FP32 or
// BF16) for keys from `first_key`.
absl::Status CheckFinite(const std::string& table, const void* values, DType dtype, size_t count,
                         uint64_t first_key) {
  float bad_value = 0;
  size_t bad;
  if (dtype == BF16) {
    const uint16_t* v = static_cast<const uint16_t*>(values);
    bad = FirstNonFiniteBf16(v, count);
    if (bad < count) bad_value = Bf16ToFloat(v[bad]);
  } else {
    const float* v = static_cast<const float*>(values);
    bad = FirstNonFinite(v, count);
    if (bad < count) bad_value = v[bad];
  }
  if (bad == count) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "gradient for table \"", table, "\" has ", std::isnan(bad_value) ? "NaN" : "Inf",
      " at key ", first_key + bad, "; nothing was applied"));
}

void CopyCheckingFinite::Add(const char* data, size_t size, size_t offset) {
  std::memcpy(destination_ + offset, data, size);
  if (!finite_) return;  // (Shard::Push finds the value and names it.)
  const size_t complete = (offset + size) / value_bytes_;
  if (complete <= checked_) return;
  const size_t count = complete - checked_;
  const char* first = destination_ + checked_ * value_bytes_;
  finite_ = value_bytes_ == 2
                ? FirstNonFiniteBf16(reinterpret_cast<const uint16_t*>(first), count) == count
                : FirstNonFinite(reinterpret_cast<const float*>(first), count) == count;
  checked_ = complete;
}

}  // namespace psrv

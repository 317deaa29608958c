// The rule for names that end up in file paths and metric labels: job ids, job names, table names.
#ifndef PSRV_COMMON_NAMES_H_
#define PSRV_COMMON_NAMES_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace psrv {

inline constexpr size_t kMaxNameLength = 128;

// OK if `name` is 1..128 characters of [A-Za-z0-9._-] and not "." or ".." (so it is one path
// component, never a way out of a folder). Else INVALID_ARGUMENT naming it as `what` (e.g.
// "job_id", "table name").
absl::Status CheckName(absl::string_view what, absl::string_view name);

}  // namespace psrv

#endif  // PSRV_COMMON_NAMES_H_

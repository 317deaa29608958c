// Small filesystem helpers that report failures as absl::Status.
#ifndef PSRV_COMMON_FILES_H_
#define PSRV_COMMON_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace psrv {

// Creates `path` and any missing parents; OK if it already exists as a directory. On failure
// INTERNAL "cannot create <name>: <reason>", where `name` is how the message names the folder
// (default: the path itself, e.g. "--log-dir /x" names it after the flag that chose it).
absl::Status CreateDirectories(const std::string& path, absl::string_view name = "");

}  // namespace psrv

#endif  // PSRV_COMMON_FILES_H_

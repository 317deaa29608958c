// Small filesystem helpers that report failures as absl::Status.
#ifndef PSRV_COMMON_FILES_H_
#define PSRV_COMMON_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace psrv {

// Creates `path` and any missing parents; OK if it already exists as a directory. On failure
// INTERNAL "cannot create <name>: <reason>", where `name` is how the message names the folder
// (default: the path itself, e.g. "--log-dir /x" names it after the flag that chose it).
absl::Status CreateDirectories(const std::string& path, absl::string_view name = "");

// Writes `bytes` to `path` through a temporary file beside it (`path`.partial) renamed into place,
// so a reader never sees half a file. INTERNAL "cannot write <path>: <reason>" on failure (the
// temporary is removed).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes);

// Confinement of the paths a request names (checkpoint directories, files to restore from) to a
// root folder. `path` must be absolute (INVALID_ARGUMENT otherwise). Returns it resolved (symlinks
// of the part that exists followed, `.` and `..` removed) if that lies in `root` (resolved the same
// way) or is `root` itself; else PERMISSION_DENIED naming both. Parts that do not exist yet are
// resolved by their names alone.
absl::StatusOr<std::string> ResolvePathUnder(const std::string& root, const std::string& path);

}  // namespace psrv

#endif  // PSRV_COMMON_FILES_H_

// Filesystem helpers (see files.h).
#include "common/files.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace psrv {

absl::Status CreateDirectories(const std::string& path, absl::string_view name) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", name.empty() ? path : name, ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace psrv

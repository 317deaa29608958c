// Filesystem helpers (see files.h).
#include "common/files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
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

absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes) {
  const std::string partial = absl::StrCat(path, ".partial");
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      const int error = errno;
      std::remove(partial.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
    }
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(partial.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolvePathUnder(const std::string& root, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty() || path.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path \"", path, "\" must be absolute (start with /)"));
  }
  std::error_code error;
  fs::path resolved_root = fs::weakly_canonical(fs::absolute(root, error), error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot resolve root ", root, ": ", error.message()));
  }
  if (!resolved_root.has_filename() && resolved_root != resolved_root.root_path()) {
    resolved_root = resolved_root.parent_path();  // "/data/ckpt/" is "/data/ckpt".
  }
  const fs::path resolved = fs::weakly_canonical(path, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot resolve ", path, ": ", error.message()));
  }
  // Component by component: "/data/ckpt-old" is not under "/data/ckpt".
  auto part = resolved.begin();
  for (auto r = resolved_root.begin(); r != resolved_root.end(); ++r, ++part) {
    if (part == resolved.end() || *part != *r) {
      return absl::PermissionDeniedError(
          absl::StrCat(path, " resolves to ", resolved.string(), ", outside the root ",
                       resolved_root.string(), " (--checkpoint_root)"));
    }
  }
  return resolved.string();
}

}  // namespace psrv

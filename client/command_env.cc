// The environment and exit codes shared by psctl's commands (see command_env.h).
#include "client/command_env.h"

#include <stdlib.h>

#include "absl/strings/str_cat.h"

namespace psrv {

CoordinatorClient MakeCoordinatorClient(const CommandEnv& env) {
  return CoordinatorClient(CoordinatorClientOptions{env.coordinator, env.timeout});
}

std::string ResolveUserPath(const std::string& path) {
  if (path.empty() || path[0] == '/' || path == "-") return path;
  const char* base = getenv("BUILD_WORKING_DIRECTORY");
  if (base != nullptr && *base != '\0') return absl::StrCat(base, "/", path);
  return path;
}

int ReportError(const CommandEnv& env, const absl::Status& status) {
  *env.err << "psctl: " << status.message() << "\n";
  env.err->flush();
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return kExitBadInput;
    case absl::StatusCode::kCancelled:
      return env.interrupted() ? kExitInterrupted : kExitFailure;
    default:
      return kExitFailure;
  }
}

}  // namespace psrv

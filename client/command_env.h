// What every psctl command gets besides its own flags: the output streams, the coordinator's
// address, the Ctrl-C flag (CommandEnv); and what it returns: the exit code. 0 success, 1 failure
// (RPC error, job FAILED/CANCELLED), 2 bad input, 130 interrupted. The commands themselves are
// independent of the command-line parser: job_commands.h, monitor_commands.h, local_command.h,
// export.h, generate.h.
#ifndef PSRV_CLIENT_COMMAND_ENV_H_
#define PSRV_CLIENT_COMMAND_ENV_H_

#include <functional>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"

namespace psrv {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitInterrupted = 130;

struct CommandEnv {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  bool tty = false;  // stdout is a terminal: redraw the progress bar in place.
  std::function<bool()> interrupted = [] { return false; };
  std::string coordinator = "127.0.0.1:7070";
  absl::Duration timeout = absl::Seconds(10);  // Per unary RPC.
  std::string argv0;                           // To find binaries and runfiles.
  // gnuplot for the PNG of `job curves` and `local`: unset finds it on PATH; "" means none.
  std::optional<std::string> gnuplot;
};

// A client of env.coordinator with env.timeout per call.
CoordinatorClient MakeCoordinatorClient(const CommandEnv& env);

// A relative path as the user meant it: under `bazel run`, relative to BUILD_WORKING_DIRECTORY.
std::string ResolveUserPath(const std::string& path);

// Prints "psctl: <message>" to env.err and returns the exit code for `status`: 2 for
// INVALID_ARGUMENT (bad input), 130 for CANCELLED by Ctrl-C, else 1.
int ReportError(const CommandEnv& env, const absl::Status& status);

}  // namespace psrv

#endif  // PSRV_CLIENT_COMMAND_ENV_H_

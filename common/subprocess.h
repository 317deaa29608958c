// Child processes for local mode and integration tests: start a binary with arguments, send it
// signals, wait for it, and read the port it chose (processes write it to a --port_file).
#ifndef PSRV_COMMON_SUBPROCESS_H_
#define PSRV_COMMON_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace psrv {

// One child process. Not thread-safe. The destructor kills (SIGKILL) and reaps a child still running,
// so a test that fails midway leaves no process behind.
class Subprocess {
 public:
  Subprocess() = default;
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts `argv[0]` (a path) with `argv`. stdout and stderr go to `log_path` (appended) if it is
  // non-empty, else they are inherited. The child is killed if this process dies (PR_SET_PDEATHSIG).
  absl::Status Start(const std::vector<std::string>& argv, const std::string& log_path = "");

  bool running();  // Reaps the child if it exited.
  pid_t pid() const { return pid_; }

  // Sends `signal` (e.g. SIGTERM) if running.
  void Signal(int signal);

  // Waits up to `timeout` for exit. Returns the exit code (128 + signal number if killed by a
  // signal); DEADLINE_EXCEEDED if still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);

  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit code.
  int Stop(absl::Duration grace = absl::Seconds(5));

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// Waits until `path` holds a port number (written by a process started with --port_file) and returns
// it. DEADLINE_EXCEEDED after `timeout`; UNAVAILABLE early if `process` (optional) exits meanwhile.
absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout,
                                    Subprocess* process = nullptr);

// Writes `port` to `path` atomically (temporary file + rename), for --port_file.
absl::Status WritePortFile(const std::string& path, int port);

}  // namespace psrv

#endif  // PSRV_COMMON_SUBPROCESS_H_

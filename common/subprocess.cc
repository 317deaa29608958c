// Child processes via fork/execv. Everything the child needs is prepared before fork(), because a
// multi-threaded parent (gRPC) may only call async-signal-safe functions in the child.
#include "common/subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace psrv {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 128;
}

// The child side of Start(): only async-signal-safe calls from here on.
[[noreturn]] void RunChild(char* const* argv, int log_fd, int null_fd, int error_fd, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died between fork() and prctl(); then nobody would kill us.
  if (getppid() != parent) _exit(127);
  // A process group of its own, so a Ctrl-C at the terminal reaches only the parent, which then
  // shuts its children down in order (and Signal() reaches grandchildren of a shell wrapper).
  setpgid(0, 0);
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
  if (log_fd >= 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
  }
  execv(argv[0], argv);
  const int err = errno;
  ssize_t ignored = write(error_fd, &err, sizeof(err));
  (void)ignored;
  _exit(127);
}

}  // namespace

Subprocess::~Subprocess() {
  if (running()) {
    Signal(SIGKILL);
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

absl::Status Subprocess::Start(const std::vector<std::string>& argv, const std::string& log_path) {
  if (running()) {
    return absl::FailedPreconditionError(
        absl::StrCat("process ", pid_, " is still running; stop it before starting another"));
  }
  if (argv.empty()) return absl::InvalidArgumentError("Subprocess::Start: empty argv");
  if (access(argv[0].c_str(), X_OK) != 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat("cannot execute ", argv[0], ": ", ErrnoText(err)));
  }

  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      const int err = errno;
      return absl::PermissionDeniedError(
          absl::StrCat("cannot open log file ", log_path, ": ", ErrnoText(err)));
    }
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    if (log_fd >= 0) close(log_fd);
    if (null_fd >= 0) close(null_fd);
    return absl::InternalError(absl::StrCat("pipe2: ", ErrnoText(err)));
  }

  std::vector<char*> c_argv;
  c_argv.reserve(argv.size() + 1);
  for (const std::string& arg : argv) c_argv.push_back(const_cast<char*>(arg.c_str()));
  c_argv.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) RunChild(c_argv.data(), log_fd, null_fd, error_pipe[1], parent);

  const int fork_errno = errno;
  close(error_pipe[1]);
  if (log_fd >= 0) close(log_fd);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) {
    close(error_pipe[0]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", ErrnoText(fork_errno)));
  }
  setpgid(pid, pid);  // Also here, so Signal() right after Start() reaches the group (races ok).

  // The pipe closes on a successful exec (O_CLOEXEC); otherwise it carries execv's errno.
  int exec_errno = 0;
  ssize_t n;
  do {
    n = read(error_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  close(error_pipe[0]);

  pid_ = pid;
  exit_code_ = -1;
  if (n == static_cast<ssize_t>(sizeof(exec_errno))) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    exit_code_ = ExitCodeOf(status);
    return absl::InternalError(
        absl::StrCat("cannot execute ", argv[0], ": ", ErrnoText(exec_errno)));
  }
  return absl::OkStatus();
}

bool Subprocess::running() {
  if (pid_ <= 0 || exit_code_ >= 0) return false;
  int status;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return true;
  // r < 0 (ECHILD) means someone else reaped it; report it as gone.
  exit_code_ = r == pid_ ? ExitCodeOf(status) : 128;
  return false;
}

void Subprocess::Signal(int signal) {
  if (!running()) return;
  // The child leads its own process group; fall back to the pid if it has not got there yet.
  if (kill(-pid_, signal) != 0) kill(pid_, signal);
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no process was started");
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(1);
  while (running()) {
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(std::min(pause, deadline - now));
    pause = std::min(pause * 2, absl::Milliseconds(50));
  }
  return exit_code_;
}

int Subprocess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return -1;
  if (!running()) return exit_code_;
  Signal(SIGTERM);
  absl::StatusOr<int> code = Wait(grace);
  if (code.ok()) return *code;
  Signal(SIGKILL);
  code = Wait(absl::InfiniteDuration());
  return code.ok() ? *code : 128 + SIGKILL;
}

absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout,
                                    Subprocess* process) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::ifstream in(path);
    if (in) {
      std::stringstream buffer;
      buffer << in.rdbuf();
      int port;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(buffer.str()), &port) && port > 0 &&
          port < 65536) {
        return port;
      }
    }
    if (process != nullptr && !process->running()) {
      absl::StatusOr<int> code = process->Wait(absl::ZeroDuration());
      return absl::UnavailableError(
          absl::StrCat("process ", process->pid(), " exited",
                       code.ok() ? absl::StrCat(" with code ", *code) : std::string(),
                       " before writing its port to ", path));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("no port number in ", path, " after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) {
      const int err = errno;
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write port file ", tmp, ": ", ErrnoText(err)));
    }
    out << port << "\n";
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat("cannot write port file ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ErrnoText(err)));
  }
  return absl::OkStatus();
}

}  // namespace psrv

// Starting, watching and stopping the processes of `psctl local`.
#include "client/local_cluster.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/local_ca.h"
#include "common/rpc_roles.h"
#include "common/status_macros.h"
#include "tools/cpp/runfiles/runfiles.h"

namespace psrv {
namespace {

using bazel::tools::cpp::runfiles::Runfiles;

bool IsExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string Dirname(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string SelfDirectory() {
  char buffer[4096];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return "";
  return Dirname(std::string(buffer, n));
}

struct BinaryName {
  const char* name;     // "ps_coordinator"
  const char* package;  // "coordinator"
};

constexpr BinaryName kBinaries[] = {
    {"ps_coordinator", "coordinator"}, {"ps_server", "server"}, {"ps_worker", "worker"}};

// Writes `contents` to a new file `path` that only its owner may read.
absl::Status WritePrivateFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::trunc);
  std::error_code ignored;  // A file that could not be made fails the write below.
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write, ignored);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LocalBinaries> FindLocalBinaries(const std::string& bin_dir,
                                                const std::string& argv0) {
  std::string found[3];
  if (!bin_dir.empty()) {
    for (int i = 0; i < 3; ++i) {
      const std::string path = absl::StrCat(bin_dir, "/", kBinaries[i].name);
      if (!IsExecutable(path)) {
        return absl::NotFoundError(absl::StrCat("no executable ", kBinaries[i].name,
                                                " in --bin-dir ", bin_dir, " (looked for ", path,
                                                ")"));
      }
      found[i] = path;
    }
    return LocalBinaries{found[0], found[1], found[2]};
  }

  const std::string self_dir = SelfDirectory();
  std::string runfiles_error;
  std::unique_ptr<Runfiles> runfiles(Runfiles::Create(argv0, &runfiles_error));
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> candidates;
    if (!self_dir.empty()) {
      candidates.push_back(absl::StrCat(self_dir, "/", kBinaries[i].name));
      candidates.push_back(
          absl::StrCat(self_dir, "/../", kBinaries[i].package, "/", kBinaries[i].name));
    }
    if (runfiles != nullptr) {
      const std::string path =
          runfiles->Rlocation(absl::StrCat("psrv/", kBinaries[i].package, "/", kBinaries[i].name));
      if (!path.empty()) candidates.push_back(path);
    }
    for (const std::string& candidate : candidates) {
      if (IsExecutable(candidate)) {
        found[i] = candidate;
        break;
      }
    }
    if (found[i].empty()) {
      return absl::NotFoundError(absl::StrCat(
          "cannot find ", kBinaries[i].name,
          " (looked in: ", candidates.empty() ? "nowhere usable" : absl::StrJoin(candidates, ", "),
          "); build it with `bazel build //", kBinaries[i].package, ":", kBinaries[i].name,
          "` or pass --bin-dir"));
    }
  }
  return LocalBinaries{found[0], found[1], found[2]};
}

std::string TailOfFile(const std::string& path, int lines) {
  std::ifstream in(path);
  if (!in) return "";
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) tail.pop_front();
  }
  return absl::StrJoin(tail, "\n");
}

LocalCluster::LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {}

LocalCluster::~LocalCluster() { Stop(absl::Seconds(2)); }

std::string LocalCluster::Died(Process* process, int exit_code) const {
  std::string message = absl::StrCat(process->name, " (pid ", process->subprocess.pid(),
                                     ") exited with code ", exit_code);
  if (exit_code > 128) absl::StrAppend(&message, " (signal ", exit_code - 128, ")");
  const std::string tail = TailOfFile(process->log_path, 10);
  if (tail.empty()) {
    absl::StrAppend(&message, "; its log ", process->log_path, " is empty");
  } else {
    absl::StrAppend(&message, "; last lines of ", process->log_path, ":\n    ",
                    absl::StrJoin(absl::StrSplit(tail, '\n'), "\n    "));
  }
  return message;
}

absl::Status MakeLocalClusterCertificates(const std::string& dir) {
  std::vector<CertificateRequest> requests;
  for (const char* role :
       {kRoleCoordinator, kRoleServer, kRoleWorker, kRoleOperator, kRoleViewer}) {
    requests.push_back({role, role});
  }
  return MakeLocalCa(dir, requests);
}

absl::Status MakeLocalClusterTokens(const std::string& dir) {
  std::ifstream random("/dev/urandom", std::ios::binary);
  std::string table = "# ROLE TOKEN, made by psctl local (client/local_cluster.cc)\n";
  for (const char* role :
       {kRoleCoordinator, kRoleServer, kRoleWorker, kRoleOperator, kRoleViewer}) {
    char bytes[16];
    if (!random.read(bytes, sizeof(bytes))) {
      return absl::InternalError("cannot read /dev/urandom for a token");
    }
    const std::string token = absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes)));
    absl::StrAppend(&table, role, " ", token, "\n");
    RETURN_IF_ERROR(WritePrivateFile(absl::StrCat(dir, "/", role, ".token"), token + "\n"));
  }
  return WritePrivateFile(dir + "/tokens.txt", table);
}

absl::StatusOr<LocalCluster::Process*> LocalCluster::Launch(const std::string& name,
                                                            const std::string& file_stem,
                                                            std::vector<std::string> argv,
                                                            bool may_exit) {
  auto process = std::make_unique<Process>();
  process->name = name;
  process->log_path = absl::StrCat(options_.log_dir, "/", file_stem, ".log");
  process->metrics_port_file = absl::StrCat(options_.log_dir, "/", file_stem, ".metrics_port");
  process->may_exit = may_exit;
  std::remove(process->metrics_port_file.c_str());
  if (!options_.tls_dir.empty()) {
    // The file stem names the role: "coordinator", "server-1", "worker-0".
    const TlsFiles tls = LocalCaFiles(options_.tls_dir, file_stem.substr(0, file_stem.find('-')));
    argv.insert(argv.begin() + 1,
                {"--tls_cert=" + tls.cert, "--tls_key=" + tls.key, "--tls_ca=" + tls.ca});
  }
  if (!options_.tokens_dir.empty()) {
    const std::string role = file_stem.substr(0, file_stem.find('-'));
    argv.insert(argv.begin() + 1,
                {absl::StrCat("--token_file=", options_.tokens_dir, "/", role, ".token"),
                 absl::StrCat("--auth_tokens_file=", options_.tokens_dir, "/tokens.txt")});
    if (options_.tls_dir.empty()) argv.insert(argv.begin() + 1, "--allow_insecure_tokens");
  }
  // Metrics on a free port: default ports would clash between processes on one machine.
  argv.push_back("--metrics_port=0");
  argv.push_back("--metrics_port_file=" + process->metrics_port_file);
  absl::Status status = process->subprocess.Start(argv, process->log_path);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("start ", name, ": ", status.message()));
  }
  processes_.push_back(std::move(process));
  return processes_.back().get();
}

absl::StatusOr<int> LocalCluster::WaitForPort(Process* process, const std::string& port_file) {
  const absl::Time deadline = absl::Now() + options_.startup_timeout;
  while (true) {
    if (options_.interrupted && options_.interrupted()) {
      return absl::CancelledError("interrupted while starting the local cluster");
    }
    absl::StatusOr<int> port =
        WaitForPortFile(port_file, absl::Milliseconds(100), &process->subprocess);
    if (port.ok()) return port;
    if (port.status().code() == absl::StatusCode::kUnavailable) {
      absl::StatusOr<int> code = process->subprocess.Wait(absl::ZeroDuration());
      return absl::UnavailableError(
          absl::StrCat(Died(process, code.ok() ? *code : -1), "\n  (before writing its port)"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          process->name, " did not write its port to ", port_file, " within ",
          absl::FormatDuration(options_.startup_timeout), "; see ", process->log_path));
    }
  }
}

absl::Status LocalCluster::StartCoordinator(int port) {
  const std::string coordinator_port_file = absl::StrCat(options_.log_dir, "/coordinator.port");
  std::remove(coordinator_port_file.c_str());
  std::vector<std::string> coordinator_argv = {
      options_.binaries.coordinator, "--host=127.0.0.1", absl::StrCat("--port=", port),
      "--port_file=" + coordinator_port_file,
      "--state_db=" + absl::StrCat(options_.log_dir, "/coordinator.db")};
  if (options_.heartbeat_interval_ms > 0) {
    coordinator_argv.push_back(
        absl::StrCat("--heartbeat_interval_ms=", options_.heartbeat_interval_ms));
  }
  absl::StatusOr<Process*> coordinator =
      Launch("coordinator", "coordinator", std::move(coordinator_argv), /*may_exit=*/false);
  if (!coordinator.ok()) return coordinator.status();
  absl::StatusOr<int> bound = WaitForPort(*coordinator, coordinator_port_file);
  if (!bound.ok()) return bound.status();
  coordinator_address_ = absl::StrCat("127.0.0.1:", *bound);
  // The coordinator writes its HTTP port before its gRPC port.
  absl::StatusOr<int> http_port =
      WaitForPortFile((*coordinator)->metrics_port_file, absl::ZeroDuration());
  if (http_port.ok()) status_page_url_ = absl::StrCat("http://127.0.0.1:", *http_port, "/");
  return absl::OkStatus();
}

absl::Status LocalCluster::RestartCoordinator() {
  for (const auto& process : processes_) {
    if (process->name == "coordinator" && process->subprocess.running()) {
      return absl::FailedPreconditionError("the coordinator is still running");
    }
  }
  const size_t colon = coordinator_address_.rfind(':');
  if (colon == std::string::npos) return absl::FailedPreconditionError("never started");
  return StartCoordinator(std::stoi(coordinator_address_.substr(colon + 1)));
}

absl::Status LocalCluster::Start() {
  RETURN_IF_ERROR(StartCoordinator(0));
  std::vector<std::pair<Process*, std::string>> servers;
  for (int i = 0; i < options_.num_servers; ++i) {
    absl::StatusOr<std::pair<Process*, std::string>> server = LaunchServer(i);
    if (!server.ok()) return server.status();
    servers.push_back(*server);
  }
  // Started together, waited for together: servers come up in parallel.
  for (auto& [server, port_file] : servers) {
    absl::StatusOr<int> server_port = WaitForPort(server, port_file);
    if (!server_port.ok()) return server_port.status();
  }
  for (int i = 0; i < options_.num_workers; ++i) {
    RETURN_IF_ERROR(LaunchWorker(i, static_cast<size_t>(i) < options_.per_worker_args.size()
                                        ? options_.per_worker_args[i]
                                        : std::vector<std::string>()));
  }
  return CheckProcesses();
}

absl::StatusOr<std::pair<LocalCluster::Process*, std::string>> LocalCluster::LaunchServer(
    int index, int port, std::string log_stem) {
  const std::string stem = absl::StrCat("server-", index);
  if (log_stem.empty()) log_stem = stem;
  const std::string port_file = absl::StrCat(options_.log_dir, "/", stem, ".port");
  std::remove(port_file.c_str());
  std::vector<std::string> argv = {options_.binaries.server, "--host=127.0.0.1",
                                   absl::StrCat("--port=", port),
                                   "--port_file=" + port_file,
                                   "--coordinator=" + coordinator_address_,
                                   "--checkpoint_root=" + options_.checkpoint_root};
  if (options_.unix_sockets) {
    if (socket_dir_.empty()) {
      char dir[] = "/tmp/psrv-XXXXXX";
      if (mkdtemp(dir) == nullptr) {
        return absl::InternalError(absl::StrCat("mkdtemp /tmp/psrv-XXXXXX: ", strerror(errno)));
      }
      socket_dir_ = dir;
    }
    argv.push_back(absl::StrCat("--unix_socket=", socket_dir_, "/", stem, ".sock"));
  }
  argv.insert(argv.end(), options_.server_args.begin(), options_.server_args.end());
  absl::StatusOr<Process*> server =
      Launch(absl::StrCat("server ", index), log_stem, argv, /*may_exit=*/false);
  if (!server.ok()) return server.status();
  return std::make_pair(*server, port_file);
}

absl::Status LocalCluster::LaunchWorker(int index, const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv = {options_.binaries.worker,
                                   "--coordinator=" + coordinator_address_,
                                   absl::StrCat("--max_jobs=", options_.worker_max_jobs),
                                   "--host=127.0.0.1"};
  argv.insert(argv.end(), options_.worker_args.begin(), options_.worker_args.end());
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return Launch(absl::StrCat("worker ", index), absl::StrCat("worker-", index), argv,
                /*may_exit=*/true)
      .status();
}

int LocalCluster::Count(const std::string& prefix) const {
  std::set<std::string> names;  // A server restarted in place is one.
  for (const auto& process : processes_) {
    if (absl::StartsWith(process->name, prefix + " ")) names.insert(process->name);
  }
  return static_cast<int>(names.size());
}

absl::Status LocalCluster::AddServer() {
  absl::StatusOr<std::pair<Process*, std::string>> server = LaunchServer(Count("server"));
  if (!server.ok()) return server.status();
  return WaitForPort(server->first, server->second).status();
}

absl::Status LocalCluster::AddWorker(const std::vector<std::string>& extra_args) {
  return LaunchWorker(Count("worker"), extra_args);
}

absl::Status LocalCluster::RestartServerInPlace(int index) {
  const std::string name = absl::StrCat("server ", index);
  const std::string port_file = absl::StrCat(options_.log_dir, "/server-", index, ".port");
  absl::StatusOr<int> port = WaitForPortFile(port_file, absl::ZeroDuration());
  if (!port.ok()) return absl::NotFoundError(absl::StrCat(name, ": no port in ", port_file));
  RETURN_IF_ERROR(Kill(name, SIGKILL));
  int restarts = 0;
  for (const auto& process : processes_) restarts += process->name == name;
  absl::StatusOr<std::pair<Process*, std::string>> server =
      LaunchServer(index, *port, absl::StrCat("server-", index, ".restart-", restarts));
  if (!server.ok()) return server.status();
  return WaitForPort(server->first, server->second).status();
}

absl::Status LocalCluster::Kill(const std::string& name, int signal) {
  for (const auto& process : processes_) {
    if (process->name != name || !process->subprocess.running()) continue;
    process->subprocess.Signal(signal);
    process->may_exit = true;
    process->killed = true;
    if (signal == SIGKILL) (void)process->subprocess.Wait(absl::Seconds(10));
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no running process named \"", name, "\""));
}

int LocalCluster::PidOf(const std::string& name) const {
  int pid = -1;  // The running one, after a restart in place.
  for (const auto& process : processes_) {
    if (process->name != name) continue;
    pid = process->subprocess.pid();
    if (process->subprocess.running()) break;
  }
  return pid;
}

absl::StatusOr<std::vector<std::pair<std::string, int>>> LocalCluster::MetricsPorts(
    absl::Duration timeout) {
  std::vector<std::pair<std::string, int>> ports;
  const absl::Time deadline = absl::Now() + timeout;
  for (const auto& process : processes_) {
    absl::StatusOr<int> port =
        WaitForPortFile(process->metrics_port_file,
                        std::max(absl::ZeroDuration(), deadline - absl::Now()));
    if (!port.ok()) {
      return absl::Status(port.status().code(),
                          absl::StrCat(process->name, ": no metrics port in ",
                                       process->metrics_port_file, ": ", port.status().message()));
    }
    ports.emplace_back(process->name, *port);
  }
  return ports;
}

absl::Status LocalCluster::CheckProcesses() {
  for (const auto& process : processes_) {
    if (process->subprocess.running()) continue;
    absl::StatusOr<int> code = process->subprocess.Wait(absl::ZeroDuration());
    if (!code.ok()) continue;  // Never started.
    if (process->killed || (process->may_exit && *code == 0)) continue;
    return absl::UnavailableError(Died(process.get(), *code));
  }
  return absl::OkStatus();
}

void LocalCluster::Stop(absl::Duration grace) {
  // Workers first (they report to the coordinator), then servers, then the coordinator.
  for (const char* prefix : {"worker", "server", "coordinator"}) {
    std::vector<Process*> group;
    for (const auto& process : processes_) {
      if (absl::StartsWith(process->name, prefix) && process->subprocess.running()) {
        group.push_back(process.get());
      }
    }
    for (Process* process : group) process->subprocess.Signal(SIGTERM);
    const absl::Time deadline = absl::Now() + grace;
    for (Process* process : group) {
      if (!process->subprocess.Wait(std::max(absl::ZeroDuration(), deadline - absl::Now())).ok()) {
        process->subprocess.Signal(SIGKILL);
        (void)process->subprocess.Wait(absl::Seconds(5));
      }
    }
  }
  if (!socket_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(socket_dir_, ignored);
    socket_dir_.clear();
  }
}

}  // namespace psrv

// A whole cluster as child processes on 127.0.0.1 (`psctl local`): one ps_coordinator, N ps_server
// and M ps_worker, each logging to its own file, torn down with SIGTERM then SIGKILL. Every process
// serves its metrics (and the coordinator its status page) on a free port, written to
// <log_dir>/<process>.metrics_port. The coordinator keeps its state in <log_dir>/coordinator.db.
#ifndef PSRV_CLIENT_LOCAL_CLUSTER_H_
#define PSRV_CLIENT_LOCAL_CLUSTER_H_

#include <csignal>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/subprocess.h"

namespace psrv {

// Paths of the three binaries.
struct LocalBinaries {
  std::string coordinator;
  std::string server;
  std::string worker;
};

// Finds ps_coordinator, ps_server and ps_worker: only in `bin_dir` if it is non-empty; else in the
// directory of the running executable (/proc/self/exe) and its siblings ../coordinator, ../server,
// ../worker (the bazel-bin layout); else in Bazel runfiles (psrv/coordinator/ps_coordinator...).
// NOT_FOUND lists where it looked and how to build them.
absl::StatusOr<LocalBinaries> FindLocalBinaries(const std::string& bin_dir,
                                                const std::string& argv0);

struct LocalClusterOptions {
  LocalBinaries binaries;
  int num_servers = 2;
  int num_workers = 2;
  std::string log_dir;  // Existing directory for <process>.log and port files.
  absl::Duration startup_timeout = absl::Seconds(30);  // Per process, to write its port file.
  std::function<bool()> interrupted;                   // Polled while waiting; optional.
  int heartbeat_interval_ms = 0;  // The coordinator's --heartbeat_interval_ms; 0: its default.
  int worker_max_jobs = 1;        // Each worker's --max_jobs (0: runs jobs until stopped).
  // More flags for every ps_worker (e.g. "--cuda_attention=flash"), after the ones set here.
  std::vector<std::string> worker_args;
  // More flags for single workers: worker i (in start order) gets per_worker_args[i], if there is
  // one, after worker_args (e.g. one straggler's --slowdown).
  std::vector<std::vector<std::string>> per_worker_args;
  // More flags for every ps_server (e.g. "--ended_job_ttl=10m"), after the ones set here.
  std::vector<std::string> server_args;
  // Servers also listen on a Unix domain socket (in a fresh /tmp/psrv-XXXXXX folder: socket
  // paths are limited to 107 bytes) and advertise it: pulls and pushes skip the TCP stack.
  bool unix_sockets = false;
  // Each ps_server's --checkpoint_root: the folder checkpoint directories must lie in. Default
  // "/": any absolute path (the servers are this user's own processes, with no rights psctl lacks).
  std::string checkpoint_root = "/";
  // Mutual TLS: a folder made by MakeLocalClusterCertificates; each process gets the certificate
  // of its role (--tls_cert/--tls_key/--tls_ca). "": insecure.
  std::string tls_dir;
  // Bearer tokens: a folder made by MakeLocalClusterTokens; each process accepts the tokens of
  // tokens.txt (--auth_tokens_file) and sends its role's token (--token_file), on plaintext
  // (--allow_insecure_tokens) when tls_dir is "". "": no tokens.
  std::string tokens_dir;
};

// A throw-away CA in the existing folder `dir` (common/local_ca.h) with one certificate per role,
// named after it: coordinator, server, worker (the processes), operator and viewer (psctl).
absl::Status MakeLocalClusterCertificates(const std::string& dir);

// Random bearer tokens in the existing folder `dir`: <role>.token (one token, for --token_file)
// per role of MakeLocalClusterCertificates, and tokens.txt, the table of all of them
// (--auth_tokens_file). Files readable by the owner only.
absl::Status MakeLocalClusterTokens(const std::string& dir);

// Owns the child processes. Not thread-safe. The destructor stops whatever still runs.
class LocalCluster {
 public:
  explicit LocalCluster(LocalClusterOptions options);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Starts the coordinator and waits for its port, then the servers (waiting for their ports, so
  // they can register), then the workers. On error, names the process and shows its log's tail;
  // the processes already started keep running until Stop().
  absl::Status Start();

  // "127.0.0.1:<port>" once Start() got the coordinator's port.
  const std::string& coordinator_address() const { return coordinator_address_; }

  // The coordinator's status page, "http://127.0.0.1:<port>/", once Start() succeeded; "" if the
  // coordinator wrote no metrics port (it was started without an HTTP server).
  const std::string& status_page_url() const { return status_page_url_; }

  // Where each process serves /metrics: (name, port) in start order ("coordinator", "server 0",
  // "worker 1"...). Waits up to `timeout` for each process to write its port.
  absl::StatusOr<std::vector<std::pair<std::string, int>>> MetricsPorts(absl::Duration timeout);

  // OK while every process runs (a worker that exited with 0 finished its jobs: fine). Otherwise
  // UNAVAILABLE naming the first process that died, its exit code and the tail of its log.
  absl::Status CheckProcesses();

  // One more server (waiting for its port, so it registers) or worker, after Start(). Named
  // "server <i>" / "worker <i>" after those already started.
  absl::Status AddServer();
  // `extra_args`: more flags for this worker only, after worker_args.
  absl::Status AddWorker(const std::vector<std::string>& extra_args = {});

  // Sends `signal` to the process named `name` ("server 0", "worker 1", "coordinator") and, for
  // SIGKILL, waits for it to die; CheckProcesses() no longer counts it. NOT_FOUND for an unknown
  // or already stopped process.
  absl::Status Kill(const std::string& name, int signal = SIGKILL);

  // Kills server `index` (SIGKILL) and starts a new ps_server at once on the same port (and Unix
  // socket), as Kubernetes restarts a pod in place; waits for its port. Its log is
  // server-<index>.restart-<n>.log.
  absl::Status RestartServerInPlace(int index);

  // Starts the coordinator again (after Kill("coordinator")) on the same port and state file.
  absl::Status RestartCoordinator();

  // The pid of the process named `name`, or -1.
  int PidOf(const std::string& name) const;

  // Workers, then servers, then the coordinator: SIGTERM, up to `grace` per group, then SIGKILL.
  void Stop(absl::Duration grace = absl::Seconds(5));

 private:
  struct Process {
    std::string name;  // "coordinator", "server 0", "worker 1"
    std::string log_path;
    std::string metrics_port_file;
    bool may_exit = false;  // Exit code 0 is expected (workers with --max_jobs).
    bool killed = false;    // By Kill(): however it ended is expected.
    Subprocess subprocess;
  };

  absl::StatusOr<Process*> Launch(const std::string& name, const std::string& file_stem,
                                  std::vector<std::string> argv, bool may_exit);
  absl::StatusOr<int> WaitForPort(Process* process, const std::string& port_file);
  // Starts the coordinator on `port` (0: any) with its state in log_dir/coordinator.db.
  absl::Status StartCoordinator(int port);
  // Launches server/worker number `index` (servers: returns it with its port file, not waited for).
  // `port` 0: any; `log_stem` empty: server-<index>.
  absl::StatusOr<std::pair<Process*, std::string>> LaunchServer(int index, int port = 0,
                                                                std::string log_stem = "");
  absl::Status LaunchWorker(int index, const std::vector<std::string>& extra_args = {});
  int Count(const std::string& prefix) const;
  std::string Died(Process* process, int exit_code) const;

  LocalClusterOptions options_;
  std::string socket_dir_;  // With unix_sockets: where the servers' sockets are (removed by Stop).
  std::string coordinator_address_;
  std::string status_page_url_;
  std::vector<std::unique_ptr<Process>> processes_;  // In start order.
};

// The last `lines` lines of the file at `path` ("" if unreadable).
std::string TailOfFile(const std::string& path, int lines);

}  // namespace psrv

#endif  // PSRV_CLIENT_LOCAL_CLUSTER_H_

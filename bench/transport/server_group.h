// The servers transport_bench measures: groups of ps_server (or null_server, the wire-only
// baseline) processes on 127.0.0.1, and the jobs it creates on them.
#ifndef PSRV_BENCH_TRANSPORT_SERVER_GROUP_H_
#define PSRV_BENCH_TRANSPORT_SERVER_GROUP_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"
#include "common/key_range.h"
#include "common/subprocess.h"
#include "proto/parameter_server.grpc.pb.h"

namespace psrv {
namespace transport {

// SGD's learning rate in every job: keeps the parameters ~1.0 however many pushes land.
constexpr float kLearningRate = 1e-9f;

// `flag_value` if set, else the binary from Bazel runfiles ("psrv/<package>/<name>"), else
// <package>/<name> beside this binary's package in bazel-bin. NOT_FOUND names where it looked.
absl::StatusOr<std::string> FindBinary(const std::string& flag_value, const std::string& package,
                                       const std::string& name, const std::string& argv0);

struct ServerGroupOptions {
  std::string kind;         // "ps_server" or "null_server": names the files and the result rows.
  std::string binary;       // Path to that server.
  int count = 1;            // Processes in the group.
  std::string scratch_dir;  // Existing folder for each process's port file, log and socket.
  bool unix_sockets = false;  // Reach the servers at unix:PATH instead of 127.0.0.1:PORT.
  // Mutual TLS: a folder of common/local_ca.h certificates named server, coordinator and worker;
  // the servers run with the server one, the group creates jobs as the coordinator and the
  // measured clients talk as the worker. "": plaintext.
  std::string tls_dir;
};

// `count` server processes, stopped when destroyed. Owns the processes and one stub per server.
// Not thread-safe.
class ServerGroup {
 public:
  // Starts the processes one by one and waits for each to listen; the error carries the log tail
  // of a server that did not come up.
  static absl::StatusOr<std::unique_ptr<ServerGroup>> Start(const ServerGroupOptions& options);

  ~ServerGroup();

  int size() const { return static_cast<int>(slots_.size()); }
  const std::string& kind() const { return kind_; }  // "ps_server" or "null_server".
  std::vector<pid_t> pids() const;

  // Creates an ASYNC job holding one FP32 table of `elements` elements (initialised to ones),
  // sharded over this group's servers by PlanShards, and returns its shard map.
  absl::StatusOr<ShardMap> CreateJob(const std::string& job_id, uint64_t elements,
                                     uint64_t min_shard_elements);

  // Frees the job's memory on every server (best effort).
  void DropJob(const std::string& job_id);

  // The last lines of every server's log, for error messages.
  std::string LogTails() const;

  // The credentials a worker's ParameterClient needs for these servers (null: the process's,
  // plaintext).
  const std::shared_ptr<grpc::ChannelCredentials>& worker_credentials() const {
    return worker_credentials_;
  }

 private:
  ServerGroup() = default;

  std::string kind_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
  std::vector<std::string> logs_;
  std::vector<ServerSlot> slots_;
  std::vector<std::unique_ptr<ParameterServer::Stub>> stubs_;
  std::shared_ptr<grpc::ChannelCredentials> worker_credentials_;
};

}  // namespace transport
}  // namespace psrv

#endif  // PSRV_BENCH_TRANSPORT_SERVER_GROUP_H_

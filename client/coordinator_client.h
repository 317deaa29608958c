// Thin clients for psctl: the Coordinator service (jobs and nodes) and the Admin service of each
// parameter server. Every error comes back as an absl::Status with the gRPC code and a message that
// psctl prints as is: "<what failed>: <CODE_NAME>: <server message>", plus a hint line for
// UNAVAILABLE (is the process running?) and DEADLINE_EXCEEDED (--timeout).
#ifndef PSRV_CLIENT_COORDINATOR_CLIENT_H_
#define PSRV_CLIENT_COORDINATOR_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"
#include "common/job_spec.h"
#include "proto/job.pb.h"

namespace psrv {

// The error for a failed RPC: keeps the gRPC code; the message is
// "<what>: <CODE_NAME>: <grpc message>" and, if `hint` is non-empty, "\n  <hint>".
absl::Status RpcError(const std::string& what, const grpc::Status& status,
                      const std::string& hint = "");

// A channel to `address` (host:port) with psctl's settings (no HTTP proxy: the cluster is reached
// directly, and a proxy configured for the web must not capture 127.0.0.1).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

struct CoordinatorClientOptions {
  std::string address = "127.0.0.1:7070";
  absl::Duration timeout = absl::Seconds(10);  // Per unary call.
};

// One coordinator connection. Thread-compatible: use from one thread at a time.
class CoordinatorClient {
 public:
  explicit CoordinatorClient(CoordinatorClientOptions options);

  const std::string& address() const { return options_.address; }

  absl::StatusOr<std::string> SubmitJob(const JobSpec& spec);  // Returns the job id.
  absl::StatusOr<JobStatus> GetJob(const std::string& job_id);
  absl::StatusOr<std::vector<JobStatus>> ListJobs();
  absl::StatusOr<JobStatus> CancelJob(const std::string& job_id);
  // Waits for the servers to write the files (at least 2 minutes, whatever the timeout).
  absl::StatusOr<CheckpointManifest> CheckpointJob(const std::string& job_id,
                                                   const std::string& directory);
  absl::StatusOr<std::vector<NodeInfo>> ListNodes();

  // Follows WatchJob: calls `on_status` for every status the coordinator sends, until the job ends
  // (then returns its final status) or the stream fails. Every `poll_interval`, `poll` (optional)
  // runs on this thread; an error from it cancels the stream and is returned (e.g. Ctrl-C, a dead
  // local process). The stream itself has no deadline.
  absl::StatusOr<JobStatus> WatchJob(const std::string& job_id,
                                     const std::function<void(const JobStatus&)>& on_status,
                                     const std::function<absl::Status()>& poll = nullptr,
                                     absl::Duration poll_interval = absl::Milliseconds(200));

 private:
  void PrepareContext(grpc::ClientContext* context) const;
  absl::Status Error(const std::string& what, const grpc::Status& status) const;

  CoordinatorClientOptions options_;
  std::unique_ptr<Coordinator::Stub> stub_;
};

// Admin.GetStatus of the parameter server at `address`, only `job_id`'s shards if non-empty.
absl::StatusOr<ServerStatus> GetServerStatus(const std::string& address, const std::string& job_id,
                                             absl::Duration timeout);


}  // namespace psrv

#endif  // PSRV_CLIENT_COORDINATOR_CLIENT_H_

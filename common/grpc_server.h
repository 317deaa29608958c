// Starts a process's gRPC server the same way everywhere: tensor-sized message limits, the standard
// health service, server reflection, and the port actually bound (for --port=0).
#ifndef PSRV_COMMON_GRPC_SERVER_H_
#define PSRV_COMMON_GRPC_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/server.h>
#include <grpcpp/impl/codegen/service_type.h>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace psrv {

struct RunningServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // The port bound.
};

// Listens on host:port (port 0: any free port) with `services` (not owned; must outlive the
// server). If `port_file` is non-empty the bound port is written there once serving. With
// `metrics` (not owned; must outlive the server), every RPC is counted and timed there
// (common/rpc_metrics.h). With `unix_socket` (a file path), the server also listens on that Unix
// domain socket (a stale socket file there is replaced): processes on the same machine reach it
// as "unix:PATH" without the TCP stack. With TLS on (common/tls.h), both listeners take mutual
// TLS only and every call is authorized by the caller's role (common/rpc_authorizer.h); refusals
// are counted in `metrics`. UNAVAILABLE if an address cannot be bound.
absl::StatusOr<RunningServer> StartGrpcServer(const std::string& host, int port,
                                              const std::vector<grpc::Service*>& services,
                                              const std::string& port_file,
                                              MetricsRegistry* metrics = nullptr,
                                              const std::string& unix_socket = "");

}  // namespace psrv

#endif  // PSRV_COMMON_GRPC_SERVER_H_

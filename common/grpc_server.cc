#include "common/grpc_server.h"

#include <unistd.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "common/auth_tokens.h"
#include "common/channel.h"
#include "common/rpc_authorizer.h"
#include "common/rpc_metrics.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "common/tls.h"

namespace psrv {

absl::StatusOr<RunningServer> StartGrpcServer(const std::string& host, int port,
                                              const std::vector<grpc::Service*>& services,
                                              const std::string& port_file,
                                              MetricsRegistry* metrics,
                                              const std::string& unix_socket) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ConfigureServerBuilder(&builder);
  const std::string listen = absl::StrCat(host, ":", port);
  RunningServer running;
  // Insecure, or mutual TLS and/or bearer tokens with every call checked against the role table
  // (common/tls.h, common/auth_tokens.h).
  std::shared_ptr<grpc::ServerCredentials> credentials = ProcessServerCredentials();
  auto authorizer = std::make_shared<RpcAuthorizer>(metrics, ProcessTokenTable());
  if (TlsEnabled()) {
    credentials->SetAuthMetadataProcessor(authorizer);
  } else if (ProcessTokenTable() != nullptr) {
    credentials = InsecureServerCredentialsWithAuthorizer(authorizer);
  }
  builder.AddListeningPort(listen, credentials, &running.port);
  if (!unix_socket.empty()) {
    ::unlink(unix_socket.c_str());  // A socket file left by an earlier run would fail the bind.
    builder.AddListeningPort(absl::StrCat("unix:", unix_socket), credentials);
  }
  for (grpc::Service* service : services) builder.RegisterService(service);
  if (metrics != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(MakeRpcMetricsInterceptor(metrics));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  running.server = builder.BuildAndStart();
  if (running.server == nullptr || running.port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen, unix_socket.empty() ? "" : " and unix:", unix_socket));
  }
  if (!port_file.empty()) RETURN_IF_ERROR(WritePortFile(port_file, running.port));
  return running;
}

}  // namespace psrv

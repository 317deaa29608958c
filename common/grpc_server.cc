#include "common/grpc_server.h"

#include <unistd.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/interceptor.h>
#include <grpcpp/support/server_interceptor.h>

#include "absl/strings/str_cat.h"
#include "common/auth_tokens.h"
#include "common/channel.h"
#include "common/rpc_authorizer.h"
#include "common/rpc_metrics.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "common/tls.h"

namespace psrv {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;
using grpc::experimental::ServerRpcInfo;

// gRPC answers a request it cannot parse as its method's message by itself, before any handler
// runs, with a status that says nothing (UNIMPLEMENTED or INTERNAL and no message). Every handler
// here says why it refuses (server/guarded_call.h, common/grpc_status.h), so such an answer is
// that case: INVALID_ARGUMENT, saying so.
class UnparsableRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit UnparsableRequestInterceptor(const char* method) : method_(method ? method : "") {}

  void Intercept(InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_message().empty() &&
          (status.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
           status.error_code() == grpc::StatusCode::INTERNAL)) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat(method_, ": the request is not a valid message of the method's type "
                                  "(it could not be parsed)")));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
};

class UnparsableRequestInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    return new UnparsableRequestInterceptor(info->method());
  }
};

}  // namespace

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
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<UnparsableRequestInterceptorFactory>());
  if (metrics != nullptr) creators.push_back(MakeRpcMetricsInterceptor(metrics));
  builder.experimental().SetInterceptorCreators(std::move(creators));
  running.server = builder.BuildAndStart();
  if (running.server == nullptr || running.port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen, unix_socket.empty() ? "" : " and unix:", unix_socket));
  }
  if (!port_file.empty()) RETURN_IF_ERROR(WritePortFile(port_file, running.port));
  return running;
}

}  // namespace psrv

// Authorization of every RPC under TLS: the caller's role (its client certificate's subject OU)
// must be one that common/rpc_roles.h allows for the method. Installed by StartGrpcServer on the
// server credentials when TLS is on (common/tls.h); it runs in gRPC's transport, before the
// interceptors and the handler, so a rejected call costs the handler nothing.
#ifndef PSRV_COMMON_RPC_AUTHORIZER_H_
#define PSRV_COMMON_RPC_AUTHORIZER_H_

#include <optional>
#include <string>
#include <vector>

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/support/status.h>

#include "absl/strings/string_view.h"
#include "common/metrics.h"

namespace psrv {

// The OU values of an RFC 2253 subject as gRPC reports it ("CN=w0,OU=worker,O=psrv"), unescaped.
std::vector<std::string> SubjectRoles(absl::string_view subject);

// The verdict on a call of `method` (full name, "/psrv.Coordinator/SubmitJob") by a caller whose
// verified certificate has `subject` (nullopt: no certificate): OK; UNAUTHENTICATED without a
// certificate; PERMISSION_DENIED naming the method, the roles it needs and the caller's roles.
grpc::Status AuthorizeRpc(absl::string_view method, const std::optional<std::string>& subject);

// The grpc::AuthMetadataProcessor around AuthorizeRpc; counts rejections in `metrics` (may be
// null; not owned; must outlive this) as psrv_grpc_auth_rejected_total. Thread-safe; not blocking
// (it runs on gRPC's thread, no thread hop per call).
class RpcAuthorizer final : public grpc::AuthMetadataProcessor {
 public:
  explicit RpcAuthorizer(MetricsRegistry* metrics);

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  CounterFamily* const rejected_;  // Null without metrics.
};

}  // namespace psrv

#endif  // PSRV_COMMON_RPC_AUTHORIZER_H_

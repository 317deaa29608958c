// Authorization of every RPC under TLS or bearer tokens: the caller's role (its client
// certificate's subject OU, or the role of its bearer token, common/auth_tokens.h) must be one that
// common/rpc_roles.h allows for the method. Installed by StartGrpcServer on the server credentials
// when TLS or a token table is on (common/tls.h); it runs in gRPC's transport, before the
// interceptors and the handler, so a rejected call costs the handler nothing.
#ifndef PSRV_COMMON_RPC_AUTHORIZER_H_
#define PSRV_COMMON_RPC_AUTHORIZER_H_

#include <optional>
#include <string>
#include <vector>

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/status.h>

#include "absl/strings/string_view.h"
#include "common/auth_tokens.h"
#include "common/metrics.h"

namespace psrv {

// The OU values of an RFC 2253 subject as gRPC reports it ("CN=w0,OU=worker,O=psrv"), unescaped.
std::vector<std::string> SubjectRoles(absl::string_view subject);

// Who is calling, as the transport proved it.
struct RpcCaller {
  std::optional<std::string> subject;     // The verified client certificate's subject, if any.
  std::optional<std::string> token_role;  // The role of the bearer token sent, if it is known.
  bool unknown_token = false;             // A bearer token was sent that no table line has.
};

// The verdict on a call of `method` (full name, "/psrv.Coordinator/SubmitJob") by `caller`: OK;
// UNAUTHENTICATED with neither a certificate nor a known token (or with an unknown token);
// PERMISSION_DENIED naming the method, the roles it needs and the caller's roles. The caller's
// roles are its certificate's OUs and its token's role together.
grpc::Status AuthorizeRpc(absl::string_view method, const RpcCaller& caller);

// The grpc::AuthMetadataProcessor around AuthorizeRpc: the subject from the TLS auth context, the
// token from the "authorization: Bearer" metadata looked up in `tokens` (may be null: tokens are
// not accepted; not owned; must outlive this). Counts rejections in `metrics` (may be null; not
// owned; must outlive this) as psrv_grpc_auth_rejected_total. Thread-safe; not blocking (it runs on
// gRPC's thread, no thread hop per call).
class RpcAuthorizer final : public grpc::AuthMetadataProcessor {
 public:
  RpcAuthorizer(MetricsRegistry* metrics, const TokenTable* tokens);

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  CounterFamily* const rejected_;  // Null without metrics.
  const TokenTable* const tokens_;
};

// Plaintext server credentials that still run `authorizer` on every call (bearer tokens behind a
// proxy that ends TLS; grpc::InsecureServerCredentials takes no processor).
std::shared_ptr<grpc::ServerCredentials> InsecureServerCredentialsWithAuthorizer(
    std::shared_ptr<RpcAuthorizer> authorizer);

}  // namespace psrv

#endif  // PSRV_COMMON_RPC_AUTHORIZER_H_

// Certificate or token roles -> allowed or not, per call, with the reason in the status message.
#include "common/rpc_authorizer.h"

#include <map>

#include <grpc/grpc_security.h>
#include <grpc/grpc_security_constants.h>
#include <grpc/slice.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/rpc_roles.h"

namespace psrv {

std::vector<std::string> SubjectRoles(absl::string_view subject) {
  std::vector<std::string> roles;
  std::string attribute;  // The current "TYPE=value", unescaped.
  auto finish = [&] {
    if (attribute.rfind("OU=", 0) == 0) roles.push_back(attribute.substr(3));
    attribute.clear();
  };
  for (size_t i = 0; i < subject.size(); ++i) {
    const char c = subject[i];
    if (c == '\\' && i + 1 < subject.size()) {
      attribute.push_back(subject[++i]);  // An escaped ',' '+' '=' ... belongs to the value.
    } else if (c == ',' || c == '+') {
      finish();
    } else if (c != ' ' || !attribute.empty()) {
      attribute.push_back(c);
    }
  }
  finish();
  return roles;
}

grpc::Status AuthorizeRpc(absl::string_view method, const RpcCaller& caller) {
  if (caller.unknown_token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method, ": the bearer token is not in this server's table"));
  }
  if (!caller.subject.has_value() && !caller.token_role.has_value()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method,
                                     ": no client certificate and no bearer token; every "
                                     "caller needs a certificate signed by the cluster CA "
                                     "or a token this server knows"));
  }
  const RpcRoleRule* rule = FindRpcRoleRule(method);
  if (rule == nullptr) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(method, " is in no role's table (common/rpc_roles.cc)"));
  }
  std::vector<std::string> roles;
  if (caller.subject.has_value()) roles = SubjectRoles(*caller.subject);
  if (caller.token_role.has_value()) roles.push_back(*caller.token_role);
  for (const std::string& allowed : rule->roles) {
    if (allowed == kAnyCertificate) return grpc::Status::OK;
    for (const std::string& role : roles) {
      if (role == allowed) return grpc::Status::OK;
    }
  }
  const std::string who = caller.subject.has_value()
                              ? absl::StrCat("certificate (", *caller.subject, ")",
                                             caller.token_role.has_value() ? " and token" : "")
                              : "token";
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      absl::StrCat(method, " needs role ", absl::StrJoin(rule->roles, " or "), "; the caller's ",
                   who, " has role ", roles.empty() ? "(no OU)" : absl::StrJoin(roles, ", ")));
}

RpcAuthorizer::RpcAuthorizer(MetricsRegistry* metrics, const TokenTable* tokens)
    : rejected_(metrics == nullptr
                    ? nullptr
                    : metrics->AddCounter("psrv_grpc_auth_rejected_total",
                                          "RPCs refused by the role check (certificates or "
                                          "tokens), by method and "
                                          "code (Unauthenticated, PermissionDenied).",
                                          {"grpc_method", "grpc_code"})),
      tokens_(tokens) {}

grpc::Status RpcAuthorizer::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                    OutputMetadata*, OutputMetadata*) {
  absl::string_view method;
  if (auto path = auth_metadata.find(":path"); path != auth_metadata.end()) {
    method = absl::string_view(path->second.data(), path->second.size());
  }
  RpcCaller caller;
  if (context != nullptr) {  // A subject is only there for a certificate the CA verified.
    for (const grpc::string_ref& value :
         context->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME)) {
      caller.subject = std::string(value.data(), value.size());
    }
  }
  auto header = auth_metadata.find("authorization");
  if (tokens_ != nullptr && header != auth_metadata.end()) {
    std::optional<std::string> token =
        ParseBearer(absl::string_view(header->second.data(), header->second.size()));
    caller.token_role = token ? tokens_->RoleOf(*token) : std::nullopt;
    caller.unknown_token = !caller.token_role.has_value();
  }
  grpc::Status status = AuthorizeRpc(method, caller);
  if (!status.ok() && rejected_ != nullptr) {
    rejected_
        ->Get({std::string(method), status.error_code() == grpc::StatusCode::UNAUTHENTICATED
                                        ? "Unauthenticated"
                                        : "PermissionDenied"})
        ->Increment();
  }
  return status;
}

namespace {

// The C processor gRPC's core calls on a plaintext listener; `state` is a heap
// std::shared_ptr<RpcAuthorizer>, deleted by DestroyAuthorizer when the listener goes.
void ProcessPlaintextCall(void* state, grpc_auth_context*, const grpc_metadata* metadata,
                          size_t count, grpc_process_auth_metadata_done_cb done, void* user_data) {
  grpc::AuthMetadataProcessor::InputMetadata input;
  for (size_t i = 0; i < count; ++i) {
    input.emplace(
        grpc::string_ref(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(metadata[i].key)),
                         GRPC_SLICE_LENGTH(metadata[i].key)),
        grpc::string_ref(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(metadata[i].value)),
                         GRPC_SLICE_LENGTH(metadata[i].value)));
  }
  grpc::AuthMetadataProcessor::OutputMetadata unused;
  const grpc::Status status = (*static_cast<std::shared_ptr<RpcAuthorizer>*>(state))
                                  ->Process(input, nullptr, &unused, &unused);
  done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(status.error_code()),
       status.ok() ? nullptr : status.error_message().c_str());
}

void DestroyAuthorizer(void* state) { delete static_cast<std::shared_ptr<RpcAuthorizer>*>(state); }

class PlaintextCredentialsWithAuthorizer final : public grpc::ServerCredentials {
 public:
  explicit PlaintextCredentialsWithAuthorizer(std::shared_ptr<RpcAuthorizer> authorizer)
      : authorizer_(std::move(authorizer)) {}

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {}

 private:
  int AddPortToServer(const std::string& address, grpc_server* server) override {
    grpc_server_credentials* credentials = grpc_insecure_server_credentials_create();
    grpc_server_credentials_set_auth_metadata_processor(
        credentials, {&ProcessPlaintextCall, &DestroyAuthorizer,
                      new std::shared_ptr<RpcAuthorizer>(authorizer_)});
    const int port = grpc_server_add_http2_port(server, address.c_str(), credentials);
    grpc_server_credentials_release(credentials);
    return port;
  }

  const std::shared_ptr<RpcAuthorizer> authorizer_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> InsecureServerCredentialsWithAuthorizer(
    std::shared_ptr<RpcAuthorizer> authorizer) {
  return std::make_shared<PlaintextCredentialsWithAuthorizer>(std::move(authorizer));
}

}  // namespace psrv

// Certificate roles -> allowed or not, per call, with the reason in the status message.
#include "common/rpc_authorizer.h"

#include <grpc/grpc_security_constants.h>

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

grpc::Status AuthorizeRpc(absl::string_view method, const std::optional<std::string>& subject) {
  if (!subject.has_value()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method, ": no client certificate; TLS is on here, so every "
                                             "caller needs one signed by the cluster CA"));
  }
  const RpcRoleRule* rule = FindRpcRoleRule(method);
  if (rule == nullptr) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(method, " is in no role's table (common/rpc_roles.cc)"));
  }
  const std::vector<std::string> roles = SubjectRoles(*subject);
  for (const std::string& allowed : rule->roles) {
    if (allowed == kAnyCertificate) return grpc::Status::OK;
    for (const std::string& role : roles) {
      if (role == allowed) return grpc::Status::OK;
    }
  }
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      absl::StrCat(method, " needs role ", absl::StrJoin(rule->roles, " or "),
                   "; the caller's certificate (", *subject, ") has role ",
                   roles.empty() ? "(no OU)" : absl::StrJoin(roles, ", ")));
}

RpcAuthorizer::RpcAuthorizer(MetricsRegistry* metrics)
    : rejected_(metrics == nullptr
                    ? nullptr
                    : metrics->AddCounter("psrv_grpc_auth_rejected_total",
                                          "RPCs refused by the TLS role check, by method and "
                                          "code (Unauthenticated, PermissionDenied).",
                                          {"grpc_method", "grpc_code"})) {}

grpc::Status RpcAuthorizer::Process(const InputMetadata& auth_metadata,
                                    grpc::AuthContext* context, OutputMetadata*,
                                    OutputMetadata*) {
  absl::string_view method;
  if (auto path = auth_metadata.find(":path"); path != auth_metadata.end()) {
    method = absl::string_view(path->second.data(), path->second.size());
  }
  std::optional<std::string> subject;
  if (context != nullptr) {  // A subject is only there for a certificate the CA verified.
    for (const grpc::string_ref& value :
         context->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME)) {
      subject = std::string(value.data(), value.size());
    }
  }
  grpc::Status status = AuthorizeRpc(method, subject);
  if (!status.ok() && rejected_ != nullptr) {
    rejected_
        ->Get({std::string(method), status.error_code() == grpc::StatusCode::UNAUTHENTICATED
                                        ? "Unauthenticated"
                                        : "PermissionDenied"})
        ->Increment();
  }
  return status;
}

}  // namespace psrv

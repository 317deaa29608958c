// The TLS flags of the daemons.
#include "common/tls_flags.h"

#include <string>

#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "common/auth_tokens.h"
#include "common/tls.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate of this process, signed by --tls_ca; its subject OU is the process's "
          "role (coordinator, server or worker; README \"Security\"). With --tls_key and --tls_ca "
          "every gRPC server here takes mutual TLS only and checks each caller's role, and every "
          "channel this process opens uses TLS with this certificate. Empty (all three): "
          "insecure.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM certificate of the cluster's CA: peers' certificates must be signed by it.");

ABSL_FLAG(std::string, token_file, "",
          "File holding this process's bearer token (one line, at least 16 characters): sent as "
          "\"authorization: Bearer TOKEN\" on every call this process makes; the servers' "
          "--auth_tokens_file gives it its role. Needs TLS or --allow_insecure_tokens.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of lines \"ROLE TOKEN\" (# comments; tokens of at least 16 characters): the "
          "gRPC servers here accept a caller sending one of these tokens with that role, as if "
          "its certificate had that OU (README \"Security\"). Needs TLS or "
          "--allow_insecure_tokens.");
ABSL_FLAG(bool, allow_insecure_tokens, false,
          "Send and accept bearer tokens without TLS: only where TLS ends at a proxy or mesh in "
          "front of every process (tokens are readable by anyone who sees the traffic).");
ABSL_FLAG(std::string, http_token_file, "",
          "File holding a bearer token (one line, at least 16 characters): when set, the HTTP "
          "pages of this process (/metrics, the status page) answer 401 unless the request has "
          "\"Authorization: Bearer TOKEN\"; /healthz stays open. Plain HTTP: put TLS in front "
          "of it where the network is not trusted.");

namespace psrv {
namespace {

const std::string* http_token = nullptr;  // Set by EnableTlsFromFlags; null: pages open.

}  // namespace

bool EnableTlsFromFlags() {
  const TlsFiles files{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                       absl::GetFlag(FLAGS_tls_ca)};
  // A daemon serves, so it needs a certificate of its own whenever TLS is on.
  absl::Status status = !files.empty() && files.cert.empty()
                            ? absl::InvalidArgumentError(
                                  "TLS needs all three of a certificate, its key and the CA "
                                  "certificate (or none)")
                            : EnableTls(files);
  if (TlsEnabled()) LOG(INFO) << "mutual TLS on, as " << absl::GetFlag(FLAGS_tls_cert);
  if (status.ok()) {
    status = EnableTokens(TokenOptions{absl::GetFlag(FLAGS_token_file),
                                       absl::GetFlag(FLAGS_auth_tokens_file),
                                       absl::GetFlag(FLAGS_allow_insecure_tokens)});
  }
  if (status.ok() && !absl::GetFlag(FLAGS_http_token_file).empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(absl::GetFlag(FLAGS_http_token_file));
    if (token.ok()) http_token = new std::string(*std::move(token));
    status = token.status();
  }
  if (!status.ok()) LOG(ERROR) << status;
  if (ProcessTokenTable() != nullptr) {
    LOG(INFO) << "bearer tokens accepted: " << ProcessTokenTable()->size() << " from "
              << absl::GetFlag(FLAGS_auth_tokens_file);
  }
  return status.ok();
}

std::string HttpTokenFromFlags() { return http_token == nullptr ? "" : *http_token; }

}  // namespace psrv

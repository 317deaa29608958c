// A throw-away certificate authority for clusters on one machine (psctl local --tls) and tests:
// a CA and one certificate per process, made with the openssl command-line tool. Never for
// production: the CA's key lies next to the certificates (README "Security").
#ifndef PSRV_COMMON_LOCAL_CA_H_
#define PSRV_COMMON_LOCAL_CA_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tls.h"

namespace psrv {

// One certificate to make: files <name>.crt and <name>.key, subject "/O=psrv/OU=<role>/CN=<name>".
struct CertificateRequest {
  std::string name;
  std::string role;  // common/rpc_roles.h; "" for a certificate with no OU.
};

// Whether `openssl` is on PATH (else MakeLocalCa fails with FAILED_PRECONDITION).
bool OpensslAvailable();

// Writes ca.crt/ca.key into the existing directory `dir` and a certificate per request, each
// valid for 30 days and for the names localhost, 127.0.0.1 and this machine's hostname (servers
// are reached by those). openssl's output goes to <dir>/openssl.log, named in errors.
absl::Status MakeLocalCa(const std::string& dir, const std::vector<CertificateRequest>& requests);

// The files of certificate `name` in `dir` made by MakeLocalCa, for EnableTls or --tls_* flags.
TlsFiles LocalCaFiles(const std::string& dir, const std::string& name);

// Channel credentials of certificate `name` in `dir` ("": TLS with the CA, but no client
// certificate), for tests and tools that talk as several identities (common/tls.h).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> LocalCaCredentials(
    const std::string& dir, const std::string& name);

}  // namespace psrv

#endif  // PSRV_COMMON_LOCAL_CA_H_

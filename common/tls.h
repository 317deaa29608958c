// Transport security for the whole process: mutual TLS with certificates signed by one cluster CA.
// Set once at startup (EnableTls); from then on every channel made by CreateChannel (common/
// channel.h) and every server started by StartGrpcServer (common/grpc_server.h) uses it. Without
// EnableTls both stay insecure, exactly as before (docs/ARCHITECTURE.md, "Transport security").
#ifndef PSRV_COMMON_TLS_H_
#define PSRV_COMMON_TLS_H_

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace psrv {

// PEM files: this process's certificate (its subject OU is its role, common/rpc_roles.h), its
// private key, and the CA certificate that signed every certificate of the cluster.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;

  bool empty() const { return cert.empty() && key.empty() && ca.empty(); }
};

// Reads the three files and makes them the process's credentials. All three or none, or the CA
// alone (a client that proves itself with a bearer token, common/auth_tokens.h): INVALID_ARGUMENT
// otherwise; NOT_FOUND if one cannot be read. `files.empty()`: nothing changes.
// Call once, before any channel or server is made and before other threads start (the credentials
// are then read without a lock).
absl::Status EnableTls(const TlsFiles& files);

// Whether EnableTls succeeded with files.
bool TlsEnabled();

// SslCredentials with this process's certificate, key and CA; insecure ones without TLS.
std::shared_ptr<grpc::ChannelCredentials> ProcessChannelCredentials();

// SslCredentials from `files` read now, independently of the process's: for tools and tests that
// talk as several identities. An empty cert and key make a client without a certificate.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files);

// SslServerCredentials that ask every client for a certificate and verify it against the CA (a
// client without one gets through the handshake, so that the authorizer can answer it
// UNAUTHENTICATED with a message instead of a bare handshake failure; common/rpc_authorizer.h);
// insecure ones without TLS.
std::shared_ptr<grpc::ServerCredentials> ProcessServerCredentials();

}  // namespace psrv

#endif  // PSRV_COMMON_TLS_H_

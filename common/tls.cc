// The process-wide TLS credentials behind CreateChannel and StartGrpcServer.
#include "common/tls.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

struct TlsPems {
  std::string cert;  // Empty in a client without a certificate (one with a bearer token).
  std::string key;
  std::string ca;
};

// Set by EnableTls before other threads run; null: insecure.
const TlsPems* tls_pems = nullptr;

absl::Status ReadPem(const std::string& path, const char* what, std::string* pem) {
  if (path.empty()) return absl::OkStatus();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the TLS ", what, " ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  *pem = contents.str();
  if (pem->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("the TLS ", what, " ", path, " is not a PEM file"));
  }
  return absl::OkStatus();
}

absl::Status ReadPems(const TlsFiles& files, TlsPems* pems) {
  RETURN_IF_ERROR(ReadPem(files.cert, "certificate", &pems->cert));
  RETURN_IF_ERROR(ReadPem(files.key, "key", &pems->key));
  return ReadPem(files.ca, "CA certificate", &pems->ca);
}

std::shared_ptr<grpc::ChannelCredentials> SslChannelCredentials(const TlsPems& pems) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pems.ca;
  options.pem_private_key = pems.key;
  options.pem_cert_chain = pems.cert;
  return grpc::SslCredentials(options);
}

}  // namespace

absl::Status EnableTls(const TlsFiles& files) {
  if (files.empty()) return absl::OkStatus();
  if (files.cert.empty() != files.key.empty() || files.ca.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs all three of a certificate, its key and the CA certificate (or none; a "
        "client with a bearer token may give the CA certificate alone)");
  }
  auto pems = std::make_unique<TlsPems>();
  RETURN_IF_ERROR(ReadPems(files, pems.get()));
  delete tls_pems;
  tls_pems = pems.release();
  return absl::OkStatus();
}

bool TlsEnabled() { return tls_pems != nullptr; }

std::shared_ptr<grpc::ChannelCredentials> ProcessChannelCredentials() {
  if (tls_pems == nullptr) return grpc::InsecureChannelCredentials();
  return SslChannelCredentials(*tls_pems);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files) {
  if (files.ca.empty() || files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("TLS credentials need a CA, and a key with a certificate");
  }
  TlsPems pems;
  RETURN_IF_ERROR(ReadPems(files, &pems));
  return SslChannelCredentials(pems);
}

std::shared_ptr<grpc::ServerCredentials> ProcessServerCredentials() {
  if (tls_pems == nullptr) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls_pems->ca;
  options.pem_key_cert_pairs.push_back({tls_pems->key, tls_pems->cert});
  return grpc::SslServerCredentials(options);
}

}  // namespace psrv

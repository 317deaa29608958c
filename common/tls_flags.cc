// The TLS flags of the daemons.
#include "common/tls_flags.h"

#include <string>

#include <glog/logging.h>

#include "absl/flags/flag.h"
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

namespace psrv {

bool EnableTlsFromFlags() {
  const absl::Status status = EnableTls(TlsFiles{
      absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca)});
  if (!status.ok()) LOG(ERROR) << status;
  if (TlsEnabled()) LOG(INFO) << "mutual TLS on, as " << absl::GetFlag(FLAGS_tls_cert);
  return status.ok();
}

}  // namespace psrv

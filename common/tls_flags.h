// The security flags, the same on every daemon (ps_coordinator, ps_server, ps_worker): --tls_cert,
// --tls_key, --tls_ca, the bearer-token flags (--token_file, --auth_tokens_file,
// --allow_insecure_tokens) and --http_token_file. Defined once here, applied by each main() with
// EnableTlsFromFlags.
#ifndef PSRV_COMMON_TLS_FLAGS_H_
#define PSRV_COMMON_TLS_FLAGS_H_

#include <string>

namespace psrv {

// EnableTls (common/tls.h) with the three TLS flags, then EnableTokens (common/auth_tokens.h) with
// the token flags, and reads --http_token_file: true, and insecure when none is set; false (the
// error logged) when they are incomplete, a file cannot be read or is malformed, and main() should
// exit.
bool EnableTlsFromFlags();

// The token of --http_token_file once EnableTlsFromFlags read it ("" without it), for
// MonitoringOptions::bearer_token.
std::string HttpTokenFromFlags();

}  // namespace psrv

#endif  // PSRV_COMMON_TLS_FLAGS_H_

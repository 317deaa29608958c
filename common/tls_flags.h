// --tls_cert, --tls_key and --tls_ca, the same on every daemon (ps_coordinator, ps_server,
// ps_worker): defined once here, applied by each main() with EnableTlsFromFlags.
#ifndef PSRV_COMMON_TLS_FLAGS_H_
#define PSRV_COMMON_TLS_FLAGS_H_

namespace psrv {

// EnableTls (common/tls.h) with the three flags: true, and insecure when none is set; false (the
// error logged) when they are incomplete or a file cannot be read, and main() should exit.
bool EnableTlsFromFlags();

}  // namespace psrv

#endif  // PSRV_COMMON_TLS_FLAGS_H_

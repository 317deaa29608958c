// --help for the cluster's daemons. Abseil's --help lists the flags of files named after the
// binary (ps_worker.cc...); ours live in <role>_main.cc, so --help said "No flags matched". This
// makes --help list the flags of every *_main.cc file (the program's own) and the shared TLS flags
// (common/tls_flags.cc); the rest stay under --helpfull.
#ifndef PSRV_COMMON_FLAGS_HELP_H_
#define PSRV_COMMON_FLAGS_HELP_H_

namespace psrv {

// Call before absl::ParseCommandLine.
void ShowMainFlagsInHelp();

}  // namespace psrv

#endif  // PSRV_COMMON_FLAGS_HELP_H_

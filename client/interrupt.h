// Ctrl-C handling for psctl: SIGINT/SIGTERM set a flag that long-running commands poll, so they can
// cancel the job and stop their local processes before exiting. A second signal kills psctl at
// once.
#ifndef PSRV_CLIENT_INTERRUPT_H_
#define PSRV_CLIENT_INTERRUPT_H_

namespace psrv {

// Installs the SIGINT and SIGTERM handlers. Call once, early in main().
void InstallInterruptHandlers();

// True once SIGINT or SIGTERM arrived.
bool Interrupted();

}  // namespace psrv

#endif  // PSRV_CLIENT_INTERRUPT_H_

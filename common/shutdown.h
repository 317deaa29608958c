// SIGINT/SIGTERM handling for the long-running processes: the signals are turned into a
// notification that main() waits on, so shutdown runs on an ordinary thread.
#ifndef PSRV_COMMON_SHUTDOWN_H_
#define PSRV_COMMON_SHUTDOWN_H_

#include "absl/synchronization/notification.h"

namespace psrv {

// Call at the start of main(), before any thread is created: blocks SIGINT and SIGTERM in every
// thread and starts one thread that waits for them. The returned notification (never destroyed) is
// notified at the first such signal.
absl::Notification* InstallTerminationHandler();

}  // namespace psrv

#endif  // PSRV_COMMON_SHUTDOWN_H_

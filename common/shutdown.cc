#include "common/shutdown.h"

#include <signal.h>

#include <thread>

namespace psrv {

absl::Notification* InstallTerminationHandler() {
  static absl::Notification* notification = new absl::Notification();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int signal = 0;
    sigwait(&set, &signal);
    notification->Notify();
  }).detach();
  return notification;
}

}  // namespace psrv

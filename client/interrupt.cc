// Signal handlers that only set a flag (async-signal-safe).
#include "client/interrupt.h"

#include <signal.h>

#include <csignal>

namespace psrv {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;

void OnSignal(int signal) {
  g_interrupted = 1;
  // The next one takes the default action: a user pressing Ctrl-C twice means "now".
  std::signal(signal, SIG_DFL);
}

}  // namespace

void InstallInterruptHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool Interrupted() { return g_interrupted != 0; }

}  // namespace psrv

#include "node/shutdown_signal.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "node/log.h"

namespace kv {
namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

struct SignalState {
  absl::Notification received;
  std::atomic<int> signal_number{0};
};

void WaitLoop(SignalState* state) {
  const sigset_t set = ShutdownSignals();
  bool first = true;
  int signal_number = 0;
  while (sigwait(&set, &signal_number) == 0) {
    if (first) {
      first = false;
      state->signal_number.store(signal_number);
      state->received.Notify();
      continue;
    }
    LogWarn("second shutdown signal: exiting without waiting for shutdown to finish",
            {{"signal", strsignal(signal_number)}});
    _exit(1);
  }
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

namespace {

SignalState* Watched() {
  // Leaked on purpose: the waiting thread is detached and may outlive main's locals.
  static SignalState* const state = [] {
    auto* s = new SignalState();
    std::thread(WaitLoop, s).detach();
    return s;
  }();
  return state;
}

}  // namespace

const absl::Notification& WatchShutdownSignals() { return Watched()->received; }

int WaitForShutdownSignal() {
  SignalState* state = Watched();
  state->received.WaitForNotification();
  return state->signal_number.load();
}

}  // namespace kv

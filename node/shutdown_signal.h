// Shutdown signals (SIGTERM, SIGINT) for the kvnode process, handled by a dedicated thread with
// sigwait(2) rather than by an asynchronous signal handler.
//
// BlockShutdownSignals() must run first in main, before any thread exists, so that every thread
// inherits the blocked mask and only the waiting thread ever receives the signals.
// WatchShutdownSignals() starts that thread (early: a node that is still starting, say waiting
// for its seeds, must hear the signal too), and WaitForShutdownSignal() blocks the caller until
// the first signal arrives; a second signal during a slow shutdown exits the process at once
// (status 1).
#ifndef KV_NODE_SHUTDOWN_SIGNAL_H_
#define KV_NODE_SHUTDOWN_SIGNAL_H_

#include "absl/synchronization/notification.h"

namespace kv {

void BlockShutdownSignals();
// Starts the waiting thread (the first call only) and returns what it notifies on the first
// signal.
const absl::Notification& WatchShutdownSignals();
// Returns the first signal's number (starting the waiting thread if need be).
int WaitForShutdownSignal();

}  // namespace kv

#endif  // KV_NODE_SHUTDOWN_SIGNAL_H_

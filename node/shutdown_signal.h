// Shutdown signals (SIGTERM, SIGINT) for the kvnode process, handled by a dedicated thread with
// sigwait(2) rather than by an asynchronous signal handler.
//
// BlockShutdownSignals() must run first in main, before any thread exists, so that every thread
// inherits the blocked mask and only the waiting thread ever receives the signals.
// WaitForShutdownSignal() starts that thread and blocks the caller until the first signal
// arrives; a second signal during a slow shutdown exits the process at once (status 1).
#ifndef KV_NODE_SHUTDOWN_SIGNAL_H_
#define KV_NODE_SHUTDOWN_SIGNAL_H_

namespace kv {

void BlockShutdownSignals();
// Returns the signal number. Call at most once.
int WaitForShutdownSignal();

}  // namespace kv

#endif  // KV_NODE_SHUTDOWN_SIGNAL_H_

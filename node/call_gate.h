// CallGate: admission and in-flight accounting for the node's gRPC calls, for graceful shutdown.
//
// Every call is answered through a reactor made by NewReactor(), which counts the call from the
// moment the handler starts until gRPC reports it done (its status handed to the transport).
// Close() starts a shutdown: from then on Check() is UNAVAILABLE, which handlers return for new
// calls (retryable, so clients go to another node). WaitUntilIdle() then waits for the calls
// already running to finish, after which the server can be stopped without cutting any off;
// it waits on the monotonic clock (storage/steady_timer.h), so a step of the wall clock during a
// shutdown neither stretches nor cuts the grace.
//
// Thread-safe.
#ifndef KV_NODE_CALL_GATE_H_
#define KV_NODE_CALL_GATE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/steady_timer.h"

namespace kv {

class CallGate {
 public:
  CallGate() = default;
  CallGate(const CallGate&) = delete;
  CallGate& operator=(const CallGate&) = delete;

  // Refuses calls from now on.
  void Close() { open_.store(false, std::memory_order_release); }
  // OK while open; UNAVAILABLE ("kvnode is shutting down; retry on another node") once closed.
  absl::Status Check() const;

  // A reactor for one call, counted until the call is done. Owned by gRPC (deletes itself).
  grpc::ServerUnaryReactor* NewReactor();

  // After Close: waits until no counted call is in flight, or for `timeout`; returns how many
  // remain. (Calls ending while the gate is open wake no waiter.)
  int WaitUntilIdle(absl::Duration timeout);
  int in_flight();

 private:
  class CountedReactor;
  void CallDone();

  std::atomic<bool> open_{true};
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  SteadyCondition idle_;  // notified when the last call ends after Close
};

}  // namespace kv

#endif  // KV_NODE_CALL_GATE_H_

// Helpers shared by the node's gRPC services (callback API).
//
// absl::StatusCode and grpc::StatusCode have the same numbering (both are the canonical gRPC
// codes), so statuses map 1:1 with their messages, cut to kMaxStatusMessageBytes: a message
// travels in a trailer, and one that quotes a long request field (a write id, an operation id)
// must not pass gRPC's metadata limit (8 KiB; percent-encoding may triple a byte), which would
// turn the answer into a transport error the client retries.
//
// Every reactor comes from a CallGate, which counts calls in flight for graceful shutdown.
//
// FinishOnExecutor is how handlers that read storage answer: it returns the call's reactor at
// once and runs `work` on the executor, finishing the reactor from there, so the gRPC thread
// never blocks on a read. (Writes are the exception: without --commit_on_executor the Put,
// PutBatch and MergeBatch handlers may commit their group, and others queued meanwhile, on the
// gRPC thread: node/local_store.h.) A call the client has cancelled (or whose deadline passed)
// while it waited in the queue is finished with CANCELLED without running `work`.
#ifndef KV_NODE_GRPC_UTIL_H_
#define KV_NODE_GRPC_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "node/call_gate.h"
#include "node/executor.h"
#include "storage/steady_timer.h"

namespace kv {

inline constexpr size_t kMaxStatusMessageBytes = 2048;

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    const size_t cut = message.size() - kMaxStatusMessageBytes;
    message.resize(kMaxStatusMessageBytes);
    message += " ... (" + std::to_string(cut) + " more bytes)";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(message));
}

inline absl::Status ToAbslStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// The deadline the caller set on `context`, on SteadyNow's scale (storage/steady_timer.h), which
// is SteadyClock's, the clock the coordinator measures on; InfiniteFuture if none. The time left
// is read on the system clock, as gRPC reads it (TimeUntil), not on abseil's.
inline absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  return SteadyNow() + TimeUntil(context.deadline());
}

// Finishes the call at once with `status` (for checks that need no storage).
inline grpc::ServerUnaryReactor* FinishNow(CallGate* gate, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = gate->NewReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// `work` is a callable returning absl::Status; it fills the response before returning OK.
template <typename Work>
grpc::ServerUnaryReactor* FinishOnExecutor(grpc::CallbackServerContext* context, CallGate* gate,
                                           Executor* executor, Work work) {
  grpc::ServerUnaryReactor* reactor = gate->NewReactor();
  executor->Schedule([context, reactor, work = std::move(work)]() mutable {
    if (context->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                                   "request cancelled before the node started it"));
      return;
    }
    reactor->Finish(ToGrpcStatus(work()));
  });
  return reactor;
}

// Like FinishOnExecutor, for work that answers later: `work` receives a callback
// `finish(absl::Status)` that it must call exactly once, from any thread, after filling the
// response (and any trailing metadata) for an OK status.
template <typename Work>
grpc::ServerUnaryReactor* StartOnExecutor(grpc::CallbackServerContext* context, CallGate* gate,
                                          Executor* executor, Work work) {
  grpc::ServerUnaryReactor* reactor = gate->NewReactor();
  executor->Schedule([context, reactor, work = std::move(work)]() mutable {
    if (context->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                                   "request cancelled before the node started it"));
      return;
    }
    work([reactor](const absl::Status& status) { reactor->Finish(ToGrpcStatus(status)); });
  });
  return reactor;
}

}  // namespace kv

#endif  // KV_NODE_GRPC_UTIL_H_

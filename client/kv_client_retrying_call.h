// Internal to kv_client: the state machine of one logical call. It runs attempts one at a time,
// each with a fresh grpc::ClientContext whose deadline is the call's remaining time (capped by
// the attempt timeout), and after a failure decides:
//
//   - CANCELLED counts as UNAVAILABLE: the client never cancels its attempts, so the node
//     dropped the call before starting it (gRPC does so while a server shuts down);
//   - non-retryable code (IsRetryableCode)         -> finish with it;
//   - DEADLINE_EXCEEDED once the call deadline passed -> finish with it;
//   - retry budget refuses, attempts exhausted, or less than 20 ms left for a retry's attempt
//                                                    -> finish with the last status;
//   - otherwise wait the full-jitter backoff (drawn from what the call's deadline leaves the
//     retry beyond those 20 ms, so that a retry that fits is never skipped) on the timer thread
//     (never on a gRPC thread) and try
//     again, on the endpoint the call's EndpointPolicy picks: the next one after UNAVAILABLE or
//     DEADLINE_EXCEEDED (failover), the same one otherwise;
//   - under EndpointPolicy::kOperation, a NOT_FOUND marked as another node's operation is asked
//     again at once of an endpoint not yet known to be another node (see there).
//
// Every retryable failure is charged to the shared RetryBudget and every success credited (a
// PutBatch or GetBatch call that failed as a whole is charged once, not once per item:
// kSharedFailureDetails).
// Only one attempt of a call is in flight at a time, so the state needs no lock: each step
// happens-after the previous one through gRPC's or the timer's synchronisation.
#ifndef KV_CLIENT_KV_CLIENT_RETRYING_CALL_H_
#define KV_CLIENT_KV_CLIENT_RETRYING_CALL_H_

#include <cstddef>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/retry_policy.h"
#include "storage/steady_timer.h"

namespace grpc {
class ClientContext;
class Status;
}  // namespace grpc

namespace kv::client_internal {

// What the calls of one Client share. Everything pointed to outlives the calls.
struct RetryEnv {
  const RetryOptions* options = nullptr;
  RetryBudget* budget = nullptr;
  TimerThread* timer = nullptr;
  absl::Duration attempt_timeout = absl::ZeroDuration();  // zero = no cap
  // The full-jitter wait before retry number `retry` (1-based), at most `limit`.
  std::function<absl::Duration(int retry, absl::Duration limit)> backoff;
  // The endpoint to fail over to after endpoint `from` (usually from + 1, skipping endpoints
  // known to be down).
  std::function<size_t(size_t from)> failover;
  // "host:port" of an endpoint, for error messages.
  std::function<std::string(size_t endpoint)> endpoint_name;
  size_t endpoint_count = 0;  // endpoints are 0 .. endpoint_count - 1
};

// Trailing metadata key by which a node marks an UNAVAILABLE write answer as a W shortfall: it
// stored the write (and keeps replicating it) but fewer than W replicas confirmed it in time.
inline constexpr char kWriteStoredMetadataKey[] = "kv-write-stored";

// Trailing metadata key by which a node marks a NOT_FOUND answer about an operation as one of
// another node's: EndpointPolicy::kOperation asks another endpoint.
inline constexpr char kOperationElsewhereMetadataKey[] = "kv-operation-elsewhere";

// Error details by which the coalescer marks the status of a PutBatch or GetBatch call that failed
// as a whole when it hands it to each item of the batch: the failure was charged to the
// RetryBudget once, for the call, so the items only ask whether they may retry.
inline constexpr char kSharedFailureDetails[] = "kv-batch-failed";

// Where the retries of a call go after UNAVAILABLE or DEADLINE_EXCEEDED. (After any other
// retryable code they stay on the same endpoint.)
enum class EndpointPolicy {
  kFailover,  // to RetryEnv::failover(endpoint)
  // Like kFailover, except after an UNAVAILABLE marked kWriteStoredMetadataKey, which stays: the
  // node that stored the write holds its idempotency token, so it deduplicates the retry.
  kWrite,
  kPinned,  // always the first endpoint
  // Like kFailover, except a DEADLINE_EXCEEDED stays: for the starts of operations, whose node
  // may have started the job before its answer was lost, and answers a retry with the same token
  // from memory. An UNAVAILABLE (the node is down or going away) still fails over.
  kStart,
  // For a call about an operation, which only the node that runs it knows (its id names that
  // node): like kFailover (a hung endpoint costs one attempt; the operation's node answers a
  // repeated read or cancel the same), and a NOT_FOUND that a node marks as another node's
  // operation (kOperationElsewhereMetadataKey) moves on at once to an endpoint not yet known to be
  // another node, without a backoff, a charge to the budget or counting toward
  // RetryOptions::max_attempts. Failovers skip the endpoints known to be
  // other nodes. Once every endpoint has answered so, the call ends with that NOT_FOUND (which
  // names the operation's node); while one has not, the call keeps trying it as usual, so an
  // operation whose node is down ends UNAVAILABLE rather than NOT_FOUND from another node.
  kOperation,
};

// Starts one attempt on `endpoint` with `context` (deadline already set). Must call `on_done`
// exactly once, with the attempt's status, after which `context` may be destroyed.
using AttemptStarter = std::function<void(size_t endpoint, grpc::ClientContext* context,
                                          std::function<void(grpc::Status)> on_done)>;

// Called exactly once with the call's outcome and how many attempts were made.
using CallDone = std::function<void(absl::Status status, int attempts)>;

// Runs a call whose first attempt goes to `first_endpoint` and that must end by `deadline`, on
// SteadyNow's clock (storage/steady_timer.h): a step of the wall clock moves no deadline.
void StartRetryingCall(const RetryEnv& env, absl::Time deadline, size_t first_endpoint,
                       EndpointPolicy policy, AttemptStarter start_attempt, CallDone done);

// Whether `status` says that a message of its call was larger than a size limit: RESOURCE_EXHAUSTED
// with gRPC's "Received message larger than max" (a channel's or the node's maximum receive
// message size) or "Sent message larger than max" (a channel's maximum send message size).
// Unlike an overloaded node's RESOURCE_EXHAUSTED, every attempt of the same call would meet it
// again, so the call is not retried.
bool IsMessageOverSizeLimit(const grpc::Status& status);

// Maps a gRPC status to the absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace kv::client_internal

#endif  // KV_CLIENT_KV_CLIENT_RETRYING_CALL_H_

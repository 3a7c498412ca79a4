#include "client/kv_client_retrying_call.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "storage/message_size_limit.h"
#include "storage/steady_timer.h"

namespace kv::client_internal {
namespace {

// Less time than this left on the call deadline counts as none: an attempt that short could
// only fail with DEADLINE_EXCEEDED.
constexpr absl::Duration kMinAttemptTime = absl::Milliseconds(1);
// A retry is made only if it leaves its attempt at least this long: a shorter one would most
// likely end DEADLINE_EXCEEDED, an unknown outcome, where the failure it retries was a clear one
// (a write not acknowledged), and it would spend a token of the retry budget.
constexpr absl::Duration kMinRetryAttemptTime = absl::Milliseconds(20);
// How early gRPC's deadline timer may fire compared with SteadyNow().
constexpr absl::Duration kTimerSlack = absl::Milliseconds(20);

class RetryingCall : public std::enable_shared_from_this<RetryingCall> {
 public:
  RetryingCall(const RetryEnv& env, absl::Time deadline, size_t endpoint, EndpointPolicy policy,
               AttemptStarter start_attempt, CallDone done)
      : env_(env),
        deadline_(deadline),
        policy_(policy),
        endpoint_(endpoint),
        start_attempt_(std::move(start_attempt)),
        done_(std::move(done)) {}

  void StartAttempt() {
    ++attempts_;
    context_ = std::make_unique<grpc::ClientContext>();
    attempt_deadline_ = deadline_;
    if (env_.attempt_timeout > absl::ZeroDuration()) {
      attempt_deadline_ = std::min(deadline_, SteadyNow() + env_.attempt_timeout);
    }
    // gRPC takes a wall-clock deadline and turns it into its own monotonic one at once.
    context_->set_deadline(WallDeadlineAfter(attempt_deadline_ - SteadyNow()));
    start_attempt_(endpoint_, context_.get(), [self = shared_from_this()](grpc::Status status) {
      self->OnAttemptDone(status);
    });
  }

 private:
  void OnAttemptDone(const grpc::Status& grpc_status) {
    // Read from the trailers, which go with the context.
    const bool write_stored = grpc_status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                              policy_ == EndpointPolicy::kWrite &&
                              MarkedWriteStored(grpc_status, *context_);
    if (write_stored) stored_at_ = endpoint_;
    const bool elsewhere = grpc_status.error_code() == grpc::StatusCode::NOT_FOUND &&
                           policy_ == EndpointPolicy::kOperation &&
                           HasTrailer(*context_, kOperationElsewhereMetadataKey);
    // The context holds a reference to the gRPC channel. Dropping it here, before the call can
    // be reported done, makes sure the Client (not this gRPC thread) releases the channel last:
    // gRPC 1.51 crashes when a channel dies on one of its own callback threads
    // (grpc/grpc#32584).
    context_.reset();
    absl::Status status = FromGrpcStatus(grpc_status);
    if (status.code() == absl::StatusCode::kCancelled) status = DroppedUnstarted(status);
    if (status.ok()) {
      env_.budget->RecordSuccess();
      Finish(status);
      return;
    }
    if (elsewhere) {
      AskAnotherNode(std::move(status));
      return;
    }
    if (IsMessageOverSizeLimit(grpc_status)) {
      Finish(OverSizeLimit(status));
      return;
    }
    if (!IsRetryableCode(status.code())) {
      if (start_left_.has_value() && *start_left_ != endpoint_) {
        // The node that went away may have started the job before it did: only it knows.
        Finish(absl::Status(
            status.code(),
            absl::StrCat(status.message(), " [kv client: an earlier attempt on ",
                         env_.endpoint_name(*start_left_),
                         " ended UNAVAILABLE and may have started this request before that node "
                         "went away; its `kvctl operation list` shows it]")));
        return;
      }
      Finish(status);  // the server's verdict, unchanged
      return;
    }
    const bool budget_allows = grpc_status.error_details() == kSharedFailureDetails
                                   ? env_.budget->CanRetry()
                                   : env_.budget->RecordFailureAndTryRetry();
    const absl::Time now = SteadyNow();
    // An attempt that had all the remaining time and timed out used up the call, even if gRPC's
    // timer fired a moment before our clock reaches the deadline. (A DEADLINE_EXCEEDED sent by
    // the server well before the deadline is retried like any other.)
    const bool call_timed_out = status.code() == absl::StatusCode::kDeadlineExceeded &&
                                attempt_deadline_ >= deadline_ && deadline_ - now < kTimerSlack;
    if (call_timed_out || deadline_ - now < kMinAttemptTime) {
      Finish(Annotate(status, "call deadline reached"));
      return;
    }
    if (attempts_ - hops_ >= env_.options->max_attempts) {
      Finish(Annotate(status, "RetryOptions::max_attempts reached"));
      return;
    }
    if (!budget_allows) {
      Finish(Annotate(status, "retry budget exhausted: too many recent failures"));
      return;
    }
    const size_t failed_endpoint = endpoint_;
    const bool moves_on =
        status.code() == absl::StatusCode::kUnavailable ||
        (status.code() == absl::StatusCode::kDeadlineExceeded && policy_ != EndpointPolicy::kStart);
    if (moves_on && policy_ != EndpointPolicy::kPinned && !write_stored) {
      if (policy_ == EndpointPolicy::kStart && !start_left_.has_value()) start_left_ = endpoint_;
      endpoint_ = other_nodes_.empty() ? env_.failover(endpoint_) : NotAnotherNode(endpoint_);
    }
    const absl::Duration room = deadline_ - now - kMinRetryAttemptTime;
    const absl::Time retry_at = now + env_.backoff(attempts_ - hops_, room);
    if (room < absl::ZeroDuration() || deadline_ - retry_at < kMinRetryAttemptTime) {
      endpoint_ = failed_endpoint;  // for the message: the endpoint that failed
      Finish(Annotate(status, "call deadline reached"));
      return;
    }
    env_.timer->RunAfter(retry_at - now, [self = shared_from_this()]() { self->StartAttempt(); });
  }

  // The client never cancels an attempt, so an attempt that ends CANCELLED was dropped by the
  // node before any handler ran: gRPC does this to calls that reach a server while it shuts down.
  // Nothing was applied and the node is probably going away, which is what UNAVAILABLE means; the
  // call is retried like any UNAVAILABLE (on another endpoint unless it is pinned to one).
  static absl::Status DroppedUnstarted(const absl::Status& status) {
    return absl::UnavailableError(
        absl::StrCat("the node dropped the call before starting it (CANCELLED: ", status.message(),
                     "); it is probably shutting down"));
  }

  // In the trailers of a single call, or in the details of an item of a batch
  // (client/kv_client_coalescer.h).
  static bool MarkedWriteStored(const grpc::Status& status, const grpc::ClientContext& context) {
    return status.error_details() == kWriteStoredMetadataKey ||
           HasTrailer(context, kWriteStoredMetadataKey);
  }

  static bool HasTrailer(const grpc::ClientContext& context, const char* key) {
    const auto& trailers = context.GetServerTrailingMetadata();
    return trailers.find(grpc::string_ref(key)) != trailers.end();
  }

  // `status`: a NOT_FOUND by which endpoint_ said the operation is another node's.
  void AskAnotherNode(absl::Status status) {
    other_nodes_.insert(endpoint_);
    if (other_nodes_.size() >= env_.endpoint_count) {
      Finish(status);  // no endpoint is the operation's node; the message names it
      return;
    }
    if (deadline_ - SteadyNow() < kMinRetryAttemptTime) {
      // Another endpoint may be the operation's node, and it was not asked (or did not answer).
      Finish(Annotate(absl::UnavailableError(absl::StrCat(
                          "the node of the operation was not reached (", status.message(), ")")),
                      "call deadline reached"));
      return;
    }
    endpoint_ = NotAnotherNode(endpoint_);
    ++hops_;  // not a retry: it counts toward neither max_attempts nor the budget
    env_.timer->RunAfter(absl::ZeroDuration(),
                         [self = shared_from_this()]() { self->StartAttempt(); });
  }

  // The first endpoint after `from` (cyclically) not known to be another node than the
  // operation's, whether or not it is known to be down: it may be the operation's node.
  size_t NotAnotherNode(size_t from) const {
    for (size_t i = 1; i <= env_.endpoint_count; ++i) {
      const size_t endpoint = (from + i) % env_.endpoint_count;
      if (other_nodes_.count(endpoint) == 0) return endpoint;
    }
    return from;
  }

  // A message of the call was larger than a size limit: the same call would meet the same limit
  // on every attempt and every node (a record's answer is the same on each replica).
  absl::Status OverSizeLimit(const absl::Status& status) const {
    std::string stored;
    if (policy_ == EndpointPolicy::kWrite) {
      stored =
          "; if it was the answer, the node may have stored the write (a retry with the same "
          "idempotency token does not apply it twice)";
    }
    return absl::Status(
        status.code(),
        absl::StrCat(
            status.message(), " [kv client: not retried after attempt ", attempts_, " to ",
            env_.endpoint_name(endpoint_),
            ": a message of this call is larger than a size limit (the maximum receive or "
            "send message size of the client's channel, ClientOptions::channel_factory, or "
            "the node's receive limit), and every attempt would meet the same limit",
            stored, "]"));
  }

  // Keeps the server's code and message and says why the client gave up.
  absl::Status Annotate(const absl::Status& status, absl::string_view why) const {
    std::string stored;
    if (stored_at_.has_value()) {
      stored = absl::StrCat("; the write is stored on ", env_.endpoint_name(*stored_at_),
                            ", which keeps replicating it");
    }
    return absl::Status(status.code(),
                        absl::StrCat(status.message(), " [kv client: gave up after ", attempts_,
                                     attempts_ == 1 ? " attempt" : " attempts", ", last to ",
                                     env_.endpoint_name(endpoint_), "; ", why, stored, "]"));
  }

  void Finish(absl::Status status) {
    CallDone done = std::move(done_);
    done(std::move(status), attempts_);
  }

  const RetryEnv& env_;
  const absl::Time deadline_;
  const EndpointPolicy policy_;
  size_t endpoint_;
  AttemptStarter start_attempt_;
  CallDone done_;
  int attempts_ = 0;
  // The endpoint that last answered with a marked W shortfall: it holds the write.
  std::optional<size_t> stored_at_;
  // Under kStart: the first endpoint the start left after UNAVAILABLE (it may have started it).
  std::optional<size_t> start_left_;
  // Under kOperation: the endpoints that said the operation is another node's.
  std::set<size_t> other_nodes_;
  int hops_ = 0;                 // attempts that went to another endpoint after such an answer
  absl::Time attempt_deadline_;  // of the current or last attempt
  std::unique_ptr<grpc::ClientContext> context_;  // of the attempt in flight, if any
};

}  // namespace

void StartRetryingCall(const RetryEnv& env, absl::Time deadline, size_t first_endpoint,
                       EndpointPolicy policy, AttemptStarter start_attempt, CallDone done) {
  std::make_shared<RetryingCall>(env, deadline, first_endpoint, policy, std::move(start_attempt),
                                 std::move(done))
      ->StartAttempt();
}

bool IsMessageOverSizeLimit(const grpc::Status& status) {
  // gRPC core's message-size filter: on the side that received the message (the node sends its
  // verdict back as the call's status), or on the client's channel before sending.
  return status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
         IsMessageSizeLimitMessage(status.error_message());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  // gRPC and absl share the codes 0..16; anything else is not a code either library defines.
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(
        absl::StrCat("gRPC status code ", code, ": ", status.error_message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), status.error_message());
}

}  // namespace kv::client_internal

// Retry decisions for the client library: which codes are retried, how long to wait, and a
// retry budget that stops a failing cluster from being buried by retries.
//
// Only codes that can succeed later are retried: UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED,
// DEADLINE_EXCEEDED (of one attempt, while the call's overall deadline has time left). Never
// INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS, PERMISSION_DENIED,
// UNAUTHENTICATED or any other code. (A call's attempt that ends CANCELLED is turned into
// UNAVAILABLE before this decision: see client/kv_client_retrying_call.h.)
//
// Backoff is capped exponential with full jitter: before retry k (k = 1, 2, ...) the client
// waits a uniformly random time in [0, min(max_backoff, initial_backoff * multiplier^(k-1))].
//
// The budget is a token bucket shared by all calls of one Client: it starts full at
// `budget_max_tokens`; each retryable failure takes one token, each success gives back
// `budget_success_credit`; retries are allowed only while more than half the tokens remain.
// Thread-safe.
#ifndef KV_CLIENT_RETRY_POLICY_H_
#define KV_CLIENT_RETRY_POLICY_H_

#include "absl/base/thread_annotations.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kv {

struct RetryOptions {
  int max_attempts = 6;  // first try included
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Seconds(1);
  double multiplier = 2.0;
  double budget_max_tokens = 20;
  double budget_success_credit = 0.2;
};

bool IsRetryableCode(absl::StatusCode code);

// Upper bound of the wait before retry number `retry` (1-based), before jitter.
absl::Duration BackoffCeiling(const RetryOptions& options, int retry);
// A full-jitter wait for retry number `retry`: uniform in [0, min(BackoffCeiling, limit)] (the
// limit: the time a call has left for it, so that a retry never lands past the call's deadline
// while one would fit; zero or less: no wait).
absl::Duration JitteredBackoff(const RetryOptions& options, int retry, absl::BitGenRef rng,
                               absl::Duration limit = absl::InfiniteDuration());

class RetryBudget {
 public:
  explicit RetryBudget(const RetryOptions& options);
  void RecordSuccess();
  // Records a retryable failure; returns true if a retry is allowed.
  bool RecordFailureAndTryRetry();
  // Whether a retry is allowed, recording nothing: for the calls that shared one failure already
  // recorded (the items of a PutBatch or GetBatch call that failed as a whole).
  bool CanRetry() const;
  double tokens() const;

 private:
  const double max_tokens_;
  const double success_credit_;
  mutable absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv

#endif  // KV_CLIENT_RETRY_POLICY_H_

#include "client/retry_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/random/distributions.h"

namespace kv {

bool IsRetryableCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
      return true;
    default:
      return false;
  }
}

absl::Duration BackoffCeiling(const RetryOptions& options, int retry) {
  if (retry < 1) retry = 1;
  // pow() can overflow to +inf for large `retry`; Duration * inf saturates to InfiniteDuration,
  // and the cap below brings it back to max_backoff.
  const double factor = std::pow(options.multiplier, retry - 1);
  const absl::Duration uncapped =
      std::isfinite(factor) ? options.initial_backoff * factor : absl::InfiniteDuration();
  return std::max(absl::ZeroDuration(), std::min(uncapped, options.max_backoff));
}

absl::Duration JitteredBackoff(const RetryOptions& options, int retry, absl::BitGenRef rng,
                               absl::Duration limit) {
  const int64_t ceiling_ns =
      absl::ToInt64Nanoseconds(std::min(BackoffCeiling(options, retry), limit));
  if (ceiling_ns <= 0) return absl::ZeroDuration();
  return absl::Nanoseconds(
      absl::Uniform<int64_t>(absl::IntervalClosedClosed, rng, int64_t{0}, ceiling_ns));
}

RetryBudget::RetryBudget(const RetryOptions& options)
    : max_tokens_(options.budget_max_tokens),
      success_credit_(options.budget_success_credit),
      tokens_(options.budget_max_tokens) {}

void RetryBudget::RecordSuccess() {
  absl::MutexLock lock(&mu_);
  tokens_ = std::min(max_tokens_, tokens_ + success_credit_);
}

bool RetryBudget::RecordFailureAndTryRetry() {
  absl::MutexLock lock(&mu_);
  tokens_ = std::max(0.0, tokens_ - 1.0);
  return tokens_ > max_tokens_ / 2;
}

bool RetryBudget::CanRetry() const {
  absl::MutexLock lock(&mu_);
  return tokens_ > max_tokens_ / 2;
}

double RetryBudget::tokens() const {
  absl::MutexLock lock(&mu_);
  return tokens_;
}

}  // namespace kv

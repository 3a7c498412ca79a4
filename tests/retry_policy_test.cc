#include "client/retry_policy.h"

#include <algorithm>
#include <random>

#include "absl/random/random.h"
#include "gtest/gtest.h"

namespace kv {
namespace {

TEST(IsRetryableCodeTest, OnlyCodesThatCanSucceedLaterAreRetried) {
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kOk));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kCancelled));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kUnknown));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kDeadlineExceeded));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kNotFound));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kAlreadyExists));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kPermissionDenied));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kAborted));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kOutOfRange));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kUnimplemented));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kInternal));
  EXPECT_TRUE(IsRetryableCode(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kDataLoss));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kUnauthenticated));
}

TEST(BackoffCeilingTest, GrowsExponentiallyThenIsCapped) {
  RetryOptions options;
  options.initial_backoff = absl::Milliseconds(20);
  options.multiplier = 2.0;
  options.max_backoff = absl::Milliseconds(500);
  EXPECT_EQ(BackoffCeiling(options, 1), absl::Milliseconds(20));
  EXPECT_EQ(BackoffCeiling(options, 2), absl::Milliseconds(40));
  EXPECT_EQ(BackoffCeiling(options, 3), absl::Milliseconds(80));
  EXPECT_EQ(BackoffCeiling(options, 4), absl::Milliseconds(160));
  EXPECT_EQ(BackoffCeiling(options, 5), absl::Milliseconds(320));
  EXPECT_EQ(BackoffCeiling(options, 6), absl::Milliseconds(500));
  EXPECT_EQ(BackoffCeiling(options, 7), absl::Milliseconds(500));
  // Far beyond the cap, where the exponential overflows a double.
  EXPECT_EQ(BackoffCeiling(options, 100000), absl::Milliseconds(500));
}

TEST(BackoffCeilingTest, HonoursTheMultiplier) {
  RetryOptions options;
  options.initial_backoff = absl::Milliseconds(10);
  options.multiplier = 3.0;
  options.max_backoff = absl::Seconds(10);
  EXPECT_EQ(BackoffCeiling(options, 1), absl::Milliseconds(10));
  EXPECT_EQ(BackoffCeiling(options, 3), absl::Milliseconds(90));
}

TEST(JitteredBackoffTest, StaysWithinTheCeilingAndSpreadsOverIt) {
  RetryOptions options;
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  std::mt19937 rng(12345);  // seeded: the test is deterministic
  for (int retry = 1; retry <= 8; ++retry) {
    const absl::Duration ceiling = BackoffCeiling(options, retry);
    int lower_half = 0;
    int upper_half = 0;
    absl::Duration smallest = absl::InfiniteDuration();
    absl::Duration largest = absl::ZeroDuration();
    for (int i = 0; i < 2000; ++i) {
      const absl::Duration wait = JitteredBackoff(options, retry, rng);
      ASSERT_GE(wait, absl::ZeroDuration());
      ASSERT_LE(wait, ceiling);
      (wait < ceiling / 2 ? lower_half : upper_half)++;
      smallest = std::min(smallest, wait);
      largest = std::max(largest, wait);
    }
    // Full jitter: uniform over [0, ceiling], so about half the samples in each half, and the
    // extremes close to both ends (not clustered near the ceiling as "equal jitter" would be).
    EXPECT_GT(lower_half, 800) << "retry " << retry;
    EXPECT_GT(upper_half, 800) << "retry " << retry;
    EXPECT_LT(smallest, ceiling / 20) << "retry " << retry;
    EXPECT_GT(largest, ceiling * 19 / 20) << "retry " << retry;
  }
}

TEST(JitteredBackoffTest, StaysWithinTheLimitAndSpreadsOverIt) {
  RetryOptions options;
  options.initial_backoff = absl::Seconds(10);
  options.max_backoff = absl::Seconds(10);
  std::mt19937 rng(12345);
  const absl::Duration limit = absl::Milliseconds(300);
  int lower_half = 0;
  for (int i = 0; i < 2000; ++i) {
    const absl::Duration wait = JitteredBackoff(options, 1, rng, limit);
    ASSERT_GE(wait, absl::ZeroDuration());
    ASSERT_LE(wait, limit);
    if (wait < limit / 2) ++lower_half;
  }
  EXPECT_GT(lower_half, 800);
  EXPECT_LT(lower_half, 1200);
  EXPECT_EQ(JitteredBackoff(options, 1, rng, absl::ZeroDuration()), absl::ZeroDuration());
  EXPECT_EQ(JitteredBackoff(options, 1, rng, -absl::Seconds(1)), absl::ZeroDuration());
}

TEST(JitteredBackoffTest, ZeroCeilingMeansNoWait) {
  RetryOptions options;
  options.initial_backoff = absl::ZeroDuration();
  absl::BitGen rng;
  EXPECT_EQ(JitteredBackoff(options, 3, rng), absl::ZeroDuration());
}

TEST(RetryBudgetTest, StartsFullAndRefusesRetriesOnceHalfEmpty) {
  RetryOptions options;
  options.budget_max_tokens = 10;
  RetryBudget budget(options);
  EXPECT_EQ(budget.tokens(), 10);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(budget.RecordFailureAndTryRetry()) << i;  // 9..6
  EXPECT_FALSE(budget.RecordFailureAndTryRetry());  // 5: not more than half
  EXPECT_EQ(budget.tokens(), 5);
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(budget.RecordFailureAndTryRetry());
  EXPECT_EQ(budget.tokens(), 0);  // never below empty
}

TEST(RetryBudgetTest, SuccessesRefillUpToTheMaximum) {
  RetryOptions options;
  options.budget_max_tokens = 10;
  options.budget_success_credit = 0.5;
  RetryBudget budget(options);
  for (int i = 0; i < 10; ++i) budget.RecordFailureAndTryRetry();
  EXPECT_FALSE(budget.RecordFailureAndTryRetry());
  // From 0, 14 successes bring it to 7; one failure then leaves 6, more than half.
  for (int i = 0; i < 14; ++i) budget.RecordSuccess();
  EXPECT_DOUBLE_EQ(budget.tokens(), 7);
  EXPECT_TRUE(budget.RecordFailureAndTryRetry());
  for (int i = 0; i < 100; ++i) budget.RecordSuccess();
  EXPECT_DOUBLE_EQ(budget.tokens(), 10);
}

}  // namespace
}  // namespace kv

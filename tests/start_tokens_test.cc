// StartTokens (node/start_tokens.h): a token's first successful start is remembered with its
// answer; the same token and request again get that answer without a second start, another
// request under the token is INVALID_ARGUMENT, refused starts leave the token free, and tokens are
// kept for a bounded time and count (on a manual clock). With a journal (node/operation_journal.h
// on a MemoryEngine standing for the data directory), tokens outlive a restart.
#include "node/start_tokens.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "node/clock.h"
#include "node/operation_journal.h"
#include "storage/memory_engine.h"

namespace kv {
namespace {

class StartTokensTest : public ::testing::Test {
 protected:
  // A start that counts its calls and answers "op-<count>".
  absl::StatusOr<StartTokens::Answer> Start(StartTokens& tokens, const std::string& token,
                                            const std::string& fingerprint) {
    return tokens.Run(token, fingerprint, [this]() -> absl::StatusOr<std::string> {
      ++starts_;
      return absl::StrCat("op-", starts_);
    });
  }

  // Starts token "t1" ("join n4") on a thread, answering "op-slow" once `release` is notified;
  // returns once the start is under way.
  static std::thread StartSlowly(StartTokens& tokens, absl::Notification* release) {
    auto started = std::make_shared<absl::Notification>();
    std::thread slow([&tokens, release, started] {
      absl::StatusOr<StartTokens::Answer> answer =
          tokens.Run("t1", "join n4", [&]() -> absl::StatusOr<std::string> {
            started->Notify();
            release->WaitForNotification();
            return std::string("op-slow");
          });
      EXPECT_TRUE(answer.ok()) << answer.status();
    });
    started->WaitForNotification();
    return slow;
  }

  ManualClock clock_;
  int starts_ = 0;
};

TEST_F(StartTokensTest, RetryWithTheSameTokenAndRequestGetsTheFirstAnswer) {
  StartTokens tokens(&clock_);
  absl::StatusOr<StartTokens::Answer> first = Start(tokens, "t1", "repair all");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->response, "op-1");
  EXPECT_FALSE(first->deduplicated);

  clock_.Advance(absl::Minutes(59));
  absl::StatusOr<StartTokens::Answer> retry = Start(tokens, "t1", "repair all");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->response, "op-1");
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_EQ(starts_, 1);

  // Another token is another request.
  absl::StatusOr<StartTokens::Answer> other = Start(tokens, "t2", "repair all");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->response, "op-2");
  EXPECT_FALSE(other->deduplicated);
  EXPECT_EQ(tokens.size(), 2u);
}

TEST_F(StartTokensTest, ConcurrentCallsWithOneTokenStartOnce) {
  StartTokens tokens(&clock_);
  std::atomic<int> starts{0};
  std::vector<absl::StatusOr<StartTokens::Answer>> answers(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < answers.size(); ++i) {
    threads.emplace_back([&, i] {
      answers[i] = tokens.Run("t1", "repair all", [&]() -> absl::StatusOr<std::string> {
        const int n = ++starts;
        absl::SleepFor(absl::Milliseconds(50));  // the others arrive while this one starts
        return absl::StrCat("op-", n);
      });
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(starts.load(), 1);
  int deduplicated = 0;
  for (const auto& answer : answers) {
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->response, "op-1");
    deduplicated += answer->deduplicated ? 1 : 0;
  }
  EXPECT_EQ(deduplicated, 3);
}

// A start may take seconds (a membership change waits for the other members): calls with other
// tokens do not wait for it; one with the same token and another request is refused at once.
TEST_F(StartTokensTest, ASlowStartHoldsUpNoOtherToken) {
  StartTokens tokens(&clock_);
  absl::Notification release;
  std::thread slow = StartSlowly(tokens, &release);
  absl::Notification other_done;
  std::thread other([&] {
    EXPECT_EQ(Start(tokens, "t2", "repair all").value().response, "op-1");
    EXPECT_EQ(tokens.Run("t1", "join n5", [] { return absl::StatusOr<std::string>("never"); })
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
    other_done.Notify();
  });
  const bool other_went_on = other_done.WaitForNotificationWithTimeout(absl::Seconds(30));
  release.Notify();
  slow.join();
  other.join();
  EXPECT_TRUE(other_went_on) << "a call with another token waited for a slow start";
  EXPECT_EQ(Start(tokens, "t1", "join n4").value().response, "op-slow");
}

// A retry of a slow start (a membership change waiting for the members) waits for the first
// call's answer only as long as its caller does: then ABORTED, which clients retry; once the
// first start succeeds, the retry gets its answer.
TEST_F(StartTokensTest, ARetryWaitsForTheFirstStartAtMostItsMaxWait) {
  StartTokens tokens(&clock_);
  absl::Notification release;
  std::thread slow = StartSlowly(tokens, &release);
  const absl::Time before = absl::Now();
  absl::StatusOr<StartTokens::Answer> retry = tokens.Run(
      "t1", "join n4", [] { return absl::StatusOr<std::string>("never"); },
      absl::Milliseconds(100));
  const absl::Duration waited = absl::Now() - before;
  release.Notify();
  slow.join();
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kAborted) << retry.status();
  EXPECT_NE(std::string(retry.status().message()).find("still starting"), std::string::npos);
  EXPECT_GE(waited, absl::Milliseconds(100));
  EXPECT_LT(waited, absl::Seconds(20));
  absl::StatusOr<StartTokens::Answer> later = tokens.Run(
      "t1", "join n4", [] { return absl::StatusOr<std::string>("never"); },
      absl::Milliseconds(100));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->response, "op-slow");
  EXPECT_TRUE(later->deduplicated);
}

// With the defaults, a day of frequent repair starts (one every 10 s) does not push out a
// membership change's token: its retry a day later still gets the first answer.
TEST_F(StartTokensTest, FrequentStartsDoNotPushOutAnotherTokenWithinItsRetention) {
  StartTokens tokens(&clock_);
  ASSERT_EQ(Start(tokens, "join", "join n4").value().response, "op-1");
  for (int i = 0; i < 8000; ++i) {
    clock_.Advance(absl::Seconds(10));
    ASSERT_TRUE(Start(tokens, absl::StrCat("repair-", i), "repair all").ok());
  }
  absl::StatusOr<StartTokens::Answer> retry = Start(tokens, "join", "join n4");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->response, "op-1");
  EXPECT_TRUE(retry->deduplicated);
}

TEST_F(StartTokensTest, EmptyTokenStartsEveryTime) {
  StartTokens tokens(&clock_);
  for (int i = 1; i <= 3; ++i) {
    absl::StatusOr<StartTokens::Answer> answer = Start(tokens, "", "repair all");
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->response, absl::StrCat("op-", i));
    EXPECT_FALSE(answer->deduplicated);
  }
  EXPECT_EQ(tokens.size(), 0u);
}

TEST_F(StartTokensTest, TokenReusedForAnotherRequestIsAClientErrorAndStartsNothing) {
  StartTokens tokens(&clock_);
  ASSERT_TRUE(Start(tokens, "t1", "repair all").ok());
  absl::StatusOr<StartTokens::Answer> reused = Start(tokens, "t1", "repair n3");
  EXPECT_EQ(reused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(reused.status().message(), "another request")) << reused.status();
  EXPECT_TRUE(absl::StrContains(reused.status().message(),
                                "idempotency token reused with different parameters"))
      << reused.status();
  EXPECT_EQ(starts_, 1);
  // The first request still gets its answer.
  absl::StatusOr<StartTokens::Answer> retry = Start(tokens, "t1", "repair all");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->response, "op-1");
}

TEST_F(StartTokensTest, RefusedStartLeavesTheTokenFree) {
  StartTokens tokens(&clock_);
  absl::StatusOr<StartTokens::Answer> refused =
      tokens.Run("t1", "join n4", []() -> absl::StatusOr<std::string> {
        return absl::FailedPreconditionError("another change is running");
      });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(tokens.size(), 0u);
  // Later the same request may start, and is remembered from then on.
  absl::StatusOr<StartTokens::Answer> started = Start(tokens, "t1", "join n4");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_FALSE(started->deduplicated);
  absl::StatusOr<StartTokens::Answer> retry = Start(tokens, "t1", "join n4");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_EQ(starts_, 1);
}

TEST_F(StartTokensTest, OversizedTokenIsRefusedNamingTheLimit) {
  StartTokens tokens(&clock_);
  const std::string longest(StartTokens::kMaxTokenBytes, 'x');
  EXPECT_TRUE(Start(tokens, longest, "repair all").ok());
  absl::StatusOr<StartTokens::Answer> too_long = Start(tokens, longest + "x", "repair all");
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(too_long.status().message(), "limit is 128")) << too_long.status();
  EXPECT_EQ(starts_, 1);
}

TEST_F(StartTokensTest, TokensAreForgottenAfterTheRetention) {
  StartTokens::Options options;
  options.retention = absl::Hours(1);
  StartTokens tokens(&clock_, options);
  EXPECT_EQ(StartTokens::Options().retention, absl::Hours(24));
  ASSERT_TRUE(Start(tokens, "t1", "repair all").ok());
  clock_.Advance(absl::Minutes(30));
  ASSERT_TRUE(Start(tokens, "t2", "repair all").ok());
  clock_.Advance(absl::Minutes(30));
  EXPECT_EQ(tokens.size(), 1u);  // t1 expired, t2 kept
  absl::StatusOr<StartTokens::Answer> again = Start(tokens, "t1", "repair n3");
  ASSERT_TRUE(again.ok()) << again.status();  // a new request under a forgotten token
  EXPECT_FALSE(again->deduplicated);
  absl::StatusOr<StartTokens::Answer> kept = Start(tokens, "t2", "repair all");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_TRUE(kept->deduplicated);
  EXPECT_EQ(kept->response, "op-2");
}

TEST_F(StartTokensTest, AtMostMaxTokensAreKeptOldestGoFirst) {
  StartTokens::Options options;
  options.max_tokens = 2;
  StartTokens tokens(&clock_, options);
  ASSERT_TRUE(Start(tokens, "t1", "a").ok());
  ASSERT_TRUE(Start(tokens, "t2", "b").ok());
  ASSERT_TRUE(Start(tokens, "t3", "c").ok());
  EXPECT_EQ(tokens.size(), 2u);
  absl::StatusOr<StartTokens::Answer> t3 = Start(tokens, "t3", "c");
  ASSERT_TRUE(t3.ok()) << t3.status();
  EXPECT_TRUE(t3->deduplicated);
  absl::StatusOr<StartTokens::Answer> t1 = Start(tokens, "t1", "a");
  ASSERT_TRUE(t1.ok()) << t1.status();
  EXPECT_FALSE(t1->deduplicated);  // evicted, so started again
  EXPECT_EQ(starts_, 4);
}

TEST_F(StartTokensTest, TokensOutliveARestartWithAJournal) {
  MemoryEngine disk;
  EngineOperationJournal journal(&disk);
  StartTokens::Options options;
  options.max_tokens = 2;
  options.retention = absl::Hours(1);
  auto run = [&] {
    auto tokens = std::make_unique<StartTokens>(&clock_, options);
    const absl::Status loaded = tokens->Load(&journal);
    EXPECT_TRUE(loaded.ok()) << loaded;
    return tokens;
  };
  std::unique_ptr<StartTokens> tokens = run();
  ASSERT_TRUE(Start(*tokens, "t1", "repair all").ok());
  clock_.Advance(absl::Minutes(10));
  ASSERT_TRUE(Start(*tokens, "t2", "join n4").ok());

  tokens = run();  // a restart
  EXPECT_EQ(tokens->size(), 2u);
  absl::StatusOr<StartTokens::Answer> retry = Start(*tokens, "t1", "repair all");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_EQ(retry->response, "op-1");
  EXPECT_EQ(starts_, 2);
  absl::StatusOr<StartTokens::Answer> misused = Start(*tokens, "t2", "repair all");
  EXPECT_EQ(misused.status().code(), absl::StatusCode::kInvalidArgument) << misused.status();

  // A third token evicts the oldest, on disk too.
  ASSERT_TRUE(Start(*tokens, "t3", "leave n2").ok());
  tokens = run();
  EXPECT_EQ(tokens->size(), 2u);
  absl::StatusOr<StartTokens::Answer> t1 = Start(*tokens, "t1", "repair all");
  ASSERT_TRUE(t1.ok()) << t1.status();
  EXPECT_FALSE(t1->deduplicated);  // forgotten, so started again (and t2 evicted)

  // Expiry while the node was down: the next start drops them, from disk too.
  clock_.Advance(absl::Hours(2));
  tokens = run();
  EXPECT_EQ(tokens->size(), 0u);
  absl::StatusOr<std::vector<StartTokenJournal::Record>> left = journal.LoadAllTokens();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_TRUE(left->empty());

  // A token used again after it expired: its new record stays on disk.
  ASSERT_TRUE(Start(*tokens, "t5", "repair all").ok());
  clock_.Advance(absl::Hours(2));
  absl::StatusOr<StartTokens::Answer> reused = Start(*tokens, "t5", "join n4");
  ASSERT_TRUE(reused.ok()) << reused.status();
  EXPECT_FALSE(reused->deduplicated);
  tokens = run();
  absl::StatusOr<StartTokens::Answer> retried = Start(*tokens, "t5", "join n4");
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_TRUE(retried->deduplicated);
  EXPECT_EQ(retried->response, reused->response);

  // A record that does not parse is dropped; the others load.
  ASSERT_TRUE(Start(*tokens, "t4", "repair all").ok());
  WriteBatch batch;
  batch.Put(Column::kMeta, "start_token/bad", "\xff\xff");
  ASSERT_TRUE(disk.Write(batch, WriteOptions()).ok());
  tokens = run();
  EXPECT_EQ(tokens->size(), 2u);  // t5 and t4
  EXPECT_EQ(disk.Get(Column::kMeta, "start_token/bad").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kv

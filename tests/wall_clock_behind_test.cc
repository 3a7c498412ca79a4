// The node's and the tools' timed waits, run in a process whose wall clock is an hour behind the
// kernel's. main() runs the tests again under libfaketime (FAKETIME=-1h, the monotonic clock left
// alone), so that every wait that still ends at a wall-clock deadline (abseil 20220623's timed
// waits: see storage/steady_timer.h) ends at once instead of after its timeout, as after a step
// of the wall clock back. The first test checks that the process is in that state, so the others
// cannot pass for want of it. A wait that ended at once fails its test; one on the monotonic
// clock lasts as long as it should.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "node/call_gate.h"
#include "node/clock.h"
#include "node/gossip_transport.h"
#include "node/history_check.h"
#include "node/start_tokens.h"
#include "storage/steady_timer.h"
#include "tests/test_util.h"

namespace kv {
namespace {

constexpr char kUnderFaketime[] = "KV_WALL_CLOCK_BEHIND";
constexpr absl::Duration kWait = absl::Milliseconds(600);
// A wait that ends at a wall-clock deadline ends in well under this here.
constexpr absl::Duration kAtOnce = absl::Milliseconds(300);

absl::Duration Since(std::chrono::steady_clock::time_point start) {
  return absl::FromChrono(std::chrono::steady_clock::now() - start);
}

// The premise: abseil 20220623's timed waits end at once here. (A later abseil that waits on the
// monotonic clock would fail this test alone: the others would then pass without proving much.)
TEST(WallClockBehindTest, AbseilTimedWaitsEndAtOnceInThisProcess) {
  ASSERT_NE(std::getenv(kUnderFaketime), nullptr)
      << "libfaketimeMT.so.1 is missing: install Debian's faketime package (deploy/setup-deps.sh "
         "does); these tests ran with the real wall clock";
  absl::Notification never;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(never.WaitForNotificationWithTimeout(kWait));
  EXPECT_LT(Since(start), kAtOnce) << "the wall clock is not behind: the other tests prove nothing";
}

TEST(WallClockBehindTest, SteadyConditionWaitsItsWholeTimeout) {
  absl::Mutex mu;
  bool flag = false;
  SteadyCondition condition;
  const auto start = std::chrono::steady_clock::now();
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(condition.AwaitWithTimeout(&mu, absl::Condition(&flag), kWait));
  EXPECT_GE(Since(start), kWait);
}

TEST(WallClockBehindTest, SteadyConditionEndsWhenNotifiedThatItsConditionHolds) {
  absl::Mutex mu;
  bool flag = false;
  SteadyCondition condition;
  const auto start = std::chrono::steady_clock::now();
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(100));
    condition.Notify();  // the condition does not hold yet: the waiter goes on waiting
    absl::SleepFor(kWait);
    absl::MutexLock lock(&mu);
    flag = true;
    condition.Notify();
  });
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(condition.AwaitWithTimeout(&mu, absl::Condition(&flag), absl::Seconds(30)));
  }
  EXPECT_GE(Since(start), kWait);
  EXPECT_LT(Since(start), absl::Seconds(20));
  setter.join();
}

TEST(WallClockBehindTest, TimerThreadRunsATaskAfterItsDelay) {
  const auto start = std::chrono::steady_clock::now();
  absl::Notification ran;
  std::atomic<int64_t> ran_after_ms{-1};
  {
    TimerThread timer;
    timer.RunAfter(kWait, [&] {
      ran_after_ms = absl::ToInt64Milliseconds(Since(start));
      ran.Notify();
    });
    // Waited for by polling with sleeps, which follow the monotonic clock.
    while (!ran.HasBeenNotified() && Since(start) < absl::Seconds(20)) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  ASSERT_TRUE(ran.HasBeenNotified());
  EXPECT_GE(ran_after_ms.load(), absl::ToInt64Milliseconds(kWait));
}

TEST(WallClockBehindTest, SteadyNotificationWaitsItsWholeTimeout) {
  SteadyNotification never;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(never.WaitForNotificationWithTimeout(kWait));
  EXPECT_GE(Since(start), kWait);
}

// A shutdown's grace: the gate waits for the call in progress.
TEST(WallClockBehindTest, CallGateWaitsForTheCallInProgress) {
  CallGate gate;
  grpc::ServerUnaryReactor* call = gate.NewReactor();
  gate.Close();
  const auto start = std::chrono::steady_clock::now();
  std::thread done([call] {
    absl::SleepFor(kWait);
    call->OnDone();  // what gRPC does once the call's status is sent; the reactor deletes itself
  });
  EXPECT_EQ(gate.WaitUntilIdle(absl::Seconds(30)), 0);
  EXPECT_GE(Since(start), kWait);
  done.join();
}

TEST(WallClockBehindTest, CallGateWaitsItsWholeGraceForACallThatDoesNotEnd) {
  CallGate gate;
  grpc::ServerUnaryReactor* call = gate.NewReactor();
  gate.Close();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(gate.WaitUntilIdle(kWait), 1);
  EXPECT_GE(Since(start), kWait);
  call->OnDone();
}

// Answers every exchange with an empty table after `delay`, on its own thread.
class SlowGossipTransport : public GossipTransport {
 public:
  explicit SlowGossipTransport(absl::Duration delay) : delay_(delay) {}
  ~SlowGossipTransport() override {
    for (std::thread& t : threads_) t.join();
  }
  void Gossip(const std::string& address, GossipDigest digest,
              std::function<void(absl::StatusOr<GossipDigest>)> done) override {
    threads_.emplace_back([delay = delay_, done = std::move(done)] {
      absl::SleepFor(delay);
      done(GossipDigest());
    });
  }

 private:
  const absl::Duration delay_;
  std::vector<std::thread> threads_;
};

// A start's check for a restored data directory waits for the peers' answers.
TEST(WallClockBehindTest, AskPeerGenerationsWaitsForTheAnswers) {
  SlowGossipTransport transport(kWait);
  const auto start = std::chrono::steady_clock::now();
  PeerGenerations asked =
      AskPeerGenerations(&transport, "n1", {"127.0.0.1:1"}, {"127.0.0.1:2", "127.0.0.1:3"},
                         /*timeout=*/absl::Seconds(30));
  EXPECT_EQ(asked.asked, 2u);
  EXPECT_EQ(asked.answered, 2u);
  EXPECT_GE(Since(start), kWait);
}

// A second start with the same token waits for the first start's answer.
TEST(WallClockBehindTest, StartTokensWaitForTheStartUnderWay) {
  StartTokens tokens(SystemClock::Get());
  absl::Notification first_started;
  std::thread first([&] {
    absl::StatusOr<StartTokens::Answer> answer =
        tokens.Run("token", "fingerprint", [&]() -> absl::StatusOr<std::string> {
          first_started.Notify();
          absl::SleepFor(kWait);
          return std::string("op-1");
        });
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_FALSE(answer->deduplicated);
  });
  first_started.WaitForNotification();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StartTokens::Answer> second = tokens.Run(
      "token", "fingerprint",
      []() -> absl::StatusOr<std::string> { return absl::InternalError("started twice"); },
      /*max_wait=*/absl::Seconds(30));
  const absl::Duration waited = Since(start);
  first.join();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->deduplicated);
  EXPECT_EQ(second->response, "op-1");
  EXPECT_GE(waited, kWait - absl::Milliseconds(50));
}

TEST(WallClockBehindTest, StartTokensGiveUpWaitingAfterTheirMaxWait) {
  StartTokens tokens(SystemClock::Get());
  absl::Notification first_started;
  absl::Notification release;
  std::thread first([&] {
    (void)tokens.Run("token", "fingerprint", [&]() -> absl::StatusOr<std::string> {
      first_started.Notify();
      release.WaitForNotification();
      return std::string("op-1");
    });
  });
  first_started.WaitForNotification();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StartTokens::Answer> second = tokens.Run(
      "token", "fingerprint",
      []() -> absl::StatusOr<std::string> { return absl::InternalError("started twice"); },
      /*max_wait=*/kWait);
  EXPECT_TRUE(absl::IsAborted(second.status())) << second.status();
  EXPECT_GE(Since(start), kWait);
  release.Notify();
  first.join();
}

}  // namespace
}  // namespace kv

int main(int argc, char** argv) {
  if (std::getenv(kv::kUnderFaketime) == nullptr) {
    const std::string libfaketime = kv::testing::LibfaketimePath();
    // Without it the tests run as they are (listing them must work) and the first one fails.
    if (libfaketime.empty()) {
      testing::InitGoogleTest(&argc, argv);
      return RUN_ALL_TESTS();
    }
    for (const auto& [name, value] : kv::testing::FaketimeEnv(libfaketime)) {
      setenv(name.c_str(), value.c_str(), 1);
    }
    setenv("FAKETIME", "-1h", 1);
    setenv(kv::kUnderFaketime, "1", 1);
    execv("/proc/self/exe", argv);
    std::perror("execv /proc/self/exe");
    return 1;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

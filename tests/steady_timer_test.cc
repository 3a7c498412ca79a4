// Tests for storage/steady_timer.h (TimerThread, SteadyNotification) and the node's users of the
// monotonic clock: TimerScheduler (node/scheduler.h) and SteadyClock (node/clock.h). That a step
// of the wall clock leaves them alone is tested with a real node whose clock is stepped
// (GossipProcessTest.AStepOfANodesWallClockNeitherStopsItsGossipNorMisjudgesItsPeers).
#include "storage/steady_timer.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/scheduler.h"

namespace kv {
namespace {

TEST(TimerThreadTest, RunsTasksInOrderOfDueTime) {
  absl::Mutex mu;
  std::vector<std::string> order;
  absl::BlockingCounter done(5);
  {
    TimerThread timer;
    auto record = [&](std::string name) {
      return [&, name] {
        {
          absl::MutexLock lock(&mu);
          order.push_back(name);
        }
        done.DecrementCount();
      };
    };
    // Spaced widely, so that a pause between two of these calls does not reorder them.
    timer.RunAfter(absl::Milliseconds(300), record("300ms"));
    timer.RunAfter(absl::Milliseconds(100), record("100ms-a"));
    timer.RunAfter(absl::Milliseconds(100), record("100ms-b"));
    timer.RunAfter(absl::Milliseconds(200), record("200ms"));
    timer.RunAfter(-absl::Seconds(1), record("now"));  // a delay in the past runs at once
    done.Wait();
  }
  EXPECT_EQ(order, (std::vector<std::string>{"now", "100ms-a", "100ms-b", "200ms", "300ms"}));
}

TEST(TimerThreadTest, ATaskRunsNoEarlierThanItsDelay) {
  TimerThread timer;
  absl::Notification ran;
  std::chrono::steady_clock::time_point ran_at;
  const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  timer.RunAfter(absl::Milliseconds(50), [&] {
    ran_at = std::chrono::steady_clock::now();
    ran.Notify();
  });
  ran.WaitForNotification();
  EXPECT_GE(ran_at - start, std::chrono::milliseconds(50));
}

TEST(TimerThreadTest, ATaskAddedWhileAnotherIsAwaitedRunsAtItsOwnTime) {
  TimerThread timer;
  absl::Notification later_ran;
  absl::Notification sooner_ran;
  timer.RunAfter(absl::Hours(1), [&] { later_ran.Notify(); });
  timer.RunAfter(absl::ZeroDuration(), [&] { sooner_ran.Notify(); });
  // Not after the hour-long wait: the bound is generous for a slow machine.
  EXPECT_TRUE(sooner_ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_FALSE(later_ran.HasBeenNotified());
}

TEST(TimerThreadTest, DestructionDropsTasksNotYetDueWithoutWaitingForThem) {
  bool ran = false;
  const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  {
    TimerThread timer;
    timer.RunAfter(absl::Hours(1), [&] { ran = true; });
    timer.RunAfter(absl::InfiniteDuration(), [&] { ran = true; });  // clamped, still dropped
  }
  EXPECT_FALSE(ran);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::minutes(1));
}

TEST(SteadyNotificationTest, AWaitEndsOnNotifyOrAfterItsTimeout) {
  SteadyNotification notification;
  const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  EXPECT_FALSE(notification.WaitForNotificationWithTimeout(absl::Milliseconds(30)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(30));
  std::thread notifier([&] { notification.Notify(); });
  EXPECT_TRUE(notification.WaitForNotificationWithTimeout(absl::Hours(1)));
  notifier.join();
  EXPECT_TRUE(notification.WaitForNotificationWithTimeout(absl::ZeroDuration()));
}

TEST(TimerSchedulerTest, HandsDueWorkToTheExecutor) {
  ThreadPoolExecutor executor(2);
  absl::Notification ran;
  std::thread::id ran_on;
  {
    TimerScheduler scheduler(&executor);
    scheduler.RunAfter(absl::Milliseconds(10), [&] {
      ran_on = std::this_thread::get_id();
      ran.Notify();
    });
    ran.WaitForNotification();
  }
  EXPECT_NE(ran_on, std::this_thread::get_id());
  executor.Shutdown();
}

TEST(SteadyClockTest, StartsAtTheWallClockAndNeverGoesBack) {
  SteadyClock clock;
  const absl::Time first = clock.Now();
  EXPECT_LT(absl::AbsDuration(first - absl::Now()), absl::Seconds(5));
  absl::Time previous = first;
  for (int i = 0; i < 1000; ++i) {
    const absl::Time now = clock.Now();
    ASSERT_GE(now, previous);
    previous = now;
  }
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_GE(clock.Now() - first, absl::Milliseconds(20));
}

}  // namespace
}  // namespace kv

// Tests for node/executor.h: ThreadPoolExecutor runs every task exactly once, in parallel, FIFO
// per worker, drains on Shutdown and on destruction, and never drops work scheduled after
// Shutdown.
#include "node/executor.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace kv {
namespace {

TEST(InlineExecutorTest, RunsTaskBeforeScheduleReturns) {
  InlineExecutor executor;
  bool ran = false;
  executor.Schedule([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(ThreadPoolExecutorTest, RunsEveryTaskOnce) {
  std::atomic<int> runs{0};
  {
    ThreadPoolExecutor executor(4);
    for (int i = 0; i < 1000; ++i) executor.Schedule([&] { runs.fetch_add(1); });
    executor.Shutdown();
    EXPECT_EQ(runs.load(), 1000);
  }
  EXPECT_EQ(runs.load(), 1000);
}

TEST(ThreadPoolExecutorTest, RunsTasksInParallel) {
  constexpr int kThreads = 4;
  ThreadPoolExecutor executor(kThreads);
  absl::BlockingCounter all_started(kThreads);
  absl::Notification release;
  std::atomic<int> finished{0};
  for (int i = 0; i < kThreads; ++i) {
    executor.Schedule([&] {
      all_started.DecrementCount();
      release.WaitForNotification();
      finished.fetch_add(1);
    });
  }
  // Only returns if all four tasks are running at the same time.
  all_started.Wait();
  release.Notify();
  executor.Shutdown();
  EXPECT_EQ(finished.load(), kThreads);
}

TEST(ThreadPoolExecutorTest, OneWorkerRunsTasksInScheduleOrder) {
  ThreadPoolExecutor executor(1);
  absl::Mutex mu;
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) {
    executor.Schedule([&, i] {
      absl::MutexLock lock(&mu);
      order.push_back(i);
    });
  }
  executor.Shutdown();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(ThreadPoolExecutorTest, ShutdownRunsQueuedTasksToCompletion) {
  ThreadPoolExecutor executor(1);
  absl::Notification gate;
  std::atomic<int> runs{0};
  executor.Schedule([&] { gate.WaitForNotification(); });
  for (int i = 0; i < 50; ++i) {
    executor.Schedule([&] {
      absl::SleepFor(absl::Microseconds(200));
      runs.fetch_add(1);
    });
  }
  std::thread opener([&] {
    absl::SleepFor(absl::Milliseconds(20));
    gate.Notify();
  });
  executor.Shutdown();  // blocks until the gate opens and all 50 tasks ran
  EXPECT_EQ(runs.load(), 50);
  opener.join();
}

TEST(ThreadPoolExecutorTest, DestructorDrainsQueue) {
  std::atomic<int> runs{0};
  {
    ThreadPoolExecutor executor(2);
    for (int i = 0; i < 200; ++i) executor.Schedule([&] { runs.fetch_add(1); });
  }
  EXPECT_EQ(runs.load(), 200);
}

TEST(ThreadPoolExecutorTest, ScheduleAfterShutdownRunsInlineOnCaller) {
  ThreadPoolExecutor executor(2);
  executor.Shutdown();
  std::thread::id ran_on;
  executor.Schedule([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(ThreadPoolExecutorTest, ShutdownIsIdempotent) {
  ThreadPoolExecutor executor(2);
  std::atomic<int> runs{0};
  executor.Schedule([&] { runs.fetch_add(1); });
  executor.Shutdown();
  executor.Shutdown();
  EXPECT_EQ(runs.load(), 1);
}

TEST(ThreadPoolExecutorTest, TasksMayScheduleMoreTasks) {
  std::atomic<int> runs{0};
  ThreadPoolExecutor executor(3);
  absl::BlockingCounter done(100);
  for (int i = 0; i < 50; ++i) {
    executor.Schedule([&] {
      runs.fetch_add(1);
      done.DecrementCount();
      executor.Schedule([&] {
        runs.fetch_add(1);
        done.DecrementCount();
      });
    });
  }
  done.Wait();
  executor.Shutdown();
  EXPECT_EQ(runs.load(), 100);
}

TEST(ThreadPoolExecutorTest, ManyProducersLongQueue) {
  // Producers outpace one slow-starting worker, so the queue grows well past its compaction
  // threshold while it is being consumed.
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 5000;
  std::atomic<int64_t> sum{0};
  ThreadPoolExecutor executor(1);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        executor.Schedule([&sum, v = p * kPerProducer + i] { sum.fetch_add(v); });
      }
    });
  }
  for (std::thread& t : producers) t.join();
  executor.Shutdown();
  const int64_t n = kProducers * kPerProducer;
  EXPECT_EQ(sum.load(), n * (n - 1) / 2);
}

TEST(ThreadPoolExecutorTest, ZeroThreadsStillRunsWork) {
  std::atomic<int> runs{0};
  ThreadPoolExecutor executor(0);
  absl::Notification ran;
  executor.Schedule([&] {
    runs.fetch_add(1);
    ran.Notify();
  });
  EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  executor.Shutdown();
  EXPECT_EQ(runs.load(), 1);
}

}  // namespace
}  // namespace kv

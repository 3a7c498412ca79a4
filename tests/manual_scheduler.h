// Deterministic executor and scheduler for unit tests of the node's background machinery
// (anti-entropy, handoff, clean-up): nothing runs until the test says so, on the test's thread.
//
// QueueExecutor runs scheduled tasks, FIFO, when Drain() is called. ManualScheduler keeps timers
// on a ManualClock; Advance(d) moves the clock to each due timer in time order (FIFO among equal
// times), hands it to the executor and drains it, then moves the clock to the end of `d`.
#ifndef KV_TESTS_MANUAL_SCHEDULER_H_
#define KV_TESTS_MANUAL_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <utility>

#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/scheduler.h"

namespace kv::testing {

class QueueExecutor : public Executor {
 public:
  void Schedule(std::function<void()> fn) override { tasks_.push_back(std::move(fn)); }
  void Drain() {
    while (!tasks_.empty()) {
      std::function<void()> fn = std::move(tasks_.front());
      tasks_.pop_front();
      fn();
    }
  }

 private:
  std::deque<std::function<void()>> tasks_;
};

class ManualScheduler : public Scheduler {
 public:
  ManualScheduler(ManualClock* clock, QueueExecutor* executor)
      : clock_(clock), executor_(executor) {}
  void RunAfter(absl::Duration delay, std::function<void()> fn) override {
    timers_.emplace(std::make_pair(clock_->Now() + delay, seq_++), std::move(fn));
  }
  void Advance(absl::Duration d) {
    const absl::Time until = clock_->Now() + d;
    executor_->Drain();
    while (!timers_.empty() && timers_.begin()->first.first <= until) {
      const absl::Time at = timers_.begin()->first.first;
      if (at > clock_->Now()) clock_->Advance(at - clock_->Now());
      executor_->Schedule(std::move(timers_.begin()->second));
      timers_.erase(timers_.begin());
      executor_->Drain();
    }
    if (until > clock_->Now()) clock_->Advance(until - clock_->Now());
  }

 private:
  ManualClock* const clock_;
  QueueExecutor* const executor_;
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> timers_;
  uint64_t seq_ = 0;
};

}  // namespace kv::testing

#endif  // KV_TESTS_MANUAL_SCHEDULER_H_

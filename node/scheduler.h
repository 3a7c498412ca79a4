// Scheduler: runs work after a delay. The node core schedules retries, backoff and periodic
// tasks only through this interface, so the deterministic simulation can drive it on simulated
// time. TimerScheduler is the production implementation: one timer thread that hands due work
// to an Executor. Thread-safe.
#ifndef KV_NODE_SCHEDULER_H_
#define KV_NODE_SCHEDULER_H_

#include <functional>

#include "absl/time/time.h"
#include "node/executor.h"
#include "storage/steady_timer.h"

namespace kv {

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // Runs `fn` on the executor no earlier than `delay` from now.
  virtual void RunAfter(absl::Duration delay, std::function<void()> fn) = 0;
};

class TimerScheduler : public Scheduler {
 public:
  // The destructor stops the timer thread; work not yet due is dropped.
  explicit TimerScheduler(Executor* executor) : executor_(executor) {}

  void RunAfter(absl::Duration delay, std::function<void()> fn) override;

 private:
  Executor* const executor_;
  TimerThread timer_;
};

}  // namespace kv

#endif  // KV_NODE_SCHEDULER_H_

// Scheduler: runs work after a delay. The node core schedules retries, backoff and periodic
// tasks only through this interface, so the deterministic simulation can drive it on simulated
// time. TimerScheduler is the production implementation: one timer thread that hands due work
// to an Executor. Thread-safe.
#ifndef KV_NODE_SCHEDULER_H_
#define KV_NODE_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/executor.h"

namespace kv {

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // Runs `fn` on the executor no earlier than `delay` from now.
  virtual void RunAfter(absl::Duration delay, std::function<void()> fn) = 0;
};

class TimerScheduler : public Scheduler {
 public:
  explicit TimerScheduler(Executor* executor);
  // Stops the timer thread; work not yet due is dropped.
  ~TimerScheduler() override;
  TimerScheduler(const TimerScheduler&) = delete;
  TimerScheduler& operator=(const TimerScheduler&) = delete;

  void RunAfter(absl::Duration delay, std::function<void()> fn) override;

 private:
  void Loop();

  Executor* const executor_;
  absl::Mutex mu_;
  // Due time and a sequence number (FIFO among equal times) -> work.
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> due_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kv

#endif  // KV_NODE_SCHEDULER_H_

// Time on the monotonic clock: SteadyNow reads it, TimerThread runs tasks after a delay,
// SteadyNotification is a one-shot stop signal with a timed wait, and SteadyCondition a timed
// wait for a condition on state an absl::Mutex guards. And deadlines for gRPC, on the system
// clock as gRPC reads it: WallDeadlineAfter and TimeUntil (at the end).
//
// Why not absl: in the abseil Debian 12 ships (20220623), every timed wait of absl::Mutex,
// absl::CondVar and absl::Notification becomes an absolute deadline on the wall clock
// (FUTEX_CLOCK_REALTIME). When the wall clock steps back (an NTP correction, a virtual machine
// resumed, an operator's `date -s`), such a wait sleeps on for the length of the step; under a
// clock that only the process sees moved (libfaketime), it returns at once, again and again.
// Periodic work would then stop for the step (gossip heartbeats, so peers judge the node DOWN)
// or spin. These wait on std::chrono::steady_clock (CLOCK_MONOTONIC), which never steps.
//
// The classes clamp delays and timeouts to [0, 1 year], and are thread-safe.
#ifndef KV_STORAGE_STEADY_TIMER_H_
#define KV_STORAGE_STEADY_TIMER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kv {

// One thread that runs tasks at their due time on the monotonic clock, one at a time, in order
// of due time (ties in scheduling order). Tasks must not block for long: they delay the others.
class TimerThread {
 public:
  TimerThread();
  // Stops the thread, after the task running (if any) returns. Tasks not yet due are destroyed
  // without running.
  ~TimerThread();
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

  // Runs `task` on the timer thread once `delay` has passed (at once if it is not positive).
  void RunAfter(absl::Duration delay, absl::AnyInvocable<void() &&> task);

 private:
  using Clock = std::chrono::steady_clock;
  void Loop();

  // std::mutex rather than absl::Mutex: the condition variable's timed wait must take it.
  std::mutex mu_;
  std::condition_variable changed_;  // a task was added, or stopping_ set
  bool stopping_ = false;            // guarded by mu_
  uint64_t next_seq_ = 0;            // guarded by mu_
  // (due time, scheduling order) -> task; guarded by mu_.
  std::map<std::pair<Clock::time_point, uint64_t>, absl::AnyInvocable<void() &&>> tasks_;
  std::thread thread_;  // last: starts after the fields above exist
};

// absl::Notification's Notify and timed wait, on the monotonic clock.
class SteadyNotification {
 public:
  void Notify();
  // Returns true as soon as Notify has been called, false once `timeout` has passed without it.
  bool WaitForNotificationWithTimeout(absl::Duration timeout);

 private:
  std::mutex mu_;
  std::condition_variable notified_cv_;
  bool notified_ = false;  // guarded by mu_
};

// absl::Mutex::AwaitWithTimeout on the monotonic clock. The threads that change the state a
// waiter's condition reads call Notify after each change that may make the condition true,
// still holding the waiter's mutex (so that a waiter cannot return and destroy the object while
// Notify runs); a waiter then evaluates its condition again. A Notify between a waiter's
// evaluation and its sleep is not missed. Locks: the caller's mutex before the object's own,
// never the other way round.
class SteadyCondition {
 public:
  // Wakes every waiter, to evaluate its condition again.
  void Notify();
  // Returns true as soon as `condition` holds, evaluated with `mu` held, and false if `timeout`
  // passes first. `mu` is released while waiting and held again on return.
  bool AwaitWithTimeout(absl::Mutex* mu, const absl::Condition& condition, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

 private:
  std::mutex mu_;
  std::condition_variable notified_cv_;
  uint64_t notifications_ = 0;  // guarded by mu_
};

// The monotonic clock on the wall clock's scale: the system clock's reading at the process's
// first call, plus the time elapsed since. Never goes back, and moves with real time whatever the
// wall clock does: for deadlines and durations measured within one process. Not for anything stored
// or compared with another process's clock. Thread-safe.
absl::Time SteadyNow();

// Deadlines for gRPC, which takes wall-clock time points and turns each into a monotonic one when
// its call starts, reading the system clock (clock_gettime) for it. Both read that clock too, not
// absl::Now(): abseil's clock does not follow a step of the wall clock at once (it was seen an
// hour off for over a second after one), and the difference would shorten or stretch the
// deadline by the step.
// The time point `timeout` from now; time_point::max() (none) for InfiniteDuration or one too
// large for the type.
std::chrono::system_clock::time_point WallDeadlineAfter(absl::Duration timeout);
// The time left until `deadline` (InfiniteDuration for time_point::max()).
absl::Duration TimeUntil(std::chrono::system_clock::time_point deadline);

}  // namespace kv

#endif  // KV_STORAGE_STEADY_TIMER_H_

#include "storage/steady_timer.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace kv {

namespace {

// `delay` as a steady_clock duration, clamped to [0, 1 year].
std::chrono::steady_clock::duration SteadyDelay(absl::Duration delay) {
  delay = std::clamp(delay, absl::ZeroDuration(), absl::Hours(24 * 365));
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(delay));
}

}  // namespace

std::chrono::system_clock::time_point WallDeadlineAfter(absl::Duration timeout) {
  using TimePoint = std::chrono::system_clock::time_point;
  // Far beyond any deadline, and far from overflowing a time point (nanoseconds in libstdc++).
  if (timeout > absl::Hours(24 * 365 * 100)) return TimePoint::max();
  const absl::Duration bounded = std::max(timeout, -absl::Hours(24 * 365 * 100));
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<TimePoint::duration>(absl::ToChronoNanoseconds(bounded));
}

absl::Duration TimeUntil(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteDuration();
  // Each converted on its own (abseil saturates), so that a deadline centuries away, which a
  // caller's wrapped timeout can produce, does not overflow the subtraction of two time points.
  return absl::FromChrono(deadline) - absl::FromChrono(std::chrono::system_clock::now());
}

absl::Time SteadyNow() {
  struct Origin {
    absl::Time wall = absl::FromChrono(std::chrono::system_clock::now());  // see WallDeadlineAfter
    std::chrono::steady_clock::time_point steady = std::chrono::steady_clock::now();
  };
  static const Origin* const origin = new Origin();  // never destroyed: read during exit
  return origin->wall + absl::FromChrono(std::chrono::steady_clock::now() - origin->steady);
}

TimerThread::TimerThread() : thread_([this] { Loop(); }) {}

TimerThread::~TimerThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void TimerThread::RunAfter(absl::Duration delay, absl::AnyInvocable<void() &&> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.emplace(std::make_pair(Clock::now() + SteadyDelay(delay), next_seq_++), std::move(task));
  }
  changed_.notify_all();
}

void TimerThread::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (tasks_.empty()) {
      changed_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      continue;
    }
    const Clock::time_point due = tasks_.begin()->first.first;
    if (Clock::now() < due) {
      // Until the earliest due time, or until a task is added (it may be due earlier) or stop.
      const uint64_t seq_before = next_seq_;
      changed_.wait_until(lock, due,
                          [this, seq_before] { return stopping_ || next_seq_ != seq_before; });
      continue;
    }
    absl::AnyInvocable<void()&&> task = std::move(tasks_.begin()->second);
    tasks_.erase(tasks_.begin());
    lock.unlock();
    std::move(task)();
    lock.lock();
  }
}

void SteadyNotification::Notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
  }
  notified_cv_.notify_all();
}

bool SteadyNotification::WaitForNotificationWithTimeout(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return notified_cv_.wait_for(lock, SteadyDelay(timeout), [this] { return notified_; });
}

void SteadyCondition::Notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++notifications_;
  }
  notified_cv_.notify_all();
}

bool SteadyCondition::AwaitWithTimeout(absl::Mutex* mu, const absl::Condition& condition,
                                       absl::Duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + SteadyDelay(timeout);
  for (;;) {
    if (condition.Eval()) return true;
    uint64_t seen = 0;
    {
      // Read while `mu` is still held: a change made after the evaluation above (under `mu`)
      // is notified after this, so the wait below sees the count move.
      std::lock_guard<std::mutex> lock(mu_);
      seen = notifications_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    mu->Unlock();
    {
      std::unique_lock<std::mutex> lock(mu_);
      notified_cv_.wait_until(lock, deadline, [this, seen] { return notifications_ != seen; });
    }
    mu->Lock();
  }
}

}  // namespace kv

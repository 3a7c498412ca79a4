#include "node/scheduler.h"

namespace kv {

TimerScheduler::TimerScheduler(Executor* executor)
    : executor_(executor), thread_([this] { Loop(); }) {}

TimerScheduler::~TimerScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void TimerScheduler::RunAfter(absl::Duration delay, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  due_.emplace(std::make_pair(absl::Now() + delay, next_seq_++), std::move(fn));
}

void TimerScheduler::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (due_.empty()) {
      // Wake on new work or shutdown.
      mu_.Await(absl::Condition(
          +[](TimerScheduler* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->due_.empty();
          },
          this));
      continue;
    }
    const absl::Time next = due_.begin()->first.first;
    if (absl::Now() < next) {
      // Sleep until the earliest due time, or until earlier work or shutdown arrives.
      std::pair<TimerScheduler*, absl::Time> arg(this, next);
      mu_.AwaitWithDeadline(
          absl::Condition(
              +[](std::pair<TimerScheduler*, absl::Time>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                TimerScheduler* self = a->first;
                return self->stopping_ ||
                       (!self->due_.empty() && self->due_.begin()->first.first < a->second);
              },
              &arg),
          next);
      continue;
    }
    std::function<void()> fn = std::move(due_.begin()->second);
    due_.erase(due_.begin());
    mu_.Unlock();
    executor_->Schedule(std::move(fn));
    mu_.Lock();
  }
}

}  // namespace kv

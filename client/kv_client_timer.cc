#include "client/kv_client_timer.h"

namespace kv::client_internal {

TimerThread::TimerThread() : thread_([this] { Loop(); }) {}

TimerThread::~TimerThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void TimerThread::RunAt(absl::Time when, absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  tasks_.emplace(std::make_pair(when, next_seq_++), std::move(task));
}

void TimerThread::Loop() {
  mu_.Lock();
  while (true) {
    // Wakes on a new task or on stop; a new task may be due earlier than the one awaited.
    auto has_work_or_stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || !tasks_.empty();
    };
    mu_.Await(absl::Condition(&has_work_or_stopping));
    if (stopping_) break;
    const absl::Time due = tasks_.begin()->first.first;
    if (due > absl::Now()) {
      const uint64_t tasks_before = next_seq_;
      auto changed = [this, tasks_before]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || next_seq_ != tasks_before;
      };
      mu_.AwaitWithDeadline(absl::Condition(&changed), due);
      continue;
    }
    absl::AnyInvocable<void()&&> task = std::move(tasks_.begin()->second);
    tasks_.erase(tasks_.begin());
    mu_.Unlock();
    std::move(task)();
    mu_.Lock();
  }
  mu_.Unlock();
}

}  // namespace kv::client_internal

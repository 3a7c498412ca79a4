#include "node/executor.h"

#include <utility>

namespace kv {

ThreadPoolExecutor::ThreadPoolExecutor(int num_threads) {
  if (num_threads < 1) num_threads = 1;
  workers_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPoolExecutor::~ThreadPoolExecutor() { Shutdown(); }

void ThreadPoolExecutor::Schedule(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(std::move(fn));
      return;
    }
  }
  // The pool is stopping: the contract is never to drop work, so run it here.
  fn();
}

void ThreadPoolExecutor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  // Workers drain the queue before they exit, so joining them runs every queued task.
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

void ThreadPoolExecutor::WorkerLoop() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto has_work_or_stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return head_ < queue_.size() || stopping_;
      };
      mu_.Await(absl::Condition(&has_work_or_stopping));
      if (head_ == queue_.size()) return;  // stopping, and nothing left to run
      task = std::move(queue_[head_]);
      ++head_;
      if (head_ == queue_.size()) {
        // The queue is empty: reuse its storage from the start.
        queue_.clear();
        head_ = 0;
      } else if (head_ >= 1024 && head_ * 2 >= queue_.size()) {
        // Most of the vector is consumed slots: drop them so a never-empty queue stays bounded.
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
      }
    }
    task();
  }
}

}  // namespace kv

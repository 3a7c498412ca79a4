// LifetimeGuard: lets an object hand callbacks to transports, schedulers and executors that may
// run them after the object began shutting down. A wrapped callback runs only while the guard is
// open; Close() shuts it and waits for wrapped callbacks already running, so that once it
// returns none touches the object again. Close() must not be called from a wrapped callback.
// Thread-safe.
#ifndef KV_NODE_LIFETIME_GUARD_H_
#define KV_NODE_LIFETIME_GUARD_H_

#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kv {

class LifetimeGuard {
 public:
  LifetimeGuard() = default;
  LifetimeGuard(const LifetimeGuard&) = delete;
  LifetimeGuard& operator=(const LifetimeGuard&) = delete;
  ~LifetimeGuard() { Close(); }

  // A callable that runs `fn` with its arguments if the guard is still open.
  template <typename F>
  auto Wrap(F fn) const {
    return [state = state_, fn = std::move(fn)](auto&&... args) mutable {
      if (!Enter(*state)) return;
      fn(std::forward<decltype(args)>(args)...);
      Exit(*state);
    };
  }

  // Idempotent.
  void Close() {
    absl::MutexLock lock(&state_->mu);
    state_->open = false;
    state_->mu.Await(absl::Condition(
        +[](State* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->running == 0; },
        state_.get()));
  }

 private:
  struct State {
    absl::Mutex mu;
    bool open ABSL_GUARDED_BY(mu) = true;
    int running ABSL_GUARDED_BY(mu) = 0;
  };
  static bool Enter(State& s) {
    absl::MutexLock lock(&s.mu);
    if (!s.open) return false;
    ++s.running;
    return true;
  }
  static void Exit(State& s) {
    absl::MutexLock lock(&s.mu);
    --s.running;
  }

  const std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace kv

#endif  // KV_NODE_LIFETIME_GUARD_H_

// Clock: the node's only source of time. Production code uses SystemClock; tests and the
// simulation use ManualClock and move time themselves. Implementations are thread-safe.
#ifndef KV_NODE_CLOCK_H_
#define KV_NODE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kv {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time: stamps versions (informational) and expires idempotency records.
  virtual absl::Time Now() const = 0;
};

class SystemClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // A process-wide instance.
  static SystemClock* Get();
};

// A clock that moves only when told to.
class ManualClock : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::UnixEpoch() + absl::Hours(24 * 365 * 50))
      : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv

#endif  // KV_NODE_CLOCK_H_

// Clock: the node's only source of time. Production code uses SystemClock (the wall clock) or
// SteadyClock (never steps, for durations); tests and the simulation use ManualClock and move
// time themselves. Implementations are thread-safe.
#ifndef KV_NODE_CLOCK_H_
#define KV_NODE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kv {

class Clock {
 public:
  virtual ~Clock() = default;
  // The time. On SystemClock the wall clock's: stamps versions (informational) and expires
  // idempotency records.
  virtual absl::Time Now() const = 0;
};

class SystemClock : public Clock {
 public:
  // The system clock as the kernel keeps it (clock_gettime), not absl::Now(): abseil's clock
  // interpolates between readings and so follows a step of the wall clock only at its next
  // reading (it was seen two days off for a while after one), and a stamp taken meanwhile
  // (a start token's, an idempotency record's) would be off by the step.
  absl::Time Now() const override;
  // A process-wide instance.
  static SystemClock* Get();
};

// Time that never steps: the wall clock's reading when the process first asked, plus the time
// elapsed since on the monotonic clock (SteadyNow, storage/steady_timer.h). For the durations a
// node measures by itself (failure detection, leases, deadlines, pacing), which a step of the wall
// clock (an NTP correction, a virtual machine resumed) must neither stretch nor cut: a step back
// would otherwise hold back every DOWN judgement by the step, a step forward would judge every
// member DOWN at once. Never for what is stored or sent to be compared with another clock (version
// stamps, expiry times, tombstone ages): those stay on SystemClock.
class SteadyClock : public Clock {
 public:
  absl::Time Now() const override;
  // A process-wide instance.
  static SteadyClock* Get();
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

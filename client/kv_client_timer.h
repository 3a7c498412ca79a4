// Internal to kv_client: the one thread a Client owns, which runs delayed work (the backoff
// before a retry) and callbacks that must not run on the caller's thread (calls that fail before
// reaching the network). Chosen over grpc::Alarm so that the Client alone decides when timers
// stop, and so that no gRPC thread ever sleeps.
//
// Tasks run one at a time, in order of their due time (ties in scheduling order), and must not
// block. Thread-safe.
#ifndef KV_CLIENT_KV_CLIENT_TIMER_H_
#define KV_CLIENT_KV_CLIENT_TIMER_H_

#include <cstdint>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kv::client_internal {

class TimerThread {
 public:
  TimerThread();
  // Stops the thread. Tasks not yet due are destroyed without running. The Client waits for its
  // pending calls first, so the only such tasks are the Put coalescer's flush timers of Puts that
  // have left since, which would have found nothing to do.
  ~TimerThread();
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

  // Runs `task` on the timer thread at `when` (at once if `when` has passed).
  void RunAt(absl::Time when, absl::AnyInvocable<void() &&> task);

 private:
  void Loop();

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Keyed by (due time, scheduling order).
  std::map<std::pair<absl::Time, uint64_t>, absl::AnyInvocable<void() &&>> tasks_
      ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts after the fields above exist
};

}  // namespace kv::client_internal

#endif  // KV_CLIENT_KV_CLIENT_TIMER_H_

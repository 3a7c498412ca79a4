// SimLoop: the heart of the deterministic simulation. One thread, one queue of events ordered by
// (simulated time, sequence number), one clock that moves only when the next event is taken, and
// one seeded generator from which every random choice of a run is drawn. Nothing here reads real
// time, starts a thread or uses unseeded randomness, so a run is a pure function of its seed.
//
// Events may carry a liveness guard (the incarnation of a simulated node): an event whose guard
// is false when it comes due is dropped unrun. That is how a crash discards every callback, timer
// and task of the incarnation that died, while the objects they point to are destroyed.
//
// The loop keeps a trace hash over every event it runs (time, kind, endpoint, key): two runs of
// the same seed must produce the same hash, which the reproducibility test checks.
//
// SimClock, SimExecutor and SimScheduler adapt the loop to the node core's seams (node/clock.h,
// node/executor.h, node/scheduler.h). Not thread-safe: everything runs on the loop's thread.
#ifndef KV_TESTS_SIM_SIM_LOOP_H_
#define KV_TESTS_SIM_SIM_LOOP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/scheduler.h"

namespace kv::sim {

// True while the incarnation it stands for is alive; null means "always alive".
using Guard = std::shared_ptr<const bool>;

// A fixed 64-bit hash (FNV-1a) for trace and state fingerprints: never absl::Hash/std::hash,
// which are seeded per process.
class Fingerprint {
 public:
  void Add(absl::string_view bytes);
  void Add(uint64_t value);
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

class SimLoop {
 public:
  // A fixed start time, far from the Unix epoch so that timestamps look real.
  static absl::Time Start() { return absl::FromUnixSeconds(1'900'000'000); }

  explicit SimLoop(uint64_t seed);
  SimLoop(const SimLoop&) = delete;
  SimLoop& operator=(const SimLoop&) = delete;

  absl::Time Now() const { return now_; }
  // Every random choice of the run comes from here (a URBG, so absl::BitGenRef accepts it).
  std::mt19937_64& rng() { return rng_; }
  // Uniform helpers over rng().
  bool Chance(double p);
  int64_t UniformInt(int64_t lo, int64_t hi);  // inclusive
  absl::Duration UniformDuration(absl::Duration lo, absl::Duration hi);

  // Runs `fn` at Now() + delay (never inline), unless `guard` is false by then. `kind`, `endpoint`
  // and `key` label the event in the trace.
  void Post(absl::Duration delay, std::function<void()> fn, Guard guard = nullptr,
            absl::string_view kind = "task", int endpoint = -1, absl::string_view key = {});

  // Runs the earliest event; false if there is none.
  bool RunOne();
  // Runs events due no later than `until`, then sets the clock to `until`.
  void RunUntil(absl::Time until);
  // Runs events until `done()` is true (checked between events) or the clock passes `deadline`;
  // returns done().
  bool RunUntil(const std::function<bool()>& done, absl::Time deadline);

  // Debug log of the run (KV_SIM_VERBOSE): lines stamped with the simulated time, to stderr.
  bool verbose() const { return verbose_; }
  void set_verbose(bool verbose) { verbose_ = verbose; }
  void Log(absl::string_view line) const;

  size_t pending_events() const { return queue_.size(); }
  uint64_t events_run() const { return events_run_; }
  uint64_t trace_hash() const { return trace_.value(); }

 private:
  struct Event {
    std::function<void()> fn;
    Guard guard;
    std::string kind;
    int endpoint;
    std::string key;
  };

  absl::Time now_ = Start();
  std::mt19937_64 rng_;
  std::map<std::pair<absl::Time, uint64_t>, Event> queue_;
  uint64_t next_seq_ = 0;
  uint64_t events_run_ = 0;
  Fingerprint trace_;
  bool verbose_ = false;
};

// The simulated wall clock of every node (they share it: no skew is modelled).
class SimClock : public Clock {
 public:
  explicit SimClock(const SimLoop* loop) : loop_(loop) {}
  absl::Time Now() const override { return loop_->Now(); }

 private:
  const SimLoop* const loop_;
};

// A node incarnation's executor: Schedule posts an event at the current time (FIFO among equal
// times), dropped if the incarnation has died by then.
class SimExecutor : public Executor {
 public:
  SimExecutor(SimLoop* loop, Guard guard, int endpoint)
      : loop_(loop), guard_(std::move(guard)), endpoint_(endpoint) {}
  void Schedule(std::function<void()> fn) override;

 private:
  SimLoop* const loop_;
  const Guard guard_;
  const int endpoint_;
};

// A node incarnation's timers: RunAfter posts an event at now + delay, with the same guard.
class SimScheduler : public Scheduler {
 public:
  SimScheduler(SimLoop* loop, Guard guard, int endpoint)
      : loop_(loop), guard_(std::move(guard)), endpoint_(endpoint) {}
  void RunAfter(absl::Duration delay, std::function<void()> fn) override;

 private:
  SimLoop* const loop_;
  const Guard guard_;
  const int endpoint_;
};

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_LOOP_H_

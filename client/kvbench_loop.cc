#include "client/kvbench_loop.h"

#include <chrono>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "storage/steady_timer.h"

namespace kv::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

// State shared by the chains' callbacks. Held by shared_ptr from every callback, so that it
// outlives the last one even after RunClosedLoop has returned.
class LoopState : public std::enable_shared_from_this<LoopState> {
 public:
  LoopState(OpSource& source, const LoopOptions& options)
      : source_(source),
        start_(SteadyClock::now()),
        measure_start_(start_ + absl::ToChronoNanoseconds(options.warmup)),
        end_(options.duration == absl::InfiniteDuration()
                 ? SteadyClock::time_point::max()
                 : measure_start_ + absl::ToChronoNanoseconds(options.duration)),
        rate_(options.duration == absl::InfiniteDuration() ? 0 : options.rate),
        active_chains_(options.concurrency) {}

  // With a rate: chains wait in a queue of idle chains, and the pacer starts one per slot.
  void StartPacedChains(int concurrency) {
    {
      absl::MutexLock lock(&mu_);
      for (int chain = 0; chain < concurrency; ++chain) idle_.push_back(chain);
    }
    pacer_ = std::thread([self = shared_from_this()] { self->Pace(); });
  }
  void JoinPacer() {
    if (pacer_.joinable()) pacer_.join();
  }

  // `planned`: when the operation was due (a paced slot; otherwise now). Its latency counts
  // from then, so that time spent waiting for a late pacer or a free chain is not left out.
  void StartChain(int chain, std::optional<SteadyClock::time_point> planned = std::nullopt) {
    const SteadyClock::time_point started = planned.value_or(SteadyClock::now());
    std::shared_ptr<LoopState> self = shared_from_this();
    const bool issued = source_.Start(chain, [self, chain, started](OpResult result) {
      self->OnComplete(chain, started, result);
    });
    if (!issued) EndChain();
  }

  // Blocks until every chain has ended, printing progress once per second.
  void WaitForChains(const LoopOptions& options) {
    uint64_t last_completed = 0;
    SteadyClock::time_point last_tick = start_;
    absl::MutexLock lock(&mu_);
    while (active_chains_ > 0) {
      const absl::Duration until_tick =
          absl::FromChrono(last_tick + std::chrono::seconds(1) - SteadyClock::now());
      if (chains_ended_.AwaitWithTimeout(&mu_, absl::Condition(this, &LoopState::AllChainsEnded),
                                         until_tick)) {
        break;
      }
      const SteadyClock::time_point now = SteadyClock::now();
      if (options.progress) {
        PrintProgressLocked(options, now, completed_ - last_completed,
                            std::chrono::duration<double>(now - last_tick).count());
      }
      last_completed = completed_;
      last_tick = now;
    }
  }

  PhaseStats TakeStats() {
    absl::MutexLock lock(&mu_);
    if (end_ == SteadyClock::time_point::max()) {
      stats_.seconds = std::chrono::duration<double>(last_completion_ - measure_start_).count();
    } else {
      stats_.seconds = std::chrono::duration<double>(end_ - measure_start_).count();
    }
    if (stats_.seconds < 0) stats_.seconds = 0;
    return std::move(stats_);
  }

 private:
  void OnComplete(int chain, SteadyClock::time_point started, OpResult result) {
    const SteadyClock::time_point now = SteadyClock::now();
    {
      absl::MutexLock lock(&mu_);
      ++completed_;
      if (now >= measure_start_ && now < end_) RecordLocked(result, now - started);
      if (now > last_completion_) last_completion_ = now;
    }
    if (now >= end_) {
      EndChain();
    } else if (rate_ > 0) {
      absl::MutexLock lock(&mu_);
      if (pacing_done_) {
        if (--active_chains_ == 0) chains_ended_.Notify();
      } else {
        idle_.push_back(chain);
        chain_idle_.Notify();
      }
    } else {
      StartChain(chain);
    }
  }

  // Starts an idle chain at each slot (start + n / rate) until the phase ends, then ends the
  // chains still idle. A slot with no idle chain waits for one; slots that pass meanwhile are not
  // dropped but started as soon as chains free up, each timed from its slot (no coordinated
  // omission: a stall shows in the latencies, and a rate the nodes cannot sustain shows as
  // achieved ops/s below the rate).
  void Pace() {
    const auto slot = std::chrono::duration_cast<SteadyClock::duration>(
        std::chrono::duration<double>(1.0 / rate_));
    SteadyClock::time_point next = start_;
    while (true) {
      std::this_thread::sleep_until(std::min(next, end_));
      int chain = -1;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !idle_.empty() || SteadyClock::now() >= end_;
        };
        while (!ready()) {
          chain_idle_.AwaitWithTimeout(&mu_, absl::Condition(&ready), absl::Milliseconds(10));
        }
        if (SteadyClock::now() >= end_) {
          pacing_done_ = true;
          active_chains_ -= static_cast<int>(idle_.size());
          idle_.clear();
          if (active_chains_ == 0) chains_ended_.Notify();
          return;
        }
        chain = idle_.front();
        idle_.pop_front();
      }
      StartChain(chain, next);
      next += slot;
    }
  }

  void RecordLocked(const OpResult& result, SteadyClock::duration latency)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool not_found_read =
        result.kind == OpKind::kRead && result.code == absl::StatusCode::kNotFound;
    if (result.code != absl::StatusCode::kOk && !not_found_read) {
      ++stats_.errors[absl::StatusCodeToString(result.code)];
      return;
    }
    ++stats_.ops;
    if (not_found_read) ++stats_.reads_not_found;
    switch (result.kind) {
      case OpKind::kRead:
        ++stats_.reads;
        break;
      case OpKind::kWrite:
        ++stats_.writes;
        break;
      case OpKind::kDelete:
        ++stats_.deletes;
        break;
      case OpKind::kPing:
        ++stats_.pings;
        break;
    }
    const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count();
    stats_.latency_ns.Record(nanos > 0 ? static_cast<uint64_t>(nanos) : 0);
  }

  void EndChain() {
    absl::MutexLock lock(&mu_);
    if (--active_chains_ == 0) chains_ended_.Notify();
  }

  bool AllChainsEnded() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_chains_ == 0; }

  void PrintProgressLocked(const LoopOptions& options, SteadyClock::time_point now,
                           uint64_t interval_ops, double interval_seconds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    std::string line = absl::StrFormat("kvbench: %s: %.0fs: %.0f ops/s", options.label, elapsed,
                                       interval_seconds > 0 ? interval_ops / interval_seconds : 0);
    if (options.expected_ops > 0) {
      absl::StrAppend(&line, absl::StrFormat(" (%d/%d done)", completed_, options.expected_ops));
    } else if (now < measure_start_ + std::chrono::milliseconds(100)) {
      absl::StrAppend(&line, " (warmup)");
    } else if (now < end_) {
      const double measured = std::chrono::duration<double>(now - measure_start_).count();
      absl::StrAppend(
          &line, absl::StrFormat(", %.0f ops/s so far, %d errors",
                                 measured > 0 ? stats_.ops / measured : 0, stats_.error_count()));
    } else {
      absl::StrAppend(&line, " (draining outstanding requests)");
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }

  OpSource& source_;
  const SteadyClock::time_point start_;
  const SteadyClock::time_point measure_start_;
  const SteadyClock::time_point end_;
  const double rate_;  // ops/s; 0: no pacing
  std::thread pacer_;

  absl::Mutex mu_;
  // Waits on the monotonic clock (storage/steady_timer.h): a step of the wall clock during a run
  // must not stop the pacer or the progress lines. Notified, under mu_, when a chain goes idle
  // (the pacer waits for one) and when the last chain ends (WaitForChains).
  SteadyCondition chain_idle_;
  SteadyCondition chains_ended_;
  std::deque<int> idle_ ABSL_GUARDED_BY(mu_);  // chains waiting for a slot (paced only)
  bool pacing_done_ ABSL_GUARDED_BY(mu_) = false;
  int active_chains_ ABSL_GUARDED_BY(mu_);
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  SteadyClock::time_point last_completion_ ABSL_GUARDED_BY(mu_) = start_;
  PhaseStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

uint64_t PhaseStats::error_count() const {
  uint64_t total = 0;
  for (const auto& [code, count] : errors) total += count;
  return total;
}

void PhaseStats::MergeFrom(const PhaseStats& other) {
  latency_ns.Merge(other.latency_ns);
  ops += other.ops;
  reads += other.reads;
  writes += other.writes;
  deletes += other.deletes;
  pings += other.pings;
  reads_not_found += other.reads_not_found;
  for (const auto& [code, count] : other.errors) errors[code] += count;
  seconds += other.seconds;
}

PhaseStats RunClosedLoop(OpSource& source, const LoopOptions& options) {
  auto state = std::make_shared<LoopState>(source, options);
  if (options.rate > 0 && options.duration != absl::InfiniteDuration()) {
    state->StartPacedChains(options.concurrency);
  } else {
    for (int chain = 0; chain < options.concurrency; ++chain) state->StartChain(chain);
  }
  state->WaitForChains(options);
  state->JoinPacer();
  return state->TakeStats();
}

}  // namespace kv::bench

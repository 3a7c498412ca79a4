#include "tests/sim/sim_loop.h"

#include <algorithm>
#include <cstdio>

namespace kv::sim {

void Fingerprint::Add(absl::string_view bytes) {
  Add(static_cast<uint64_t>(bytes.size()));
  for (char c : bytes) {
    hash_ ^= static_cast<unsigned char>(c);
    hash_ *= 0x100000001b3ULL;
  }
}

void Fingerprint::Add(uint64_t value) {
  for (int i = 0; i < 8; ++i) {
    hash_ ^= (value >> (8 * i)) & 0xff;
    hash_ *= 0x100000001b3ULL;
  }
}

SimLoop::SimLoop(uint64_t seed) : rng_(seed) {}

bool SimLoop::Chance(double p) {
  if (p <= 0) return false;
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p;
}

int64_t SimLoop::UniformInt(int64_t lo, int64_t hi) {
  if (hi <= lo) return lo;
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
}

absl::Duration SimLoop::UniformDuration(absl::Duration lo, absl::Duration hi) {
  return absl::Microseconds(
      UniformInt(absl::ToInt64Microseconds(lo), absl::ToInt64Microseconds(hi)));
}

void SimLoop::Post(absl::Duration delay, std::function<void()> fn, Guard guard,
                   absl::string_view kind, int endpoint, absl::string_view key) {
  delay = std::max(delay, absl::ZeroDuration());
  queue_.emplace(
      std::make_pair(now_ + delay, next_seq_++),
      Event{std::move(fn), std::move(guard), std::string(kind), endpoint, std::string(key)});
}

bool SimLoop::RunOne() {
  if (queue_.empty()) return false;
  auto it = queue_.begin();
  now_ = it->first.first;
  Event event = std::move(it->second);
  queue_.erase(it);
  if (event.guard && !*event.guard) return true;  // its incarnation died
  ++events_run_;
  trace_.Add(static_cast<uint64_t>(absl::ToUnixMicros(now_)));
  trace_.Add(event.kind);
  trace_.Add(static_cast<uint64_t>(event.endpoint));
  trace_.Add(event.key);
  event.fn();
  return true;
}

void SimLoop::RunUntil(absl::Time until) {
  while (!queue_.empty() && queue_.begin()->first.first <= until) RunOne();
  now_ = std::max(now_, until);
}

bool SimLoop::RunUntil(const std::function<bool()>& done, absl::Time deadline) {
  while (!done()) {
    if (queue_.empty() || queue_.begin()->first.first > deadline) {
      now_ = std::max(now_, deadline);
      return done();
    }
    RunOne();
  }
  return true;
}

void SimLoop::Log(absl::string_view line) const {
  if (!verbose_) return;
  std::fprintf(stderr, "[sim %12.6fs] %.*s\n", absl::ToDoubleSeconds(now_ - Start()),
               static_cast<int>(line.size()), line.data());
}

void SimExecutor::Schedule(std::function<void()> fn) {
  loop_->Post(absl::ZeroDuration(), std::move(fn), guard_, "exec", endpoint_);
}

void SimScheduler::RunAfter(absl::Duration delay, std::function<void()> fn) {
  loop_->Post(delay, std::move(fn), guard_, "timer", endpoint_);
}

}  // namespace kv::sim

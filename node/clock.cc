#include "node/clock.h"

#include <chrono>

#include "storage/steady_timer.h"

namespace kv {

absl::Time SystemClock::Now() const { return absl::FromChrono(std::chrono::system_clock::now()); }

SystemClock* SystemClock::Get() {
  // Never destroyed: background threads may still read the clock during process exit.
  static SystemClock* const clock = new SystemClock();
  return clock;
}

absl::Time SteadyClock::Now() const { return SteadyNow(); }

SteadyClock* SteadyClock::Get() {
  static SteadyClock* const clock = new SteadyClock();  // never destroyed, as SystemClock
  return clock;
}

}  // namespace kv

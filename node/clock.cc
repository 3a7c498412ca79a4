#include "node/clock.h"

namespace kv {

SystemClock* SystemClock::Get() {
  // Never destroyed: background threads may still read the clock during process exit.
  static SystemClock* const clock = new SystemClock();
  return clock;
}

}  // namespace kv

#include "node/scheduler.h"

#include <utility>

namespace kv {

void TimerScheduler::RunAfter(absl::Duration delay, std::function<void()> fn) {
  timer_.RunAfter(delay, [executor = executor_, fn = std::move(fn)]() mutable {
    executor->Schedule(std::move(fn));
  });
}

}  // namespace kv

#include "node/failure_detector.h"

#include <algorithm>
#include <utility>

namespace kv {

absl::string_view LivenessName(Liveness liveness) {
  switch (liveness) {
    case Liveness::kUnknown:
      return "UNKNOWN";
    case Liveness::kUp:
      return "UP";
    case Liveness::kDown:
      return "DOWN";
  }
  return "UNKNOWN";
}

void FailureDetector::Watch(absl::string_view member_id, absl::Time now) {
  auto it = members_.find(member_id);
  if (it != members_.end()) return;
  State state;
  state.watched_since = now;
  members_.emplace(std::string(member_id), state);
}

void FailureDetector::RestartUnheard(absl::Time now) {
  for (auto& [id, state] : members_) {
    if (state.last_heard == absl::InfinitePast()) state.watched_since = now;
  }
}

void FailureDetector::Heard(absl::string_view member_id, absl::Time now) {
  Watch(member_id, now);
  auto it = members_.find(member_id);
  it->second.last_heard = now;
  Set(it->first, &it->second, Liveness::kUp);
}

void FailureDetector::Evaluate(absl::Time now) {
  for (auto& [id, state] : members_) {
    const absl::Time since = std::max(state.watched_since, state.last_heard);
    if (now - since >= timeout_) Set(id, &state, Liveness::kDown);
  }
}

void FailureDetector::Forget(absl::string_view member_id) {
  auto it = members_.find(member_id);
  if (it != members_.end()) members_.erase(it);
}

Liveness FailureDetector::Get(absl::string_view member_id) const {
  auto it = members_.find(member_id);
  return it == members_.end() ? Liveness::kUnknown : it->second.liveness;
}

absl::Time FailureDetector::LastHeard(absl::string_view member_id) const {
  auto it = members_.find(member_id);
  return it == members_.end() ? absl::InfinitePast() : it->second.last_heard;
}

absl::Time FailureDetector::SilentSince(absl::string_view member_id) const {
  auto it = members_.find(member_id);
  if (it == members_.end()) return absl::InfinitePast();
  return std::max(it->second.watched_since, it->second.last_heard);
}

std::vector<FailureDetector::Transition> FailureDetector::TakeTransitions() {
  return std::exchange(transitions_, {});
}

void FailureDetector::Set(const std::string& member_id, State* state, Liveness to) {
  if (state->liveness == to) return;
  transitions_.push_back(Transition{member_id, state->liveness, to});
  state->liveness = to;
}

}  // namespace kv

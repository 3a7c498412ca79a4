#include "tests/sim/sim_membership.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kv::sim {
namespace {

// The spread of gossip: how long a new layout takes to reach a node.
constexpr absl::Duration kMaxGossipDelay = absl::Milliseconds(1500);
// MembershipChanger's poll of the sources' progress.
constexpr absl::Duration kPoll = absl::Milliseconds(200);

}  // namespace

absl::string_view MembershipChangeName(MembershipChange change) {
  switch (change) {
    case MembershipChange::kNone:
      return "none";
    case MembershipChange::kJoin:
      return "join";
    case MembershipChange::kLeave:
      return "leave";
    case MembershipChange::kRemoveDown:
      return "remove";
    case MembershipChange::kJoinThenRemove:
      return "join-remove";
    case MembershipChange::kLeaveThenRemove:
      return "leave-remove";
  }
  return "?";
}

MembershipDriver::MembershipDriver(SimLoop* loop, SimCluster* cluster, MembershipChange change)
    : loop_(loop), cluster_(cluster), change_(change) {}

void MembershipDriver::Start(absl::Time latest) {
  if (change_ == MembershipChange::kNone) return;
  cluster_->SetHandoffListener([this](int node, const HandoffProgress& progress) {
    OnHandoff(node, progress.layout_version, progress.keys, progress.done);
  });
  const absl::Duration window = latest - loop_->Now();
  loop_->Post(
      loop_->UniformDuration(window / 10, window / 2), [this] { Begin(); }, nullptr, "membership");
}

void MembershipDriver::Begin() {
  const ClusterLayout current = cluster_->layout();
  absl::StatusOr<ClusterLayout> transition;
  if (change_ == MembershipChange::kJoin || change_ == MembershipChange::kJoinThenRemove) {
    int joiner = -1;
    for (int node = 0; node < cluster_->num_nodes(); ++node) {
      if (!current.Contains(cluster_->NodeId(node))) joiner = node;
    }
    if (joiner < 0) {
      error_ = absl::FailedPreconditionError("a join needs a node outside the layout");
      return;
    }
    Member member;
    member.id = cluster_->NodeId(joiner);
    member.address = absl::StrCat("sim-", member.id, ":7000");
    transition = PlanJoin(current, member);
  } else {
    const std::vector<int> members = cluster_->MembersOf(current);
    leaving_ = members[loop_->UniformInt(0, static_cast<int64_t>(members.size()) - 1)];
    if (change_ != MembershipChange::kRemoveDown) {
      transition = PlanLeave(current, cluster_->NodeId(leaving_));
    } else {
      loop_->Log(absl::StrCat("MEMBERSHIP ", cluster_->NodeId(leaving_), " is down for good"));
      cluster_->Remove(leaving_);
      transition = PlanRemoveDown(current, cluster_->NodeId(leaving_));
    }
  }
  if (!transition.ok()) {
    error_ = transition.status();
    return;
  }
  transition_ = *std::move(transition);
  final_ = CompleteTransition(transition_);
  stats_.change = transition_.change;
  stats_.started = loop_->Now();
  crashes_at_start_ = cluster_->crashes();
  loop_->Log(absl::StrCat("MEMBERSHIP commit v", transition_.version, ": ", transition_.change));
  cluster_->SetClusterLayout(transition_);
  for (int node = 0; node < cluster_->num_nodes(); ++node) {
    Deliver(node, transition_, loop_->UniformDuration(absl::ZeroDuration(), kMaxGossipDelay));
  }
  if (change_ == MembershipChange::kJoinThenRemove ||
      change_ == MembershipChange::kLeaveThenRemove) {
    loop_->Post(
        loop_->UniformDuration(absl::Milliseconds(50), kMaxGossipDelay),
        [this] { DieDuringHandoff(); }, nullptr, "membership-death");
  }
  // In some runs a node taking part in the change crashes while the handoff runs.
  if (loop_->Chance(0.5)) {
    const std::vector<int> involved = cluster_->MembersOf(transition_);
    const int victim = involved[loop_->UniformInt(0, static_cast<int64_t>(involved.size()) - 1)];
    loop_->Post(
        loop_->UniformDuration(absl::Milliseconds(100), kMaxGossipDelay + absl::Milliseconds(500)),
        [this, victim] { CrashDuringHandoff(victim); }, nullptr, "membership-crash", victim);
  }
}

void MembershipDriver::Deliver(int node, ClusterLayout layout, absl::Duration delay) {
  loop_->Post(
      delay,
      [this, node, layout] {
        if (cluster_->IsRemoved(node)) return;
        if (!cluster_->InstallLayout(node, layout)) {
          // Down: gossip reaches it once it is back.
          Deliver(node, layout, loop_->UniformDuration(absl::Milliseconds(100), kPoll * 2));
          return;
        }
        if (node == leaving_ && layout.version == final_.version) {
          // kvnode --exit_after_leave: it stops a few gossip rounds after it learns it left.
          loop_->Post(
              loop_->UniformDuration(absl::Milliseconds(300), absl::Seconds(1)),
              [this, node] { cluster_->Remove(node); }, nullptr, "membership-stop", node);
        }
      },
      nullptr, "layout", node);
}

void MembershipDriver::OnHandoff(int node, uint64_t version, uint64_t keys, bool done) {
  if (version != transition_.version || completing_) return;
  keys_sent_[node] = keys;
  if (!done) return;
  done_sources_.insert(node);
  loop_->Log(absl::StrCat("MEMBERSHIP ", cluster_->NodeId(node), " handoff done for v", version,
                          ": ", keys, " records"));
  for (int source : cluster_->MembersOf(ClusterLayout{0, transition_.members, {}, "", {}})) {
    if (transition_.NamesDown(cluster_->NodeId(source))) continue;  // hands off nothing
    if (done_sources_.count(source) == 0) return;
  }
  completing_ = true;
  loop_->Post(
      loop_->UniformDuration(absl::ZeroDuration(), kPoll), [this] { Complete(); }, nullptr,
      "membership");
}

void MembershipDriver::Complete() {
  stats_.completed = loop_->Now();
  stats_.crashes_during_handoff = cluster_->crashes() - crashes_at_start_;
  for (const auto& [node, keys] : keys_sent_) stats_.handoff_keys += keys;
  loop_->Log(
      absl::StrCat("MEMBERSHIP commit v", final_.version, ": ", transition_.change, " complete"));
  cluster_->SetClusterLayout(final_);
  for (int node = 0; node < cluster_->num_nodes(); ++node) {
    Deliver(node, final_, loop_->UniformDuration(absl::ZeroDuration(), kMaxGossipDelay));
  }
}

void MembershipDriver::CrashDuringHandoff(int node) {
  if (completing_ || !cluster_->IsUp(node) || !cluster_->AllUp()) return;
  if (cluster_->CrashTooSoon()) return;
  loop_->Log(absl::StrCat("MEMBERSHIP crash ", cluster_->NodeId(node), " during the handoff"));
  cluster_->Crash(node);
  ++stats_.handoff_crashes;
  loop_->Post(
      loop_->UniformDuration(absl::Milliseconds(200), absl::Seconds(2)),
      [this, node] {
        if (cluster_->IsUp(node) || cluster_->IsRemoved(node)) return;
        if (absl::Status s = cluster_->Restart(node); !s.ok()) error_ = s;
      },
      nullptr, "restart", node);
}

void MembershipDriver::DieDuringHandoff() {
  if (completing_) return;  // the change ended first: a plain join or leave
  // Those the change would wait for forever once gone: sources not done, and gainers (the
  // sources' streams to them would never end). Not the last member of either list.
  std::vector<int> candidates;
  for (int node : cluster_->MembersOf(transition_)) {
    const std::string& id = cluster_->NodeId(node);
    if (cluster_->IsRemoved(node) || transition_.NamesDown(id) || done_sources_.count(node) > 0) {
      continue;
    }
    if (PlanRemoveDown(transition_, id).ok()) candidates.push_back(node);
  }
  if (candidates.empty()) return;
  const int victim = candidates[loop_->UniformInt(0, static_cast<int64_t>(candidates.size()) - 1)];
  loop_->Log(absl::StrCat("MEMBERSHIP ", cluster_->NodeId(victim),
                          " is down for good during the handoff"));
  cluster_->Remove(victim);
  // The operator removes it once the failure detector has it down.
  loop_->Post(
      loop_->UniformDuration(absl::Milliseconds(200), absl::Seconds(2)),
      [this, victim] { RemoveDuringHandoff(victim); }, nullptr, "membership");
}

void MembershipDriver::RemoveDuringHandoff(int node) {
  if (completing_) {
    // Every source finished before the member died (a joiner that had received everything):
    // the change completes with it, and it is removed from the completed layout (kvnode refuses
    // a remove during the transition then, or its agreement loses to the completion).
    if (stats_.completed == absl::InfiniteFuture()) {
      loop_->Post(
          kPoll, [this, node] { RemoveDuringHandoff(node); }, nullptr, "membership");
      return;
    }
    loop_->Log(absl::StrCat("MEMBERSHIP ", cluster_->NodeId(node),
                            " is removed after the change it died in completed"));
    completing_ = false;
    stats_.completed = absl::InfiniteFuture();
    absl::StatusOr<ClusterLayout> removal = PlanRemoveDown(final_, cluster_->NodeId(node));
    if (!removal.ok()) {
      error_ = removal.status();
      return;
    }
    Commit(*std::move(removal));
    return;
  }
  absl::StatusOr<ClusterLayout> removal = PlanRemoveDown(transition_, cluster_->NodeId(node));
  if (!removal.ok()) {
    error_ = removal.status();
    return;
  }
  Commit(*std::move(removal));
}

void MembershipDriver::Commit(ClusterLayout removal) {
  const std::string before = stats_.change;
  transition_ = std::move(removal);
  final_ = CompleteTransition(transition_);
  // A remove during the transition says both; one after it is a change of its own.
  stats_.change = absl::StartsWith(transition_.change, before)
                      ? transition_.change
                      : absl::StrCat(before, ", then ", transition_.change);
  done_sources_.clear();
  keys_sent_.clear();
  loop_->Log(absl::StrCat("MEMBERSHIP commit v", transition_.version, ": ", transition_.change));
  cluster_->SetClusterLayout(transition_);
  for (int n = 0; n < cluster_->num_nodes(); ++n) {
    Deliver(n, transition_, loop_->UniformDuration(absl::ZeroDuration(), kMaxGossipDelay));
  }
}

bool MembershipDriver::Done() const {
  if (change_ == MembershipChange::kNone) return true;
  if (stats_.completed == absl::InfiniteFuture()) return false;
  for (int node = 0; node < cluster_->num_nodes(); ++node) {
    if (cluster_->IsRemoved(node)) continue;
    if (node == leaving_) return false;  // not stopped yet
    if (cluster_->NodeLayout(node).version < final_.version) return false;
  }
  return true;
}

}  // namespace kv::sim

#include "node/cluster_layout.h"

#include <algorithm>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kv {
namespace {

bool HasId(const std::vector<Member>& members, absl::string_view id) {
  return std::any_of(members.begin(), members.end(), [&](const Member& m) { return m.id == id; });
}

// The fraction of the 64-bit ring between positions `from` (exclusive) and `to` (inclusive),
// walking clockwise.
double ArcFraction(uint64_t from, uint64_t to) {
  const uint64_t length = to - from;  // wraps modulo 2^64 as intended
  return static_cast<double>(length) / 18446744073709551616.0;
}

}  // namespace

bool ClusterLayout::Contains(absl::string_view id) const {
  return HasId(members, id) || HasId(next, id);
}

bool ClusterLayout::IsOwner(absl::string_view id) const { return HasId(members, id); }

bool ClusterLayout::IsNextOwner(absl::string_view id) const { return HasId(next, id); }

bool ClusterLayout::NamesDown(absl::string_view id) const {
  return std::find(down.begin(), down.end(), id) != down.end();
}

std::vector<Member> SortedById(std::vector<Member> members) {
  std::stable_sort(members.begin(), members.end(),
                   [](const Member& a, const Member& b) { return a.id < b.id; });
  return members;
}

bool SameMembers(const std::vector<Member>& a, const std::vector<Member>& b) {
  if (a.size() != b.size()) return false;
  if (a == b) return true;
  return SortedById(a) == SortedById(b);
}

bool SameLayout(const ClusterLayout& a, const ClusterLayout& b) {
  return a.version == b.version && SameMembers(a.members, b.members) &&
         SameMembers(a.next, b.next) && a.change == b.change && a.down == b.down;
}

std::string DescribeLayout(const ClusterLayout& layout) {
  auto ids = [](const std::vector<Member>& members) {
    return absl::StrJoin(members, ",",
                         [](std::string* out, const Member& m) { absl::StrAppend(out, m.id); });
  };
  std::string text = absl::StrCat("version ", layout.version, ": owners ", ids(layout.members));
  if (layout.in_transition()) {
    absl::StrAppend(&text, " -> ", ids(layout.next), " (", layout.change, ")");
  }
  if (!layout.down.empty())
    absl::StrAppend(&text, " [down: ", absl::StrJoin(layout.down, ","), "]");
  return text;
}

absl::Status CheckPurgeOnLayout(const ClusterLayout& layout, uint64_t confirmed_version,
                                absl::string_view self_id) {
  if (layout.in_transition()) {
    return absl::FailedPreconditionError(
        absl::StrCat(self_id, " does not purge tombstones while layout version ", layout.version,
                     " (", layout.change, ") is in transition: a key has owners in two rings"));
  }
  if (confirmed_version != 0 && confirmed_version != layout.version) {
    return absl::FailedPreconditionError(absl::StrCat(
        self_id, " does not purge: the record was confirmed on the ring of layout version ",
        confirmed_version, " and this node has version ", layout.version,
        " (the key's replicas may differ)"));
  }
  return absl::OkStatus();
}

absl::Status CheckLayout(const ClusterLayout& layout) {
  if (layout.version == 0 || layout.version > kMaxLayoutVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout version ", layout.version, " is not in 1..", kMaxLayoutVersion));
  }
  if (layout.members.empty()) return absl::InvalidArgumentError("the layout has no members");
  if (layout.change.size() > kMaxLayoutChangeBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the layout's change text is ",
                                                   layout.change.size(), " bytes, over ",
                                                   kMaxLayoutChangeBytes));
  }
  // Ids come from a peer or from disk here: shown escaped and cut.
  auto shown = [](absl::string_view id) { return absl::CHexEscape(id.substr(0, 64)); };
  for (const std::vector<Member>* list : {&layout.members, &layout.next}) {
    const char* name = list == &layout.members ? "members" : "next";
    std::set<absl::string_view> ids;
    for (const Member& m : *list) {
      if (absl::Status valid = CheckMember(m); !valid.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("the layout's ", name,
                                                       " list has a bad member '", shown(m.id),
                                                       "': ", valid.message()));
      }
      if (!ids.insert(m.id).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("the layout's ", name, " list names '", shown(m.id), "' twice"));
      }
    }
  }
  if (!layout.down.empty() && !layout.in_transition()) {
    return absl::InvalidArgumentError("the layout names members down outside a transition");
  }
  for (size_t i = 0; i < layout.down.size(); ++i) {
    const std::string& id = layout.down[i];
    if (i > 0 && layout.down[i - 1] >= id) {
      return absl::InvalidArgumentError(
          "the layout's down list is not sorted or names a member twice");
    }
    if (!layout.IsOwner(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the layout names '", shown(id), "' down, which is not a member"));
    }
    if (layout.IsNextOwner(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the layout names '", shown(id), "' down and keeps it as an owner"));
    }
  }
  if (!layout.down.empty() && layout.down.size() >= layout.members.size()) {
    return absl::InvalidArgumentError("the layout names every member down");
  }
  return absl::OkStatus();
}

absl::StatusOr<MovementPlan> PlanMovement(const std::vector<Member>& before,
                                          const std::vector<Member>& after, size_t n) {
  absl::StatusOr<HashRing> old_ring = HashRing::Build(before);
  if (!old_ring.ok()) return old_ring.status();
  absl::StatusOr<HashRing> new_ring = HashRing::Build(after);
  if (!new_ring.ok()) return new_ring.status();
  // Every key between two consecutive positions of the merged point set has the same
  // preference list in both rings (it is decided by the first point at or after the key).
  std::vector<uint64_t> points = old_ring->PointHashes();
  const std::vector<uint64_t> more = new_ring->PointHashes();
  points.insert(points.end(), more.begin(), more.end());
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());

  std::map<std::string, MemberShare> shares;
  for (const Member& m : before) shares[m.id].id = m.id;
  for (const Member& m : after) shares[m.id].id = m.id;
  std::map<std::pair<std::string, std::string>, double> moves;
  const size_t replicas = std::min(n, std::max(before.size(), after.size()));
  double moved_slots = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    const uint64_t prev = points[i == 0 ? points.size() - 1 : i - 1];
    const double w = points.size() == 1 ? 1.0 : ArcFraction(prev, points[i]);
    std::vector<const Member*> was = old_ring->PreferenceListAt(points[i], n);
    std::vector<const Member*> will = new_ring->PreferenceListAt(points[i], n);
    if (!was.empty()) shares[was[0]->id].primary_before += w;
    if (!will.empty()) shares[will[0]->id].primary_after += w;
    std::vector<std::string> lost, gained;
    for (const Member* m : was) {
      shares[m->id].replica_before += w;
      if (!HasId(after, m->id) ||
          std::none_of(will.begin(), will.end(), [&](const Member* x) { return x->id == m->id; })) {
        lost.push_back(m->id);
      }
    }
    for (const Member* m : will) {
      shares[m->id].replica_after += w;
      if (std::none_of(was.begin(), was.end(), [&](const Member* x) { return x->id == m->id; })) {
        gained.push_back(m->id);
      }
    }
    moved_slots += w * static_cast<double>(gained.size());
    // Pair losers with gainers in preference order; a gainer without a loser (the ring grew
    // past N) receives from the first old replica.
    for (size_t g = 0; g < gained.size(); ++g) {
      std::string from = g < lost.size() ? lost[g] : (was.empty() ? "" : was[0]->id);
      moves[{from, gained[g]}] += w;
    }
  }
  MovementPlan plan;
  plan.moved_fraction = replicas == 0 ? 0 : moved_slots / static_cast<double>(replicas);
  for (const auto& [pair, w] : moves) {
    plan.moves.push_back(OwnershipMove{pair.first, pair.second,
                                       replicas == 0 ? 0 : w / static_cast<double>(replicas)});
  }
  for (auto& [id, share] : shares) plan.shares.push_back(share);
  return plan;
}

absl::StatusOr<ClusterLayout> PlanJoin(const ClusterLayout& current, const Member& joining) {
  if (current.in_transition()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a membership change (", current.change, ") is still running at layout version ",
        current.version, "; wait until its operation ends"));
  }
  if (current.Contains(joining.id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", joining.id, " is already a member (layout version ", current.version, ")"));
  }
  ClusterLayout next;
  next.version = current.version + 1;
  next.members = current.members;
  next.next = current.members;
  next.next.push_back(joining);
  next.next = SortedById(std::move(next.next));
  next.change = absl::StrCat("join ", joining.id);
  return next;
}

absl::StatusOr<ClusterLayout> PlanLeave(const ClusterLayout& current, absl::string_view id) {
  if (current.in_transition()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a membership change (", current.change, ") is still running at layout version ",
        current.version, "; wait until its operation ends"));
  }
  if (!current.IsOwner(id)) {
    return absl::NotFoundError(
        absl::StrCat("node ", id, " is not a member (layout version ", current.version, ")"));
  }
  if (current.members.size() == 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", id, " is the only member; a cluster cannot become empty"));
  }
  ClusterLayout next;
  next.version = current.version + 1;
  next.members = current.members;
  for (const Member& m : current.members) {
    if (m.id != id) next.next.push_back(m);
  }
  next.change = absl::StrCat("leave ", id);
  return next;
}

absl::StatusOr<ClusterLayout> PlanRemoveDown(const ClusterLayout& current, absl::string_view id) {
  if (!current.in_transition()) {
    absl::StatusOr<ClusterLayout> next = PlanLeave(current, id);
    if (!next.ok()) return next.status();
    next->down.push_back(std::string(id));
    next->change = absl::StrCat("remove ", id, " (down)");
    return next;
  }
  // During a transition: the same transition without `id` among the next owners, and named
  // down if it is a current owner (a source nobody may wait for). It takes version + 1, the
  // running transition's completion's: the members agree on one of the two.
  if (!current.Contains(id)) {
    return absl::NotFoundError(absl::StrCat("node ", id, " is not in the layout (version ",
                                            current.version, ": ", current.change, ")"));
  }
  if (current.NamesDown(id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", id, " is already being removed (layout version ", current.version, ")"));
  }
  ClusterLayout next;
  next.version = current.version + 1;
  next.members = current.members;
  for (const Member& m : current.next) {
    if (m.id != id) next.next.push_back(m);
  }
  if (next.next.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", id, " is the only next owner; a cluster cannot become empty"));
  }
  next.down = current.down;
  if (current.IsOwner(id)) {
    next.down.insert(std::lower_bound(next.down.begin(), next.down.end(), id), std::string(id));
    if (next.down.size() >= next.members.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("every current owner would be down (", absl::StrJoin(next.down, ","),
                       "): nobody is left to hand off their keys"));
    }
  }
  next.change = absl::StrCat(current.change, "; remove ", id, " (down)");
  if (next.change.size() > kMaxLayoutChangeBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("the change text would pass ", kMaxLayoutChangeBytes,
                     " bytes; let the running change complete first"));
  }
  return next;
}

bool IsRemovalDuring(const ClusterLayout& transition, const ClusterLayout& layout) {
  if (!transition.in_transition() || !layout.in_transition() ||
      layout.version != transition.version + 1 ||
      !SameMembers(layout.members, transition.members)) {
    return false;
  }
  for (const Member& m : layout.next) {
    if (!transition.IsNextOwner(m.id)) return false;
  }
  for (const std::string& id : transition.down) {
    if (!layout.NamesDown(id)) return false;
  }
  // Someone is removed: a next owner fewer, or one more member down.
  return layout.next.size() < transition.next.size() || layout.down.size() > transition.down.size();
}

ClusterLayout CompleteTransition(const ClusterLayout& transition) {
  ClusterLayout done;
  done.version = transition.version + 1;
  done.members = transition.next.empty() ? transition.members : transition.next;
  return done;
}

}  // namespace kv

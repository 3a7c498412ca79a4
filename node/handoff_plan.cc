#include "node/handoff_plan.h"

#include <algorithm>
#include <map>
#include <optional>

namespace kv {

KeyHandoff PlanKeyHandoff(const Placement& placement, absl::string_view key, size_t n) {
  KeyHandoff plan;
  if (placement.next() == nullptr) return plan;
  plan.old_owners = placement.current().PreferenceList(key, n);
  plan.new_owners = placement.next()->PreferenceList(key, n);
  const std::vector<const Member*>& was = plan.old_owners;
  // A member down for good streams nothing: the next old owner does it in its place.
  const ClusterLayout& layout = placement.layout();
  for (const Member* m : was) {
    if (layout.NamesDown(m->id)) {
      plan.owner_down = true;
    } else if (plan.source == nullptr) {
      plan.source = m;
    }
  }
  for (const Member* m : plan.new_owners) {
    if (std::none_of(was.begin(), was.end(), [&](const Member* w) { return w->id == m->id; })) {
      plan.gainers.push_back(m);
    }
  }
  return plan;
}

std::vector<const Member*> KeyHandoff::CompareWith(absl::string_view self_id) const {
  auto has = [&](const std::vector<const Member*>& list, absl::string_view id) {
    return std::any_of(list.begin(), list.end(), [&](const Member* m) { return m->id == id; });
  };
  std::vector<const Member*> out;
  // A copy on a node that is not an old owner is a stray (it no longer owned the key when the
  // copy came): no tombstone purge asked about it, and passing it on could bring a deleted key
  // back (C8). Every acknowledged write is on old owners.
  if (!has(old_owners, self_id)) return out;
  const bool designated = source != nullptr && source->id == self_id;
  if (owner_down) {
    for (const Member* m : new_owners) {
      if (m->id != self_id && !(designated && has(gainers, m->id))) out.push_back(m);
    }
    return out;
  }
  if (!designated) out = gainers;
  if (!has(new_owners, self_id)) {  // an old owner that loses the key
    for (const Member* m : new_owners) {
      if (!has(out, m->id)) out.push_back(m);
    }
  }
  return out;
}

bool AllSourcesStreamed(const ClusterLayout& transition, const std::vector<MemberView>& members) {
  std::map<absl::string_view, const HandoffProgress*> progress;
  for (const MemberView& view : members) {
    progress[view.entry.member.id] = &view.entry.handoff;
  }
  for (const Member& source : transition.members) {
    if (transition.NamesDown(source.id)) continue;
    auto it = progress.find(source.id);
    if (it == progress.end() || !it->second->Streamed(transition.version)) return false;
  }
  return true;
}

absl::StatusOr<std::vector<std::string>> KeysNotMatching(const MerkleIndex& index,
                                                         absl::Span<const KeyDigest> digests) {
  std::vector<std::string> keys;
  for (const KeyDigest& digest : digests) {
    absl::StatusOr<std::optional<uint64_t>> ours = index.StoredDigest(digest.key);
    if (!ours.ok()) return ours.status();
    if (*ours != digest.digest) keys.push_back(digest.key);
  }
  return keys;
}

}  // namespace kv

#include "node/handoff_plan.h"

#include <algorithm>
#include <map>
#include <optional>

namespace kv {

KeyHandoff PlanKeyHandoff(const Placement& placement, absl::string_view key, size_t n) {
  KeyHandoff plan;
  if (placement.next() == nullptr) return plan;
  const std::vector<const Member*> was = placement.current().PreferenceList(key, n);
  if (!was.empty()) plan.source = was.front();
  for (const Member* m : placement.next()->PreferenceList(key, n)) {
    if (std::none_of(was.begin(), was.end(), [&](const Member* w) { return w->id == m->id; })) {
      plan.gainers.push_back(m);
    }
  }
  return plan;
}

bool AllSourcesStreamed(const ClusterLayout& transition, const std::vector<MemberView>& members) {
  std::map<absl::string_view, const HandoffProgress*> progress;
  for (const MemberView& view : members) {
    progress[view.entry.member.id] = &view.entry.handoff;
  }
  for (const Member& source : transition.members) {
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

// The pure pieces of a membership transition's handoff (node/handoff.h): which members gain a
// key and which old owner streams it, when phase 1 is over everywhere, and the new owner's side
// of the phase 2 digest comparison.
//
// Everything here is deterministic: every node computes the same designated source for a key
// from the layout alone, so exactly one source streams each gained key in phase 1.
//
// Functions are thread-safe as far as their arguments are (the store is).
#ifndef KV_NODE_HANDOFF_PLAN_H_
#define KV_NODE_HANDOFF_PLAN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "node/cluster_layout.h"
#include "node/membership.h"
#include "node/merkle_index.h"
#include "node/peer_transport.h"
#include "node/placement.h"

namespace kv {

struct KeyHandoff {
  // Members of the key's new preference list that are not in its old one; empty when the key
  // gains nobody (or outside a transition).
  std::vector<const Member*> gainers;
  // The key's designated source: the first member of its old preference list that the layout
  // does not name down (ClusterLayout::down); null if there is none.
  const Member* source = nullptr;
  // Its old and new preference lists.
  std::vector<const Member*> old_owners;
  std::vector<const Member*> new_owners;
  // An old owner is named down (ClusterLayout::down): it compares nothing, so each other old
  // owner compares with every new owner (see CompareWith).
  bool owner_down = false;

  // Whom `self_id` compares the key's digest with in phase 2: the gainers, unless it is the
  // designated source (it streamed the record to them in phase 1); and, when `self_id` loses
  // the key (an old owner, not a new one: a leaving node, or the owner a joining node replaces),
  // every new owner, so that nothing it holds leaves with it, also when nobody gains the key
  // (a leave that shrinks the cluster to N members or fewer). When an old owner is named down,
  // every new owner but itself (and but the gainers it streamed to, for the designated source):
  // the member down can no longer pass on to the owners that keep the key what only it and
  // `self_id` hold (a write acknowledged by the two of them, its copy for a third owner still in
  // the outbox of the member down). Nobody when `self_id` is not an old owner: its copy is a
  // stray, which must not reach the new owners (PRODUCT.md C8).
  std::vector<const Member*> CompareWith(absl::string_view self_id) const;
};

// The handoff of `key` in `placement`'s transition, with `n` replicas per key.
KeyHandoff PlanKeyHandoff(const Placement& placement, absl::string_view key, size_t n);

// True once every source of `transition` (its current members, except those it names down)
// published, in `members`, that phase 1 of this transition is over for it
// (HandoffProgress::Streamed).
bool AllSourcesStreamed(const ClusterLayout& transition, const std::vector<MemberView>& members);

// The new owner's answer to a phase 2 comparison: the keys of `digests`, in their order, that
// this node has no record of or whose encoded record has another digest
// (MerkleTree::RecordDigest), as its merkle column says (MerkleIndex::StoredDigest, 8 bytes read
// per key rather than the record). Errors: the engine's read error, DATA_LOSS for a malformed
// index entry.
absl::StatusOr<std::vector<std::string>> KeysNotMatching(const MerkleIndex& index,
                                                         absl::Span<const KeyDigest> digests);

}  // namespace kv

#endif  // KV_NODE_HANDOFF_PLAN_H_

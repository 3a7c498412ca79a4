// ClusterLayout: the versioned member set that every node agrees on, and the plans that change
// it (staged join and leave).
//
// A layout is (version, members, next). `members` own the ring now; a non-empty `next` means a
// transition is under way: `next` will own the ring once every current member has handed off the
// keys the new owners gain (node/handoff.h). Layouts spread by gossip and the highest version
// wins, so a layout is never changed in place: a change is a new layout with a greater version.
// A membership change takes two versions: v+1 starts the transition (members = old owners,
// next = new owners), v+2 completes it (members = the new owners, next empty). The removal of a
// member down for good during transition v+1 takes v+2 instead: another transition
// (PlanRemoveDown), which the members agree on against the completion.
//
// While a transition runs, placement is the union of both rings' preference lists
// (node/placement.h), so new-key read-after-write holds throughout.
//
// Plain values and pure functions; thread-compatible.
#ifndef KV_NODE_CLUSTER_LAYOUT_H_
#define KV_NODE_CLUSTER_LAYOUT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "node/ring.h"

namespace kv {

struct ClusterLayout {
  uint64_t version = 0;         // 0: no layout known
  std::vector<Member> members;  // the owners now, sorted by id
  std::vector<Member> next;     // non-empty during a transition: the owners after it
  std::string change;           // what the transition does, e.g. "join n4" (for status)
  // During a transition that removes members that are down for good (PlanRemoveDown): their
  // ids, sorted. They hand off nothing and nobody waits for them: the key's other old owners
  // stream and compare in their place (node/handoff_plan.h). Empty otherwise.
  std::vector<std::string> down;

  bool in_transition() const { return !next.empty(); }
  bool Contains(absl::string_view id) const;     // in members or in next
  bool IsOwner(absl::string_view id) const;      // in members
  bool IsNextOwner(absl::string_view id) const;  // in next
  bool NamesDown(absl::string_view id) const;    // in down
};

// True if `a` and `b` hold the same members (id, address, zone), in any order: members given
// in another order (say each node's --peers listing itself first) make the same ring.
bool SameMembers(const std::vector<Member>& a, const std::vector<Member>& b);
// True if `a` and `b` are the same layout: version, owners and next owners (SameMembers), change
// and down.
bool SameLayout(const ClusterLayout& a, const ClusterLayout& b);
// `members` sorted by id, the order a layout keeps them in.
std::vector<Member> SortedById(std::vector<Member> members);
// "version 3: owners n1,n2,n3 -> n1,n2,n3,n4 (join n4)", for messages.
std::string DescribeLayout(const ClusterLayout& layout);

// Whether member `self_id`, on `layout`, may purge a tombstone confirmed on the ring of layout
// `confirmed_version` (0: not stated, then not compared): FAILED_PRECONDITION, saying why, while
// `layout` is a transition (a key has owners in two rings) or if its version is another.
absl::Status CheckPurgeOnLayout(const ClusterLayout& layout, uint64_t confirmed_version,
                                absl::string_view self_id);

// Bounds on a layout that comes from a peer or from disk. A change raises the version by 2, so
// no cluster comes near kMaxLayoutVersion; a layout above it could never be followed by a newer
// one (and versions are raised without overflow checks).
inline constexpr uint64_t kMaxLayoutVersion = uint64_t{1} << 62;
inline constexpr size_t kMaxLayoutChangeBytes = 1024;

// OK if `layout` may be adopted: its version is 1 to kMaxLayoutVersion, it has members, every
// member of `members` and of `next` is well formed (CheckMember in node/ring.h) and appears once
// in its list, `change` is at most kMaxLayoutChangeBytes, and `down` (sorted, no repeats) names
// only members that are not in `next`, never all of them, and only during a transition. Otherwise
// INVALID_ARGUMENT saying what is wrong. Such a layout can always be placed (node/placement.h).
absl::Status CheckLayout(const ClusterLayout& layout);

// One pair of the plan: `fraction` of all (key, replica) slots move from `from` to `to`.
struct OwnershipMove {
  std::string from;
  std::string to;
  double fraction = 0;
};

struct MemberShare {
  std::string id;
  double primary_before = 0;  // fraction of the key space it is first replica of
  double primary_after = 0;
  double replica_before = 0;  // fraction of the key space it holds a replica of
  double replica_after = 0;
};

// What moving from one member set to another does, computed exactly by walking every arc
// between consecutive vnode positions of both rings.
struct MovementPlan {
  // Fraction of (key, replica) slots whose holder changes: the share of all stored replica data
  // that moves (1/4 when a 4th node joins 3 with N=3).
  double moved_fraction = 0;
  std::vector<OwnershipMove> moves;  // by (from, to)
  std::vector<MemberShare> shares;   // every member of either set, by id
};

absl::StatusOr<MovementPlan> PlanMovement(const std::vector<Member>& before,
                                          const std::vector<Member>& after, size_t n);

// The transition layout (version + 1) that adds `joining`. FAILED_PRECONDITION if a transition
// is already running or the member is already in the layout.
absl::StatusOr<ClusterLayout> PlanJoin(const ClusterLayout& current, const Member& joining);
// The transition layout that removes `id`. FAILED_PRECONDITION during a transition, NOT_FOUND
// for a non-member, FAILED_PRECONDITION when it would leave no member.
absl::StatusOr<ClusterLayout> PlanLeave(const ClusterLayout& current, absl::string_view id);
// The transition layout that removes `id`, a member that is down for good (its disk is lost, or
// it will never come back): as PlanLeave, with `id` in `down`, so that the other owners of its
// keys hand them off in its place. Whether it is really down is the caller's to check.
//
// During a transition (a member that died while a change ran, which would wait for it for good)
// it is that transition, version + 1, without `id` among the next owners and, if `id` is a
// current owner, with it added to `down`; the change text says both. It takes the version of
// the running transition's completion: the members agree on one of them
// (node/layout_reservations.h). NOT_FOUND if `id` is in neither list; FAILED_PRECONDITION if it
// is already down, if no next owner or no current owner that hands off would be left, or if the
// change text would pass kMaxLayoutChangeBytes.
absl::StatusOr<ClusterLayout> PlanRemoveDown(const ClusterLayout& current, absl::string_view id);
// True if `layout` is a removal of members down during `transition` (as PlanRemoveDown makes
// one): version + 1, the same current owners, next owners among `transition`'s, at least the
// members `transition` names down, and one member fewer among the next owners or one more down.
bool IsRemovalDuring(const ClusterLayout& transition, const ClusterLayout& layout);
// The layout that completes `transition` (version + 1, members = next).
ClusterLayout CompleteTransition(const ClusterLayout& transition);

}  // namespace kv

#endif  // KV_NODE_CLUSTER_LAYOUT_H_

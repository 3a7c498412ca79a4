// Placement: which members hold a key, for one cluster layout (node/cluster_layout.h), and
// PlacementHolder, the node's current placement, swapped when gossip brings a newer layout.
//
// Outside a transition a key's replicas are its preference list. During one they are the old
// ring's list followed by the members of the new ring's list that are not in it: reads ask both
// old and new owners and writes reach both, so an acknowledged new key is found whichever side
// of the change a reader stands on.
//
// Member pointers returned by Replicas stay valid for the holder's lifetime: the holder keeps
// every placement it ever held (one per layout version, so a handful per membership change).
//
// Placement is immutable; PlacementHolder is thread-safe.
#ifndef KV_NODE_PLACEMENT_H_
#define KV_NODE_PLACEMENT_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "node/cluster_layout.h"
#include "node/ring.h"

namespace kv {

class Placement {
 public:
  // INVALID_ARGUMENT if a ring cannot be built (no members).
  static absl::StatusOr<std::shared_ptr<const Placement>> Create(ClusterLayout layout);
  // A placement of a fixed ring (version 1, no transition).
  static std::shared_ptr<const Placement> Fixed(std::shared_ptr<const HashRing> ring);

  // The key's replicas: old owners first, then new owners not among them.
  std::vector<const Member*> Replicas(absl::string_view key, size_t n) const;
  // OK if member `self_id` may keep a record of `key`: it is one of the key's replicas, or not
  // a member of the layout at all (a node joining before it learns the transition that adds
  // it). Otherwise FAILED_PRECONDITION marked MarkNotAReplica (node/peer_transport.h): a copy kept
  // there would be a stray that no tombstone purge asks about and that a later membership change
  // could bring back (PRODUCT.md C8).
  absl::Status CheckMayHold(absl::string_view self_id, absl::string_view key, size_t n) const;
  // OK if member `self_id` may take records from `sender_id`: the sender is a member of the
  // layout (an owner, or a new owner during a change), or `self_id` is not a member at all (as
  // for CheckMayHold), or the sender is not named (a node of an earlier version). Otherwise
  // FAILED_PRECONDITION marked MarkNotAReplica with this layout's version: a member removed
  // while it was down and then restarted with its data (its stored layout still names it) must
  // not bring back, through its outbox, anti-entropy or read repair, what the cluster deleted and
  // purged without asking it (PRODUCT.md C8). A sender whose layout is newer (a member this node
  // has not learned of yet) takes the version as this node being behind, and sends again later.
  absl::Status CheckSender(absl::string_view self_id, absl::string_view sender_id) const;
  // Every member of both rings, by id.
  std::vector<const Member*> AllMembers() const;

  const ClusterLayout& layout() const { return layout_; }
  const HashRing& current() const { return *current_; }
  const std::shared_ptr<const HashRing>& current_ptr() const { return current_; }
  const HashRing* next() const { return next_.get(); }  // null outside a transition

 private:
  Placement() = default;
  ClusterLayout layout_;
  std::shared_ptr<const HashRing> current_;
  std::shared_ptr<const HashRing> next_;
};

class PlacementHolder {
 public:
  explicit PlacementHolder(std::shared_ptr<const Placement> initial);
  std::shared_ptr<const Placement> Get() const;
  // Installs `placement` if its layout version is greater than the current one; returns whether
  // it did.
  bool Set(std::shared_ptr<const Placement> placement);

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const Placement> current_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<const Placement>> history_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv

#endif  // KV_NODE_PLACEMENT_H_

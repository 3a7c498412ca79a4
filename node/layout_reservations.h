// LayoutReservations: which node may install the next cluster layout version, as this member
// promised it.
//
// A membership change installs layout version v+1 through gossip, and gossip keeps the first
// layout of a version a node sees: two changes committed at once on two nodes would split the
// cluster into two layouts of one version for good. So a committing node first asks every
// member of its current layout (version v) to reserve v+1 for it (Replica.ReserveLayout), and
// proposes the layout only once a majority of them, itself included, granted it
// (node/membership_change.h). A member grants a version to one proposer at a time, so two
// proposers cannot both win a majority of the same members.
//
// Reserve grants `version` to `proposer` if this member's layout is at `version` - 1, is not a
// transition (the layout completing one is never reserved: every node computes it alike, and
// no change may be committed before it), and no other proposer holds an unexpired reservation
// of `version`; a proposer that holds it gets its lease renewed (a retried commit). A
// reservation lasts Options::lease from its grant, so that a proposer that stopped before
// proposing does not block changes for good; the proposer proposes only while the lease it
// measured from before asking still runs, with a margin (see MembershipChanger). Refused:
// FAILED_PRECONDITION naming the holder and its change, or this member's layout version if it is
// ahead of the proposer's or a transition; UNAVAILABLE if it is behind (gossip brings the
// proposer's layout within seconds). A proposer whose commit failed keeps the grants it got until
// they lapse (no release).
//
// Not consensus: a grant records no layout. A proposer cut off right after proposing (its layout
// still on it alone) lets its grants lapse, and a second proposer may then win the same version
// with another layout; gossip keeps either on the nodes that have it. So may a member that
// restarts within a lease (memory only) or whose clock jumps forward (the lease is measured by
// the injected Clock, wall time in kvnode). Closing these needs the members to accept the layout
// itself before it is proposed, and a new proposer to finish any layout a majority accepted
// (Paxos), which is not built. Thread-safe.
#ifndef KV_NODE_LAYOUT_RESERVATIONS_H_
#define KV_NODE_LAYOUT_RESERVATIONS_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"

namespace kv {

class LayoutReservations {
 public:
  struct Options {
    absl::Duration lease = absl::Seconds(10);
  };

  // `clock` must outlive this.
  LayoutReservations(const Clock* clock, Options options) : clock_(clock), options_(options) {}

  // See the header comment. `change` describes the layout the proposer will install (for the
  // refusal message of another proposer); `current` is this member's layout version, and
  // `in_transition` whether that layout is a transition.
  absl::Status Reserve(absl::string_view proposer, uint64_t version, absl::string_view change,
                       uint64_t current, bool in_transition);

  const Options& options() const { return options_; }

 private:
  const Clock* const clock_;
  const Options options_;
  absl::Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // 0: nothing reserved
  std::string holder_ ABSL_GUARDED_BY(mu_);
  std::string change_ ABSL_GUARDED_BY(mu_);
  absl::Time expiry_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv

#endif  // KV_NODE_LAYOUT_RESERVATIONS_H_

// LayoutReservations: this member's side of agreeing on the next cluster layout version, as
// single-decree Paxos (one instance per version) with a lease on top for friendlier refusals.
//
// A membership change installs layout version v+1 through gossip, and gossip keeps the first
// layout of a version a node sees: two different layouts of one version would split the cluster
// for good. So a committing node (the proposer, node/membership_change.h) runs two phases
// against the members of its current layout (version v), itself included:
//
//  1. Reserve (Replica.ReserveLayout, Paxos "prepare"): the member promises v+1 to the
//     proposer's ballot (round, proposer id) and answers with the layout of v+1 it accepted
//     earlier, if any, and the ballot it accepted it under.
//  2. Accept (Replica.AcceptLayout): the member accepts a layout of v+1 under a ballot at
//     least as high as every one it promised.
//
// During a transition v, version v+1 is either its completion or a removal of members down for
// good (PlanRemoveDown), and the members agree on which the same way (MembershipChanger agrees
// on a completion too, once every member does: MemberEntry::agrees_completions); a member
// takes v+1 on transition v only as one of the two. The members named down are not asked
// (LayoutQuorum).
//
// The proposer installs a layout (gossip spreads it) only once a majority accepted it, and with
// grants from a majority in phase 1 it proposes in phase 2 the accepted layout of the highest
// ballot among them, its own change only if none was accepted. So once a majority accepted a
// layout, every later proposer of that version finishes that layout: a proposer that stopped
// after phase 2, or whose installed layout never left it, cannot let another layout of the
// version be installed. Safety needs no clock.
//
// Reserve refuses (in LayoutPromise::status):
//  - INVALID_ARGUMENT for a ballot without a proposer or round;
//  - UNAVAILABLE if this member's layout is behind version - 1 (gossip brings it within
//    seconds);
//  - FAILED_PRECONDITION if it is ahead (or this member promised a later version already), or
//    another proposer's promise is younger than Options::lease (liveness: two proposers do
//    not keep taking the version from each other; the message names the holder and its change);
//  - ABORTED if a higher ballot was promised (promised_round says which round to beat).
// A proposer's own promise is renewed by a higher or equal ballot (a retried commit). A proposer
// whose commit failed releases its lease (Release), so that others need not wait for it.
//
// Accept refuses with FAILED_PRECONDITION if this member's layout is not the one the layout
// follows (UNAVAILABLE if it is behind; on a transition, the layout must be its completion or
// a removal during it, IsRemovalDuring; on a stable layout, it must start from the same members),
// with ABORTED if a higher ballot was promised; accepting also promises the ballot. It answers OK,
// storing nothing, if this member already holds that very layout (installed through gossip), and
// FAILED_PRECONDITION if it holds another one.
//
// Durable with Options::persist: every promise or accept that changes the state is stored
// (kvnode: synced, in the meta column) before it is answered, and Restore loads it at start, so a
// member that restarts keeps its word. A state that could not be stored is not taken: the request
// is refused with UNAVAILABLE. Leases are not stored (a restart ends them; safety never rests on
// them). Without persist the state lives in memory only (tests). Thread-safe.
#ifndef KV_NODE_LAYOUT_RESERVATIONS_H_
#define KV_NODE_LAYOUT_RESERVATIONS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/cluster_layout.h"

namespace kv {

// Rounds are microseconds since 1970 (or one more than a round seen), far below this; a larger
// one (only a forged or corrupt request could carry it) is refused, so that a promise never
// leaves a version without a round to beat it (at the bound itself only a larger proposer id
// beats it).
inline constexpr uint64_t kMaxLayoutRound = uint64_t{1} << 62;

// A proposer's ballot for one layout version, ordered by round, then proposer id.
struct LayoutBallot {
  uint64_t round = 0;
  std::string proposer;

  friend bool operator<(const LayoutBallot& a, const LayoutBallot& b) {
    return std::tie(a.round, a.proposer) < std::tie(b.round, b.proposer);
  }
  friend bool operator==(const LayoutBallot& a, const LayoutBallot& b) {
    return a.round == b.round && a.proposer == b.proposer;
  }
};

// A member's answer to Reserve (see the header comment).
struct LayoutPromise {
  absl::Status status;          // OK: granted
  uint64_t promised_round = 0;  // the round of the highest ballot promised for the version
  // The layout of the version this member accepted, and under which ballot; granted only.
  std::optional<ClusterLayout> accepted;
  LayoutBallot accepted_ballot;
};

// Whose grants agree on the layout version after `current`, for a proposer whose layout is
// `current`: more than half of the votes of its members. On a stable layout each member has one
// vote (a plain majority). On a transition (whose next version is its completion or a removal
// of a member down during it), a member that stays has two votes, one that joins or leaves has
// one, and one named down has none and is not asked: every proposer of that version starts
// from the same transition, so any two such majorities overlap, which is all Paxos needs to
// choose one layout. The weights keep a change going when it can: a join of a third member
// completes with one of the two old members and the joiner, a leave to one member with the
// member that stays alone, a join of a second member with the first alone.
class LayoutQuorum {
 public:
  explicit LayoutQuorum(const ClusterLayout& current);

  // The members to ask: the owners not named down, then (on a transition) the joining ones.
  const std::vector<Member>& asked() const { return asked_; }
  // Whether the grants (per asked member, in asked() order) are more than half of the votes.
  bool Granted(const std::vector<bool>& granted) const;
  // Whether that can no longer be: too many refused.
  bool Lost(const std::vector<bool>& refused) const;
  // "2 of 3 members", and on a transition the votes.
  std::string Describe(const std::vector<bool>& granted) const;

 private:
  size_t Weight(const std::vector<bool>& flags) const;

  bool transition_ = false;
  std::vector<Member> asked_;
  std::vector<size_t> weights_;  // per asked member
  size_t total_ = 0;
  std::vector<std::string> down_;
};

// What a member promised and accepted, as stored (see Options::persist).
struct LayoutAcceptorState {
  uint64_t version = 0;   // the layout version the rest is about; 0: none
  LayoutBallot promised;  // the highest ballot promised for it
  std::optional<ClusterLayout> accepted;
  LayoutBallot accepted_ballot;
};

class LayoutReservations {
 public:
  struct Options {
    absl::Duration lease = absl::Seconds(10);
    // Stores the state durably before a promise or accept that changed it is answered; an error
    // refuses that request. Null: memory only.
    std::function<absl::Status(const LayoutAcceptorState&)> persist;
  };

  // `clock` must outlive this.
  LayoutReservations(const Clock* clock, Options options) : clock_(clock), options_(options) {}

  // Phase 1 for layout `version`: `change` describes the layout the proposer means to install
  // (for other proposers' refusals); `current` is this member's layout.
  LayoutPromise Reserve(const LayoutBallot& ballot, uint64_t version, absl::string_view change,
                        const ClusterLayout& current);
  // Phase 2: accepts `layout` (of version current.version + 1) under `ballot`.
  absl::Status Accept(const LayoutBallot& ballot, const ClusterLayout& layout,
                      const ClusterLayout& current);

  // Ends the lease of `ballot`'s promise of `version` if that is this member's promise (a
  // proposer whose commit failed gives way to others at once). The promise stays: safety never
  // rests on leases. Does nothing otherwise.
  void Release(const LayoutBallot& ballot, uint64_t version);

  // The stored state, at start (before the first request); no lease runs.
  void Restore(LayoutAcceptorState state);
  LayoutAcceptorState State();
  // Whether a proposer other than `proposer` holds an unexpired lease here.
  bool LeasedToAnother(absl::string_view proposer);

  const Options& options() const { return options_; }

 private:
  // FAILED_PRECONDITION if state_ is of a version after `version`: a member's promises only go
  // forward, even when the layout a request was checked against is older.
  absl::Status CheckNotBehindState(uint64_t version) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // state_ if it is of `version`, else the state of a version nothing was promised of yet.
  LayoutAcceptorState StateFor(uint64_t version) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Persists `next` if it differs from state_, then makes it state_.
  absl::Status Store(LayoutAcceptorState next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  const Options options_;
  absl::Mutex mu_;
  LayoutAcceptorState state_ ABSL_GUARDED_BY(mu_);
  // The lease of state_.promised (none before a promise of state_.version here).
  std::string change_ ABSL_GUARDED_BY(mu_);  // the promised proposer's
  absl::Time expiry_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace kv

#endif  // KV_NODE_LAYOUT_RESERVATIONS_H_

// MembershipChanger: staged join and leave as operations (node/operations.h).
//
// Plan: what a change would do (node/cluster_layout.h PlanJoin/PlanLeave and PlanMovement), from
// this node's current layout; nothing changes. Commit: proposes the transition layout (version
// v+1) through gossip and registers an operation of kind "join", "leave" or "remove" (the leave of
// a member down for good: ClusterLayout::down) whose id it returns at once. The operation then
// watches gossip: every current owner (but one named down) hands off the keys the new owners gain
// (node/handoff.h, two phases) and publishes its progress in its gossip entry; progress shows
// sources done (both phases) of total and which phase each waiting one is in, and counters, per
// source (_from_<id>) and summed (_total): keys and bytes (full records sent, both phases), digests
// (phase 2 comparisons), compared_keys and compared_bytes (records sent in phase 2 because a new
// owner lacked them; phase 1 sent keys - compared_keys). When all sources are done it installs the
// completing layout (v+2, without the leaving node; InstallCompletion: agreed on first as a
// change is, once every member that hands off agrees on completions) and ends SUCCEEDED. It ends
// FAILED if another layout replaced the transition, or (after a restart, see Resume) when this
// node cannot tell how the transition ended. Past Options::timeout it stays RUNNING, its message
// saying it is overdue: the transition stays in place and may still complete (the takeover watch
// completes it if this node cannot), so only the layout ends it.
//
// A joining node must be known to gossip (started with --seeds, RingStatus NONE); its address
// comes from its gossip entry. A member is removed down only once this node's failure detector
// has it DOWN, and only while every node it hears from (UP) says in its gossip entry that it
// honours the mark (MemberEntry::knows_members_down). One change at a time: a commit during a
// transition is FAILED_PRECONDITION, and so is a commit whose expected version is not current (0:
// any). The exception is a remove during a transition v, for a member that died while the change
// ran and would hold it up for good (a source that has not finished, or a next owner the sources
// cannot reach): it commits transition v+1 (PlanRemoveDown), which takes the version of v's
// completion: the members agree on one of the two, so v's completion is agreed on too (by the
// committing node's operation or the takeover watch), once every member that hands off says it
// does (MemberEntry::agrees_completions; the remove is refused while a node heard from does
// not). The remove replaces v; v's operation then ends FAILED (ABORTED, naming v+1) and the
// remove's operation runs v+1 to its end. It is refused once every source of v has finished: v
// completes by itself, and the member is removed after that.
//
// Across nodes, with SetReservations: before proposing transition v+1, Commit agrees on it with
// the members of the current layout (this node directly, the others through the transport, in
// parallel), in the two phases of node/layout_reservations.h: a majority promises v+1 to this
// node's ballot, then a majority accepts the layout, and only then is it proposed through
// gossip. So two commits on two nodes at once cannot both install a version (gossip would keep
// either layout on different nodes, for good), and a layout a majority accepted is never
// replaced by another of its version: if the promises name one (an earlier commit that stopped
// before installing it), Commit installs that layout instead and answers FAILED_PRECONDITION
// saying so. The loser of a race gets FAILED_PRECONDITION naming the winner's change, or
// UNAVAILABLE if too few members answered (a majority must be reachable to change membership)
// or promised a later round even after one retry above it. A member that answers UNIMPLEMENTED
// (a node from before reservations) grants nothing. A failed agreement releases the leases its
// promises took (LayoutReservations::Release, best effort), so that another node's commit need
// not wait for them to lapse. Commit then blocks its thread for up to
// three times Options::reserve_timeout: call it on an executor thread, not a gRPC one. Shutdown
// ends those waits at once (the members that have not answered count as not granting; no member
// is asked for a promise or an accept after it, only to release leases), so a commit or the watch's
// recovery ends with the node: kvnode stops the changer once its shutdown grace has passed, before
// that for the watch.
//
// Restarts. The operation lives on the node that committed it, in its registry's journal: Shutdown
// leaves it RUNNING, and the next run of the node goes on with it under the same id (Resume).
//
// Takeover. So that a transition never stays in place because the node that committed it
// stopped (or did not come back), every node also
// watches the gossiped layout (StartWatching): when a transition's sources have all been done for
// Options::takeover_after and nobody completed it, the node installs the completing layout
// itself (InstallCompletion). CompleteTransition is deterministic, so several nodes proposing it
// propose the same layout. The watch also finishes a layout this node accepted (phase 2) that
// nobody installed within Options::takeover_after (its proposer stopped, or lost its majority after
// some members accepted), once no other proposer's lease runs on this node: it agrees on the
// version again, which adopts whichever layout a majority may have accepted, and installs it. A
// failed attempt is retried after a lease plus a delay fixed per node (up to another lease), so
// that members finishing the same layout do not keep taking the majority from each other.
//
// Time. Deadlines, grace periods, takeover and retry delays are measured on the injected clock;
// kvnode's is SteadyClock (node/clock.h), so that a step of the wall clock neither lengthens nor
// cuts them (a step forward used to take over or report a change as overdue at once); a job
// resumed after a restart still counts its timeout from its stored start time (a wall-clock
// time). Ballot rounds are that clock's microseconds when those are higher than any round this
// node used or was answered with (NextRound); SteadyClock starts from the wall clock's reading at
// its first use, so a restarted node's rounds usually pass its earlier run's, and a member's
// answer naming a higher round lifts them past it otherwise.
//
// Thread-safe. Polls through the Scheduler; Shutdown (also the destructor) ends running
// operations (Suspend: RUNNING for the next run with a durable registry, else CANCELLED) and
// waits for running callbacks. The gossiper, registry and scheduler
// must outlive it.
#ifndef KV_NODE_MEMBERSHIP_CHANGE_H_
#define KV_NODE_MEMBERSHIP_CHANGE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/cluster_layout.h"
#include "node/gossip.h"
#include "node/layout_reservations.h"
#include "node/lifetime_guard.h"
#include "node/operations.h"
#include "node/peer_transport.h"
#include "node/scheduler.h"

namespace kv {

class MembershipChanger {
 public:
  // kRemoveDown: the leave of a member that is down for good (PlanRemoveDown): refused while this
  // node hears from it; the other owners of its keys hand them off in its place. Also during a
  // transition (see the header comment).
  enum class Action { kJoin, kLeave, kRemoveDown };
  struct Options {
    size_t replication_factor = 3;
    absl::Duration poll = absl::Milliseconds(100);
    // After this the operation's message says it is overdue (it still runs: see above).
    absl::Duration timeout = absl::Hours(6);
    absl::Duration watch_interval = absl::Seconds(1);  // of the takeover watch
    absl::Duration takeover_after = absl::Seconds(5);
    absl::Duration reserve_timeout = absl::Seconds(3);  // waiting for the members' answers
    // A job resumed after a restart (Resume) reports no progress and does not time out before
    // this has passed: gossip must first tell the new run how far the sources are.
    absl::Duration resume_grace = absl::Seconds(30);
  };
  struct Plan {
    ClusterLayout current;
    ClusterLayout transition;
    MovementPlan movement;
  };

  MembershipChanger(Gossiper* gossiper, OperationRegistry* operations, Scheduler* scheduler,
                    const Clock* clock, Options options);
  ~MembershipChanger();

  absl::StatusOr<Plan> MakePlan(Action action, const std::string& node_id) const;
  // Makes Commit agree on the transition's version first (see the header comment) as `self_id`,
  // with `local` as this node's acceptor and the other members through `transport`. Call before the
  // first Commit; both must outlive this.
  void SetReservations(std::string self_id, LayoutReservations* local, PeerTransport* transport);
  // Plans, proposes the transition and returns the plan and the operation id.
  absl::StatusOr<std::pair<Plan, std::string>> Commit(Action action, const std::string& node_id,
                                                      uint64_t expected_version);
  void Shutdown();
  // Goes on with the operations an earlier run of this node left running (OperationRegistry::
  // TakeInterrupted), from the layout this node holds now: each polls as a commit's does, ending
  // SUCCEEDED once its transition's completion is in place (also when another node installed it
  // meanwhile), FAILED (ABORTED) if another layout replaced it, FAILED (UNKNOWN) if the layout
  // moved on by more than one version while the node was down, and FAILED (DATA_LOSS) for a
  // checkpoint that names no transition. Its deadline is the commit's, but at least
  // Options::resume_grace away. Call once, before StartWatching.
  void Resume(const std::vector<OperationInfo>& interrupted);
  // Starts the takeover watch (see the header comment).
  void StartWatching();

  // The sources of `transition` (its members except those it names down) whose handoff is not
  // done, as "id (phase N)", from the gossiped member table; empty once every source is done.
  static std::vector<std::string> SourcesWaiting(const ClusterLayout& transition,
                                                 const std::vector<MemberView>& members);

 private:
  struct Job {
    std::string id;
    ClusterLayout transition;
    absl::Time deadline;
    // After a completion that was not agreed on: when to try again, and why it failed.
    absl::Time retry_completion_at = absl::InfinitePast();
    std::string completion_error;
    absl::Time quiet_until = absl::InfinitePast();  // see Options::resume_grace
  };
  // With reservations set: agrees with a majority of `plan`'s current members (LayoutQuorum: on a
  // transition, of their votes) on the layout of its transition version (both
  // phases of node/layout_reservations.h). OK: `plan.transition` was accepted and may be installed.
  // FAILED_PRECONDITION after installing instead a layout of the version an earlier commit got
  // accepted.
  absl::Status Agree(const Plan& plan);
  // The members' answers to one AskMembers, written by transport threads, possibly after it
  // returned.
  struct Answers;
  // Asks every one of `quorum`'s members in parallel through `ask` and waits, up to
  // Options::reserve_timeout, until the quorum granted or no longer can, or Shutdown; the
  // answers in LayoutQuorum::asked() order (none: not yet answered).
  std::vector<std::optional<LayoutPromise>> AskMembers(
      const LayoutQuorum& quorum,
      const std::function<void(const Member&, std::function<void(LayoutPromise)>)>& ask);
  // Whether every member `transition`'s agreement asks (LayoutQuorum) says in gossip that it
  // agrees on completions (MemberEntry::agrees_completions), or has not been heard from since this
  // node started: then the completion is agreed on first. Older nodes relay other members' entries
  // without the flag, so two nodes may judge this differently while one runs; that is harmless
  // because no remove during a change is planned unless this holds on the planning node (down
  // members included) and no node heard from lacks the flag.
  bool AllAgreeCompletions(const ClusterLayout& transition) const;
  // Installs the layout that completes `transition`, agreed on first (Agree, as a change: a
  // remove during the transition competes for the version) when AllAgreeCompletions; otherwise
  // at once, as older members do. Not OK if the agreement failed (UNAVAILABLE: retry later; also
  // while another agreement runs on this node) or chose another layout (FAILED_PRECONDITION,
  // that one installed).
  absl::Status InstallCompletion(const ClusterLayout& transition);
  // The error for `answers` that do not make `quorum`: `what` ("... was reserved") by how many
  // of its members, `outcome` (what that left), and why the others did not grant.
  static absl::Status Refused(absl::string_view what, absl::string_view outcome,
                              const LayoutQuorum& quorum,
                              const std::vector<std::optional<LayoutPromise>>& answers);
  // A ballot round above `above` and every earlier one of this node: its clock's microseconds
  // when those are higher.
  uint64_t NextRound(uint64_t above);
  // The watch's recovery: a layout this node's acceptor accepted for the version after the
  // current stable layout, still not installed after Options::takeover_after, is agreed on again
  // (Agree adopts whichever layout a majority may have accepted) and installed.
  void FinishAcceptedLayout(const ClusterLayout& layout);
  // How much longer than a lease this node waits before finishing an accepted layout again.
  absl::Duration RecoveryStagger() const;
  // Proposes `layout` through gossip; OK too if this node holds exactly that layout already
  // (another node installed it first, and gossip brought it).
  absl::Status Install(const ClusterLayout& layout);
  void Poll(Job job);
  void Finish(const Job& job, absl::Status status);
  // Shutdown's end of running operation `id`: left RUNNING, saying so, for the next run to
  // Resume when the registry is durable; else FAILED (CANCELLED).
  void Suspend(const std::string& id);
  void Watch();

  Gossiper* const gossiper_;
  OperationRegistry* const operations_;
  Scheduler* const scheduler_;
  const Clock* const clock_;
  const Options options_;
  LifetimeGuard guard_;
  std::string self_id_;                         // see SetReservations
  LayoutReservations* reservations_ = nullptr;  // null: no reservations
  PeerTransport* reservation_transport_ = nullptr;

  absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> running_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> running_versions_ ABSL_GUARDED_BY(mu_);  // transitions of running jobs
  uint64_t last_round_ ABSL_GUARDED_BY(mu_) = 0;              // see NextRound
  // Watch: the transition whose sources were first seen all done, and when.
  uint64_t done_version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time done_since_ ABSL_GUARDED_BY(mu_);
  // FinishAcceptedLayout: the accepted, uninstalled layout (its version and ballot) and when to
  // finish it; and how many agreements of this node run right now (commits, or the watch's).
  uint64_t accepted_version_ ABSL_GUARDED_BY(mu_) = 0;
  LayoutBallot accepted_ballot_ ABSL_GUARDED_BY(mu_);
  absl::Time recover_at_ ABSL_GUARDED_BY(mu_);
  int agreeing_ ABSL_GUARDED_BY(mu_) = 0;
  // The answers AskMembers waits on right now, for Shutdown to end the waits.
  std::set<std::shared_ptr<Answers>> waiting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv

#endif  // KV_NODE_MEMBERSHIP_CHANGE_H_

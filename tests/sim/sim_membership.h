// MembershipDriver: one seeded membership change (a join or a leave) during a simulation run,
// driven the way kvnode drives it (node/membership_change.h, node/gossip.h), with the real
// HandoffSender on every node (SimCluster).
//
//   1. At a random time it commits the transition layout v+1 (PlanJoin / PlanLeave: owners = old,
//      next = new). The layout reaches each node at its own random time, as gossip would (a node
//      that is down gets it after its restart); each old owner's HandoffSender then streams the
//      keys new owners gain through the simulated network.
//   2. When every old owner has reported its handoff done (its ProgressCallback, which kvnode
//      publishes through gossip for the MembershipChanger to poll), it commits the completing
//      layout v+2 (CompleteTransition), again delivered per node with random delays.
//   3. A leaving node stops a little after it has v+2 (kvnode --exit_after_leave) and is removed
//      for good.
// A remove (kRemoveDown) takes the member away for good first (SimCluster::Remove, its disk with
// it), then commits a transition that names it down: the driver waits for the other old owners
// only, as MembershipChanger does.
// A join-remove or leave-remove takes a member taking part away for good while the handoff runs
// (one whose handoff is not done: the change would wait for it forever), then commits the
// transition without it (the version of its completion), and waits for the remaining sources of
// that one. The sim commits layouts itself: it does not run the agreement.
// In some runs it also crashes a node taking part in the change (an old owner or a gainer) while
// the handoff runs, and restarts it later (unsynced writes lost, as every sim crash).
//
// What MembershipChanger does is replicated here, not reused: it needs a Gossiper. Gossip
// delivery is modelled as random delays, independent of partitions (gossip goes around them).
// Single-threaded.
#ifndef KV_TESTS_SIM_SIM_MEMBERSHIP_H_
#define KV_TESTS_SIM_SIM_MEMBERSHIP_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "node/cluster_layout.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_loop.h"

namespace kv::sim {

enum class MembershipChange {
  kNone,
  kJoin,   // the last node (started outside the layout) joins
  kLeave,  // a random member leaves
  // A random member goes down for good (it stops and never comes back) and is removed
  // (PlanRemoveDown): the other old owners hand its keys off in its place.
  kRemoveDown,
  // A join or a leave during which a member taking part (a source that has not finished, or the
  // joiner) goes down for good and is removed (PlanRemoveDown on the transition): the change
  // goes on without it.
  kJoinThenRemove,
  kLeaveThenRemove,
};
// "none", "join", "leave", "remove", "join-remove", "leave-remove".
absl::string_view MembershipChangeName(MembershipChange change);

struct MembershipStats {
  std::string change;  // e.g. "join n4"; empty if none ran
  absl::Time started = absl::InfiniteFuture();
  absl::Time completed = absl::InfiniteFuture();  // when v+2 was committed
  uint64_t handoff_keys = 0;            // records sent, summed over the old owners' last reports
  uint64_t crashes_during_handoff = 0;  // node crashes between v+1 and v+2 (any cause)
  // Of those, the crashes the driver made of a member of the change while its handoff ran
  // (CrashDuringHandoff): the fault the membership tests ask for, not a random one elsewhere.
  uint64_t handoff_crashes = 0;
};

class MembershipDriver {
 public:
  MembershipDriver(SimLoop* loop, SimCluster* cluster, MembershipChange change);

  // Schedules the change at a random time before `latest`.
  void Start(absl::Time latest);
  // True when no change was asked for, or it completed: v+2 committed, every node still in the
  // cluster holds it, and a leaving node was removed.
  bool Done() const;
  const MembershipStats& stats() const { return stats_; }
  // An error seen while restarting a node it crashed.
  const absl::Status& error() const { return error_; }

 private:
  void Begin();
  // Delivers `layout` to `node` after a gossip-like delay, again later while the node is down.
  void Deliver(int node, ClusterLayout layout, absl::Duration delay);
  void OnHandoff(int node, uint64_t version, uint64_t keys, bool done);
  void Complete();
  void CrashDuringHandoff(int node);
  // join-remove, leave-remove: a member taking part goes down for good; the remove follows.
  void DieDuringHandoff();
  void RemoveDuringHandoff(int node);
  // Commits `removal` (a remove's transition) as the transition to complete.
  void Commit(ClusterLayout removal);

  SimLoop* const loop_;
  SimCluster* const cluster_;
  const MembershipChange change_;
  ClusterLayout transition_;
  ClusterLayout final_;
  bool completing_ = false;  // v+2 committed or about to be
  int leaving_ = -1;
  std::set<int> done_sources_;
  std::map<int, uint64_t> keys_sent_;
  uint64_t crashes_at_start_ = 0;
  MembershipStats stats_;
  absl::Status error_;
};

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_MEMBERSHIP_H_

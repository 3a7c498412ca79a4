// Gossiper: gossip membership and failure detection for one node.
//
// Every `interval` the node bumps its own heartbeat, re-evaluates its failure detector, and makes
// one push-pull exchange with a peer chosen uniformly at random among the other members it knows
// (or, while it knows none, among its seed addresses): it sends its whole table and merges the
// peer's answer; the peer merges ours and answers with its table (HandleGossip). Merging keeps,
// per member, the entry with the greatest (incarnation, heartbeat), and every advance of a
// member's heartbeat marks it UP in the local FailureDetector; a member whose heartbeat stops
// advancing for `failure_timeout` is marked DOWN. Heartbeats spread epidemically, so a live
// member's advances reach every node within a few intervals even though each node talks to only
// one peer per round.
//
// Membership. The cluster layout (node/cluster_layout.h) travels in every digest and the
// highest version wins; members in it are RingStatus::kNormal, others kNone. It starts as
// Options::layout, or else version 1 with the members given at construction. Members learned
// only through gossip are added with kNone and watched (a node waiting to be joined gossips
// itself that way). ProposeLayout installs a newer layout locally (a membership change); the
// layout listener runs, outside the lock, whenever the layout changes. A member's address and
// zone are never changed by gossip. An entry claiming this node at a newer version than its own
// (only possible after the node's clock went backwards across a restart) makes it take a newer
// incarnation.
//
// Forgetting. A node outside the layout (one that left, was removed, or waited to be joined and
// went away) whose heartbeat has not advanced here for Options::forget_after is dropped from
// the table, the failure detector and Members() (logged, "forgetting a member"); LivenessOf
// still says DOWN while its quarantine lasts. Members of the layout, current or next, are never
// forgotten: they must be removed first. So that a peer that has not forgotten the entry yet (one
// that heard of it later, or of an earlier version that never forgets) cannot gossip it back, the
// forgotten version (incarnation, heartbeat) is kept aside, and an entry at or below it is
// ignored; each such entry restarts the quarantine, which ends forget_after after the last one.
// A newer entry (the node came back: a restart, or a paused process resumed), or any entry the
// node sends of itself (its clock may have gone back across a restart), is taken: the node is UP
// again.
//
// Input from peers. A layout that CheckLayout (node/cluster_layout.h) refuses, and a member
// entry with a malformed member (CheckMember, node/ring.h) or an incarnation or heartbeat beyond
// kMaxIncarnation and kMaxHeartbeat, are ignored (the rest of the digest is taken) and logged,
// once per distinct refusal in a row: a faulty peer cannot stop the cluster from following newer
// layouts, or make a counter wrap around (an entry claiming this node at the bound makes it take
// the bound + 1, still far from 2^64). It can still claim any member's entry at the bound, this
// node's included, which that member cannot refute in a way the others take (they ignore
// incarnations above the bound): gossip trusts its peers (use TLS and --tls_peer_names).
// ProposeLayout refuses such a layout with INVALID_ARGUMENT.
//
// Incarnation: Options::incarnation, or else the clock's time in microseconds at construction;
// a restarted node thus advertises a newer version even though its heartbeat restarts from 0.
//
// Listener: called on every change of a member's liveness, outside the lock, on the thread that
// observed it (a scheduler or transport callback thread); it must not call back into Shutdown.
//
// Lifetime: Start schedules the first round; Shutdown stops scheduling rounds and makes late
// transport completions and timers do nothing. The transport and scheduler must not call the
// gossiper after it is destroyed: destroy it after both are stopped. Thread-safe. Time comes only
// from the injected clock, randomness only from the injected generator, and work is scheduled
// only through the injected Scheduler, so it runs unchanged on simulated time.
#ifndef KV_NODE_GOSSIP_H_
#define KV_NODE_GOSSIP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/failure_detector.h"
#include "node/gossip_transport.h"
#include "node/membership.h"
#include "node/ring.h"
#include "node/scheduler.h"
#include "storage/format_level.h"

namespace kv {

class Gossiper : public MemberLiveness, public FormatLevels {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(1);
    absl::Duration failure_timeout = absl::Seconds(5);
    // HOST:PORT of nodes to gossip with while no other member is known.
    std::vector<std::string> seeds;
    uint64_t incarnation = 0;  // 0: the clock's time in microseconds
    // The format level this node says it reads (storage/format_level.h). 0: kFormatLevel; a
    // lower level makes it look like an older node to the others (tests of rolling upgrades).
    uint32_t format_level = 0;
    // How long a node outside the layout may stay silent before it is forgotten (see
    // "Forgetting" above); InfiniteDuration: never.
    absl::Duration forget_after = absl::Hours(1);
    // Whether this node's data directory holds records; asked while the node is outside the
    // layout (members are never asked), after each layout change and at most every 10 s, and
    // gossiped as holds_records, which keeps such a node from being joined
    // (node/membership_change.cc). Null: never holds any. Called under the gossiper's lock: it
    // must not call into the gossiper.
    std::function<bool()> holds_records;
    ClusterLayout layout;  // version 0: version 1 of the members given at construction
    // The settings every member must share (placement and what replicas accept: N, the size
    // limits, idempotency_ttl; and gossip_forget_after), as "name=value" pairs joined by ','.
    // Gossiped in this node's entry; nodes that gossip other values are reported (SettingsConflict,
    // and a warning in the log once per node and value). Empty: nothing gossiped or compared.
    std::string settings;
    // This node's history generation at start (MemberEntry::generation; SetGeneration advances
    // it). 0: none.
    uint64_t generation = 0;
    // The node took a new actor epoch at this start: its dots cannot collide with an earlier
    // run's, so an earlier run's later generation (Merge) is nothing to report.
    bool new_epoch = false;
  };
  using Listener = std::function<void(const std::string& member_id, Liveness from, Liveness to)>;
  using LayoutListener = std::function<void(const ClusterLayout& layout)>;
  // Called once, when HistoryConflict() becomes non-empty (with its text).
  using HistoryListener = std::function<void(const std::string& conflict)>;

  // `members` must include `self`; they make up the ring. The clock, transport, scheduler and
  // generator must outlive the gossiper; the generator is used only under its lock.
  Gossiper(Member self, const std::vector<Member>& members, GossipTransport* transport,
           Scheduler* scheduler, const Clock* clock, absl::BitGenRef rng, Options options);
  ~Gossiper() override;
  Gossiper(const Gossiper&) = delete;
  Gossiper& operator=(const Gossiper&) = delete;

  // Set before Start.
  void SetListener(Listener listener);
  void SetLayoutListener(LayoutListener listener);
  void SetHistoryListener(HistoryListener listener);
  // Schedules gossip rounds, the first one right away.
  void Start();
  // Stops gossip rounds; late completions are ignored. Once it returns, nothing more is scheduled
  // on the scheduler, which the caller may then destroy. Idempotent.
  void Shutdown();

  // One round now (Start runs them on the scheduler; exposed for tests).
  void RunRound();
  // The server side of an exchange: merges `incoming` and answers with this node's table.
  GossipDigest HandleGossip(const GossipDigest& incoming);

  // MemberLiveness.
  bool IsDown(absl::string_view member_id) const override;
  // FormatLevels: from the levels in the members' own entries. Members outside the layout do not
  // count (a member that left keeps its entry).
  uint32_t MemberFormatLevel(absl::string_view member_id) const override;
  uint32_t ClusterFormatLevel() const override;
  Liveness LivenessOf(absl::string_view member_id) const;
  ClusterLayout Layout() const;
  // Empty, or what a peer's gossip showed: another layout of this node's version. Gossip never
  // adopts a layout of the version it holds, so such a split stays until a newer layout reaches
  // both sides; it is reported (here, in ClusterStatus, in a log line) rather than hidden. Cleared
  // when the node adopts a newer layout.
  std::string LayoutConflict() const;
  // Empty, or what a peer showed once: an entry of an earlier run of this node with a later
  // history generation than this run's (also logged as an error), e.g. "n2 holds history
  // generation 41 of an earlier run of n1; this run started from 12: ...". The data directory is
  // then older than that run, which the start's check (node/history_check.h) did not find. Never
  // with Options::new_epoch. Shown by ClusterStatus and the kv_history_conflict gauge until the
  // node stops; the history listener hears it once (kvnode then refuses new writes, and takes a new
  // epoch at its next start: LocalStore::MarkHistoryConflict).
  //
  // So that a peer shows it whichever of the two gossips first after the start, a member that
  // takes a new run's entry of another member keeps the earlier run's generation beside it
  // (MemberEntry::earlier_generation). The conflict is an earlier run's generation at or above
  // the one this run started from (Options::generation: one above what the directory held).
  std::string HistoryConflict() const;
  // With Options::new_epoch, the highest history generation of earlier runs of this node that a
  // peer's gossip showed (0: none yet; always 0 without a new epoch). Such a run (an empty
  // directory that no peer answered for at start, say) moves its own generation past it, so that
  // its next start is not taken for a restore.
  uint64_t SelfGenerationSeen() const;
  // Empty, or which members of the layout, and which nodes outside it that are UP (one waiting to
  // be joined, say "(not a member)"), gossip settings (Options::settings) that differ from this
  // node's, e.g. "n2 runs with max_value_bytes=100 (this node: max_value_bytes=1048576)".
  std::string SettingsConflict() const;
  // Installs `layout` if its version is greater than the current one; FAILED_PRECONDITION (naming
  // both versions) otherwise, e.g. when another change won the race.
  absl::Status ProposeLayout(ClusterLayout layout);
  // Publishes this node's handoff progress in its own entry, gossiped from the next round; a
  // milestone (another layout version, phase or done) is pushed to every member at once, so
  // that sources waiting for phase 1 to end and the node running the change need not wait for
  // it to spread epidemically.
  void SetHandoffProgress(const HandoffProgress& progress);
  // Publishes in this node's entry that its clean-up pass on the ring of stable layout `version`
  // ended keeping nothing (MemberEntry::clean_layout_version), pushed to every member at once.
  void SetCleanLayoutVersion(uint64_t version);
  // Publishes this node's history generation (MemberEntry::generation) from its next round on;
  // call only once the store holds it (LocalStore::AdvanceGeneration). Never goes back.
  void SetGeneration(uint64_t generation);

  // Every member known, ordered by id.
  std::vector<MemberView> Members() const;
  const std::string& self_id() const { return self_id_; }

 private:
  void ScheduleRound();
  // One push-pull exchange with every other member now (a handoff milestone).
  void PushToAll();
  // Merges the answer to an exchange this node started.
  void OnReply(const std::string& target, absl::StatusOr<GossipDigest> reply);
  // Takes in `digest`, unless FromAnotherCluster (then it is logged once and ignored whole).
  void Merge(const GossipDigest& digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if the sender belongs to another cluster: both have a layout, neither layout holds the
  // other node by id and address, and they do not hold each other by id either (or the sender
  // has this node's id at another address). Without a cluster identity, two clusters whose
  // members share ids are not told apart.
  bool FromAnotherCluster(const GossipDigest& digest) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs that `entry`'s member runs with other settings, once per member and value.
  void WarnOfSettings(const MemberEntry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs that a peer's layout or entry was ignored, unless it is the refusal logged last.
  void LogRefusal(const GossipDigest& digest, absl::string_view what, const absl::Status& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  GossipDigest Digest() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the nodes outside the layout silent for Options::forget_after, and ends the
  // quarantine of those forgotten that long ago (see "Forgetting" above).
  void ForgetSilentLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs the listener for the detector's pending transitions (call without the lock).
  void Notify(std::vector<FailureDetector::Transition> transitions);
  // Adopts `layout` if newer: ring statuses follow it; queues a layout notification.
  void AdoptLayout(const ClusterLayout& layout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs the layout listener if the layout changed since the last call, and the history listener
  // if a history conflict is not yet reported (call without the lock).
  void NotifyListeners();
  // Recomputes cluster_format_level_ after the table or the layout changed.
  void UpdateClusterFormatLevel() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A newer version of this node's entry (receivers keep only entries newer than theirs), with
  // layout_version and holds_records refreshed.
  void BumpSelfLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string self_id_;
  GossipTransport* const transport_;
  Scheduler* const scheduler_;
  const Clock* const clock_;
  const Options options_;
  Listener listener_;
  LayoutListener layout_listener_;
  HistoryListener history_listener_;

  mutable absl::Mutex mu_;
  std::map<std::string, MemberEntry, std::less<>> members_ ABSL_GUARDED_BY(mu_);
  FailureDetector detector_ ABSL_GUARDED_BY(mu_);
  absl::BitGenRef rng_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  ClusterLayout layout_ ABSL_GUARDED_BY(mu_);
  bool layout_changed_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_refusal_ ABSL_GUARDED_BY(mu_);  // see LogRefusal
  // By peer address, the refusal of an exchange last logged (see OnReply).
  std::map<std::string, std::string> exchange_refusals_ ABSL_GUARDED_BY(mu_);
  std::string layout_conflict_ ABSL_GUARDED_BY(mu_);             // see LayoutConflict
  std::string history_conflict_ ABSL_GUARDED_BY(mu_);            // see HistoryConflict
  bool history_conflict_reported_ ABSL_GUARDED_BY(mu_) = false;  // to the history listener
  uint64_t self_generation_seen_ ABSL_GUARDED_BY(mu_) = 0;       // see SelfGenerationSeen
  // The incarnations this run has gossiped (its first, and any it moved to past an earlier run's
  // entry): an entry of this node at another one is of an earlier run.
  std::vector<uint64_t> run_incarnations_ ABSL_GUARDED_BY(mu_);
  // By member id, the version of each forgotten entry, and when it was forgotten or last
  // gossiped to this node since: an entry at or below that version is ignored until forget_after
  // has passed since (ForgetSilentLocked).
  struct Forgotten {
    uint64_t incarnation = 0;
    uint64_t heartbeat = 0;
    absl::Time at;
  };
  std::map<std::string, Forgotten, std::less<>> forgotten_ ABSL_GUARDED_BY(mu_);
  // The differing settings last logged per member (so each is logged once).
  std::map<std::string, std::string> settings_warned_ ABSL_GUARDED_BY(mu_);
  // When, and under which layout version, Options::holds_records was last asked.
  uint64_t holds_records_checked_version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time holds_records_checked_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // ClusterFormatLevel(), read without the lock on every client write and read.
  std::atomic<uint32_t> cluster_format_level_{kFormatLevel};
  absl::Mutex notify_mu_;  // serializes layout notifications, so listeners see versions in order
};

}  // namespace kv

#endif  // KV_NODE_GOSSIP_H_

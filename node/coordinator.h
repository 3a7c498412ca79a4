// Coordinator: serves client requests for any key on any node of the cluster (Dynamo-style).
//
// Placement comes from the PlacementHolder (node/placement.h): a key lives on the first N members
// of its preference list; during a membership transition, on those of the old and the new ring
// (reads ask both, writes reach both). Each request uses the placement current when it started
// (a write's acknowledgement excepted, below).
//
// Writes. A node that is not a replica of the key forwards the write to the first replica that
// answers (trying them in preference order; one that sheds a first attempt of the write,
// RESOURCE_EXHAUSTED while its storage is behind, counts as not answering). A replica coordinates:
// it applies the write to its LocalStore with outbox entries for the other N-1 replicas in the same
// atomic batch, submits them to the ReplicationOutbox, and acknowledges once W replicas (itself
// included) hold the write durably. During a transition W counts within each ring: W of the old
// owners and W of the new ones (one replica may count in both), so an acknowledged write survives
// on either side of the change (the old owners while readers still use the old layout, the new
// owners once it completes; a leaving node or an owner that loses the key never holds it alone).
// The owners are those of the placement the coordinator holds when it decides (at the start, then
// at each replica's answer): a write started before a transition and confirmed after it needs W of
// the new owners too (W capped at their number), counting the coordinator only if it is one of
// them. Its outbox entries are for the replicas of its start, so when W needs a gainer it did not
// write to, it answers UNAVAILABLE and the client's retry reaches the new owners. If W cannot be
// reached it answers UNAVAILABLE; the write stays stored where it landed and keeps replicating,
// and a retry with the same idempotency token creates nothing new.
//
// A write whose context names single versions (CausalContext::dots(): the context a write
// returns while other siblings remain) replaces them only where they are held, and the record's
// version vector cannot remember a replaced dot without its predecessors. So a replica that is
// not the maker of any of them forwards such a write to the replica that made the first one it
// names (live, a replica of the key), which holds that version or has replaced it; if that
// replica cannot be reached, it coordinates the write itself. A node that is not a replica
// forwards such a write to that replica first. The maker coordinates what it
// receives (it names one of its own versions), and a write another node forwarded
// (WriteCommand::forwarded) is never handed on: a replica coordinates it, and a node that is not
// a replica in its own layout (the two nodes' layouts differ) answers UNAVAILABLE, not stored, so
// the forwarding node tries its next replica or coordinates it itself. A write thus makes at most
// one hop between nodes. The hop can fail after the receiver stored the write (its process died
// before answering): the forwarding node then sees UNAVAILABLE like an unreachable node and
// stores the write elsewhere too, a second copy that a retry with the same token would also
// make (deduplicated by token when the copies meet). A receiver that gossip reports alive but
// that this node cannot reach holds the write up to the forward deadline (DEADLINE_EXCEEDED,
// not retried elsewhere, as that may have stored it).
//
// Reads. R replicas are asked, this node's own replica first when it has one. When the answers,
// merged, hold no live version of the key (the replicas know nothing of it, or only tombstones,
// or a value a tombstone among the answers replaced), the remaining replicas are asked before
// answering NOT_FOUND (read-after-write for a Put of a key with no live version: a new key, or
// a deleted one; a replica that missed the delete may still answer the value it replaced).
// NOT_FOUND is answered only when enough replicas hold no live version that no write acknowledged
// with the default W can exist (N - W + 1 of them); otherwise, with replicas unreachable, the
// answer is UNAVAILABLE. Answers are merged; replicas that returned less than the merge get it back
// in the background (read repair), unless gathering the answers took longer than
// ClusterOptions::read_repair_max_age.
//
// Liveness. With a MemberLiveness (the gossip failure detector), replicas judged DOWN are tried
// last: a write is forwarded to a live replica first, a read asks live replicas first (and a
// widened read does not wait for DOWN ones once the others answered enough for NOT_FOUND), and
// List skips DOWN members (their keys are on other replicas too), so requests do not wait for
// timeouts on a dead node. A coordinated write still records outbox entries for DOWN replicas,
// which keep them until they return (hinted handoff).
//
// Everything is asynchronous: callbacks run on executor threads. Thread-safe.
#ifndef KV_NODE_COORDINATOR_H_
#define KV_NODE_COORDINATOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/lifetime_guard.h"
#include "node/local_store.h"
#include "node/membership.h"
#include "node/peer_transport.h"
#include "node/placement.h"
#include "node/quorum.h"
#include "node/replication_outbox.h"
#include "node/ring.h"
#include "node/scheduler.h"
#include "storage/sibling_set.h"

namespace kv {

struct ClusterOptions {
  std::string self_id;
  int replication_factor = 3;  // N
  int default_w = 2;
  int default_r = 1;
  // A coordinated write whose W acknowledgements have not all come this long after its local
  // commit is answered as a W shortfall (UNAVAILABLE marked kv-write-stored: stored, still
  // replicating; the client retries it on this node, which deduplicates it) rather than left
  // waiting for replicas that answer late (hung, or behind a long backlog). Below the peers'
  // forward timeout (kvnode derives that from it), so that a forwarding node gets this answer
  // rather than a timeout. Needs SetAckTimer; zero: no limit.
  absl::Duration ack_timeout = absl::Seconds(4);
  // A read that took longer than this to gather its answers repairs nothing (anti-entropy backs
  // it up): its repair would carry records read that long before, while the tombstone reaper
  // counts on a record spending no longer in flight than about one call (node/tombstone_reaper.h).
  absl::Duration read_repair_max_age = absl::Seconds(2);
};

// One replica's answer about a key, for DescribeKey and DescribeWrite.
struct ReplicaRecordView {
  Member member;
  absl::Status status;               // OK, or why the replica could not answer
  std::optional<SiblingSet> record;  // nullopt: the replica knows nothing of the key
};

struct WriteStatus {
  enum class State { kPending, kReplicated };
  struct Replica {
    Member member;
    bool applied = false;  // the replica holds the version (or something that replaced it)
    absl::Status status;   // OK, or why the replica could not be asked
  };
  std::string key;
  Dot dot;
  State state = State::kPending;  // kReplicated once all N replicas applied it
  std::vector<Replica> replicas;
};

// Counters for status pages and tests.
struct CoordinatorStats {
  uint64_t writes_coordinated = 0;
  uint64_t writes_forwarded = 0;
  uint64_t read_repairs = 0;
  // Replication lag: commit on the coordinator to all N replicas confirmed, in microseconds.
  std::vector<int64_t> recent_replication_lag_us;  // the last 49,152-65,536, oldest first
};

class Coordinator {
 public:
  Coordinator(ClusterOptions options, std::shared_ptr<const HashRing> ring, LocalStore* store,
              ReplicationOutbox* outbox, PeerTransport* transport, Executor* executor,
              const Clock* clock, const MemberLiveness* liveness = nullptr);
  // With a placement that changes with the cluster layout; `placement` must outlive it.
  Coordinator(ClusterOptions options, PlacementHolder* placement, LocalStore* store,
              ReplicationOutbox* outbox, PeerTransport* transport, Executor* executor,
              const Clock* clock, const MemberLiveness* liveness = nullptr);
  ~Coordinator();

  // What the members read (null: every one reads kFormatLevel), so that read repair leaves alone
  // a replica of an older level that holds all it can. Call before use; must outlive it.
  void SetFormatLevels(const FormatLevels* levels) { levels_ = levels; }
  // The scheduler that ends writes' waits at ClusterOptions::ack_timeout (null: no limit): a
  // sweep every quarter of the timeout answers the writes past it. Call once, before use; the
  // scheduler must outlive the coordinator or be stopped first.
  void SetAckTimer(Scheduler* scheduler);
  // How often that sweep runs for `ack_timeout`: a write past it is answered at most this late.
  static absl::Duration AckSweepPeriod(absl::Duration ack_timeout) {
    return std::max(ack_timeout / 4, absl::Milliseconds(10));
  }
  // Stops the ack sweeps (waits for one running): call before the scheduler stops. Writes still
  // waiting are answered by the outbox (its Shutdown) or not at all. Also run by the destructor.
  void StopAckTimer() { ack_guard_.Close(); }

  void Write(WriteCommand command, QuorumSpec w,
             std::function<void(absl::StatusOr<WriteReply>)> done);
  // The merged record of `key` (tombstones included); NOT_FOUND as described above.
  void Read(std::string key, QuorumSpec r, std::function<void(absl::StatusOr<SiblingSet>)> done);
  // Read's answer when this node can give it at once, without blocking: R resolves to 1, this
  // node is a replica of `key` and its record is in memory (Engine::GetFromMemory) and holds a
  // live version. Otherwise false (call Read): a replica without one must widen the read to the
  // others.
  bool TryReadFromMemory(absl::string_view key, const QuorumSpec& r, SiblingSet* record);
  // One page of keys with a live version, from every member's replica, merged (eventually
  // consistent: a key whose replicas are all unreachable is missing; a key deleted on some
  // replicas but not yet on others may be listed). Paging as in LocalStore::List.
  void List(std::string prefix, std::string page_token, uint32_t limit,
            std::function<void(absl::StatusOr<ListPage>)> done);
  // Every replica's record of `key`. With the ack timer set (SetAckTimer), the answer comes by
  // `answer_by` (the caller's deadline; infinite: none), less a margin to carry it back: a
  // replica that has not answered by then (hung, or cut off but not yet DOWN) shows as
  // unreachable (DEADLINE_EXCEEDED) instead of making the whole answer miss the deadline.
  void DescribeKey(std::string key, absl::Time answer_by,
                   std::function<void(std::vector<ReplicaRecordView>)> done);
  // Which replicas hold the version a write id names; `answer_by` as for DescribeKey.
  void DescribeWrite(std::string write_id, absl::Time answer_by,
                     std::function<void(absl::StatusOr<WriteStatus>)> done);

  // The local replica's store.
  LocalStore* store() const { return store_; }
  const ClusterOptions& options() const { return options_; }
  // The current owners' ring (the old ring during a transition); valid for the coordinator's
  // lifetime.
  const HashRing& ring() const { return placement_->Get()->current(); }
  std::shared_ptr<const Placement> placement() const { return placement_->Get(); }
  CoordinatorStats Stats() const;

 private:
  struct AckGroup;
  struct WriteState;
  struct ReadState;

  // "W=2" outside a transition; during one, W of the old owners and of the new ones, by id.
  static std::string DescribeQuorum(const std::vector<AckGroup>& groups);
  // The sets of owners of `key` whose W acknowledgements a write needs under `placement`: the
  // owners, or during a transition the old ones and the new ones. INVALID_ARGUMENT if W does
  // not fit a set, unless `clamp` (a write already stored): then W is all of that set.
  absl::StatusOr<std::vector<AckGroup>> OwnerGroups(const Placement& placement,
                                                    absl::string_view key, QuorumSpec w,
                                                    bool clamp = false) const;
  // Counts, under `state->mu`, each group's acknowledgements and pending answers; first, if the
  // placement changed since the groups were made, makes them again for the new one (a write
  // started before a transition still needs W of the new owners before it is acknowledged).
  void CountAcks(WriteState* state) const;
  // Under `state->mu`: the answer the client can be given now, if any (every group has its W,
  // or one cannot reach it any more); marks the write answered.
  std::optional<absl::StatusOr<WriteReply>> Decide(WriteState* state) const;
  // Decide, and also answer UNAVAILABLE now if W needs replicas among `entries` that gossip
  // reports DOWN (they will not confirm soon; the write replicates to them when they return).
  std::optional<absl::StatusOr<WriteReply>> DecideWithDownPeers(
      WriteState* state, const std::vector<OutboxEntry>& entries) const;

  std::vector<const Member*> Replicas(absl::string_view key) const;
  bool IsDown(const Member& member) const;
  // Moves DOWN members behind the others, keeping the order within each group.
  void LiveFirst(std::vector<const Member*>* members) const;
  // The live replica of `replicas` (not this node) that should coordinate a write with context
  // `seen` because it made a version the context names (see "A write whose context names single
  // versions" above); null to coordinate here (also for an empty context: a forwarded write's).
  const Member* MakerToCoordinate(const CausalContext& seen,
                                  const std::vector<const Member*>& replicas) const;
  void CoordinateWrite(WriteCommand command, QuorumSpec w, std::vector<AckGroup> groups,
                       uint64_t layout_version, std::vector<const Member*> replicas,
                       std::function<void(absl::StatusOr<WriteReply>)> done);
  void FinishCoordinatedWrite(std::string key, QuorumSpec w, std::vector<AckGroup> groups,
                              uint64_t layout_version, int total_peers,
                              std::vector<OutboxEntry> entries, WriteOutcome outcome,
                              std::function<void(absl::StatusOr<WriteReply>)> done);
  // Forwards to replicas[next], then to the next ones while they cannot be reached or shed a
  // first attempt of the write (RESOURCE_EXHAUSTED, not a message-size limit; RESOURCE_EXHAUSTED
  // when every one shed it). When every replica was a node of another cluster
  // (IsOtherCluster), the UNAVAILABLE says so.
  void ForwardWrite(WriteCommand command, QuorumSpec w, std::vector<const Member*> replicas,
                    size_t next, absl::Status last_error,
                    std::function<void(absl::StatusOr<WriteReply>)> done);
  // Reads one replica's record (this node's via the store, others via the transport);
  // `for_quorum`: as a client read counts it (LocalStore::ReadRecordForQuorum).
  // `done` also says whether the replica is catching up (QuorumRecord; only for_quorum).
  void ReadReplica(const Member& member, const std::string& key, bool for_quorum,
                   std::function<void(absl::StatusOr<SiblingSet>, bool catching_up)> done);
  void ContinueRead(const std::shared_ptr<ReadState>& state);
  void FinishRead(const std::shared_ptr<ReadState>& state);
  // Every replica's record of `key`, in preference order; a replica gossip reports DOWN is not
  // asked and shows as unreachable (UNAVAILABLE, "DOWN: ..."), and one that has not answered
  // near `answer_by` as unreachable (DEADLINE_EXCEEDED; see DescribeKey).
  void GatherReplicas(std::string key, absl::Time answer_by,
                      std::function<void(std::vector<ReplicaRecordView>)> done);
  // How many of a read's `n` replicas must answer without a live version for NOT_FOUND.
  int NotFoundQuorum(int n) const;
  void ReadRepair(const std::string& key, const SiblingSet& merged,
                  const std::vector<std::pair<const Member*, std::optional<SiblingSet>>>& answers);
  void RecordReplicationLag(absl::Duration lag);
  // Peers yet to confirm one coordinated write, and when it committed here.
  struct LagCountdown {
    std::atomic<int> remaining{0};
    absl::Time committed_at;
    // False for a retry answered from its first attempt (deduplicated): its entries are sent
    // again, but its lag from this commit would be a second, shorter sample of one write.
    bool sampled = true;
  };
  // One more peer holds the write; the last one records its lag.
  void CountDownLag(LagCountdown& lag);

  const ClusterOptions options_;
  std::unique_ptr<PlacementHolder> owned_placement_;  // for the fixed-ring constructor
  PlacementHolder* const placement_;
  LocalStore* const store_;
  ReplicationOutbox* const outbox_;
  PeerTransport* const transport_;
  Executor* const executor_;
  const Clock* const clock_;
  const MemberLiveness* const liveness_;  // null: every member is presumed up
  Scheduler* ack_timer_ = nullptr;        // see SetAckTimer
  // Coordinated writes still waiting for W acknowledgements, in commit order, with the time
  // their wait ends (ClusterOptions::ack_timeout); answered ones expire from the weak pointers.
  struct AckWait {
    absl::Time deadline;
    std::weak_ptr<WriteState> state;
  };
  void ScheduleAckSweep();
  void SweepAckWaits();
  absl::Mutex ack_mu_;
  std::deque<AckWait> ack_waits_ ABSL_GUARDED_BY(ack_mu_);
  LifetimeGuard ack_guard_;  // the sweeps; closed first by the destructor
  const FormatLevels* levels_ = nullptr;

  mutable absl::Mutex stats_mu_;
  CoordinatorStats stats_ ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace kv

#endif  // KV_NODE_COORDINATOR_H_

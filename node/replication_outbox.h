// ReplicationOutbox: the durable queue of updates each peer replica is owed, and the senders that
// drain it (asynchronous replication and hinted handoff).
//
// Entries. One per (peer, write), in the engine's outbox column:
//     key   = peer_id + '\0' + seq (u64, big-endian; seqs increase within a run, and a run
//             starts above every seq on disk: an empty outbox starts again at 1)
//     value = the data key written
// AddEntries puts them into the write's own batch (LocalStore::Write's batch hook), so a write
// that is acknowledged always has its outbox entries, and a crash never leaves one without the
// other. Peer ids never contain '\0' (they are [A-Za-z0-9_.-]), so the separator is unambiguous.
//
// Sending. Each peer has a sender that takes queued entries in batches of up to
// Options::batch_max_records distinct keys, reads each key's *current* record (which includes
// every write the entries stand for, since records only grow by merge) and sends the whole batch
// in one PeerTransport::MergeRecords call, with at most Options::max_in_flight batches per peer.
// A batch also stops at about Options::batch_max_bytes of records (it always holds at least
// one): the keys whose records would pass that go back to the front of the queue, untouched, for
// the next batch. Without it a backlog of large values would make one batch too large for the
// transport (or its deadline) every time, and the peer would never receive anything again.
// When the peer confirms, the batch's entries are deleted. When it fails, they go back to the
// queue and the sender waits a capped exponential backoff with full jitter before trying again,
// so a replica that is down keeps its entries until it returns (hinted handoff).
//
// Refusals. One record the peer can never take must not hold up every write queued behind it.
// When the peer refuses a batch (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE or
// DATA_LOSS: it answered, and the answer is about the batch's content), its keys are sent again
// one per batch, after the usual backoff; a record refused alone Options::refusals_before_giving_up
// times in a row (a refusal may pass: a peer's format level not known yet, a limit changed
// during a rolling restart) is given up on for that peer: its entries are deleted, counted as
// dropped (anti-entropy tries it again later) and reported with the refusal, and the sender
// goes on at once. A record larger than Options::max_record_bytes (what the transport can
// carry) is given up on the same way, at once and without being sent; a record this node cannot
// read (DATA_LOSS: corrupt) is sent alone and counted like one the peer refused. Any other error
// reading a record (an I/O error, which may pass) gives up on nothing: the batch goes back to the
// queue and the sender waits a backoff, as when the peer cannot be reached. A refusal marked
// IsNotAReplica (node/peer_transport.h: the peer does not replicate the key in its layout, and
// keeps no stray copies, PRODUCT.md C8) is final: the keys go again at once, one per batch, and
// the record refused alone is given up on at once, not counted as dropped (the peer does not
// replicate it). Unless the refusal says the peer's layout version and it is older than this
// node's (Options::layout_version): the peer has not learned the change that makes it a replica
// yet (gossip brings it within seconds): its keys go again at once, one per batch (the keys it
// already replicates go on), a record refused alone in this way is held back for a capped,
// jittered backoff of its own while the keys queued after it go on, and the entries' results
// wait for an attempt the peer answers for good (a write waiting for W is not failed by a peer
// that is only behind).
//
// Bounds. At most Options::max_entries_per_peer entries per peer on disk: a write beyond that
// records no entry for that peer and counts a drop (anti-entropy repairs it); client writes are
// never rejected for it. The bound is checked against submitted entries, so writes still
// committing may exceed it by their number. At most Options::max_queued_per_peer entries per
// peer are held in memory; the rest wait on disk and are scanned back in when the queue drains
// (also after a restart, by Recover).
//
// Results. Submit takes a callback run once per entry: OK when the peer confirmed a batch that
// carried the entry's key (read after the entry was written), or else an error: the error of the
// first failed attempt to send it (the entry itself stays queued and is retried; an attempt that
// a peer only behind refused does not count, see Refusals),
// RESOURCE_EXHAUSTED at once when the peer's memory queue is full (the entry waits on disk), or
// UNAVAILABLE when Shutdown comes first. Coordinators count W with it. An entry whose result
// was an error may also take a second callback, `on_late`, run with OK if a later batch that
// carries it is confirmed while the entry is still held in memory (not for one that waits on
// disk only, is given up on, or outlives Shutdown): coordinators time the replication lag of a
// write whose first delivery failed with it.
//
// Membership. AddPeer adds a member that joined. RemovePeer (a member that left, once the change
// is complete) stops sending to it, reports its waiting entries' callbacks with
// FAILED_PRECONDITION and deletes its entries from disk: the handoff made every remaining owner
// hold what the leaving member held, so nothing it was owed is needed elsewhere. Entries for the
// other peers are untouched. An entry added for the removed peer by a write committing at that
// moment is deleted when it is submitted, also if the peer was added again meanwhile (the entry
// belongs to the earlier incarnation). Entries allocated after RemovePeer began are not its
// to delete, so a peer added again under the same id meanwhile keeps its new entries on disk,
// and neither sends nor counts the ones the removal is still deleting.
//
// Pending entries. MayHaveEntriesFor(key) says whether some entry for `key` may still wait to be
// sent (to any peer). Since a batch reads its keys' records at send time, a record must not be
// removed locally while this is true, or the peers its entries stand for would never get the
// writes (node/unowned_record_cleaner.h). It is exact while every entry is held in memory and
// conservative (true for every key) while some peer has entries on disk only or a disk scan is
// running.
//
// Shutdown and destruction. Shutdown stops starting batches and scans, reports UNAVAILABLE to
// every callback not yet run, waits for a send or scan already under way, and makes completions
// that arrive later do nothing (their entries stay on disk for the next start): once it returns,
// the outbox calls neither the transport nor the scheduler again. The destructor calls Shutdown,
// then waits for transport completions and backoff timers already running inside the outbox to
// return (one may still be deleting its confirmed entries from the engine); those that arrive
// after it are ignored without touching the outbox. So the transport and scheduler may be
// stopped (or destroyed) after Shutdown; the engine, executor and clock must outlive the outbox.
// Never call Shutdown or destroy the outbox from one of its own callbacks, nor from a transport
// completion or executor task it started (with an inline executor that would deadlock).
//
// Thread-safe. Callbacks run on the executor, never under the outbox's lock. The outbox itself
// reads time only through Options::clock and randomness only through `rng`, and schedules only
// through the injected Scheduler, so it runs unchanged in the deterministic simulation.
#ifndef KV_NODE_REPLICATION_OUTBOX_H_
#define KV_NODE_REPLICATION_OUTBOX_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "node/clock.h"
#include "node/peer_transport.h"
#include "node/ring.h"
#include "node/scheduler.h"
#include "storage/engine.h"

namespace kv {

struct OutboxEntry {
  std::string peer_id;
  uint64_t seq = 0;
  std::string key;
};

struct PeerOutboxStats {
  std::string peer_id;
  uint64_t depth = 0;  // entries on disk waiting for this peer
  // Entries not recorded because the queue was full, or given up on because the peer refused
  // their record or it was too large to send (see Refusals).
  uint64_t dropped = 0;
  uint64_t sent_records = 0;  // records confirmed by the peer since start
  uint64_t failed_batches = 0;
  bool reachable = true;  // the last attempt succeeded (or none was made yet)
  std::string last_error;
  absl::Time last_success = absl::InfinitePast();
};

class ReplicationOutbox {
 public:
  struct Options {
    uint64_t max_entries_per_peer = 1'000'000;
    size_t max_queued_per_peer = 100'000;
    size_t batch_max_records = 256;
    // Keys plus record bytes per batch, about (the record that passes it is not sent).
    size_t batch_max_bytes = 4 << 20;
    // The largest record sent (key plus record bytes); a larger one is given up on (see
    // Refusals). Below the transport's message limit.
    size_t max_record_bytes = 60 << 20;
    int refusals_before_giving_up = 5;
    // One batch out per peer: entries written meanwhile gather into the next batch. Measured on a
    // 3-node loopback cluster under kvbench put load, 1 gave batches of ~9 records instead of ~5
    // (2 in flight) and ~10% more throughput; a peer that is slow to answer still gets up to
    // batch_max_records per round trip.
    int max_in_flight = 1;
    absl::Duration initial_backoff = absl::Milliseconds(20);
    absl::Duration max_backoff = absl::Seconds(2);
    // Stamps PeerOutboxStats::last_success; null leaves it InfinitePast. Must outlive the outbox.
    const Clock* clock = nullptr;
    // This node's cluster layout version (may be null: unknown). See Refusals.
    std::function<uint64_t()> layout_version;
  };
  using EntryCallback = std::function<void(const OutboxEntry& entry, absl::Status status)>;

  ReplicationOutbox(std::vector<Member> peers, Engine* engine, PeerTransport* transport,
                    Scheduler* scheduler, Executor* executor, absl::BitGenRef rng, Options options);
  ~ReplicationOutbox();

  // Loads queue depths and the next seq from disk and queues what is there. Call once, before
  // any other method.
  absl::Status Recover();

  // Adds an entry for each of `peer_ids` to `batch`. Peers whose queue is full get none (a drop
  // is counted). Returns the entries added, to Submit once the batch is durable.
  std::vector<OutboxEntry> AddEntries(absl::string_view key,
                                      const std::vector<std::string>& peer_ids, WriteBatch* batch);
  // Forgets entries AddEntries returned whose batch failed to commit (so they are on no disk):
  // until then MayHaveEntriesFor counts them as waiting.
  void Abandon(const std::vector<OutboxEntry>& entries);
  // Queues durable entries for sending; `on_result` runs once per entry (may be null), and
  // `on_late` (may be null) as well for an entry confirmed after an error was its result (see
  // Results above).
  void Submit(std::vector<OutboxEntry> entries, EntryCallback on_result,
              EntryCallback on_late = nullptr);

  // Ends the peer's backoff now, if it is waiting one out, and sends what is queued for it: for
  // when the failure detector sees a DOWN peer come back. Unknown peers are ignored.
  void Resume(absl::string_view peer_id);
  // Adds a replication peer (a member that joined); for a known id, only takes its address (and
  // zone), which a member that joined again elsewhere changed, and then ends a backoff it is
  // waiting out (Resume, on the executor). Entries on disk for
  // its id that Recover left alone (an earlier run's, for a peer unknown at the start) are found
  // by a scan, on the executor, and sent; that scan counts them in the peer's depth.
  void AddPeer(const Member& member);
  // Removes a replication peer (a member that left; see Membership above) and returns how many of
  // its entries were deleted from disk. NOT_FOUND for a peer that is not known; an engine error
  // if the deletion failed (the peer is removed all the same; the entries left on disk are never
  // sent, and are deleted by a later RemovePeer of the same id).
  absl::StatusOr<uint64_t> RemovePeer(absl::string_view peer_id);
  // Whether an entry for `key` may still wait to be sent (see Pending entries above). Cheap
  // enough to call inside a store mutation: no I/O.
  bool MayHaveEntriesFor(absl::string_view key) const;
  // Entries deleted by RemovePeer since start.
  uint64_t removed_entries() const;

  std::vector<PeerOutboxStats> Stats() const;
  // Stops sending: no new batches start, every callback not yet run gets UNAVAILABLE, and
  // completions that arrive later are ignored. Idempotent.
  void Shutdown();

  // Outbox column key of an entry (exposed for tests).
  static std::string EntryKey(absl::string_view peer_id, uint64_t seq);

 private:
  struct Waiting {
    OutboxEntry entry;
    EntryCallback on_result;  // null once the entry's result has been reported
    // Runs if the entry is confirmed after its result was an error (may be null).
    EntryCallback on_late = nullptr;
  };
  // One callback to run, with its result.
  struct Report {
    EntryCallback on_result;
    OutboxEntry entry;
    absl::Status status;
  };
  struct PeerState;
  struct Liveness;

  PeerState* FindPeer(absl::string_view peer_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps `waiting` in memory if the peer's bound allows and returns true; otherwise the entry
  // waits on disk only and a scan is due.
  bool Hold(PeerState* peer, Waiting waiting) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds to the memory queue, without checking the bound.
  void Enqueue(PeerState* peer, Waiting waiting) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves queued entries into batches ready to send, and asks for a disk scan when the memory
  // queue is empty but entries wait on disk.
  void Pump(PeerState* peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A backoff to schedule: OnBackoffDone(peer, gen) after `delay`. `gen` is read with the pause,
  // under the same lock, so that a Resume in between makes this backoff's timer a no-op.
  struct Backoff {
    absl::Duration delay;
    uint64_t gen = 0;
  };
  // Pauses the peer's sender; returns the jittered backoff to schedule, or nullopt if it was
  // already paused.
  std::optional<Backoff> StartBackoff(PeerState* peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleBackoff(PeerState* peer, std::optional<Backoff> backoff) ABSL_LOCKS_EXCLUDED(mu_);
  // Sends the peer's ready batches and runs its scans until none is left. Returns at once if
  // another call is already doing it, so an inline completion never recurses.
  void Drain(PeerState* peer) ABSL_LOCKS_EXCLUDED(mu_);
  void SendBatch(PeerState* peer, uint64_t batch_id, const std::vector<std::string>& keys)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Moves the entries of `keys` from in-flight batch `batch_id` back to the queue, unsent.
  void Requeue(PeerState* peer, uint64_t batch_id, absl::Span<const std::string> keys)
      ABSL_LOCKS_EXCLUDED(mu_);
  // `give_up`: delete the batch's entries (one record's) and count them dropped whatever the
  // status (the record is too large to send). `local`: the batch failed on this node (a read
  // error that may pass), so it says nothing of the peer's reachability.
  void OnBatchDone(PeerState* peer, uint64_t batch_id, absl::Status status, bool give_up = false,
                   bool local = false) ABSL_LOCKS_EXCLUDED(mu_);
  void OnBackoffDone(PeerState* peer, uint64_t gen) ABSL_LOCKS_EXCLUDED(mu_);
  // A key held back for a backoff of its own (a peer only behind refused it alone): until
  // OnDeferralDone(peer, key) after `delay`, batches skip it.
  struct Deferral {
    absl::Duration delay;
    std::string key;
    int gen = 0;  // the key's hold count when it was held (PeerState::Deferral::attempts)
  };
  // Holds `key` back; returns the timer to schedule, after a jittered delay.
  Deferral DeferKey(PeerState* peer, const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Uniform in [0, ceiling] ("full jitter").
  absl::Duration FullJitter(absl::Duration ceiling) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnDeferralDone(PeerState* peer, const std::string& key, int gen) ABSL_LOCKS_EXCLUDED(mu_);
  void ScanDisk(PeerState* peer) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the callbacks on the executor.
  void RunReports(std::vector<Report> reports);
  // Deletes the outbox column entries of `peer_id` whose seq is below `seq_limit`; returns how
  // many there were.
  absl::StatusOr<uint64_t> DeleteEntriesBelow(absl::string_view peer_id, uint64_t seq_limit);
  bool NoneDraining() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Engine* const engine_;
  PeerTransport* const transport_;
  Scheduler* const scheduler_;
  Executor* const executor_;
  const Options options_;
  // Shared with pending completions and timers, which check it before touching the outbox.
  const std::shared_ptr<Liveness> liveness_;

  mutable absl::Mutex mu_;
  // The current peers (the PeerState objects never move); their fields are guarded by mu_ except
  // the immutable `id`.
  std::map<std::string, std::unique_ptr<PeerState>> peers_ ABSL_GUARDED_BY(mu_);
  // Peers removed by RemovePeer, kept until destruction: a send, scan or timer of theirs may
  // still be under way.
  std::vector<std::unique_ptr<PeerState>> removed_peers_ ABSL_GUARDED_BY(mu_);
  uint64_t removed_entries_ ABSL_GUARDED_BY(mu_) = 0;
  // Ids whose RemovePeer is still deleting entries, with the seq below which it deletes: a peer
  // added again under such an id meanwhile leaves those entries alone (PeerState::ignore_below).
  struct Removal {
    uint64_t seq_limit = 0;  // the largest of the removals under way
    int under_way = 0;
  };
  std::map<std::string, Removal, std::less<>> removing_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  absl::BitGenRef rng_ ABSL_GUARDED_BY(mu_);  // backoff jitter; the generator outlives us
};

}  // namespace kv

#endif  // KV_NODE_REPLICATION_OUTBOX_H_

// LocalStore: one replica's keys on one node, the core of a single node.
//
// It turns client mutations into versions (dotted version vectors, storage/sibling_set.h),
// enforces request limits, deduplicates by idempotency token, and stores each key's sibling set
// in the engine's data column. Every mutation's changes (the new record, the idempotency record,
// outbox entries) are written in one atomic engine batch, so a crash never leaves one without
// the other.
//
// Mutations (Write, WriteAsync, MergeRecord, PurgeIfUnchanged) go through one CommitQueue
// (node/commit_queue.h): they run one after another, and the mutations that arrive while one
// engine write is under way are committed together in the next, as one batch (group commit).
// That serializes writes of one key without locks and makes one write-ahead-log append (one fsync
// with sync_writes) serve many requests. A mutation is acknowledged only after its batch is in
// the write-ahead log.
//
// For throughput, prefer WriteAsync: callers then never wait for each other (a blocking Write
// that arrives while another thread commits sleeps until its group is written, which costs a
// context switch per call when many threads write at once). Without Options::commit_executor
// (kvnode's choice), whichever thread commits (a WriteAsync or a blocking call arriving while
// nobody commits) commits group after group until the queue is empty, and runs the `done`
// callbacks of the WriteAsync writes in each group; with one, WriteAsync hands its commit and
// those callbacks to the executor, which costs more context switches per write. Either way a
// blocking call commits on its own thread when nobody else does.
//
// So without a commit_executor every mutating call, blocking or not, may run other writes'
// `done` callbacks: call none of them holding a lock that such a callback takes.
//
// Actor epochs: on first open of an empty engine the store draws a fresh epoch and persists it;
// its actor is "<node_id>#<epoch>". A wiped data directory therefore yields a new actor and
// old dots are never reused. Without sync_writes a machine crash can also lose the tail of the
// write-ahead log: the dots of the writes in it may live on at other replicas, and a new version
// under the same actor would take the same counter (two versions, one dot: a merge keeps one of
// them). So Open also draws a new epoch when the previous run did not end with RecordCleanStop,
// did not sync its writes, and the machine has restarted since (Options::boot_id differs). A
// crash of the process alone loses nothing the write-ahead log was given, so it keeps the epoch.
//
// History generations: the store keeps a generation number, advanced and synced at every Open
// (before any write of the run) and by AdvanceGeneration (kvnode: every few seconds), and gossiped
// by the node once stored (node/gossip.h). A data directory restored from a backup or a volume
// snapshot looks like a clean or synced stop, yet the node may have made writes since that the
// directory lacks while other replicas hold them: a new version would then reuse their dots
// (Riak's KV679). Such a directory holds an older generation than the node gossiped since. So
// before Open kvnode asks its peers for the generation they last saw from this node
// (Options::peer_generation; see node/history_check.h); if it is above the stored one, Open draws a
// new epoch and catches up. A directory copied less than one advance (plus the gossip delay)
// before the node's last write goes unnoticed. A restore while no peer answers is found later, by
// gossip (node/gossip.h, HistoryConflict): kvnode then calls MarkHistoryConflict, after which the
// store refuses new writes (their dots could collide) and the next Open draws a new epoch and
// catches up.
//
// Catching up: a store that took a new epoch for either reason (a machine crash, or a store
// older than the node's last run) may also lack a Put that it
// acknowledged and another replica holds. A read answers NOT_FOUND once N-W+1 replicas hold no
// live version of the key (node/coordinator.h), which is only sound if each of them kept every
// write it acknowledged. So from such an Open (the previous run's record says it may have lost
// writes, or is unreadable; not for a store an earlier version wrote, which has no record) until
// FinishCatchingUp (AntiEntropy calls it once an exchange with every peer has completed),
// ReadRecordForQuorum answers UNAVAILABLE instead of
// "no live version": the read asks others and counts this replica as not answering. The state is
// stored (meta key "catching_up"), so a restart before the end keeps it.
//
// Errors: INVALID_ARGUMENT for bad input (oversized key/value/context/token, malformed context,
// idempotency token reused with different parameters), NOT_FOUND from ReadRecord for a key the
// replica knows nothing of, engine errors otherwise. A failed call changes nothing (but see
// node/commit_queue.h: a write whose fsync failed may reappear after a restart).
//
// Thread-safety: all methods may be called concurrently. Calls block on storage I/O: run them on
// an Executor, not on a gRPC thread. The exception is WriteAsync: with a commit_executor it only
// checks and queues the write; without one, a gRPC handler may call it (kvnode's Put and Delete
// handlers do: the handler that commits returns only once the queue is empty, and may meanwhile
// write other callers' mutations, merges and purges included).
#ifndef KV_NODE_LOCAL_STORE_H_
#define KV_NODE_LOCAL_STORE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "node/clock.h"
#include "node/commit_queue.h"
#include "node/limits.h"
#include "node/membership.h"
#include "storage/engine.h"
#include "storage/format_level.h"
#include "storage/sibling_set.h"

namespace kv {

struct WriteCommand {
  std::string key;
  bool is_delete = false;
  std::string value;              // ignored for deletes
  std::string context;            // encoded CausalContext; empty = none
  std::string idempotency_token;  // empty = no deduplication
  // The client says it made the token for this write and sends it for the first time
  // (PutRequest.first_attempt): nothing can be recorded under the token, so the write records it
  // without looking it up, nor for a forgotten copy of itself (a copy the key's record holds is
  // still recognized). Trusted only if the write is prepared within
  // LocalStore::kFirstAttemptTrustWindow of being queued. Never sent to another node (the
  // forwarding transport drops it, and a node clears it on a forwarded write); whoever applies
  // the command again must clear it.
  bool first_attempt = false;
  // Another node forwarded it here (kForwardedWriteMetadata): see node/coordinator.h.
  bool forwarded = false;
  // When the client stops waiting for the answer: its call's deadline on SteadyNow's scale
  // (DeadlineOf, node/grpc_util.h; InfiniteFuture: none). A node that forwards the write waits
  // no longer than this for the coordinator's answer. Not part of the write: nothing stores or
  // compares it.
  absl::Time deadline = absl::InfiniteFuture();
};

struct WriteOutcome {
  std::string write_id;       // "<dot>/<base64url key>"
  std::string context;        // encoded CausalContext to hand back to the client
  bool deduplicated = false;  // the token had been seen with the same request
  Dot dot;                    // the new version (the first one when deduplicated)
  SiblingSet record;          // the key's record after the write (empty when deduplicated)
};

struct ListPage {
  std::vector<std::string> keys;
  std::string next_page_token;  // empty when done
};

// Told about every change of a key's record, inside the change's atomic batch (anti-entropy keeps
// its Merkle index this way). Called while no other mutation of the store runs, so old and new
// are exact; it must only append to `batch` and update in-memory state.
class RecordObserver {
 public:
  virtual ~RecordObserver() = default;
  // The records as encoded (storage/FORMAT.md): `old_encoded` is null if the key had none,
  // `new_encoded` is null if the record is purged.
  virtual void OnRecordChange(absl::string_view key, const std::string* old_encoded,
                              const std::string* new_encoded, WriteBatch* batch) = 0;
  // A group write failed: some changes told to OnRecordChange since the last successful write
  // were not written (and never will be). Called on the committing thread, before the failed
  // mutations complete.
  virtual void OnChangesLost() {}
};

class LocalStore {
 public:
  // How long after it is queued a write marked as a first attempt is still taken at its word;
  // prepared later (a stalled commit), its token is looked up as any other's.
  static constexpr absl::Duration kFirstAttemptTrustWindow = absl::Milliseconds(250);

  struct Options {
    Limits limits;
    absl::Duration idempotency_ttl = absl::Hours(24);
    bool sync_writes = false;  // fsync every acknowledged batch
    // Where WriteAsync commits (node/commit_queue.h). Null: on the threads that call it. Set, it
    // must outlive the store and run everything scheduled on it before the store is destroyed;
    // WriteAsync then does no storage work itself and may be called from a gRPC handler.
    Executor* commit_executor = nullptr;
    // The storage format level this node reads (storage/format_level.h). Below kFormatLevel only
    // to act as an older node in tests: writes whose context it could not read fail with
    // INVALID_ARGUMENT, and ReplicaService refuses records it could not read, as such a node does.
    uint32_t format_level = kFormatLevel;
    // Writes (WriteAsync) and merges (MergeRecordsAsync) waiting to be committed hold about this
    // many bytes of keys and values at most: AdmitWrites refuses more (a stalled disk must not
    // make the node queue whatever clients send until memory runs out). 0: no bound.
    size_t max_queued_write_bytes = 256 << 20;
    // Names the machine's current boot (kvnode: /proc/sys/kernel/random/boot_id, or a fresh
    // random string if it cannot be read, so that every start counts as a machine restart).
    // Compared with the previous run's (see "Actor epochs" above).
    std::string boot_id;
    // The highest generation of this node that its peers have seen (see "History generations"
    // above); 0 if none said. Above the stored generation: the store is older than the node's
    // last run, and Open draws a new epoch. The run's generation is above both.
    uint64_t peer_generation = 0;
    // Measures how long a write waited to be committed (kFirstAttemptTrustWindow): a clock that
    // never steps, so that a step back of the wall clock does not make a write that waited long
    // look fresh. Null: SteadyClock::Get(). Tests pass a ManualClock.
    const Clock* wait_clock = nullptr;
  };

  // What Open will find in `engine`, read before it (see "History generations" above).
  struct StoredHistory {
    bool has_epoch = false;   // false: an empty store, which draws a new epoch anyway
    uint64_t generation = 0;  // 0: none stored (a new store, or one of an earlier version)
  };
  static absl::StatusOr<StoredHistory> ReadStoredHistory(Engine* engine);

  // Loads (or, on an empty engine or after a machine crash that may have lost writes, creates)
  // the node's actor epoch, and durably records that a run has started (with sync, before any
  // write of the run).
  static absl::StatusOr<std::unique_ptr<LocalStore>> Open(Engine* engine, const Clock* clock,
                                                          absl::BitGenRef rng, std::string node_id,
                                                          Options options);

  const std::string& actor() const { return actor_; }
  // Why Open drew a new epoch for a store that had one ("" if it did not): for the node's log.
  const std::string& new_epoch_reason() const { return new_epoch_reason_; }
  // True if Open drew a new epoch (an empty store, or new_epoch_reason()).
  bool new_epoch() const { return new_epoch_; }
  // This run's history generation, as stored (see "History generations" above).
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Advances the generation by one, or to `at_least` if that is more, and stores it, synced;
  // returns the new one, which may then be gossiped. On error the generation stays.
  absl::StatusOr<uint64_t> AdvanceGeneration(uint64_t at_least = 0);
  // Marks that this run kept an epoch it should not have: the directory is older than an earlier
  // run of the node (see "History generations" above; `reason` says how that showed). From the
  // call on, writes are refused when they commit (UNAVAILABLE: another node can take them), also
  // those already queued, until a restart; and the store is catching up (it lacks writes of that
  // run). No I/O: callable on any thread. Only the first call counts.
  void MarkHistoryConflict(absl::string_view reason);
  // Stores the mark (synced; meta key "history_conflict"), so that the next Open draws a new
  // epoch and catches up. No-op without a mark. The refusal holds even if this fails.
  absl::Status StoreHistoryConflict();
  // Empty, or the reason given to MarkHistoryConflict in this run.
  std::string history_conflict() const;
  // True while the store may lack writes it acknowledged (see "Catching up" above).
  bool catching_up() const { return catching_up_.load(std::memory_order_acquire); }
  // Ends catching up (and forgets it durably enough: a crash that loses the record only makes
  // the next run catch up again). No-op if the store is not catching up.
  absl::Status FinishCatchingUp();

  // Records that this run stopped cleanly, in a synced write (which makes every earlier write
  // durable too): the next Open keeps the epoch even if the machine restarts meanwhile. Call
  // once the last mutation of the run has been written; a mutation after it could be lost in a
  // machine crash without the next Open noticing.
  absl::Status RecordCleanStop();
  const Options& options() const { return options_; }

  // Adds mutations to a write's atomic batch (the replication outbox entries for the key). The
  // batch may hold other writes' changes too (group commit); the hook only appends.
  using BatchHook = std::function<void(absl::string_view key, WriteBatch* batch)>;
  using WriteCallback = std::function<void(absl::StatusOr<WriteOutcome>)>;

  // Applies a Put or Delete coordinated by this node. A Delete without context removes every
  // version this replica holds (it is written as a tombstone covering them). `hook`, if set, is
  // called exactly once on success, while no other mutation of the store runs, to add to the
  // batch that is written: the new version's batch, also when the write is deduplicated (so that
  // a retried write is sent to the other replicas again).
  //
  // Deduplication: a token seen before on this node returns the first result. A token carried
  // by a version this replica holds, or remembers as replaced (the write was coordinated
  // elsewhere and has replicated here), with the same value also returns that version; with
  // another value it is INVALID_ARGUMENT. Merges and writes use idempotency_ttl as the retry
  // window of storage/sibling_set.h ("Retried writes"): every node must use the same TTL.
  absl::StatusOr<WriteOutcome> Write(const WriteCommand& command, const BatchHook& hook = {});

  // Write without waiting: `done` is called exactly once with what Write would return, either
  // before WriteAsync returns or later from the thread committing the write. Without a
  // commit_executor the calling thread may commit (and complete) writes that other threads
  // submitted meanwhile; with one, it only checks the command and queues it, and `done` runs on
  // an executor thread. `done` must not block on a Write of this store on another thread.
  void WriteAsync(WriteCommand command, BatchHook hook, WriteCallback done);
  // OK while the writes and merges waiting to be committed hold at most
  // Options::max_queued_write_bytes; RESOURCE_EXHAUSTED (which clients and peers retry) above
  // that. Checked by the RPC handlers before they queue a write or a merge.
  absl::Status AdmitWrites() const;
  size_t queued_write_bytes() const { return commits_.queued_bytes(); }
  // While the returned Hold lives, the WriteAsync calls of this thread queue their writes
  // without committing them (CommitQueue::Hold): writes submitted in a loop then share a group.
  CommitQueue::Hold HoldCommits() { return CommitQueue::Hold(&commits_); }

  // The replica's record of `key`, tombstones included; NOT_FOUND if it has none.
  absl::StatusOr<SiblingSet> ReadRecord(absl::string_view key);
  // ReadRecord as this replica answers it to a read (Coordinator) or a peer (ReplicaService):
  // while catching up, UNAVAILABLE instead of NOT_FOUND or a record without a live version, and
  // any other record marked `catching_up` (a newer answer may replace its live versions, and
  // it may lack a write it acknowledged: the read then does not count it toward NOT_FOUND).
  struct QuorumRead {
    SiblingSet record;
    bool catching_up = false;
  };
  absl::StatusOr<QuorumRead> ReadRecordForQuorum(absl::string_view key);
  // ReadRecordForQuorum if `for_quorum`, else ReadRecord, unmarked: as a replica answers a read.
  absl::StatusOr<QuorumRead> ReadRecordAs(absl::string_view key, bool for_quorum);
  // ReadRecord without disk I/O (Engine::GetFromMemory): false, leaving `*record` alone, when
  // the record is not in memory. For threads that must not block.
  bool ReadRecordFromMemory(absl::string_view key, absl::StatusOr<SiblingSet>* record);

  // Keys with at least one live version that start with `prefix`, in byte order, at most
  // `limit` (0 = default; capped at the maximum). `page_token` continues an earlier page.
  // INVALID_ARGUMENT as ValidateList says.
  absl::StatusOr<ListPage> List(absl::string_view prefix, absl::string_view page_token,
                                uint32_t limit);
  // INVALID_ARGUMENT for a prefix longer than max_key_bytes, or a page token that is not the
  // next_page_token of a List with the same prefix: what List checks before reading anything
  // (a coordinator checks it before asking every member).
  absl::Status ValidateList(absl::string_view prefix, absl::string_view page_token) const;

  // Merges a record received from another replica; returns the merged record.
  absl::StatusOr<SiblingSet> MergeRecord(absl::string_view key, const SiblingSet& remote);
  // MergeRecord for many records at once, committed together (few engine writes for a whole
  // replication batch). Each merge succeeds or fails on its own; returns the first error.
  struct RemoteRecord {
    absl::string_view key;
    const SiblingSet* record;
  };
  absl::Status MergeRecords(absl::Span<const RemoteRecord> records);
  // MergeRecords without waiting, as WriteAsync is to Write: a bad record fails the call before
  // anything is queued (`done` runs before MergeRecordsAsync returns); otherwise the merges are
  // queued together and `done` gets the first error among them, in order, or OK, once every one
  // has completed (on this thread or on the thread committing the last one). Without a
  // commit_executor the calling thread may commit, other callers' mutations too, so a gRPC
  // handler may call it (ReplicaService's MergeBatch does). The keys and records must stay alive
  // until `done` runs.
  void MergeRecordsAsync(std::vector<RemoteRecord> records, std::function<void(absl::Status)> done);
  // Runs `at_cut` on the committing thread between two commit groups, when every write, merge
  // and purge already prepared (so seen by the RecordObserver) has been written to the engine
  // (or has failed) and none prepared after it: a point in the stream of record changes that the
  // observer sees and the engine holds alike (MerkleIndex reads its snapshot there). Called from
  // any thread but the committing one, everything submitted before the call is written first.
  // Returns once `at_cut` has run. `at_cut` must not call into the store; RunAtCommitCut must
  // not be called from a mutation's Prepare.
  void RunAtCommitCut(const std::function<void()>& at_cut);

  // Lets the engine forget idempotency records older than the TTL (Engine::RemoveExpired) and
  // deletes those of the old two-key layout; returns how many were removed. Expired records are
  // ignored whether or not they have been removed yet.
  absl::StatusOr<size_t> ExpireIdempotencyRecords();

  // INVALID_ARGUMENT naming the limit if the key is empty or too long.
  absl::Status ValidateKey(absl::string_view key) const;
  // INVALID_ARGUMENT if the key is empty or longer than any node stores (kMaxKeyBytesCeiling).
  // What reads, merges and purges of stored records check: a key stored before max_key_bytes
  // was lowered (or by a node with a larger one) is longer than ValidateKey allows, and its
  // record must still be readable, replicated and purgeable.
  absl::Status ValidateStoredKey(absl::string_view key) const;
  // ValidateKey, and INVALID_ARGUMENT naming the limit for a value, context or token that is too
  // long, or a token that is not printable ASCII: what Write checks before doing anything.
  absl::Status ValidateWrite(const WriteCommand& command) const;

  // Sets the observer of record changes (null: none). Call before the store is used; the
  // observer must outlive the store's use.
  void SetObserver(RecordObserver* observer) { observer_ = observer; }

  // Sets what the cluster's members read (null: every member reads kFormatLevel). Call before
  // the store is used; `levels` must outlive the store's use.
  void SetFormatLevels(const FormatLevels* levels) { levels_ = levels; }
  // `context` encoded for a client, who may take it to any member: bound to `key` (a write of
  // another key refuses it), and of the level every member reads (storage/format_level.h:
  // unbound below level 3, without tokened versions below level 2). Every context a write
  // returns goes through it; Get's answer must too.
  std::string ContextForClients(CausalContext context, absl::string_view key) const;

  // Deletes the record of `key` only if it still equals `expected` (a tombstone purge, or the
  // removal of a key this node no longer owns): OK if purged (or already absent),
  // FAILED_PRECONDITION if it changed. Raises the store's counter floor to every counter of this
  // node's actor that the record had seen, in the same batch, so that a later write of the key
  // never reuses a dot of the purged history (KV679). A record of tombstones only also leaves its
  // tokened versions and replaced writes as forgotten writes (KeepForgottenWrites), so that a
  // late retry copy does not bring back a deleted write; such a purge is synced before it
  // returns, also without Options::sync_writes (and with it, every write before it: the tombstone
  // it confirms). The observer sees a record change to none.
  // `check`, if set, runs inside the purge's commit once the record compared equal, while no
  // other mutation of the store runs (so no write adds outbox entries for the key meanwhile); a
  // status it returns that is not OK cancels the purge and is returned.
  using PurgeCheck = std::function<absl::Status(absl::string_view key)>;
  absl::Status PurgeIfUnchanged(absl::string_view key, const SiblingSet& expected,
                                const PurgeCheck& check = {});

 private:
  class WriteMutation;
  class MergeMutation;
  // ValidateStoredKey and CheckInvariants of every record: what a merge checks before queueing.
  absl::Status CheckRemoteRecords(absl::Span<const RemoteRecord> records) const;
  class LegacyExpiryMutation;
  class PurgeMutation;

  LocalStore(Engine* engine, const Clock* clock, std::string actor, Options options);
  // Checks `command` and builds its mutation; `done` receives its outcome.
  absl::StatusOr<std::unique_ptr<WriteMutation>> NewWriteMutation(WriteCommand command,
                                                                  BatchHook hook,
                                                                  WriteCallback done);
  // The body of a write, run by the commit queue.
  absl::StatusOr<WriteOutcome> PrepareWrite(WriteMutation& write, WriteGroup& group);
  // The first result recorded under the write's token (at `token_key`) on this node, if any;
  // INVALID_ARGUMENT if that token was used with other parameters. An expired format-1 record
  // leaves the key of its expiry index entry in `*legacy_index_to_delete`.
  absl::StatusOr<std::optional<WriteOutcome>> RecordedResult(
      const WriteMutation& write, WriteGroup& group, const std::string& token_key,
      int64_t now_micros, std::string* legacy_index_to_delete) const;
  // The dot of an earlier copy of the tokened write `command` that `record`, the writer's
  // context `seen` or this replica's forgotten writes know of; INVALID_ARGUMENT if the token
  // was used with other content and no copy matches.
  // `first_attempt`: the write's mark is trusted (PrepareWrite), so no forgotten copy is looked
  // for.
  absl::StatusOr<std::optional<Dot>> EarlierCopyOf(const WriteCommand& command, bool first_attempt,
                                                   const SiblingSet& record,
                                                   const CausalContext& seen, WriteGroup& group,
                                                   int64_t now_micros) const;
  // Keeps `writes`, replaced writes of `key` that its record no longer remembers
  // (SiblingSet::TakeForgotten, or everything of a record being purged), in the idempotency
  // column (node/idempotency_record.h) until their retry window ends, so that late retry copies
  // of them are still recognised here.
  void KeepForgottenWrites(WriteGroup& group, absl::string_view key,
                           const std::vector<ReplacedWrite>& writes, int64_t now_micros) const;
  // The kept forgotten write of `key` that `copy` (a tokened version) is a copy of: same
  // fingerprint, another dot, timestamps within the retry window, not expired. None if absent
  // or damaged (then deduplication is only as good as the record's memory).
  absl::StatusOr<std::optional<ReplacedWrite>> ForgottenCopyOf(WriteGroup& group,
                                                               absl::string_view key,
                                                               const Sibling& copy,
                                                               int64_t now_micros) const;
  // The lowest format level among the cluster's members (SetFormatLevels).
  uint32_t ClusterFormatLevel() const;
  // Sweeps the expiry index of format-1 idempotency records (node/idempotency_record.h).
  absl::StatusOr<size_t> ExpireLegacyIdempotencyRecords(int64_t now_micros);

  Engine* const engine_;
  const Clock* const clock_;
  const Clock* const wait_clock_;  // Options::wait_clock, or SteadyClock::Get()
  const std::string actor_;
  const Options options_;
  std::string new_epoch_reason_;  // set by Open only
  bool new_epoch_ = false;        // likewise
  std::atomic<bool> catching_up_{false};
  // UNAVAILABLE once MarkHistoryConflict ran (writes are refused), OK before.
  absl::Status HistoryConflictRefusal() const;

  std::atomic<bool> has_history_conflict_{false};  // set once, by MarkHistoryConflict
  mutable absl::Mutex history_conflict_mu_;
  std::string history_conflict_ ABSL_GUARDED_BY(history_conflict_mu_);
  absl::Mutex generation_mu_;  // orders AdvanceGeneration's writes
  std::atomic<uint64_t> generation_{0};
  RecordObserver* observer_ = nullptr;
  const FormatLevels* levels_ = nullptr;
  // Counters of this actor below or at the floor are never handed out (raised by purges).
  std::atomic<uint64_t> counter_floor_{0};
  // Set once a sweep finds no format-1 expiry index entry (none is written any more).
  std::atomic<bool> legacy_index_empty_{false};
  CommitQueue commits_;
};

// Fingerprint of a mutation's parameters, stored with its idempotency token.
std::string WriteFingerprint(const WriteCommand& command);
// Encodes a write id; ParseWriteId reverses it (INVALID_ARGUMENT if malformed).
std::string MakeWriteId(const Dot& dot, absl::string_view key);
absl::Status ParseWriteId(absl::string_view write_id, Dot* dot, std::string* key);

}  // namespace kv

#endif  // KV_NODE_LOCAL_STORE_H_

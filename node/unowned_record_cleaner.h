// UnownedRecordCleaner: once a membership change has completed, removes from this node the
// records of keys it no longer owns (this node is not in the key's preference list of N on the
// new ring), in the background and rate-limited, so that old owners do not keep a copy of
// everything they ever held.
//
// When. OnPlacement starts a pass for a stable layout (no transition) in which this node is an
// owner: after the completing layout (v+2) of a change, and at start (which finishes a pass a
// restart interrupted, and removes stray copies that arrived meanwhile). Nothing runs during a
// transition, and a node outside the layout removes nothing (one waiting to be joined may already
// be receiving its handoff). A newer layout ends the pass at once; the next stable one starts a
// new pass on its ring (a key may be owned again).
//
// A pass. Every step reads the next Options::keys_per_step records of the data column (resuming
// after the last key read, at most Options::keys_per_second on average) and remembers each key
// this node does not own with the digest of its encoded record (node/merkle_tree.h
// RecordDigest). Options::confirm_delay later, each remembered key is removed if
//   - its record still has that digest, and LocalStore::PurgeIfUnchanged finds it unchanged;
//   - the placement is still the pass's layout (checked inside the purge's commit);
//   - the replication outbox has no entry for it that may still be sent
//     (ReplicationOutbox::MayHaveEntriesFor, checked inside the purge's commit, where no write can
//     add one). Outbox batches read the key's record when they are sent, so removing it would
//     lose the writes those entries stand for at their target. The key is kept and retried.
// A record that cannot be decoded (corrupt) is left where it is but does not count as kept: it
// cannot be sent, merged or handed on (the outbox and anti-entropy give up on such a record, a
// handoff waits), so it cannot bring a value back, and counting it would hold up the report
// below for good. A key longer than the current max_key_bytes (stored before the limit was
// lowered) is removed like any other.
// A pass that kept some key (outbox entries pending, record changed) is followed by another
// after Options::retry, until one keeps nothing; with Options::interval set, passes then go on
// every interval (stray copies that arrived since are removed too). Few should arrive: a member
// refuses records of keys it does not replicate (Replica.MergeBatch, Placement::CheckMayHold), and
// anti-entropy takes none from a peer on another ring; a copy merged in the instant between that
// check and a layout change can still stay until the next pass.
//
// Why removing is safe. The change completed only after every new owner received what every
// old owner held (node/handoff.h), and writes since go to the new owners. A removal is a local
// purge, not a delete: no tombstone, nothing replicated; the store's observer (the Merkle index)
// sees a record change to none, so the trees stay right; the counter floor is raised as for a
// tombstone purge (no dot is reused if the key comes back). The confirm delay guards against the
// next change: if another transition makes this node a gainer of the key, its handoff record may
// arrive before this node has learned the new layout; the record then changed since it was read
// (or appeared after the read), or the new layout arrived within the delay and ended the pass.
// Only a node that learns a new layout more than confirm_delay after receiving its handoff could
// lose a gained copy (the old owners still hold it; anti-entropy on the new ring repairs it).
//
// What it does not do. A write that reaches this node for a key it no longer owns after the pass
// passed the key (a coordinator still on the old layout, read repair, anti-entropy between nodes
// on different rings) re-creates the record; it stays until the next pass (the next start or
// change, or the next interval if one is set). Writes acknowledged on this node while it still
// owned the key and whose outbox entry for another owner was dropped (outbox full) exist, after the
// removal, only on the owners that acknowledged them until anti-entropy spreads them (see README,
// join and leave).
//
// Telling the reapers. A pass that kept nothing is reported to the clean listener
// (SetCleanListener; kvnode gossips it, MemberEntry::clean_layout_version), and tombstones are
// purged on a ring only once every owner has reported so for it (StraysCleared): a copy kept here
// (outbox entries pending, the pass not there yet) is never left behind by a purge, to come back
// when a later change makes this node an owner of the key again, or hand it on.
//
// Progress is logged at the start and end of each pass and kept in Stats().
//
// Thread-safe. Steps run on the executor (they block on storage) and the scheduler; Shutdown
// (also the destructor) stops the pass and waits for running callbacks. The placement holder,
// store, engine, scheduler, executor and clock must outlive the cleaner.
#ifndef KV_NODE_UNOWNED_RECORD_CLEANER_H_
#define KV_NODE_UNOWNED_RECORD_CLEANER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/lifetime_guard.h"
#include "node/local_store.h"
#include "node/membership.h"
#include "node/placement.h"
#include "node/scheduler.h"
#include "storage/engine.h"

namespace kv {

struct UnownedRecordCleanerStats {
  uint64_t layout_version = 0;  // of the newest pass started (0: none)
  bool running = false;         // a pass is under way or due (retry or interval)
  uint64_t passes = 0;          // passes completed, all layouts
  uint64_t scanned = 0;         // records read
  uint64_t removed = 0;         // records removed
  uint64_t kept_pending = 0;    // not removed: outbox entries for the key may still be sent
  uint64_t kept_changed = 0;    // not removed: the record changed since it was read
  uint64_t unreadable = 0;      // not removed, not kept either: corrupt (see "A pass")
  std::string last_error;
};

class UnownedRecordCleaner {
 public:
  struct Options {
    size_t replication_factor = 3;
    uint64_t keys_per_second = 20'000;  // records read; 0: unlimited
    size_t keys_per_step = 500;
    absl::Duration confirm_delay = absl::Seconds(10);
    absl::Duration retry = absl::Seconds(30);
    // Between passes that kept nothing; zero: no more passes until the next layout or start.
    absl::Duration interval = absl::ZeroDuration();
    // Keys waiting out confirm_delay; the scan pauses when this many wait.
    size_t max_waiting = 100'000;
  };
  // Whether the replication outbox may still send an entry for `key`
  // (ReplicationOutbox::MayHaveEntriesFor). Called inside a store mutation: no I/O, no store call.
  using PendingCheck = std::function<bool(absl::string_view key)>;

  UnownedRecordCleaner(std::string self_id, const PlacementHolder* placement, LocalStore* store,
                       Engine* engine, Scheduler* scheduler, Executor* executor, const Clock* clock,
                       Options options, PendingCheck may_have_entries);
  ~UnownedRecordCleaner();
  UnownedRecordCleaner(const UnownedRecordCleaner&) = delete;
  UnownedRecordCleaner& operator=(const UnownedRecordCleaner&) = delete;

  // Called (on the executor) with the layout version of each pass that ends keeping nothing,
  // while that layout is still the newest told. Set before the first OnPlacement.
  void SetCleanListener(std::function<void(uint64_t layout_version)> listener);
  // A layout was installed (or the node started with it): ends a pass of an older layout and
  // starts one if `placement` is stable and lists this node as an owner (see When above).
  void OnPlacement(std::shared_ptr<const Placement> placement);
  void Shutdown();

  UnownedRecordCleanerStats Stats() const;

 private:
  struct Pass;
  using PassPtr = std::shared_ptr<Pass>;
  void Step(PassPtr pass);
  // Reads the next records; false on a read error (logged; the pass is retried).
  bool Scan(Pass& pass);
  // Removes (or keeps) the waiting keys whose confirm delay is over.
  void RemoveDue(Pass& pass);
  void Remove(Pass& pass, const std::string& key, uint64_t digest);
  void EndPass(PassPtr pass);
  bool Current(const PassPtr& pass);

  const std::string self_id_;
  const PlacementHolder* const placement_;
  LocalStore* const store_;
  Engine* const engine_;
  Scheduler* const scheduler_;
  Executor* const executor_;
  const Clock* const clock_;
  const Options options_;
  const PendingCheck may_have_entries_;
  std::function<void(uint64_t)> clean_listener_;  // set before the first pass
  LifetimeGuard guard_;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t newest_version_ ABSL_GUARDED_BY(mu_) = 0;  // of the newest placement told
  PassPtr pass_ ABSL_GUARDED_BY(mu_);
  UnownedRecordCleanerStats stats_ ABSL_GUARDED_BY(mu_);
};

// Whether tombstones may be purged on the ring of stable `layout`: every owner (`members`, as
// gossip sees them) says its clean-up pass on that ring kept nothing
// (MemberEntry::clean_layout_version at least layout.version). Always true for the first layout
// (version 1: no change ever moved a key, so there is nothing to clean up), false during a
// transition.
bool StraysCleared(const ClusterLayout& layout, const std::vector<MemberView>& members);

}  // namespace kv

#endif  // KV_NODE_UNOWNED_RECORD_CLEANER_H_

// TombstoneReaper: purges tombstones once every replica of their key is known to hold them, so
// that deleted keys do not pile up and do not come back (PRODUCT.md C8).
//
// Every Options::sweep_interval the reaper reads the next keys_per_sweep records of the data
// column (resuming where the last sweep stopped, wrapping at the end). A record is a candidate
// when this node is the key's first replica (one reaper per key), every sibling is a tombstone,
// and the newest tombstone is older than Options::min_age. For a candidate the reaper reads the
// key's record from every other replica (all N must answer). Only if every replica holds exactly
// this record (same encoded bytes) is the key confirmed; a replica that was away and holds an
// older live value holds a different record, so nothing is purged until it has the tombstone.
//
// Purging needs two confirmations at least Options::confirm_delay apart, with the record
// unchanged in between. A record that was still live somewhere before the first confirmation
// may be in flight to a replica (a delayed merge, a read repair); once it arrives at a replica
// that holds the tombstone it is absorbed (the tombstone's context covers it), but it would come
// back if it arrived after that replica purged. confirm_delay must therefore exceed the longest
// time a record can spend in flight (the longest RPC deadline plus queueing; a record that
// anti-entropy pulls is merged within AntiEntropy::Options::max_pulled_record_age, 4 s, of being
// asked for, or not at all). Records only grow,
// so an unchanged record at the second confirmation saw no change in between.
//
// Then each other replica is asked to PurgeRecord (LocalStore::PurgeIfUnchanged: deleted only if
// it still equals the confirmed record; the request names the layout version the sweep confirmed
// on, and a replica with another layout, or one in transition, refuses: node/replica_service.h),
// and if all of them purged (or had nothing), the reaper
// purges its own copy the same way. If some replica could not purge, the reaper keeps its copy;
// anti-entropy brings the tombstone back to those that purged, and a later sweep purges again.
//
// The replicas asked are those of the ring the index holds, which must be the current layout's:
// the reaper is told of each layout the node adopts (OnLayout) before the node acts on it, and a
// newer one pauses purging at once. Sweeps under way then stop at their next step without
// purging, and pending confirmations are forgotten (they were made on another ring). Purging
// resumes (ResumeOnRing) once the index follows the ring of the newest layout, if that is not a
// transition: during one a key has owners in two rings, and a copy handed to a new owner would
// escape the check (PRODUCT.md C8).
//
// Stray copies. A member that no longer owns a key may still hold a copy of it (its clean-up
// pass, node/unowned_record_cleaner.h, keeps a key while outbox entries for it may be unsent,
// and reaches every key only in time). No purge asks it, so if the owners purged the key's
// tombstone, a later change making that member an owner again (or handing its copy on) would
// bring the deleted value back. With a cleanup check (SetCleanupCheck; kvnode: every owner has
// gossiped that its clean-up pass on the ring kept nothing, StraysCleared) no sweep starts on a
// ring until the check passes (Stats().waiting_for_cleanup says so meanwhile).
//
// Two clocks. Tombstone ages are read on `wall_clock`: a tombstone's stamp comes from the wall
// clock of the node that wrote it. confirm_delay is measured on `steady_clock` (kvnode: one that
// never steps, node/clock.h SteadyClock): a step of the wall clock forward between the two
// confirmations would otherwise cut the delay short and purge while a record may be in flight.
//
// Thread-safe; runs on the injected Scheduler, Executor and clocks (deterministic in the
// simulation). Shutdown() (also run by the destructor) stops it and waits for callbacks running
// inside. The index, store, engine, transport, scheduler, executor and clocks must outlive it.
#ifndef KV_NODE_TOMBSTONE_REAPER_H_
#define KV_NODE_TOMBSTONE_REAPER_H_

#include <cstdint>
#include <functional>
#include <map>
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
#include "node/merkle_index.h"
#include "node/peer_transport.h"
#include "node/scheduler.h"
#include "storage/engine.h"

namespace kv {

struct TombstoneReaperStats {
  uint64_t sweeps = 0;
  uint64_t candidates = 0;     // tombstone-only records old enough, this node the reaper
  uint64_t confirmations = 0;  // checks that found every replica holding the same record
  uint64_t purged = 0;         // keys purged on every replica
  uint64_t not_purged = 0;     // a replica changed, differed or could not be reached
  // The last sweep due did not start: some owner has not cleaned up its stray copies on the ring
  // yet (see Stray copies above).
  bool waiting_for_cleanup = false;
  std::string last_error;
};

class TombstoneReaper {
 public:
  struct Options {
    absl::Duration min_age = absl::Hours(24);
    absl::Duration confirm_delay = absl::Minutes(1);
    absl::Duration sweep_interval = absl::Seconds(10);
    size_t keys_per_sweep = 1000;
    size_t max_pending_confirmations = 100'000;
  };

  TombstoneReaper(MerkleIndex* index, LocalStore* store, Engine* engine, PeerTransport* transport,
                  Scheduler* scheduler, Executor* executor, const Clock* wall_clock,
                  const Clock* steady_clock, Options options);
  ~TombstoneReaper();
  TombstoneReaper(const TombstoneReaper&) = delete;
  TombstoneReaper& operator=(const TombstoneReaper&) = delete;

  // Sweeps start on the ring of layout version V only while `cleared(V)` is true (see Stray
  // copies above). Called outside the reaper's lock; must not call into the reaper. Set before
  // Start.
  void SetCleanupCheck(std::function<bool(uint64_t layout_version)> cleared);
  // Starts the periodic sweeps (the first after one interval).
  void Start();
  void Shutdown();
  // Runs one sweep now (none while paused); `done` (may be null) runs when it has finished.
  void SweepNow(std::function<void()> done);

  // The node adopts layout `version`. A version newer than every one reported before pauses
  // purging (see above); an older or repeated one changes nothing. Never blocks: may be called
  // from any thread, before the placement changes. Not paused before the first call.
  void OnLayout(uint64_t version, bool in_transition);
  // The index now follows the ring of layout `version`: resumes purging if that is the newest
  // layout reported and not a transition. Returns whether purging runs.
  bool ResumeOnRing(uint64_t version);

  TombstoneReaperStats Stats() const;

 private:
  struct Candidate {
    std::string key;
    SiblingSet record;
    std::string encoded;
  };
  struct Sweep;

  void Tick();
  // Collects the sweep's candidates from the data column.
  std::vector<Candidate> Scan();
  void ProcessNext(std::shared_ptr<Sweep> sweep);
  void OnReplicasRead(std::shared_ptr<Sweep> sweep, std::vector<Member> others,
                      std::vector<absl::StatusOr<std::string>> records);
  void OnPeersPurged(std::shared_ptr<Sweep> sweep, std::vector<absl::Status> results);
  void CountError(const absl::Status& status);

  MerkleIndex* const index_;
  LocalStore* const store_;
  Engine* const engine_;
  PeerTransport* const transport_;
  Scheduler* const scheduler_;
  Executor* const executor_;
  const Clock* const wall_clock_;    // tombstone ages
  const Clock* const steady_clock_;  // confirm_delay
  const Options options_;
  std::function<bool(uint64_t)> cleanup_check_;  // set before Start
  LifetimeGuard guard_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool sweeping_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t layout_version_ ABSL_GUARDED_BY(mu_) = 0;  // the newest reported to OnLayout
  bool layout_in_transition_ ABSL_GUARDED_BY(mu_) = false;
  // Raised by every pause: a sweep started before it stops at its next step.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::string cursor_ ABSL_GUARDED_BY(mu_);  // the data column key the next sweep starts at
  // Key -> (confirmed encoded record, when first confirmed).
  std::map<std::string, std::pair<std::string, absl::Time>> confirmed_ ABSL_GUARDED_BY(mu_);
  TombstoneReaperStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv

#endif  // KV_NODE_TOMBSTONE_REAPER_H_

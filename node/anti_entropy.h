// AntiEntropy: Merkle-tree exchanges that make this node's replicas and its peers' converge,
// whatever the replication outbox missed (dropped hints, a wiped disk, a replica away for long).
//
// One exchange at a time, with one peer; peers take turns (round robin), one exchange every
// Options::interval. An exchange compares this node's tree for the peer (node/merkle_index.h)
// with the peer's tree for this node, level by level, and descends only where they differ:
//   1. the roots (8 bytes); equal roots end the exchange;
//   2. the 256 interior nodes;
//   3. the 256 leaves of each differing interior node;
//   4. for the differing segments, the peer's (key, digest) list of the keys both replicate,
//      compared with this node's list (asked for in calls of segments_per_call segments; the
//      peer answers as many of them as fit segment_keys_max_bytes, and the rest are asked
//      again);
//   5. for each key that differs or is missing on one side, in batches: the peer's record is read
//      (PeerTransport::ReadRecord) and merged here (LocalStore::MergeRecord), then the merged
//      record is sent to the peer (MergeRecords) unless it already holds exactly that. Merging is
//      a join, so both end with the same record however writes interleave with the exchange.
//      The pushes of a batch go one call after another, and each call carries the records as
//      the store holds them when it is made: a record spends at most one call in flight, which
//      the tombstone reaper's confirmation delay counts on (node/tombstone_reaper.h).
// Transfer scales with the differences: about 8 bytes per leaf of each differing interior node,
// the key lists of differing segments, and the differing records.
//
// Budget: at most Options::keys_per_second keys are repaired per second (a token bucket with one
// second of burst); an exchange that runs out waits on the Scheduler. At most
// max_keys_per_exchange differing keys are handled per exchange; the trees still differ
// afterwards, so the next exchange with that peer continues.
//
// Catching up: a store that may have lost writes it acknowledged (LocalStore, "Catching up")
// stops catching up once an exchange with every peer of the current ring, under that ring, has
// completed since this object was created with every differing record the peer holds merged
// here (a push the peer refused does not count against it), and no membership change is under
// way (MaybeFinishCatchingUp).
//
// Errors: an exchange that fails (peer unreachable, tree not built yet on either side) stops and
// is counted; the next turn tries again. Nothing is lost by stopping midway. An error about one
// key (its record unreadable or undecodable on either side, too large to transfer, or refused
// by the peer: any code but the transport's and authorization's) does not stop the exchange:
// that key is skipped and the others are repaired (a refused push of several records is sent
// again one record per call, to find the one). The exchange still completes; its result and the
// peer's last_error say how many keys were skipped and the first one's error, and the next
// exchange tries them again.
//
// Two clocks: the times reported in Stats (when an exchange ended) are read on `wall_clock`, the
// repair budget's refills and an exchange's duration on `steady_clock` (kvnode: one that never
// steps, node/clock.h SteadyClock), so that a step of the wall clock neither lengthens nor
// shortens them.
//
// Thread-safe. Reads time only through the clocks and schedules only through the Scheduler and
// Executor, so it runs unchanged in the deterministic simulation. Shutdown() (also run by the
// destructor) stops starting work and waits for callbacks running inside; callbacks that arrive
// later do nothing, and the running exchange's `done` (Exchange, ExchangeNow) is answered
// UNAVAILABLE by Shutdown, so it must stay callable until then. The index, store, transport,
// scheduler, executor and clocks must outlive it.
#ifndef KV_NODE_ANTI_ENTROPY_H_
#define KV_NODE_ANTI_ENTROPY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/lifetime_guard.h"
#include "node/local_store.h"
#include "node/merkle_index.h"
#include "node/peer_transport.h"
#include "node/scheduler.h"

namespace kv {

// One top-level range of a peer's tree: interior node `index` of MerkleTree, i.e. segments
// 256*index..256*index+255, 1/256 of the key-hash space. Every exchange compares all 256 ranges.
struct RangeAntiEntropyStats {
  uint32_t index = 0;
  absl::Time last_difference = absl::InfinitePast();  // end of the last exchange that found one
  uint64_t last_keys_different = 0;   // found here by the last completed exchange (0: in sync)
  uint64_t keys_different_total = 0;  // summed over exchanges since start
  uint64_t keys_repaired = 0;         // since start
};

struct PeerAntiEntropyStats {
  std::string peer_id;
  uint64_t exchanges = 0;  // completed (equal roots or repaired)
  uint64_t failed_exchanges = 0;
  absl::Time last_exchange = absl::InfinitePast();  // when the last completed one ended
  absl::Duration last_duration;                     // how long the last completed one took
  absl::Time last_attempt = absl::InfinitePast();   // when the last one (of any outcome) ended
  std::string last_error;                           // of the last exchange, if it failed
  bool in_sync = false;                             // the last completed exchange found equal roots
  // Found by the last completed exchange.
  uint64_t last_segments_different = 0;
  uint64_t last_keys_different = 0;
  uint64_t last_keys_repaired = 0;
  uint64_t keys_repaired = 0;  // since start
  // Ranges that ever differed, by index (filled only by Stats(/*with_ranges=*/true)).
  std::vector<RangeAntiEntropyStats> ranges;
};

// What one exchange found and did.
struct ExchangeResult {
  std::string peer_id;
  uint64_t segments_different = 0;
  uint64_t keys_different = 0;
  uint64_t keys_repaired = 0;
  // Keys that could not be repaired (see Errors above), and the first one's error.
  uint64_t keys_skipped = 0;
  absl::Status skipped_error;
  // False when the exchange stopped at max_keys_per_exchange: the trees still differ, and
  // another exchange with the same peer continues.
  bool complete = true;
};

class AntiEntropy {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(30);  // between two exchanges (each with one peer)
    double keys_per_second = 2000;                // repair budget
    size_t segments_per_call = 256;               // per SegmentKeys call (<= 1024)
    // A peer answers a SegmentKeys call with the keys of its first segments up to about this
    // many bytes (MerkleIndex::SegmentEntries; the rest are asked again), so that a far-behind
    // pair with many keys per segment still gets answers that fit a message and its deadline.
    // This node lists its own keys of those segments the same way. 0: no limit.
    size_t segment_keys_max_bytes = 4 << 20;
    size_t keys_per_batch = 64;  // keys read and merged per round trip
    // The merged records of a batch are pushed in calls of about this many bytes (at least one
    // record each), so that large values never make a push too large for the transport.
    size_t push_max_bytes = 4 << 20;
    size_t max_keys_per_exchange = 100'000;
    // A record read from the peer is merged here only this long after it was asked for (its
    // turn may come late: the batch's reads wait for the slowest, and its merges are committed
    // one after another); later, it is skipped and read again by the next exchange. The
    // tombstone reaper's confirm delay must exceed it (node/tombstone_reaper.h).
    absl::Duration max_pulled_record_age = absl::Seconds(4);
  };

  AntiEntropy(MerkleIndex* index, LocalStore* store, PeerTransport* transport, Scheduler* scheduler,
              Executor* executor, const Clock* wall_clock, const Clock* steady_clock,
              Options options);
  ~AntiEntropy();
  AntiEntropy(const AntiEntropy&) = delete;
  AntiEntropy& operator=(const AntiEntropy&) = delete;

  // Starts the periodic exchanges (the first one after one interval).
  void Start();
  // Stops: no exchange starts or continues; waits for callbacks running inside, then answers
  // the running exchange's `done`, if any, UNAVAILABLE. Idempotent.
  void Shutdown();

  // Starts an exchange with `peer_id` (empty: the next peer in turn) at once. `done` (may be
  // null) gets its outcome: ABORTED if an exchange is already running, INVALID_ARGUMENT for an
  // unknown peer, UNAVAILABLE if a tree is not built yet or the peer cannot be reached, or if
  // Shutdown came first (then from Shutdown, once).
  void ExchangeNow(std::string peer_id, std::function<void(absl::Status)> done);
  // The same, with what the exchange found.
  void Exchange(std::string peer_id, std::function<void(absl::StatusOr<ExchangeResult>)> done);

  // Per peer of the index's current ring (a ring change adds and drops peers; the figures of
  // peers that remain are kept); with `with_ranges`, each peer's ranges that ever differed.
  std::vector<PeerAntiEntropyStats> Stats(bool with_ranges = false) const;
  // Ends the store's catching up (see above) if an exchange has completed with every peer of the
  // current ring (under that ring), at once if it has none or N=1 (nothing else can hold a write
  // this node lost), and never while `in_transition` (SetTransitionCheck) says a membership
  // change is under way. Runs after every exchange; the node also calls it at start and after
  // the index follows a new ring.
  void MaybeFinishCatchingUp();
  // True while a membership change is under way (the node's layout is in transition). Set
  // before Start; none: never.
  void SetTransitionCheck(std::function<bool()> in_transition) {
    in_transition_ = std::move(in_transition);
  }
  // Whether this node may keep a record of the key under its current layout (kvnode:
  // Placement::CheckMayHold). Asked again just before a peer's record is merged here, since a
  // layout that arrived during the exchange may have taken the key from this node, and a copy
  // merged after its clean-up pass would be a stray that no tombstone purge asks about (C8).
  // Set before Start; none: every key the exchange found.
  void SetOwnershipCheck(std::function<bool(absl::string_view key)> may_hold) {
    may_hold_ = std::move(may_hold);
  }
  // The peer of the exchange running now, or empty.
  std::string running_peer() const;
  const Options& options() const { return options_; }
  // Options::interval once Start() ran; zero before (only forced exchanges run).
  absl::Duration periodic_interval() const;

 private:
  struct ExchangeState;
  struct Diff {
    std::string key;
    bool local = false;   // this node has a record
    bool remote = false;  // the peer has one
  };
  using ExchangePtr = std::shared_ptr<ExchangeState>;

  void Tick();
  void Begin(ExchangePtr ex);
  void OnRoot(ExchangePtr ex, absl::StatusOr<std::vector<uint64_t>> remote);
  void OnInterior(ExchangePtr ex, absl::StatusOr<std::vector<uint64_t>> remote);
  void OnLeaves(ExchangePtr ex, std::vector<uint32_t> interior,
                absl::StatusOr<std::vector<uint64_t>> remote);
  void NextSegments(ExchangePtr ex);
  // `begin`: the index in ex->segments of the first of `segments`.
  void OnSegmentKeys(ExchangePtr ex, size_t begin, std::vector<uint32_t> segments,
                     absl::StatusOr<SegmentKeyList> remote);
  void RepairNext(ExchangePtr ex);
  // `asked`: when the peer's records were asked for (steady clock); one older than
  // Options::max_pulled_record_age by its turn is skipped, not merged.
  void MergeAndPush(ExchangePtr ex, size_t begin, size_t end,
                    std::vector<absl::StatusOr<std::string>> remote, absl::Time asked);
  // The keys of a batch whose merged records go to the peer; `settled[i]`: keys[i] is not sent
  // again (purged meanwhile, or skipped).
  struct PushKeys {
    std::vector<std::string> keys;
    std::vector<bool> settled;
  };
  // Pushes this node's records of push->keys[next, ...) in calls of about
  // Options::push_max_bytes (one record per call before `alone_until`), one after another, then
  // repairs the next batch. Each call's records are read from the store as the call is made: a
  // key purged meanwhile is not sent (nor counted repaired), a key whose record cannot be read
  // is skipped (SkipKey), and an error of the store itself finishes the exchange. A peer failure
  // finishes the exchange; a refused call of several records is made again record by record,
  // and a refused record is skipped.
  void Push(ExchangePtr ex, std::shared_ptr<PushKeys> push, size_t next, size_t alone_until);
  // Records that `key` could not be repaired (see Errors above) and goes on without it; `counted`
  // if it was already counted as repaired.
  void SkipKey(ExchangePtr ex, absl::string_view key, const absl::Status& error, bool counted);
  void Finish(ExchangePtr ex, absl::Status status);
  // Takes `keys` tokens and returns zero, or returns how long to wait before there are enough.
  absl::Duration TakeBudget(size_t keys);
  // Makes stats_ and ranges_ follow the index's ring (`peers`, `generation`): entries of peers
  // that remain keep their totals, but not their in-sync state and last findings, after a ring
  // change. Const so that Stats() can call it (the members it changes are mutable).
  void SyncPeersLocked(const std::vector<Member>& peers, uint64_t generation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static constexpr size_t kNoPeer = static_cast<size_t>(-1);
  size_t StatsIndexLocked(absl::string_view peer_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  MerkleIndex* const index_;
  LocalStore* const store_;
  PeerTransport* const transport_;
  Scheduler* const scheduler_;
  Executor* const executor_;
  const Clock* const wall_clock_;    // Stats' times
  const Clock* const steady_clock_;  // the budget's refills, exchange durations
  const Options options_;
  LifetimeGuard guard_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  size_t next_peer_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::vector<PeerAntiEntropyStats> stats_ ABSL_GUARDED_BY(mu_);  // as the index's peers
  // Per peer (as stats_), the ranges that ever differed (under the current ring), by index.
  mutable std::vector<std::map<uint32_t, RangeAntiEntropyStats>> ranges_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // of the index's ring stats_ follow
  std::string running_peer_ ABSL_GUARDED_BY(mu_);
  // The running exchange, if any; its `done` is taken under mu_ (by Finish or Shutdown).
  ExchangePtr current_ ABSL_GUARDED_BY(mu_);
  // Peers an exchange has completed with since this object was created (every record they hold
  // that differed merged here), with the ring generation it compared under.
  std::map<std::string, uint64_t> caught_up_with_ ABSL_GUARDED_BY(mu_);
  std::function<bool()> in_transition_;              // SetTransitionCheck
  std::function<bool(absl::string_view)> may_hold_;  // SetOwnershipCheck
  double tokens_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time refilled_ ABSL_GUARDED_BY(mu_);  // on the steady clock
};

}  // namespace kv

#endif  // KV_NODE_ANTI_ENTROPY_H_

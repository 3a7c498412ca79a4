// MerkleIndex: keeps this node's anti-entropy hash trees (node/merkle_tree.h), one per peer, over
// the keys both replicate, and the on-disk index they are built from.
//
// The index: the engine's merkle column (storage/FORMAT.md) holds, per key of the data column,
// segment (u16 big-endian) + key -> XXH64 of the encoded record. As the store's RecordObserver,
// the index adds its entry's change to the batch of every record change (write, merge, purge),
// so it never disagrees with the data column, also after a crash.
//
// The trees live in memory. Which peers share a key comes from the ring's preference lists (N =
// replication factor). Every observed change toggles the key's old and new entry hashes in the
// tree of each peer that shares the key: O(1) per peer, no rebuild on the hot path.
//
// Building. The trees are built from a snapshot of the merkle column taken at a commit cut
// (SetCommitCut, LocalStore::RunAtCommitCut): a point where every record change observed before
// has been written (or has failed) and none after has been observed yet. At the cut the trees
// are emptied and the snapshot taken; from then on every observed change toggles the trees at
// once, whether or not the scan has reached its key, and the scan adds the snapshot's entries as
// it reads them, without the lock. Entry hashes combine by XOR, so a key changed after the cut
// ends with its new entry whatever the order (the snapshot's entry is the change's old one), and
// the scan needs no memory for the changes made meanwhile, so it can be slowed down:
// SetScanRate caps the entries it reads per second (it sleeps between chunks, on the monotonic
// clock), so that a node with many keys does not spend a core on it after every ring change. A
// slower scan costs time (exchanges are refused, not ready, until it ends, and whatever waits for
// the trees waits longer) and holds its snapshot longer: the engine keeps the versions that
// writes replace or delete meanwhile until the scan ends. StopScans ends scans under way
// (and later ones) at their next chunk, CANCELLED, so that a slow scan does not hold up a
// shutdown.
//
// Start-up. The index observes from construction (SetObserver before the store is used); until
// Build's cut it only adds its entries to the batches (the snapshot holds those changes). Build()
// scans without blocking reads or writes.
//
// Ring changes. The merkle column does not depend on the ring (segments come from the key's
// hash), only the trees do. ChangeRing (after a membership change completes) replaces the ring at
// its cut and rebuilds the trees exactly as Build does. A ChangeRing during a scan supersedes it:
// the older scan stops (CANCELLED). Every ring change increments generation(), so users that keep
// per-peer state (AntiEntropy) notice it.
//
// Lost changes: the trees follow observed changes, applied just before their batch is written.
// A batch that then fails to be written (OnChangesLost) would leave its keys' entries wrong, and
// a wrong entry can hide a real difference (the tree says what the peer holds while the disk
// does not). The index is then stale: not ready (exchanges, ours and the peers', are refused)
// until RebuildIfStale rebuilds the trees from the merkle column, which holds only what was
// written. The stale handler (SetStaleHandler; kvnode schedules the rebuild on its executor) is
// told when the index goes stale, and AntiEntropy also starts a rebuild when an exchange finds
// it stale. A scan (Build, ChangeRing, a rebuild) that fails reading the merkle column leaves the
// index stale the same way, so that it is rebuilt; one that
// finds a malformed entry leaves it stale without telling the handler, and RebuildIfStale then
// answers that error without scanning (every scan would fail) until a ring change tries again.
// A scan that StopScans ends leaves it stale the same way, without a rebuild.
//
// Thread-safe: OnRecordChange runs on the store's committing thread, while a mutation prepares
// its group (node/commit_queue.h: one mutation at a time); the other methods from any thread.
#ifndef KV_NODE_MERKLE_INDEX_H_
#define KV_NODE_MERKLE_INDEX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "node/local_store.h"
#include "node/merkle_tree.h"
#include "node/peer_transport.h"
#include "node/ring.h"
#include "storage/engine.h"
#include "storage/steady_timer.h"

namespace kv {

class MerkleIndex : public RecordObserver {
 public:
  // `engine` must outlive the index. The ring's members other than `self_id` are the peers.
  MerkleIndex(std::string self_id, std::shared_ptr<const HashRing> ring, int replication_factor,
              Engine* engine);

  void OnRecordChange(absl::string_view key, const std::string* old_encoded,
                      const std::string* new_encoded, WriteBatch* batch) override;
  void OnChangesLost() override;

  // Loads the trees from the merkle column; blocks for the commit cut and the scan (run it on an
  // executor; never from a mutation's Prepare, nor holding a lock that a mutation's Prepare or
  // Complete takes). Call once, after the index was set as the store's observer.
  // FAILED_PRECONDITION if called twice; CANCELLED if a ChangeRing superseded the scan.
  absl::Status Build();
  // Replaces the ring and rebuilds every tree for it; blocks as Build does. Not ready until it
  // returns OK; CANCELLED if a later ChangeRing superseded it. May be called before Build has
  // finished (or instead of it: Build then fails).
  absl::Status ChangeRing(std::shared_ptr<const HashRing> ring);
  // `run_at_cut` runs the function it is given at a commit cut (see Building; in kvnode
  // LocalStore::RunAtCommitCut) and returns once it has. Set it before Build and ChangeRing.
  // Without one, the function runs at once on the calling thread, which is a cut only while no
  // record changes.
  void SetCommitCut(std::function<void(const std::function<void()>&)> run_at_cut);
  // Caps the entries a scan reads per second (see Building); 0, the default: no cap. Set before
  // Build.
  void SetScanRate(double entries_per_second) { scan_entries_per_second_ = entries_per_second; }
  // Scans under way, and every later one, end CANCELLED at their next chunk (a paced scan's
  // sleep ends at once). For shutdown; there is no way back.
  void StopScans();
  // Built and not stale (see Lost changes).
  bool ready() const;
  // Whether changes were lost since the trees were last built (see Lost changes).
  bool stale() const;
  // If stale and built, rebuilds the trees for the current ring as ChangeRing does (blocks as
  // Build does) and returns true; false at once if not stale, or when a
  // ChangeRing replaced the ring meanwhile (its rebuild covers it); UNAVAILABLE if stale while a
  // scan runs (try again after it); CANCELLED after StopScans. A write failing meanwhile makes
  // the index stale again.
  absl::StatusOr<bool> RebuildIfStale();
  // Called when the index goes stale (not again until a rebuild has begun), on the thread whose
  // write failed, without the index's lock; it must not block (schedule RebuildIfStale
  // elsewhere). Set before use.
  void SetStaleHandler(std::function<void()> handler) { stale_handler_ = std::move(handler); }
  // Incremented by every ChangeRing (0 for the ring given to the constructor).
  uint64_t generation() const;

  const std::string& self_id() const { return self_id_; }
  // Replicas per key (N).
  int replication_factor() const { return static_cast<int>(n_); }
  // Every other member of the current ring, by id.
  std::vector<Member> peers() const;
  // True if this node and `peer_id` both replicate `key` (current ring).
  bool Shares(absl::string_view key, absl::string_view peer_id) const;
  // True if this node is the first replica of `key`.
  bool IsPrimary(absl::string_view key) const;
  // The replicas of `key`, in preference order.
  std::vector<Member> Replicas(absl::string_view key) const;

  // Hashes of the tree for `peer_id` (MerkleLevel). UNAVAILABLE until ready; INVALID_ARGUMENT for
  // an unknown peer, an interior index >= 256 or more than 256 indexes.
  absl::StatusOr<std::vector<uint64_t>> Nodes(absl::string_view peer_id, MerkleLevel level,
                                              const std::vector<uint32_t>& indexes) const;
  // This node's committed (key, digest) entries in `segments` that `peer_id` also replicates, in
  // segment then key order (read from the engine): those of the segments in increasing order
  // (repeats ignored) up to and including the one at which the entries reach `max_bytes` (key
  // bytes plus kSegmentKeyOverheadBytes per entry; 0: no limit), and how many segments that is
  // (SegmentKeyList).
  // INVALID_ARGUMENT for a segment >= 65536, more than kMaxSegmentsPerCall segments or an
  // unknown peer.
  absl::StatusOr<SegmentKeyList> SegmentEntries(absl::string_view peer_id,
                                                std::vector<uint32_t> segments,
                                                size_t max_bytes = 0) const;
  static constexpr size_t kMaxSegmentsPerCall = 1024;
  // What an entry adds to a SegmentKeys answer besides its key: the 8-byte digest and the
  // message's framing (tags and lengths), rounded up.
  static constexpr size_t kSegmentKeyOverheadBytes = 16;
  // The most a SegmentKeys answer to a peer holds (before its last segment): a requester's
  // max_response_bytes of 0 (unlimited, as nodes before that field asked) or above this is
  // answered with this limit, so that no request makes a node build an answer without bound.
  // The requester asks again for the segments not answered (one that asked with 0 and so reads
  // no segments_answered is refused instead: node/replica_service.cc).
  static constexpr size_t kMaxSegmentKeysAnswerBytes = 16 << 20;
  // The byte limit SegmentEntries uses for a peer that asked for `requested` bytes.
  static size_t SegmentKeysAnswerLimit(uint64_t requested) {
    return requested == 0 || requested > kMaxSegmentKeysAnswerBytes
               ? kMaxSegmentKeysAnswerBytes
               : static_cast<size_t>(requested);
  }

  // The digest of `key`'s committed record, read from the merkle column (a small value, unlike
  // the record); nullopt when this node has no record of the key. Works before Build.
  absl::StatusOr<std::optional<uint64_t>> StoredDigest(absl::string_view key) const;

  // Merkle column key of a user key: segment (u16 big-endian) + key.
  static std::string IndexKey(absl::string_view key);
  // Splits a merkle column entry into the user key (a view into `index_key`) and the digest;
  // false if the entry is malformed.
  static bool DecodeEntry(absl::string_view index_key, absl::string_view value,
                          absl::string_view* key, uint64_t* digest);

 private:
  using PeerSet = absl::InlinedVector<uint16_t, 4>;  // indexes into View::peers
  // A ring and the peers it gives this node; replaced whole by ChangeRing.
  struct View {
    std::shared_ptr<const HashRing> ring;
    std::vector<Member> peers;  // sorted by id
    uint64_t generation = 0;
    // The peers that share `key` with `self_id` (replicas of `n`).
    PeerSet SharingPeers(absl::string_view self_id, size_t n, absl::string_view key) const;
    int PeerIndex(absl::string_view peer_id) const;
  };
  std::shared_ptr<View> MakeView(std::shared_ptr<const HashRing> ring, uint64_t generation) const;
  std::shared_ptr<const View> view() const;
  void Apply(const PeerSet& peers, uint32_t segment, uint64_t hash)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Build's and ChangeRing's scan of `snapshot` (of the merkle column, taken at their cut) into
  // the trees of `view`.
  absl::Status Scan(std::shared_ptr<const View> view, std::unique_ptr<Iterator> snapshot);
  // Runs `at_cut` through run_at_cut_, or at once without one.
  void RunAtCut(const std::function<void()>& at_cut);

  const std::string self_id_;
  const size_t n_;
  Engine* const engine_;
  std::function<void(const std::function<void()>&)> run_at_cut_;  // set before any scan
  std::function<void()> stale_handler_;                           // may be empty
  double scan_entries_per_second_ = 0;                            // set before any scan; 0: no cap
  SteadyNotification scans_stopped_;                              // StopScans
  // ChangeRing's work; with `only_at_generation`, only if the ring is still of that generation
  // (`rebuilt`, if not null, says whether it went ahead).
  absl::Status Rebuild(std::shared_ptr<const HashRing> ring,
                       std::optional<uint64_t> only_at_generation, bool* rebuilt);

  mutable absl::Mutex mu_;
  std::shared_ptr<const View> view_ ABSL_GUARDED_BY(mu_);
  enum class State { kObserving, kBuilding, kReady };
  State state_ ABSL_GUARDED_BY(mu_) = State::kObserving;
  bool stale_ ABSL_GUARDED_BY(mu_) = false;  // see Lost changes
  // The error of a scan that found a malformed entry: RebuildIfStale answers it without scanning
  // again, until a ring change.
  absl::Status unrecoverable_ ABSL_GUARDED_BY(mu_);
  std::vector<MerkleTree> trees_ ABSL_GUARDED_BY(mu_);  // one per peer, as view_->peers
};

// Fills the merkle column from the data column of a database written before the column existed
// (marked done in the meta column). Call before the store serves anything; a no-op afterwards.
absl::Status BackfillMerkleIndex(Engine* engine);

}  // namespace kv

#endif  // KV_NODE_MERKLE_INDEX_H_

#include "node/merkle_index.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/coding.h"
#include "storage/record_codec.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

constexpr absl::string_view kBackfilledKey = "merkle_index_backfilled";
constexpr size_t kScanChunk = 1024;

std::string SegmentPrefix(uint32_t segment) {
  std::string prefix(2, '\0');
  prefix[0] = static_cast<char>((segment >> 8) & 0xff);
  prefix[1] = static_cast<char>(segment & 0xff);
  return prefix;
}

std::string EncodeDigest(uint64_t digest) {
  std::string out;
  PutFixed64(&out, digest);
  return out;
}

absl::Status ScansStopped() {
  return absl::CancelledError("the Merkle index scans were stopped (the node is stopping)");
}

bool DecodeDigest(absl::string_view bytes, uint64_t* digest) {
  return bytes.size() == 8 && GetFixed64(&bytes, digest);
}

}  // namespace

MerkleIndex::MerkleIndex(std::string self_id, std::shared_ptr<const HashRing> ring,
                         int replication_factor, Engine* engine)
    : self_id_(std::move(self_id)),
      n_(static_cast<size_t>(std::max(replication_factor, 1))),
      engine_(engine) {
  absl::MutexLock lock(&mu_);
  view_ = MakeView(std::move(ring), 0);
  trees_.resize(view_->peers.size());
}

std::shared_ptr<MerkleIndex::View> MerkleIndex::MakeView(std::shared_ptr<const HashRing> ring,
                                                         uint64_t generation) const {
  auto view = std::make_shared<View>();
  for (const Member& m : ring->members()) {
    if (m.id != self_id_) view->peers.push_back(m);
  }
  std::sort(view->peers.begin(), view->peers.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  view->ring = std::move(ring);
  view->generation = generation;
  return view;
}

std::shared_ptr<const MerkleIndex::View> MerkleIndex::view() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

std::string MerkleIndex::IndexKey(absl::string_view key) {
  return absl::StrCat(SegmentPrefix(MerkleTree::SegmentOf(key)), key);
}

bool MerkleIndex::DecodeEntry(absl::string_view index_key, absl::string_view value,
                              absl::string_view* key, uint64_t* digest) {
  if (index_key.size() < 3 || !DecodeDigest(value, digest)) return false;
  *key = index_key.substr(2);
  return true;
}

absl::StatusOr<std::optional<uint64_t>> MerkleIndex::StoredDigest(absl::string_view key) const {
  absl::StatusOr<std::string> value = engine_->Get(Column::kMerkle, IndexKey(key));
  if (absl::IsNotFound(value.status())) return std::optional<uint64_t>();
  if (!value.ok()) return value.status();
  uint64_t digest = 0;
  if (!DecodeDigest(*value, &digest)) {
    return absl::DataLossError(
        absl::StrCat("malformed Merkle index entry of ", value->size(), " value bytes"));
  }
  return std::optional<uint64_t>(digest);
}

std::vector<Member> MerkleIndex::Replicas(absl::string_view key) const {
  std::vector<Member> out;
  for (const Member* m : view()->ring->PreferenceList(key, n_)) out.push_back(*m);
  return out;
}

std::vector<Member> MerkleIndex::peers() const { return view()->peers; }

uint64_t MerkleIndex::generation() const { return view()->generation; }

MerkleIndex::PeerSet MerkleIndex::View::SharingPeers(absl::string_view self_id, size_t n,
                                                     absl::string_view key) const {
  PeerSet out;
  std::vector<const Member*> replicas = ring->PreferenceList(key, n);
  if (std::none_of(replicas.begin(), replicas.end(),
                   [&](const Member* m) { return m->id == self_id; })) {
    return out;
  }
  for (const Member* m : replicas) {
    if (m->id == self_id) continue;
    int index = PeerIndex(m->id);
    if (index >= 0) out.push_back(static_cast<uint16_t>(index));
  }
  return out;
}

int MerkleIndex::View::PeerIndex(absl::string_view peer_id) const {
  auto it = std::lower_bound(peers.begin(), peers.end(), peer_id,
                             [](const Member& m, absl::string_view id) { return m.id < id; });
  if (it == peers.end() || it->id != peer_id) return -1;
  return static_cast<int>(it - peers.begin());
}

bool MerkleIndex::Shares(absl::string_view key, absl::string_view peer_id) const {
  std::shared_ptr<const View> v = view();
  const int index = v->PeerIndex(peer_id);
  if (index < 0) return false;
  PeerSet peers = v->SharingPeers(self_id_, n_, key);
  return std::find(peers.begin(), peers.end(), index) != peers.end();
}

bool MerkleIndex::IsPrimary(absl::string_view key) const {
  // The first of the key's N replicas, as Replicas() lists them: with zones on some members only,
  // a preference list of 1 can start elsewhere.
  std::vector<const Member*> replicas = view()->ring->PreferenceList(key, n_);
  return !replicas.empty() && replicas.front()->id == self_id_;
}

void MerkleIndex::Apply(const PeerSet& peers, uint32_t segment, uint64_t hash) {
  for (uint16_t peer : peers) trees_[peer].Toggle(segment, hash);
}

void MerkleIndex::OnRecordChange(absl::string_view key, const std::string* old_encoded,
                                 const std::string* new_encoded, WriteBatch* batch) {
  const std::string index_key = IndexKey(key);
  std::optional<uint64_t> new_digest;
  if (new_encoded != nullptr) {
    new_digest = MerkleTree::RecordDigest(*new_encoded);
    batch->Put(Column::kMerkle, index_key, EncodeDigest(*new_digest));
  } else {
    batch->Delete(Column::kMerkle, index_key);
  }
  const std::optional<uint64_t> old_digest =
      old_encoded != nullptr ? std::optional<uint64_t>(MerkleTree::RecordDigest(*old_encoded))
                             : std::nullopt;
  if (old_digest == new_digest) return;
  const uint32_t segment = MerkleTree::SegmentOf(key);
  uint64_t delta = 0;
  if (old_digest) delta ^= MerkleTree::EntryHash(key, *old_digest);
  if (new_digest) delta ^= MerkleTree::EntryHash(key, *new_digest);

  absl::MutexLock lock(&mu_);
  // Before the first build's cut its snapshot will hold the change; after it (building or
  // built) the trees take it now, whether or not the scan has passed the key: entry hashes are
  // combined by XOR, so the snapshot's entry and the change's delta add up to the new entry.
  if (state_ == State::kObserving) return;
  Apply(view_->SharingPeers(self_id_, n_, key), segment, delta);
}

absl::Status MerkleIndex::Build() {
  if (scans_stopped_.WaitForNotificationWithTimeout(absl::ZeroDuration())) return ScansStopped();
  std::shared_ptr<const View> v;
  std::unique_ptr<Iterator> snapshot;
  absl::Status refused;
  RunAtCut([&] {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kObserving) {
      refused = absl::FailedPreconditionError("the Merkle index is already built or building");
      return;
    }
    state_ = State::kBuilding;
    stale_ = false;  // the snapshot holds only what was written
    v = view_;
    snapshot = engine_->NewIterator(Column::kMerkle);
  });
  if (!refused.ok()) return refused;
  return Scan(std::move(v), std::move(snapshot));
}

absl::Status MerkleIndex::ChangeRing(std::shared_ptr<const HashRing> ring) {
  return Rebuild(std::move(ring), std::nullopt, nullptr);
}

absl::Status MerkleIndex::Rebuild(std::shared_ptr<const HashRing> ring,
                                  std::optional<uint64_t> only_at_generation, bool* rebuilt) {
  if (scans_stopped_.WaitForNotificationWithTimeout(absl::ZeroDuration())) return ScansStopped();
  // Made before the cut, which holds up the store's writes: the new view (its generation set at
  // the cut) and empty trees; the old trees are freed after it.
  std::shared_ptr<View> next = MakeView(std::move(ring), 0);
  std::vector<MerkleTree> trees(next->peers.size());
  std::unique_ptr<Iterator> snapshot;
  bool went_ahead = false;
  RunAtCut([&] {
    absl::MutexLock lock(&mu_);
    if (only_at_generation.has_value() && view_->generation != *only_at_generation) return;
    went_ahead = true;
    next->generation = view_->generation + 1;
    view_ = next;
    trees_.swap(trees);
    state_ = State::kBuilding;
    stale_ = false;  // the scan reads what was written; a change lost from now on marks it again
    unrecoverable_ = absl::OkStatus();
    snapshot = engine_->NewIterator(Column::kMerkle);
  });
  trees = std::vector<MerkleTree>();         // the old ones, or the unused new ones
  if (!went_ahead) return absl::OkStatus();  // a ring change came first
  if (rebuilt != nullptr) *rebuilt = true;
  return Scan(std::move(next), std::move(snapshot));
}

void MerkleIndex::SetCommitCut(std::function<void(const std::function<void()>&)> run_at_cut) {
  run_at_cut_ = std::move(run_at_cut);
}

void MerkleIndex::StopScans() { scans_stopped_.Notify(); }

void MerkleIndex::RunAtCut(const std::function<void()>& at_cut) {
  if (run_at_cut_) {
    run_at_cut_(at_cut);
  } else {
    at_cut();
  }
}

absl::Status MerkleIndex::Scan(std::shared_ptr<const View> view,
                               std::unique_ptr<Iterator> snapshot) {
  const absl::Status superseded =
      absl::CancelledError("the Merkle index scan was superseded by a ring change");
  struct Entry {
    PeerSet peers;
    uint32_t segment;
    uint64_t hash;
  };
  std::vector<Entry> chunk;
  // Applies a chunk under the lock (the scan itself runs without it). False: superseded.
  auto apply = [&] {
    absl::MutexLock lock(&mu_);
    if (view_ != view) return false;
    for (const Entry& e : chunk) Apply(e.peers, e.segment, e.hash);
    chunk.clear();
    return true;
  };
  // A scan that fails leaves the trees incomplete: the index is then stale (never ready) rather
  // than building for good, and after a read error (which may pass) the stale handler has it
  // rebuilt. A malformed entry would fail every scan: no retry.
  auto failed = [&](absl::Status error, bool retry) {
    bool became_stale = false;
    {
      absl::MutexLock lock(&mu_);
      if (view_ != view) return superseded;
      state_ = State::kReady;
      became_stale = !stale_;
      stale_ = true;
      if (!retry) unrecoverable_ = error;  // no rebuild on this ring would get further
    }
    if (retry && became_stale && stale_handler_) stale_handler_();
    return error;
  };
  const absl::Time started = SteadyNow();
  uint64_t scanned = 0;
  // After each chunk: false if StopScans was called. With a rate, first sleeps until the entries
  // scanned so far are due.
  auto pace = [&] {
    scanned += kScanChunk;
    absl::Duration ahead = absl::ZeroDuration();
    if (scan_entries_per_second_ > 0) {
      ahead = started + absl::Seconds(static_cast<double>(scanned) / scan_entries_per_second_) -
              SteadyNow();
    }
    return !scans_stopped_.WaitForNotificationWithTimeout(ahead);
  };
  Iterator* it = snapshot.get();
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    absl::string_view index_key = it->key();
    absl::string_view key;
    uint64_t digest = 0;
    if (!DecodeEntry(index_key, it->value(), &key, &digest)) {
      return failed(
          absl::DataLossError(absl::StrCat("malformed Merkle index entry of ", index_key.size(),
                                           " key bytes and ", it->value().size(), " value bytes")),
          /*retry=*/false);
    }
    chunk.push_back(Entry{view->SharingPeers(self_id_, n_, key), MerkleTree::SegmentOf(key),
                          MerkleTree::EntryHash(key, digest)});
    if (chunk.size() == kScanChunk) {
      if (!apply()) return superseded;
      // Stopped: the trees are incomplete, as after a failed read, but nothing rebuilds them
      // (the node is stopping).
      if (!pace()) return failed(ScansStopped(), /*retry=*/false);
    }
  }
  if (!it->status().ok()) return failed(it->status(), /*retry=*/true);
  if (!apply()) return superseded;
  absl::MutexLock lock(&mu_);
  if (view_ != view) return superseded;  // a ChangeRing between the last chunk and here
  state_ = State::kReady;
  return absl::OkStatus();
}

bool MerkleIndex::ready() const {
  absl::MutexLock lock(&mu_);
  return state_ == State::kReady && !stale_;
}

bool MerkleIndex::stale() const {
  absl::MutexLock lock(&mu_);
  return stale_;
}

void MerkleIndex::OnChangesLost() {
  bool became_stale = false;
  {
    absl::MutexLock lock(&mu_);
    became_stale = !stale_;
    stale_ = true;
  }
  if (became_stale && stale_handler_) stale_handler_();
}

absl::StatusOr<bool> MerkleIndex::RebuildIfStale() {
  std::shared_ptr<const HashRing> ring;
  uint64_t generation = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!stale_) return false;
    if (!unrecoverable_.ok()) return unrecoverable_;  // until a ring change tries again
    // (Rebuild clears the flag once the trees are being rebuilt, so the index is never ready in
    // between.)
    if (state_ != State::kReady) {
      return absl::UnavailableError("the Merkle trees are being built; rebuild after the scan");
    }
    ring = view_->ring;
    generation = view_->generation;
  }
  // Not on a ring a ChangeRing has replaced meanwhile.
  bool rebuilt = false;
  absl::Status status = Rebuild(std::move(ring), generation, &rebuilt);
  if (!status.ok()) return status;
  return rebuilt;
}

absl::StatusOr<std::vector<uint64_t>> MerkleIndex::Nodes(
    absl::string_view peer_id, MerkleLevel level, const std::vector<uint32_t>& indexes) const {
  // Each interior node once at most: the answer is bounded by the tree (64 Ki leaves), whatever
  // a caller asks.
  if (indexes.size() > MerkleTree::kInterior) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", MerkleTree::kInterior,
                                                   " interior node indexes, not ", indexes.size()));
  }
  for (uint32_t index : indexes) {
    if (index >= MerkleTree::kInterior) {
      return absl::InvalidArgumentError(
          absl::StrCat("interior node index ", index, " is out of range (0..255)"));
    }
  }
  absl::MutexLock lock(&mu_);
  const int peer = view_->PeerIndex(peer_id);
  if (peer < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", peer_id, "\" is not a member of this node's ring"));
  }
  if (state_ != State::kReady || stale_) {
    return absl::UnavailableError("the Merkle tree is still being built; try again later");
  }
  const MerkleTree& tree = trees_[peer];
  switch (level) {
    case MerkleLevel::kRoot:
      return std::vector<uint64_t>{tree.root()};
    case MerkleLevel::kInterior:
      return tree.interior();
    case MerkleLevel::kLeaves: {
      std::vector<uint64_t> out;
      out.reserve(indexes.size() * MerkleTree::kLeavesPerInterior);
      for (uint32_t index : indexes) {
        std::vector<uint64_t> leaves = tree.LeavesOf(index);
        out.insert(out.end(), leaves.begin(), leaves.end());
      }
      return out;
    }
  }
  return absl::InvalidArgumentError("unknown Merkle tree level");
}

absl::StatusOr<SegmentKeyList> MerkleIndex::SegmentEntries(absl::string_view peer_id,
                                                           std::vector<uint32_t> segments,
                                                           size_t max_bytes) const {
  std::shared_ptr<const View> v = view();
  const int peer = v->PeerIndex(peer_id);
  if (peer < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", peer_id, "\" is not a member of this node's ring"));
  }
  if (segments.size() > kMaxSegmentsPerCall) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxSegmentsPerCall, " segments per call, not ", segments.size()));
  }
  for (uint32_t segment : segments) {
    if (segment >= MerkleTree::kLeaves) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment ", segment, " is out of range (0..65535)"));
    }
  }
  std::sort(segments.begin(), segments.end());
  segments.erase(std::unique(segments.begin(), segments.end()), segments.end());
  SegmentKeyList out;
  if (segments.empty()) return out;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kMerkle);
  size_t bytes = 0;
  for (uint32_t segment : segments) {
    if (max_bytes != 0 && bytes >= max_bytes) break;
    ++out.segments;
    const std::string prefix = SegmentPrefix(segment);
    for (it->Seek(prefix); it->Valid() && it->key().substr(0, 2) == prefix; it->Next()) {
      absl::string_view key = it->key().substr(2);
      uint64_t digest = 0;
      if (!DecodeDigest(it->value(), &digest)) {
        return absl::DataLossError("malformed Merkle index entry: the digest is not 8 bytes");
      }
      PeerSet sharing = v->SharingPeers(self_id_, n_, key);
      if (std::find(sharing.begin(), sharing.end(), peer) != sharing.end()) {
        bytes += key.size() + kSegmentKeyOverheadBytes;
        out.entries.push_back(KeyDigest{std::string(key), digest});
      }
    }
  }
  KV_RETURN_IF_ERROR(it->status());
  return out;
}

absl::Status BackfillMerkleIndex(Engine* engine) {
  absl::StatusOr<std::string> done = engine->Get(Column::kMeta, kBackfilledKey);
  if (done.ok()) return absl::OkStatus();
  if (!absl::IsNotFound(done.status())) return done.status();
  WriteBatch batch;
  std::unique_ptr<Iterator> it = engine->NewIterator(Column::kData);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    batch.Put(Column::kMerkle, MerkleIndex::IndexKey(it->key()),
              EncodeDigest(MerkleTree::RecordDigest(it->value())));
    if (batch.ops().size() == kScanChunk) {
      KV_RETURN_IF_ERROR(engine->Write(batch, WriteOptions{}));
      batch.Clear();
    }
  }
  KV_RETURN_IF_ERROR(it->status());
  batch.Put(Column::kMeta, kBackfilledKey, "1");
  return engine->Write(batch, WriteOptions{/*sync=*/true});
}

}  // namespace kv

// ReplicationOutbox: recovery at start, scans of entries not held in memory, and deletion of a
// peer's entries (node/replication_outbox.h).
#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "node/replication_outbox.h"
#include "node/replication_outbox_internal.h"

namespace kv {
namespace outbox_internal {

std::string PeerPrefix(absl::string_view peer_id) {
  std::string prefix(peer_id);
  prefix.push_back(kSeparator);
  return prefix;
}

bool ParseEntryKey(absl::string_view key, absl::string_view* peer_id, uint64_t* seq) {
  const size_t sep = key.find(kSeparator);
  if (sep == absl::string_view::npos || sep == 0 || key.size() - sep - 1 != kSeqBytes) {
    return false;
  }
  *peer_id = key.substr(0, sep);
  uint64_t value = 0;
  for (char c : key.substr(sep + 1)) value = (value << 8) | static_cast<uint8_t>(c);
  *seq = value;
  return true;
}

}  // namespace outbox_internal

using outbox_internal::kSeparator;
using outbox_internal::kSeqBytes;
using outbox_internal::ParseEntryKey;
using outbox_internal::PeerPrefix;

std::string ReplicationOutbox::EntryKey(absl::string_view peer_id, uint64_t seq) {
  std::string key = PeerPrefix(peer_id);
  for (int shift = 56; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>((seq >> shift) & 0xff));
  }
  return key;
}

absl::StatusOr<uint64_t> ReplicationOutbox::RemovePeer(absl::string_view peer_id) {
  std::vector<Report> reports;
  uint64_t seq_limit;
  {
    absl::MutexLock lock(&mu_);
    // Entries allocated from now on are not this removal's to delete: the peer may be added
    // again (the same id) before the deletion below is done.
    seq_limit = next_seq_;
    auto it = peers_.find(std::string(peer_id));
    if (it == peers_.end()) {
      return absl::NotFoundError(absl::StrCat("\"", peer_id, "\" is not a replication peer"));
    }
    Removal& removal = removing_[std::string(peer_id)];
    removal.seq_limit = std::max(removal.seq_limit, seq_limit);
    ++removal.under_way;
    PeerState* peer = it->second.get();
    peer->removed = true;
    const absl::Status status = absl::FailedPreconditionError(
        absl::StrCat("\"", peer_id, "\" left the cluster; the entries for it were dropped"));
    auto report = [&](Waiting& w) {
      if (w.on_result) reports.push_back(Report{std::move(w.on_result), w.entry, status});
      w.on_result = nullptr;
    };
    for (auto& [seq, w] : peer->queued) report(w);
    for (auto& [batch_id, batch] : peer->in_flight) {
      for (Waiting& w : batch.entries) report(w);
    }
    // A completion or timer that arrives later finds nothing to do; entries of writes still
    // committing (unsubmitted) are deleted by Submit, which no longer finds the peer.
    peer->queued.clear();
    peer->queued_by_key.clear();
    peer->in_flight.clear();
    peer->in_flight_seqs.clear();
    peer->ready.clear();
    peer->refusals.clear();
    peer->deferred.clear();
    peer->scan_requested = false;
    peer->on_disk_only = false;
    removed_peers_.push_back(std::move(it->second));
    peers_.erase(it);
  }
  RunReports(std::move(reports));
  absl::StatusOr<uint64_t> deleted = DeleteEntriesBelow(peer_id, seq_limit);
  absl::MutexLock lock(&mu_);
  if (auto it = removing_.find(peer_id); it != removing_.end() && --it->second.under_way == 0) {
    removing_.erase(it);
  }
  if (deleted.ok()) removed_entries_ += *deleted;
  return deleted;
}

absl::StatusOr<uint64_t> ReplicationOutbox::DeleteEntriesBelow(absl::string_view peer_id,
                                                               uint64_t seq_limit) {
  constexpr size_t kDeletesPerBatch = 10'000;
  const std::string prefix = PeerPrefix(peer_id);
  uint64_t deleted = 0;
  WriteBatch batch;
  size_t in_batch = 0;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kOutbox);
  for (it->Seek(prefix); it->Valid() && absl::StartsWith(it->key(), prefix); it->Next()) {
    absl::string_view entry_peer;
    uint64_t seq;
    // In seq order within the peer's prefix: the first at the limit ends the deletion.
    if (ParseEntryKey(it->key(), &entry_peer, &seq) && seq >= seq_limit) break;
    batch.Delete(Column::kOutbox, it->key());
    ++deleted;
    if (++in_batch == kDeletesPerBatch) {
      // Not synced: an entry whose deletion is lost in a crash belongs to no peer after a
      // restart, and is never sent.
      if (absl::Status s = engine_->Write(batch, WriteOptions{}); !s.ok()) return s;
      batch = WriteBatch();
      in_batch = 0;
    }
  }
  if (absl::Status s = it->status(); !s.ok()) return s;
  if (in_batch > 0) {
    if (absl::Status s = engine_->Write(batch, WriteOptions{}); !s.ok()) return s;
  }
  return deleted;
}

absl::Status ReplicationOutbox::Recover() {
  // Counted and collected outside the lock (the engine is not called under it); at most the
  // memory bound of entries per peer is kept.
  struct Found {
    uint64_t depth = 0;
    std::vector<OutboxEntry> held;
    bool on_disk_only = false;
  };
  std::map<std::string, Found> found;
  uint64_t max_seq = 0;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kOutbox);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    absl::string_view peer_id;
    uint64_t seq;
    if (!ParseEntryKey(it->key(), &peer_id, &seq)) {
      return absl::DataLossError(absl::StrCat(
          "malformed replication outbox key \"", absl::CHexEscape(it->key()),
          "\" (expected peer id, NUL, 8-byte sequence); the data directory is corrupt"));
    }
    max_seq = std::max(max_seq, seq);
    Found& f = found[std::string(peer_id)];
    ++f.depth;
    if (f.held.size() < options_.max_queued_per_peer) {
      f.held.push_back(OutboxEntry{std::string(peer_id), seq, std::string(it->value())});
    } else {
      f.on_disk_only = true;
    }
  }
  if (absl::Status s = it->status(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("scanning the replication outbox: ", s.message()));
  }

  std::vector<PeerState*> to_drain;
  {
    absl::MutexLock lock(&mu_);
    next_seq_ = std::max(next_seq_, max_seq + 1);
    // Entries of peers no longer configured stay on disk untouched.
    for (auto& [peer_id, f] : found) {
      PeerState* peer = FindPeer(peer_id);
      if (peer == nullptr) continue;
      peer->stats.depth += f.depth;
      peer->on_disk_only = peer->on_disk_only || f.on_disk_only;
      for (OutboxEntry& entry : f.held) Hold(peer, Waiting{std::move(entry), nullptr});
      Pump(peer);
      to_drain.push_back(peer);
    }
  }
  for (PeerState* peer : to_drain) Drain(peer);
  return absl::OkStatus();
}

void ReplicationOutbox::ScanDisk(PeerState* peer) {
  // Only entries that exist when the scan starts, were submitted (or recovered) and are not
  // held in memory are taken. None of them can be deleted or queued by anyone else meanwhile,
  // so the snapshot stays accurate for them.
  std::set<uint64_t> skip;
  uint64_t seq_limit;
  uint64_t uncounted_below;
  uint64_t ignore_below;
  size_t room;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || peer->removed) return;
    skip = peer->in_flight_seqs;
    for (const auto& [seq, key] : peer->unsubmitted) skip.insert(seq);
    for (const auto& [seq, w] : peer->queued) skip.insert(seq);
    seq_limit = next_seq_;
    uncounted_below = peer->uncounted_below;
    ignore_below = peer->ignore_below;
    room = options_.max_queued_per_peer - std::min(options_.max_queued_per_peer, peer->InMemory());
    // Set again by whatever leaves an entry on disk only from now on, including this scan.
    peer->on_disk_only = false;
    peer->scanning = true;
  }

  const std::string prefix = PeerPrefix(peer->id);
  std::vector<OutboxEntry> found;
  bool complete = true;    // every entry of the peer on disk was taken
  uint64_t uncounted = 0;  // entries below uncounted_below (seen past `room` too)
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kOutbox);
  for (it->Seek(prefix); it->Valid() && absl::StartsWith(it->key(), prefix); it->Next()) {
    absl::string_view peer_id;
    uint64_t seq;
    if (!ParseEntryKey(it->key(), &peer_id, &seq) || seq >= seq_limit || seq < ignore_below ||
        skip.count(seq) > 0) {
      continue;
    }
    if (seq < uncounted_below) ++uncounted;
    if (found.size() == room) {
      complete = false;
      // In seq order: past uncounted_below, nothing is left to count.
      if (seq >= uncounted_below) break;
      continue;
    }
    found.push_back(OutboxEntry{peer->id, seq, std::string(it->value())});
  }
  const absl::Status scanned = it->status();

  std::optional<Backoff> backoff;
  {
    absl::MutexLock lock(&mu_);
    peer->scanning = false;
    if (shutdown_ || peer->removed) return;
    if (scanned.ok()) {
      if (!complete) peer->on_disk_only = true;
      if (uncounted_below > 0) {  // scans of a peer do not overlap: this is the first
        peer->stats.depth += uncounted;
        peer->uncounted_below = 0;
      }
      for (OutboxEntry& entry : found) Hold(peer, Waiting{std::move(entry), nullptr});
    } else {
      peer->stats.last_error = absl::StrCat("scanning the outbox: ", scanned.ToString());
      peer->on_disk_only = true;  // the scan is retried after the backoff
      backoff = StartBackoff(peer);
    }
    Pump(peer);
  }
  ScheduleBackoff(peer, backoff);
}

}  // namespace kv

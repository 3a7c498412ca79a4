#include "node/replication_outbox.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node/replication_outbox_internal.h"

namespace kv {
ReplicationOutbox::ReplicationOutbox(std::vector<Member> peers, Engine* engine,
                                     PeerTransport* transport, Scheduler* scheduler,
                                     Executor* executor, absl::BitGenRef rng, Options options)
    : engine_(engine),
      transport_(transport),
      scheduler_(scheduler),
      executor_(executor),
      options_(std::move(options)),
      liveness_(std::make_shared<Liveness>()),
      rng_(rng) {
  absl::MutexLock lock(&mu_);
  for (Member& member : peers) {
    auto peer = std::make_unique<PeerState>(member);
    peer->stats.peer_id = member.id;
    peer->backoff_ceiling = options_.initial_backoff;
    peers_.emplace(member.id, std::move(peer));
  }
}

void ReplicationOutbox::AddPeer(const Member& member) {
  PeerState* added = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (auto known = peers_.find(member.id); known != peers_.end()) {
      // The id joined again at another address (a replaced machine): its queued entries, and
      // those of an earlier run kept on disk, go to where it answers now, without waiting out a
      // backoff the old address earned.
      const bool moved = known->second->member.address != member.address;
      known->second->member = member;
      if (!moved) return;
    } else {
      auto peer = std::make_unique<PeerState>(member);
      peer->stats.peer_id = member.id;
      peer->backoff_ceiling = options_.initial_backoff;
      // Entries an earlier run left on disk for this id, which Recover skipped (it was no peer
      // then: a crash after a layout's placement and before its synced record, or a removal's
      // unsynced deletions lost in a machine crash), are found by a scan and sent.
      peer->on_disk_only = true;
      peer->scan_requested = true;
      peer->uncounted_below = next_seq_;
      if (auto removing = removing_.find(member.id); removing != removing_.end()) {
        peer->ignore_below = removing->second.seq_limit;
      }
      added = peer.get();
      peers_.emplace(member.id, std::move(peer));
    }
  }
  // On the executor: the caller may be placing a layout. A new peer is drained (a peer removed
  // meanwhile, its state kept in removed_peers_, is not); a moved one ends its backoff.
  executor_->Schedule([liveness = liveness_, this, added, id = member.id] {
    if (!liveness->Enter()) return;
    if (added != nullptr) {
      Drain(added);
    } else {
      Resume(id);
    }
    liveness->Exit();
  });
}

bool ReplicationOutbox::MayHaveEntriesFor(absl::string_view key) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, peer] : peers_) {
    if (peer->on_disk_only || peer->scanning || peer->scan_requested) return true;
    if (peer->queued_by_key.find(key) != peer->queued_by_key.end()) return true;
    for (const auto& [seq, entry_key] : peer->unsubmitted) {
      if (entry_key == key) return true;
    }
    for (const auto& [batch_id, batch] : peer->in_flight) {
      for (const Waiting& w : batch.entries) {
        if (w.entry.key == key) return true;
      }
    }
  }
  return false;
}

uint64_t ReplicationOutbox::removed_entries() const {
  absl::MutexLock lock(&mu_);
  return removed_entries_;
}

ReplicationOutbox::~ReplicationOutbox() {
  Shutdown();
  liveness_->AwaitIdle(/*kill=*/true);
}

ReplicationOutbox::PeerState* ReplicationOutbox::FindPeer(absl::string_view peer_id) {
  auto it = peers_.find(std::string(peer_id));
  return it == peers_.end() ? nullptr : it->second.get();
}

std::vector<OutboxEntry> ReplicationOutbox::AddEntries(absl::string_view key,
                                                       const std::vector<std::string>& peer_ids,
                                                       WriteBatch* batch) {
  std::vector<OutboxEntry> entries;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& peer_id : peer_ids) {
      PeerState* peer = FindPeer(peer_id);
      if (peer == nullptr) continue;
      // Depth counts submitted entries only: this batch may still fail to commit.
      if (peer->stats.depth >= options_.max_entries_per_peer) {
        ++peer->stats.dropped;
        continue;
      }
      const uint64_t seq = next_seq_++;
      peer->unsubmitted.emplace(seq, std::string(key));
      entries.push_back(OutboxEntry{peer_id, seq, std::string(key)});
    }
  }
  for (const OutboxEntry& entry : entries) {
    batch->Put(Column::kOutbox, EntryKey(entry.peer_id, entry.seq), entry.key);
  }
  return entries;
}

void ReplicationOutbox::Abandon(const std::vector<OutboxEntry>& entries) {
  absl::MutexLock lock(&mu_);
  for (const OutboxEntry& entry : entries) {
    if (PeerState* peer = FindPeer(entry.peer_id)) peer->unsubmitted.erase(entry.seq);
  }
}

void ReplicationOutbox::Submit(std::vector<OutboxEntry> entries, EntryCallback on_result,
                               EntryCallback on_late) {
  std::vector<Report> reports;
  std::vector<PeerState*> to_drain;
  WriteBatch orphans;  // entries of a peer removed while their write committed
  bool has_orphans = false;
  {
    absl::MutexLock lock(&mu_);
    for (OutboxEntry& entry : entries) {
      PeerState* peer = FindPeer(entry.peer_id);
      // Not in the peer's unsubmitted: allocated for an earlier incarnation of the id, removed
      // (and added again) while the write committed.
      if (peer == nullptr || peer->unsubmitted.erase(entry.seq) == 0) {
        orphans.Delete(Column::kOutbox, EntryKey(entry.peer_id, entry.seq));
        has_orphans = true;
        reports.push_back(Report{on_result, entry,
                                 absl::FailedPreconditionError(absl::StrCat(
                                     "\"", entry.peer_id, "\" is not a replication peer"))});
        continue;
      }
      ++peer->stats.depth;
      if (shutdown_) {
        peer->on_disk_only = true;  // MayHaveEntriesFor stays conservative for its key
        reports.push_back(Report{on_result, entry,
                                 absl::UnavailableError("the replication outbox is shut down; "
                                                        "the entry stays on disk")});
        continue;
      }
      if (!Hold(peer, Waiting{entry, on_result, on_late})) {
        reports.push_back(
            Report{on_result, entry,
                   absl::ResourceExhaustedError(absl::StrCat(
                       "replication backlog for peer ", entry.peer_id,
                       " is on disk; the entry will be sent when the backlog drains"))});
      }
      if (std::find(to_drain.begin(), to_drain.end(), peer) == to_drain.end()) {
        to_drain.push_back(peer);
      }
    }
    for (PeerState* peer : to_drain) Pump(peer);
  }
  // Best effort: an orphan left on disk belongs to no peer and is never sent.
  if (has_orphans) engine_->Write(orphans, WriteOptions{}).IgnoreError();
  RunReports(std::move(reports));
  for (PeerState* peer : to_drain) Drain(peer);
}

bool ReplicationOutbox::Hold(PeerState* peer, Waiting waiting) {
  if (peer->InMemory() >= options_.max_queued_per_peer) {
    peer->on_disk_only = true;
    return false;
  }
  Enqueue(peer, std::move(waiting));
  return true;
}

void ReplicationOutbox::Enqueue(PeerState* peer, Waiting waiting) {
  const uint64_t seq = waiting.entry.seq;
  peer->queued_by_key[waiting.entry.key].insert(seq);
  peer->queued.emplace(seq, std::move(waiting));
}

void ReplicationOutbox::Pump(PeerState* peer) {
  if (shutdown_ || peer->paused || peer->removed) return;
  const size_t max_in_flight = static_cast<size_t>(std::max(options_.max_in_flight, 1));
  // Held keys before `next` stay held during this call: every batch goes on from there.
  auto next = peer->queued.begin();
  bool all_held = false;  // what is queued in memory is all held back
  while (peer->in_flight.size() < max_in_flight && next != peer->queued.end()) {
    // After a refusal, one key per batch until the refused batch's keys have gone out alone.
    const size_t max_records =
        peer->isolate > 0 ? 1 : std::max<size_t>(options_.batch_max_records, 1);
    // The oldest entries' keys, each with every entry queued for it: one record covers them all,
    // since it is read after all of them were written. Keys held back (deferred) are skipped.
    PeerState::Batch batch;
    std::vector<std::string> keys;
    while (keys.size() < max_records && next != peer->queued.end()) {
      if (!peer->deferred.empty()) {
        auto deferral = peer->deferred.find(next->second.entry.key);
        if (deferral != peer->deferred.end() && deferral->second.held) {
          ++next;
          continue;
        }
      }
      auto by_key = peer->queued_by_key.find(next->second.entry.key);
      for (uint64_t seq : by_key->second) {
        auto entry = peer->queued.find(seq);
        if (entry == next) ++next;
        peer->in_flight_seqs.insert(seq);
        batch.entries.push_back(std::move(entry->second));
        peer->queued.erase(entry);
      }
      keys.push_back(by_key->first);
      peer->queued_by_key.erase(by_key);
    }
    if (keys.empty()) {  // every queued key is held back
      all_held = true;
      break;
    }
    if (peer->isolate > 0) --peer->isolate;
    batch.records = keys.size();
    const uint64_t batch_id = peer->next_batch_id++;
    peer->in_flight.emplace(batch_id, std::move(batch));
    peer->ready.push_back(PeerState::Ready{batch_id, std::move(keys)});
  }
  // Refill from disk while the batches are out, so the sender never idles on a backlog (nor
  // waits for a held key's backoff while other keys wait on disk).
  if ((peer->queued.empty() || all_held) && peer->on_disk_only &&
      peer->InMemory() < options_.max_queued_per_peer) {
    peer->scan_requested = true;
  }
}

void ReplicationOutbox::Drain(PeerState* peer) {
  mu_.Lock();
  if (peer->draining) {
    mu_.Unlock();
    return;
  }
  peer->draining = true;
  while (!shutdown_ && !peer->removed) {
    if (peer->scan_requested) {
      peer->scan_requested = false;
      mu_.Unlock();
      ScanDisk(peer);
      mu_.Lock();
      continue;
    }
    if (peer->ready.empty()) break;
    PeerState::Ready next = std::move(peer->ready.front());
    peer->ready.pop_front();
    mu_.Unlock();
    SendBatch(peer, next.batch_id, next.keys);
    mu_.Lock();
  }
  peer->draining = false;
  mu_.Unlock();
}

void ReplicationOutbox::SendBatch(PeerState* peer, uint64_t batch_id,
                                  const std::vector<std::string>& keys) {
  std::vector<EncodedRecord> records;
  records.reserve(keys.size());
  size_t bytes = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    absl::StatusOr<std::string> record = engine_->Get(Column::kData, key);
    if (record.ok()) {
      const size_t size = key.size() + record->size();
      if (size > options_.max_record_bytes) {
        if (i > 0) {
          // First in the next batch, to be given up on alone: the keys before it go now, and
          // those of them without a record (when `records` is empty) are deleted as sent, not
          // counted as given up on with it.
          Requeue(peer, batch_id, absl::MakeConstSpan(keys).subspan(i));
          break;
        }
        Requeue(peer, batch_id, absl::MakeConstSpan(keys).subspan(i + 1));
        OnBatchDone(peer, batch_id,
                    absl::OutOfRangeError(absl::StrCat(
                        "the record of key \"", absl::CHexEscape(key), "\" is ", size,
                        " bytes, more than the largest a peer is sent (", options_.max_record_bytes,
                        " bytes); given up on until its siblings are resolved")),
                    /*give_up=*/true);
        return;
      }
      if (!records.empty() && bytes + size > options_.batch_max_bytes) {
        Requeue(peer, batch_id, absl::MakeConstSpan(keys).subspan(i));
        break;
      }
      bytes += size;
      records.push_back(EncodedRecord{key, *std::move(record)});
    } else if (!absl::IsNotFound(record.status()) && !absl::IsDataLoss(record.status())) {
      // A read error that may pass (I/O): nothing is given up on; the whole batch goes back to
      // the queue and is sent again after a backoff.
      OnBatchDone(
          peer, batch_id,
          absl::UnavailableError(absl::StrCat(
              "this node could not read the record of key \"", absl::CHexEscape(key),
              "\" to replicate it (sent again after a backoff): ", record.status().ToString())),
          /*give_up=*/false, /*local=*/true);
      return;
    } else if (!absl::IsNotFound(record.status())) {
      // (Entries whose key has no record are simply deleted with the batch.) A record this node
      // cannot read because it is corrupt must not hold up the others: the batch keeps only its
      // key, which is then handled like a record the peer refused alone (tried again, given up
      // on after refusals_before_giving_up failures in a row).
      std::vector<std::string> others;
      for (size_t j = 0; j < keys.size(); ++j) {
        if (j != i) others.push_back(keys[j]);
      }
      Requeue(peer, batch_id, others);
      OnBatchDone(peer, batch_id,
                  absl::DataLossError(absl::StrCat(
                      "this node could not read the record of key \"", absl::CHexEscape(key),
                      "\" to replicate it: ", record.status().ToString())));
      return;
    }
  }
  Member to;
  {
    absl::MutexLock lock(&mu_);
    auto it = peer->in_flight.find(batch_id);
    if (it != peer->in_flight.end()) it->second.sent = records.size();
    to = peer->member;
  }
  transport_->MergeRecords(to, std::move(records),
                           [liveness = liveness_, this, peer, batch_id](absl::Status status) {
                             if (!liveness->Enter()) return;
                             OnBatchDone(peer, batch_id, std::move(status));
                             liveness->Exit();
                           });
}

void ReplicationOutbox::Requeue(PeerState* peer, uint64_t batch_id,
                                absl::Span<const std::string> keys) {
  absl::MutexLock lock(&mu_);
  auto it = peer->in_flight.find(batch_id);
  if (it == peer->in_flight.end()) return;
  PeerState::Batch& batch = it->second;
  const std::set<absl::string_view> requeued(keys.begin(), keys.end());
  std::vector<Waiting> kept;
  for (Waiting& w : batch.entries) {
    if (requeued.count(w.entry.key) == 0) {
      kept.push_back(std::move(w));
      continue;
    }
    peer->in_flight_seqs.erase(w.entry.seq);
    Enqueue(peer, std::move(w));  // by seq: older than anything queued since, so sent next
  }
  batch.entries = std::move(kept);
  batch.records -= std::min(batch.records, requeued.size());
}

void ReplicationOutbox::OnBatchDone(PeerState* peer, uint64_t batch_id, absl::Status status,
                                    bool give_up, bool local) {
  // A peer refusing keys under an older layout than this node's only lags behind (see
  // Refusals): a plain failure, whose entries' results wait for the next attempt.
  bool peer_behind = false;
  if (IsNotAReplica(status) && options_.layout_version) {
    const std::optional<uint64_t> theirs = NotAReplicaLayoutVersion(status);
    const uint64_t ours = options_.layout_version();
    if (theirs.has_value() && *theirs < ours) {
      peer_behind = true;
      status = absl::UnavailableError(absl::StrCat(
          "the peer's cluster layout (version ", *theirs, ") is older than this node's (", ours,
          "); sending again once it has learned the newer one: ", status.message()));
    }
  }
  // The entries go: those the peer confirmed, or those of a record given up on.
  absl::Status deleted = absl::OkStatus();
  bool remove_entries = false;
  {
    WriteBatch batch;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      auto it = peer->in_flight.find(batch_id);
      if (it == peer->in_flight.end()) return;
      const std::vector<Waiting>& entries = it->second.entries;
      if (IsRecordRefusal(status) && it->second.records <= 1 && !entries.empty()) {
        // Refused alone: given up on after a few refusals in a row, for a refusal may pass (a
        // peer's format level not known yet, a limit changing during a rolling restart); at
        // once by a peer that does not replicate the key (it keeps no stray copies).
        int& refusals = peer->refusals[entries.front().entry.key];
        if (IsNotAReplica(status) ||
            ++refusals >= std::max(options_.refusals_before_giving_up, 1)) {
          give_up = true;
        }
      }
      if (give_up && !entries.empty()) {
        peer->refusals.erase(entries.front().entry.key);
        peer->deferred.erase(entries.front().entry.key);
      }
      if (status.ok() && !peer->refusals.empty()) {
        for (const Waiting& w : entries) peer->refusals.erase(w.entry.key);
      }
      if (status.ok() && !peer->deferred.empty()) {
        for (const Waiting& w : entries) peer->deferred.erase(w.entry.key);
      }
      remove_entries = status.ok() || give_up;
      if (remove_entries) {
        for (const Waiting& w : it->second.entries) {
          batch.Delete(Column::kOutbox, EntryKey(w.entry.peer_id, w.entry.seq));
        }
      }
    }
    // Not synced: an entry whose deletion is lost in a crash is only sent again.
    if (remove_entries) deleted = engine_->Write(batch, WriteOptions{});
  }

  std::vector<Report> reports;
  std::optional<Backoff> backoff;
  std::optional<Deferral> deferral;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    auto it = peer->in_flight.find(batch_id);
    if (it == peer->in_flight.end()) return;
    PeerState::Batch batch = std::move(it->second);
    peer->in_flight.erase(it);
    for (const Waiting& w : batch.entries) peer->in_flight_seqs.erase(w.entry.seq);
    PeerOutboxStats& stats = peer->stats;
    // A peer that is only behind said nothing about the entries yet. A confirmed entry is
    // deleted: neither callback runs for it again.
    for (Waiting& w : batch.entries) {
      if (peer_behind) break;
      if (w.on_result) {
        reports.push_back(Report{std::move(w.on_result), w.entry, status});
      } else if (w.on_late && status.ok()) {
        reports.push_back(Report{std::move(w.on_late), w.entry, status});
        w.on_late = nullptr;
      }
      w.on_result = nullptr;
    }
    if (status.ok()) {
      if (deleted.ok()) {
        stats.depth -= std::min<uint64_t>(stats.depth, batch.entries.size());
        peer->backoff_ceiling = options_.initial_backoff;
      } else {
        // Still on disk: a scan finds them and sends them again, after a backoff (a full or
        // failing disk would otherwise have them sent again at once, round after round).
        peer->on_disk_only = true;
        stats.last_error = absl::StrCat(
            "could not delete the entries the peer confirmed (they are sent again after a "
            "backoff): ",
            deleted.ToString());
        backoff = StartBackoff(peer);
      }
      stats.sent_records += batch.sent;
      stats.reachable = true;
      if (options_.clock != nullptr) stats.last_success = options_.clock->Now();
    } else if (give_up) {
      // Given up on: the peer answered (or was never asked), and the next batch goes at once.
      if (deleted.ok()) {
        stats.depth -= std::min<uint64_t>(stats.depth, batch.entries.size());
      } else {
        // A scan finds them, and the peer refuses them again: after a backoff, as above (an
        // oversized record is given up on here without a call, so at once would be a spin).
        peer->on_disk_only = true;
        backoff = StartBackoff(peer);
      }
      ++stats.failed_batches;
      if (IsNotAReplica(status)) {
        // Not lost to the peer: it does not replicate the key (in its layout, which is not older
        // than this node's, or of a version it did not say: then the handoff and anti-entropy
        // bring it the key if it is behind).
        stats.last_error =
            absl::StrCat("gave up on a record the peer does not replicate: ", status.ToString());
      } else {
        stats.dropped += batch.entries.size();
        stats.last_error = absl::StrCat("gave up on a record: ", status.ToString());
      }
    } else {
      ++stats.failed_batches;
      // A refusal is an answer, and so is a peer's word that its layout is behind.
      if (!IsRecordRefusal(status) && !peer_behind && !local) stats.reachable = false;
      stats.last_error = status.ToString();
      // A refusal may be about one record of the batch: its keys go again one per batch (a
      // record refused alone goes again alone, first). So do those of a batch that a peer only
      // behind refused (it names no record): the keys it does replicate go on meanwhile.
      const bool behind_on_several = peer_behind && batch.records > 1;
      if (IsRecordRefusal(status) || behind_on_several) {
        peer->isolate = std::max(peer->isolate, std::max<size_t>(batch.records, 1));
      }
      const std::string first_key = batch.entries.empty() ? "" : batch.entries.front().entry.key;
      for (Waiting& w : batch.entries) Enqueue(peer, std::move(w));
      // A peer that does not replicate one of the keys answered, or one only behind refused
      // several: the keys go again at once, one per batch. A record refused alone by a peer only
      // behind is held back for a backoff of its own while the keys after it go on.
      if (peer_behind && !behind_on_several && !first_key.empty()) {
        deferral = DeferKey(peer, first_key);
      } else if (!IsNotAReplica(status) && !behind_on_several) {
        backoff = StartBackoff(peer);
      }
    }
    Pump(peer);
  }
  RunReports(std::move(reports));
  ScheduleBackoff(peer, backoff);
  if (deferral.has_value()) {
    scheduler_->RunAfter(deferral->delay, [liveness = liveness_, this, peer,
                                           key = std::move(deferral->key), gen = deferral->gen] {
      if (!liveness->Enter()) return;
      OnDeferralDone(peer, key, gen);
      liveness->Exit();
    });
  }
  Drain(peer);
}

ReplicationOutbox::Deferral ReplicationOutbox::DeferKey(PeerState* peer, const std::string& key) {
  PeerState::Deferral& deferral = peer->deferred[key];
  deferral.held = true;
  // A ceiling that doubles per attempt up to max_backoff, as for a peer.
  absl::Duration ceiling = options_.initial_backoff;
  for (int i = 0; i < deferral.attempts && ceiling < options_.max_backoff; ++i) ceiling *= 2;
  ++deferral.attempts;
  return Deferral{FullJitter(std::min(ceiling, options_.max_backoff)), key, deferral.attempts};
}

void ReplicationOutbox::OnDeferralDone(PeerState* peer, const std::string& key, int gen) {
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    // The key's latest hold only (with several batches in flight it may be held again).
    auto deferral = peer->deferred.find(key);
    if (deferral != peer->deferred.end() && deferral->second.attempts == gen) {
      deferral->second.held = false;
    }
    Pump(peer);
  }
  Drain(peer);
}

std::optional<ReplicationOutbox::Backoff> ReplicationOutbox::StartBackoff(PeerState* peer) {
  if (peer->paused) return std::nullopt;
  peer->paused = true;
  // The ceiling doubles up to max_backoff.
  const absl::Duration ceiling = std::min(peer->backoff_ceiling, options_.max_backoff);
  peer->backoff_ceiling = std::min(ceiling * 2, options_.max_backoff);
  return Backoff{FullJitter(ceiling), peer->backoff_gen};
}

absl::Duration ReplicationOutbox::FullJitter(absl::Duration ceiling) {
  const int64_t ceiling_ns = std::max<int64_t>(absl::ToInt64Nanoseconds(ceiling), 0);
  return absl::Nanoseconds(absl::Uniform<int64_t>(absl::IntervalClosedClosed, rng_, 0, ceiling_ns));
}

void ReplicationOutbox::ScheduleBackoff(PeerState* peer, std::optional<Backoff> backoff) {
  if (!backoff) return;
  scheduler_->RunAfter(backoff->delay, [liveness = liveness_, this, peer, gen = backoff->gen] {
    if (!liveness->Enter()) return;
    OnBackoffDone(peer, gen);
    liveness->Exit();
  });
}

void ReplicationOutbox::OnBackoffDone(PeerState* peer, uint64_t gen) {
  {
    absl::MutexLock lock(&mu_);
    if (gen != peer->backoff_gen) return;  // Resume ended this backoff already
    peer->paused = false;
    Pump(peer);
  }
  Drain(peer);
}

void ReplicationOutbox::Resume(absl::string_view peer_id) {
  PeerState* peer;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    peer = FindPeer(peer_id);
    if (peer == nullptr || !peer->paused) return;
    peer->paused = false;
    ++peer->backoff_gen;
    peer->backoff_ceiling = options_.initial_backoff;
    Pump(peer);
  }
  Drain(peer);
}

std::vector<PeerOutboxStats> ReplicationOutbox::Stats() const {
  absl::MutexLock lock(&mu_);
  std::vector<PeerOutboxStats> stats;
  stats.reserve(peers_.size());
  for (const auto& [id, peer] : peers_) stats.push_back(peer->stats);
  return stats;
}

void ReplicationOutbox::Shutdown() {
  std::vector<Report> reports;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
    const absl::Status status = absl::UnavailableError(
        "the replication outbox is shutting down; the entry stays on "
        "disk and is sent after the node restarts");
    auto report = [&](Waiting& w) {
      if (w.on_result) reports.push_back(Report{std::move(w.on_result), w.entry, status});
      w.on_result = nullptr;
    };
    for (auto& [id, peer] : peers_) {
      for (auto& [seq, w] : peer->queued) report(w);
      for (auto& [batch_id, batch] : peer->in_flight) {
        for (Waiting& w : batch.entries) report(w);
      }
    }
    // Drain loops stop at their next step; wait for the send or scan they are in to return, and
    // then for running completions and timers, so that neither the transport nor the scheduler
    // is called once Shutdown has returned.
    mu_.Await(absl::Condition(this, &ReplicationOutbox::NoneDraining));
  }
  liveness_->AwaitIdle(/*kill=*/false);
  RunReports(std::move(reports));
}

bool ReplicationOutbox::NoneDraining() const {
  auto draining = [](const auto& peer) { return peer->draining; };
  for (const auto& [id, peer] : peers_) {
    if (draining(peer)) return false;
  }
  return std::none_of(removed_peers_.begin(), removed_peers_.end(), draining);
}

void ReplicationOutbox::RunReports(std::vector<Report> reports) {
  reports.erase(
      std::remove_if(reports.begin(), reports.end(), [](const Report& r) { return !r.on_result; }),
      reports.end());
  if (reports.empty()) return;
  executor_->Schedule([reports = std::move(reports)] {
    for (const Report& r : reports) r.on_result(r.entry, r.status);
  });
}

}  // namespace kv

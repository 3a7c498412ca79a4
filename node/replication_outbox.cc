#include "node/replication_outbox.h"

#include <algorithm>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kv {
namespace {

constexpr char kSeparator = '\0';
constexpr size_t kSeqBytes = 8;

std::string PeerPrefix(absl::string_view peer_id) {
  std::string prefix(peer_id);
  prefix.push_back(kSeparator);
  return prefix;
}

// Splits an outbox column key; false if it is not peer_id '\0' 8-byte-seq.
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

}  // namespace

// Lets late completions and timers find out whether the outbox still exists, and lets the
// destructor wait for those already running inside it. Entering never blocks on a lock held
// across the outbox's work, so an inline completion nested in another one is fine.
struct ReplicationOutbox::Liveness {
  absl::Mutex mu;
  int active ABSL_GUARDED_BY(mu) = 0;
  bool dead ABSL_GUARDED_BY(mu) = false;

  bool Enter() {
    absl::MutexLock lock(&mu);
    if (dead) return false;
    ++active;
    return true;
  }
  void Exit() {
    absl::MutexLock lock(&mu);
    --active;
  }
  // Waits until no one is inside; with `kill`, refuses later entries too.
  void AwaitIdle(bool kill) {
    absl::MutexLock lock(&mu);
    if (kill) dead = true;
    mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &active));
  }
};

// One peer's queue and sender. Every field but `member` is guarded by the outbox's mu_.
struct ReplicationOutbox::PeerState {
  struct Batch {
    std::vector<Waiting> entries;
    size_t records = 0;  // distinct keys
  };
  struct Ready {
    uint64_t batch_id;
    std::vector<std::string> keys;
  };

  explicit PeerState(Member m) : member(std::move(m)) {}
  size_t InMemory() const { return queued.size() + in_flight_seqs.size(); }

  const Member member;
  std::map<uint64_t, Waiting> queued;  // held in memory, not in flight, by seq
  // The seqs in `queued` of each key, so a batch takes all of a key's entries at once.
  std::map<std::string, std::set<uint64_t>, std::less<>> queued_by_key;
  std::map<uint64_t, Batch> in_flight;  // by batch id
  std::set<uint64_t> in_flight_seqs;
  // Seqs (with their keys) handed out by AddEntries and not yet submitted: a scan must not pick
  // them up, since Submit will (their batch may even fail to commit, leaving only this trace).
  std::map<uint64_t, std::string> unsubmitted;
  std::deque<Ready> ready;  // formed batches waiting for Drain to send them
  uint64_t next_batch_id = 1;
  bool draining = false;
  bool scan_requested = false;
  bool on_disk_only = false;  // some entries on disk are not held in memory
  bool paused = false;        // waiting out a backoff
  bool scanning = false;      // ScanDisk is reading entries that are not in memory yet
  bool removed = false;       // RemovePeer: sends nothing more
  uint64_t backoff_gen = 0;   // bumped by Resume: the timer of an ended backoff does nothing
  absl::Duration backoff_ceiling;
  PeerOutboxStats stats;
};

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
  absl::MutexLock lock(&mu_);
  if (peers_.count(member.id) > 0) return;
  auto peer = std::make_unique<PeerState>(member);
  peer->stats.peer_id = member.id;
  peer->backoff_ceiling = options_.initial_backoff;
  peers_.emplace(member.id, std::move(peer));
}

absl::StatusOr<uint64_t> ReplicationOutbox::RemovePeer(absl::string_view peer_id) {
  std::vector<Report> reports;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(std::string(peer_id));
    if (it == peers_.end()) {
      return absl::NotFoundError(absl::StrCat("\"", peer_id, "\" is not a replication peer"));
    }
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
    peer->scan_requested = false;
    peer->on_disk_only = false;
    removed_peers_.push_back(std::move(it->second));
    peers_.erase(it);
  }
  RunReports(std::move(reports));
  absl::StatusOr<uint64_t> deleted = DeleteAllEntries(peer_id);
  if (deleted.ok()) {
    absl::MutexLock lock(&mu_);
    removed_entries_ += *deleted;
  }
  return deleted;
}

absl::StatusOr<uint64_t> ReplicationOutbox::DeleteAllEntries(absl::string_view peer_id) {
  constexpr size_t kDeletesPerBatch = 10'000;
  const std::string prefix = PeerPrefix(peer_id);
  uint64_t deleted = 0;
  WriteBatch batch;
  size_t in_batch = 0;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kOutbox);
  for (it->Seek(prefix); it->Valid() && absl::StartsWith(it->key(), prefix); it->Next()) {
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

std::string ReplicationOutbox::EntryKey(absl::string_view peer_id, uint64_t seq) {
  std::string key = PeerPrefix(peer_id);
  for (int shift = 56; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>((seq >> shift) & 0xff));
  }
  return key;
}

ReplicationOutbox::PeerState* ReplicationOutbox::FindPeer(absl::string_view peer_id) {
  auto it = peers_.find(std::string(peer_id));
  return it == peers_.end() ? nullptr : it->second.get();
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

void ReplicationOutbox::Submit(std::vector<OutboxEntry> entries, EntryCallback on_result) {
  std::vector<Report> reports;
  std::vector<PeerState*> to_drain;
  WriteBatch orphans;  // entries of a peer removed while their write committed
  bool has_orphans = false;
  {
    absl::MutexLock lock(&mu_);
    for (OutboxEntry& entry : entries) {
      PeerState* peer = FindPeer(entry.peer_id);
      if (peer == nullptr) {
        orphans.Delete(Column::kOutbox, EntryKey(entry.peer_id, entry.seq));
        has_orphans = true;
        reports.push_back(Report{on_result, entry,
                                 absl::FailedPreconditionError(absl::StrCat(
                                     "\"", entry.peer_id, "\" is not a replication peer"))});
        continue;
      }
      peer->unsubmitted.erase(entry.seq);
      ++peer->stats.depth;
      if (shutdown_) {
        reports.push_back(Report{on_result, entry,
                                 absl::UnavailableError("the replication outbox is shut down; "
                                                        "the entry stays on disk")});
        continue;
      }
      if (!Hold(peer, Waiting{entry, on_result})) {
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
  const size_t max_records = std::max<size_t>(options_.batch_max_records, 1);
  while (peer->in_flight.size() < max_in_flight && !peer->queued.empty()) {
    // The oldest entries' keys, each with every entry queued for it: one record covers them all,
    // since it is read after all of them were written.
    PeerState::Batch batch;
    std::vector<std::string> keys;
    while (keys.size() < max_records && !peer->queued.empty()) {
      auto by_key = peer->queued_by_key.find(peer->queued.begin()->second.entry.key);
      for (uint64_t seq : by_key->second) {
        auto entry = peer->queued.find(seq);
        peer->in_flight_seqs.insert(seq);
        batch.entries.push_back(std::move(entry->second));
        peer->queued.erase(entry);
      }
      keys.push_back(by_key->first);
      peer->queued_by_key.erase(by_key);
    }
    batch.records = keys.size();
    const uint64_t batch_id = peer->next_batch_id++;
    peer->in_flight.emplace(batch_id, std::move(batch));
    peer->ready.push_back(PeerState::Ready{batch_id, std::move(keys)});
  }
  // Refill from disk while the batches are out, so the sender never idles on a backlog.
  if (peer->queued.empty() && peer->on_disk_only &&
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
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> record = engine_->Get(Column::kData, key);
    if (record.ok()) {
      records.push_back(EncodedRecord{key, *std::move(record)});
    } else if (!absl::IsNotFound(record.status())) {
      // Entries whose key has no record are simply deleted with the batch.
      OnBatchDone(
          peer, batch_id,
          absl::Status(record.status().code(),
                       absl::StrCat("reading a record to replicate: ", record.status().message())));
      return;
    }
  }
  transport_->MergeRecords(peer->member, std::move(records),
                           [liveness = liveness_, this, peer, batch_id](absl::Status status) {
                             if (!liveness->Enter()) return;
                             OnBatchDone(peer, batch_id, std::move(status));
                             liveness->Exit();
                           });
}

void ReplicationOutbox::OnBatchDone(PeerState* peer, uint64_t batch_id, absl::Status status) {
  absl::Status deleted = absl::OkStatus();
  if (status.ok()) {
    WriteBatch batch;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      auto it = peer->in_flight.find(batch_id);
      if (it == peer->in_flight.end()) return;
      for (const Waiting& w : it->second.entries) {
        batch.Delete(Column::kOutbox, EntryKey(w.entry.peer_id, w.entry.seq));
      }
    }
    // Not synced: an entry whose deletion is lost in a crash is only sent again.
    deleted = engine_->Write(batch, WriteOptions{});
  }

  std::vector<Report> reports;
  std::optional<Backoff> backoff;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    auto it = peer->in_flight.find(batch_id);
    if (it == peer->in_flight.end()) return;
    PeerState::Batch batch = std::move(it->second);
    peer->in_flight.erase(it);
    for (const Waiting& w : batch.entries) peer->in_flight_seqs.erase(w.entry.seq);
    PeerOutboxStats& stats = peer->stats;
    for (Waiting& w : batch.entries) {
      if (w.on_result) reports.push_back(Report{std::move(w.on_result), w.entry, status});
      w.on_result = nullptr;
    }
    if (status.ok()) {
      if (deleted.ok()) {
        stats.depth -= std::min<uint64_t>(stats.depth, batch.entries.size());
      } else {
        peer->on_disk_only = true;  // still on disk: a scan finds them and sends them again
      }
      stats.sent_records += batch.records;
      stats.reachable = true;
      if (options_.clock != nullptr) stats.last_success = options_.clock->Now();
      peer->backoff_ceiling = options_.initial_backoff;
    } else {
      ++stats.failed_batches;
      stats.reachable = false;
      stats.last_error = status.ToString();
      for (Waiting& w : batch.entries) Enqueue(peer, std::move(w));
      backoff = StartBackoff(peer);
    }
    Pump(peer);
  }
  RunReports(std::move(reports));
  ScheduleBackoff(peer, backoff);
  Drain(peer);
}

std::optional<ReplicationOutbox::Backoff> ReplicationOutbox::StartBackoff(PeerState* peer) {
  if (peer->paused) return std::nullopt;
  peer->paused = true;
  // Full jitter: uniform in [0, ceiling]; the ceiling doubles up to max_backoff.
  const absl::Duration ceiling = std::min(peer->backoff_ceiling, options_.max_backoff);
  const int64_t ceiling_ns = std::max<int64_t>(absl::ToInt64Nanoseconds(ceiling), 0);
  const int64_t delay_ns = absl::Uniform<int64_t>(absl::IntervalClosedClosed, rng_, 0, ceiling_ns);
  peer->backoff_ceiling = std::min(ceiling * 2, options_.max_backoff);
  return Backoff{absl::Nanoseconds(delay_ns), peer->backoff_gen};
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

void ReplicationOutbox::ScanDisk(PeerState* peer) {
  // Only entries that exist when the scan starts, were submitted (or recovered) and are not
  // held in memory are taken. None of them can be deleted or queued by anyone else meanwhile,
  // so the snapshot stays accurate for them.
  std::set<uint64_t> skip;
  uint64_t seq_limit;
  size_t room;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || peer->removed) return;
    skip = peer->in_flight_seqs;
    for (const auto& [seq, key] : peer->unsubmitted) skip.insert(seq);
    for (const auto& [seq, w] : peer->queued) skip.insert(seq);
    seq_limit = next_seq_;
    room = options_.max_queued_per_peer - std::min(options_.max_queued_per_peer, peer->InMemory());
    // Set again by whatever leaves an entry on disk only from now on, including this scan.
    peer->on_disk_only = false;
    peer->scanning = true;
  }

  const std::string prefix = PeerPrefix(peer->member.id);
  std::vector<OutboxEntry> found;
  bool complete = true;  // every entry of the peer on disk was seen
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kOutbox);
  for (it->Seek(prefix); it->Valid() && absl::StartsWith(it->key(), prefix); it->Next()) {
    absl::string_view peer_id;
    uint64_t seq;
    if (!ParseEntryKey(it->key(), &peer_id, &seq) || seq >= seq_limit || skip.count(seq) > 0) {
      continue;
    }
    if (found.size() == room) {
      complete = false;
      break;
    }
    found.push_back(OutboxEntry{peer->member.id, seq, std::string(it->value())});
  }
  const absl::Status scanned = it->status();

  std::optional<Backoff> backoff;
  {
    absl::MutexLock lock(&mu_);
    peer->scanning = false;
    if (shutdown_ || peer->removed) return;
    if (scanned.ok()) {
      if (!complete) peer->on_disk_only = true;
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

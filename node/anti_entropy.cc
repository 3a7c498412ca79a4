#include "node/anti_entropy.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node/log.h"
#include "storage/record_codec.h"

namespace kv {

struct AntiEntropy::ExchangeState {
  Member member;
  std::function<void(absl::StatusOr<ExchangeResult>)> done;
  absl::Time started;              // on the steady clock
  std::vector<uint32_t> segments;  // differing segments, increasing
  size_t next_segment = 0;
  std::vector<Diff> diffs;  // differing keys, in segment order
  size_t next_diff = 0;
  uint64_t repaired = 0;
  uint64_t skipped = 0;        // keys that could not be repaired (see Errors in the header)
  absl::Status first_skipped;  // the first one's error, naming the key
  // Of those, keys whose peer record this node could not read or merge: it may still lack
  // something the peer holds (a refused push does not mean that).
  uint64_t pull_skipped = 0;
  uint64_t generation = 0;  // of the index's ring when the exchange started
  // Per range (interior index) that differed: keys found different and keys repaired.
  std::map<uint32_t, std::pair<uint64_t, uint64_t>> ranges;
};

namespace {

uint32_t RangeOf(absl::string_view key) {
  return MerkleTree::SegmentOf(key) / MerkleTree::kLeavesPerInterior;
}

// Whether an error stops the exchange (the peer, the network, authorization, or a peer that
// sheds load: its storage is behind) rather than being about one key's record.
bool StopsTheExchange(const absl::Status& status) {
  // A record larger than a message; INTERNAL: one record's local merge.
  return !IsRecordRefusal(status) && !IsMessageTooLarge(status) && !absl::IsInternal(status);
}

}  // namespace

AntiEntropy::AntiEntropy(MerkleIndex* index, LocalStore* store, PeerTransport* transport,
                         Scheduler* scheduler, Executor* executor, const Clock* wall_clock,
                         const Clock* steady_clock, Options options)
    : index_(index),
      store_(store),
      transport_(transport),
      scheduler_(scheduler),
      executor_(executor),
      wall_clock_(wall_clock),
      steady_clock_(steady_clock),
      options_(options) {
  absl::MutexLock lock(&mu_);
  SyncPeersLocked(index_->peers(), index_->generation());
  tokens_ = options_.keys_per_second;
  refilled_ = steady_clock_->Now();
}

AntiEntropy::~AntiEntropy() { Shutdown(); }

void AntiEntropy::SyncPeersLocked(const std::vector<Member>& peers, uint64_t generation) const {
  if (generation != generation_) {
    // Another ring: the trees shared with each peer cover other keys now. Totals stay; what the
    // last exchange found no longer describes them.
    generation_ = generation;
    for (PeerAntiEntropyStats& s : stats_) {
      s.in_sync = false;
      s.last_segments_different = s.last_keys_different = s.last_keys_repaired = 0;
    }
    for (auto& peer_ranges : ranges_) peer_ranges.clear();
  }
  const bool same =
      peers.size() == stats_.size() &&
      std::equal(peers.begin(), peers.end(), stats_.begin(),
                 [](const Member& m, const PeerAntiEntropyStats& s) { return m.id == s.peer_id; });
  if (same) return;
  std::vector<PeerAntiEntropyStats> stats;
  std::vector<std::map<uint32_t, RangeAntiEntropyStats>> ranges;
  for (const Member& peer : peers) {
    const size_t old = StatsIndexLocked(peer.id);
    if (old == kNoPeer) {
      stats.emplace_back();
      stats.back().peer_id = peer.id;
      ranges.emplace_back();
    } else {
      stats.push_back(std::move(stats_[old]));
      ranges.push_back(std::move(ranges_[old]));
    }
  }
  stats_ = std::move(stats);
  ranges_ = std::move(ranges);
}

size_t AntiEntropy::StatsIndexLocked(absl::string_view peer_id) const {
  for (size_t i = 0; i < stats_.size(); ++i) {
    if (stats_[i].peer_id == peer_id) return i;
  }
  return kNoPeer;
}

void AntiEntropy::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || shutdown_) return;
    started_ = true;
  }
  scheduler_->RunAfter(options_.interval, guard_.Wrap([this] { Tick(); }));
}

void AntiEntropy::Shutdown() {
  std::function<void(absl::StatusOr<ExchangeResult>)> done;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    // The running exchange's callbacks do nothing from now on, so it never finishes: its caller
    // is answered here instead (an Admin.RunAntiEntropy call would otherwise hold the server's
    // stop until the exchange ended).
    if (current_ != nullptr) {
      done = std::exchange(current_->done, nullptr);
      current_ = nullptr;
    }
  }
  guard_.Close();
  if (done) done(absl::UnavailableError("the node is stopping; the exchange ended unfinished"));
}

void AntiEntropy::Tick() {
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
  }
  ExchangeNow("", nullptr);
  scheduler_->RunAfter(options_.interval, guard_.Wrap([this] { Tick(); }));
}

void AntiEntropy::ExchangeNow(std::string peer_id, std::function<void(absl::Status)> done) {
  std::function<void(absl::StatusOr<ExchangeResult>)> wrapped;
  if (done) {
    wrapped = [done = std::move(done)](absl::StatusOr<ExchangeResult> result) {
      done(result.status());
    };
  }
  Exchange(std::move(peer_id), std::move(wrapped));
}

void AntiEntropy::Exchange(std::string peer_id,
                           std::function<void(absl::StatusOr<ExchangeResult>)> done) {
  // The ring may have changed since the last exchange (MerkleIndex::ChangeRing).
  const std::vector<Member> peers = index_->peers();
  const uint64_t generation = index_->generation();
  auto ex = std::make_shared<ExchangeState>();
  size_t chosen = 0;
  // Decided under the lock, answered outside it: `done` may call back into this object.
  absl::StatusOr<ExchangeResult> refused = ExchangeResult{};
  bool start = false;
  {
    absl::MutexLock lock(&mu_);
    SyncPeersLocked(peers, generation);
    if (shutdown_) {
      refused = absl::UnavailableError("anti-entropy is shut down");
    } else if (peers.empty() && peer_id.empty()) {
      // Nothing to exchange: an empty, complete result.
    } else if (peer_id.empty()) {
      chosen = next_peer_++ % peers.size();
      start = true;
    } else {
      auto it = std::find_if(peers.begin(), peers.end(),
                             [&](const Member& m) { return m.id == peer_id; });
      if (it == peers.end()) {
        refused = absl::InvalidArgumentError(
            absl::StrCat("\"", peer_id, "\" is not a peer of this node"));
      } else {
        chosen = static_cast<size_t>(it - peers.begin());
        start = true;
      }
    }
    if (start && running_) {
      refused = absl::AbortedError("an anti-entropy exchange is already running");
      start = false;
    }
    if (start) {
      running_ = true;
      running_peer_ = peers[chosen].id;
      current_ = ex;
      ex->done = std::move(done);
    }
  }
  if (!start) {
    if (peers.empty()) MaybeFinishCatchingUp();  // a ring of one: nobody to compare with
    if (done) done(std::move(refused));
    return;
  }
  ex->member = peers[chosen];
  ex->generation = generation;
  ex->started = steady_clock_->Now();
  executor_->Schedule(guard_.Wrap([this, ex] { Begin(ex); }));
}

void AntiEntropy::Begin(ExchangePtr ex) {
  if (!index_->ready()) {
    if (index_->stale()) {
      // A failed write left the trees wrong: rebuild them from what was written.
      executor_->Schedule(guard_.Wrap([this] {
        absl::StatusOr<bool> rebuilt = index_->RebuildIfStale();
        // Not superseded by a ring change, nor waiting for a scan (the node retries then).
        if (!rebuilt.ok() && !absl::IsCancelled(rebuilt.status()) &&
            !absl::IsUnavailable(rebuilt.status())) {
          LogWarn("rebuilding the Merkle trees after a failed write did not finish",
                  {{"error", std::string(rebuilt.status().message())}});
        }
      }));
      return Finish(ex, absl::UnavailableError(
                            "this node's Merkle tree is being rebuilt after a failed write"));
    }
    return Finish(ex, absl::UnavailableError("this node's Merkle tree is still being built"));
  }
  transport_->MerkleNodes(ex->member, MerkleLevel::kRoot, {},
                          guard_.Wrap([this, ex](absl::StatusOr<std::vector<uint64_t>> remote) {
                            OnRoot(ex, std::move(remote));
                          }));
}

void AntiEntropy::OnRoot(ExchangePtr ex, absl::StatusOr<std::vector<uint64_t>> remote) {
  absl::StatusOr<std::vector<uint64_t>> local =
      index_->Nodes(ex->member.id, MerkleLevel::kRoot, {});
  if (!remote.ok()) return Finish(ex, remote.status());
  if (!local.ok()) return Finish(ex, local.status());
  if (*remote == *local) return Finish(ex, absl::OkStatus());
  transport_->MerkleNodes(ex->member, MerkleLevel::kInterior, {},
                          guard_.Wrap([this, ex](absl::StatusOr<std::vector<uint64_t>> remote) {
                            OnInterior(ex, std::move(remote));
                          }));
}

void AntiEntropy::OnInterior(ExchangePtr ex, absl::StatusOr<std::vector<uint64_t>> remote) {
  absl::StatusOr<std::vector<uint64_t>> local =
      index_->Nodes(ex->member.id, MerkleLevel::kInterior, {});
  if (!remote.ok()) return Finish(ex, remote.status());
  if (!local.ok()) return Finish(ex, local.status());
  if (remote->size() != MerkleTree::kInterior) {
    return Finish(ex, absl::InternalError(absl::StrCat(ex->member.id, " sent ", remote->size(),
                                                       " interior hashes instead of 256")));
  }
  std::vector<uint32_t> interior = DifferingIndexes(*local, *remote);
  if (interior.empty()) return Finish(ex, absl::OkStatus());  // changed meanwhile
  transport_->MerkleNodes(
      ex->member, MerkleLevel::kLeaves, interior,
      guard_.Wrap([this, ex, interior](absl::StatusOr<std::vector<uint64_t>> remote) {
        OnLeaves(ex, interior, std::move(remote));
      }));
}

void AntiEntropy::OnLeaves(ExchangePtr ex, std::vector<uint32_t> interior,
                           absl::StatusOr<std::vector<uint64_t>> remote) {
  absl::StatusOr<std::vector<uint64_t>> local =
      index_->Nodes(ex->member.id, MerkleLevel::kLeaves, interior);
  if (!remote.ok()) return Finish(ex, remote.status());
  if (!local.ok()) return Finish(ex, local.status());
  if (remote->size() != local->size()) {
    return Finish(ex, absl::InternalError(absl::StrCat(ex->member.id, " sent ", remote->size(),
                                                       " leaf hashes instead of ", local->size())));
  }
  for (uint32_t i : DifferingIndexes(*local, *remote)) {
    ex->segments.push_back(interior[i / MerkleTree::kLeavesPerInterior] *
                               MerkleTree::kLeavesPerInterior +
                           i % MerkleTree::kLeavesPerInterior);
  }
  NextSegments(ex);
}

void AntiEntropy::NextSegments(ExchangePtr ex) {
  if (ex->next_segment == ex->segments.size() ||
      ex->diffs.size() >= options_.max_keys_per_exchange) {
    return RepairNext(ex);
  }
  const size_t per_call =
      std::clamp<size_t>(options_.segments_per_call, 1, MerkleIndex::kMaxSegmentsPerCall);
  const size_t begin = ex->next_segment;
  const size_t end = std::min(ex->segments.size(), begin + per_call);
  std::vector<uint32_t> chunk(ex->segments.begin() + begin, ex->segments.begin() + end);
  ex->next_segment = end;
  transport_->SegmentKeys(
      ex->member, chunk, options_.segment_keys_max_bytes,
      guard_.Wrap([this, ex, begin, chunk](absl::StatusOr<SegmentKeyList> remote) {
        OnSegmentKeys(ex, begin, chunk, std::move(remote));
      }));
}

void AntiEntropy::OnSegmentKeys(ExchangePtr ex, size_t begin, std::vector<uint32_t> segments,
                                absl::StatusOr<SegmentKeyList> remote) {
  if (!remote.ok()) return Finish(ex, remote.status());
  if (remote->segments == 0 || remote->segments > segments.size()) {
    return Finish(ex,
                  absl::InternalError(absl::StrCat(ex->member.id, " answered ", remote->segments,
                                                   " segments of ", segments.size())));
  }
  // The peer answered the first segments only, and this node lists its own keys of those in
  // pages of the same size: the segments both lists cover are compared, the others are asked
  // for next.
  segments.resize(remote->segments);
  absl::StatusOr<SegmentKeyList> local =
      index_->SegmentEntries(ex->member.id, segments, options_.segment_keys_max_bytes);
  if (!local.ok()) return Finish(ex, local.status());
  ex->next_segment = begin + local->segments;
  const uint32_t last_covered = segments[local->segments - 1];
  // key -> (local digest, remote digest); ordered, so diffs come out in a deterministic order.
  std::map<std::string, std::pair<std::optional<uint64_t>, std::optional<uint64_t>>> keys;
  for (KeyDigest& entry : local->entries) keys[std::move(entry.key)].first = entry.digest;
  for (KeyDigest& entry : remote->entries) {
    if (MerkleTree::SegmentOf(entry.key) > last_covered) continue;  // asked for again
    // A key this node does not share with the peer on its own ring (the peer is on another
    // layout) is not taken from it: the copy would be a stray here, which no tombstone purge
    // asks about (C8). Once both are on one ring, the trees agree on what they share.
    if (!index_->Shares(entry.key, ex->member.id)) continue;
    keys[std::move(entry.key)].second = entry.digest;
  }
  for (auto& [key, digests] : keys) {
    if (digests.first == digests.second) continue;
    ++ex->ranges[RangeOf(key)].first;
    ex->diffs.push_back(Diff{key, digests.first.has_value(), digests.second.has_value()});
  }
  NextSegments(ex);
}

absl::Duration AntiEntropy::TakeBudget(size_t keys) {
  absl::MutexLock lock(&mu_);
  const double rate = std::max(options_.keys_per_second, 1.0);
  const double burst = std::max(rate, static_cast<double>(options_.keys_per_batch));
  const absl::Time now = steady_clock_->Now();
  // A clock that went back (a test's) refills nothing rather than taking its step's worth away.
  const absl::Duration elapsed = std::max(absl::ZeroDuration(), now - refilled_);
  tokens_ = std::min(burst, tokens_ + absl::ToDoubleSeconds(elapsed) * rate);
  refilled_ = now;
  const double needed = static_cast<double>(keys);
  if (tokens_ >= needed) {
    tokens_ -= needed;
    return absl::ZeroDuration();
  }
  return absl::Seconds((needed - tokens_) / rate);
}

void AntiEntropy::RepairNext(ExchangePtr ex) {
  const size_t limit = std::min(ex->diffs.size(), options_.max_keys_per_exchange);
  if (ex->next_diff >= limit) return Finish(ex, absl::OkStatus());
  const size_t begin = ex->next_diff;
  const size_t end = std::min(limit, begin + std::max<size_t>(options_.keys_per_batch, 1));
  const absl::Duration wait = TakeBudget(end - begin);
  if (wait > absl::ZeroDuration()) {
    scheduler_->RunAfter(wait, guard_.Wrap([this, ex] { RepairNext(ex); }));
    return;
  }
  ex->next_diff = end;
  // Read the peer's records of the batch (those it has), then merge and push.
  struct Reads {
    absl::Mutex mu;
    size_t outstanding = 0;
    std::vector<absl::StatusOr<std::string>> records;
  };
  auto reads = std::make_shared<Reads>();
  reads->records.assign(end - begin, absl::NotFoundError("the peer has no record"));
  std::vector<size_t> to_read;
  for (size_t i = begin; i < end; ++i) {
    if (ex->diffs[i].remote) to_read.push_back(i);
  }
  const absl::Time asked = steady_clock_->Now();
  if (to_read.empty()) return MergeAndPush(ex, begin, end, std::move(reads->records), asked);
  reads->outstanding = to_read.size();
  for (size_t i : to_read) {
    transport_->ReadRecord(
        ex->member, ex->diffs[i].key,
        guard_.Wrap([this, ex, reads, begin, end, i, asked](absl::StatusOr<std::string> record) {
          bool last = false;
          {
            absl::MutexLock lock(&reads->mu);
            reads->records[i - begin] = std::move(record);
            last = --reads->outstanding == 0;
          }
          if (last) MergeAndPush(ex, begin, end, std::move(reads->records), asked);
        }));
  }
}

void AntiEntropy::MergeAndPush(ExchangePtr ex, size_t begin, size_t end,
                               std::vector<absl::StatusOr<std::string>> remote, absl::Time asked) {
  auto push = std::make_shared<PushKeys>();  // keys whose record the peer lacks or holds otherwise
  for (size_t i = begin; i < end; ++i) {
    const std::string& key = ex->diffs[i].key;
    absl::StatusOr<std::string>& theirs = remote[i - begin];
    if (!theirs.ok() && !absl::IsNotFound(theirs.status())) {
      if (StopsTheExchange(theirs.status())) return Finish(ex, theirs.status());
      ++ex->pull_skipped;
      SkipKey(ex, key, theirs.status(), /*counted=*/false);
      continue;
    }
    if (may_hold_ && !may_hold_(key)) {
      // A layout that arrived during the exchange took the key from this node: neither taken
      // here nor pushed (its owners exchange it among themselves).
      continue;
    }
    absl::StatusOr<SiblingSet> ours = absl::NotFoundError("no record");
    if (theirs.ok() && steady_clock_->Now() - asked > options_.max_pulled_record_age) {
      // Slow reads, or the merges before this one were: the record may have been replaced by a
      // tombstone since, confirmed by the reaper and purged everywhere, and merging it now would
      // bring the deleted value back (the reaper's confirm delay covers records in flight this
      // long at most). The next exchange reads it again.
      ++ex->pull_skipped;
      SkipKey(ex, key,
              absl::DeadlineExceededError(
                  absl::StrCat("the peer's record was asked for more than ",
                               absl::FormatDuration(options_.max_pulled_record_age),
                               " ago: not merged (a purge may have passed it since)")),
              /*counted=*/false);
      continue;
    }
    if (theirs.ok()) {
      absl::StatusOr<SiblingSet> decoded = DecodeSiblingSet(*theirs);
      if (!decoded.ok()) {
        ++ex->pull_skipped;
        SkipKey(ex, key, decoded.status(), /*counted=*/false);
        continue;
      }
      ours = store_->MergeRecord(key, *decoded);
    } else {
      ours = store_->ReadRecord(key);
    }
    if (absl::IsNotFound(ours.status())) continue;  // purged meanwhile: nothing to send
    if (!ours.ok()) {
      if (StopsTheExchange(ours.status())) return Finish(ex, ours.status());
      if (theirs.ok()) ++ex->pull_skipped;  // the merge of their record failed
      SkipKey(ex, key, ours.status(), /*counted=*/false);
      continue;
    }
    std::string encoded = EncodeSiblingSet(*ours);
    ++ex->repaired;
    ++ex->ranges[RangeOf(key)].second;
    if (theirs.ok() && *theirs == encoded) continue;
    push->keys.push_back(key);
  }
  push->settled.assign(push->keys.size(), false);
  Push(ex, std::move(push), 0, 0);
}

void AntiEntropy::Push(ExchangePtr ex, std::shared_ptr<PushKeys> push, size_t next,
                       size_t alone_until) {
  const std::vector<std::string>& keys = push->keys;
  if (next >= keys.size()) return RepairNext(ex);
  // Each call carries the records as they are now (read again here, not when the batch was
  // merged): an earlier call of the batch may have taken up to its deadline, and a record read
  // before it could have been replaced by a tombstone since, confirmed by the reaper and purged
  // on the peer after this call arrives (node/tombstone_reaper.h counts on one call in flight).
  std::vector<EncodedRecord> chunk;
  size_t first = 0;  // index of chunk's first key
  size_t bytes = 0;
  size_t end = next;
  for (; end < keys.size(); ++end) {
    if (push->settled[end]) continue;
    const std::string& key = keys[end];
    absl::StatusOr<SiblingSet> ours = store_->ReadRecord(key);
    if (absl::IsNotFound(ours.status())) {  // purged meanwhile: nothing to send
      push->settled[end] = true;
      --ex->repaired;
      --ex->ranges[RangeOf(key)].second;
      continue;
    }
    if (!ours.ok()) {
      if (StopsTheExchange(ours.status())) return Finish(ex, ours.status());
      push->settled[end] = true;
      SkipKey(ex, key, ours.status(), /*counted=*/true);
      continue;
    }
    std::string encoded = EncodeSiblingSet(*ours);
    const size_t size = key.size() + encoded.size();
    if (!chunk.empty() && (first < alone_until || bytes + size > options_.push_max_bytes)) break;
    if (chunk.empty()) first = end;
    bytes += size;
    chunk.push_back(EncodedRecord{key, std::move(encoded)});
  }
  if (chunk.empty()) return Push(ex, push, end, alone_until);
  const bool several = chunk.size() > 1;
  transport_->MergeRecords(
      ex->member, std::move(chunk),
      guard_.Wrap([this, ex, push, next, first, end, several, alone_until](absl::Status status) {
        if (status.ok()) return Push(ex, push, end, alone_until);
        if (StopsTheExchange(status)) return Finish(ex, status);
        if (several) return Push(ex, push, next, end);  // find the record refused
        push->settled[first] = true;
        SkipKey(ex, push->keys[first], status, /*counted=*/true);
        Push(ex, push, end, alone_until);
      }));
}

void AntiEntropy::SkipKey(ExchangePtr ex, absl::string_view key, const absl::Status& error,
                          bool counted) {
  if (counted) {
    --ex->repaired;
    --ex->ranges[RangeOf(key)].second;
  }
  if (ex->skipped++ == 0) {
    ex->first_skipped = absl::Status(
        error.code(), absl::StrCat("key \"", absl::CHexEscape(key), "\": ", error.message()));
  }
}

void AntiEntropy::Finish(ExchangePtr ex, absl::Status status) {
  std::function<void(absl::StatusOr<ExchangeResult>)> done;
  ExchangeResult result;
  {
    absl::MutexLock lock(&mu_);
    running_ = false;
    running_peer_.clear();
    current_ = nullptr;
    const absl::Time now = wall_clock_->Now();
    // The peer left the ring during the exchange: nothing to record it under.
    const size_t peer = StatsIndexLocked(ex->member.id);
    PeerAntiEntropyStats unrecorded;
    std::map<uint32_t, RangeAntiEntropyStats> unrecorded_ranges;
    PeerAntiEntropyStats& stats = peer == kNoPeer ? unrecorded : stats_[peer];
    std::map<uint32_t, RangeAntiEntropyStats>& ranges =
        peer == kNoPeer ? unrecorded_ranges : ranges_[peer];
    stats.keys_repaired += ex->repaired;
    stats.last_attempt = now;
    for (const auto& [index, counts] : ex->ranges) {
      RangeAntiEntropyStats& range = ranges[index];
      range.index = index;
      range.keys_repaired += counts.second;
    }
    if (status.ok()) {
      ++stats.exchanges;
      stats.last_exchange = now;
      stats.last_duration = steady_clock_->Now() - ex->started;
      stats.last_error.clear();
      if (ex->skipped > 0) {
        stats.last_error = absl::StrCat(
            ex->skipped, " of ", std::min(ex->diffs.size(), options_.max_keys_per_exchange),
            " differing keys could not be repaired; the first: ", ex->first_skipped.ToString());
      }
      stats.in_sync = ex->segments.empty() && ex->diffs.empty();
      stats.last_segments_different = ex->segments.size();
      stats.last_keys_different = ex->diffs.size();
      stats.last_keys_repaired = ex->repaired;
      for (auto& [index, range] : ranges) {
        auto found = ex->ranges.find(index);
        range.last_keys_different = found == ex->ranges.end() ? 0 : found->second.first;
        if (range.last_keys_different > 0) {
          range.last_difference = now;
          range.keys_different_total += range.last_keys_different;
        }
      }
      result.peer_id = ex->member.id;
      result.segments_different = ex->segments.size();
      result.keys_different = ex->diffs.size();
      result.keys_repaired = ex->repaired;
      result.keys_skipped = ex->skipped;
      result.skipped_error = ex->first_skipped;
      result.complete = ex->next_segment == ex->segments.size() &&
                        ex->diffs.size() <= options_.max_keys_per_exchange;
      if (result.complete && ex->pull_skipped == 0) {
        caught_up_with_[ex->member.id] = ex->generation;
      }
    } else {
      ++stats.failed_exchanges;
      stats.last_error = status.ToString();
    }
    done = std::exchange(ex->done, nullptr);
  }
  if (status.ok()) MaybeFinishCatchingUp();
  if (!done) return;
  if (status.ok()) {
    done(std::move(result));
  } else {
    done(std::move(status));
  }
}

void AntiEntropy::MaybeFinishCatchingUp() {
  if (!store_->catching_up()) return;
  // During a membership change this node may own keys its trees do not cover yet (they follow
  // the ring the change started from); the change's completion brings a new ring.
  if (in_transition_ && in_transition_()) return;
  // Exchanges count under the ring they compared: peers of another ring cover other keys.
  const uint64_t generation = index_->generation();
  const std::vector<Member> peers = index_->peers();
  if (index_->generation() != generation) return;  // changed meanwhile; the next exchange retries
  // With one replica per key no other node can hold what this one lost.
  if (index_->replication_factor() > 1) {
    absl::MutexLock lock(&mu_);
    for (const Member& peer : peers) {
      auto it = caught_up_with_.find(peer.id);
      if (it == caught_up_with_.end() || it->second != generation) return;
    }
  }
  if (absl::Status finished = store_->FinishCatchingUp(); !finished.ok()) {
    LogWarn("cannot record that this replica caught up (it keeps catching up)",
            {{"error", std::string(finished.message())}});
    return;
  }
  LogInfo(
      "caught up: anti-entropy compared this replica with every peer since it restarted "
      "after writes may have been lost; its answers that a key has no live version count "
      "again",
      {{"peers", absl::StrCat(peers.size())}});
}

std::vector<PeerAntiEntropyStats> AntiEntropy::Stats(bool with_ranges) const {
  const std::vector<Member> peers = index_->peers();
  const uint64_t generation = index_->generation();
  absl::MutexLock lock(&mu_);
  SyncPeersLocked(peers, generation);
  std::vector<PeerAntiEntropyStats> stats = stats_;
  if (with_ranges) {
    for (size_t i = 0; i < stats.size(); ++i) {
      for (const auto& [index, range] : ranges_[i]) stats[i].ranges.push_back(range);
    }
  }
  return stats;
}

absl::Duration AntiEntropy::periodic_interval() const {
  absl::MutexLock lock(&mu_);
  return started_ ? options_.interval : absl::ZeroDuration();
}

std::string AntiEntropy::running_peer() const {
  absl::MutexLock lock(&mu_);
  return running_peer_;
}

}  // namespace kv

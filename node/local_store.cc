#include "node/local_store.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "node/idempotency_record.h"
#include "node/ring.h"
#include "storage/coding.h"
#include "storage/expiring_value.h"
#include "storage/record_codec.h"
#include "storage/status_macros.h"
#include "xxhash.h"

namespace kv {
namespace {

// The highest counter a purge raises the node's counter floor to (see PurgeMutation).
constexpr uint64_t kMaxFloorCounter = kMaxAbsorbedCounter + (uint64_t{1} << 48);

constexpr absl::string_view kActorEpochKey = "actor_epoch";
// Decimal u64: counters of this actor up to it were used by records since purged.
constexpr absl::string_view kCounterFloorKey = "counter_floor";
// How the latest run of the store went: "v1;synced=<0|1>;clean=<0|1>;boot=<boot id>", written
// with sync when a run starts (clean=0) and when it stops cleanly (clean=1).
constexpr absl::string_view kRunStateKey = "run_state";
// Present while the store catches up (local_store.h, "Catching up"): why it started to.
constexpr absl::string_view kCatchingUpKey = "catching_up";
// Present from MarkHistoryConflict until the next Open, which draws a new epoch for it.
constexpr absl::string_view kHistoryConflictKey = "history_conflict";
// Decimal u64: the store's history generation (local_store.h, "History generations").
constexpr absl::string_view kGenerationKey = "generation";
// Generations above this are refused (a peer's claim is bounded by gossip already): the
// run's generation never wraps around.
constexpr uint64_t kMaxGeneration = uint64_t{1} << 62;

absl::StatusOr<uint64_t> ReadGeneration(Engine* engine) {
  absl::StatusOr<std::string> stored = engine->Get(Column::kMeta, kGenerationKey);
  if (absl::IsNotFound(stored.status())) return 0;
  if (!stored.ok()) return stored.status();
  uint64_t generation = 0;
  if (!absl::SimpleAtoi(*stored, &generation) || generation > kMaxGeneration) {
    return absl::DataLossError(
        absl::StrCat("corrupt history generation \"", absl::CHexEscape(*stored), "\""));
  }
  return generation;
}

struct RunState {
  bool synced = false;
  bool clean = false;
  std::string boot_id;
};

std::string EncodeRunState(const RunState& state) {
  return absl::StrCat("v1;synced=", state.synced ? 1 : 0, ";clean=", state.clean ? 1 : 0,
                      ";boot=", state.boot_id);
}

std::optional<RunState> DecodeRunState(absl::string_view text) {
  std::vector<absl::string_view> fields = absl::StrSplit(text, absl::MaxSplits(';', 3));
  if (fields.size() != 4 || fields[0] != "v1" || !absl::StartsWith(fields[3], "boot=")) {
    return std::nullopt;
  }
  RunState state;
  if (fields[1] == "synced=1") {
    state.synced = true;
  } else if (fields[1] != "synced=0") {
    return std::nullopt;
  }
  if (fields[2] == "clean=1") {
    state.clean = true;
  } else if (fields[2] != "clean=0") {
    return std::nullopt;
  }
  state.boot_id = std::string(fields[3].substr(5));
  return state;
}

// Why the previous run of a store that has an epoch may have lost writes whose dots other
// replicas hold ("" if it cannot have): see "Actor epochs" in local_store.h. `*catch_up` is set
// when a recorded run may have lost them ("Catching up"), not when the store was written by an
// earlier version, which recorded no run.
absl::StatusOr<std::string> LostWritesReason(Engine* engine, absl::string_view boot_id,
                                             bool* catch_up) {
  *catch_up = false;
  absl::StatusOr<std::string> stored = engine->Get(Column::kMeta, kRunStateKey);
  if (absl::IsNotFound(stored.status())) {
    return std::string(
        "the store holds no record of how its previous run stopped (it was "
        "written by an earlier version)");
  }
  if (!stored.ok()) return stored.status();
  std::optional<RunState> previous = DecodeRunState(*stored);
  if (previous.has_value() &&
      (previous->clean || previous->synced || previous->boot_id == boot_id)) {
    return std::string();
  }
  *catch_up = true;
  if (!previous.has_value()) {
    return absl::StrCat("the record of the previous run is unreadable (\"",
                        absl::CHexEscape(*stored), "\")");
  }
  return std::string(
      "the previous run did not stop cleanly, did not sync its writes (sync_writes=false), and "
      "the machine has restarted since: writes acknowledged just before the crash may be gone "
      "from this disk while other replicas hold them");
}

std::string NewEpoch(absl::BitGenRef rng) {
  const uint64_t random = absl::Uniform<uint64_t>(rng);
  return absl::StrCat(absl::Hex(random & 0xffffffffffffULL, absl::kZeroPad12));
}

int64_t ToMicros(absl::Time t) { return absl::ToUnixMicros(t); }

// `limit_name`: the setting that holds the limit, or empty for a fixed one.
absl::Status CheckSize(absl::string_view what, size_t size, absl::string_view limit_name,
                       size_t limit) {
  if (size <= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(
      limit_name.empty()
          ? absl::StrCat(what, " is ", size, " bytes; the limit is ", limit, " bytes (fixed)")
          : absl::StrCat(what, " is ", size, " bytes; the limit is ", limit_name, "=", limit,
                         " bytes"));
}

// The next key after every key that starts with `prefix`, or "" if there is none.
std::string PrefixSuccessor(absl::string_view prefix) {
  std::string limit(prefix);
  while (!limit.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(limit.back());
    if (last != 0xff) {
      ++last;
      return limit;
    }
    limit.pop_back();
  }
  return limit;
}

}  // namespace

std::string WriteFingerprint(const WriteCommand& command) {
  std::string canonical;
  canonical.push_back(command.is_delete ? 'D' : 'P');
  PutLengthPrefixed(&canonical, command.key);
  PutLengthPrefixed(&canonical, command.is_delete ? absl::string_view() : command.value);
  PutLengthPrefixed(&canonical, command.context);
  XXH128_hash_t hash = XXH3_128bits(canonical.data(), canonical.size());
  std::string out;
  PutFixed64(&out, hash.high64);
  PutFixed64(&out, hash.low64);
  return out;
}

std::string MakeWriteId(const Dot& dot, absl::string_view key) {
  return absl::StrCat(dot.ToString(), "/", absl::WebSafeBase64Escape(key));
}

absl::Status ParseWriteId(absl::string_view write_id, Dot* dot, std::string* key) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed write id '", write_id,
                     "': expected the id a put or delete returned, NODE#EPOCH:COUNTER/KEY with the "
                     "key in web-safe base64 (e.g. n1#ba2bab5e55dc:1/ZHc)"));
  };
  size_t slash = write_id.find('/');
  if (slash == absl::string_view::npos) return bad();
  absl::string_view dot_text = write_id.substr(0, slash);
  size_t colon = dot_text.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return bad();
  if (!absl::SimpleAtoi(dot_text.substr(colon + 1), &dot->counter) || dot->counter == 0) {
    return bad();
  }
  // The actor is a node id and the 12 lowercase hex digits of an epoch (NewEpoch), as every
  // version has made them: an id with any other actor was never issued.
  const absl::string_view actor = dot_text.substr(0, colon);
  const size_t hash = actor.rfind('#');
  if (hash == absl::string_view::npos || !IsWellFormedNodeId(actor.substr(0, hash))) return bad();
  const absl::string_view epoch = actor.substr(hash + 1);
  if (epoch.size() != 12 ||
      epoch.find_first_not_of("0123456789abcdef") != absl::string_view::npos) {
    return bad();
  }
  dot->actor = std::string(actor);
  if (!absl::WebSafeBase64Unescape(write_id.substr(slash + 1), key)) return bad();
  return absl::OkStatus();
}

absl::StatusOr<LocalStore::StoredHistory> LocalStore::ReadStoredHistory(Engine* engine) {
  StoredHistory history;
  absl::StatusOr<std::string> epoch = engine->Get(Column::kMeta, kActorEpochKey);
  if (epoch.ok()) {
    history.has_epoch = true;
  } else if (!absl::IsNotFound(epoch.status())) {
    return epoch.status();
  }
  KV_ASSIGN_OR_RETURN(history.generation, ReadGeneration(engine));
  return history;
}

absl::StatusOr<std::unique_ptr<LocalStore>> LocalStore::Open(Engine* engine, const Clock* clock,
                                                             absl::BitGenRef rng,
                                                             std::string node_id, Options options) {
  std::string epoch;
  std::string new_epoch_reason;
  bool catch_up = false;
  KV_ASSIGN_OR_RETURN(const uint64_t stored_generation, ReadGeneration(engine));
  absl::StatusOr<std::string> stored = engine->Get(Column::kMeta, kActorEpochKey);
  if (stored.ok()) {
    epoch = *std::move(stored);
    KV_ASSIGN_OR_RETURN(new_epoch_reason, LostWritesReason(engine, options.boot_id, &catch_up));
    if (new_epoch_reason.empty()) {
      absl::StatusOr<std::string> conflict = engine->Get(Column::kMeta, kHistoryConflictKey);
      if (conflict.ok()) {
        catch_up = true;
        new_epoch_reason = absl::StrCat(
            "the previous run learned that this data directory is older than an earlier run of "
            "the node (",
            *conflict, "), so writes the node made in that run may be missing here");
      } else if (!absl::IsNotFound(conflict.status())) {
        return conflict.status();
      }
    }
    if (new_epoch_reason.empty() && options.peer_generation > stored_generation) {
      catch_up = true;
      new_epoch_reason = absl::StrCat(
          "the other nodes last saw generation ", options.peer_generation,
          " of this node, and this data directory holds generation ", stored_generation,
          ": it is older than the node's last run (restored from a backup or a snapshot?), so "
          "writes the node made since may be missing here while other replicas hold them");
    }
  } else if (!absl::IsNotFound(stored.status())) {
    return stored.status();
  }
  const uint64_t generation =
      std::min(std::max(stored_generation, options.peer_generation), kMaxGeneration - 1) + 1;
  WriteBatch batch;
  batch.Put(Column::kMeta, kGenerationKey, absl::StrCat(generation));
  batch.Delete(Column::kMeta, kHistoryConflictKey);  // answered by this Open's new epoch, if any
  const bool new_epoch = epoch.empty() || !new_epoch_reason.empty();
  if (new_epoch) {
    // A new incarnation: its dots must never collide with those of an earlier one, even if the
    // same node id ran here before and its data was lost, wholly or in part.
    epoch = NewEpoch(rng);
    batch.Put(Column::kMeta, kActorEpochKey, epoch);
  }
  bool catching_up = catch_up;
  if (catching_up) {
    batch.Put(Column::kMeta, kCatchingUpKey, new_epoch_reason);
  } else {
    absl::StatusOr<std::string> unfinished = engine->Get(Column::kMeta, kCatchingUpKey);
    if (unfinished.ok()) {
      catching_up = true;
    } else if (!absl::IsNotFound(unfinished.status())) {
      return unfinished.status();
    }
  }
  // Before any write of this run: a machine crash during it must be seen by the next Open.
  batch.Put(Column::kMeta, kRunStateKey,
            EncodeRunState({options.sync_writes, /*clean=*/false, options.boot_id}));
  KV_RETURN_IF_ERROR(engine->Write(batch, WriteOptions{/*sync=*/true}));
  uint64_t floor = 0;
  absl::StatusOr<std::string> stored_floor = engine->Get(Column::kMeta, kCounterFloorKey);
  if (stored_floor.ok()) {
    if (!absl::SimpleAtoi(*stored_floor, &floor)) {
      return absl::DataLossError(absl::StrCat("corrupt counter floor \"", *stored_floor, "\""));
    }
  } else if (!absl::IsNotFound(stored_floor.status())) {
    return stored_floor.status();
  }
  std::unique_ptr<LocalStore> store(
      new LocalStore(engine, clock, absl::StrCat(node_id, "#", epoch), options));
  store->counter_floor_.store(floor);
  store->new_epoch_reason_ = std::move(new_epoch_reason);
  store->new_epoch_ = new_epoch;
  store->catching_up_.store(catching_up, std::memory_order_release);
  store->generation_.store(generation, std::memory_order_release);
  return store;
}

absl::StatusOr<uint64_t> LocalStore::AdvanceGeneration(uint64_t at_least) {
  absl::MutexLock lock(&generation_mu_);
  const uint64_t next = std::max(generation_.load(std::memory_order_acquire) + 1, at_least);
  if (next > kMaxGeneration) {
    return absl::FailedPreconditionError("the history generation reached its bound (2^62)");
  }
  WriteBatch batch;
  batch.Put(Column::kMeta, kGenerationKey, absl::StrCat(next));
  KV_RETURN_IF_ERROR(engine_->Write(batch, WriteOptions{/*sync=*/true}));
  generation_.store(next, std::memory_order_release);
  return next;
}

void LocalStore::MarkHistoryConflict(absl::string_view reason) {
  {
    absl::MutexLock lock(&history_conflict_mu_);
    if (!history_conflict_.empty()) return;
    history_conflict_ = reason.empty() ? std::string("(no reason given)") : std::string(reason);
  }
  has_history_conflict_.store(true, std::memory_order_release);
  // The directory lacks writes of that run, which this replica acknowledged: its "no live
  // version" answers must not count until anti-entropy has compared it with every peer.
  catching_up_.store(true, std::memory_order_release);
}

absl::Status LocalStore::StoreHistoryConflict() {
  const std::string reason = history_conflict();
  if (reason.empty()) return absl::OkStatus();
  WriteBatch batch;
  batch.Put(Column::kMeta, kHistoryConflictKey, reason);
  batch.Put(Column::kMeta, kCatchingUpKey, reason);
  return engine_->Write(batch, WriteOptions{/*sync=*/true});
}

absl::Status LocalStore::HistoryConflictRefusal() const {
  if (!has_history_conflict_.load(std::memory_order_acquire)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(
      "this node refuses writes until it restarts: its data directory is older than an earlier "
      "run of the node (",
      history_conflict(),
      "), so its new versions could reuse the dots of writes it lacks. This node did not apply "
      "the write; another node can take it (a retry with the same idempotency token is safe), and "
      "a restart of this one gives it a new actor epoch"));
}

std::string LocalStore::history_conflict() const {
  absl::MutexLock lock(&history_conflict_mu_);
  return history_conflict_;
}

absl::Status LocalStore::FinishCatchingUp() {
  if (!catching_up()) return absl::OkStatus();
  WriteBatch batch;
  batch.Delete(Column::kMeta, kCatchingUpKey);
  KV_RETURN_IF_ERROR(engine_->Write(batch, WriteOptions{options_.sync_writes}));
  catching_up_.store(false, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<LocalStore::QuorumRead> LocalStore::ReadRecordForQuorum(absl::string_view key) {
  // Before the read: a store that finishes catching up during it may have read before the
  // exchange that brought the key back.
  const bool was_catching_up = catching_up();
  absl::StatusOr<SiblingSet> record = ReadRecord(key);
  if (was_catching_up &&
      (absl::IsNotFound(record.status()) || (record.ok() && record->AllTombstones()))) {
    return absl::UnavailableError(
        "this replica is catching up after a start that may have lost writes it acknowledged "
        "(a machine crash, or a data directory older than the node's last run): its answer "
        "that the key has no live version does not count until anti-entropy has compared it "
        "with every peer");
  }
  if (!record.ok()) return record.status();
  return QuorumRead{*std::move(record), was_catching_up};
}

absl::StatusOr<LocalStore::QuorumRead> LocalStore::ReadRecordAs(absl::string_view key,
                                                                bool for_quorum) {
  if (for_quorum) return ReadRecordForQuorum(key);
  KV_ASSIGN_OR_RETURN(SiblingSet record, ReadRecord(key));
  return QuorumRead{std::move(record), /*catching_up=*/false};
}

absl::Status LocalStore::RecordCleanStop() {
  WriteBatch batch;
  batch.Put(Column::kMeta, kRunStateKey,
            EncodeRunState({options_.sync_writes, /*clean=*/true, options_.boot_id}));
  return engine_->Write(batch, WriteOptions{/*sync=*/true});
}

LocalStore::LocalStore(Engine* engine, const Clock* clock, std::string actor, Options options)
    : engine_(engine),
      clock_(clock),
      wait_clock_(options.wait_clock != nullptr ? options.wait_clock : SteadyClock::Get()),
      actor_(std::move(actor)),
      options_(options),
      commits_(engine, WriteOptions{options.sync_writes}, options.commit_executor) {
  commits_.SetWriteFailureHook([this](const absl::Status&) {
    if (observer_ != nullptr) observer_->OnChangesLost();
  });
}

absl::Status LocalStore::ValidateKey(absl::string_view key) const {
  if (key.empty()) return absl::InvalidArgumentError("key must not be empty");
  return CheckSize("key", key.size(), "max_key_bytes", options_.limits.max_key_bytes);
}

absl::Status LocalStore::ValidateStoredKey(absl::string_view key) const {
  if (key.empty()) return absl::InvalidArgumentError("key must not be empty");
  return CheckSize("key", key.size(), "", kMaxKeyBytesCeiling);
}

absl::Status LocalStore::ValidateWrite(const WriteCommand& command) const {
  const Limits& limits = options_.limits;
  KV_RETURN_IF_ERROR(ValidateKey(command.key));
  if (!command.is_delete) {
    KV_RETURN_IF_ERROR(
        CheckSize("value", command.value.size(), "max_value_bytes", limits.max_value_bytes));
  }
  KV_RETURN_IF_ERROR(
      CheckSize("causal context", command.context.size(), "", limits.max_context_bytes));
  KV_RETURN_IF_ERROR(
      CheckSize("idempotency token", command.idempotency_token.size(), "", limits.max_token_bytes));
  for (char c : command.idempotency_token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError("idempotency token must be printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SiblingSet> LocalStore::ReadRecord(absl::string_view key) {
  KV_RETURN_IF_ERROR(ValidateStoredKey(key));
  // Engine reads see whole batches, so a record read here is always consistent.
  absl::StatusOr<std::string> bytes = engine_->Get(Column::kData, key);
  if (!bytes.ok()) return bytes.status();
  return DecodeSiblingSet(*bytes);
}

bool LocalStore::ReadRecordFromMemory(absl::string_view key, absl::StatusOr<SiblingSet>* record) {
  if (absl::Status valid = ValidateKey(key); !valid.ok()) {
    *record = valid;
    return true;
  }
  absl::StatusOr<std::string> bytes;
  if (!engine_->GetFromMemory(Column::kData, key, &bytes)) return false;
  *record = bytes.ok() ? DecodeSiblingSet(*bytes) : absl::StatusOr<SiblingSet>(bytes.status());
  return true;
}

// Merges a remote record into the local one (sync only).
class LocalStore::MergeMutation : public CommitQueue::Mutation {
 public:
  // `on_complete` (may be empty) receives Complete's status.
  MergeMutation(LocalStore* store, absl::string_view key, const SiblingSet& remote,
                std::function<void(absl::Status)> on_complete = {})
      : store_(store), key_(key), remote_(remote), on_complete_(std::move(on_complete)) {}

  absl::Status Prepare(WriteGroup& group) override {
    SiblingSet record;
    absl::StatusOr<std::string> existing = group.Get(Column::kData, key_);
    if (existing.ok()) {
      KV_ASSIGN_OR_RETURN(record, DecodeSiblingSet(*existing));
    } else if (!absl::IsNotFound(existing.status())) {
      return existing.status();
    }
    const absl::Duration retry_window = store_->options_.idempotency_ttl;
    const int64_t now_micros = absl::ToUnixMicros(store_->clock_->Now());
    merged_ = record;
    merged_.Merge(remote_, retry_window);
    KV_RETURN_IF_ERROR(RecallForgottenWrites(group, record, now_micros));
    // Both records passed their checks; still, never store one that could not be read back.
    if (absl::Status valid = merged_.CheckInvariants(); !valid.ok()) {
      return absl::InternalError(absl::StrCat(
          "merge of key refused, it would store an invalid record: ", valid.message()));
    }
    store_->KeepForgottenWrites(group, key_, merged_.TakeForgotten(), now_micros);
    if (merged_ != record) {
      const std::string encoded = EncodeSiblingSet(merged_);
      group.Put(Column::kData, key_, encoded);
      if (store_->observer_ != nullptr) {
        store_->observer_->OnRecordChange(key_, existing.ok() ? &*existing : nullptr, &encoded,
                                          group.batch());
      }
    }
    return absl::OkStatus();
  }
  void Complete(absl::Status status) override {
    if (on_complete_) on_complete_(std::move(status));
  }

  SiblingSet& merged() { return merged_; }

 private:
  // A tokened version that arrived with the remote record may be a late retry copy of a write
  // this replica replaced and then forgot (its memory is bounded): it is replaced on arrival too.
  absl::Status RecallForgottenWrites(WriteGroup& group, const SiblingSet& before,
                                     int64_t now_micros) {
    std::vector<ReplacedWrite> recalled;
    for (const Sibling& s : merged_.siblings()) {
      if (s.idempotency_token.empty()) continue;
      // Siblings are in dot order: a binary search keeps a merge of a record with many tokened
      // siblings linear-logarithmic, not quadratic.
      const auto at =
          std::lower_bound(before.siblings().begin(), before.siblings().end(), s.dot,
                           [](const Sibling& b, const Dot& dot) { return b.dot < dot; });
      const bool arrived = at == before.siblings().end() || at->dot != s.dot;
      if (!arrived) continue;
      KV_ASSIGN_OR_RETURN(std::optional<ReplacedWrite> forgotten,
                          store_->ForgottenCopyOf(group, key_, s, now_micros));
      if (forgotten.has_value()) recalled.push_back(*std::move(forgotten));
    }
    if (!recalled.empty()) merged_.Recall(recalled, store_->options_.idempotency_ttl);
    return absl::OkStatus();
  }

  // The record it merges (held by the caller, for as long as the mutation waits).
  size_t QueuedBytes() const override {
    size_t bytes = key_.size();
    for (const Sibling& s : remote_.siblings()) bytes += s.value.size();
    return bytes;
  }

  LocalStore* const store_;
  const absl::string_view key_;
  const SiblingSet& remote_;
  const std::function<void(absl::Status)> on_complete_;
  SiblingSet merged_;
};

absl::StatusOr<SiblingSet> LocalStore::MergeRecord(absl::string_view key,
                                                   const SiblingSet& remote) {
  KV_RETURN_IF_ERROR(ValidateStoredKey(key));
  KV_RETURN_IF_ERROR(remote.CheckInvariants());
  MergeMutation merge(this, key, remote);
  KV_RETURN_IF_ERROR(commits_.Run(merge));
  return std::move(merge.merged());
}

absl::Status LocalStore::CheckRemoteRecords(absl::Span<const RemoteRecord> records) const {
  for (const RemoteRecord& r : records) {
    KV_RETURN_IF_ERROR(ValidateStoredKey(r.key));
    KV_RETURN_IF_ERROR(r.record->CheckInvariants());
  }
  return absl::OkStatus();
}

absl::Status LocalStore::MergeRecords(absl::Span<const RemoteRecord> records) {
  KV_RETURN_IF_ERROR(CheckRemoteRecords(records));
  std::vector<std::unique_ptr<MergeMutation>> merges;
  std::vector<CommitQueue::Mutation*> pointers;
  merges.reserve(records.size());
  pointers.reserve(records.size());
  for (const RemoteRecord& r : records) {
    merges.push_back(std::make_unique<MergeMutation>(this, r.key, *r.record));
    pointers.push_back(merges.back().get());
  }
  return commits_.RunAll(pointers);
}

void LocalStore::MergeRecordsAsync(std::vector<RemoteRecord> records,
                                   std::function<void(absl::Status)> done) {
  if (absl::Status valid = CheckRemoteRecords(records); !valid.ok() || records.empty()) {
    done(std::move(valid));
    return;
  }
  // Submitted mutations complete one at a time, in submission order, so the last merge's
  // Complete sees every earlier status; the atomic count only hands them across threads.
  struct Pending {
    std::vector<absl::Status> statuses;
    std::atomic<size_t> remaining;
    std::function<void(absl::Status)> done;
  };
  auto pending = std::make_shared<Pending>();
  pending->statuses.resize(records.size());
  pending->remaining.store(records.size());
  pending->done = std::move(done);
  CommitQueue::Hold hold(&commits_);  // one group for the batch, committed when the hold ends
  for (size_t i = 0; i < records.size(); ++i) {
    commits_.Submit(std::make_unique<MergeMutation>(
        this, records[i].key, *records[i].record, [pending, i](absl::Status status) {
          pending->statuses[i] = std::move(status);
          if (pending->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
          absl::Status first_error;
          for (absl::Status& s : pending->statuses) {
            if (!s.ok()) {
              first_error = std::move(s);
              break;
            }
          }
          pending->done(std::move(first_error));
        }));
  }
}

void LocalStore::RunAtCommitCut(const std::function<void()>& at_cut) {
  // First of its group: every group before it is written when its Prepare runs, and groups are
  // prepared one at a time, in submission order.
  class Cut : public CommitQueue::Mutation {
   public:
    explicit Cut(const std::function<void()>& at_cut) : at_cut_(at_cut) {}
    bool StartsGroup() const override { return true; }
    absl::Status Prepare(WriteGroup& /*group*/) override {
      at_cut_();
      return absl::OkStatus();
    }
    void Complete(absl::Status /*status*/) override {}

   private:
    const std::function<void()>& at_cut_;
  };
  Cut cut(at_cut);
  // The cut shares the status of the group it starts; `at_cut` has run either way.
  commits_.Run(cut).IgnoreError();
}

// Deletes a record that still equals what the purger verified, and raises the counter floor.
class LocalStore::PurgeMutation : public CommitQueue::Mutation {
 public:
  PurgeMutation(LocalStore* store, absl::string_view key, const SiblingSet& expected,
                const PurgeCheck& check)
      : store_(store), key_(key), expected_(expected), check_(check) {}

  absl::Status Prepare(WriteGroup& group) override {
    absl::StatusOr<std::string> existing = group.Get(Column::kData, key_);
    if (absl::IsNotFound(existing.status())) return absl::OkStatus();
    if (!existing.ok()) return existing.status();
    KV_ASSIGN_OR_RETURN(SiblingSet record, DecodeSiblingSet(*existing));
    if (record != expected_) {
      return absl::FailedPreconditionError("the record changed since it was checked for purge");
    }
    if (check_) KV_RETURN_IF_ERROR(check_(key_));
    // Only from counters this node could have issued: at most 2^48 writes past the highest
    // counter a context may bring in (kMaxAbsorbedCounter, storage/version_vector.h). A record
    // from before the bounds, or a forged one, may hold more, and a floor near kMaxContextCounter
    // would refuse every later write of the node.
    uint64_t seen = record.context().Get(store_->actor_);
    if (seen > kMaxFloorCounter) seen = 0;
    uint64_t floor = store_->counter_floor_.load();
    while (seen > floor && !store_->counter_floor_.compare_exchange_weak(floor, seen)) {
    }
    // Raised before the commit: a higher floor than needed is harmless; a lower one is not.
    group.Put(Column::kMeta, kCounterFloorKey, absl::StrCat(store_->counter_floor_.load()));
    if (record.AllTombstones()) {
      // A tombstone purge: late retry copies of the key's writes must not bring them back once
      // the record is gone. (A record this node no longer owns is not written through it.)
      store_->KeepForgottenWrites(group, key_, record.TokenedHistory(),
                                  absl::ToUnixMicros(store_->clock_->Now()));
      // Durable before it is answered, with the tombstone it removes, also without
      // sync_writes: the purger deletes the other copies once this one answers, and a machine
      // crash that took this purge back could also take back the tombstone (merged here
      // unsynced), leaving the older live value it deleted to come back to the others.
      group.RequireSync();
    }
    group.Delete(Column::kData, key_);
    if (store_->observer_ != nullptr) {
      store_->observer_->OnRecordChange(key_, &*existing, nullptr, group.batch());
    }
    return absl::OkStatus();
  }
  void Complete(absl::Status /*status*/) override {}

 private:
  LocalStore* const store_;
  const absl::string_view key_;
  const SiblingSet& expected_;
  const PurgeCheck& check_;
};

absl::Status LocalStore::PurgeIfUnchanged(absl::string_view key, const SiblingSet& expected,
                                          const PurgeCheck& check) {
  // Not ValidateKey: a key stored before max_key_bytes was lowered may be longer, and must still
  // be purged (the tombstone reaper's, the clean-up of records this node no longer owns).
  KV_RETURN_IF_ERROR(ValidateStoredKey(key));
  PurgeMutation purge(this, key, expected, check);
  return commits_.Run(purge);
}

namespace {

// Where a List of `prefix` starts: the prefix, or the key `page_token` names (the last key of
// the previous page, skipped).
absl::Status ListStart(absl::string_view prefix, absl::string_view page_token, size_t max_key_bytes,
                       std::string* start) {
  KV_RETURN_IF_ERROR(CheckSize("prefix", prefix.size(), "max_key_bytes", max_key_bytes));
  *start = std::string(prefix);
  if (page_token.empty()) return absl::OkStatus();
  // The token is a key, so it is not empty, nor longer than any max_key_bytes allows (a key
  // stored under a larger limit than this node's current one is still a valid token).
  if (!absl::WebSafeBase64Unescape(page_token, start) || start->empty() ||
      start->size() > kMaxKeyBytesCeiling || !absl::StartsWith(*start, prefix)) {
    return absl::InvalidArgumentError(
        "malformed page token: pass the next_page_token of a List with the same prefix");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LocalStore::ValidateList(absl::string_view prefix,
                                      absl::string_view page_token) const {
  std::string start;
  return ListStart(prefix, page_token, options_.limits.max_key_bytes, &start);
}

absl::StatusOr<ListPage> LocalStore::List(absl::string_view prefix, absl::string_view page_token,
                                          uint32_t limit) {
  const Limits& limits = options_.limits;
  std::string start;
  KV_RETURN_IF_ERROR(ListStart(prefix, page_token, limits.max_key_bytes, &start));
  if (limit == 0) limit = limits.default_list_limit;
  if (limit > limits.max_list_limit) limit = limits.max_list_limit;
  const bool skip_start = !page_token.empty();  // the token is the last key of the previous page
  const std::string end = PrefixSuccessor(prefix);

  // Bound the work of one page even when most keys in range are deleted.
  const size_t max_scanned = static_cast<size_t>(limit) * 8 + 1024;
  size_t scanned = 0;
  ListPage page;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kData);
  std::string last;
  for (it->Seek(start); it->Valid(); it->Next()) {
    absl::string_view key = it->key();
    if (!end.empty() && key >= end) break;
    if (!absl::StartsWith(key, prefix)) break;
    if (skip_start && key == start) continue;
    if (page.keys.size() == limit || scanned == max_scanned) {
      page.next_page_token = absl::WebSafeBase64Escape(last);
      break;
    }
    ++scanned;
    last = std::string(key);
    KV_ASSIGN_OR_RETURN(SiblingSet record, DecodeSiblingSet(it->value()));
    if (!record.AllTombstones()) page.keys.push_back(last);
  }
  KV_RETURN_IF_ERROR(it->status());
  return page;
}

absl::StatusOr<size_t> LocalStore::ExpireIdempotencyRecords() {
  const int64_t now = ToMicros(clock_->Now());
  KV_ASSIGN_OR_RETURN(uint64_t removed, engine_->RemoveExpired(Column::kIdempotency, now));
  KV_ASSIGN_OR_RETURN(size_t legacy, ExpireLegacyIdempotencyRecords(now));
  return static_cast<size_t>(removed) + legacy;
}

// Deletes format-1 records whose expiry index entries are in `entries`, each record only if its
// index entry still points at it (the token may have been reused since, with a new record).
class LocalStore::LegacyExpiryMutation : public CommitQueue::Mutation {
 public:
  explicit LegacyExpiryMutation(std::vector<std::string> index_keys)
      : index_keys_(std::move(index_keys)) {}

  absl::Status Prepare(WriteGroup& group) override {
    std::vector<std::string> token_keys;
    for (const std::string& index_key : index_keys_) {
      int64_t expiry = 0;
      absl::string_view token;
      if (!ParseIdempotencyExpiryKey(index_key, &expiry, &token)) continue;
      std::string token_key = IdempotencyTokenKey(token);
      absl::StatusOr<std::string> stored = group.Get(Column::kIdempotency, token_key);
      if (stored.ok()) {
        absl::StatusOr<IdempotencyRecord> record = DecodeIdempotencyRecord(*stored);
        if (!record.ok() || record->expiry_micros == expiry) {
          token_keys.push_back(std::move(token_key));
        }
      } else if (!absl::IsNotFound(stored.status())) {
        return stored.status();
      }
    }
    for (const std::string& key : token_keys) group.Delete(Column::kIdempotency, key);
    for (const std::string& key : index_keys_) group.Delete(Column::kIdempotency, key);
    return absl::OkStatus();
  }
  void Complete(absl::Status /*status*/) override {}

 private:
  const std::vector<std::string> index_keys_;
};

absl::StatusOr<size_t> LocalStore::ExpireLegacyIdempotencyRecords(int64_t now_micros) {
  constexpr size_t kChunk = 1000;
  size_t removed = 0;
  if (legacy_index_empty_.load()) return removed;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kIdempotency);
  std::vector<std::string> chunk;
  auto flush = [&]() -> absl::Status {
    if (chunk.empty()) return absl::OkStatus();
    const size_t size = chunk.size();
    LegacyExpiryMutation expire(std::exchange(chunk, {}));
    KV_RETURN_IF_ERROR(commits_.Run(expire));
    removed += size;
    return absl::OkStatus();
  };
  it->Seek(kIdempotencyExpiryPrefix);
  if (!it->Valid() || !absl::StartsWith(it->key(), kIdempotencyExpiryPrefix)) {
    KV_RETURN_IF_ERROR(it->status());
    // Format 1 is never written again: once its index is empty, it stays empty, and the scan
    // (which costs a sort of the memtable in RocksDB's hashed token column) is not repeated.
    legacy_index_empty_.store(true);
    return removed;
  }
  for (; it->Valid(); it->Next()) {
    int64_t expiry;
    absl::string_view token;
    if (!ParseIdempotencyExpiryKey(it->key(), &expiry, &token) || expiry >= now_micros) break;
    chunk.emplace_back(it->key());
    if (chunk.size() == kChunk) KV_RETURN_IF_ERROR(flush());
  }
  KV_RETURN_IF_ERROR(it->status());
  KV_RETURN_IF_ERROR(flush());
  return removed;
}

}  // namespace kv

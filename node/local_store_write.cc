// LocalStore's write path: Write and WriteAsync, run by the commit queue (node/local_store.h).
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/idempotency_record.h"
#include "node/local_store.h"
#include "storage/expiring_value.h"
#include "storage/format_level.h"
#include "storage/record_codec.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

// a + b, or the int64 bound it would pass (timestamps come from other replicas too).
int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

// The version a write command creates, stamped `now_micros`.
Sibling NewSibling(const WriteCommand& command, int64_t now_micros) {
  Sibling sibling;
  sibling.tombstone = command.is_delete;
  if (!command.is_delete) sibling.value = command.value;
  sibling.timestamp_micros = now_micros;
  sibling.idempotency_token = command.idempotency_token;
  return sibling;
}

// The unexpired first result recorded under `token` (at `token_key`) on this node, if any. A
// record that has expired but is not yet removed counts as none; if it is of format 1, its
// expiry index entry is stored in `*legacy_index_to_delete` (the new record replaces the one it
// points at).
absl::StatusOr<std::optional<IdempotencyRecord>> FirstResult(WriteGroup& group,
                                                             const std::string& token_key,
                                                             absl::string_view token,
                                                             int64_t now_micros,
                                                             std::string* legacy_index_to_delete) {
  absl::StatusOr<std::string> stored = group.Get(Column::kIdempotency, token_key);
  if (absl::IsNotFound(stored.status())) return std::nullopt;
  if (!stored.ok()) return stored.status();
  KV_ASSIGN_OR_RETURN(IdempotencyRecord first, DecodeIdempotencyRecord(*stored));
  if (first.expiry_micros >= now_micros) return first;
  int64_t expiry;
  absl::string_view payload;
  if (!ParseExpiringValue(*stored, &expiry, &payload)) {
    *legacy_index_to_delete = IdempotencyExpiryKey(first.expiry_micros, token);
  }
  return std::nullopt;
}

// The dot of an earlier copy of the tokened write `command` that `record` or `seen` knows of.
//
// The same logical write may have been coordinated by another node and replicated here, and
// still be live, or have been replaced since (then the retry is of a write a client already
// overwrote, and must not bring it back); or the writer saw it, perhaps on another replica, and
// names it in its context. A version with the token and other content is another write that
// reused the token: INVALID_ARGUMENT, unless a copy matches too (two nodes accepted the reuse
// before they saw each other's write; both are kept). Versions older than `retry_window` (as
// old as an expired token record) are new logical writes.
absl::StatusOr<std::optional<Dot>> EarlierCopy(const WriteCommand& command,
                                               const SiblingSet& record, const CausalContext& seen,
                                               int64_t now_micros, absl::Duration retry_window) {
  const Sibling probe = NewSibling(command, now_micros);
  const int64_t window_micros = absl::ToInt64Microseconds(retry_window);
  bool reused = false;
  for (const Sibling& s : record.siblings()) {
    if (s.idempotency_token != command.idempotency_token) continue;
    // Saturating: a replica's timestamp near 2^63 must not wrap the sum negative.
    if (SaturatingAdd(s.timestamp_micros, window_micros) < now_micros) continue;
    if (s.tombstone == probe.tombstone && s.value == probe.value) return s.dot;
    reused = true;
  }
  if (const ReplacedWrite* first = record.ReplacedCopyOf(probe, retry_window)) return first->dot;
  const uint64_t fingerprint = TokenFingerprint(probe);
  for (const TokenedVersion& version : seen.tokened()) {
    if (version.fingerprint == fingerprint &&
        absl::AbsDuration(absl::Microseconds(version.timestamp_micros) -
                          absl::Microseconds(probe.timestamp_micros)) <= retry_window) {
      return version.dot;
    }
  }
  if (reused) {
    return absl::InvalidArgumentError("idempotency token reused with different parameters");
  }
  return std::nullopt;
}

// INVALID_ARGUMENT if `seen` carries a counter above kMaxAbsorbedCounter (storage/
// version_vector.h) that `record` does not already hold: only a forged context can, and
// absorbing it would bring this key's counters, and through a purge the node's counter floor,
// towards the wrap at 2^64.
absl::Status CheckAbsorbableCounters(const CausalContext& seen, const SiblingSet& record) {
  auto check = [&record](absl::string_view actor, uint64_t counter) -> absl::Status {
    if (counter <= kMaxAbsorbedCounter || counter <= record.context().Get(actor)) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "causal context counter ", actor, ":", counter, " is above ", kMaxAbsorbedCounter,
        " and unknown to the key's record (pass back the context bytes exactly as a read or "
        "write returned them, or none)"));
  };
  for (const auto& [actor, counter] : seen.vv().entries())
    KV_RETURN_IF_ERROR(check(actor, counter));
  // Tokened versions are covered by the vector or the dots, so their counters are checked too.
  for (const Dot& dot : seen.dots()) KV_RETURN_IF_ERROR(check(dot.actor, dot.counter));
  return absl::OkStatus();
}

}  // namespace

absl::Status LocalStore::AdmitWrites() const {
  const size_t queued = commits_.queued_bytes();
  if (options_.max_queued_write_bytes == 0 || queued <= options_.max_queued_write_bytes) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("this node's storage is behind: the writes waiting to be committed hold ",
                   queued >> 20, " MiB (the limit is ", options_.max_queued_write_bytes >> 20,
                   " MiB); nothing of this request was applied, retry later or on another node"));
}

// One Write or WriteAsync: checked and fingerprinted on the caller's thread, then run by the
// commit queue (PrepareWrite) and answered through `done`.
class LocalStore::WriteMutation : public CommitQueue::Mutation {
 public:
  WriteMutation(LocalStore* store, WriteCommand command, CausalContext seen,
                std::string fingerprint, BatchHook hook, WriteCallback done, absl::Time queued)
      : store_(store),
        queued_(queued),
        command_(std::move(command)),
        seen_(std::move(seen)),
        fingerprint_(std::move(fingerprint)),
        hook_(std::move(hook)),
        done_(std::move(done)) {}

  absl::Status Prepare(WriteGroup& group) override {
    absl::StatusOr<WriteOutcome> outcome = store_->PrepareWrite(*this, group);
    if (!outcome.ok()) return outcome.status();
    outcome_ = *std::move(outcome);
    return absl::OkStatus();
  }
  void Complete(absl::Status status) override {
    if (status.ok()) {
      done_(std::move(outcome_));
    } else {
      done_(std::move(status));
    }
  }

  size_t QueuedBytes() const override {
    return command_.key.size() + command_.value.size() + command_.context.size() +
           command_.idempotency_token.size();
  }
  const WriteCommand& command() const { return command_; }
  const CausalContext& seen() const { return seen_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const BatchHook& hook() const { return hook_; }
  absl::Time queued() const { return queued_; }

 private:
  LocalStore* const store_;
  const absl::Time queued_;
  const WriteCommand command_;
  const CausalContext seen_;
  const std::string fingerprint_;
  const BatchHook hook_;
  const WriteCallback done_;
  WriteOutcome outcome_;
};

absl::StatusOr<std::unique_ptr<LocalStore::WriteMutation>> LocalStore::NewWriteMutation(
    WriteCommand command, BatchHook hook, WriteCallback done) {
  KV_RETURN_IF_ERROR(ValidateWrite(command));
  KV_ASSIGN_OR_RETURN(CausalContext seen, CausalContext::Decode(command.context));
  KV_RETURN_IF_ERROR(CheckReadableAtLevel(seen, options_.format_level));
  KV_RETURN_IF_ERROR(seen.CheckKey(command.key));  // before anything is queued or changed
  seen.Unbind();
  std::string fingerprint =
      command.idempotency_token.empty() ? std::string() : WriteFingerprint(command);
  return std::make_unique<WriteMutation>(this, std::move(command), std::move(seen),
                                         std::move(fingerprint), std::move(hook), std::move(done),
                                         wait_clock_->Now());
}

absl::StatusOr<WriteOutcome> LocalStore::Write(const WriteCommand& command, const BatchHook& hook) {
  absl::StatusOr<WriteOutcome> result = absl::UnknownError("write did not complete");
  absl::StatusOr<std::unique_ptr<WriteMutation>> write = NewWriteMutation(
      command, hook,
      [&result](absl::StatusOr<WriteOutcome> outcome) { result = std::move(outcome); });
  if (!write.ok()) return write.status();
  commits_.Run(**write).IgnoreError();  // the same status reached `result` through `done`
  return result;
}

void LocalStore::WriteAsync(WriteCommand command, BatchHook hook, WriteCallback done) {
  absl::StatusOr<std::unique_ptr<WriteMutation>> write =
      NewWriteMutation(std::move(command), std::move(hook), done);
  if (!write.ok()) {
    done(write.status());
    return;
  }
  commits_.Submit(*std::move(write));
}

absl::StatusOr<WriteOutcome> LocalStore::PrepareWrite(WriteMutation& write, WriteGroup& group) {
  // Here, where the dot is taken, so that no write queued before the mark takes one after it.
  KV_RETURN_IF_ERROR(HistoryConflictRefusal());
  const WriteCommand& command = write.command();
  CausalContext seen = write.seen();
  const bool has_token = !command.idempotency_token.empty();
  const std::string token_key = has_token ? IdempotencyTokenKey(command.idempotency_token) : "";
  const absl::Time now = clock_->Now();
  const int64_t now_micros = absl::ToUnixMicros(now);
  // Nothing may be added to `group` before the last check that can fail.
  std::string legacy_index_to_delete;
  // A first attempt that waited here longer may have been given up on by its client and
  // retried, and the retry applied elsewhere may have reached this replica since.
  const bool first_attempt =
      command.first_attempt && wait_clock_->Now() - write.queued() <= kFirstAttemptTrustWindow;

  if (has_token && !first_attempt) {
    KV_ASSIGN_OR_RETURN(
        std::optional<WriteOutcome> first,
        RecordedResult(write, group, token_key, now_micros, &legacy_index_to_delete));
    if (first.has_value()) {
      if (write.hook()) write.hook()(command.key, group.batch());
      return *std::move(first);
    }
  }

  SiblingSet record;
  absl::StatusOr<std::string> existing = group.Get(Column::kData, command.key);
  if (existing.ok()) {
    KV_ASSIGN_OR_RETURN(record, DecodeSiblingSet(*existing));
  } else if (!absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  KV_RETURN_IF_ERROR(CheckAbsorbableCounters(seen, record));

  // Records `outcome` as the first result of the write's token.
  auto remember_token = [&](const WriteOutcome& outcome) {
    IdempotencyRecord first;
    first.fingerprint = write.fingerprint();
    first.expiry_micros = absl::ToUnixMicros(now + options_.idempotency_ttl);
    first.write_id = outcome.write_id;
    first.context = outcome.context;
    first.dot = outcome.dot;
    group.Put(Column::kIdempotency, token_key, EncodeIdempotencyRecord(first));
  };

  if (has_token) {
    KV_ASSIGN_OR_RETURN(std::optional<Dot> copy,
                        EarlierCopyOf(command, first_attempt, record, seen, group, now_micros));
    if (copy.has_value()) {
      WriteOutcome outcome;
      outcome.dot = *std::move(copy);
      outcome.write_id = MakeWriteId(outcome.dot, command.key);
      outcome.context = ContextForClients(record.ContextAfterWrite(seen, outcome.dot), command.key);
      outcome.deduplicated = true;
      if (write.hook()) write.hook()(command.key, group.batch());
      // Remember the answer under the token here too: the copy recognized now may be replaced
      // and then forgotten by the record (it remembers a bounded number of replaced writes)
      // before the client's next retry reaches this node.
      remember_token(outcome);
      return outcome;
    }
  }

  // A delete without a context removes every version this replica holds.
  if (command.is_delete && seen.empty()) seen = record.ClientContext();

  WriteOutcome outcome;
  outcome.dot = record.ApplyWrite(actor_, seen, NewSibling(command, now_micros),
                                  counter_floor_.load(), options_.idempotency_ttl);
  // (A counter of 2^64 - 1 in a record from before the bounds wraps the new one to 0.)
  if (outcome.dot.counter >= kMaxContextCounter || outcome.dot.counter == 0) {  // nothing stored
    return absl::FailedPreconditionError(absl::StrCat(
        "write refused: this node's counter for the key would reach ", kMaxContextCounter,
        " (a context or record from before counters were bounded)"));
  }
  outcome.context = ContextForClients(record.ContextAfterWrite(seen, outcome.dot), command.key);
  outcome.write_id = MakeWriteId(outcome.dot, command.key);

  if (!seen.tokened().empty()) {
    // The only part of a record a client's bytes can shape (and the context is only
    // checksummed): never store a record that could not be read back.
    if (absl::Status valid = record.CheckInvariants(); !valid.ok()) {
      return absl::InternalError(
          absl::StrCat("write refused, it would store an invalid record: ", valid.message()));
    }
  }
  const std::string encoded = EncodeSiblingSet(record);
  const size_t existing_bytes = existing.ok() ? existing->size() : 0;
  if (encoded.size() > options_.limits.max_record_bytes && encoded.size() > existing_bytes) {
    if (record.siblings().size() == 1) {  // the new version alone: no sibling to resolve
      return absl::FailedPreconditionError(absl::StrCat(
          "write refused: the key's record would be ", encoded.size(),
          " bytes with this value alone (its key, version and metadata included), over "
          "max_record_bytes (",
          options_.limits.max_record_bytes,
          "); write a smaller value, or run the nodes with a larger max_record_bytes"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("write refused: the key's record would be ", encoded.size(),
                     " bytes, over max_record_bytes (", options_.limits.max_record_bytes, ") with ",
                     record.siblings().size(),
                     " siblings; resolve them first: get the key and write with its context"));
  }
  KeepForgottenWrites(group, command.key, record.TakeForgotten(), now_micros);
  group.Put(Column::kData, command.key, encoded);
  if (observer_ != nullptr) {
    observer_->OnRecordChange(command.key, existing.ok() ? &*existing : nullptr, &encoded,
                              group.batch());
  }
  if (write.hook()) write.hook()(command.key, group.batch());
  if (has_token) {
    remember_token(outcome);
    if (!legacy_index_to_delete.empty()) {
      group.Delete(Column::kIdempotency, legacy_index_to_delete);
    }
  }
  outcome.record = std::move(record);
  return outcome;
}

void LocalStore::KeepForgottenWrites(WriteGroup& group, absl::string_view key,
                                     const std::vector<ReplacedWrite>& writes,
                                     int64_t now_micros) const {
  const int64_t window_micros = absl::ToInt64Microseconds(options_.idempotency_ttl);
  for (const ReplacedWrite& write : writes) {
    const int64_t expiry_micros = SaturatingAdd(write.timestamp_micros, window_micros);
    if (expiry_micros < now_micros) continue;  // its retries are new writes by now
    group.Put(Column::kIdempotency, ForgottenWriteKey(key, write.fingerprint),
              EncodeForgottenWrite(write, expiry_micros));
  }
}

absl::StatusOr<std::optional<ReplacedWrite>> LocalStore::ForgottenCopyOf(WriteGroup& group,
                                                                         absl::string_view key,
                                                                         const Sibling& copy,
                                                                         int64_t now_micros) const {
  const uint64_t fingerprint = TokenFingerprint(copy);
  absl::StatusOr<std::string> stored =
      group.Get(Column::kIdempotency, ForgottenWriteKey(key, fingerprint));
  if (absl::IsNotFound(stored.status())) return std::nullopt;
  if (!stored.ok()) return stored.status();
  int64_t expiry_micros = 0;
  absl::StatusOr<ReplacedWrite> decoded =
      DecodeForgottenWrite(*stored, fingerprint, &expiry_micros);
  // A damaged entry only weakens deduplication for one write; it must not fail every write and
  // merge of the key (or a whole replication batch). It is replaced if the key's memory cuts
  // that write again.
  if (!decoded.ok()) return std::nullopt;
  ReplacedWrite forgotten = *std::move(decoded);
  if (expiry_micros < now_micros || forgotten.dot == copy.dot ||
      absl::AbsDuration(absl::Microseconds(forgotten.timestamp_micros) -
                        absl::Microseconds(copy.timestamp_micros)) > options_.idempotency_ttl) {
    return std::nullopt;
  }
  return forgotten;
}

absl::StatusOr<std::optional<WriteOutcome>> LocalStore::RecordedResult(
    const WriteMutation& write, WriteGroup& group, const std::string& token_key, int64_t now_micros,
    std::string* legacy_index_to_delete) const {
  KV_ASSIGN_OR_RETURN(std::optional<IdempotencyRecord> first,
                      FirstResult(group, token_key, write.command().idempotency_token, now_micros,
                                  legacy_index_to_delete));
  if (!first.has_value()) return std::nullopt;
  if (first->fingerprint != write.fingerprint()) {
    return absl::InvalidArgumentError("idempotency token reused with different parameters");
  }
  WriteOutcome outcome;
  outcome.write_id = std::move(first->write_id);
  outcome.context = std::move(first->context);
  {
    // Stored for the cluster's level then: bound to the key (or not, before every member read
    // level 3), with tokened versions (or not). Handed out for the level now.
    absl::StatusOr<CausalContext> stored = CausalContext::Decode(outcome.context);
    if (stored.ok()) outcome.context = ContextForClients(*std::move(stored), write.command().key);
  }
  outcome.deduplicated = true;
  outcome.dot = std::move(first->dot);
  return outcome;
}

absl::StatusOr<std::optional<Dot>> LocalStore::EarlierCopyOf(
    const WriteCommand& command, bool first_attempt, const SiblingSet& record,
    const CausalContext& seen, WriteGroup& group, int64_t now_micros) const {
  absl::StatusOr<std::optional<Dot>> copy =
      EarlierCopy(command, record, seen, now_micros, options_.idempotency_ttl);
  if (!first_attempt &&
      (absl::IsInvalidArgument(copy.status()) || (copy.ok() && !copy->has_value()))) {
    // Perhaps a copy of a write the record's bounded memory no longer holds (none can be when
    // this is the write's first attempt).
    KV_ASSIGN_OR_RETURN(
        std::optional<ReplacedWrite> forgotten,
        ForgottenCopyOf(group, command.key, NewSibling(command, now_micros), now_micros));
    if (forgotten.has_value()) return std::optional<Dot>(std::move(forgotten->dot));
  }
  return copy;
}

uint32_t LocalStore::ClusterFormatLevel() const {
  return levels_ == nullptr ? kFormatLevel : levels_->ClusterFormatLevel();
}

std::string LocalStore::ContextForClients(CausalContext context, absl::string_view key) const {
  context.BindToKey(key);
  return ContextForLevel(std::move(context), ClusterFormatLevel()).Encode();
}

}  // namespace kv

#include "node/operation_journal.h"

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "node/log.h"
#include "replica.pb.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

constexpr absl::string_view kPrefix = "operation/";
constexpr absl::string_view kTokenPrefix = "start_token/";

int64_t UnixMicrosOrZero(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixMicros(t);
}

absl::Time TimeOrPast(int64_t micros) {
  return micros == 0 ? absl::InfinitePast() : absl::FromUnixMicros(micros);
}

}  // namespace

std::string EngineOperationJournal::Key(absl::string_view id) { return absl::StrCat(kPrefix, id); }

std::string EngineOperationJournal::Encode(const OperationInfo& op) {
  internal::v1::StoredOperation proto;
  proto.set_id(op.id);
  proto.set_kind(op.kind);
  proto.set_description(op.description);
  proto.set_state(static_cast<int32_t>(op.state));
  proto.set_error_code(static_cast<int32_t>(op.error.code()));
  proto.set_error_message(std::string(op.error.message()));
  proto.set_started_unix_micros(UnixMicrosOrZero(op.started));
  proto.set_ended_unix_micros(UnixMicrosOrZero(op.ended));
  proto.set_done(op.done);
  proto.set_total(op.total);
  proto.set_unit(op.unit);
  proto.set_message(op.message);
  for (const auto& [name, value] : op.counters) (*proto.mutable_counters())[name] = value;
  proto.set_checkpoint(op.checkpoint);
  return proto.SerializeAsString();
}

absl::StatusOr<OperationInfo> EngineOperationJournal::Decode(absl::string_view bytes) {
  internal::v1::StoredOperation proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("the stored operation does not parse");
  }
  if (!ParseOperationId(proto.id()).ok()) {
    return absl::DataLossError(
        absl::StrCat("the stored operation's id \"", proto.id(), "\" is not an operation id"));
  }
  OperationInfo op;
  op.id = proto.id();
  op.kind = proto.kind();
  op.description = proto.description();
  switch (proto.state()) {
    case static_cast<int32_t>(OperationState::kRunning):
      op.state = OperationState::kRunning;
      break;
    case static_cast<int32_t>(OperationState::kSucceeded):
      op.state = OperationState::kSucceeded;
      break;
    case static_cast<int32_t>(OperationState::kFailed):
      op.state = OperationState::kFailed;
      // A FAILED operation's error is never OK: an unknown code reads as UNKNOWN.
      op.error = absl::Status(proto.error_code() > 0 && proto.error_code() <= 16
                                  ? static_cast<absl::StatusCode>(proto.error_code())
                                  : absl::StatusCode::kUnknown,
                              proto.error_message());
      break;
    default:
      return absl::DataLossError(absl::StrCat("the stored operation ", proto.id(),
                                              " has an unknown state ", proto.state()));
  }
  op.started = TimeOrPast(proto.started_unix_micros());
  op.ended = TimeOrPast(proto.ended_unix_micros());
  op.done = proto.done();
  op.total = proto.total();
  op.unit = proto.unit();
  op.message = proto.message();
  for (const auto& [name, value] : proto.counters()) op.counters[name] = value;
  op.checkpoint = proto.checkpoint();
  return op;
}

absl::Status EngineOperationJournal::Scan(
    absl::string_view prefix, absl::string_view what,
    const std::function<absl::Status(absl::string_view key, absl::string_view value)>& take) {
  WriteBatch unreadable;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kMeta);
  for (it->Seek(prefix); it->Valid() && absl::StartsWith(it->key(), prefix); it->Next()) {
    absl::Status taken = take(it->key(), it->value());
    if (taken.ok()) continue;
    LogWarn(absl::StrCat("deleting a stored ", what, " that cannot be read"),
            {{"key", std::string(it->key())}, {"error", std::string(taken.message())}});
    unreadable.Delete(Column::kMeta, it->key());
  }
  if (absl::Status status = it->status(); !status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("cannot read the stored ", what, "s: ", status.message()));
  }
  if (!unreadable.empty()) {
    if (absl::Status deleted = engine_->Write(unreadable, WriteOptions()); !deleted.ok()) {
      LogWarn(absl::StrCat("the unreadable stored ", what,
                           "s were not deleted; the next start skips them again"),
              {{"error", std::string(deleted.message())}});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OperationInfo>> EngineOperationJournal::LoadAll() {
  std::vector<OperationInfo> ops;
  KV_RETURN_IF_ERROR(
      Scan(kPrefix, "operation", [&](absl::string_view key, absl::string_view value) {
        KV_ASSIGN_OR_RETURN(OperationInfo op, Decode(value));
        if (Key(op.id) != key) return absl::DataLossError("stored under another operation's key");
        ops.push_back(std::move(op));
        return absl::OkStatus();
      }));
  return ops;
}

absl::Status EngineOperationJournal::Save(const OperationInfo& op) {
  WriteBatch batch;
  batch.Put(Column::kMeta, Key(op.id), Encode(op));
  return engine_->Write(batch, WriteOptions());
}

absl::Status EngineOperationJournal::Erase(absl::string_view id) {
  WriteBatch batch;
  batch.Delete(Column::kMeta, Key(id));
  return engine_->Write(batch, WriteOptions());
}

absl::StatusOr<std::vector<StartTokenJournal::Record>> EngineOperationJournal::LoadAllTokens() {
  std::vector<Record> records;
  KV_RETURN_IF_ERROR(
      Scan(kTokenPrefix, "idempotency token", [&](absl::string_view key, absl::string_view value) {
        const absl::string_view token = key.substr(kTokenPrefix.size());
        internal::v1::StoredStartToken proto;
        if (token.empty() || token.size() > StartTokens::kMaxTokenBytes) {
          return absl::DataLossError("not a token");
        }
        if (!proto.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return absl::DataLossError("the stored token does not parse");
        }
        records.push_back({std::string(token), proto.fingerprint(), proto.response(),
                           absl::FromUnixMicros(proto.started_unix_micros())});
        return absl::OkStatus();
      }));
  return records;
}

absl::Status EngineOperationJournal::SaveToken(const Record& record) {
  internal::v1::StoredStartToken proto;
  proto.set_fingerprint(record.fingerprint);
  proto.set_response(record.response);
  proto.set_started_unix_micros(absl::ToUnixMicros(record.started));
  WriteBatch batch;
  batch.Put(Column::kMeta, absl::StrCat(kTokenPrefix, record.token), proto.SerializeAsString());
  return engine_->Write(batch, WriteOptions());
}

absl::Status EngineOperationJournal::EraseToken(absl::string_view token) {
  WriteBatch batch;
  batch.Delete(Column::kMeta, absl::StrCat(kTokenPrefix, token));
  return engine_->Write(batch, WriteOptions());
}

}  // namespace kv

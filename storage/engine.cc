#include "storage/engine.h"

#include <array>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace kv {

absl::string_view ColumnName(Column column) {
  switch (column) {
    case Column::kData:
      return "data";
    case Column::kOutbox:
      return "outbox";
    case Column::kIdempotency:
      return "idempotency";
    case Column::kMeta:
      return "meta";
    case Column::kMerkle:
      return "merkle";
  }
  return "unknown";
}

namespace {
constexpr char kStorageFailurePayload[] = "type.kv/storage-failure";
}  // namespace

absl::Status MarkStorageFailure(absl::Status status) {
  if (!status.ok() && !absl::IsNotFound(status)) {
    status.SetPayload(kStorageFailurePayload, absl::Cord("1"));
  }
  return status;
}

bool IsStorageFailure(const absl::Status& status) {
  return status.GetPayload(kStorageFailurePayload).has_value();
}

absl::Status StorageFailureAsUnavailable(const absl::Status& status,
                                         absl::string_view consequence) {
  if (!IsStorageFailure(status)) return status;
  return absl::UnavailableError(absl::StrCat("this node could not write to its storage (",
                                             absl::StatusCodeToString(status.code()), ": ",
                                             status.message(), "); ", consequence));
}

absl::Status KeyNotFound(Column column) {
  static const auto* const kStatuses = [] {
    auto* statuses = new std::array<absl::Status, kNumColumns>();
    for (int i = 0; i < kNumColumns; ++i) {
      (*statuses)[i] = absl::NotFoundError(
          absl::StrCat("no key in column ", ColumnName(static_cast<Column>(i))));
    }
    return statuses;
  }();
  const auto index = static_cast<size_t>(column);
  if (index >= kNumColumns) return absl::NotFoundError("no key in an unknown column");
  return (*kStatuses)[index];
}

void WriteBatch::Put(Column column, absl::string_view key, absl::string_view value) {
  ops_.push_back(Op{OpType::kPut, column, std::string(key), std::string(value)});
  bytes_ += key.size() + value.size();
}

void WriteBatch::Delete(Column column, absl::string_view key) {
  ops_.push_back(Op{OpType::kDelete, column, std::string(key), std::string()});
  bytes_ += key.size();
}

void WriteBatch::Append(Op op) {
  bytes_ += op.key.size() + op.value.size();
  ops_.push_back(std::move(op));
}

bool Engine::GetFromMemory(Column /*column*/, absl::string_view /*key*/,
                           absl::StatusOr<std::string>* /*result*/) {
  return false;
}

absl::StatusOr<uint64_t> Engine::RemoveExpired(Column column, int64_t /*now_micros*/) {
  if (!ColumnHoldsExpiringValues(column)) {
    return absl::InvalidArgumentError(
        absl::StrCat("column ", ColumnName(column), " does not hold expiring values"));
  }
  return 0;
}

absl::Status PutSynced(Engine& engine, Column column, absl::string_view key,
                       absl::string_view value) {
  WriteBatch batch;
  batch.Put(column, key, value);
  WriteOptions sync;
  sync.sync = true;
  return engine.Write(batch, sync);
}

}  // namespace kv

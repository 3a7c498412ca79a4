#include "storage/engine.h"

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
  }
  return "unknown";
}

void WriteBatch::Put(Column column, absl::string_view key, absl::string_view value) {
  ops_.push_back(Op{OpType::kPut, column, std::string(key), std::string(value)});
  bytes_ += key.size() + value.size();
}

void WriteBatch::Delete(Column column, absl::string_view key) {
  ops_.push_back(Op{OpType::kDelete, column, std::string(key), std::string()});
  bytes_ += key.size();
}

absl::StatusOr<uint64_t> Engine::RemoveExpired(Column column, int64_t /*now_micros*/) {
  if (!ColumnHoldsExpiringValues(column)) {
    return absl::InvalidArgumentError(
        absl::StrCat("column ", ColumnName(column), " does not hold expiring values"));
  }
  return 0;
}

}  // namespace kv

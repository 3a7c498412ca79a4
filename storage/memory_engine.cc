#include "storage/memory_engine.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/expiring_value.h"

namespace kv {
namespace {

// Iterates over a private copy of one column taken at creation: a consistent snapshot at the
// cost of O(n) to create, which is fine for tests and the simulation.
class MemoryIterator : public Iterator {
 public:
  using Table = std::map<std::string, std::string, std::less<>>;
  explicit MemoryIterator(Table snapshot) : table_(std::move(snapshot)), it_(table_.end()) {}

  void SeekToFirst() override { it_ = table_.begin(); }
  void Seek(absl::string_view target) override { it_ = table_.lower_bound(target); }
  bool Valid() const override { return it_ != table_.end(); }
  void Next() override { ++it_; }
  absl::string_view key() const override { return it_->first; }
  absl::string_view value() const override { return it_->second; }
  absl::Status status() const override { return absl::OkStatus(); }

 private:
  const Table table_;
  Table::const_iterator it_;
};

size_t Index(Column column) { return static_cast<size_t>(column); }

}  // namespace

void MemoryEngine::Apply(const WriteBatch& batch, Table* tables) {
  for (const WriteBatch::Op& op : batch.ops()) {
    Table& table = tables[Index(op.column)];
    if (op.type == WriteBatch::OpType::kPut) {
      table.insert_or_assign(op.key, op.value);
    } else {
      table.erase(op.key);
    }
  }
}

absl::StatusOr<std::string> MemoryEngine::Get(Column column, absl::string_view key) {
  absl::MutexLock lock(&mu_);
  const Table& table = tables_[Index(column)];
  auto it = table.find(key);
  if (it == table.end()) {
    return KeyNotFound(column);
  }
  return it->second;
}

bool MemoryEngine::GetFromMemory(Column column, absl::string_view key,
                                 absl::StatusOr<std::string>* result) {
  *result = Get(column, key);
  return true;
}

absl::Status MemoryEngine::Write(const WriteBatch& batch, const WriteOptions& options) {
  for (const WriteBatch::Op& op : batch.ops()) {
    if (Index(op.column) >= kNumColumns) {
      return absl::InvalidArgumentError("write batch names an unknown column");
    }
  }
  absl::MutexLock lock(&mu_);
  Apply(batch, tables_);
  unsynced_.push_back(batch);
  // A synced batch makes every earlier batch durable too, as an fsync of a log does.
  if (options.sync) {
    for (const WriteBatch& pending : unsynced_) Apply(pending, durable_);
    unsynced_.clear();
  }
  return absl::OkStatus();
}

std::unique_ptr<Iterator> MemoryEngine::NewIterator(Column column) {
  absl::MutexLock lock(&mu_);
  return std::make_unique<MemoryIterator>(tables_[Index(column)]);
}

uint64_t MemoryEngine::ApproximateCount(Column column) {
  absl::MutexLock lock(&mu_);
  return tables_[Index(column)].size();
}

absl::StatusOr<uint64_t> MemoryEngine::RemoveExpired(Column column, int64_t now_micros) {
  if (!ColumnHoldsExpiringValues(column)) return Engine::RemoveExpired(column, now_micros);
  auto expired = [now_micros](const std::string& value) {
    int64_t expiry = 0;
    absl::string_view payload;
    return ParseExpiringValue(value, &expiry, &payload) && expiry < now_micros;
  };
  absl::MutexLock lock(&mu_);
  uint64_t removed = 0;
  for (Table* table : {&tables_[Index(column)], &durable_[Index(column)]}) {
    const bool visible = table == &tables_[Index(column)];
    for (auto it = table->begin(); it != table->end();) {
      if (expired(it->second)) {
        it = table->erase(it);
        if (visible) ++removed;
      } else {
        ++it;
      }
    }
  }
  // A pending unsynced batch may bring an expired value back into the durable state on a later
  // sync; readers check the expiry, so that only delays its removal.
  return removed;
}

void MemoryEngine::SyncAll() {
  absl::MutexLock lock(&mu_);
  for (const WriteBatch& pending : unsynced_) Apply(pending, durable_);
  unsynced_.clear();
}

size_t MemoryEngine::SimulateCrash() {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < kNumColumns; ++i) tables_[i] = durable_[i];
  const size_t lost = unsynced_.size();
  unsynced_.clear();
  return lost;
}

}  // namespace kv

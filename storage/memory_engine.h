// MemoryEngine: an Engine kept in ordered in-memory maps, for unit tests and the deterministic
// simulation. It models durability: batches written without sync are "unsynced" until a later
// synced batch (or SyncAll) makes them durable, and SimulateCrash() drops every unsynced batch,
// as a machine crash would. Thread-safe.
#ifndef KV_STORAGE_MEMORY_ENGINE_H_
#define KV_STORAGE_MEMORY_ENGINE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "storage/engine.h"

namespace kv {

class MemoryEngine : public Engine {
 public:
  MemoryEngine() = default;

  absl::StatusOr<std::string> Get(Column column, absl::string_view key) override;
  // Everything is in memory: always answers.
  bool GetFromMemory(Column column, absl::string_view key,
                     absl::StatusOr<std::string>* result) override;
  absl::Status Write(const WriteBatch& batch, const WriteOptions& options) override;
  std::unique_ptr<Iterator> NewIterator(Column column) override;
  uint64_t ApproximateCount(Column column) override;
  // Deletes the expired values at once (and durably: expiry needs no sync to be safe).
  absl::StatusOr<uint64_t> RemoveExpired(Column column, int64_t now_micros) override;

  // Makes every batch written so far durable.
  void SyncAll();
  // Forgets every batch not yet durable, as if the machine had crashed; returns how many.
  size_t SimulateCrash();

 private:
  using Table = std::map<std::string, std::string, std::less<>>;
  static void Apply(const WriteBatch& batch, Table* tables);

  absl::Mutex mu_;
  Table tables_[kNumColumns] ABSL_GUARDED_BY(mu_);         // what readers see
  Table durable_[kNumColumns] ABSL_GUARDED_BY(mu_);        // what survives SimulateCrash
  std::vector<WriteBatch> unsynced_ ABSL_GUARDED_BY(mu_);  // applied to tables_ only
};

}  // namespace kv

#endif  // KV_STORAGE_MEMORY_ENGINE_H_

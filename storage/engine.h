// Engine: the storage interface the node writes through. Two implementations pass one
// conformance suite (tests/engine_conformance_test.cc): RocksDbEngine (the only code that
// includes RocksDB headers) and MemoryEngine (tests and the deterministic simulation).
//
// An engine holds a fixed set of columns (independent ordered key spaces). A WriteBatch touches
// any columns and is applied atomically: after a crash either all of it is visible or none.
// With WriteOptions::sync the batch is durable (fsync'd) when Write returns; without it the batch
// survives a process crash (it is in the write-ahead log) but may be lost by a machine crash.
//
// Expiring values (storage/expiring_value.h): in a column for which ColumnHoldsExpiringValues
// is true, a value written with an expiry header may be deleted by the engine once its expiry is
// before the horizon given to RemoveExpired. Until then, and for a while after, it reads as usual.
//
// Thread safety: all methods may be called concurrently. Iterators see a consistent snapshot
// taken when they were created and must not outlive the engine.
//
// Errors: NOT_FOUND only from Get for an absent key; FAILED_PRECONDITION when the data
// directory is locked or unusable at open; INTERNAL / DATA_LOSS for I/O or corruption.
#ifndef KV_STORAGE_ENGINE_H_
#define KV_STORAGE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kv {

enum class Column : uint8_t {
  kData = 0,         // key -> encoded sibling set (storage/FORMAT.md)
  kOutbox = 1,       // replication outbox entries
  kIdempotency = 2,  // idempotency token -> recorded first result (expiring values)
  kMeta = 3,         // node metadata (actor epoch, format version)
  kMerkle = 4,       // anti-entropy index: segment + key -> record digest (node/merkle_index.h)
};
inline constexpr int kNumColumns = 5;
absl::string_view ColumnName(Column column);
// The NOT_FOUND status of a Get of an absent key. Made once per column: a miss, the common case
// for idempotency tokens, then costs no allocation.
absl::Status KeyNotFound(Column column);
// `status` (not OK, not NOT_FOUND) marked as a failure of the storage itself (an I/O error, a full
// disk, an unwritable directory) rather than of the request: the same request may succeed on
// another node. The code and message stay; IsStorageFailure tells it apart.
absl::Status MarkStorageFailure(absl::Status status);
bool IsStorageFailure(const absl::Status& status);
// What a node answers for a request that failed with `status`: a storage failure becomes
// UNAVAILABLE (the request may succeed later or on another node; callers retry it), its message
// "this node could not write to its storage (CODE: message); " + `consequence`; any other status
// is returned as is. Without it a peer would take, say, a corrupt block's DATA_LOSS for a refusal
// of its request (node/peer_transport.h: IsRecordRefusal) and give up on it.
absl::Status StorageFailureAsUnavailable(const absl::Status& status, absl::string_view consequence);
// True for the columns whose values may carry an expiry (storage/expiring_value.h).
constexpr bool ColumnHoldsExpiringValues(Column column) { return column == Column::kIdempotency; }

// An ordered list of mutations applied atomically by Engine::Write.
class WriteBatch {
 public:
  enum class OpType : uint8_t { kPut, kDelete };
  struct Op {
    OpType type;
    Column column;
    std::string key;
    std::string value;  // empty for kDelete
  };

  void Put(Column column, absl::string_view key, absl::string_view value);
  void Delete(Column column, absl::string_view key);
  // Appends `op` as is, taking its strings (no copy).
  void Append(Op op);
  void Clear() {
    ops_.clear();
    bytes_ = 0;
  }

  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }
  // Approximate payload size in bytes (keys plus values).
  size_t ApproximateBytes() const { return bytes_; }

 private:
  std::vector<Op> ops_;
  size_t bytes_ = 0;
};

struct WriteOptions {
  bool sync = false;
};

// Forward iterator over one column, in byte order of keys.
class Iterator {
 public:
  virtual ~Iterator() = default;
  virtual void SeekToFirst() = 0;
  // Positions at the first key >= target.
  virtual void Seek(absl::string_view target) = 0;
  virtual bool Valid() const = 0;
  virtual void Next() = 0;
  // Valid() must be true. The views stay valid until the iterator moves.
  virtual absl::string_view key() const = 0;
  virtual absl::string_view value() const = 0;
  // OK unless iteration hit an I/O error or corruption.
  virtual absl::Status status() const = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // The value stored under key, or NOT_FOUND.
  virtual absl::StatusOr<std::string> Get(Column column, absl::string_view key) = 0;
  // Get answered from memory only (memtables and caches, never a file read), for threads that
  // must not block: returns false, leaving `*result` alone, when the answer would need disk I/O.
  // The default always returns false.
  virtual bool GetFromMemory(Column column, absl::string_view key,
                             absl::StatusOr<std::string>* result);
  virtual absl::Status Write(const WriteBatch& batch, const WriteOptions& options) = 0;
  virtual std::unique_ptr<Iterator> NewIterator(Column column) = 0;
  // Estimated number of keys in a column (cheap, approximate).
  virtual uint64_t ApproximateCount(Column column) = 0;

  // Deletes the expiring values of `column` whose expiry is before `now_micros` and returns how
  // many. An engine may instead delete them in the background (RocksDbEngine: when compactions
  // rewrite them, using the most recent `now_micros` it was given, even one earlier than before,
  // as the horizon); it then returns how
  // many it deleted since the previous call. A value that was overwritten after the expired one
  // is never affected. The default deletes nothing. INVALID_ARGUMENT if `column` does not hold
  // expiring values.
  virtual absl::StatusOr<uint64_t> RemoveExpired(Column column, int64_t now_micros);
};

// Writes one key durably: a batch of one Put, synced.
absl::Status PutSynced(Engine& engine, Column column, absl::string_view key,
                       absl::string_view value);

}  // namespace kv

#endif  // KV_STORAGE_ENGINE_H_

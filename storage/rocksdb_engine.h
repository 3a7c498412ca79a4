// RocksDbEngine: the production Engine, one RocksDB database with a column family per Column.
// The only code in the store that includes RocksDB headers.
//
// Open fails with a clear status and changes nothing when the directory cannot be used:
// FAILED_PRECONDITION if another process (or another engine of this one) holds its lock ("is
// another kvnode running on this data directory?"), PERMISSION_DENIED if it cannot be created or
// written. The lock is an flock(2) on `kvnode.lock` in the directory, taken before RocksDB opens
// anything (RocksDB's own LOCK is checked only after it has rotated the info log, which would
// rename a running node's log), and released once the database is closed. Closing (the
// destructor) flushes nothing extra: every acknowledged batch is already in the write-ahead log.
//
// Expiring values (storage/expiring_value.h) are deleted by a compaction filter on the columns
// that hold them: a compaction that rewrites an expiring value whose expiry is before the horizon
// (the time most recently given to RemoveExpired since open; it moves back too) drops it. Files of
// those columns are recompacted at least daily, so expired values do not linger in files nothing
// else touches.
//
// The idempotency column keeps its memtable in hash buckets (its reads are point lookups; an
// iterator over it first sorts the memtable), and the merkle column a small memtable: inserts at
// random places in a large skip list are what a write spends most of its engine time on.
// Thread-safe.
#ifndef KV_STORAGE_ROCKSDB_ENGINE_H_
#define KV_STORAGE_ROCKSDB_ENGINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/engine.h"

namespace kv {

struct RocksDbOptions {
  size_t block_cache_bytes = 64 << 20;
  size_t write_buffer_bytes = 32 << 20;
  // The write-ahead log files kept at most, about (0: four times write_buffer_bytes). A log file
  // is kept until every column has flushed what it holds of it, so a column that is rarely
  // written (the node's metadata) would otherwise keep every log since its last write: up to
  // RocksDB's own bound, four times all columns' memtables, on disk and replayed at restart.
  // Past this size the columns holding the oldest file are flushed.
  size_t max_wal_bytes = 0;
  // Table files get their filters and indexes in partitions of about 4 KiB under a small top
  // level pinned in the block cache, so a lookup reads one partition instead of a table's whole
  // filter (which, once larger than a cache shard, was read again on every lookup). Files
  // written without (by earlier versions) are rewritten in the background after Open. false
  // writes whole filters as earlier versions did, and rewrites nothing: for upgrade tests.
  bool partitioned_filters = true;
  // RocksDB's informational log goes to DIR/LOG (storage/rocksdb_info_log.h), rotated to
  // DIR/LOG.old past this size; its warnings and errors also go to `log_warning` (level, line)
  // when set.
  size_t info_log_max_bytes = 16 << 20;
  std::function<void(absl::string_view level, absl::string_view line)> log_warning;
};

class RocksDbEngine : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<RocksDbEngine>> Open(const std::string& dir,
                                                             const RocksDbOptions& options);
  // The values of `keys` in `column` of the database in `dir` (nullopt for a key it lacks), read
  // in one read-only open that changes nothing in the directory (no info log, no lock): for
  // checks that must refuse a directory before Open writes to it. NOT_FOUND if the directory
  // holds no database or no such column; other errors as the read-only open reports them.
  static absl::StatusOr<std::vector<std::optional<std::string>>> ReadWithoutOpening(
      const std::string& dir, Column column, const std::vector<std::string>& keys);
  ~RocksDbEngine() override;

  absl::StatusOr<std::string> Get(Column column, absl::string_view key) override;
  // Reads with ReadOptions::read_tier = kBlockCacheTier: memtables, then table files only
  // through blocks (data, index, filter) already in the block cache.
  bool GetFromMemory(Column column, absl::string_view key,
                     absl::StatusOr<std::string>* result) override;
  absl::Status Write(const WriteBatch& batch, const WriteOptions& options) override;
  std::unique_ptr<Iterator> NewIterator(Column column) override;
  uint64_t ApproximateCount(Column column) override;
  // Sets the expiry horizon of `column` to `now_micros` (also back, after a step of the wall
  // clock: values written since must not be dropped by an earlier, later horizon) and returns
  // how many values compactions have dropped since the previous call.
  absl::StatusOr<uint64_t> RemoveExpired(Column column, int64_t now_micros) override;

  // Flushes `column` and compacts all of its files (for tests and maintenance; slow).
  absl::Status CompactColumn(Column column);

  // Table files, over every column, whose filter and index are whole blocks: written before
  // partitioned filters and not yet rewritten. Open starts rewriting them (on a thread of the
  // engine's, one compaction of each column holding some; the destructor stops it), so this
  // falls to 0 unless the engine closes first. Reads every table's properties.
  uint64_t WholeFilterTables();
  // How many of them Open found (and started rewriting); no I/O.
  uint64_t WholeFilterTablesAtOpen() const;

 private:
  struct Impl;  // keeps RocksDB types out of this header
  explicit RocksDbEngine(std::unique_ptr<Impl> impl);
  void RewriteWholeFilterTables();
  std::unique_ptr<Impl> impl_;
};

}  // namespace kv

#endif  // KV_STORAGE_ROCKSDB_ENGINE_H_

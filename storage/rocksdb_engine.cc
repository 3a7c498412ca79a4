// Column families: RocksDB always has a "default" column family; this engine leaves it empty
// and keeps each Column in a family named ColumnName(column) ("data", "outbox", "idempotency",
// "meta", "merkle"). A database written before a column existed gets its family created at open
// (create_missing_column_families). See storage/FORMAT.md.
#include "storage/rocksdb_engine.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/cache.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/iterator.h"
#include "rocksdb/memtablerep.h"
#include "rocksdb/options.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/table_properties.h"
#include "rocksdb/write_batch.h"
#include "storage/expiring_value.h"
#include "storage/rocksdb_info_log.h"

namespace kv {
namespace {

rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
absl::string_view ToView(const rocksdb::Slice& s) { return absl::string_view(s.data(), s.size()); }

// Maps a RocksDB status (not OK) to the engine's error codes; `what` names the operation.
absl::Status FromRocksDb(const rocksdb::Status& s, absl::string_view what) {
  std::string message = absl::StrCat(what, ": rocksdb: ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  if (s.IsIOError() && absl::StrContains(s.ToString(), "Permission denied")) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

// RocksDB reports a held LOCK file as an IOError: "While lock file: <dir>/LOCK: Resource
// temporarily unavailable" when another process holds it, "lock hold by current process" when
// another engine in this process does. Returns the error to report, or OK if `s` is not that.
absl::Status LockError(const rocksdb::Status& s, const std::string& dir) {
  if (!s.IsIOError()) return absl::OkStatus();
  const std::string text = s.ToString();
  if (absl::StrContains(text, "lock hold by current process")) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", dir, " is locked: it is already open in this process"));
  }
  if (absl::StrContains(text, "While lock file")) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", dir,
                     " is locked by another process (is another kvnode running on it?): ", text));
  }
  return absl::OkStatus();
}

// Creates `dir` if needed and checks that this process may write it, so that the common
// mistakes get a message naming the directory instead of a RocksDB file error.
absl::Status PrepareDirectory(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::string message =
        absl::StrCat("cannot create data directory ", dir, ": ", ec.message(),
                     " (choose a directory this user can create, or create it first)");
    if (ec == std::errc::permission_denied || ec == std::errc::operation_not_permitted ||
        ec == std::errc::read_only_file_system) {
      return absl::PermissionDeniedError(message);
    }
    return absl::FailedPreconditionError(message);
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", dir, " exists but is not a directory"));
  }
  if (access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("data directory ", dir,
                     " is not readable and writable by this user (fix its ownership "
                     "or permissions, or choose another directory)"));
  }
  return absl::OkStatus();
}

// The file an engine holds an exclusive flock(2) on for as long as it is open. RocksDB checks its
// own LOCK file only after it has renamed the directory's info log (LOG -> LOG.old.<time>), so a
// second process opening a directory in use would rename the running node's log on its way to
// failing; this lock is taken before RocksDB touches anything.
constexpr char kLockFileName[] = "kvnode.lock";

// Directories (canonical paths) an engine of this process holds, so that a second open from
// this process is told so rather than blamed on another process.
absl::Mutex locked_dirs_mu(absl::kConstInit);
std::set<std::string>& LockedDirs() ABSL_EXCLUSIVE_LOCKS_REQUIRED(locked_dirs_mu) {
  static auto* dirs = new std::set<std::string>();
  return *dirs;
}

std::string CanonicalDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::path canonical = std::filesystem::canonical(dir, ec);
  return ec ? dir : canonical.string();
}

// Locks `dir` (which exists) for this engine: returns the lock file's descriptor and stores in
// `*canonical` the name under which UnlockDirectory must release it.
absl::StatusOr<int> LockDirectory(const std::string& dir, std::string* canonical_out) {
  const std::string canonical = CanonicalDir(dir);
  absl::MutexLock lock(&locked_dirs_mu);  // so that two opens in this process cannot interleave
  if (LockedDirs().count(canonical) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", dir, " is locked: it is already open in this process"));
  }
  const std::string path = (std::filesystem::path(dir) / kLockFileName).string();
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    std::string message =
        absl::StrCat("cannot open the lock file ", path, ": ", std::strerror(error));
    if (error == EACCES || error == EPERM || error == EROFS) {
      return absl::PermissionDeniedError(
          absl::StrCat(message,
                       " (fix the data directory's ownership or permissions, or choose "
                       "another directory)"));
    }
    return absl::FailedPreconditionError(message);
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", dir,
          " is locked by another process (is another kvnode running on it?): ", path, " is held"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot lock ", path, ": ", std::strerror(error)));
  }
  LockedDirs().insert(canonical);
  *canonical_out = canonical;
  return fd;
}

void UnlockDirectory(const std::string& canonical, int fd) {
  {
    absl::MutexLock lock(&locked_dirs_mu);
    LockedDirs().erase(canonical);
  }
  close(fd);  // releases the flock
}

class RocksDbIterator : public Iterator {
 public:
  // Takes ownership of `snapshot` (released on destruction) and of `it`, which reads from it.
  RocksDbIterator(rocksdb::DB* db, const rocksdb::Snapshot* snapshot,
                  std::unique_ptr<rocksdb::Iterator> it)
      : db_(db), snapshot_(snapshot), it_(std::move(it)) {}
  ~RocksDbIterator() override {
    it_.reset();  // before the snapshot it reads from
    db_->ReleaseSnapshot(snapshot_);
  }

  void SeekToFirst() override { it_->SeekToFirst(); }
  void Seek(absl::string_view target) override { it_->Seek(ToSlice(target)); }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  absl::string_view key() const override { return ToView(it_->key()); }
  absl::string_view value() const override { return ToView(it_->value()); }
  absl::Status status() const override {
    rocksdb::Status s = it_->status();
    return s.ok() ? absl::OkStatus() : FromRocksDb(s, "iterator");
  }

 private:
  rocksdb::DB* const db_;
  const rocksdb::Snapshot* const snapshot_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

// Drops expiring values whose expiry is before the horizon; keeps everything else (values without
// the expiring-value tag included). RocksDB turns a dropped value into a deletion marker, so an
// older version of the key in a lower level cannot reappear. One instance serves every
// compaction thread: it only touches atomics.
class ExpiryFilter : public rocksdb::CompactionFilter {
 public:
  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    int64_t expiry = 0;
    absl::string_view payload;
    if (!ParseExpiringValue(ToView(value), &expiry, &payload)) return false;
    if (expiry >= horizon_micros_.load(std::memory_order_relaxed)) return false;
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  const char* Name() const override { return "kv.ExpiryFilter"; }

  // The latest time given, also one before the previous: after a step of the wall clock back,
  // values written since expire after the old horizon, and the clock they are read by has not
  // reached their expiry; a horizon that stayed ahead would drop them while they are valid.
  void SetHorizon(int64_t now_micros) {
    horizon_micros_.store(now_micros, std::memory_order_relaxed);
  }
  uint64_t TakeDropped() { return dropped_.exchange(0, std::memory_order_relaxed); }

 private:
  // Nothing expires before the first RemoveExpired call after open.
  std::atomic<int64_t> horizon_micros_{std::numeric_limits<int64_t>::min()};
  mutable std::atomic<uint64_t> dropped_{0};
};

// Files of expiring columns older than this are recompacted (so filtered) even if nothing else
// would pick them.
constexpr uint64_t kExpiringRecompactionSeconds = 24 * 60 * 60;

// The idempotency column is read by point lookups only (a write's token, once per write; the
// legacy expiry sweep aside), and every write adds a key at a random place (tokens are random).
// In a skip list each such insert walks ~20 levels of cache misses; a hash-bucketed memtable
// inserts and finds in O(1). Its prefix is the whole key, so each bucket holds one token.
// Measured with RocksDB alone on the 2-core development VM, one thread replaying the store's
// write mix (per write: a data read and put, a merkle put, a token read and put; 14 writes per
// batch; 300,000 writes): 13.3-14.5 us per write with skip lists, 10.5-10.9 with this memtable.
// The bucket array is allocated with each memtable and counts against its size, so a small
// write buffer gets fewer buckets (RocksDB would otherwise find a new memtable already full).
constexpr size_t kTokenMemtableBuckets = 1 << 17;
constexpr size_t kWriteBufferBytesPerTokenBucket = 256;

size_t TokenMemtableBuckets(size_t write_buffer_bytes) {
  return std::clamp<size_t>(write_buffer_bytes / kWriteBufferBytesPerTokenBucket, 1024,
                            kTokenMemtableBuckets);
}

class WholeKeyTransform : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "kv.WholeKey"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override { return key; }
  bool InDomain(const rocksdb::Slice& /*key*/) const override { return true; }
};

// The merkle column's entries are small (segment + key -> 8-byte digest), so a full-size
// memtable holds ~10x more of them than the data column's, and a deeper skip list makes every
// insert slower. A small memtable keeps it shallow: 12.8-12.9 us per write in the same
// measurement, and 9.4-9.7 with both changes.
constexpr size_t kMerkleWriteBufferBytes = 4 << 20;

}  // namespace

struct RocksDbEngine::Impl {
  std::string dir;
  // Declared before `db`, which uses it until it is closed.
  ExpiryFilter expiry_filter;
  std::unique_ptr<rocksdb::DB> db;
  // handles[i] is the family of Column i; handles[kNumColumns] is "default".
  std::vector<rocksdb::ColumnFamilyHandle*> handles;

  rocksdb::ColumnFamilyHandle* Family(Column column) const {
    return handles[static_cast<size_t>(column)];
  }

  int lock_fd = -1;        // LockDirectory's, released once the database is closed
  std::string locked_dir;  // the name LockDirectory registered
  // Rewrites the table files written before partitioned filters (RewriteWholeFilterTables).
  std::thread table_rewriter;
  uint64_t whole_filter_tables_at_open = 0;

  ~Impl() {
    if (table_rewriter.joinable()) {
      db->DisableManualCompaction();  // its CompactRange returns at once, Incomplete
      table_rewriter.join();
    }
    if (db != nullptr) {
      for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
      db->Close().PermitUncheckedError();  // the WAL already holds every acknowledged batch
      db.reset();
    }
    if (lock_fd >= 0) UnlockDirectory(locked_dir, lock_fd);
  }
};

namespace {

// Discards RocksDB's info log: a read-only peek must not create or rotate the LOG file.
class DiscardingLogger : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char* /*format*/, va_list /*ap*/) override {}
};

}  // namespace

absl::StatusOr<std::vector<std::optional<std::string>>> RocksDbEngine::ReadWithoutOpening(
    const std::string& dir, Column column, const std::vector<std::string>& keys) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::path(dir) / "CURRENT", ec)) {
    return absl::NotFoundError(absl::StrCat("no database in ", dir));
  }
  rocksdb::DBOptions db_options;
  db_options.info_log = std::make_shared<DiscardingLogger>();
  std::vector<std::string> existing;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, dir, &existing);
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("listing the column families of ", dir));
  const std::string name(ColumnName(column));
  if (std::find(existing.begin(), existing.end(), name) == existing.end()) {
    return absl::NotFoundError(absl::StrCat("no column ", name, " in ", dir));
  }
  // A subset of the families is enough read-only; the log's records of the others are skipped.
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {name, rocksdb::ColumnFamilyOptions()}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  s = rocksdb::DB::OpenForReadOnly(db_options, dir, families, &handles, &raw_db);
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("reading ", dir));
  std::unique_ptr<rocksdb::DB> db(raw_db);
  std::vector<std::optional<std::string>> values;
  for (const std::string& key : keys) {
    std::string value;
    s = db->Get(rocksdb::ReadOptions(), handles[1], key, &value);
    if (!s.ok() && !s.IsNotFound()) break;
    values.push_back(s.ok() ? std::optional<std::string>(std::move(value)) : std::nullopt);
    s = rocksdb::Status::OK();
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
  db->Close().PermitUncheckedError();
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("get from column ", name));
  return values;
}

RocksDbEngine::RocksDbEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RocksDbEngine::~RocksDbEngine() = default;

absl::StatusOr<std::unique_ptr<RocksDbEngine>> RocksDbEngine::Open(const std::string& dir,
                                                                   const RocksDbOptions& options) {
  if (absl::Status status = PrepareDirectory(dir); !status.ok()) return status;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // Flushes and compactions in the background while writers group-commit in the foreground.
  db_options.max_background_jobs = 2;
  db_options.enable_pipelined_write = true;
  // Required by the hash-bucketed memtable of the idempotency column. Writes come through one
  // committing thread (node/commit_queue.h), so concurrent memtable inserts would gain nothing.
  db_options.allow_concurrent_memtable_write = false;
  db_options.max_total_wal_size =
      options.max_wal_bytes != 0 ? options.max_wal_bytes : 4 * options.write_buffer_bytes;

  rocksdb::BlockBasedTableOptions table_options;
  table_options.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  // Most lookups of idempotency tokens and of new keys miss: Bloom filters keep a miss from
  // reading a data block of every table.
  table_options.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table_options.cache_index_and_filter_blocks = true;
  table_options.pin_l0_filter_and_index_blocks_in_cache = true;
  // Filters and indexes in partitions of about 4 KiB, found through a small pinned top level.
  // With one filter block per table, a table of the idempotency column (every tokened write
  // adds a record, kept for a day) soon has a filter of a megabyte or more: larger than a shard
  // of the block cache (64 shards), so it was evicted as soon as it was released and every
  // token lookup read and checksummed it again. After about a million tokened Puts that was
  // two thirds of the node's CPU (see README, "Performance").
  if (options.partitioned_filters) {
    table_options.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
    table_options.partition_filters = true;
    table_options.metadata_block_size = 4096;
    table_options.pin_top_level_index_and_filter = true;
  }
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size = options.write_buffer_bytes;
  cf_options.memtable_whole_key_filtering = true;
  cf_options.memtable_prefix_bloom_size_ratio = 0.05;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));
  // The idempotency column's prefix is the whole key (WholeKeyTransform, which its hashed
  // memtable needs), so its prefix filter answers every lookup; filtering the whole key too
  // would add each key twice, and the partitioned filter builder then misses its cut points
  // (partitions of 30 KB and more instead of 4 KiB). Same cache, same filter otherwise.
  rocksdb::BlockBasedTableOptions token_table_options = table_options;
  if (options.partitioned_filters) token_table_options.whole_key_filtering = false;
  const std::shared_ptr<rocksdb::TableFactory> token_tables(
      rocksdb::NewBlockBasedTableFactory(token_table_options));

  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  absl::StatusOr<int> lock_fd = LockDirectory(dir, &impl->locked_dir);
  if (!lock_fd.ok()) return lock_fd.status();
  impl->lock_fd = *lock_fd;
  // Only once the directory is ours, as it renames LOG. Not RocksDB's own file logger, which
  // aborts the process at its first write after a failed one (a full disk): see
  // storage/rocksdb_info_log.h.
  db_options.info_log =
      std::make_shared<RocksDbInfoLog>(dir, options.info_log_max_bytes, options.log_warning);
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (int i = 0; i < kNumColumns; ++i) {
    const auto column = static_cast<Column>(i);
    families.emplace_back(std::string(ColumnName(column)), cf_options);
    if (ColumnHoldsExpiringValues(column)) {
      families.back().options.compaction_filter = &impl->expiry_filter;
      families.back().options.periodic_compaction_seconds = kExpiringRecompactionSeconds;
    }
    if (column == Column::kIdempotency) {
      families.back().options.prefix_extractor = std::make_shared<WholeKeyTransform>();
      families.back().options.table_factory = token_tables;
      families.back().options.memtable_factory.reset(
          rocksdb::NewHashLinkListRepFactory(TokenMemtableBuckets(options.write_buffer_bytes)));
    }
    if (column == Column::kMerkle) {
      families.back().options.write_buffer_size =
          std::min(options.write_buffer_bytes, kMerkleWriteBufferBytes);
    }
  }
  families.emplace_back(rocksdb::kDefaultColumnFamilyName, cf_options);

  // RocksDB refuses to open a database without naming every family it holds; say so plainly.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, dir, &existing).ok()) {
    for (const std::string& name : existing) {
      bool known = false;
      for (const auto& family : families) known |= family.name == name;
      if (!known) {
        return absl::FailedPreconditionError(
            absl::StrCat("data directory ", dir, " holds column family \"", name,
                         "\" unknown to this version of kvnode (was it written by a newer one?)"));
      }
    }
  }

  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families, &impl->handles, &raw_db);
  if (!s.ok()) {
    if (absl::Status lock_error = LockError(s, dir); !lock_error.ok()) return lock_error;
    absl::Status status = FromRocksDb(s, absl::StrCat("opening data directory ", dir));
    if (status.code() == absl::StatusCode::kInternal ||
        status.code() == absl::StatusCode::kInvalidArgument) {
      return absl::FailedPreconditionError(status.message());
    }
    return status;
  }
  impl->db.reset(raw_db);
  auto engine = std::unique_ptr<RocksDbEngine>(new RocksDbEngine(std::move(impl)));
  if (options.partitioned_filters) engine->RewriteWholeFilterTables();
  return engine;
}

namespace {

// Table files of `family` whose filter and index are each one block (written before partitioned
// filters, or with RocksDbOptions::partitioned_filters off): a partitioned index has at least
// one partition.
uint64_t CountWholeFilterTables(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family) {
  rocksdb::TablePropertiesCollection tables;
  if (!db->GetPropertiesOfAllTables(family, &tables).ok()) return 0;
  uint64_t count = 0;
  for (const auto& [file, properties] : tables) {
    if (properties != nullptr && properties->index_partitions == 0) ++count;
  }
  return count;
}

}  // namespace

uint64_t RocksDbEngine::WholeFilterTables() {
  uint64_t count = 0;
  for (int i = 0; i < kNumColumns; ++i) {
    count += CountWholeFilterTables(impl_->db.get(), impl_->Family(static_cast<Column>(i)));
  }
  return count;
}

uint64_t RocksDbEngine::WholeFilterTablesAtOpen() const {
  return impl_->whole_filter_tables_at_open;
}

void RocksDbEngine::RewriteWholeFilterTables() {
  std::vector<rocksdb::ColumnFamilyHandle*> families;
  for (int i = 0; i < kNumColumns; ++i) {
    rocksdb::ColumnFamilyHandle* family = impl_->Family(static_cast<Column>(i));
    const uint64_t tables = CountWholeFilterTables(impl_->db.get(), family);
    impl_->whole_filter_tables_at_open += tables;
    if (tables > 0) families.push_back(family);
  }
  if (families.empty()) return;
  rocksdb::DB* db = impl_->db.get();
  impl_->table_rewriter = std::thread([db, families] {
    rocksdb::CompactRangeOptions options;
    options.exclusive_manual_compaction = false;  // flushes and other compactions go on
    // Every file, the bottommost level's too, but not the files this compaction just wrote.
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    for (rocksdb::ColumnFamilyHandle* family : families) {
      // Incomplete once the engine closes; a file left is rewritten at the next open.
      if (!db->CompactRange(options, family, nullptr, nullptr).ok()) return;
    }
  });
}

absl::StatusOr<std::string> RocksDbEngine::Get(Column column, absl::string_view key) {
  std::string value;
  rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->Family(column), ToSlice(key), &value);
  if (s.IsNotFound()) {
    return KeyNotFound(column);
  }
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("get from column ", ColumnName(column)));
  return value;
}

bool RocksDbEngine::GetFromMemory(Column column, absl::string_view key,
                                  absl::StatusOr<std::string>* result) {
  rocksdb::ReadOptions read_options;
  read_options.read_tier = rocksdb::kBlockCacheTier;
  std::string value;
  rocksdb::Status s = impl_->db->Get(read_options, impl_->Family(column), ToSlice(key), &value);
  if (s.IsIncomplete()) return false;  // a block it needs is not cached
  if (s.IsNotFound()) {
    *result = KeyNotFound(column);
  } else if (!s.ok()) {
    *result = FromRocksDb(s, absl::StrCat("get from column ", ColumnName(column)));
  } else {
    *result = std::move(value);
  }
  return true;
}

absl::Status RocksDbEngine::Write(const WriteBatch& batch, const WriteOptions& options) {
  // Room for the payload plus per-record framing (type, family id, two varint lengths).
  rocksdb::WriteBatch rocks_batch(batch.ApproximateBytes() + batch.ops().size() * 12 + 16);
  for (const WriteBatch::Op& op : batch.ops()) {
    if (static_cast<size_t>(op.column) >= kNumColumns) {
      return absl::InvalidArgumentError("write batch names an unknown column");
    }
    rocksdb::Status s =
        op.type == WriteBatch::OpType::kPut
            ? rocks_batch.Put(impl_->Family(op.column), ToSlice(op.key), ToSlice(op.value))
            : rocks_batch.Delete(impl_->Family(op.column), ToSlice(op.key));
    if (!s.ok()) return FromRocksDb(s, "building write batch");
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = options.sync;
  rocksdb::Status s = impl_->db->Write(write_options, &rocks_batch);
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("write to ", impl_->dir));
  return absl::OkStatus();
}

std::unique_ptr<Iterator> RocksDbEngine::NewIterator(Column column) {
  const rocksdb::Snapshot* snapshot = impl_->db->GetSnapshot();
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  // Iterators walk in key order in every column, whatever its prefix extractor (with a hash
  // memtable this copies the memtable into order: only the idempotency column has one, and only
  // its legacy sweep iterates).
  read_options.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(read_options, impl_->Family(column)));
  return std::make_unique<RocksDbIterator>(impl_->db.get(), snapshot, std::move(it));
}

uint64_t RocksDbEngine::ApproximateCount(Column column) {
  uint64_t count = 0;
  if (!impl_->db->GetIntProperty(impl_->Family(column), "rocksdb.estimate-num-keys", &count)) {
    return 0;
  }
  return count;
}

absl::StatusOr<uint64_t> RocksDbEngine::RemoveExpired(Column column, int64_t now_micros) {
  if (!ColumnHoldsExpiringValues(column)) return Engine::RemoveExpired(column, now_micros);
  impl_->expiry_filter.SetHorizon(now_micros);
  return impl_->expiry_filter.TakeDropped();
}

absl::Status RocksDbEngine::CompactColumn(Column column) {
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  rocksdb::Status s = impl_->db->CompactRange(options, impl_->Family(column), nullptr, nullptr);
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("compacting column ", ColumnName(column)));
  return absl::OkStatus();
}

}  // namespace kv

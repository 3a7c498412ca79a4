// RocksDbEngine specifics (durability across reopen, directory errors) and MemoryEngine's crash
// model. Behaviour common to every engine is in engine_conformance_test.cc.
#include "storage/rocksdb_engine.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "storage/expiring_value.h"
#include "storage/memory_engine.h"
#include "tests/test_util.h"

namespace kv {
namespace {

class RocksDbEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kv_rocksdb_engine_XXXXXX";
    const char* made = mkdtemp(tmpl);
    ASSERT_NE(made, nullptr);
    root_ = made;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::permissions(root_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(root_, ec);
  }

  std::string root_;
};

absl::Status PutOne(Engine& engine, Column column, const std::string& key, const std::string& value,
                    bool sync = false) {
  WriteBatch batch;
  batch.Put(column, key, value);
  return engine.Write(batch, WriteOptions{sync});
}

// A failure of the storage itself is answered UNAVAILABLE (retried, by clients and by peers'
// outboxes), keeping the engine's code and message; other statuses pass unchanged.
TEST(StorageFailureTest, IsAnsweredUnavailableAndOtherStatusesPassUnchanged) {
  const absl::Status failed = MarkStorageFailure(absl::DataLossError("bad block checksum"));
  const absl::Status answer = StorageFailureAsUnavailable(failed, "send it again");
  EXPECT_TRUE(absl::IsUnavailable(answer)) << answer;
  EXPECT_EQ(answer.message(),
            "this node could not write to its storage (DATA_LOSS: bad block checksum); send it "
            "again");
  const absl::Status refusal = absl::DataLossError("corrupt sibling-set record");
  EXPECT_EQ(StorageFailureAsUnavailable(refusal, "x"), refusal);
  EXPECT_TRUE(StorageFailureAsUnavailable(absl::OkStatus(), "x").ok());
  EXPECT_FALSE(IsStorageFailure(MarkStorageFailure(absl::NotFoundError("absent"))));
}

TEST_F(RocksDbEngineTest, ReopenKeepsDataInEveryColumn) {
  const std::string dir = root_ + "/db";
  {
    auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
    ASSERT_TRUE(engine.ok()) << engine.status();
    for (int i = 0; i < kNumColumns; ++i) {
      ASSERT_TRUE(PutOne(**engine, static_cast<Column>(i), "k", absl::StrCat("v", i)).ok());
    }
    ASSERT_TRUE(PutOne(**engine, Column::kData, "synced", "s", /*sync=*/true).ok());
  }
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (int i = 0; i < kNumColumns; ++i) {
    auto value = (*engine)->Get(static_cast<Column>(i), "k");
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ(*value, absl::StrCat("v", i));
  }
  EXPECT_EQ((*engine)->Get(Column::kData, "synced").value(), "s");
}

// ReadWithoutOpening reads a closed database (its write-ahead log included: the values below were
// never flushed) and leaves every file of the directory as it was.
TEST_F(RocksDbEngineTest, ReadWithoutOpeningReadsAndChangesNothing) {
  const std::string dir = root_ + "/db";
  const std::vector<std::string> keys = {"owner", "other", "name"};
  EXPECT_TRUE(
      absl::IsNotFound(RocksDbEngine::ReadWithoutOpening(dir, Column::kMeta, keys).status()));
  {
    auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_TRUE(PutOne(**engine, Column::kMeta, "owner", "n1").ok());
    ASSERT_TRUE(PutOne(**engine, Column::kMeta, "name", "kv").ok());
    ASSERT_TRUE(PutOne(**engine, Column::kData, "other", "in another column").ok());
  }
  const auto before = testing::SnapshotDirectory(dir);
  const std::vector<std::optional<std::string>> expected = {"n1", std::nullopt, "kv"};
  absl::StatusOr<std::vector<std::optional<std::string>>> values =
      RocksDbEngine::ReadWithoutOpening(dir, Column::kMeta, keys);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, expected);
  EXPECT_TRUE(testing::SnapshotDirectory(dir) == before);
  // While an engine has it open (and holds its lock) too.
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  values = RocksDbEngine::ReadWithoutOpening(dir, Column::kMeta, keys);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, expected);
}

// The idempotency column lives in a hash-bucketed memtable: point lookups and key-ordered scans
// must still see one column across the memtable, table files and a reopen (WAL replay).
TEST_F(RocksDbEngineTest, HashedColumnKeepsPointLookupsAndOrderAcrossFilesAndReopen) {
  const std::string dir = root_ + "/db";
  std::vector<std::string> keys;
  for (int i = 0; i < 300; ++i) keys.push_back(absl::StrCat("t/", (i * 7919) % 1000));
  {
    auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
    ASSERT_TRUE(engine.ok()) << engine.status();
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_TRUE(PutOne(**engine, Column::kIdempotency, keys[i], "v" + keys[i]).ok());
      if (i == 150) {
        ASSERT_TRUE((*engine)->CompactColumn(Column::kIdempotency).ok());
      }
    }
    ASSERT_TRUE(PutOne(**engine, Column::kIdempotency, keys[0], "rewritten").ok());
  }
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (size_t i = 1; i < keys.size(); ++i) {
    EXPECT_EQ((*engine)->Get(Column::kIdempotency, keys[i]).value_or("missing"), "v" + keys[i]);
  }
  EXPECT_EQ((*engine)->Get(Column::kIdempotency, keys[0]).value_or("missing"), "rewritten");
  EXPECT_TRUE(absl::IsNotFound((*engine)->Get(Column::kIdempotency, "t/absent").status()));
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  auto it = (*engine)->NewIterator(Column::kIdempotency);
  std::vector<std::string> seen;
  for (it->SeekToFirst(); it->Valid(); it->Next()) seen.emplace_back(it->key());
  EXPECT_EQ(seen, sorted);
  it->Seek("t/5");
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), *std::lower_bound(sorted.begin(), sorted.end(), std::string("t/5")));
}

TEST_F(RocksDbEngineTest, GetFromMemoryDeclinesWhatNeedsAFileRead) {
  const std::string dir = root_ + "/db";
  {
    auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_TRUE(PutOne(**engine, Column::kData, "on-disk", "d").ok());
    ASSERT_TRUE((*engine)->CompactColumn(Column::kData).ok());  // flushed to a table file
  }
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_TRUE(PutOne(**engine, Column::kData, "in-memtable", "m").ok());
  absl::StatusOr<std::string> result = absl::UnknownError("untouched");
  ASSERT_TRUE((*engine)->GetFromMemory(Column::kData, "in-memtable", &result));
  EXPECT_EQ(result.value(), "m");
  // The table's data block has not been read since the reopen: answering needs I/O.
  result = absl::UnknownError("untouched");
  EXPECT_FALSE((*engine)->GetFromMemory(Column::kData, "on-disk", &result));
  EXPECT_EQ(result.status().message(), "untouched");
  // A regular Get reads the block into the cache; from then on memory answers.
  EXPECT_EQ((*engine)->Get(Column::kData, "on-disk").value(), "d");
  ASSERT_TRUE((*engine)->GetFromMemory(Column::kData, "on-disk", &result));
  EXPECT_EQ(result.value(), "d");
}

// Bytes this process has read through read(2)/pread(2) so far (page-cache hits included);
// nullopt where /proc/self/io is not available.
std::optional<uint64_t> ProcessBytesRead() {
  std::ifstream io("/proc/self/io");
  std::string field;
  uint64_t value = 0;
  while (io >> field >> value) {
    if (field == "rchar:") return value;
  }
  return std::nullopt;
}

// Bytes read per lookup of `lookups` keys absent from the idempotency column, spread over its
// key range (inside it, so that only filters can tell they are not there).
std::optional<uint64_t> BytesReadPerMissingToken(Engine& engine, int keys, int lookups) {
  const std::optional<uint64_t> before = ProcessBytesRead();
  if (!before.has_value()) return std::nullopt;
  for (int i = 0; i < lookups; ++i) {
    const std::string absent = absl::StrCat("token/", (i * 104729) % keys, "-absent");
    EXPECT_TRUE(absl::IsNotFound(engine.Get(Column::kIdempotency, absent).status()));
  }
  return (*ProcessBytesRead() - *before) / lookups;
}

// Writes token/0 .. token/<keys - 1> to the idempotency column in a scattered order, 1,000 per
// batch, each batch with one data-column key too (key/<first index of the batch>).
void WriteTokens(Engine& engine, int keys) {
  for (int i = 0; i < keys; i += 1000) {
    WriteBatch batch;
    for (int j = i; j < i + 1000 && j < keys; ++j) {
      batch.Put(Column::kIdempotency, absl::StrCat("token/", j * 7919 % keys), "record");
    }
    batch.Put(Column::kData, absl::StrCat("key/", i), "value");
    ASSERT_TRUE(engine.Write(batch, WriteOptions{}).ok());
  }
}

// A lookup that misses (most token lookups do) must read about one filter partition of a table
// (4 KiB), not the table's whole filter. A whole-table filter larger than a block-cache shard is
// evicted as soon as it is released, so every lookup read and checksummed all of it again: after
// about a million tokened writes that took two thirds of a node's CPU. Here a 64 KiB cache (one
// shard) and a table whose whole filter is about 125 KiB: 125,132 bytes per lookup with whole
// filters, about 10,100 with partitions the builder had cut too rarely (about 31 KB), about
// 3,400 now.
TEST_F(RocksDbEngineTest, ALookupReadsAFilterPartitionNotTheTablesWholeFilter) {
  RocksDbOptions options;
  options.block_cache_bytes = 64 << 10;
  auto engine = RocksDbEngine::Open(root_ + "/db", options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  constexpr int kKeys = 100000;
  WriteTokens(**engine, kKeys);
  ASSERT_TRUE((*engine)->CompactColumn(Column::kIdempotency).ok());
  ASSERT_EQ((*engine)->Get(Column::kIdempotency, "token/42").value_or("missing"), "record");

  const std::optional<uint64_t> per_lookup = BytesReadPerMissingToken(**engine, kKeys, 2000);
  if (!per_lookup.has_value()) GTEST_SKIP() << "no /proc/self/io";
  EXPECT_LT(*per_lookup, 8u << 10) << "bytes read per missing key";
}

// A data directory written before partitioned filters: its tables are rewritten after Open, in
// the background, and lookups then read a partition. Closing during the rewrite stops it and
// loses nothing.
TEST_F(RocksDbEngineTest, TablesWrittenWithWholeFiltersAreRewrittenAfterOpen) {
  const std::string dir = root_ + "/db";
  constexpr int kKeys = 100000;
  RocksDbOptions earlier;
  earlier.block_cache_bytes = 64 << 10;
  earlier.partitioned_filters = false;
  {
    auto engine = RocksDbEngine::Open(dir, earlier);
    ASSERT_TRUE(engine.ok()) << engine.status();
    WriteTokens(**engine, kKeys);
    ASSERT_TRUE((*engine)->CompactColumn(Column::kIdempotency).ok());
    ASSERT_TRUE((*engine)->CompactColumn(Column::kData).ok());
    EXPECT_GE((*engine)->WholeFilterTables(), 2u);
    EXPECT_EQ((*engine)->WholeFilterTablesAtOpen(), 0u);  // nothing rewritten with them off
  }
  RocksDbOptions current;
  current.block_cache_bytes = 64 << 10;
  {
    // Closed at once: whatever the rewrite had done, everything is there at the next open.
    auto first = RocksDbEngine::Open(dir, current);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_GE((*first)->WholeFilterTablesAtOpen(), 2u);
  }
  auto engine = RocksDbEngine::Open(dir, current);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((*engine)->WholeFilterTables() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ((*engine)->WholeFilterTables(), 0u);
  for (int i = 0; i < kKeys; i += 997) {
    EXPECT_EQ((*engine)->Get(Column::kIdempotency, absl::StrCat("token/", i)).value_or("missing"),
              "record");
  }
  EXPECT_EQ((*engine)->Get(Column::kData, "key/99000").value_or("missing"), "value");

  const std::optional<uint64_t> per_lookup = BytesReadPerMissingToken(**engine, kKeys, 2000);
  if (!per_lookup.has_value()) GTEST_SKIP() << "no /proc/self/io";
  EXPECT_LT(*per_lookup, 8u << 10) << "bytes read per missing key";
}

TEST_F(RocksDbEngineTest, SecondOpenFailsWithLockMessage) {
  const std::string dir = root_ + "/db";
  auto first = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "locked")) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), dir)) << second.status();
  // The first engine is unaffected.
  EXPECT_TRUE(PutOne(**first, Column::kData, "k", "v").ok());
}

enum class LockKind { kFcntl, kFlock };

// Runs `while_held` while a forked child, standing for another process, holds `path` locked the
// way `kind` says (fcntl as RocksDB locks LOCK, flock as the engine locks kvnode.lock); the lock
// goes with the child. False, without running it, if the child could not take the lock.
bool WhileAnotherProcessHolds(const std::string& path, LockKind kind,
                              const std::function<void()>& while_held) {
  int locked[2], release[2];
  if (pipe(locked) != 0 || pipe(release) != 0) return false;
  const pid_t child = fork();
  if (child < 0) return false;
  if (child == 0) {  // only async-signal-safe calls from here on
    close(locked[0]);
    close(release[1]);
    const int fd = open(path.c_str(), O_RDWR);
    bool taken = false;
    if (fd >= 0 && kind == LockKind::kFlock) {
      taken = flock(fd, LOCK_EX | LOCK_NB) == 0;
    } else if (fd >= 0) {
      struct flock lock = {};
      lock.l_type = F_WRLCK;
      lock.l_whence = SEEK_SET;
      taken = fcntl(fd, F_SETLK, &lock) == 0;
    }
    const char ok = taken ? 1 : 0;
    if (write(locked[1], &ok, 1) != 1) _exit(1);
    char byte;
    while (read(release[0], &byte, 1) > 0) {
    }
    _exit(0);
  }
  close(locked[1]);
  close(release[0]);
  char ok = 0;
  const bool answered = read(locked[0], &ok, 1) == 1;
  close(locked[0]);
  if (answered && ok == 1) while_held();
  close(release[1]);
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  return answered && ok == 1;
}

void ExpectLockedByAnotherProcess(const absl::StatusOr<std::unique_ptr<RocksDbEngine>>& engine) {
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
  EXPECT_TRUE(absl::StrContains(engine.status().message(), "locked by another process"))
      << engine.status();
}

// Another process holds the directory's RocksDB LOCK file.
TEST_F(RocksDbEngineTest, OpenFailsWhileAnotherProcessHoldsTheLock) {
  const std::string dir = root_ + "/db";
  { ASSERT_TRUE(RocksDbEngine::Open(dir, RocksDbOptions()).ok()); }
  absl::StatusOr<std::unique_ptr<RocksDbEngine>> engine = absl::InternalError("not opened");
  ASSERT_TRUE(
      WhileAnotherProcessHolds(dir + "/LOCK", LockKind::kFcntl,
                               [&] { engine = RocksDbEngine::Open(dir, RocksDbOptions()); }))
      << "the child could not lock " << dir << "/LOCK";
  ExpectLockedByAnotherProcess(engine);
  EXPECT_TRUE(RocksDbEngine::Open(dir, RocksDbOptions()).ok());  // released with the child
}

// The files of `dir` whose name starts with "LOG.old" (RocksDB's rotated info logs).
int RotatedLogs(const std::string& dir) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    n += absl::StartsWith(entry.path().filename().string(), "LOG.old") ? 1 : 0;
  }
  return n;
}

// A failed open of a directory in use leaves the holder's files alone: RocksDB would rotate the
// info log (LOG -> LOG.old.<time>) before finding its LOCK held, so the running node would go on
// logging to a renamed file.
TEST_F(RocksDbEngineTest, AFailedOpenOfALockedDirectoryLeavesTheHoldersLogAlone) {
  const std::string dir = root_ + "/db";
  auto first = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  const int rotated = RotatedLogs(dir);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(RocksDbEngine::Open(dir, RocksDbOptions()).ok());
  EXPECT_EQ(RotatedLogs(dir), rotated);
  first->reset();

  // Another process holds kvnode.lock.
  absl::StatusOr<std::unique_ptr<RocksDbEngine>> engine = absl::InternalError("not opened");
  ASSERT_TRUE(
      WhileAnotherProcessHolds(dir + "/kvnode.lock", LockKind::kFlock,
                               [&] { engine = RocksDbEngine::Open(dir, RocksDbOptions()); }))
      << "the child could not lock " << dir << "/kvnode.lock";
  ExpectLockedByAnotherProcess(engine);
  EXPECT_EQ(RotatedLogs(dir), rotated);
  EXPECT_TRUE(RocksDbEngine::Open(dir, RocksDbOptions()).ok());  // released with the child
}

TEST_F(RocksDbEngineTest, LockReleasedOnClose) {
  const std::string dir = root_ + "/db";
  { ASSERT_TRUE(RocksDbEngine::Open(dir, RocksDbOptions()).ok()); }
  EXPECT_TRUE(RocksDbEngine::Open(dir, RocksDbOptions()).ok());
}

TEST_F(RocksDbEngineTest, DirectoryUnderRegularFileFailsCleanly) {
  const std::string file = root_ + "/plain-file";
  std::ofstream(file) << "not a directory";
  const std::string dir = file + "/db";
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
  EXPECT_TRUE(absl::StrContains(engine.status().message(), dir)) << engine.status();
}

TEST_F(RocksDbEngineTest, DataDirectoryThatIsAFileFailsCleanly) {
  const std::string file = root_ + "/plain-file";
  std::ofstream(file) << "not a directory";
  auto engine = RocksDbEngine::Open(file, RocksDbOptions());
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
  EXPECT_TRUE(absl::StrContains(engine.status().message(), file)) << engine.status();
}

TEST_F(RocksDbEngineTest, UnwritableDirectoryIsPermissionDenied) {
  if (geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  ASSERT_EQ(chmod(root_.c_str(), 0500), 0);
  const std::string dir = root_ + "/db";
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kPermissionDenied) << engine.status();
  EXPECT_TRUE(absl::StrContains(engine.status().message(), dir)) << engine.status();
}

TEST(MemoryEngineTest, SimulateCrashDropsUnsyncedBatchesOnly) {
  MemoryEngine engine;
  ASSERT_TRUE(PutOne(engine, Column::kData, "a", "synced-1", /*sync=*/true).ok());
  ASSERT_TRUE(PutOne(engine, Column::kData, "b", "unsynced").ok());
  ASSERT_TRUE(PutOne(engine, Column::kData, "a", "unsynced-overwrite").ok());
  EXPECT_EQ(engine.Get(Column::kData, "a").value(), "unsynced-overwrite");
  engine.SimulateCrash();
  EXPECT_EQ(engine.Get(Column::kData, "a").value(), "synced-1");
  EXPECT_EQ(engine.Get(Column::kData, "b").status().code(), absl::StatusCode::kNotFound);
}

std::string Expiring(int64_t expiry_micros, absl::string_view payload) {
  std::string value;
  PutExpiringValueHeader(&value, expiry_micros);
  value.append(payload.data(), payload.size());
  return value;
}

TEST_F(RocksDbEngineTest, CompactionDropsValuesExpiredBeforeTheHorizon) {
  const std::string dir = root_ + "/db";
  {
    auto opened = RocksDbEngine::Open(dir, RocksDbOptions());
    ASSERT_TRUE(opened.ok()) << opened.status();
    RocksDbEngine& engine = **opened;
    ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "expired", Expiring(100, "a")).ok());
    ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "valid", Expiring(300, "b")).ok());
    ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "untagged", "c").ok());
    ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "rewritten", Expiring(100, "old")).ok());
    ASSERT_TRUE(PutOne(engine, Column::kData, "data", Expiring(100, "d")).ok());
    // No horizon yet: a compaction keeps everything.
    ASSERT_TRUE(engine.CompactColumn(Column::kIdempotency).ok());
    EXPECT_TRUE(engine.Get(Column::kIdempotency, "expired").ok());
    ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "rewritten", Expiring(300, "new")).ok());

    absl::StatusOr<uint64_t> dropped = engine.RemoveExpired(Column::kIdempotency, 200);
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(*dropped, 0u);  // nothing compacted since
    ASSERT_TRUE(engine.CompactColumn(Column::kIdempotency).ok());
    ASSERT_TRUE(engine.CompactColumn(Column::kData).ok());
    EXPECT_TRUE(absl::IsNotFound(engine.Get(Column::kIdempotency, "expired").status()));
    EXPECT_EQ(engine.Get(Column::kIdempotency, "valid").value(), Expiring(300, "b"));
    EXPECT_EQ(engine.Get(Column::kIdempotency, "untagged").value(), "c");
    EXPECT_EQ(engine.Get(Column::kIdempotency, "rewritten").value(), Expiring(300, "new"));
    EXPECT_EQ(engine.Get(Column::kData, "data").value(), Expiring(100, "d"));
    // The wall clock stepped back (to 150): the horizon follows it, so a value written since,
    // expiring after 150 but before the old horizon (200), is kept while it is valid.
    dropped = engine.RemoveExpired(Column::kIdempotency, 150);
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(*dropped, 1u);  // "expired", by the compaction above
    ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "after-the-step", Expiring(175, "e")).ok());
    ASSERT_TRUE(engine.CompactColumn(Column::kIdempotency).ok());
    EXPECT_EQ(engine.Get(Column::kIdempotency, "after-the-step").value(), Expiring(175, "e"));
    dropped = engine.RemoveExpired(Column::kIdempotency, 180);
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(*dropped, 0u);
    ASSERT_TRUE(engine.CompactColumn(Column::kIdempotency).ok());
    EXPECT_TRUE(absl::IsNotFound(engine.Get(Column::kIdempotency, "after-the-step").status()));
  }
  auto engine = RocksDbEngine::Open(dir, RocksDbOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_TRUE(absl::IsNotFound((*engine)->Get(Column::kIdempotency, "expired").status()));
  EXPECT_EQ((*engine)->Get(Column::kIdempotency, "rewritten").value(), Expiring(300, "new"));
}

// Bytes in the directory's write-ahead log files.
uint64_t WalBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().extension() != ".log") continue;
    // A log file a finished flush deletes meanwhile counts for nothing.
    const uintmax_t size = std::filesystem::file_size(entry.path(), error);
    if (!error) total += size;
  }
  return total;
}

// A column written once (as the node's metadata is) must not keep every later log file alive.
TEST_F(RocksDbEngineTest, WriteAheadLogStaysBoundedWhileAColumnIsIdle) {
  const std::string dir = root_ + "/db";
  RocksDbOptions options;
  options.write_buffer_bytes = 1 << 20;  // default max_wal_bytes: 4 MB
  constexpr uint64_t kWritten = 20 << 20;
  constexpr uint64_t kBound = 10 << 20;  // 4 MB, a live log file, and flushes in progress
  std::string last_key;
  {
    auto engine = RocksDbEngine::Open(dir, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_TRUE(PutOne(**engine, Column::kMeta, "epoch", "1").ok());
    const std::string value(1024, 'v');
    for (uint64_t i = 0; i * value.size() < kWritten; i += 16) {
      WriteBatch batch;
      for (uint64_t j = i; j < i + 16; ++j) {
        last_key = absl::StrCat("key", j);
        batch.Put(Column::kData, last_key, value);
      }
      ASSERT_TRUE((*engine)->Write(batch, WriteOptions()).ok());
    }
    // Flushes run in the background; the files they free are deleted when they finish.
    for (int i = 0; i < 100 && WalBytes(dir) > kBound; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_LE(WalBytes(dir), kBound) << "of " << kWritten << " bytes written";
  }
  auto engine = RocksDbEngine::Open(dir, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->Get(Column::kMeta, "epoch").value(), "1");
  EXPECT_TRUE((*engine)->Get(Column::kData, last_key).ok());
  EXPECT_TRUE((*engine)->Get(Column::kData, "key0").ok());
}

TEST(MemoryEngineTest, RemoveExpiredDeletesAtOnceAndDurably) {
  MemoryEngine engine;
  ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "expired", Expiring(100, "a"), true).ok());
  ASSERT_TRUE(PutOne(engine, Column::kIdempotency, "valid", Expiring(300, "b"), true).ok());
  absl::StatusOr<uint64_t> removed = engine.RemoveExpired(Column::kIdempotency, 200);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 1u);
  engine.SimulateCrash();
  EXPECT_TRUE(absl::IsNotFound(engine.Get(Column::kIdempotency, "expired").status()));
  EXPECT_TRUE(engine.Get(Column::kIdempotency, "valid").ok());
}

TEST(MemoryEngineTest, SyncedBatchMakesEarlierBatchesDurable) {
  MemoryEngine engine;
  ASSERT_TRUE(PutOne(engine, Column::kData, "a", "1").ok());
  ASSERT_TRUE(PutOne(engine, Column::kMeta, "b", "2", /*sync=*/true).ok());
  ASSERT_TRUE(PutOne(engine, Column::kData, "c", "3").ok());
  engine.SimulateCrash();
  EXPECT_EQ(engine.Get(Column::kData, "a").value(), "1");
  EXPECT_EQ(engine.Get(Column::kMeta, "b").value(), "2");
  EXPECT_FALSE(engine.Get(Column::kData, "c").ok());
}

TEST(MemoryEngineTest, SyncAllAndDeletesSurviveCrash) {
  MemoryEngine engine;
  ASSERT_TRUE(PutOne(engine, Column::kData, "a", "1", /*sync=*/true).ok());
  WriteBatch del;
  del.Delete(Column::kData, "a");
  ASSERT_TRUE(engine.Write(del, WriteOptions()).ok());
  engine.SimulateCrash();
  EXPECT_TRUE(engine.Get(Column::kData, "a").ok());  // the unsynced delete was lost
  ASSERT_TRUE(engine.Write(del, WriteOptions()).ok());
  engine.SyncAll();
  engine.SimulateCrash();
  EXPECT_FALSE(engine.Get(Column::kData, "a").ok());
}

}  // namespace
}  // namespace kv

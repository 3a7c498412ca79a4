// One suite, run against every Engine: MemoryEngine and RocksDbEngine (on a temporary
// directory).
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storage/engine.h"
#include "storage/expiring_value.h"
#include "storage/memory_engine.h"
#include "storage/rocksdb_engine.h"

namespace kv {
namespace {

struct MemoryFactory {
  std::unique_ptr<Engine> Create() { return std::make_unique<MemoryEngine>(); }
};

struct RocksDbFactory {
  std::string dir;
  std::unique_ptr<Engine> Create() {
    char tmpl[] = "/tmp/kv_engine_conformance_XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (made == nullptr) return nullptr;
    dir = made;
    auto engine = RocksDbEngine::Open(dir + "/db", RocksDbOptions());
    if (!engine.ok()) return nullptr;
    return std::move(engine).value();
  }
  ~RocksDbFactory() {
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
};

template <typename Factory>
class EngineConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = factory_.Create();
    ASSERT_NE(engine_, nullptr) << "could not create the engine";
  }
  void TearDown() override { engine_.reset(); }  // before the factory removes its directory

  void Put(Column column, const std::string& key, const std::string& value) {
    WriteBatch batch;
    batch.Put(column, key, value);
    ASSERT_TRUE(engine_->Write(batch, WriteOptions()).ok());
  }

  void CheckIteratorOrderSeekAndSnapshot(Column column);

  std::vector<std::pair<std::string, std::string>> Scan(Iterator* it) {
    std::vector<std::pair<std::string, std::string>> out;
    for (; it->Valid(); it->Next()) out.emplace_back(it->key(), it->value());
    EXPECT_TRUE(it->status().ok()) << it->status();
    return out;
  }

  Factory factory_;
  std::unique_ptr<Engine> engine_;
};

using Factories = ::testing::Types<MemoryFactory, RocksDbFactory>;
class FactoryNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, MemoryFactory> ? "Memory" : "RocksDb";
  }
};
TYPED_TEST_SUITE(EngineConformanceTest, Factories, FactoryNames);

TYPED_TEST(EngineConformanceTest, GetPutDelete) {
  Engine& engine = *this->engine_;
  EXPECT_EQ(engine.Get(Column::kData, "k").status().code(), absl::StatusCode::kNotFound);
  this->Put(Column::kData, "k", "v1");
  EXPECT_EQ(engine.Get(Column::kData, "k").value(), "v1");
  this->Put(Column::kData, "k", "v2");
  EXPECT_EQ(engine.Get(Column::kData, "k").value(), "v2");
  std::string binary("a\0b\xff", 4);
  this->Put(Column::kData, binary, binary);
  EXPECT_EQ(engine.Get(Column::kData, binary).value(), binary);
  this->Put(Column::kData, "empty", "");
  EXPECT_EQ(engine.Get(Column::kData, "empty").value(), "");
  WriteBatch del;
  del.Delete(Column::kData, "k");
  del.Delete(Column::kData, "never-existed");
  ASSERT_TRUE(engine.Write(del, WriteOptions{/*sync=*/true}).ok());
  EXPECT_EQ(engine.Get(Column::kData, "k").status().code(), absl::StatusCode::kNotFound);
}

TYPED_TEST(EngineConformanceTest, GetFromMemoryAgreesWithGetForRecentWrites) {
  Engine& engine = *this->engine_;
  this->Put(Column::kData, "k", "v");
  absl::StatusOr<std::string> result;
  // Both engines hold a just-written value in memory (RocksDB: in the memtable).
  ASSERT_TRUE(engine.GetFromMemory(Column::kData, "k", &result));
  EXPECT_EQ(result.value(), "v");
  ASSERT_TRUE(engine.GetFromMemory(Column::kData, "absent", &result));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
}

TYPED_TEST(EngineConformanceTest, ColumnsAreIndependent) {
  Engine& engine = *this->engine_;
  for (int i = 0; i < kNumColumns; ++i) {
    this->Put(static_cast<Column>(i), "same-key", absl::StrCat("value-", i));
  }
  for (int i = 0; i < kNumColumns; ++i) {
    EXPECT_EQ(engine.Get(static_cast<Column>(i), "same-key").value(), absl::StrCat("value-", i));
  }
  WriteBatch del;
  del.Delete(Column::kOutbox, "same-key");
  ASSERT_TRUE(engine.Write(del, WriteOptions()).ok());
  EXPECT_EQ(engine.Get(Column::kOutbox, "same-key").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(engine.Get(Column::kData, "same-key").ok());
  EXPECT_TRUE(engine.Get(Column::kMeta, "same-key").ok());
  this->Put(Column::kMeta, "only-meta", "m");
  auto it = engine.NewIterator(Column::kIdempotency);
  it->SeekToFirst();
  auto rows = this->Scan(it.get());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].first, "same-key");
}

TYPED_TEST(EngineConformanceTest, BatchIsOrderedAndSpansColumns) {
  Engine& engine = *this->engine_;
  this->Put(Column::kOutbox, "gone", "x");
  WriteBatch batch;
  batch.Put(Column::kData, "k", "first");
  batch.Put(Column::kData, "k", "second");  // later ops win
  batch.Put(Column::kIdempotency, "tok", "result");
  batch.Delete(Column::kOutbox, "gone");
  batch.Put(Column::kMeta, "epoch", "7");
  EXPECT_EQ(batch.ops().size(), 5u);
  EXPECT_GT(batch.ApproximateBytes(), 0u);
  ASSERT_TRUE(engine.Write(batch, WriteOptions{true}).ok());
  EXPECT_EQ(engine.Get(Column::kData, "k").value(), "second");
  EXPECT_EQ(engine.Get(Column::kIdempotency, "tok").value(), "result");
  EXPECT_EQ(engine.Get(Column::kOutbox, "gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine.Get(Column::kMeta, "epoch").value(), "7");
  batch.Clear();
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(batch.ApproximateBytes(), 0u);
  EXPECT_TRUE(engine.Write(batch, WriteOptions()).ok());
}

std::string Expiring(int64_t expiry_micros, absl::string_view payload) {
  std::string value;
  PutExpiringValueHeader(&value, expiry_micros);
  value.append(payload.data(), payload.size());
  return value;
}

// What every engine promises about expiring values: only expired, tagged values of an expiring
// column may go; RemoveExpired is refused for other columns. (When they go is engine-specific.)
TYPED_TEST(EngineConformanceTest, RemoveExpiredKeepsEverythingStillValid) {
  Engine& engine = *this->engine_;
  this->Put(Column::kIdempotency, "expired", Expiring(100, "a"));
  this->Put(Column::kIdempotency, "valid", Expiring(300, "b"));
  this->Put(Column::kIdempotency, "untagged", "c");
  this->Put(Column::kData, "data", Expiring(100, "d"));
  absl::StatusOr<uint64_t> removed = engine.RemoveExpired(Column::kIdempotency, 200);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_LE(*removed, 1u);
  absl::StatusOr<std::string> expired = engine.Get(Column::kIdempotency, "expired");
  EXPECT_TRUE(absl::IsNotFound(expired.status()) || *expired == Expiring(100, "a"));
  EXPECT_EQ(engine.Get(Column::kIdempotency, "valid").value(), Expiring(300, "b"));
  EXPECT_EQ(engine.Get(Column::kIdempotency, "untagged").value(), "c");
  EXPECT_EQ(engine.Get(Column::kData, "data").value(), Expiring(100, "d"));
  EXPECT_TRUE(absl::IsInvalidArgument(engine.RemoveExpired(Column::kData, 200).status()));
}

// An iterator created before a batch sees none of it; one created after sees all of it, in every
// column the batch touched.
TYPED_TEST(EngineConformanceTest, BatchIsAtomicForReaders) {
  Engine& engine = *this->engine_;
  this->Put(Column::kData, "a", "old");
  auto before_data = engine.NewIterator(Column::kData);
  auto before_outbox = engine.NewIterator(Column::kOutbox);
  WriteBatch batch;
  batch.Put(Column::kData, "a", "new");
  batch.Put(Column::kData, "b", "new");
  batch.Put(Column::kOutbox, "o", "new");
  ASSERT_TRUE(engine.Write(batch, WriteOptions()).ok());
  before_data->SeekToFirst();
  EXPECT_EQ(this->Scan(before_data.get()),
            (std::vector<std::pair<std::string, std::string>>{{"a", "old"}}));
  before_outbox->SeekToFirst();
  EXPECT_TRUE(this->Scan(before_outbox.get()).empty());
  auto after = engine.NewIterator(Column::kOutbox);
  after->SeekToFirst();
  EXPECT_EQ(this->Scan(after.get()).size(), 1u);
}

// In every column, whatever its in-memory layout (RocksDB keeps the idempotency column in a
// hash-bucketed memtable).
TYPED_TEST(EngineConformanceTest, IteratorOrderSeekAndSnapshot) {
  for (int c = 0; c < kNumColumns; ++c) {
    SCOPED_TRACE(ColumnName(static_cast<Column>(c)));
    this->CheckIteratorOrderSeekAndSnapshot(static_cast<Column>(c));
  }
}

template <typename Factory>
void EngineConformanceTest<Factory>::CheckIteratorOrderSeekAndSnapshot(Column column) {
  Engine& engine = *this->engine_;
  const Column other = column == Column::kOutbox ? Column::kData : Column::kOutbox;
  const std::vector<std::string> keys = {"b", "a", "ab", std::string("\xff", 1), "", "aa", "c"};
  for (const std::string& key : keys) this->Put(column, key, "v" + key);
  this->Put(other, "zz-other-column", "x");

  auto it = engine.NewIterator(column);
  // Changes after creation are invisible to it.
  this->Put(column, "abc", "late");
  WriteBatch del;
  del.Delete(column, "b");
  ASSERT_TRUE(engine.Write(del, WriteOptions()).ok());

  it->SeekToFirst();
  std::vector<std::string> seen;
  for (const auto& [key, value] : this->Scan(it.get())) {
    EXPECT_EQ(value, "v" + key);
    seen.push_back(key);
  }
  EXPECT_EQ(seen,
            (std::vector<std::string>{"", "a", "aa", "ab", "b", "c", std::string("\xff", 1)}));

  it->Seek("ab");
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), "ab");
  it->Seek("abb");  // between keys: the next one
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), "b");
  it->Seek("d");
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), std::string("\xff", 1));
  it->Seek(std::string("\xff\x00", 2));
  EXPECT_FALSE(it->Valid());

  auto fresh = engine.NewIterator(column);
  fresh->Seek("ab");
  ASSERT_TRUE(fresh->Valid());
  EXPECT_EQ(fresh->key(), "ab");
  fresh->Next();
  ASSERT_TRUE(fresh->Valid());
  EXPECT_EQ(fresh->key(), "abc");
  EXPECT_EQ(fresh->value(), "late");
  fresh->Next();
  ASSERT_TRUE(fresh->Valid());
  EXPECT_EQ(fresh->key(), "c");  // "b" was deleted

  // Leave the columns empty for the next one.
  WriteBatch clear;
  for (const std::string& key : keys) clear.Delete(column, key);
  clear.Delete(column, "abc");
  clear.Delete(other, "zz-other-column");
  ASSERT_TRUE(engine.Write(clear, WriteOptions()).ok());
}

TYPED_TEST(EngineConformanceTest, EmptyColumnIterator) {
  auto it = this->engine_->NewIterator(Column::kMeta);
  it->SeekToFirst();
  EXPECT_FALSE(it->Valid());
  EXPECT_TRUE(it->status().ok());
}

TYPED_TEST(EngineConformanceTest, ApproximateCountIsSane) {
  Engine& engine = *this->engine_;
  EXPECT_EQ(engine.ApproximateCount(Column::kData), 0u);
  WriteBatch batch;
  for (int i = 0; i < 1000; ++i) batch.Put(Column::kData, absl::StrCat("key", i), "v");
  ASSERT_TRUE(engine.Write(batch, WriteOptions()).ok());
  const uint64_t count = engine.ApproximateCount(Column::kData);
  EXPECT_GE(count, 500u);
  EXPECT_LE(count, 2000u);
  EXPECT_LE(engine.ApproximateCount(Column::kOutbox), 10u);
}

}  // namespace
}  // namespace kv

// LocalStore with group commit: WriteAsync, several writes in one engine batch, idempotency
// records in one expiring key (and the old two-key layout still read and swept).
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/idempotency_record.h"
#include "node/local_store.h"
#include "storage/expiring_value.h"
#include "storage/memory_engine.h"

namespace kv {
namespace {

class ManualExecutor : public Executor {
 public:
  void Schedule(std::function<void()> fn) override { pending_.push_back(std::move(fn)); }
  void RunAll() {
    while (!pending_.empty()) {
      std::function<void()> fn = std::move(pending_.front());
      pending_.erase(pending_.begin());
      fn();
    }
  }

 private:
  std::vector<std::function<void()>> pending_;
};

class CountingEngine : public MemoryEngine {
 public:
  absl::Status Write(const WriteBatch& batch, const WriteOptions& options) override {
    if (fail_writes) return absl::InternalError("injected write failure");
    ++writes;
    return MemoryEngine::Write(batch, options);
  }
  bool fail_writes = false;
  int writes = 0;
};

class LocalStoreAsyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalStore::Options options;
    options.commit_executor = &executor_;
    options.wait_clock = &wait_clock_;
    absl::StatusOr<std::unique_ptr<LocalStore>> store =
        LocalStore::Open(&engine_, &clock_, rng_, "n1", options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    engine_.writes = 0;
  }

  // Queues a write; its outcome lands in the returned slot once the executor has run.
  std::shared_ptr<std::optional<absl::StatusOr<WriteOutcome>>> Submit(WriteCommand command) {
    auto slot = std::make_shared<std::optional<absl::StatusOr<WriteOutcome>>>();
    store_->WriteAsync(std::move(command), {},
                       [slot](absl::StatusOr<WriteOutcome> outcome) { *slot = outcome; });
    return slot;
  }

  std::vector<std::pair<std::string, std::string>> IdempotencyColumn() {
    std::vector<std::pair<std::string, std::string>> entries;
    std::unique_ptr<Iterator> it = engine_.NewIterator(Column::kIdempotency);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      entries.emplace_back(std::string(it->key()), std::string(it->value()));
    }
    return entries;
  }

  ManualClock clock_;       // the wall clock: version stamps, idempotency expiry
  ManualClock wait_clock_;  // how long writes wait to be committed
  absl::BitGen rng_;
  CountingEngine engine_;
  ManualExecutor executor_;
  std::unique_ptr<LocalStore> store_;
};

TEST_F(LocalStoreAsyncTest, WriteAsyncCommitsOnTheExecutorInOneBatch) {
  auto first = Submit({"a", false, "1", "", "tok-a"});
  auto second = Submit({"b", false, "2", "", ""});
  EXPECT_FALSE(first->has_value());  // nothing ran on this thread
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("a").status()));
  executor_.RunAll();
  ASSERT_TRUE(first->has_value() && (*first)->ok());
  ASSERT_TRUE(second->has_value() && (*second)->ok());
  EXPECT_EQ(engine_.writes, 1);
  EXPECT_TRUE(store_->ReadRecord("a").ok());
  EXPECT_TRUE(store_->ReadRecord("b").ok());
}

// While the storage is behind (here: the executor that commits has not run), the writes that
// wait hold memory; past Options::max_queued_write_bytes the node refuses more
// (RESOURCE_EXHAUSTED, retried by clients and peers), and takes them again once they are written.
TEST_F(LocalStoreAsyncTest, WritesWaitingToBeCommittedAreBounded) {
  MemoryEngine engine;
  ManualExecutor executor;
  LocalStore::Options options;
  options.commit_executor = &executor;
  options.max_queued_write_bytes = 10 << 10;
  std::unique_ptr<LocalStore> store =
      LocalStore::Open(&engine, &clock_, rng_, "n1", options).value();
  EXPECT_TRUE(store->AdmitWrites().ok());
  int answered = 0;
  int written = 0;
  for (; written < 100 && store->AdmitWrites().ok(); ++written) {
    store->WriteAsync({absl::StrCat("k", written), false, std::string(1000, 'v'), "", ""}, {},
                      [&answered](absl::StatusOr<WriteOutcome> outcome) {
                        EXPECT_TRUE(outcome.ok()) << outcome.status();
                        ++answered;
                      });
  }
  EXPECT_EQ(written, 11);  // 11 KB waiting is past the 10 KiB bound
  EXPECT_GT(store->queued_write_bytes(), size_t{10} << 10);
  const absl::Status refused = store->AdmitWrites();
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("storage is behind"));
  executor.RunAll();
  EXPECT_EQ(answered, written);
  EXPECT_EQ(store->queued_write_bytes(), 0u);
  EXPECT_TRUE(store->AdmitWrites().ok());
}

TEST_F(LocalStoreAsyncTest, InvalidWriteIsAnsweredAtOnce) {
  auto bad = Submit({"", false, "v", "", ""});
  ASSERT_TRUE(bad->has_value());
  EXPECT_TRUE(absl::IsInvalidArgument((*bad)->status()));
}

TEST_F(LocalStoreAsyncTest, SameTokenTwiceInOneGroupIsDeduplicated) {
  auto first = Submit({"k", false, "v", "", "tok-1"});
  auto retry = Submit({"k", false, "v", "", "tok-1"});
  auto other = Submit({"k", false, "different", "", "tok-1"});
  executor_.RunAll();
  ASSERT_TRUE((*first)->ok() && (*retry)->ok());
  EXPECT_FALSE((*first)->value().deduplicated);
  EXPECT_TRUE((*retry)->value().deduplicated);
  EXPECT_EQ((*retry)->value().write_id, (*first)->value().write_id);
  EXPECT_TRUE(absl::IsInvalidArgument((*other)->status())) << (*other)->status();
  absl::StatusOr<SiblingSet> record = store_->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->siblings().size(), 1u);
}

// A write marked as a first attempt records its token without looking it up only while it is
// prepared soon after it was queued: one that waited longer is looked up like any other, so a
// marked reuse of a recorded token is then refused.
TEST_F(LocalStoreAsyncTest, AFirstAttemptThatWaitedLongIsLookedUp) {
  auto recorded = Submit({"k", false, "v", "", "tok-1"});
  executor_.RunAll();
  ASSERT_TRUE((*recorded)->ok());
  for (const absl::Duration wait :
       {absl::ZeroDuration(), LocalStore::kFirstAttemptTrustWindow + absl::Milliseconds(1)}) {
    SCOPED_TRACE(wait);
    WriteCommand reuse{absl::StrCat("other-", absl::FormatDuration(wait)), false, "v", "", "tok-1"};
    reuse.first_attempt = true;
    auto marked = Submit(reuse);
    wait_clock_.Advance(wait);
    executor_.RunAll();
    ASSERT_TRUE(marked->has_value());
    if (wait == absl::ZeroDuration()) {
      EXPECT_TRUE((*marked)->ok()) << (*marked)->status();  // taken at its word
    } else {
      EXPECT_TRUE(absl::IsInvalidArgument((*marked)->status())) << (*marked)->status();
    }
  }
}

// The wait is measured on a clock that never steps: a wall clock that did not move (or stepped
// back) while a first attempt waited does not make it look fresh.
TEST_F(LocalStoreAsyncTest, AFirstAttemptsWaitIsNotMeasuredOnTheWallClock) {
  auto recorded = Submit({"k", false, "v", "", "tok-1"});
  executor_.RunAll();
  ASSERT_TRUE((*recorded)->ok());
  WriteCommand reuse{"other", false, "v", "", "tok-1"};
  reuse.first_attempt = true;
  auto marked = Submit(reuse);
  wait_clock_.Advance(absl::Seconds(1));  // clock_, the wall clock, stays where it was
  executor_.RunAll();
  ASSERT_TRUE(marked->has_value());
  EXPECT_TRUE(absl::IsInvalidArgument((*marked)->status())) << (*marked)->status();
}

TEST_F(LocalStoreAsyncTest, WritesToOneKeyInOneGroupEachMakeAVersion) {
  auto first = Submit({"k", false, "a", "", ""});
  auto second = Submit({"k", false, "b", "", ""});
  executor_.RunAll();
  ASSERT_TRUE((*first)->ok() && (*second)->ok());
  EXPECT_NE((*first)->value().dot, (*second)->value().dot);
  absl::StatusOr<SiblingSet> record = store_->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->LiveSiblings().size(), 2u);  // no context: concurrent siblings
}

TEST_F(LocalStoreAsyncTest, AFailedGroupWriteAcknowledgesNothing) {
  auto first = Submit({"k", false, "v", "", "tok-1"});
  auto second = Submit({"k2", false, "v", "", ""});
  engine_.fail_writes = true;
  executor_.RunAll();
  EXPECT_TRUE(absl::IsInternal((*first)->status()));
  EXPECT_TRUE(absl::IsInternal((*second)->status()));
  engine_.fail_writes = false;
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("k").status()));
  EXPECT_TRUE(IdempotencyColumn().empty());
  // The token was not recorded: the retry is a new write, not a duplicate.
  auto retry = Submit({"k", false, "v", "", "tok-1"});
  executor_.RunAll();
  ASSERT_TRUE((*retry)->ok());
  EXPECT_FALSE((*retry)->value().deduplicated);
}

TEST_F(LocalStoreAsyncTest, WriteFromADoneCallbackDoesNotDeadlock) {
  std::optional<absl::StatusOr<WriteOutcome>> nested;
  store_->WriteAsync({"k", false, "1", "", ""}, {}, [&](absl::StatusOr<WriteOutcome> outcome) {
    ASSERT_TRUE(outcome.ok());
    nested = store_->Write({"k", false, "2", outcome->context, ""});
  });
  executor_.RunAll();
  ASSERT_TRUE(nested.has_value() && nested->ok()) << nested->status();
  absl::StatusOr<SiblingSet> record = store_->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  ASSERT_EQ(record->LiveSiblings().size(), 1u);
  EXPECT_EQ(record->LiveSiblings()[0].value, "2");
}

TEST_F(LocalStoreAsyncTest, TokenRecordIsOneExpiringKey) {
  ASSERT_TRUE(store_->Write({"k", false, "v", "", "tok-1"}).ok());
  auto entries = IdempotencyColumn();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].first, IdempotencyTokenKey("tok-1"));
  int64_t expiry = 0;
  absl::string_view payload;
  ASSERT_TRUE(ParseExpiringValue(entries[0].second, &expiry, &payload));
  EXPECT_EQ(expiry, absl::ToUnixMicros(clock_.Now() + store_->options().idempotency_ttl));
  absl::StatusOr<IdempotencyRecord> record = DecodeIdempotencyRecord(entries[0].second);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->expiry_micros, expiry);
}

// Data directories written before the single-key layout hold format-1 records plus an expiry
// index entry per token.
class LegacyIdempotencyTest : public LocalStoreAsyncTest {
 protected:
  // Writes "k"="v" with `token` as the old layout would have recorded it.
  void WriteLegacy(const std::string& token, const WriteOutcome& outcome) {
    IdempotencyRecord record;
    WriteCommand command{"k", false, "v", "", token};
    record.fingerprint = WriteFingerprint(command);
    record.expiry_micros = absl::ToUnixMicros(clock_.Now() + absl::Hours(24));
    record.write_id = outcome.write_id;
    record.context = outcome.context;
    record.dot = outcome.dot;
    WriteBatch batch;
    batch.Put(Column::kIdempotency, IdempotencyTokenKey(token),
              EncodeIdempotencyRecordFormat1(record));
    batch.Put(Column::kIdempotency, IdempotencyExpiryKey(record.expiry_micros, token), "");
    ASSERT_TRUE(engine_.Write(batch, WriteOptions()).ok());
  }
};

TEST_F(LegacyIdempotencyTest, Format1RecordsStillDeduplicateAndAreSwept) {
  absl::StatusOr<WriteOutcome> first = store_->Write({"k", false, "v", "", ""});
  ASSERT_TRUE(first.ok());
  WriteLegacy("old-tok", *first);
  // A different key, so only the token record (not the sibling) can recognise the retry.
  absl::StatusOr<WriteOutcome> other = store_->Write({"k2", false, "v", "", "old-tok"});
  EXPECT_TRUE(absl::IsInvalidArgument(other.status())) << other.status();
  absl::StatusOr<WriteOutcome> retry = store_->Write({"k", false, "v", "", "old-tok"});
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_EQ(retry->write_id, first->write_id);

  absl::StatusOr<size_t> removed = store_->ExpireIdempotencyRecords();
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 0u);
  clock_.Advance(absl::Hours(25));
  removed = store_->ExpireIdempotencyRecords();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1u);
  EXPECT_TRUE(IdempotencyColumn().empty());
}

TEST_F(LegacyIdempotencyTest, ReusingAnExpiredFormat1TokenReplacesBothEntries) {
  absl::StatusOr<WriteOutcome> first = store_->Write({"k", false, "v", "", ""});
  ASSERT_TRUE(first.ok());
  WriteLegacy("old-tok", *first);
  clock_.Advance(absl::Hours(25));
  absl::StatusOr<WriteOutcome> reused = store_->Write({"k", false, "v2", "", "old-tok"});
  ASSERT_TRUE(reused.ok());
  EXPECT_FALSE(reused->deduplicated);
  auto entries = IdempotencyColumn();
  ASSERT_EQ(entries.size(), 1u);  // the old index entry went with the old record
  EXPECT_EQ(entries[0].first, IdempotencyTokenKey("old-tok"));
  EXPECT_TRUE(store_->Write({"k", false, "v2", "", "old-tok"})->deduplicated);
}

TEST(IdempotencyRecordTest, BothFormatsDecodeAndDamageIsDataLoss) {
  IdempotencyRecord record;
  record.fingerprint = std::string(16, '\x7f');
  record.expiry_micros = 1700000000000000;
  record.write_id = "n1#abc:7/aw";
  record.context = "ctx";
  record.dot = Dot{"n1#abc", 7};
  for (const std::string& encoded :
       {EncodeIdempotencyRecord(record), EncodeIdempotencyRecordFormat1(record)}) {
    absl::StatusOr<IdempotencyRecord> decoded = DecodeIdempotencyRecord(encoded);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->fingerprint, record.fingerprint);
    EXPECT_EQ(decoded->expiry_micros, record.expiry_micros);
    EXPECT_EQ(decoded->write_id, record.write_id);
    EXPECT_EQ(decoded->context, record.context);
    EXPECT_EQ(decoded->dot, record.dot);
    for (size_t cut = 0; cut < encoded.size(); ++cut) {
      EXPECT_TRUE(absl::IsDataLoss(DecodeIdempotencyRecord(encoded.substr(0, cut)).status()))
          << "cut at " << cut;
    }
    EXPECT_TRUE(absl::IsDataLoss(DecodeIdempotencyRecord(encoded + "x").status()));
  }
  std::string unknown = EncodeIdempotencyRecord(record);
  unknown[kExpiringValueHeaderBytes] = 9;  // format byte after the header
  EXPECT_TRUE(absl::IsDataLoss(DecodeIdempotencyRecord(unknown).status()));
}

TEST(IdempotencyRecordTest, ForgottenWritesRoundTripAndDamageIsDataLoss) {
  const ReplacedWrite write{Dot{"n2#abc", 9}, 1700000000000123, 0x1234567890abcdefull};
  const std::string encoded = EncodeForgottenWrite(write, 1700000000000999);
  int64_t expiry = 0;
  absl::StatusOr<ReplacedWrite> decoded = DecodeForgottenWrite(encoded, write.fingerprint, &expiry);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, write);
  EXPECT_EQ(expiry, 1700000000000999);
  for (size_t cut = 0; cut < encoded.size(); ++cut) {
    EXPECT_TRUE(absl::IsDataLoss(DecodeForgottenWrite(encoded.substr(0, cut), 1, &expiry).status()))
        << "cut at " << cut;
  }
  EXPECT_TRUE(absl::IsDataLoss(DecodeForgottenWrite(encoded + "x", 1, &expiry).status()));
  // Keys of different writes or keys differ, and never look like a token's.
  EXPECT_NE(ForgottenWriteKey("k", 1), ForgottenWriteKey("k", 2));
  EXPECT_NE(ForgottenWriteKey("k", 1), ForgottenWriteKey("kk", 1));
  EXPECT_NE(ForgottenWriteKey("k", 1).substr(0, 2), IdempotencyTokenKey("x").substr(0, 2));
}

// A write whose record's memory cuts a replaced write keeps it as one expiring entry, expiring
// when the write's retry window ends.
TEST_F(LocalStoreAsyncTest, ForgottenWriteIsOneExpiringKey) {
  WriteOutcome first;
  for (size_t i = 0; i <= kMaxReplacedWrites + 1; ++i) {
    std::string context;
    if (i > 0) {
      absl::StatusOr<SiblingSet> record = store_->ReadRecord("k");
      ASSERT_TRUE(record.ok());
      context = record->ClientContext().Encode();
    }
    absl::StatusOr<WriteOutcome> outcome =
        store_->Write({"k", false, absl::StrCat("v", i), context, absl::StrCat("tok-", i)});
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    if (i == 0) first = *outcome;
    clock_.Advance(absl::Seconds(1));
  }
  std::vector<std::pair<std::string, std::string>> forgotten;
  for (auto& [key, value] : IdempotencyColumn()) {
    if (key.rfind("f/", 0) == 0) forgotten.emplace_back(key, value);
  }
  ASSERT_EQ(forgotten.size(), 1u);
  const Sibling& sibling = first.record.siblings()[0];
  EXPECT_EQ(forgotten[0].first, ForgottenWriteKey("k", TokenFingerprint(sibling)));
  int64_t expiry = 0;
  absl::StatusOr<ReplacedWrite> decoded =
      DecodeForgottenWrite(forgotten[0].second, TokenFingerprint(sibling), &expiry);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->dot, first.dot);
  EXPECT_EQ(expiry, sibling.timestamp_micros +
                        absl::ToInt64Microseconds(store_->options().idempotency_ttl));
}

// Records of keys `keys` as another replica (n2) wrote them, for merging here.
std::vector<SiblingSet> RecordsFromN2(const std::vector<std::string>& keys, ManualClock* clock) {
  MemoryEngine engine;
  absl::BitGen rng;
  absl::StatusOr<std::unique_ptr<LocalStore>> n2 =
      LocalStore::Open(&engine, clock, rng, "n2", LocalStore::Options());
  EXPECT_TRUE(n2.ok()) << n2.status();
  std::vector<SiblingSet> records;
  for (const std::string& key : keys) {
    absl::StatusOr<WriteOutcome> written = (*n2)->Write({key, false, "from-n2:" + key, "", ""});
    EXPECT_TRUE(written.ok()) << written.status();
    records.push_back(written->record);
  }
  return records;
}

TEST_F(LocalStoreAsyncTest, MergeRecordsAsyncMergesTheBatchInOneWrite) {
  const std::vector<std::string> keys = {"a", "b", "c"};
  const std::vector<SiblingSet> records = RecordsFromN2(keys, &clock_);
  std::vector<LocalStore::RemoteRecord> remote;
  for (size_t i = 0; i < keys.size(); ++i) remote.push_back({keys[i], &records[i]});
  int calls = 0;
  absl::Status result = absl::UnknownError("not called");
  store_->MergeRecordsAsync(remote, [&](absl::Status status) {
    ++calls;
    result = status;
  });
  EXPECT_EQ(calls, 0);  // queued on the commit executor, not merged on this thread
  executor_.RunAll();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(engine_.writes, 1);
  for (const std::string& key : keys) {
    absl::StatusOr<SiblingSet> record = store_->ReadRecord(key);
    ASSERT_TRUE(record.ok()) << key;
    ASSERT_EQ(record->siblings().size(), 1u);
    EXPECT_EQ(record->siblings()[0].value, "from-n2:" + key);
  }
}

TEST_F(LocalStoreAsyncTest, MergeRecordsAsyncRefusesABadRecordBeforeQueueingAny) {
  const std::vector<SiblingSet> records = RecordsFromN2({"a"}, &clock_);
  const std::vector<LocalStore::RemoteRecord> remote = {{"a", &records[0]}, {"", &records[0]}};
  int calls = 0;
  absl::Status result;
  store_->MergeRecordsAsync(remote, [&](absl::Status status) {
    ++calls;
    result = status;
  });
  EXPECT_EQ(calls, 1);  // answered at once
  EXPECT_TRUE(absl::IsInvalidArgument(result)) << result;
  executor_.RunAll();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(engine_.writes, 0);
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("a").status()));
}

TEST_F(LocalStoreAsyncTest, MergeRecordsAsyncReportsAFailedWriteOnce) {
  const std::vector<SiblingSet> records = RecordsFromN2({"a", "b"}, &clock_);
  const std::vector<LocalStore::RemoteRecord> remote = {{"a", &records[0]}, {"b", &records[1]}};
  engine_.fail_writes = true;
  int calls = 0;
  absl::Status result;
  store_->MergeRecordsAsync(remote, [&](absl::Status status) {
    ++calls;
    result = status;
  });
  executor_.RunAll();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(result.code(), absl::StatusCode::kInternal) << result;
  engine_.fail_writes = false;
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("a").status()));
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("b").status()));
}

// Without a commit executor (kvnode's choice) the calling thread commits: the batch is merged,
// and answered, before MergeRecordsAsync returns.
TEST(LocalStoreMergeRecordsAsyncTest, WithoutACommitExecutorTheCallerCommits) {
  ManualClock clock;
  absl::BitGen rng;
  CountingEngine engine;
  absl::StatusOr<std::unique_ptr<LocalStore>> store =
      LocalStore::Open(&engine, &clock, rng, "n1", LocalStore::Options());
  ASSERT_TRUE(store.ok()) << store.status();
  engine.writes = 0;
  const std::vector<SiblingSet> records = RecordsFromN2({"a", "b"}, &clock);
  int calls = 0;
  (*store)->MergeRecordsAsync({{"a", &records[0]}, {"b", &records[1]}}, [&](absl::Status status) {
    EXPECT_TRUE(status.ok()) << status;
    ++calls;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(engine.writes, 1);
  EXPECT_TRUE((*store)->ReadRecord("a").ok());
  EXPECT_TRUE((*store)->ReadRecord("b").ok());
}

}  // namespace
}  // namespace kv

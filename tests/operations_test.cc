// OperationRegistry (node/operations.h): ids name their node and run, state moves RUNNING ->
// SUCCEEDED/FAILED once, progress updates apply only while running, and finished operations are
// kept for a bounded time and count (on a manual clock). With a journal (node/operation_journal.h,
// on a MemoryEngine that stands for the data directory across "restarts"), operations outlive the
// registry: finished ones as they were, running ones as interrupted until resumed or failed.
#include "node/operations.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/clock.h"
#include "node/operation_journal.h"
#include "storage/memory_engine.h"

namespace kv {
namespace {

class OperationRegistryTest : public ::testing::Test {
 protected:
  OperationRegistry Make(size_t max_finished = 100, absl::Duration retention = absl::Hours(1)) {
    OperationRegistry::Options options;
    options.max_finished = max_finished;
    options.retention = retention;
    return OperationRegistry("n1", "66a1b2c3", &clock_, options);
  }
  ManualClock clock_;
};

TEST_F(OperationRegistryTest, IdsNameTheNodeAndRunAndAreUnique) {
  OperationRegistry ops = Make();
  const std::string a = ops.Start("repair", "with every peer", 2, "peers");
  const std::string b = ops.Start("repair", "with every peer", 2, "peers");
  EXPECT_EQ(a, "n1:66a1b2c3-1");
  EXPECT_EQ(b, "n1:66a1b2c3-2");
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(b);
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->node_id, "n1");
  EXPECT_EQ(parts->incarnation, "66a1b2c3");
  EXPECT_EQ(parts->sequence, 2u);
  // Node ids may contain '-' and '.': the id splits at the first ':' and the last '-'.
  parts = ParseOperationId("node-a.b:ff-12");
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->node_id, "node-a.b");
  EXPECT_EQ(parts->sequence, 12u);
}

TEST_F(OperationRegistryTest, MalformedIdsAreInvalidArgument) {
  OperationRegistry ops = Make();
  for (const std::string id : {"", "n1", "n1:", ":ab-1", "n1:ab", "n1:ab-", "n1:-1", "n1:AB-1",
                               "n1:ab-x", "n1:ab-0", "n1:ab-+1", "n1:ab- 1", "n1:a:b-1",
                               // Incarnations no node makes: not hexadecimal, or past 64 bits.
                               "n1:zz-1", "n1:99999999999999999999999-1"}) {
    absl::StatusOr<OperationInfo> got = ops.Get(id);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << "\"" << id << "\"";
    EXPECT_TRUE(absl::StrContains(got.status().message(), "NODE:INCARNATION-SEQUENCE"))
        << got.status();
  }
}

TEST_F(OperationRegistryTest, UnknownOtherNodeAndEarlierRunAreNotFoundWithTheReason) {
  OperationRegistry ops = Make();
  ops.Start("repair", "", 1, "peers");
  absl::StatusOr<OperationInfo> got = ops.Get("n1:66a1b2c3-9");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  got = ops.Get("n2:66a1b2c3-1");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "belongs to node n2")) << got.status();
  got = ops.Get("n1:1234-1");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "earlier run")) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), "in memory only")) << got.status();
}

TEST_F(OperationRegistryTest, StateAndProgressFollowTheJob) {
  OperationRegistry ops = Make();
  const absl::Time start = clock_.Now();
  const std::string id = ops.Start("repair", "with n2", 1, "peers");
  absl::StatusOr<OperationInfo> got = ops.Get(id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, OperationState::kRunning);
  EXPECT_EQ(got->kind, "repair");
  EXPECT_EQ(got->started, start);
  EXPECT_EQ(got->ended, absl::InfinitePast());

  ASSERT_TRUE(ops.Update(id,
                         [](OperationInfo& op) {
                           op.message = "exchanging with n2";
                           op.counters["keys_repaired"] += 5;
                           op.state = OperationState::kSucceeded;  // ignored: only Finish ends it
                         })
                  .ok());
  got = ops.Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, OperationState::kRunning);
  EXPECT_EQ(got->message, "exchanging with n2");
  EXPECT_EQ(got->counters.at("keys_repaired"), 5u);

  clock_.Advance(absl::Seconds(3));
  ASSERT_TRUE(ops.Finish(id, absl::OkStatus()).ok());
  got = ops.Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, OperationState::kSucceeded);
  EXPECT_EQ(got->ended - got->started, absl::Seconds(3));
  // Finished is final.
  EXPECT_EQ(ops.Finish(id, absl::InternalError("late")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ops.Update(id, [](OperationInfo&) {}).code(), absl::StatusCode::kFailedPrecondition);

  const std::string failed = ops.Start("repair", "", 1, "peers");
  ASSERT_TRUE(ops.Finish(failed, absl::UnavailableError("n2: unreachable")).ok());
  got = ops.Get(failed);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, OperationState::kFailed);
  EXPECT_EQ(got->error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(OperationStateName(got->state), "FAILED");
}

TEST_F(OperationRegistryTest, FinishedOperationsExpireAfterTheRetention) {
  OperationRegistry ops = Make(100, absl::Minutes(10));
  const std::string done = ops.Start("repair", "", 1, "peers");
  const std::string running = ops.Start("repair", "", 1, "peers");
  ASSERT_TRUE(ops.Finish(done, absl::OkStatus()).ok());
  clock_.Advance(absl::Minutes(10) - absl::Seconds(1));
  EXPECT_TRUE(ops.Get(done).ok());
  clock_.Advance(absl::Seconds(1));
  absl::StatusOr<OperationInfo> got = ops.Get(done);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "kept for 10m")) << got.status();
  // Running operations never expire.
  clock_.Advance(absl::Hours(24));
  EXPECT_TRUE(ops.Get(running).ok());
}

TEST_F(OperationRegistryTest, AtMostMaxFinishedAreKeptOldestEndedFirstOut) {
  OperationRegistry ops = Make(/*max_finished=*/3);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(ops.Start("repair", "", 1, "peers"));
  // End them in the order 4, 0, 1, 2, 3: the first two to end are dropped.
  for (int i : {4, 0, 1, 2, 3}) ASSERT_TRUE(ops.Finish(ids[i], absl::OkStatus()).ok());
  EXPECT_FALSE(ops.Get(ids[4]).ok());
  EXPECT_FALSE(ops.Get(ids[0]).ok());
  for (int i : {1, 2, 3}) EXPECT_TRUE(ops.Get(ids[i]).ok()) << ids[i];
  std::vector<OperationInfo> list = ops.List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].id, ids[3]);  // newest first
  EXPECT_EQ(list[2].id, ids[1]);
  // Many running operations are all kept, whatever max_finished.
  for (int i = 0; i < 10; ++i) ops.Start("repair", "", 1, "peers");
  EXPECT_EQ(ops.List().size(), 13u);
}

// The journal of OperationJournalTest: an EngineOperationJournal that counts its writes.
class CountingJournal : public OperationJournal {
 public:
  explicit CountingJournal(Engine* engine) : journal_(engine) {}
  absl::StatusOr<std::vector<OperationInfo>> LoadAll() override { return journal_.LoadAll(); }
  absl::Status Save(const OperationInfo& op) override {
    ++saves;
    return journal_.Save(op);
  }
  absl::Status Erase(absl::string_view id) override {
    ++erases;
    return journal_.Erase(id);
  }
  int saves = 0;
  int erases = 0;

 private:
  EngineOperationJournal journal_;
};

class OperationJournalTest : public OperationRegistryTest {
 protected:
  // A registry of run `incarnation` over the shared engine, loaded from it.
  std::unique_ptr<OperationRegistry> Run(const std::string& incarnation, size_t max_finished = 100,
                                         absl::Duration retention = absl::Hours(1)) {
    journals_.push_back(std::make_unique<CountingJournal>(&engine_));
    OperationRegistry::Options options;
    options.max_finished = max_finished;
    options.retention = retention;
    auto ops = std::make_unique<OperationRegistry>("n1", incarnation, &clock_, options);
    const absl::Status loaded = ops->Load(journals_.back().get());
    EXPECT_TRUE(loaded.ok()) << loaded;
    EXPECT_TRUE(ops->durable());
    return ops;
  }
  CountingJournal& journal() { return *journals_.back(); }

  MemoryEngine engine_;
  std::vector<std::unique_ptr<CountingJournal>> journals_;
};

TEST_F(OperationJournalTest, FinishedOperationsOutliveARestartAsTheyWere) {
  std::string ok_id, failed_id;
  {
    std::unique_ptr<OperationRegistry> ops = Run("aa");
    ok_id = ops->Start("repair", "with every peer", 2, "peers");
    failed_id = ops->Start("repair", "with n2", 1, "peers");
    ASSERT_TRUE(ops->Update(ok_id,
                            [](OperationInfo& op) {
                              op.done = 2;
                              op.message = "all exchanged";
                              op.counters["keys_repaired"] = 7;
                            })
                    .ok());
    clock_.Advance(absl::Seconds(3));
    ASSERT_TRUE(ops->Finish(ok_id, absl::OkStatus()).ok());
    ASSERT_TRUE(ops->Finish(failed_id, absl::UnavailableError("n2 did not answer")).ok());
  }
  std::unique_ptr<OperationRegistry> ops = Run("bb");
  absl::StatusOr<OperationInfo> ok = ops->Get(ok_id);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->state, OperationState::kSucceeded);
  EXPECT_EQ(ok->kind, "repair");
  EXPECT_EQ(ok->description, "with every peer");
  EXPECT_EQ(ok->done, 2u);
  EXPECT_EQ(ok->total, 2u);
  EXPECT_EQ(ok->unit, "peers");
  EXPECT_EQ(ok->message, "all exchanged");
  EXPECT_EQ(ok->counters.at("keys_repaired"), 7u);
  EXPECT_EQ(ok->ended - ok->started, absl::Seconds(3));
  absl::StatusOr<OperationInfo> failed = ops->Get(failed_id);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->state, OperationState::kFailed);
  EXPECT_EQ(failed->error, absl::UnavailableError("n2 did not answer"));
  // Nothing was interrupted; new operations take ids of the new run, listed before the old.
  EXPECT_TRUE(ops->TakeInterrupted({"repair"}).empty());
  const std::string next = ops->Start("repair", "", 1, "peers");
  EXPECT_EQ(next, "n1:bb-1");
  std::vector<OperationInfo> list = ops->List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].id, next);
  EXPECT_EQ(list[2].id, ok_id);
  // An unknown id of an earlier run is not found, without blaming the restart.
  absl::StatusOr<OperationInfo> unknown = ops->Get("n1:aa-9");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "across restarts")) << unknown.status();
}

TEST_F(OperationJournalTest, RunningOperationsAreInterruptedUntilResumedOrFailed) {
  std::string join, repair;
  {
    std::unique_ptr<OperationRegistry> ops = Run("aa");
    join = ops->Start("join", "join n4 (layout version 2)", 3, "sources", "2");
    repair = ops->Start("repair", "with every peer", 2, "peers");
  }
  std::unique_ptr<OperationRegistry> ops = Run("bb");
  // Interrupted operations stay RUNNING until their owner says.
  EXPECT_EQ(ops->Get(join)->state, OperationState::kRunning);
  std::vector<OperationInfo> taken = ops->TakeInterrupted({"join", "leave", "remove"});
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].id, join);
  EXPECT_EQ(taken[0].checkpoint, "2");
  EXPECT_TRUE(ops->TakeInterrupted({"join"}).empty());  // taken once
  ops->FailInterrupted(absl::AbortedError("kvnode stopped"));
  EXPECT_EQ(ops->Get(repair)->state, OperationState::kFailed);
  EXPECT_EQ(ops->Get(repair)->error, absl::AbortedError("kvnode stopped"));
  // The taken one runs on under its id, in this run and the next.
  EXPECT_EQ(ops->Get(join)->state, OperationState::kRunning);
  ASSERT_TRUE(ops->Update(join, [](OperationInfo& op) { op.done = 3; }).ok());
  ASSERT_TRUE(ops->Finish(join, absl::OkStatus()).ok());
  ops = Run("cc");
  EXPECT_EQ(ops->Get(join)->state, OperationState::kSucceeded);
  EXPECT_EQ(ops->Get(join)->done, 3u);
  EXPECT_EQ(ops->Get(repair)->state, OperationState::kFailed);
  EXPECT_TRUE(ops->TakeInterrupted({"join", "repair"}).empty());
}

TEST_F(OperationJournalTest, OnlyChangesAreWrittenAndExpiredOperationsAreErased) {
  std::unique_ptr<OperationRegistry> ops = Run("aa", /*max_finished=*/2, absl::Minutes(10));
  const std::string id = ops->Start("repair", "", 2, "peers");
  EXPECT_EQ(journal().saves, 1);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(ops->Update(id, [](OperationInfo& op) { op.message = "exchanging"; }).ok());
  }
  EXPECT_EQ(journal().saves, 2);  // a poll that reports the same progress writes nothing
  ASSERT_TRUE(ops->Finish(id, absl::OkStatus()).ok());
  EXPECT_EQ(journal().saves, 3);
  // Past the count...
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ops->Finish(ops->Start("repair", "", 1, "peers"), absl::OkStatus()).ok());
  }
  EXPECT_EQ(journal().erases, 1);
  ops = Run("bb", 2, absl::Minutes(10));
  EXPECT_FALSE(ops->Get(id).ok());
  EXPECT_EQ(ops->List().size(), 2u);
  // ...and past the retention, also while the node was down.
  clock_.Advance(absl::Minutes(10));
  ops = Run("cc", 2, absl::Minutes(10));
  EXPECT_TRUE(ops->List().empty());
  EXPECT_EQ(journal().erases, 2);
  ops = Run("dd", 2, absl::Minutes(10));
  EXPECT_TRUE(ops->List().empty());
  EXPECT_EQ(journal().erases, 0);  // erased for good
}

TEST_F(OperationJournalTest, ARestartWithinTheSameSecondSkipsTheEarlierRunsIds) {
  std::string first;
  {
    std::unique_ptr<OperationRegistry> ops = Run("aa");
    first = ops->Start("repair", "", 1, "peers");
    ops->Start("repair", "", 1, "peers");
  }
  std::unique_ptr<OperationRegistry> ops = Run("aa");  // the same incarnation
  ops->FailInterrupted(absl::AbortedError("kvnode stopped"));
  EXPECT_EQ(ops->Start("repair", "", 1, "peers"), "n1:aa-3");
  EXPECT_EQ(ops->Get(first)->state, OperationState::kFailed);
}

TEST_F(OperationJournalTest, UnreadableRecordsAreDeletedAndTheRestLoads) {
  std::string id;
  {
    std::unique_ptr<OperationRegistry> ops = Run("aa");
    id = ops->Start("repair", "", 1, "peers");
    ASSERT_TRUE(ops->Finish(id, absl::OkStatus()).ok());
  }
  OperationInfo elsewhere;  // well formed, but under another operation's key
  elsewhere.id = "n1:aa-5";
  WriteBatch batch;
  batch.Put(Column::kMeta, EngineOperationJournal::Key("n1:aa-7"), "\xff\xff not a proto");
  batch.Put(Column::kMeta, EngineOperationJournal::Key("n1:aa-8"),
            EngineOperationJournal::Encode(elsewhere));
  batch.Put(Column::kMeta, "operatio", "another owner's key");  // not under the prefix
  ASSERT_TRUE(engine_.Write(batch, WriteOptions()).ok());
  std::unique_ptr<OperationRegistry> ops = Run("bb");
  EXPECT_TRUE(ops->Get(id).ok());
  EXPECT_EQ(ops->List().size(), 1u);
  EXPECT_EQ(engine_.Get(Column::kMeta, EngineOperationJournal::Key("n1:aa-7")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_.Get(Column::kMeta, EngineOperationJournal::Key("n1:aa-8")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(engine_.Get(Column::kMeta, "operatio").ok());
}

TEST(OperationJournalCodecTest, EveryFieldRoundTrips) {
  OperationInfo op;
  op.id = "node-a.b:ff-12";
  op.kind = "leave";
  op.description = "leave n3 (layout version 4)";
  op.state = OperationState::kFailed;
  op.error = absl::DeadlineExceededError("the handoff did not complete in time");
  op.started = absl::FromUnixMicros(1700000000123456);
  op.ended = absl::FromUnixMicros(1700000100000000);
  op.done = 1;
  op.total = 2;
  op.unit = "sources";
  op.message = "waiting for the handoff of n2 (phase 1)";
  op.counters = {{"keys_total", 10}, {"bytes_total", 1000}};
  op.checkpoint = "4";
  absl::StatusOr<OperationInfo> back =
      EngineOperationJournal::Decode(EngineOperationJournal::Encode(op));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, op.id);
  EXPECT_EQ(back->kind, op.kind);
  EXPECT_EQ(back->description, op.description);
  EXPECT_EQ(back->state, op.state);
  EXPECT_EQ(back->error, op.error);
  EXPECT_EQ(back->started, op.started);
  EXPECT_EQ(back->ended, op.ended);
  EXPECT_EQ(back->done, op.done);
  EXPECT_EQ(back->total, op.total);
  EXPECT_EQ(back->unit, op.unit);
  EXPECT_EQ(back->message, op.message);
  EXPECT_EQ(back->counters, op.counters);
  EXPECT_EQ(back->checkpoint, op.checkpoint);
  // A running operation has no end yet.
  op.state = OperationState::kRunning;
  op.error = absl::OkStatus();
  op.ended = absl::InfinitePast();
  back = EngineOperationJournal::Decode(EngineOperationJournal::Encode(op));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->state, OperationState::kRunning);
  EXPECT_TRUE(back->error.ok());
  EXPECT_EQ(back->ended, absl::InfinitePast());
  // Not an operation.
  EXPECT_EQ(EngineOperationJournal::Decode("\xff\xff").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(EngineOperationJournal::Decode("").status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kv

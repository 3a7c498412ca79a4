// LocalStore on a MemoryEngine with a manual clock: versions, contexts, limits, idempotency,
// listing, merging and actor epochs.
#include "node/local_store.h"

#include <random>
#include <set>
#include <thread>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/idempotency_record.h"
#include "storage/format_level.h"
#include "storage/memory_engine.h"
#include "storage/record_codec.h"

namespace kv {
namespace {

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = OpenStore(&engine_, "n1"); }

  std::unique_ptr<LocalStore> OpenStore(Engine* engine, const std::string& node_id,
                                        LocalStore::Options options = {}) {
    absl::StatusOr<std::unique_ptr<LocalStore>> store =
        LocalStore::Open(engine, &clock_, rng_, node_id, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  WriteOutcome MustPut(const std::string& key, const std::string& value,
                       const std::string& context = "", const std::string& token = "") {
    WriteCommand command{key, /*is_delete=*/false, value, context, token};
    absl::StatusOr<WriteOutcome> outcome = store_->Write(command);
    EXPECT_TRUE(outcome.ok()) << outcome.status();
    return outcome.ok() ? *std::move(outcome) : WriteOutcome{};
  }

  std::vector<std::string> LiveValues(const std::string& key) {
    std::vector<std::string> values;
    absl::StatusOr<SiblingSet> record = store_->ReadRecord(key);
    if (!record.ok()) return values;
    for (const Sibling& s : record->LiveSiblings()) values.push_back(s.value);
    std::sort(values.begin(), values.end());
    return values;
  }

  std::string ReadContext(const std::string& key) {
    absl::StatusOr<SiblingSet> record = store_->ReadRecord(key);
    EXPECT_TRUE(record.ok()) << record.status();
    return store_->ContextForClients(record->ClientContext(), key);  // what KvService::Get answers
  }

  ManualClock clock_;
  absl::BitGen rng_;
  MemoryEngine engine_;
  std::unique_ptr<LocalStore> store_;
};

TEST_F(LocalStoreTest, ActorEpochIsStableAcrossReopenAndNewOnEmptyEngine) {
  std::unique_ptr<LocalStore> reopened = OpenStore(&engine_, "n1");
  EXPECT_EQ(reopened->actor(), store_->actor());
  EXPECT_EQ(store_->actor().rfind("n1#", 0), 0u) << store_->actor();

  MemoryEngine wiped;
  std::unique_ptr<LocalStore> fresh = OpenStore(&wiped, "n1");
  EXPECT_NE(fresh->actor(), store_->actor());
}

// A machine crash with sync_writes off loses the write-ahead log's tail; a write in it may live
// on at another replica. The next version must not take that write's dot (a merge would then keep
// only one of the two), so a store reopened on a new boot after such a crash takes a new epoch.
TEST_F(LocalStoreTest, AfterAMachineCrashLosesWritesNewVersionsNeverReuseTheirDots) {
  MemoryEngine engine;
  LocalStore::Options options;  // sync_writes off
  options.boot_id = "boot-1";
  std::unique_ptr<LocalStore> a = OpenStore(&engine, "a", options);
  const std::string first_actor = a->actor();
  auto put = [&](const std::string& value, const std::string& context) {
    absl::StatusOr<WriteOutcome> outcome = a->Write({"k", false, value, context, ""});
    EXPECT_TRUE(outcome.ok()) << outcome.status();
    return outcome.ok() ? outcome->context : "";
  };
  const std::string v0_context = put("v0", "");
  engine.SyncAll();
  put("v1", v0_context);  // acknowledged after its write-ahead log append, not synced
  absl::StatusOr<SiblingSet> replicated = a->ReadRecord("k");  // what another replica got
  ASSERT_TRUE(replicated.ok()) << replicated.status();

  a.reset();
  engine.SimulateCrash();
  options.boot_id = "boot-2";
  a = OpenStore(&engine, "a", options);
  ASSERT_NE(a, nullptr);
  EXPECT_NE(a->actor(), first_actor);
  EXPECT_THAT(a->new_epoch_reason(), ::testing::HasSubstr("machine has restarted"));
  put("v2", "");                                       // concurrent with v1, which this disk lost
  ASSERT_TRUE(a->MergeRecord("k", *replicated).ok());  // v1 comes back from the other replica

  std::vector<std::string> values;
  absl::StatusOr<SiblingSet> record = a->ReadRecord("k");
  ASSERT_TRUE(record.ok()) << record.status();
  for (const Sibling& s : record->LiveSiblings()) values.push_back(s.value);
  std::sort(values.begin(), values.end());
  EXPECT_EQ(values, (std::vector<std::string>{"v1", "v2"}));
}

// The history generation advances at every open and with AdvanceGeneration, each time stored
// before it is returned. A store older than what the peers saw of the node (restored from a
// backup) takes a new epoch and catches up; one that is not keeps its epoch.
TEST_F(LocalStoreTest, AStoreOlderThanThePeersSawTakesANewEpoch) {
  MemoryEngine engine;
  LocalStore::Options options;
  options.boot_id = "boot-1";
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  const std::string actor = store->actor();
  EXPECT_EQ(store->generation(), 1u);
  absl::StatusOr<uint64_t> advanced = store->AdvanceGeneration();
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(*advanced, 2u);
  EXPECT_EQ(store->generation(), 2u);
  absl::StatusOr<LocalStore::StoredHistory> history = LocalStore::ReadStoredHistory(&engine);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_TRUE(history->has_epoch);
  EXPECT_EQ(history->generation, 2u);
  ASSERT_TRUE(store->RecordCleanStop().ok());
  store.reset();

  // The peers saw at most what the store holds: the same epoch, the next generation.
  options.peer_generation = 2;
  store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->actor(), actor);
  EXPECT_EQ(store->new_epoch_reason(), "");
  EXPECT_FALSE(store->catching_up());
  EXPECT_EQ(store->generation(), 3u);
  ASSERT_TRUE(store->RecordCleanStop().ok());
  store.reset();

  // They saw generation 7: this store is older than the node's last run.
  options.peer_generation = 7;
  store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  EXPECT_NE(store->actor(), actor);
  EXPECT_THAT(store->new_epoch_reason(), ::testing::HasSubstr("older than the node's last run"));
  EXPECT_TRUE(store->catching_up());
  EXPECT_EQ(store->generation(), 8u);  // above both: the next start is not taken for a restore
  ASSERT_TRUE(store->RecordCleanStop().ok());
  const std::string new_actor = store->actor();
  store.reset();
  store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->actor(), new_actor);
  EXPECT_EQ(store->generation(), 9u);

  // An empty store takes a new epoch anyway, and a generation above what the peers saw of the
  // node id (a node that ran there before with a lost disk).
  MemoryEngine empty;
  history = LocalStore::ReadStoredHistory(&empty);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_FALSE(history->has_epoch);
  EXPECT_EQ(history->generation, 0u);
  std::unique_ptr<LocalStore> fresh = OpenStore(&empty, "a", options);
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(fresh->new_epoch_reason(), "");
  EXPECT_EQ(fresh->generation(), 8u);
}

// A restore that the start's check missed and gossip showed later (MarkHistoryConflict): the run
// refuses new writes from then on and is catching up; the next Open draws a new epoch, even after
// a clean stop, and writes again. The generation also moves past what the peers showed.
TEST_F(LocalStoreTest, AHistoryConflictStopsWritesUntilTheNextOpenTakesANewEpoch) {
  MemoryEngine engine;
  LocalStore::Options options;
  options.boot_id = "boot-1";
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  const std::string actor = store->actor();
  ASSERT_TRUE(store->Write({"k", false, "v1", "", ""}).ok());
  absl::StatusOr<uint64_t> advanced = store->AdvanceGeneration(/*at_least=*/41);
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(*advanced, 41u);
  advanced = store->AdvanceGeneration(/*at_least=*/5);
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(*advanced, 42u);  // never back

  EXPECT_EQ(store->history_conflict(), "");
  EXPECT_FALSE(store->catching_up());
  store->MarkHistoryConflict("n2 holds history generation 50");
  store->MarkHistoryConflict("a second one");  // only the first counts
  ASSERT_TRUE(store->StoreHistoryConflict().ok());
  EXPECT_EQ(store->history_conflict(), "n2 holds history generation 50");
  EXPECT_TRUE(store->catching_up());
  const absl::Status refused = store->Write({"k", false, "v2", "", ""}).status();
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("n2 holds history generation 50"));
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("refuses writes until it restarts"));
  absl::StatusOr<SiblingSet> kept = store->ReadRecord("k");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->siblings().size(), 1u);  // the refused write changed nothing
  ASSERT_TRUE(store->RecordCleanStop().ok());
  store.reset();

  store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  EXPECT_NE(store->actor(), actor);
  EXPECT_THAT(store->new_epoch_reason(),
              ::testing::HasSubstr("older than an earlier run of the node (n2 holds history "
                                   "generation 50)"));
  EXPECT_TRUE(store->catching_up());
  EXPECT_EQ(store->history_conflict(), "");
  EXPECT_TRUE(store->Write({"k", false, "v3", "", ""}).ok());
  const std::string new_actor = store->actor();
  ASSERT_TRUE(store->RecordCleanStop().ok());
  store.reset();
  // The record went with that Open: the next start keeps the new epoch.
  store = OpenStore(&engine, "a", options);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->actor(), new_actor);
  EXPECT_EQ(store->new_epoch_reason(), "");
}

// The epoch stays when nothing acknowledged can have been lost: the process alone crashed (same
// boot), writes were synced, or the previous run stopped cleanly.
TEST_F(LocalStoreTest, TheEpochStaysWhenNoAcknowledgedWriteCanHaveBeenLost) {
  MemoryEngine engine;
  LocalStore::Options options;
  options.boot_id = "boot-1";
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "a", options);
  const std::string actor = store->actor();

  store.reset();  // a crash of the process: the same boot
  store = OpenStore(&engine, "a", options);
  EXPECT_EQ(store->actor(), actor);
  EXPECT_EQ(store->new_epoch_reason(), "");

  ASSERT_TRUE(store->RecordCleanStop().ok());
  store.reset();
  options.boot_id = "boot-2";
  store = OpenStore(&engine, "a", options);
  EXPECT_EQ(store->actor(), actor);

  options.sync_writes = true;
  options.boot_id = "boot-3";
  store = OpenStore(&engine, "a", options);  // the previous run (boot-2) did not stop cleanly
  ASSERT_NE(store, nullptr);
  const std::string synced_actor = store->actor();
  EXPECT_NE(synced_actor, actor);
  store.reset();
  engine.SimulateCrash();
  options.boot_id = "boot-4";
  store = OpenStore(&engine, "a", options);
  EXPECT_EQ(store->actor(), synced_actor);  // its writes were synced
}

// A tombstone purge is durable when it returns, also on a store that does not sync its writes,
// and so is the tombstone it removes: the purger deletes the other replicas' copies once this
// one answered, and a machine crash that took both back would leave the live value the delete
// replaced here, to come back to the others.
TEST_F(LocalStoreTest, ATombstonePurgeIsDurableWithoutSyncWrites) {
  MemoryEngine engine;
  LocalStore::Options options;  // sync_writes off
  options.boot_id = "boot-1";
  std::unique_ptr<LocalStore> a = OpenStore(&engine, "a", options);
  ASSERT_TRUE(a->Write({"k", false, "v1", "", ""}).ok());
  engine.SyncAll();                                     // v1 is on disk
  ASSERT_TRUE(a->Write({"k", true, "", "", ""}).ok());  // the delete: unsynced
  absl::StatusOr<SiblingSet> tombstone = a->ReadRecord("k");
  ASSERT_TRUE(tombstone.ok()) << tombstone.status();
  ASSERT_TRUE(tombstone->AllTombstones());
  ASSERT_TRUE(a->PurgeIfUnchanged("k", *tombstone).ok());
  a.reset();
  engine.SimulateCrash();
  options.boot_id = "boot-2";
  a = OpenStore(&engine, "a", options);
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(absl::IsNotFound(a->ReadRecord("k").status()));
}

// After a machine crash that may have lost writes, this replica may lack a Put another replica
// holds: until it has caught up, it must not tell a read that a key has no live version (the
// read would count that toward NOT_FOUND). The state survives a restart until it ends.
TEST_F(LocalStoreTest, AStoreThatMayHaveLostWritesClaimsNoMissingKeyUntilItCaughtUp) {
  MemoryEngine engine;
  LocalStore::Options options;  // sync_writes off
  options.boot_id = "boot-1";
  std::unique_ptr<LocalStore> a = OpenStore(&engine, "a", options);
  ASSERT_TRUE(a->Write({"live", false, "v", "", ""}).ok());
  ASSERT_TRUE(a->Write({"gone", false, "v", "", ""}).ok());
  ASSERT_TRUE(a->Write({"gone", true, "", "", ""}).ok());
  engine.SyncAll();
  EXPECT_FALSE(a->catching_up());
  EXPECT_TRUE(absl::IsNotFound(a->ReadRecordForQuorum("missing").status()));
  EXPECT_TRUE(a->ReadRecordForQuorum("gone").ok());

  a.reset();
  engine.SimulateCrash();
  options.boot_id = "boot-2";
  a = OpenStore(&engine, "a", options);
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->catching_up());
  for (const char* key : {"missing", "gone"}) {
    absl::StatusOr<LocalStore::QuorumRead> answer = a->ReadRecordForQuorum(key);
    EXPECT_TRUE(absl::IsUnavailable(answer.status())) << key << ": " << answer.status();
    EXPECT_THAT(answer.status().message(), ::testing::HasSubstr("catching up"));
  }
  absl::StatusOr<LocalStore::QuorumRead> live = a->ReadRecordForQuorum("live");
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_TRUE(live->catching_up);  // its live version may be one a lost write replaced
  EXPECT_TRUE(absl::IsNotFound(a->ReadRecord("missing").status()));  // the plain read is as before

  a.reset();  // the process crashes again before catching up: the same boot, the same epoch
  a = OpenStore(&engine, "a", options);
  EXPECT_EQ(a->new_epoch_reason(), "");
  EXPECT_TRUE(a->catching_up());

  ASSERT_TRUE(a->FinishCatchingUp().ok());
  EXPECT_FALSE(a->catching_up());
  EXPECT_TRUE(absl::IsNotFound(a->ReadRecordForQuorum("missing").status()));
  live = a->ReadRecordForQuorum("live");
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_FALSE(live->catching_up);
  a.reset();
  a = OpenStore(&engine, "a", options);
  EXPECT_FALSE(a->catching_up());
}

// A store written before runs were recorded, or whose record is unreadable, cannot tell how its
// previous run ended: it takes a new epoch, and says why. Only the unreadable record makes it
// catch up: a store an earlier version wrote (an upgrade) did not crash for that.
TEST_F(LocalStoreTest, AnUnknownPreviousRunTakesANewEpoch) {
  MemoryEngine engine;
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "a");
  const std::string actor = store->actor();
  store.reset();
  WriteBatch batch;
  batch.Delete(Column::kMeta, "run_state");
  ASSERT_TRUE(engine.Write(batch, WriteOptions{true}).ok());
  store = OpenStore(&engine, "a");
  EXPECT_NE(store->actor(), actor);
  EXPECT_THAT(store->new_epoch_reason(), ::testing::HasSubstr("earlier version"));
  EXPECT_FALSE(store->catching_up());

  const std::string second = store->actor();
  store.reset();
  WriteBatch garbage;
  garbage.Put(Column::kMeta, "run_state", "v9;whatever");
  ASSERT_TRUE(engine.Write(garbage, WriteOptions{true}).ok());
  store = OpenStore(&engine, "a");
  EXPECT_NE(store->actor(), second);
  EXPECT_THAT(store->new_epoch_reason(), ::testing::HasSubstr("unreadable"));
  EXPECT_TRUE(store->catching_up());
  store.reset();
  store = OpenStore(&engine, "a");  // recorded again: the same boot keeps it
  EXPECT_EQ(store->new_epoch_reason(), "");
}

// While some member reads only format level 1, no context a client gets carries tokened
// versions (storage/format_level.h): a client may take it to that member.
TEST_F(LocalStoreTest, ContextsSuitTheClustersFormatLevel) {
  class SettableLevels : public FormatLevels {
   public:
    uint32_t MemberFormatLevel(absl::string_view) const override { return level; }
    uint32_t ClusterFormatLevel() const override { return level; }
    uint32_t level = kFormatLevel;
  } levels;
  store_->SetFormatLevels(&levels);
  auto tokened = [](const std::string& encoded) {
    absl::StatusOr<CausalContext> context = CausalContext::Decode(encoded);
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? context->tokened().size() : 0;
  };

  const WriteOutcome first = MustPut("k", "a", "", "t1");
  EXPECT_EQ(tokened(first.context), 1u);
  EXPECT_EQ(tokened(ReadContext("k")), 1u);

  levels.level = kLegacyFormatLevel;
  const WriteOutcome retry = MustPut("k", "a", "", "t1");  // the token's first result
  EXPECT_TRUE(retry.deduplicated);
  EXPECT_EQ(tokened(retry.context), 0u);
  const WriteOutcome second = MustPut("k", "b", retry.context, "t2");
  EXPECT_EQ(tokened(second.context), 0u);
  EXPECT_EQ(tokened(ReadContext("k")), 0u);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"b"});  // causality is whole

  levels.level = kFormatLevel;
  EXPECT_EQ(tokened(ReadContext("k")), 2u);  // "b", and "a", which it replaced
}

// A store acting as a node of format level 1 refuses contexts of version 2, as such a node does.
TEST_F(LocalStoreTest, StoreOfLevelOneRefusesContextsItCannotRead) {
  const WriteOutcome first = MustPut("k", "a", "", "t1");
  MemoryEngine engine;
  LocalStore::Options options;
  options.format_level = kLegacyFormatLevel;
  std::unique_ptr<LocalStore> old = OpenStore(&engine, "n2", options);
  absl::StatusOr<WriteOutcome> refused =
      old->Write(WriteCommand{"k", false, "b", first.context, "t2"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_TRUE(absl::IsNotFound(old->ReadRecord("k").status()));  // nothing stored
  CausalContext legacy = CausalContext::Decode(first.context).value();
  legacy.ClearTokened();
  legacy.Unbind();
  EXPECT_TRUE(old->Write(WriteCommand{"k", false, "b", legacy.Encode(), "t2"}).ok());
}

// A store of level 2 reads tokened versions but not a context bound to its key (version 3); the
// same context unbound goes through.
TEST_F(LocalStoreTest, StoreOfLevelTwoRefusesAContextBoundToItsKey) {
  const WriteOutcome first = MustPut("k", "a", "", "t1");
  MemoryEngine engine;
  LocalStore::Options options;
  options.format_level = kReplacedWritesLevel;
  std::unique_ptr<LocalStore> old = OpenStore(&engine, "n2", options);
  absl::StatusOr<WriteOutcome> refused =
      old->Write(WriteCommand{"k", false, "b", first.context, "t2"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("version 3"));
  EXPECT_TRUE(absl::IsNotFound(old->ReadRecord("k").status()));  // nothing stored
  CausalContext unbound = CausalContext::Decode(first.context).value();
  ASSERT_FALSE(unbound.tokened().empty());
  unbound.Unbind();
  EXPECT_TRUE(old->Write(WriteCommand{"k", false, "b", unbound.Encode(), "t2"}).ok());
}

// A context handed out for one key is refused on a write of another (INVALID_ARGUMENT, nothing
// changed): its dots would otherwise replace that key's versions that share actors and counters
// with them, concurrent versions its writer never saw.
TEST_F(LocalStoreTest, AContextOfAnotherKeyIsRefusedAndChangesNothing) {
  MustPut("k1", "a");
  MustPut("k1", "b");
  MustPut("k2", "x");  // the same actor and counter as k1's first version
  MustPut("k2", "y");
  const std::string k1_context = ReadContext("k1");
  for (bool is_delete : {false, true}) {
    absl::StatusOr<WriteOutcome> refused =
        store_->Write(WriteCommand{"k2", is_delete, is_delete ? "" : "z", k1_context, ""});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("another key"));
    EXPECT_EQ(LiveValues("k2"), (std::vector<std::string>{"x", "y"}));
  }
  // The key's own context replaces both; so does one a write of the key returned.
  const WriteOutcome resolved = MustPut("k2", "z", ReadContext("k2"));
  EXPECT_EQ(LiveValues("k2"), std::vector<std::string>{"z"});
  MustPut("k2", "w", resolved.context);
  EXPECT_EQ(LiveValues("k2"), std::vector<std::string>{"w"});
}

TEST_F(LocalStoreTest, PutThenReadReturnsTheValue) {
  WriteOutcome out = MustPut("k", "v1");
  EXPECT_FALSE(out.deduplicated);
  EXPECT_EQ(out.dot.actor, store_->actor());
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"v1"});
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("other").status()));
}

TEST_F(LocalStoreTest, WritesWithoutContextBecomeSiblingsAndAReadContextResolvesThem) {
  MustPut("k", "a");
  MustPut("k", "b");
  EXPECT_EQ(LiveValues("k"), (std::vector<std::string>{"a", "b"}));
  MustPut("k", "merged", ReadContext("k"));
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"merged"});
}

TEST_F(LocalStoreTest, WriteContextReplacesOnlyWhatTheWriterSaw) {
  WriteOutcome first = MustPut("k", "mine-1");
  MustPut("k", "theirs");  // concurrent: the first writer never saw it
  MustPut("k", "mine-2", first.context);
  EXPECT_EQ(LiveValues("k"), (std::vector<std::string>{"mine-2", "theirs"}));
}

TEST_F(LocalStoreTest, DeleteWithoutContextRemovesEverythingHeld) {
  MustPut("k", "a");
  MustPut("k", "b");
  absl::StatusOr<WriteOutcome> del = store_->Write({"k", /*is_delete=*/true, "", "", ""});
  ASSERT_TRUE(del.ok()) << del.status();
  absl::StatusOr<SiblingSet> record = store_->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  EXPECT_TRUE(record->AllTombstones());
  EXPECT_EQ(record->siblings().size(), 1u);
}

TEST_F(LocalStoreTest, DeleteWithOldContextKeepsConcurrentWrite) {
  MustPut("k", "a");
  std::string seen = ReadContext("k");
  MustPut("k", "concurrent");
  ASSERT_TRUE(store_->Write({"k", true, "", seen, ""}).ok());
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"concurrent"});
}

TEST_F(LocalStoreTest, LimitsAreEnforcedNamedAndChangeNothing) {
  LocalStore::Options options;
  options.limits.max_key_bytes = 8;
  options.limits.max_value_bytes = 16;
  MemoryEngine engine;
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "n1", options);

  struct Case {
    WriteCommand command;
    std::string limit_name;
  };
  std::vector<Case> cases = {
      {{"123456789", false, "v", "", ""}, "max_key_bytes"},
      {{"k", false, std::string(17, 'x'), "", ""}, "max_value_bytes"},
      {{"k", false, "v", std::string(70 << 10, 'c'), ""}, "the limit is 65536 bytes (fixed)"},
      {{"k", false, "v", "", std::string(200, 't')}, "the limit is 128 bytes (fixed)"},
  };
  for (const Case& c : cases) {
    absl::Status status = store->Write(c.command).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_NE(status.message().find(c.limit_name), absl::string_view::npos) << status;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(store->Write({"", false, "v", "", ""}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store->Write({"k", false, "v", "", "has space"}).status()));
  absl::StatusOr<ListPage> all = store->List("", "", 0);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->keys.empty());
  EXPECT_TRUE(absl::IsNotFound(store->ReadRecord("k").status()));
}

// Blind writes (no context) keep adding siblings; a record past max_record_bytes could not be
// replicated, so a write that would grow a key's record past it is refused and changes nothing,
// while a write that resolves the siblings (and so shrinks the record) goes through.
TEST_F(LocalStoreTest, AWriteThatWouldGrowARecordPastTheLimitIsRefused) {
  LocalStore::Options options;
  options.limits.max_value_bytes = 1000;
  options.limits.max_record_bytes = 4000;
  MemoryEngine engine;
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "n1", options);
  int accepted = 0;
  absl::Status refused;
  for (int i = 0; i < 10 && refused.ok(); ++i) {
    absl::StatusOr<WriteOutcome> outcome =
        store->Write({"k", false, std::string(1000, 'a' + i), "", absl::StrCat("t", i)});
    if (outcome.ok()) {
      ++accepted;
    } else {
      refused = outcome.status();
    }
  }
  EXPECT_EQ(accepted, 3);  // 4 siblings of 1,000 bytes and their metadata pass 4,000
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("max_record_bytes (4000)"));
  absl::StatusOr<SiblingSet> record = store->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->LiveSiblings().size(), 3u);  // the refused write changed nothing
  const std::string stored = *engine.Get(Column::kData, "k");
  EXPECT_LE(stored.size(), 4000u);
  // Its token was not taken: the same write with a context goes through.
  const std::string context = store->ContextForClients(record->ClientContext(), "k");
  absl::StatusOr<WriteOutcome> resolved =
      store->Write({"k", false, std::string(1000, 'z'), context, "t3"});
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  record = store->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  ASSERT_EQ(record->LiveSiblings().size(), 1u);
  EXPECT_EQ(record->LiveSiblings()[0].value, std::string(1000, 'z'));
}

// A value of max_value_bytes whose record, with its key and metadata, passes max_record_bytes
// (the two set equal) is refused for its size: the advice to resolve siblings fits no new key.
TEST_F(LocalStoreTest, AValueWhoseRecordAlonePassesTheLimitIsRefusedForItsSize) {
  LocalStore::Options options;
  options.limits.max_value_bytes = 1000;
  options.limits.max_record_bytes = 1000;
  MemoryEngine engine;
  std::unique_ptr<LocalStore> store = OpenStore(&engine, "n1", options);
  absl::StatusOr<WriteOutcome> refused =
      store->Write({"new", false, std::string(1000, 'v'), "", ""});
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("with this value alone"));
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::Not(::testing::HasSubstr("resolve them")));
  EXPECT_TRUE(absl::IsNotFound(store->ReadRecord("new").status()));
}

TEST_F(LocalStoreTest, MalformedContextIsInvalidArgument) {
  absl::Status status = store_->Write({"k", false, "v", "\xff\x01garbage", ""}).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("k").status()));
}

// A forged context cannot bring a counter of this node near 2^64: the next write's counter would
// wrap to 0 and store a record nothing can read, for the key, or for every key once a purge
// raised the node's counter floor to it.
TEST_F(LocalStoreTest, ForgedCountersNearTheWrapAreRefusedAndChangeNothing) {
  for (uint64_t counter : {~uint64_t{0}, ~uint64_t{0} - 1, kMaxContextCounter + 1,
                           kMaxContextCounter, kMaxAbsorbedCounter + 1}) {
    VersionVector forged;
    forged.Advance(store_->actor(), counter);
    for (bool is_delete : {false, true}) {
      for (bool as_dot : {false, true}) {
        CausalContext context;
        if (as_dot) {
          context.AddDot(Dot{store_->actor(), counter});
        } else {
          context = CausalContext(forged);
        }
        absl::Status status =
            store_->Write({"k", is_delete, is_delete ? "" : "v", context.Encode(), "tok"}).status();
        EXPECT_TRUE(absl::IsInvalidArgument(status)) << counter << ": " << status;
        EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("k").status()));
      }
    }
  }
  // At the bound the forged counter is absorbed. The key's contexts then carry counters above the
  // bound that its record holds: they are passed back, and the purge of its tombstone leaves the
  // node's writes readable.
  VersionVector highest;
  highest.Advance(store_->actor(), kMaxAbsorbedCounter);
  const WriteOutcome at_bound = MustPut("k", "v", CausalContext(highest).Encode());
  EXPECT_EQ(at_bound.dot.counter, kMaxAbsorbedCounter + 1);
  const WriteOutcome next = MustPut("k", "w", at_bound.context);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"w"});
  ASSERT_TRUE(store_->Write({"k", true, "", next.context, ""}).ok());
  absl::StatusOr<SiblingSet> tombstone = store_->ReadRecord("k");
  ASSERT_TRUE(tombstone.ok()) << tombstone.status();
  ASSERT_TRUE(store_->PurgeIfUnchanged("k", *tombstone).ok());
  const WriteOutcome fresh = MustPut("fresh", "z");
  EXPECT_EQ(fresh.dot.counter, kMaxAbsorbedCounter + 4);
  MustPut("fresh", "z2", fresh.context);
  EXPECT_EQ(LiveValues("fresh"), std::vector<std::string>{"z2"});
}

// A record stored before counters were bounded (here merged in from a replica) may hold a
// counter of this node at the bound: the next write of the key is refused rather than wrapped.
TEST_F(LocalStoreTest, AWriteWhoseCounterWouldPassTheBoundIsRefused) {
  SiblingSet legacy;
  Sibling version;
  version.value = "old";
  legacy.ApplyWrite(store_->actor(), CausalContext(), version, kMaxContextCounter - 1);
  ASSERT_TRUE(store_->MergeRecord("k", legacy).ok());
  absl::Status status = store_->Write({"k", false, "v", "", ""}).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"old"});
  MustPut("other", "v");  // other keys stay writable
}

// A replica's version stamped near the int64 bound (a broken clock, a forged record): the retry
// window added to it saturates instead of wrapping negative, so a retry of that write is still
// recognized rather than applied as a second version.
TEST_F(LocalStoreTest, ATimestampNearTheBoundDoesNotEndTheRetryWindow) {
  SiblingSet remote;
  Sibling version;
  version.value = "v";
  version.idempotency_token = "tok";
  version.timestamp_micros = std::numeric_limits<int64_t>::max() - 1;
  remote.ApplyWrite("n2#1", CausalContext(), version);
  ASSERT_TRUE(store_->MergeRecord("k", remote).ok());
  const WriteOutcome retry = MustPut("k", "v", "", "tok");
  EXPECT_TRUE(retry.deduplicated);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"v"});
}

// A record holding this node's counter at 2^64 - 1 (from before the bounds, or forged): the next
// write of the key would wrap to counter 0. It is refused and the record stays readable; purging
// such a record does not raise the node's counter floor out of reach.
TEST_F(LocalStoreTest, ACounterAtTheTopNeitherWrapsNorBlocksTheNode) {
  SiblingSet legacy;
  Sibling version;
  version.value = "old";
  legacy.ApplyWrite(store_->actor(), CausalContext(), version, UINT64_MAX - 1);
  ASSERT_TRUE(store_->MergeRecord("k", legacy).ok());
  absl::Status status = store_->Write({"k", false, "v", "", ""}).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_TRUE(store_->ReadRecord("k").ok());
  absl::StatusOr<SiblingSet> stored = store_->ReadRecord("k");
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE(store_->PurgeIfUnchanged("k", *stored).ok());
  MustPut("other", "v");  // the floor stays below the bound
  // The same for a record just below the bound: its purge does not raise the floor there either.
  SiblingSet near;
  near.ApplyWrite(store_->actor(), CausalContext(), version, kMaxContextCounter - 2);
  ASSERT_TRUE(store_->MergeRecord("k2", near).ok());
  ASSERT_TRUE(store_->PurgeIfUnchanged("k2", near).ok());
  MustPut("other", "w", ReadContext("other"));
  MustPut("third", "v");
}

// A client forges, on replica n2, the tokened version of a dot n1 wrote with another
// fingerprint. When n2's record reaches n1, which remembers the true fingerprint of that dot, the
// merged record must still be readable.
TEST_F(LocalStoreTest, ForgedTokenedVersionOfAnotherReplicasDotDoesNotBreakItsRecord) {
  const WriteOutcome first = MustPut("k", "v", "", "tok1");
  MustPut("k", "w", ReadContext("k"), "tok2");
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> n2 = OpenStore(&other_engine, "n2");
  VersionVector seen;
  seen.Advance(first.dot.actor, first.dot.counter);
  CausalContext forged(seen);
  forged.AddTokened(TokenedVersion{first.dot, absl::ToUnixMicros(clock_.Now()), 12345});
  ASSERT_TRUE(n2->Write({"k", false, "u", forged.Encode(), "tok3"}).ok());
  absl::StatusOr<SiblingSet> remote = n2->ReadRecord("k");
  ASSERT_TRUE(remote.ok()) << remote.status();
  absl::StatusOr<SiblingSet> merged = store_->MergeRecord("k", *remote);
  ASSERT_TRUE(merged.ok()) << merged.status();
  absl::StatusOr<SiblingSet> stored = store_->ReadRecord("k");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(LiveValues("k"), (std::vector<std::string>{"u", "w"}));
  // And the other way round.
  ASSERT_TRUE(n2->MergeRecord("k", *stored).ok());
  absl::StatusOr<SiblingSet> back = n2->ReadRecord("k");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == *stored);
}

TEST_F(LocalStoreTest, SameTokenSameRequestIsDeduplicated) {
  WriteOutcome first = MustPut("k", "v", "", "tok-1");
  WriteOutcome retry = MustPut("k", "v", "", "tok-1");
  EXPECT_TRUE(retry.deduplicated);
  EXPECT_EQ(retry.write_id, first.write_id);
  EXPECT_EQ(retry.context, first.context);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"v"});
}

// A first attempt (WriteCommand::first_attempt) records its token without looking it up: its
// retries are deduplicated and a reuse of the token is refused as usual; and a copy sent twice
// with the mark (which a client must never do) is still recognized while the key's record holds
// the write.
TEST_F(LocalStoreTest, AFirstAttemptRecordsItsTokenForItsRetries) {
  WriteCommand first_attempt{"k", false, "v", "", "tok-1"};
  first_attempt.first_attempt = true;
  absl::StatusOr<WriteOutcome> first = store_->Write(first_attempt);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->deduplicated);
  WriteOutcome retry = MustPut("k", "v", "", "tok-1");
  EXPECT_TRUE(retry.deduplicated);
  EXPECT_EQ(retry.write_id, first->write_id);
  EXPECT_EQ(retry.context, first->context);
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Write({"k2", false, "v", "", "tok-1"}).status()));
  absl::StatusOr<WriteOutcome> marked_again = store_->Write(first_attempt);
  ASSERT_TRUE(marked_again.ok()) << marked_again.status();
  EXPECT_TRUE(marked_again->deduplicated);
  EXPECT_EQ(marked_again->write_id, first->write_id);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"v"});
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("k2").status()));
}

TEST_F(LocalStoreTest, SameTokenDifferentRequestIsRejectedAndChangesNothing) {
  MustPut("k", "v", "", "tok-1");
  for (const WriteCommand& other : std::vector<WriteCommand>{{"k", false, "w", "", "tok-1"},
                                                             {"k2", false, "v", "", "tok-1"},
                                                             {"k", true, "", "", "tok-1"}}) {
    absl::Status status = store_->Write(other).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_NE(status.message().find("idempotency token reused with different parameters"),
              absl::string_view::npos);
  }
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"v"});
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("k2").status()));
}

TEST_F(LocalStoreTest, TokensExpireAfterTheirTtl) {
  MustPut("k", "v", "", "tok-1");
  MustPut("k2", "v", "", "tok-2");
  clock_.Advance(absl::Hours(23));
  absl::StatusOr<size_t> removed = store_->ExpireIdempotencyRecords();
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 0u);
  EXPECT_TRUE(MustPut("k", "v", "", "tok-1").deduplicated);

  clock_.Advance(absl::Hours(2));
  removed = store_->ExpireIdempotencyRecords();
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 2u);
  // Forgotten: the same token now creates a new version (a sibling, no context was given);
  // reads still show one version per token.
  EXPECT_FALSE(MustPut("k", "v", "", "tok-1").deduplicated);
  absl::StatusOr<SiblingSet> record = store_->ReadRecord("k");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->siblings().size(), 2u);
  EXPECT_EQ(LiveValues("k").size(), 1u);
}

TEST_F(LocalStoreTest, ExpiredTokenReusedBeforeSweepKeepsItsNewRecord) {
  MustPut("k", "v", "", "tok-1");
  clock_.Advance(absl::Hours(25));
  MustPut("k", "v2", "", "tok-1");  // expired, so a new logical write
  absl::StatusOr<size_t> removed = store_->ExpireIdempotencyRecords();
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(MustPut("k", "v2", "", "tok-1").deduplicated);
}

TEST_F(LocalStoreTest, ListSkipsDeletedKeysAndPages) {
  for (int i = 0; i < 25; ++i) MustPut("user/" + std::to_string(100 + i), "v");
  MustPut("other", "v");
  ASSERT_TRUE(store_->Write({"user/105", true, "", "", ""}).ok());

  std::vector<std::string> keys;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<ListPage> page = store_->List("user/", token, 10);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->keys.size(), 10u);
    keys.insert(keys.end(), page->keys.begin(), page->keys.end());
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(keys.size(), 24u);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "user/105"), 0);
  EXPECT_EQ(pages, 3);

  absl::StatusOr<ListPage> first = store_->List("user/", "", 10);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(store_->List("zzz/", first->next_page_token, 10).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->List("", "***", 10).status()));
  // A token is a key: one longer than any key can be is not a token. One longer than this
  // node's limit is (a key stored under a larger limit, or by a peer with one).
  EXPECT_TRUE(absl::IsInvalidArgument(
      store_->List("", absl::WebSafeBase64Escape(std::string(kMaxKeyBytesCeiling + 1, 'k')), 10)
          .status()));
  EXPECT_TRUE(store_->List("", absl::WebSafeBase64Escape(std::string(1025, 'k')), 10).ok());
}

TEST_F(LocalStoreTest, MergeKeepsConcurrentVersionsFromAnotherReplica) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  MustPut("k", "here");
  absl::StatusOr<WriteOutcome> there = other->Write({"k", false, "there", "", ""});
  ASSERT_TRUE(there.ok());
  absl::StatusOr<SiblingSet> merged = store_->MergeRecord("k", there->record);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(LiveValues("k"), (std::vector<std::string>{"here", "there"}));
  // Merging again changes nothing.
  absl::StatusOr<SiblingSet> again = store_->MergeRecord("k", there->record);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *merged);
}

TEST_F(LocalStoreTest, MergeRecordsMergesEachRecordAndRejectsBadOnesUpFront) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  MustPut("k1", "here");
  absl::StatusOr<WriteOutcome> k1 = other->Write({"k1", false, "there", "", ""});
  absl::StatusOr<WriteOutcome> k2 = other->Write({"k2", false, "only-there", "", ""});
  ASSERT_TRUE(k1.ok() && k2.ok());
  const LocalStore::RemoteRecord records[] = {{"k1", &k1->record}, {"k2", &k2->record}};
  ASSERT_TRUE(store_->MergeRecords(records).ok());
  EXPECT_EQ(LiveValues("k1"), (std::vector<std::string>{"here", "there"}));
  EXPECT_EQ(LiveValues("k2"), (std::vector<std::string>{"only-there"}));
  // An invalid key anywhere in the batch changes nothing.
  absl::StatusOr<WriteOutcome> k3 = other->Write({"k3", false, "v", "", ""});
  ASSERT_TRUE(k3.ok());
  const LocalStore::RemoteRecord bad[] = {{"k3", &k3->record}, {"", &k3->record}};
  EXPECT_TRUE(absl::IsInvalidArgument(store_->MergeRecords(bad)));
  EXPECT_TRUE(LiveValues("k3").empty());
}

// Issue 3, item 4 (C6 across nodes): the first attempt is coordinated here, its retry by n2
// before the first copy reached it; a client reads n2 and overwrites. Whichever record reaches
// which replica first, both end with only the overwrite, byte for byte, also after a restart.
TEST_F(LocalStoreTest, RetryCopyFromAnotherNodeDoesNotComeBackAfterAnOverwrite) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  WriteOutcome first = MustPut("k", "v", "", "tok");
  absl::StatusOr<WriteOutcome> retry = other->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(retry.ok());
  EXPECT_FALSE(retry->deduplicated);  // n2 cannot know of the first copy
  absl::StatusOr<SiblingSet> seen_on_n2 = other->ReadRecord("k");
  ASSERT_TRUE(seen_on_n2.ok());
  absl::StatusOr<WriteOutcome> overwrite =
      other->Write({"k", false, "y", CausalContext(seen_on_n2->context()).Encode(), "tok-y"});
  ASSERT_TRUE(overwrite.ok());

  absl::StatusOr<SiblingSet> mine = store_->ReadRecord("k");
  ASSERT_TRUE(mine.ok());
  absl::StatusOr<SiblingSet> theirs = other->MergeRecord("k", *mine);  // late first copy
  ASSERT_TRUE(theirs.ok());
  absl::StatusOr<SiblingSet> merged_here = store_->MergeRecord("k", overwrite->record);
  ASSERT_TRUE(merged_here.ok());
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"y"});
  EXPECT_EQ(EncodeSiblingSet(*merged_here), EncodeSiblingSet(*theirs));
  EXPECT_TRUE(merged_here->context().Covers(first.dot));

  store_ = OpenStore(&engine_, "n1");  // restart: the memory is part of the record
  EXPECT_TRUE(MustPut("k", "v", "", "tok").deduplicated);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"y"});
}

// The overwrite goes through a node that never held the version the client read: the read's
// context names it (and its fingerprint), so a retry copy made on a third node is still dropped
// when it arrives there, and a retry reaching that node creates nothing.
TEST_F(LocalStoreTest, OverwriteThroughANodeThatNeverHeldTheReadVersionStillReplacesItsCopies) {
  MemoryEngine engine2, engine3;
  std::unique_ptr<LocalStore> n2 = OpenStore(&engine2, "n2");
  std::unique_ptr<LocalStore> n3 = OpenStore(&engine3, "n3");
  WriteOutcome first = MustPut("k", "v", "", "tok");
  absl::StatusOr<WriteOutcome> copy = n2->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(copy.ok());
  absl::StatusOr<WriteOutcome> overwrite = n3->Write({"k", false, "y", ReadContext("k"), "tok-y"});
  ASSERT_TRUE(overwrite.ok());
  ASSERT_EQ(overwrite->record.replaced_writes().size(), 1u);
  EXPECT_EQ(overwrite->record.replaced_writes()[0].dot, first.dot);

  absl::StatusOr<SiblingSet> merged = n3->MergeRecord("k", copy->record);  // the copy arrives
  ASSERT_TRUE(merged.ok());
  ASSERT_EQ(merged->LiveSiblings().size(), 1u);
  EXPECT_EQ(merged->LiveSiblings()[0].value, "y");
  absl::StatusOr<WriteOutcome> retry = n3->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  ASSERT_EQ(n3->ReadRecord("k")->LiveSiblings().size(), 1u);
}

// A retry that reaches a replica where its first copy (coordinated elsewhere) was replicated and
// then overwritten creates nothing: the client already saw it replaced.
TEST_F(LocalStoreTest, RetryOfAWriteReplacedHereIsDeduplicated) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  absl::StatusOr<WriteOutcome> first = other->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(store_->MergeRecord("k", first->record).ok());
  MustPut("k", "y", ReadContext("k"), "tok-y");

  absl::StatusOr<WriteOutcome> retry = store_->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_EQ(retry->dot, first->dot);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"y"});
  // The answer is remembered under the token: once the record has forgotten the replaced copy
  // (it keeps a bounded number), the next retry is still answered with the first write...
  for (int i = 0; i < 20; ++i) MustPut("k", absl::StrCat("z", i), ReadContext("k"), "");
  absl::StatusOr<WriteOutcome> late = store_->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(late->deduplicated);
  EXPECT_EQ(late->dot, first->dot);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"z19"});
  // ...and another value under that token is a client error.
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Write({"k", false, "w", "", "tok"}).status()));
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"z19"});
}

// A retry copy that reaches a replica after more than kMaxReplacedWrites tokened overwrites of
// its key (the record's memory has cut it) is still recognised: what the memory cuts is kept
// in the idempotency column for the retry window. Here n2 coordinated the first copy, so this
// store has no token record for it; the overwrites reach this store as writes through it (key
// "a") or by replication from n2 (key "b").
TEST_F(LocalStoreTest, RetryOfAWriteTheRecordForgotIsStillDeduplicated) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  for (const std::string key : {"a", "b"}) {
    SCOPED_TRACE(key);
    const std::string first_token = key + "-tok";
    absl::StatusOr<WriteOutcome> first = other->Write({key, false, "v", "", first_token});
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(store_->MergeRecord(key, first->record).ok());
    for (size_t i = 0; i <= kMaxReplacedWrites; ++i) {
      clock_.Advance(absl::Seconds(1));  // later writes are the more recent ones to remember
      const std::string value = absl::StrCat("z", i);
      const std::string token = absl::StrCat(key, "-tok-z", i);
      if (key == "a") {
        MustPut(key, value, ReadContext(key), token);
        continue;
      }
      absl::StatusOr<SiblingSet> theirs = other->ReadRecord(key);
      ASSERT_TRUE(theirs.ok());
      absl::StatusOr<WriteOutcome> overwrite = other->Write(
          {key, false, value, store_->ContextForClients(theirs->ClientContext(), key), token});
      ASSERT_TRUE(overwrite.ok());
      ASSERT_TRUE(store_->MergeRecord(key, overwrite->record).ok());
    }
    absl::StatusOr<SiblingSet> record = store_->ReadRecord(key);
    ASSERT_TRUE(record.ok());
    ASSERT_EQ(record->replaced_writes().size(), kMaxReplacedWrites);
    for (const ReplacedWrite& w : record->replaced_writes()) {
      ASSERT_NE(w.dot, first->dot) << "still remembered: " << record->ToString();
    }

    absl::StatusOr<WriteOutcome> retry = store_->Write({key, false, "v", "", first_token});
    ASSERT_TRUE(retry.ok()) << retry.status();
    EXPECT_TRUE(retry->deduplicated);
    EXPECT_EQ(retry->dot, first->dot);
    EXPECT_EQ(LiveValues(key), std::vector<std::string>{absl::StrCat("z", kMaxReplacedWrites)});
  }

  // After the retry window, the same request is a new write.
  clock_.Advance(LocalStore::Options().idempotency_ttl + absl::Minutes(1));
  absl::StatusOr<WriteOutcome> later = store_->Write({"b", false, "v", "", "b-tok"});
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_FALSE(later->deduplicated);
}

// The same, for a retry copy that another replica coordinated and that arrives by replication:
// it is replaced on arrival.
TEST_F(LocalStoreTest, LateCopyOfAWriteTheRecordForgotIsReplacedOnArrival) {
  MemoryEngine engine2, engine3;
  std::unique_ptr<LocalStore> n2 = OpenStore(&engine2, "n2");
  std::unique_ptr<LocalStore> n3 = OpenStore(&engine3, "n3");
  MustPut("k", "v", "", "tok");
  for (size_t i = 0; i <= kMaxReplacedWrites; ++i) {
    MustPut("k", absl::StrCat("z", i), ReadContext("k"), absl::StrCat("tok-z", i));
  }
  absl::StatusOr<WriteOutcome> copy = n3->Write({"k", false, "v", "", "tok"});  // a late retry
  ASSERT_TRUE(copy.ok());
  ASSERT_FALSE(copy->deduplicated);  // n3 knows nothing of the key

  absl::StatusOr<SiblingSet> merged = store_->MergeRecord("k", copy->record);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const std::string last = absl::StrCat("z", kMaxReplacedWrites);
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{last});
  EXPECT_TRUE(merged->context().Covers(copy->dot));  // the drop travels as a replacement
  // A replica that holds only the copy converges to the same record, and so does this one.
  absl::StatusOr<SiblingSet> on_n2 = n2->MergeRecord("k", copy->record);
  ASSERT_TRUE(on_n2.ok());
  on_n2 = n2->MergeRecord("k", *merged);
  ASSERT_TRUE(on_n2.ok());
  ASSERT_EQ(on_n2->LiveSiblings().size(), 1u);
  EXPECT_EQ(on_n2->LiveSiblings()[0].value, last);
  absl::StatusOr<SiblingSet> here = store_->MergeRecord("k", *on_n2);
  ASSERT_TRUE(here.ok());
  EXPECT_EQ(EncodeSiblingSet(*here), EncodeSiblingSet(*on_n2))
      << here->ToString() << " vs " << on_n2->ToString();
}

// A purged tombstone takes the key's tokened history with it; a late retry of a write the
// delete replaced must not bring the value back.
TEST_F(LocalStoreTest, RetryAfterATombstonePurgeDoesNotBringTheWriteBack) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  absl::StatusOr<WriteOutcome> first = other->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(store_->MergeRecord("k", first->record).ok());
  WriteCommand del{"k", /*is_delete=*/true, "", ReadContext("k"), "tok-del"};
  ASSERT_TRUE(store_->Write(del).ok());
  absl::StatusOr<SiblingSet> tombstone = store_->ReadRecord("k");
  ASSERT_TRUE(tombstone.ok());
  ASSERT_TRUE(store_->PurgeIfUnchanged("k", *tombstone).ok());
  ASSERT_TRUE(absl::IsNotFound(store_->ReadRecord("k").status()));

  // A copy another replica coordinated after the purge is replaced when it arrives here...
  MemoryEngine engine3;
  std::unique_ptr<LocalStore> n3 = OpenStore(&engine3, "n3");
  absl::StatusOr<WriteOutcome> copy = n3->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(copy.ok());
  absl::StatusOr<SiblingSet> merged = store_->MergeRecord("k", copy->record);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(merged->LiveSiblings().empty()) << merged->ToString();
  EXPECT_TRUE(merged->context().Covers(copy->dot));  // the drop travels as a replacement
  EXPECT_TRUE(merged->CheckInvariants().ok()) << merged->CheckInvariants();

  // ...and a retry reaching this node is answered with the first write.
  absl::StatusOr<WriteOutcome> retry = store_->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_TRUE(retry->dot == first->dot || retry->dot == copy->dot) << retry->dot.ToString();
  EXPECT_TRUE(LiveValues("k").empty());
}

// A damaged forgotten-write entry weakens deduplication for that one write; it does not fail
// the key's writes or merges.
TEST_F(LocalStoreTest, DamagedForgottenWriteIsIgnored) {
  Sibling probe;
  probe.value = "v";
  probe.idempotency_token = "tok";
  WriteBatch batch;
  batch.Put(Column::kIdempotency, ForgottenWriteKey("k", TokenFingerprint(probe)), "damaged");
  ASSERT_TRUE(engine_.Write(batch, WriteOptions()).ok());

  absl::StatusOr<WriteOutcome> write = store_->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(write.ok()) << write.status();
  EXPECT_FALSE(write->deduplicated);
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  absl::StatusOr<WriteOutcome> copy = other->Write({"k", false, "v", "", "tok"});
  ASSERT_TRUE(copy.ok());
  absl::StatusOr<SiblingSet> merged = store_->MergeRecord("k", copy->record);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(LiveValues("k"), std::vector<std::string>{"v"});  // two copies, shown once
}

// Issue 3, item 4, second part: a token reused (wrongly) with another value through two nodes,
// which cannot detect it, keeps both values visible.
TEST_F(LocalStoreTest, TokenReusedWithAnotherValueOnAnotherNodeKeepsBothValues) {
  MemoryEngine other_engine;
  std::unique_ptr<LocalStore> other = OpenStore(&other_engine, "n2");
  MustPut("k", "v1", "", "tok");
  absl::StatusOr<WriteOutcome> there = other->Write({"k", false, "v2", "", "tok"});
  ASSERT_TRUE(there.ok());
  ASSERT_TRUE(store_->MergeRecord("k", there->record).ok());
  EXPECT_EQ(LiveValues("k"), (std::vector<std::string>{"v1", "v2"}));
  // On a third replica holding both, a retry of either use finds its copy; a third value is
  // rejected.
  MemoryEngine third_engine;
  std::unique_ptr<LocalStore> third = OpenStore(&third_engine, "n3");
  absl::StatusOr<SiblingSet> both = store_->ReadRecord("k");
  ASSERT_TRUE(both.ok());
  ASSERT_TRUE(third->MergeRecord("k", *both).ok());
  absl::StatusOr<WriteOutcome> retry = third->Write({"k", false, "v2", "", "tok"});
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->deduplicated);
  EXPECT_EQ(retry->dot, there->dot);
  EXPECT_TRUE(absl::IsInvalidArgument(third->Write({"k", false, "v3", "", "tok"}).status()));
  absl::StatusOr<SiblingSet> after = third->ReadRecord("k");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *both);
}

// Riak's KV679: a node that lost its data must not reuse its old dots, or its new writes look
// already seen and are dropped by replicas that hold the old ones.
TEST_F(LocalStoreTest, WipedNodeDoesNotReuseDots) {
  WriteOutcome old_write = MustPut("k", "before-wipe");
  MemoryEngine wiped;
  std::unique_ptr<LocalStore> reborn = OpenStore(&wiped, "n1");
  absl::StatusOr<WriteOutcome> new_write = reborn->Write({"k", false, "after-wipe", "", ""});
  ASSERT_TRUE(new_write.ok());
  EXPECT_NE(new_write->dot, old_write.dot);
  ASSERT_TRUE(store_->MergeRecord("k", new_write->record).ok());
  EXPECT_EQ(LiveValues("k"), (std::vector<std::string>{"after-wipe", "before-wipe"}));
}

TEST_F(LocalStoreTest, WriteIdsRoundTrip) {
  WriteOutcome out = MustPut(std::string("bin\0key/", 8), "v");
  Dot dot;
  std::string key;
  ASSERT_TRUE(ParseWriteId(out.write_id, &dot, &key).ok());
  EXPECT_EQ(dot, out.dot);
  EXPECT_EQ(key, std::string("bin\0key/", 8));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseWriteId("nonsense", &dot, &key)));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseWriteId("a:0/aw", &dot, &key)));
  // Actors no node makes: an epoch that is not 12 lowercase hex digits, or no node id.
  for (const char* id : {"c1#zz:1/eDE", "n1#abc:7/aw", "n1#BA2BAB5E55DC:1/aw", "n1:1/aw",
                         "#ba2bab5e55dc:1/aw", "n 1#ba2bab5e55dc:1/aw"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseWriteId(id, &dot, &key))) << id;
  }
  ASSERT_TRUE(ParseWriteId("n1#ba2bab5e55dc:1/aw", &dot, &key).ok());
  EXPECT_EQ(dot, (Dot{"n1#ba2bab5e55dc", 1}));
}

// Concurrent read-modify-write clients on one key: no write is lost (each creates one dot) and
// siblings stay bounded by the number of writers.
TEST_F(LocalStoreTest, ConcurrentWritersLoseNothing) {
  constexpr int kWriters = 4;
  constexpr int kWritesEach = 50;
  std::vector<std::thread> threads;
  std::vector<std::vector<Dot>> dots(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::string context;
      for (int i = 0; i < kWritesEach; ++i) {
        absl::StatusOr<WriteOutcome> out =
            store_->Write({"k", false, absl::StrCat(w, "-", i), context, ""});
        ASSERT_TRUE(out.ok()) << out.status();
        dots[w].push_back(out->dot);
        context = out->context;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<std::string> unique;
  for (const auto& per_writer : dots) {
    for (const Dot& d : per_writer) unique.insert(d.ToString());
  }
  EXPECT_EQ(unique.size(), static_cast<size_t>(kWriters * kWritesEach));
  // Each writer's latest value survives; everything it replaced is gone.
  std::vector<std::string> values = LiveValues("k");
  EXPECT_EQ(values.size(), static_cast<size_t>(kWriters));
  for (int w = 0; w < kWriters; ++w) {
    EXPECT_EQ(std::count(values.begin(), values.end(), absl::StrCat(w, "-", kWritesEach - 1)), 1);
  }
}

}  // namespace
}  // namespace kv

// UnownedRecordCleaner on one node (n1) over a real LocalStore, MerkleIndex and ReplicationOutbox
// on a MemoryEngine, with a transport that holds replication calls until the test answers them,
// on a manual clock. n1 held every key of a 3-node ring (N=3); after n4 joins it owns about 3/4.
#include "node/unowned_record_cleaner.h"

#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/merkle_index.h"
#include "node/replication_outbox.h"
#include "storage/memory_engine.h"
#include "tests/manual_scheduler.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

constexpr size_t kN = 3;

using testing::ManualScheduler;
using testing::QueueExecutor;

// Holds MergeRecords calls until AnswerAll.
class HoldingTransport : public testing::StubPeerTransport {
 public:
  void MergeRecords(const Member&, std::vector<EncodedRecord>,
                    std::function<void(absl::Status)> done) override {
    held_.push_back(std::move(done));
  }
  void AnswerAll(QueueExecutor* executor) {
    while (!held_.empty()) {
      std::vector<std::function<void(absl::Status)>> now = std::move(held_);
      held_.clear();
      for (auto& done : now) done(absl::OkStatus());
      executor->Drain();
    }
  }

 private:
  std::vector<std::function<void(absl::Status)>> held_;
};

Member M(const std::string& id) { return Member{id, id + ":7000", ""}; }

std::shared_ptr<const Placement> MakePlacement(uint64_t version, std::vector<Member> members,
                                               std::vector<Member> next = {}) {
  ClusterLayout layout;
  layout.version = version;
  layout.members = std::move(members);
  layout.next = std::move(next);
  return *Placement::Create(layout);
}

class UnownedRecordCleanerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    before_ = MakePlacement(1, {M("n1"), M("n2"), M("n3")});
    transition_ =
        MakePlacement(2, {M("n1"), M("n2"), M("n3")}, {M("n1"), M("n2"), M("n3"), M("n4")});
    after_ = MakePlacement(3, {M("n1"), M("n2"), M("n3"), M("n4")});
    holder_ = std::make_unique<PlacementHolder>(before_);
    index_ = std::make_unique<MerkleIndex>("n1", before_->current_ptr(), kN, &engine_);
    store_ = *LocalStore::Open(&engine_, &clock_, rng_, "n1", LocalStore::Options());
    store_->SetObserver(index_.get());
    outbox_ = std::make_unique<ReplicationOutbox>(std::vector<Member>{M("n2"), M("n3"), M("n4")},
                                                  &engine_, &transport_, &scheduler_, &executor_,
                                                  rng_, ReplicationOutbox::Options());
    ASSERT_TRUE(outbox_->Recover().ok());
    MakeCleaner();
    for (int i = 0; i < 200; ++i) {
      const std::string key = absl::StrCat("key-", i);
      Write(key, /*replicate_to_n4=*/false);
      (after_->current().IsReplica(key, kN, "n1") ? owned_ : lost_).insert(key);
    }
    ASSERT_GT(lost_.size(), 20u);
    ASSERT_GT(owned_.size(), 100u);
  }

  // A write of `key` on n1; with replicate_to_n4, its outbox entry for n4 stays unsent until the
  // transport answers.
  void Write(const std::string& key, bool replicate_to_n4, bool is_delete = false) {
    std::vector<OutboxEntry> entries;
    LocalStore::BatchHook hook;
    if (replicate_to_n4) {
      hook = [&](absl::string_view k, WriteBatch* batch) {
        entries = outbox_->AddEntries(k, {"n4"}, batch);
      };
    }
    absl::StatusOr<WriteOutcome> w = store_->Write({key, is_delete, "v", "", ""}, hook);
    ASSERT_TRUE(w.ok()) << w.status();
    if (!entries.empty()) outbox_->Submit(entries, nullptr);
    executor_.Drain();
  }

  bool Holds(const std::string& key) { return store_->ReadRecord(key).ok(); }

  void MakeCleaner() {
    UnownedRecordCleaner::Options options;
    options.replication_factor = kN;
    options.keys_per_step = 16;
    options.keys_per_second = 1000;
    options.confirm_delay = absl::Seconds(5);
    options.retry = absl::Seconds(30);
    cleaner_ = std::make_unique<UnownedRecordCleaner>(
        "n1", holder_.get(), store_.get(), &engine_, &scheduler_, &executor_, &clock_, options,
        [this](absl::string_view key) { return outbox_->MayHaveEntriesFor(key); });
    cleaner_->SetCleanListener([this](uint64_t version) { cleaned_.push_back(version); });
  }

  void Install(std::shared_ptr<const Placement> placement) {
    holder_->Set(placement);
    cleaner_->OnPlacement(placement);
  }

  ManualClock clock_;
  QueueExecutor executor_;
  ManualScheduler scheduler_{&clock_, &executor_};
  std::mt19937_64 rng_{7};
  MemoryEngine engine_;
  HoldingTransport transport_;
  std::shared_ptr<const Placement> before_, transition_, after_;
  std::unique_ptr<PlacementHolder> holder_;
  std::unique_ptr<MerkleIndex> index_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<ReplicationOutbox> outbox_;
  std::unique_ptr<UnownedRecordCleaner> cleaner_;
  std::set<std::string> owned_, lost_;  // under the 4-node ring
  std::vector<uint64_t> cleaned_;       // the versions the clean listener was told
};

TEST_F(UnownedRecordCleanerTest, RemovesExactlyTheKeysNoLongerOwnedButNotThoseStillOwed) {
  // Three lost keys have a write whose entry for n4 is unsent; one lost key is a tombstone.
  std::vector<std::string> owed(lost_.begin(), std::next(lost_.begin(), 3));
  for (const std::string& key : owed) Write(key, /*replicate_to_n4=*/true);
  const std::string tombstone = *std::next(lost_.begin(), 3);
  Write(tombstone, false, /*is_delete=*/true);

  Install(transition_);  // nothing during a transition
  scheduler_.Advance(absl::Minutes(1));
  EXPECT_EQ(cleaner_->Stats().scanned, 0u);
  for (const std::string& key : lost_) ASSERT_TRUE(Holds(key)) << key;

  Install(after_);
  scheduler_.Advance(absl::Seconds(10));  // 200 keys at 1000/s, then the 5s confirm delay
  UnownedRecordCleanerStats stats = cleaner_->Stats();
  EXPECT_EQ(stats.layout_version, 3u);
  EXPECT_EQ(stats.passes, 1u);
  EXPECT_EQ(stats.scanned, 200u);
  EXPECT_EQ(stats.removed, lost_.size() - owed.size());
  EXPECT_EQ(stats.kept_pending, owed.size());
  EXPECT_TRUE(stats.running) << "a pass that kept keys is followed by another";
  EXPECT_TRUE(cleaned_.empty()) << "a pass that kept keys was reported clean";
  for (const std::string& key : owned_) EXPECT_TRUE(Holds(key)) << key;
  for (const std::string& key : lost_) {
    const bool is_owed = std::find(owed.begin(), owed.end(), key) != owed.end();
    EXPECT_EQ(Holds(key), is_owed) << key;
    // The Merkle index saw the removal as a record change.
    absl::StatusOr<std::optional<uint64_t>> digest = index_->StoredDigest(key);
    ASSERT_TRUE(digest.ok());
    EXPECT_EQ(digest->has_value(), is_owed) << key;
  }
  EXPECT_FALSE(Holds(tombstone));

  // Once n4 confirmed the writes, the next pass removes those keys too, and no pass follows.
  transport_.AnswerAll(&executor_);
  scheduler_.Advance(absl::Seconds(40));
  stats = cleaner_->Stats();
  EXPECT_EQ(stats.passes, 2u);
  EXPECT_EQ(stats.removed, lost_.size());
  EXPECT_FALSE(stats.running);
  for (const std::string& key : owed) EXPECT_FALSE(Holds(key)) << key;
  for (const std::string& key : owned_) EXPECT_TRUE(Holds(key)) << key;
  EXPECT_EQ(cleaned_, std::vector<uint64_t>{3});
}

// Purging on a ring waits for every owner's word that its clean-up pass there kept nothing.
// Two strays a pass cannot treat like the others: a record that no longer decodes (corrupt) is
// left alone, and a key longer than max_key_bytes (lowered since it was stored) is removed.
// Neither holds up the report that lets tombstones be purged on the ring.
TEST_F(UnownedRecordCleanerTest, ACorruptOrOverLongStrayDoesNotHoldUpTheReport) {
  const std::string corrupt = *lost_.begin();
  WriteBatch garbage;
  garbage.Put(Column::kData, corrupt, "not a record");
  ASSERT_TRUE(engine_.Write(garbage, WriteOptions{}).ok());
  std::string long_key;
  for (int i = 0; long_key.empty() || after_->current().IsReplica(long_key, kN, "n1"); ++i) {
    long_key = absl::StrCat(std::string(100, 'x'), i);
  }
  Write(long_key, /*replicate_to_n4=*/false);
  // The node restarts with max_key_bytes lowered to 64.
  cleaner_.reset();
  LocalStore::Options lowered;
  lowered.limits.max_key_bytes = 64;
  store_ = *LocalStore::Open(&engine_, &clock_, rng_, "n1", lowered);
  store_->SetObserver(index_.get());
  MakeCleaner();

  Install(transition_);
  Install(after_);
  scheduler_.Advance(absl::Seconds(10));
  const UnownedRecordCleanerStats stats = cleaner_->Stats();
  EXPECT_EQ(stats.unreadable, 1u);
  EXPECT_THAT(stats.last_error, ::testing::HasSubstr("cannot read"));
  EXPECT_EQ(stats.kept_changed + stats.kept_pending, 0u) << stats.last_error;
  EXPECT_TRUE(engine_.Get(Column::kData, corrupt).ok());
  EXPECT_TRUE(absl::IsNotFound(engine_.Get(Column::kData, long_key).status()));
  for (const std::string& key : lost_) {
    if (key != corrupt) {
      EXPECT_FALSE(Holds(key)) << key;
    }
  }
  EXPECT_EQ(cleaned_, std::vector<uint64_t>{3});
}

TEST(StraysClearedTest, EveryOwnerMustHaveCleanedUpOnTheRing) {
  const ClusterLayout layout = MakePlacement(3, {M("n1"), M("n2"), M("n3")})->layout();
  auto view = [](const std::string& id, uint64_t clean) {
    MemberView v;
    v.entry.member = M(id);
    v.entry.clean_layout_version = clean;
    return v;
  };
  EXPECT_TRUE(StraysCleared(layout, {view("n1", 3), view("n2", 3), view("n3", 4)}));
  EXPECT_FALSE(StraysCleared(layout, {view("n1", 3), view("n2", 1), view("n3", 3)}));
  EXPECT_FALSE(StraysCleared(layout, {view("n1", 3), view("n3", 3)}));  // n2 not heard from
  // The first layout has nothing to clean up; a transition never purges.
  EXPECT_TRUE(StraysCleared(MakePlacement(1, {M("n1"), M("n2")})->layout(), {}));
  EXPECT_FALSE(
      StraysCleared(MakePlacement(4, {M("n1"), M("n2")}, {M("n1"), M("n2"), M("n3")})->layout(),
                    {view("n1", 9), view("n2", 9), view("n3", 9)}));
}

TEST_F(UnownedRecordCleanerTest, KeepsRecordsThatChangeOrANewerLayoutWhileWaiting) {
  Install(after_);
  scheduler_.Advance(absl::Seconds(1));  // all 200 read; the lost ones wait out the delay
  EXPECT_EQ(cleaner_->Stats().scanned, 200u);
  const std::string changed = *lost_.begin();
  Write(changed, false);  // e.g. a handoff record of the next change arriving
  scheduler_.Advance(absl::Seconds(5));
  EXPECT_TRUE(Holds(changed));
  EXPECT_EQ(cleaner_->Stats().kept_changed, 1u);
  EXPECT_EQ(cleaner_->Stats().removed, lost_.size() - 1);

  // Another change starts before the retry: the pass ends and nothing more is removed.
  Install(MakePlacement(4, after_->layout().members, {M("n1"), M("n2"), M("n3")}));
  scheduler_.Advance(absl::Minutes(2));
  EXPECT_TRUE(Holds(changed));
  EXPECT_FALSE(cleaner_->Stats().running);
}

TEST_F(UnownedRecordCleanerTest, ANodeOutsideTheLayoutRemovesNothing) {
  Install(MakePlacement(3, {M("n2"), M("n3"), M("n4")}));
  scheduler_.Advance(absl::Minutes(1));
  EXPECT_EQ(cleaner_->Stats().scanned, 0u);
  for (const std::string& key : lost_) EXPECT_TRUE(Holds(key)) << key;
}

}  // namespace
}  // namespace kv

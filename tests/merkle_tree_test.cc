// MerkleTree and MerkleIndex: incremental trees equal trees rebuilt from scratch under random
// changes (seeded), diffs find exactly the differing segments, and a build that runs while
// records change ends with the same trees as one built after.
#include "node/merkle_tree.h"

#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/merkle_index.h"
#include "storage/memory_engine.h"
#include "storage/record_codec.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

MerkleTree Rebuilt(const std::map<std::string, uint64_t>& entries) {
  MerkleTree tree;
  for (const auto& [key, digest] : entries) tree.ToggleEntry(key, digest);
  return tree;
}

TEST(MerkleTreeTest, IncrementalEqualsRebuiltUnderRandomChanges) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::mt19937_64 rng(seed);
    std::map<std::string, uint64_t> entries;
    MerkleTree tree;
    for (int step = 0; step < 5000; ++step) {
      const std::string key = absl::StrCat("k", rng() % 700);
      auto it = entries.find(key);
      if (it != entries.end()) tree.ToggleEntry(key, it->second);  // remove the old entry
      if (rng() % 4 == 0) {
        if (it != entries.end()) entries.erase(it);
      } else {
        const uint64_t digest = rng();
        entries[key] = digest;
        tree.ToggleEntry(key, digest);
      }
    }
    EXPECT_TRUE(tree == Rebuilt(entries)) << "seed " << seed;
    uint64_t root = 0;
    for (uint64_t h : tree.interior()) root ^= h;
    EXPECT_EQ(root, tree.root()) << "seed " << seed;
  }
}

TEST(MerkleTreeTest, EmptyTreeHasZeroRootAndOrderDoesNotMatter) {
  MerkleTree a, b;
  EXPECT_EQ(a.root(), 0u);
  a.ToggleEntry("x", 1);
  a.ToggleEntry("y", 2);
  b.ToggleEntry("y", 2);
  b.ToggleEntry("x", 1);
  EXPECT_TRUE(a == b);
  a.ToggleEntry("x", 1);
  a.ToggleEntry("y", 2);
  EXPECT_TRUE(a == MerkleTree());
}

TEST(MerkleTreeTest, DiffFindsExactlyTheDifferingSegments) {
  std::mt19937_64 rng(7);
  std::map<std::string, uint64_t> base;
  for (int i = 0; i < 3000; ++i) base[absl::StrCat("key", i)] = rng();
  std::map<std::string, uint64_t> other = base;
  std::set<uint32_t> expected;
  for (int i = 0; i < 40; ++i) {
    const std::string key = absl::StrCat("key", rng() % 3000);
    other[key] ^= 1;  // a different digest
    expected.insert(MerkleTree::SegmentOf(key));
  }
  other["only-in-other"] = 5;
  expected.insert(MerkleTree::SegmentOf("only-in-other"));
  const MerkleTree a = Rebuilt(base);
  const MerkleTree b = Rebuilt(other);
  std::set<uint32_t> found;
  for (uint32_t interior : DifferingIndexes(a.interior(), b.interior())) {
    for (uint32_t i : DifferingIndexes(a.LeavesOf(interior), b.LeavesOf(interior))) {
      found.insert(interior * MerkleTree::kLeavesPerInterior + i);
    }
  }
  EXPECT_EQ(found, expected);
  EXPECT_NE(a.root(), b.root());
}

TEST(MerkleTreeTest, SegmentIsTheTopOfTheRingPosition) {
  EXPECT_EQ(MerkleTree::SegmentOf("abc"), HashRing::KeyHash("abc") >> 48);
}

// MerkleIndex over a MemoryEngine, fed by hand as LocalStore would feed it.
class MerkleIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<Member> members;
    for (const char* id : {"a", "b", "c", "d"}) members.push_back(Member{id, "h:1", ""});
    ring_ = std::make_shared<const HashRing>(HashRing::Build(members).value());
  }

  static SiblingSet Record(const std::string& value, uint64_t counter) {
    VersionVector vv;
    vv.Advance("w#1", counter);
    Sibling s;
    s.dot = Dot{"w#1", counter};
    s.value = value;
    return SiblingSet(vv, {s});
  }

  // Changes `key` to `value` (empty: purged) through `index`, writing its batch to the engine,
  // under `changing_` as a store's committing thread would: RunAtCut runs between two changes.
  void Change(MerkleIndex& index, const std::string& key, const std::string& value) {
    std::lock_guard<std::mutex> lock(changing_);
    auto it = records_.find(key);
    std::optional<SiblingSet> next;
    if (!value.empty()) next = Record(value, ++counter_);
    WriteBatch batch;
    const std::string old_encoded =
        it == records_.end() ? std::string() : EncodeSiblingSet(it->second);
    const std::string new_encoded = next ? EncodeSiblingSet(*next) : std::string();
    index.OnRecordChange(key, it == records_.end() ? nullptr : &old_encoded,
                         next ? &new_encoded : nullptr, &batch);
    if (next) {
      batch.Put(Column::kData, key, EncodeSiblingSet(*next));
      records_[key] = *next;
    } else {
      batch.Delete(Column::kData, key);
      records_.erase(key);
    }
    ASSERT_TRUE(engine_.Write(batch, WriteOptions{}).ok());
  }

  // The commit cut of an index whose changes Change makes (MerkleIndex::SetCommitCut).
  void RunAtCut(const std::function<void()>& at_cut) {
    std::lock_guard<std::mutex> lock(changing_);
    at_cut();
  }

  std::shared_ptr<const HashRing> ring_;
  MemoryEngine engine_;
  std::mutex changing_;  // held by Change and RunAtCut
  std::map<std::string, SiblingSet> records_;
  uint64_t counter_ = 0;
};

// With zones on some members only, the reaper of a key (IsPrimary) is the first of its N
// replicas on exactly one node: a preference list of one can start elsewhere, and the keys
// whose first replica is not that node's would never be purged.
TEST(MerkleIndexPrimaryTest, ExactlyOneNodeIsPrimaryTheFirstOfTheKeysReplicas) {
  absl::StatusOr<HashRing> ring =
      HashRing::Build({Member{"n1", "h:1", "z1"}, Member{"n2", "h:2", ""}, Member{"n3", "h:3", ""},
                       Member{"n4", "h:4", ""}});
  ASSERT_TRUE(ring.ok()) << ring.status();
  auto shared = std::make_shared<const HashRing>(*std::move(ring));
  MemoryEngine engine;
  std::vector<std::unique_ptr<MerkleIndex>> indexes;
  for (const char* id : {"n1", "n2", "n3", "n4"}) {
    indexes.push_back(std::make_unique<MerkleIndex>(id, shared, 3, &engine));
  }
  for (int i = 0; i < 200; ++i) {
    const std::string key = absl::StrCat("key-", i);
    int primaries = 0;
    for (const auto& index : indexes) {
      if (!index->IsPrimary(key)) continue;
      ++primaries;
      EXPECT_EQ(index->self_id(), index->Replicas(key).front().id) << key;
    }
    EXPECT_EQ(primaries, 1) << key;
  }
}

TEST_F(MerkleIndexTest, BuildConcurrentWithChangesEqualsBuildAfter) {
  std::mt19937_64 rng(11);
  {
    MerkleIndex before("a", ring_, 3, &engine_);
    for (int i = 0; i < 8000; ++i) Change(before, absl::StrCat("k", rng() % 6000), "v");
  }
  // A new incarnation observes from the start and builds on another thread while records keep
  // changing (some before the build starts, many while it scans, some after).
  MerkleIndex during("a", ring_, 3, &engine_);
  during.SetCommitCut([this](const std::function<void()>& at_cut) { RunAtCut(at_cut); });
  for (int i = 0; i < 100; ++i) Change(during, absl::StrCat("k", rng() % 7000), "early");
  absl::Status built;
  std::thread builder([&] { built = during.Build(); });
  for (int i = 0; i < 3000; ++i) {
    Change(during, absl::StrCat("k", rng() % 7000), i % 5 == 0 ? "" : absl::StrCat("v", i));
  }
  builder.join();
  ASSERT_TRUE(built.ok()) << built;
  EXPECT_TRUE(during.ready());
  for (int i = 0; i < 200; ++i) {
    Change(during, absl::StrCat("k", rng() % 7000), i % 7 == 0 ? "" : absl::StrCat("w", i));
  }
  MerkleIndex after("a", ring_, 3, &engine_);
  ASSERT_TRUE(after.Build().ok());
  for (const Member& peer : during.peers()) {
    for (MerkleLevel level : {MerkleLevel::kRoot, MerkleLevel::kInterior}) {
      EXPECT_EQ(during.Nodes(peer.id, level, {}).value(), after.Nodes(peer.id, level, {}).value())
          << "peer " << peer.id;
    }
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(during.Build()));
}

// A scan with a rate reads no faster than it (it sleeps between chunks, on the monotonic clock)
// and builds the same trees as one without.
TEST_F(MerkleIndexTest, AScanWithARateReadsNoFasterAndBuildsTheSameTrees) {
  {
    MerkleIndex writer("a", ring_, 3, &engine_);
    for (int i = 0; i < 8192; ++i) Change(writer, absl::StrCat("k", i), "v");
  }
  MerkleIndex paced("a", ring_, 3, &engine_);
  paced.SetScanRate(40'000);
  const absl::Time start = SteadyNow();
  ASSERT_TRUE(paced.Build().ok());
  // 8192 entries at 40,000 a second: the scan sleeps until 0.2048 s after its start.
  EXPECT_GE(SteadyNow() - start, absl::Milliseconds(200));
  MerkleIndex unpaced("a", ring_, 3, &engine_);
  ASSERT_TRUE(unpaced.Build().ok());
  for (const Member& peer : paced.peers()) {
    EXPECT_EQ(paced.Nodes(peer.id, MerkleLevel::kInterior, {}).value(),
              unpaced.Nodes(peer.id, MerkleLevel::kInterior, {}).value())
        << "peer " << peer.id;
  }
}

// StopScans ends a slow scan at once (CANCELLED, not ready), and every later one, so that a
// shutdown does not wait for it.
TEST_F(MerkleIndexTest, StopScansEndsAPacedScanAtItsNextChunk) {
  {
    MerkleIndex writer("a", ring_, 3, &engine_);
    for (int i = 0; i < 8192; ++i) Change(writer, absl::StrCat("k", i), "v");
  }
  MerkleIndex index("a", ring_, 3, &engine_);
  index.SetScanRate(100);  // ten seconds for each chunk of 1,024 entries
  absl::Status built;
  absl::Time ended;
  std::thread builder([&] {
    built = index.Build();
    ended = SteadyNow();
  });
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time stopped = SteadyNow();
  index.StopScans();
  builder.join();
  EXPECT_TRUE(absl::IsCancelled(built)) << built;
  EXPECT_LT(ended - stopped, absl::Seconds(2));
  EXPECT_FALSE(index.ready());
  // A later scan (a ring change) ends the same way.
  EXPECT_TRUE(absl::IsCancelled(index.ChangeRing(ring_)));
}

TEST_F(MerkleIndexTest, SegmentEntriesListOnlyKeysBothReplicate) {
  MerkleIndex index("a", ring_, 2, &engine_);
  ASSERT_TRUE(index.Build().ok());
  std::vector<uint32_t> segments;
  for (int i = 0; i < 200; ++i) {
    const std::string key = absl::StrCat("key", i);
    Change(index, key, "v");
    segments.push_back(MerkleTree::SegmentOf(key));
  }
  std::sort(segments.begin(), segments.end());
  segments.erase(std::unique(segments.begin(), segments.end()), segments.end());
  size_t listed = 0;
  for (size_t begin = 0; begin < segments.size(); begin += 100) {
    std::vector<uint32_t> chunk(segments.begin() + begin,
                                segments.begin() + std::min(segments.size(), begin + 100));
    std::vector<KeyDigest> entries = index.SegmentEntries("b", chunk).value().entries;
    for (const KeyDigest& e : entries) {
      EXPECT_TRUE(index.Shares(e.key, "b")) << e.key;
      EXPECT_EQ(e.digest, MerkleTree::RecordDigest(EncodeSiblingSet(records_.at(e.key))));
    }
    listed += entries.size();
  }
  size_t shared = 0;
  for (const auto& [key, record] : records_) shared += index.Shares(key, "b") ? 1 : 0;
  EXPECT_EQ(listed, shared);
  EXPECT_GT(shared, 0u);
  EXPECT_FALSE(index.SegmentEntries("nobody", {1}).ok());
  EXPECT_FALSE(index.SegmentEntries("b", {70000}).ok());
}

// With a byte limit the answer is the entries of whole segments, from the first, up to the one
// at which they reach the limit; asking again from the next segment lists the same entries as
// one answer without a limit.
TEST(MerkleIndexLimitTest, APeerCannotAskForAnUnboundedSegmentKeysAnswer) {
  constexpr size_t kMax = MerkleIndex::kMaxSegmentKeysAnswerBytes;
  EXPECT_EQ(MerkleIndex::SegmentKeysAnswerLimit(0), kMax);  // "no limit" from an older node
  EXPECT_EQ(MerkleIndex::SegmentKeysAnswerLimit(kMax + 1), kMax);
  EXPECT_EQ(MerkleIndex::SegmentKeysAnswerLimit(~uint64_t{0}), kMax);
  EXPECT_EQ(MerkleIndex::SegmentKeysAnswerLimit(kMax), kMax);
  EXPECT_EQ(MerkleIndex::SegmentKeysAnswerLimit(1), 1u);
  EXPECT_EQ(MerkleIndex::SegmentKeysAnswerLimit(4 << 20), size_t{4} << 20);
}

TEST_F(MerkleIndexTest, SegmentEntriesWithAByteLimitAnswerWholeLeadingSegments) {
  MerkleIndex index("a", ring_, 2, &engine_);
  ASSERT_TRUE(index.Build().ok());
  std::vector<uint32_t> segments;
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("key", i);
    Change(index, key, "v");
    segments.push_back(MerkleTree::SegmentOf(key));
  }
  std::sort(segments.begin(), segments.end());
  segments.erase(std::unique(segments.begin(), segments.end()), segments.end());
  ASSERT_LE(segments.size(), MerkleIndex::kMaxSegmentsPerCall);
  const SegmentKeyList all = index.SegmentEntries("b", segments).value();
  EXPECT_EQ(all.segments, segments.size());

  const size_t kLimit = 60;  // about 3 entries
  std::vector<KeyDigest> paged;
  size_t calls = 0;
  for (size_t next = 0; next < segments.size(); ++calls) {
    // Unsorted and with a repeat: answered in increasing order all the same.
    std::vector<uint32_t> ask(segments.begin() + next, segments.end());
    std::reverse(ask.begin(), ask.end());
    ask.push_back(ask.front());
    const SegmentKeyList page = index.SegmentEntries("b", ask, kLimit).value();
    ASSERT_GE(page.segments, 1u);
    ASSERT_LE(next + page.segments, segments.size());
    const uint32_t last = segments[next + page.segments - 1];
    size_t bytes = 0;
    size_t bytes_before_last = 0;
    for (const KeyDigest& e : page.entries) {
      const uint32_t segment = MerkleTree::SegmentOf(e.key);
      EXPECT_GE(segment, segments[next]);
      EXPECT_LE(segment, last);
      bytes += e.key.size() + MerkleIndex::kSegmentKeyOverheadBytes;
      if (segment < last) bytes_before_last = bytes;
    }
    // It stopped at the first segment at which the entries reached the limit, not later.
    EXPECT_LT(bytes_before_last, kLimit);
    if (next + page.segments < segments.size()) {
      EXPECT_GE(bytes, kLimit);
    }
    paged.insert(paged.end(), page.entries.begin(), page.entries.end());
    next += page.segments;
  }
  EXPECT_GT(calls, 10u);
  ASSERT_EQ(paged.size(), all.entries.size());
  for (size_t i = 0; i < paged.size(); ++i) {
    EXPECT_EQ(paged[i].key, all.entries[i].key);
    EXPECT_EQ(paged[i].digest, all.entries[i].digest);
  }
}

TEST_F(MerkleIndexTest, NodesUnavailableUntilBuilt) {
  MerkleIndex index("a", ring_, 3, &engine_);
  EXPECT_TRUE(absl::IsUnavailable(index.Nodes("b", MerkleLevel::kRoot, {}).status()));
  ASSERT_TRUE(index.Build().ok());
  EXPECT_EQ(index.Nodes("b", MerkleLevel::kLeaves, {0, 255}).value().size(), 512u);
  EXPECT_TRUE(absl::IsInvalidArgument(index.Nodes("b", MerkleLevel::kLeaves, {256}).status()));
}

TEST_F(MerkleIndexTest, BackfillIndexesAnOldDatabaseOnce) {
  WriteBatch batch;
  batch.Put(Column::kData, "old", EncodeSiblingSet(Record("v", 1)));
  ASSERT_TRUE(engine_.Write(batch, WriteOptions{}).ok());
  ASSERT_TRUE(BackfillMerkleIndex(&engine_).ok());
  EXPECT_TRUE(engine_.Get(Column::kMerkle, MerkleIndex::IndexKey("old")).ok());
  ASSERT_TRUE(BackfillMerkleIndex(&engine_).ok());
  EXPECT_EQ(engine_.ApproximateCount(Column::kMerkle), 1u);
}

}  // namespace
}  // namespace kv

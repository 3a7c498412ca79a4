// HashRing: stable placement, even spread, minimal movement on membership change, zones.
#include "node/ring.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kv {
namespace {

std::vector<Member> MakeMembers(int count, int zones = 0) {
  std::vector<Member> members;
  for (int i = 1; i <= count; ++i) {
    members.push_back({absl::StrCat("n", i), absl::StrCat("127.0.0.1:", 7700 + i),
                       zones > 0 ? absl::StrCat("z", i % zones) : ""});
  }
  return members;
}

HashRing MustBuild(std::vector<Member> members) {
  absl::StatusOr<HashRing> ring = HashRing::Build(std::move(members));
  EXPECT_TRUE(ring.ok()) << ring.status();
  return *std::move(ring);
}

std::vector<std::string> Ids(const std::vector<const Member*>& list) {
  std::vector<std::string> ids;
  for (const Member* m : list) ids.push_back(m->id);
  return ids;
}

// The hash is part of the on-disk and cross-process contract: it must never change.
TEST(HashRingTest, KeyHashIsFixed) {
  EXPECT_EQ(HashRing::KeyHash(""), 0xef46db3751d8e999ULL);  // XXH64 of the empty input, seed 0
  EXPECT_EQ(HashRing::KeyHash("abc"), HashRing::KeyHash(std::string("abc")));
  EXPECT_NE(HashRing::KeyHash("abc"), HashRing::KeyHash("abd"));
}

TEST(HashRingTest, PreferenceListsAreDistinctAndOrderIndependentOfInput) {
  std::vector<Member> members = MakeMembers(5);
  HashRing a = MustBuild(members);
  std::reverse(members.begin(), members.end());
  HashRing b = MustBuild(members);
  for (int i = 0; i < 1000; ++i) {
    std::string key = absl::StrCat("key-", i);
    std::vector<std::string> ids = Ids(a.PreferenceList(key, 3));
    ASSERT_EQ(ids.size(), 3u);
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 3u);
    EXPECT_EQ(ids, Ids(b.PreferenceList(key, 3)));
    EXPECT_TRUE(a.IsReplica(key, 3, ids[2]));
  }
  EXPECT_EQ(a.PreferenceList("k", 10).size(), 5u);  // capped by the member count
}

TEST(HashRingTest, KeysSpreadEvenly) {
  for (int nodes : {3, 5}) {
    HashRing ring = MustBuild(MakeMembers(nodes));
    std::map<std::string, int> primaries, replicas;
    constexpr int kKeys = 60000;
    for (int i = 0; i < kKeys; ++i) {
      std::vector<const Member*> list = ring.PreferenceList(absl::StrCat("user:", i), 3);
      ++primaries[list[0]->id];
      for (const Member* m : list) ++replicas[m->id];
    }
    for (const auto& [id, count] : primaries) {
      double share = static_cast<double>(count) / kKeys;
      EXPECT_NEAR(share, 1.0 / nodes, 0.25 / nodes) << id << " with " << nodes << " nodes";
    }
    for (const auto& [id, count] : replicas) {
      double share = static_cast<double>(count) / (3.0 * kKeys);
      EXPECT_NEAR(share, 1.0 / nodes, 0.25 / nodes) << id << " with " << nodes << " nodes";
    }
  }
}

TEST(HashRingTest, AddingOrRemovingANodeMovesAboutOneNthOfTheKeys) {
  HashRing four = MustBuild(MakeMembers(4));
  HashRing five = MustBuild(MakeMembers(5));
  constexpr int kKeys = 50000;
  int moved_primary = 0;
  int moved_replica_slots = 0;
  for (int i = 0; i < kKeys; ++i) {
    std::string key = absl::StrCat("k", i);
    std::vector<std::string> before = Ids(four.PreferenceList(key, 3));
    std::vector<std::string> after = Ids(five.PreferenceList(key, 3));
    if (before[0] != after[0]) {
      ++moved_primary;
      EXPECT_EQ(after[0], "n5") << "a primary moved between old nodes";
    }
    std::set<std::string> old_set(before.begin(), before.end());
    for (const std::string& id : after) moved_replica_slots += old_set.count(id) ? 0 : 1;
  }
  // Adding the 5th node should move about 1/5 of the primaries and of the replica slots.
  EXPECT_NEAR(static_cast<double>(moved_primary) / kKeys, 0.2, 0.06);
  EXPECT_NEAR(static_cast<double>(moved_replica_slots) / (3.0 * kKeys), 0.2, 0.06);
}

TEST(HashRingTest, ReplicasLandInDistinctZonesWhenThereAreEnough) {
  HashRing ring = MustBuild(MakeMembers(6, /*zones=*/3));
  for (int i = 0; i < 2000; ++i) {
    std::set<std::string> zones;
    for (const Member* m : ring.PreferenceList(absl::StrCat("k", i), 3)) zones.insert(m->zone);
    EXPECT_EQ(zones.size(), 3u);
  }
  // Two zones for N=3: placement still yields three distinct members.
  HashRing two_zones = MustBuild(MakeMembers(4, /*zones=*/2));
  EXPECT_EQ(two_zones.PreferenceList("k", 3).size(), 3u);
}

TEST(HashRingTest, ParsesAndRejectsPeerSpecs) {
  absl::StatusOr<std::vector<Member>> members =
      ParseMembers("n1=127.0.0.1:7701, n2=localhost:7702@zone-b");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 2u);
  EXPECT_EQ((*members)[1].zone, "zone-b");
  EXPECT_EQ(FormatMembers(*members), "n1=127.0.0.1:7701,n2=localhost:7702@zone-b");
  for (const char* bad :
       {"n1", "n1=host", "n1=host:0", "n1=host:99999", "=h:1", "n 1=h:1", "n1=h:1,n1=h:2",
        "n1=h:1@bad zone", "n1=h:1@", "n1=h:1=junk", "n1=h:1@z1@z2", "n1=h:1,n2=h:1",
        "n1=h:1,,n2=h:2", "n1=h:1,", ",n1=h:1", "n1=h:1, ,n2=h:2"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseMembers(bad).status())) << bad;
  }
  EXPECT_THAT(std::string(ParseMembers("n1=h:1,,n2=h:2").status().message()),
              ::testing::HasSubstr("empty peer entry"));
  EXPECT_TRUE(ParseMembers(" ").value().empty());  // no list at all
  EXPECT_TRUE(absl::IsInvalidArgument(HashRing::Build({}).status()));
}

}  // namespace
}  // namespace kv

// Property tests for SiblingSet (dotted causal containers). Inputs come from a seeded model of
// replicas taking writes and merging with each other, so every state is one the store can reach;
// each test prints its seed on failure.
#include "storage/sibling_set.h"

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kv {
namespace {

constexpr int kSeeds = 300;

Sibling Value(absl::string_view value, absl::string_view token = "") {
  Sibling s;
  s.value = std::string(value);
  s.idempotency_token = std::string(token);
  return s;
}

std::vector<std::string> Values(const SiblingSet& set) {
  std::vector<std::string> values;
  for (const Sibling& s : set.siblings()) values.push_back(s.tombstone ? "<tomb>" : s.value);
  return values;
}

// A few replicas of one key, each coordinating writes as its own actor and merging with the
// others at random. `tokens` > 0 makes writes share idempotency tokens (retries through
// different coordinators). Every state any replica passes through is kept in history().
class World {
 public:
  World(uint32_t seed, int replicas, int tokens) : rng_(seed), tokens_(tokens) {
    for (int i = 0; i < replicas; ++i) actors_.push_back(absl::StrCat("n", i, "#7"));
    sets_.resize(replicas);
  }

  void Step() {
    const int r = Pick(sets_.size());
    if (Pick(3) == 0) {
      sets_[r].Merge(sets_[Pick(sets_.size())]);
    } else {
      // A write with a token is a retry of one logical write: same token, same value.
      const std::string token = RandomToken();
      Sibling s =
          Value(token.empty() ? absl::StrCat("v", next_value_++) : "retried-" + token, token);
      s.tombstone = token.empty() && Pick(6) == 0;
      if (s.tombstone) s.value.clear();
      sets_[r].ApplyWrite(actors_[r], RandomSeen(), std::move(s));
    }
    history_.push_back(sets_[r]);
  }

  void Run(int steps) {
    for (int i = 0; i < steps; ++i) Step();
  }

  // A random state some replica was in; Merge(x, x) == x needs states without token
  // duplicates, which Merge (not ApplyWrite) guarantees, so `merged` returns x merged with itself.
  SiblingSet RandomState(bool merged = true) {
    SiblingSet s = history_.empty() ? SiblingSet() : history_[Pick(history_.size())];
    if (merged) s.Merge(SiblingSet(s));
    return s;
  }

  const std::vector<SiblingSet>& sets() const { return sets_; }
  std::mt19937& rng() { return rng_; }
  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

 private:
  std::string RandomToken() {
    if (tokens_ == 0 || Pick(2) == 0) return "";
    return absl::StrCat("tok", Pick(tokens_));
  }

  // What a client might have seen: nothing, a replica's context, or part of a replica's
  // siblings as single dots.
  CausalContext RandomSeen() {
    const SiblingSet& source = sets_[Pick(sets_.size())];
    switch (Pick(3)) {
      case 0:
        return CausalContext();
      case 1:
        return CausalContext(source.context());
      default: {
        CausalContext seen;
        for (const Sibling& s : source.siblings()) {
          if (Pick(2) == 0) seen.AddDot(s.dot);
        }
        return seen;
      }
    }
  }

  std::mt19937 rng_;
  int tokens_;
  int next_value_ = 0;
  std::vector<std::string> actors_;
  std::vector<SiblingSet> sets_;
  std::vector<SiblingSet> history_;
};

SiblingSet Merged(SiblingSet a, const SiblingSet& b) {
  a.Merge(b);
  return a;
}

TEST(SiblingSetTest, WriteWithoutContextAddsSibling) {
  SiblingSet set;
  Dot d1 = set.ApplyWrite("a#1", CausalContext(), Value("x"));
  Dot d2 = set.ApplyWrite("a#1", CausalContext(), Value("y"));
  EXPECT_EQ(d1, (Dot{"a#1", 1}));
  EXPECT_EQ(d2, (Dot{"a#1", 2}));
  EXPECT_EQ(Values(set), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(set.context().Get("a#1"), 2u);
  EXPECT_TRUE(set.CheckInvariants().ok());
}

TEST(SiblingSetTest, WriteWithReadContextReplacesAll) {
  SiblingSet set;
  set.ApplyWrite("a#1", CausalContext(), Value("x"));
  set.ApplyWrite("b#1", CausalContext(), Value("y"));
  set.ApplyWrite("a#1", CausalContext(set.context()), Value("z"));
  EXPECT_EQ(Values(set), (std::vector<std::string>{"z"}));
  EXPECT_EQ(set.siblings()[0].dot, (Dot{"a#1", 2}));
}

TEST(SiblingSetTest, CounterExceedsSeenCounters) {
  SiblingSet set;
  CausalContext seen;
  seen.AddDot(Dot{"a#1", 5});
  EXPECT_EQ(set.ApplyWrite("a#1", seen, Value("x")), (Dot{"a#1", 6}));
  // seen.dots() are not absorbed: only the new dot's actor entry is advanced.
  EXPECT_EQ(set.context().ToString(), "{a#1:6}");
}

TEST(SiblingSetTest, ContextAfterWriteKeepsNewDotAndPrunesCovered) {
  SiblingSet set;
  const Dot live = set.ApplyWrite("b#1", CausalContext(), Value("other"));  // stays live
  Dot d1 = set.ApplyWrite("a#1", CausalContext(), Value("x"));
  CausalContext c1 = set.ContextAfterWrite(CausalContext(), d1);
  EXPECT_TRUE(c1.vv().empty());
  EXPECT_EQ(c1.dots(), std::vector<Dot>{d1});

  Dot d2 = set.ApplyWrite("a#1", c1, Value("y"));
  CausalContext c2 = set.ContextAfterWrite(c1, d2);
  EXPECT_EQ(c2.dots(), std::vector<Dot>{d2});  // d1 is implied by the replica's state
  EXPECT_FALSE(c2.Covers(live));
  EXPECT_EQ(Values(set), (std::vector<std::string>{"y", "other"}));  // dot order: a#1 < b#1
}

TEST(SiblingSetTest, AllTombstonesAndLiveSiblings) {
  SiblingSet set;
  EXPECT_TRUE(set.AllTombstones());
  set.ApplyWrite("a#1", CausalContext(), Value("x"));
  Sibling tomb;
  tomb.tombstone = true;
  set.ApplyWrite("b#1", CausalContext(), tomb);
  EXPECT_FALSE(set.AllTombstones());
  ASSERT_EQ(set.LiveSiblings().size(), 1u);
  EXPECT_EQ(set.LiveSiblings()[0].value, "x");
  set.ApplyWrite("b#1", CausalContext(set.context()), tomb);
  EXPECT_TRUE(set.AllTombstones());
  EXPECT_TRUE(set.LiveSiblings().empty());
  EXPECT_FALSE(set.empty());
}

TEST(SiblingSetTest, CheckInvariantsRejectsBrokenSets) {
  VersionVector vv;
  vv.Advance("a#1", 2);
  Sibling s1 = Value("x");
  s1.dot = {"a#1", 1};
  Sibling s2 = Value("y");
  s2.dot = {"a#1", 2};
  EXPECT_TRUE(SiblingSet(vv, {s1, s2}).CheckInvariants().ok());
  EXPECT_EQ(SiblingSet(vv, {s2, s1}).CheckInvariants().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(SiblingSet(vv, {s1, s1}).CheckInvariants().code(), absl::StatusCode::kDataLoss);
  Sibling s3 = Value("z");
  s3.dot = {"a#1", 3};  // not covered
  EXPECT_EQ(SiblingSet(vv, {s3}).CheckInvariants().code(), absl::StatusCode::kDataLoss);
  Sibling s0 = Value("w");
  s0.dot = {"a#1", 0};
  EXPECT_EQ(SiblingSet(vv, {s0}).CheckInvariants().code(), absl::StatusCode::kDataLoss);
}

TEST(SiblingSetTest, MergeKeepsConcurrentDropsReplaced) {
  SiblingSet a;
  a.ApplyWrite("a#1", CausalContext(), Value("x"));
  SiblingSet b = a;  // b replicates x, then replaces it
  b.ApplyWrite("b#1", CausalContext(b.context()), Value("y"));
  a.ApplyWrite("a#1", CausalContext(), Value("z"));  // concurrent with y
  SiblingSet m = Merged(a, b);
  EXPECT_EQ(Values(m), (std::vector<std::string>{"z", "y"}));
  EXPECT_EQ(m, Merged(b, a));
}

TEST(SiblingSetTest, RetriedTokenCopiesAreKeptButShownOnce) {
  SiblingSet a;
  a.ApplyWrite("a#1", CausalContext(), Value("x", "tok"));
  SiblingSet b;
  b.ApplyWrite("b#1", CausalContext(), Value("x", "tok"));
  SiblingSet m = Merged(b, a);
  EXPECT_EQ(m.siblings().size(), 2u);
  ASSERT_EQ(m.LiveSiblings().size(), 1u);
  EXPECT_EQ(m.LiveSiblings()[0].dot, (Dot{"a#1", 1}));
  EXPECT_EQ(m, Merged(a, b));
  // A write with the merged context replaces both copies.
  m.ApplyWrite("a#1", CausalContext(m.context()), Value("y"));
  EXPECT_EQ(Values(m), std::vector<std::string>{"y"});
}

TEST(SiblingSetTest, ContextAfterWriteCoversEverythingWhenOnlyTheNewVersionIsLeft) {
  SiblingSet set;
  const Dot a = set.ApplyWrite("a#1", CausalContext(), Value("x"));
  const CausalContext after_a = set.ContextAfterWrite(CausalContext(), a);
  const Dot b = set.ApplyWrite("a#1", CausalContext(), Value("y"));  // concurrent with x
  // x is still live and the writer of y never saw it: y's context must not cover x.
  const CausalContext after_b = set.ContextAfterWrite(CausalContext(), b);
  EXPECT_FALSE(after_b.Covers(a));
  EXPECT_TRUE(after_b.Covers(b));
  // A write that replaces both leaves only itself: its context may cover everything.
  const Dot c = set.ApplyWrite("a#1", CausalContext(set.context()), Value("z"));
  const CausalContext after_c = set.ContextAfterWrite(CausalContext(set.context()), c);
  EXPECT_EQ(after_c, CausalContext(set.context()));
  EXPECT_TRUE(after_a.Covers(a));
}

TEST(SiblingSetTest, ToStringShowsDotsAndValues) {
  SiblingSet set;
  set.ApplyWrite("a#1", CausalContext(), Value("x", "t"));
  EXPECT_EQ(set.ToString(), "{context={a#1:1}, siblings=[a#1:1=\"x\" token=t]}");
}

// --- properties ---

void ExpectMergeLaws(World& world, bool check_associativity) {
  SiblingSet a = world.RandomState(), b = world.RandomState(), c = world.RandomState();
  SCOPED_TRACE(absl::StrCat("a=", a.ToString(), "\nb=", b.ToString(), "\nc=", c.ToString()));
  SiblingSet ab = Merged(a, b);
  EXPECT_EQ(ab, Merged(b, a)) << "not commutative";
  EXPECT_EQ(Merged(a, a), a) << "not idempotent";
  EXPECT_EQ(Merged(ab, a), ab) << "merging a known state changed the result";
  EXPECT_TRUE(ab.CheckInvariants().ok()) << ab.CheckInvariants();
  if (check_associativity) {
    EXPECT_EQ(Merged(ab, c), Merged(a, Merged(b, c))) << "not associative";
  }
}

TEST(SiblingSetPropertyTest, MergeIsCommutativeAssociativeIdempotent) {
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    World world(seed, 3, /*tokens=*/0);
    world.Run(40);
    for (int i = 0; i < 10; ++i) ExpectMergeLaws(world, /*check_associativity=*/true);
    if (::testing::Test::HasFailure()) return;
  }
}

// Retried idempotency tokens do not change the merge laws: Merge stays a join.
TEST(SiblingSetPropertyTest, MergeWithTokensIsCommutativeAssociativeIdempotent) {
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    World world(seed, 3, /*tokens=*/3);
    world.Run(40);
    for (int i = 0; i < 10; ++i) ExpectMergeLaws(world, /*check_associativity=*/true);
    if (::testing::Test::HasFailure()) return;
  }
}

// The limit documented in sibling_set.h: a retry copy that meets the first attempt only after a
// client replaced it stays visible. Pinned so that a change of behaviour is noticed.
TEST(SiblingSetTest, RetryCopyArrivingAfterAnOverwriteStaysVisible) {
  SiblingSet a;  // the first attempt, coordinated by a#1
  a.ApplyWrite("a#1", CausalContext(), Value("x", "tok"));
  SiblingSet b;  // its retry through b#1, which had not seen the first attempt
  b.ApplyWrite("b#1", CausalContext(), Value("x", "tok"));
  SiblingSet c = a;  // a client read the first attempt and overwrote it
  c.ApplyWrite("a#1", CausalContext(c.context()), Value("y"));

  const SiblingSet left = Merged(Merged(a, b), c);
  const SiblingSet right = Merged(a, Merged(b, c));
  EXPECT_EQ(left, right);
  EXPECT_EQ(Values(left), (std::vector<std::string>{"y", "x"}));
}

TEST(SiblingSetPropertyTest, WriteReplacesExactlyWhatContextSaw) {
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    World world(seed, 3, /*tokens=*/0);
    world.Run(30);
    SiblingSet set = world.RandomState();
    // A context that saw a random part of the set: a vector below its context, plus dots.
    CausalContext seen;
    VersionVector vv;
    for (const auto& [actor, counter] : set.context().entries()) {
      vv.Advance(actor, world.Pick(counter + 1));
    }
    seen = CausalContext(vv);
    for (const Sibling& s : set.siblings()) {
      if (world.Pick(3) == 0) seen.AddDot(s.dot);
    }
    SCOPED_TRACE(absl::StrCat("set=", set.ToString(), "\nseen=", seen.ToString()));

    std::vector<Sibling> expected;
    for (const Sibling& s : set.siblings()) {
      if (!seen.Covers(s.dot)) expected.push_back(s);
    }
    const std::string actor = absl::StrCat("n", world.Pick(4), "#7");
    const uint64_t before = set.context().Get(actor);
    SiblingSet after = set;
    Sibling written = Value("new");
    const Dot dot = after.ApplyWrite(actor, seen, written);
    written.dot = dot;
    expected.insert(
        std::upper_bound(expected.begin(), expected.end(), written,
                         [](const Sibling& x, const Sibling& y) { return x.dot < y.dot; }),
        written);
    EXPECT_EQ(after.siblings(), expected);
    EXPECT_EQ(dot.counter, std::max(before, seen.MaxCounter(actor)) + 1);
    EXPECT_TRUE(after.context().Descends(set.context()));
    EXPECT_TRUE(after.context().Descends(seen.vv()));
    EXPECT_TRUE(after.CheckInvariants().ok()) << after.CheckInvariants();
    const CausalContext next = after.ContextAfterWrite(seen, dot);
    EXPECT_TRUE(next.Covers(dot));
    // The returned context never covers a live version the writer did not see.
    for (const Sibling& s : after.siblings()) {
      if (s.dot == dot) continue;
      EXPECT_EQ(next.Covers(s.dot), seen.Covers(s.dot)) << s.dot.ToString();
    }
    if (after.siblings().size() == 1) {
      EXPECT_EQ(next, CausalContext(after.context()));
    } else {
      EXPECT_EQ(next.vv(), seen.vv());
      for (const Dot& d : next.dots()) EXPECT_TRUE(d == dot || !after.context().Covers(d));
    }
    if (::testing::Test::HasFailure()) return;
  }
}

// K clients interleave read-modify-write cycles on one key (riak_test sibling_explosion): each
// reads, others write, then it writes back with what it read. Siblings never exceed K.
TEST(SiblingSetPropertyTest, ReadModifyWriteClientsStayBounded) {
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    const int k = 2 + static_cast<int>(rng() % 4);
    SiblingSet set;
    std::vector<CausalContext> read(k);
    for (int step = 0; step < 200; ++step) {
      const int client = static_cast<int>(rng() % k);
      if (rng() % 2 == 0) {
        read[client] = CausalContext(set.context());  // Get returns no extra dots
      } else {
        set.ApplyWrite(absl::StrCat("n", rng() % 2, "#1"), read[client],
                       Value(absl::StrCat("c", client, "-", step)));
        read[client] = CausalContext(set.context());  // it reads again before its next write
      }
      ASSERT_LE(static_cast<int>(set.siblings().size()), k) << set.ToString();
    }
  }
}

// The same clients, but each writes back with the context its previous Put returned, never
// reading (the case that makes plain version vectors explode). Each client keeps at most one
// sibling, and its last value is never lost.
TEST(SiblingSetPropertyTest, BlindWritersWithPutContextsStayBounded) {
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    const int k = 2 + static_cast<int>(rng() % 4);
    SiblingSet set;
    std::vector<CausalContext> context(k);
    std::vector<std::string> last(k);
    for (int step = 0; step < 200; ++step) {
      const int client = static_cast<int>(rng() % k);
      last[client] = absl::StrCat("c", client, "-", step);
      const Dot dot = set.ApplyWrite("n0#1", context[client], Value(last[client]));
      context[client] = set.ContextAfterWrite(context[client], dot);
      ASSERT_LE(static_cast<int>(set.siblings().size()), k) << set.ToString();
      for (int c = 0; c < k; ++c) {
        if (last[c].empty()) continue;
        const auto values = Values(set);
        ASSERT_NE(std::find(values.begin(), values.end(), last[c]), values.end())
            << "lost " << last[c] << " in " << set.ToString();
      }
    }
  }
}

// Replicas take retried writes through different coordinators, then gossip in random order
// until quiescent: they converge on one record showing at most one sibling per token.
TEST(SiblingSetPropertyTest, RetriedTokensConvergeAndShowOnce) {
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    World world(seed, 4, /*tokens=*/2);
    world.Run(60);
    std::vector<SiblingSet> sets = world.sets();
    // Every replica pulls from every other in a random order; two rounds reach quiescence.
    for (int round = 0; round < 2; ++round) {
      for (size_t n = 0; n < sets.size() * sets.size(); ++n) {
        sets[world.Pick(sets.size())].Merge(sets[world.Pick(sets.size())]);
      }
      for (size_t i = 0; i < sets.size(); ++i) {
        for (size_t j = 0; j < sets.size(); ++j) sets[i].Merge(sets[j]);
      }
    }
    for (const SiblingSet& s : sets) {
      EXPECT_EQ(s, sets[0]);
      std::map<std::string, int> per_token;
      for (const Sibling& sib : s.LiveSiblings()) {
        if (!sib.idempotency_token.empty()) ++per_token[sib.idempotency_token];
      }
      for (const auto& [token, count] : per_token) EXPECT_EQ(count, 1) << token;
    }
    if (::testing::Test::HasFailure()) return;
  }
}

}  // namespace
}  // namespace kv

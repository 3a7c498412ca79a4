#include "storage/version_vector.h"

#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storage/coding.h"
#include "storage/crc32c.h"

namespace kv {
namespace {

VersionVector Vv(std::initializer_list<std::pair<const char*, uint64_t>> entries) {
  VersionVector vv;
  for (const auto& [actor, counter] : entries) vv.Advance(actor, counter);
  return vv;
}

TEST(VersionVectorTest, AdvanceNeverLowersAndSkipsZero) {
  VersionVector vv;
  vv.Advance("a", 3);
  vv.Advance("a", 2);
  vv.Advance("b", 0);
  EXPECT_EQ(vv.Get("a"), 3u);
  EXPECT_EQ(vv.Get("b"), 0u);
  EXPECT_EQ(vv.size(), 1u);
  EXPECT_EQ(vv.ToString(), "{a:3}");
}

TEST(VersionVectorTest, CoversDescendsConcurrent) {
  VersionVector a = Vv({{"x", 2}, {"y", 1}});
  VersionVector b = Vv({{"x", 1}});
  EXPECT_TRUE(a.Covers(Dot{"x", 2}));
  EXPECT_FALSE(a.Covers(Dot{"x", 3}));
  EXPECT_FALSE(a.Covers(Dot{"x", 0}));
  EXPECT_TRUE(a.Descends(b));
  EXPECT_FALSE(b.Descends(a));
  EXPECT_TRUE(a.Descends(VersionVector()));
  EXPECT_FALSE(VersionVector::Concurrent(a, b));
  EXPECT_TRUE(VersionVector::Concurrent(a, Vv({{"z", 1}})));
  a.Merge(Vv({{"z", 4}, {"x", 1}}));
  EXPECT_EQ(a.ToString(), "{x:2, y:1, z:4}");
}

// Descends and Concurrent agree with a naive pointwise comparison over every actor.
TEST(VersionVectorPropertyTest, DescendsMatchesNaiveReference) {
  const std::vector<std::string> actors = {"a", "b", "c", "d"};
  for (uint32_t seed = 1; seed <= 2000; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    uint64_t ca[4], cb[4];
    VersionVector a, b;
    for (int i = 0; i < 4; ++i) {
      ca[i] = rng() % 3;
      cb[i] = rng() % 3;
      a.Advance(actors[i], ca[i]);
      b.Advance(actors[i], cb[i]);
    }
    bool a_ge_b = true, b_ge_a = true;
    for (int i = 0; i < 4; ++i) {
      a_ge_b &= ca[i] >= cb[i];
      b_ge_a &= cb[i] >= ca[i];
    }
    ASSERT_EQ(a.Descends(b), a_ge_b) << a.ToString() << " vs " << b.ToString();
    ASSERT_EQ(b.Descends(a), b_ge_a) << a.ToString() << " vs " << b.ToString();
    ASSERT_EQ(VersionVector::Concurrent(a, b), !a_ge_b && !b_ge_a);
    VersionVector m = a;
    m.Merge(b);
    for (int i = 0; i < 4; ++i) ASSERT_EQ(m.Get(actors[i]), std::max(ca[i], cb[i]));
    ASSERT_TRUE(m.Descends(a) && m.Descends(b));
  }
}

TEST(CausalContextTest, AddDotSkipsDotsCoveredByOwnVector) {
  CausalContext c(Vv({{"a", 2}}));
  c.AddDot(Dot{"a", 1});  // covered by vv
  c.AddDot(Dot{"a", 5});
  c.AddDot(Dot{"a", 5});  // duplicate
  c.AddDot(Dot{"b", 0});  // never a real dot
  c.AddDot(Dot{"a", 4});
  EXPECT_EQ(c.dots(), (std::vector<Dot>{{"a", 4}, {"a", 5}}));
  EXPECT_TRUE(c.Covers(Dot{"a", 2}));
  EXPECT_FALSE(c.Covers(Dot{"a", 3}));
  EXPECT_TRUE(c.Covers(Dot{"a", 5}));
  EXPECT_EQ(c.MaxCounter("a"), 5u);
  EXPECT_EQ(c.MaxCounter("b"), 0u);
  c.PruneCoveredBy(Vv({{"a", 4}}));
  EXPECT_EQ(c.dots(), (std::vector<Dot>{{"a", 5}}));
  EXPECT_EQ(c.ToString(), "{vv={a:2}, dots=[a:5]}");
}

TEST(CausalContextTest, MergeIsUnionAndPrunes) {
  CausalContext a(Vv({{"a", 1}}));
  a.AddDot(Dot{"a", 3});
  a.AddDot(Dot{"b", 2});
  CausalContext b(Vv({{"a", 3}}));
  b.AddDot(Dot{"c", 7});
  a.Merge(b);
  EXPECT_EQ(a.vv(), Vv({{"a", 3}}));
  EXPECT_EQ(a.dots(), (std::vector<Dot>{{"b", 2}, {"c", 7}}));
}

TEST(CausalContextTest, EncodeDecodeRoundTrip) {
  EXPECT_EQ(CausalContext().Encode(), "");
  auto empty = CausalContext::Decode("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  for (uint32_t seed = 1; seed <= 500; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    VersionVector vv;
    for (int i = rng() % 4; i > 0; --i) vv.Advance(absl::StrCat("n", rng() % 5, "#1"), rng() % 9);
    CausalContext c(vv);
    for (int i = rng() % 4; i > 0; --i) {
      c.AddDot(Dot{absl::StrCat("n", rng() % 5, "#1"), 1 + (uint64_t{rng()} << 20)});
    }
    auto decoded = CausalContext::Decode(c.Encode());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c) << c.ToString();
  }
}

TEST(CausalContextTest, TokenedVersionsRoundTripAndOldFormatStillDecodes) {
  CausalContext plain(Vv({{"a#1", 3}, {"b#1", 2}}));
  const std::string v1 = plain.Encode();
  ASSERT_EQ(v1[1], '\x01');  // no tokened versions: still the version-1 encoding
  CausalContext c = plain;
  c.AddTokened(TokenedVersion{Dot{"b#1", 2}, 2000, 0xb2});
  c.AddTokened(TokenedVersion{Dot{"a#1", 3}, -5, 0xa3});  // any timestamp round-trips
  const std::string v2 = c.Encode();
  ASSERT_EQ(v2[1], '\x02');
  auto decoded = CausalContext::Decode(v2);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, c) << c.ToString();
  ASSERT_EQ(decoded->tokened().size(), 2u);
  EXPECT_EQ(decoded->tokened()[0].dot, (Dot{"a#1", 3}));  // sorted by dot
  EXPECT_EQ(decoded->tokened()[0].timestamp_micros, -5);
  EXPECT_EQ(decoded->tokened()[1].fingerprint, 0xb2u);
  EXPECT_EQ(CausalContext::Decode(v1).value(), plain);
  // Every truncation and single-byte change of the new part is rejected too.
  for (size_t n = v1.size(); n < v2.size(); ++n) {
    EXPECT_FALSE(CausalContext::Decode(v2.substr(0, n)).ok()) << n;
  }
  for (size_t i = 0; i < v2.size(); ++i) {
    std::string bad = v2;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    EXPECT_FALSE(CausalContext::Decode(bad).ok()) << i;
  }
}

// A context bound to its key encodes as version 3, with or without tokened versions, and
// decodes with its key hash; DecodeForKey refuses it for another key and unbinds it otherwise.
// Every truncation and single-byte change is rejected.
TEST(CausalContextTest, AContextBoundToItsKeyRoundTripsAndIsRefusedForAnotherKey) {
  for (bool with_tokened : {false, true}) {
    SCOPED_TRACE(with_tokened ? "with tokened versions" : "without");
    CausalContext c(Vv({{"a#1", 3}, {"b#1", 2}}));
    c.AddDot(Dot{"c#1", 7});
    if (with_tokened) c.AddTokened(TokenedVersion{Dot{"b#1", 2}, 2000, 0xb2});
    CausalContext unbound = c;
    c.BindToKey("k1");
    EXPECT_EQ(c.key_hash(), CausalContext::KeyHash("k1"));
    EXPECT_NE(CausalContext::KeyHash("k1"), CausalContext::KeyHash("k2"));
    const std::string v3 = c.Encode();
    ASSERT_EQ(v3[1], '\x03');
    absl::StatusOr<CausalContext> decoded = CausalContext::Decode(v3);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c) << c.ToString();
    EXPECT_EQ(decoded->key_hash(), c.key_hash());

    absl::StatusOr<CausalContext> same = CausalContext::DecodeForKey(v3, "k1");
    ASSERT_TRUE(same.ok()) << same.status();
    EXPECT_EQ(*same, unbound);  // unbound, with everything else
    EXPECT_EQ(same->key_hash(), 0u);
    absl::StatusOr<CausalContext> other = CausalContext::DecodeForKey(v3, "k2");
    EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
    // An unbound context is taken for any key.
    EXPECT_TRUE(CausalContext::DecodeForKey(unbound.Encode(), "k2").ok());

    for (size_t n = 1; n < v3.size(); ++n) {
      EXPECT_FALSE(CausalContext::Decode(v3.substr(0, n)).ok()) << n;
    }
    for (size_t i = 0; i < v3.size(); ++i) {
      std::string bad = v3;
      bad[i] = static_cast<char>(bad[i] ^ 0x10);
      EXPECT_FALSE(CausalContext::Decode(bad).ok()) << i;
    }
  }
  // An empty context stays the empty string, bound or not.
  CausalContext empty;
  empty.BindToKey("k1");
  EXPECT_EQ(empty.Encode(), "");
}

TEST(CausalContextTest, TokenedVersionsMergeByDotAndStayBounded) {
  CausalContext a(Vv({{"a#1", 1}, {"b#1", 1}}));
  a.AddTokened(TokenedVersion{Dot{"a#1", 1}, 10, 1});
  CausalContext b(Vv({{"a#1", 1}, {"b#1", 1}}));
  b.AddTokened(TokenedVersion{Dot{"b#1", 1}, 20, 2});
  b.AddTokened(TokenedVersion{Dot{"a#1", 1}, 10, 3});  // a forged payload for a#1:1
  CausalContext ab = a;
  ab.Merge(b);
  CausalContext ba = b;
  ba.Merge(a);
  EXPECT_EQ(ab, ba);  // whatever the order, the same entry of a#1:1 wins
  EXPECT_EQ(ab.tokened().size(), 2u);
  // Only versions the context covers.
  CausalContext narrow(Vv({{"a#1", 1}}));
  narrow.AddTokened(TokenedVersion{Dot{"a#1", 2}, 10, 1});
  EXPECT_TRUE(narrow.tokened().empty());
  narrow.AddDot(Dot{"c#1", 4});
  narrow.AddTokened(TokenedVersion{Dot{"c#1", 4}, 10, 1});
  ASSERT_EQ(narrow.tokened().size(), 1u);
  narrow.PruneCoveredBy(Vv({{"c#1", 9}}));  // the dot goes, and its tokened version with it
  EXPECT_TRUE(narrow.tokened().empty());
  // The bound keeps the most recent ones, whatever the order they came in.
  const int n = static_cast<int>(CausalContext::kMaxTokenedVersions) + 5;
  CausalContext many(Vv({{"a#1", static_cast<uint64_t>(n)}}));
  CausalContext reversed = many;
  for (int i = 1; i <= n; ++i) {
    many.AddTokened(TokenedVersion{Dot{"a#1", static_cast<uint64_t>(i)}, i, 0});
    reversed.AddTokened(TokenedVersion{Dot{"a#1", static_cast<uint64_t>(n + 1 - i)}, n + 1 - i, 0});
  }
  EXPECT_EQ(many, reversed);
  ASSERT_EQ(many.tokened().size(), CausalContext::kMaxTokenedVersions);
  EXPECT_EQ(many.tokened().front().dot.counter, 6u);
  EXPECT_TRUE(CausalContext::Decode(many.Encode()).ok());
}

TEST(CausalContextTest, DecodeRejectsMalformedInput) {
  CausalContext c(Vv({{"a#1", 3}, {"b#1", 1}}));
  c.AddDot(Dot{"c#1", 9});
  const std::string good = c.Encode();
  // Every truncation and every single-byte change is rejected, never accepted or crashing.
  for (size_t n = 1; n < good.size(); ++n) {
    EXPECT_EQ(CausalContext::Decode(good.substr(0, n)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (int delta = 1; delta < 256; ++delta) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] + delta);
      ASSERT_EQ(CausalContext::Decode(bad).status().code(), absl::StatusCode::kInvalidArgument)
          << "byte " << i << " delta " << delta;
    }
  }
  EXPECT_EQ(CausalContext::Decode(good + "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CausalContext::Decode("not a context at all").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Frames `payload` with a valid header and checksum (storage/FORMAT.md): a hostile client can
// compute a CRC, so the payload checks must stand on their own.
std::string Framed(const std::string& payload) {
  std::string out = "\xc7\x01";
  PutFixed32(&out, crc32c::Mask(crc32c::Extend(crc32c::Value(out), payload)));
  return out + payload;
}

std::string FramedV2(const std::string& payload) {
  std::string out = "\xc7\x02";
  PutFixed32(&out, crc32c::Mask(crc32c::Extend(crc32c::Value(out), payload)));
  return out + payload;
}

std::string Entry(absl::string_view actor, uint64_t counter) {
  std::string out;
  PutLengthPrefixed(&out, actor);
  PutVarint64(&out, counter);
  return out;
}

TEST(CausalContextTest, FramedHelperMatchesEncode) {
  CausalContext c(Vv({{"a", 1}}));
  EXPECT_EQ(Framed(std::string("\x01", 1) + Entry("a", 1) + std::string("\x00", 1)), c.Encode());
}

// Version 3 with a valid checksum: a zero key hash, trailing bytes and an empty body are refused;
// no tokened versions is well-formed there (not in version 2).
TEST(CausalContextTest, DecodeChecksVersionThreeBehindAValidChecksum) {
  auto framed_v3 = [](const std::string& payload) {
    std::string out = "\xc7\x03";
    PutFixed32(&out, crc32c::Mask(crc32c::Extend(crc32c::Value(out), payload)));
    return out + payload;
  };
  std::string hash;
  PutFixed64(&hash, CausalContext::KeyHash("k"));
  std::string zero_hash;
  PutFixed64(&zero_hash, 0);
  const std::string body = std::string("\x01", 1) + Entry("a", 1) + std::string("\x00", 1);
  const std::string none(1, '\0');
  absl::StatusOr<CausalContext> ok = CausalContext::Decode(framed_v3(hash + body + none));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->key_hash(), CausalContext::KeyHash("k"));
  EXPECT_TRUE(CausalContext::DecodeForKey(framed_v3(hash + body + none), "k").ok());
  EXPECT_FALSE(CausalContext::Decode(framed_v3(zero_hash + body + none)).ok());
  EXPECT_FALSE(CausalContext::Decode(framed_v3(hash + body + none + none)).ok());  // trailing
  EXPECT_FALSE(CausalContext::Decode(framed_v3(hash + body)).ok());  // no tokened count
  const std::string empty_body = none + none;
  EXPECT_FALSE(CausalContext::Decode(framed_v3(hash + empty_body + none)).ok());
  EXPECT_FALSE(CausalContext::Decode(Framed(empty_body)).ok());     // version 1, empty too
  EXPECT_FALSE(CausalContext::Decode(FramedV2(body + none)).ok());  // v2 needs one
}

TEST(CausalContextTest, DecodeRejectsHostileButChecksummedInput) {
  const std::string zero(1, '\0');
  const std::string one("\x01", 1);
  const std::string two("\x02", 1);
  std::string huge_count;
  PutVarint32(&huge_count, 0xffffffffu);
  std::string huge_length;
  PutVarint64(&huge_length, ~uint64_t{0});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"huge vv count", huge_count},
      {"huge dot count", zero + huge_count},
      {"huge actor length", one + huge_length},
      {"counter 0 in vv", one + Entry("a", 0) + zero},
      {"actors out of order", two + Entry("b", 1) + Entry("a", 1) + zero},
      {"duplicate actors", two + Entry("a", 1) + Entry("a", 2) + zero},
      {"dot counter 0", zero + one + Entry("a", 0)},
      {"dot covered by vv", one + Entry("a", 3) + one + Entry("a", 2)},
      {"dots out of order", zero + two + Entry("a", 5) + Entry("a", 4)},
      {"duplicate dots", zero + two + Entry("a", 5) + Entry("a", 5)},
      {"trailing bytes", zero + zero + "x"},
      {"missing dot list", zero},
      {"overlong varint", std::string("\x80\x00", 2) + zero},
      // A long actor would reach the key's record, where each sibling copies its actor.
      {"vv actor too long", one + Entry(std::string(kMaxActorBytes + 1, 'a'), 1) + zero},
      {"dot actor too long", zero + one + Entry(std::string(kMaxActorBytes + 1, 'a'), 1)},
  };
  for (const auto& [what, payload] : cases) {
    auto result = CausalContext::Decode(Framed(payload));
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << what;
  }
  std::string fixed;
  PutFixed64(&fixed, 7);
  PutFixed64(&fixed, 9);
  std::string too_many;
  PutVarint32(&too_many, CausalContext::kMaxTokenedVersions + 1);
  for (uint32_t i = 0; i <= CausalContext::kMaxTokenedVersions; ++i) {
    too_many += Entry("a", i + 1) + fixed;
  }
  const std::vector<std::pair<std::string, std::string>> tokened_cases = {
      {"no tokened versions in version 2", zero + zero + zero},
      {"huge tokened count", zero + zero + huge_count},
      {"more than the bound", zero + zero + too_many},
      {"tokened counter 0", zero + zero + one + Entry("a", 0) + fixed},
      {"tokened out of order", zero + zero + two + Entry("b", 1) + fixed + Entry("a", 1) + fixed},
      {"duplicate tokened dots", zero + zero + two + Entry("a", 1) + fixed + Entry("a", 1) + fixed},
      {"truncated tokened", zero + zero + one + Entry("a", 1) + fixed.substr(0, 9)},
      {"tokened not covered", one + Entry("a", 1) + zero + one + Entry("a", 2) + fixed},
      {"tokened actor too long", one + Entry(std::string(kMaxActorBytes + 1, 'a'), 1) + zero + one +
                                     Entry(std::string(kMaxActorBytes + 1, 'a'), 1) + fixed},
  };
  for (const auto& [what, payload] : tokened_cases) {
    auto result = CausalContext::Decode(FramedV2(payload));
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << what;
  }
  EXPECT_TRUE(
      CausalContext::Decode(FramedV2(one + Entry("a", 1) + zero + one + Entry("a", 1) + fixed))
          .ok());
  const std::string longest(kMaxActorBytes, 'a');
  EXPECT_TRUE(CausalContext::Decode(
                  FramedV2(one + Entry(longest, 1) + zero + one + Entry(longest, 1) + fixed))
                  .ok());
  // Counters above kMaxContextCounter: the next write's counter would come near 2^64 and wrap.
  const uint64_t max = kMaxContextCounter;
  const std::vector<std::pair<std::string, std::string>> counter_cases = {
      {"vv counter", Framed(one + Entry("a", max + 1) + zero)},
      {"vv counter 2^64-1", Framed(one + Entry("a", ~uint64_t{0}) + zero)},
      {"dot counter", Framed(zero + one + Entry("a", max + 1))},
      {"tokened counter",
       FramedV2(one + Entry("a", max) + zero + one + Entry("a", max + 1) + fixed)},
  };
  for (const auto& [what, bytes] : counter_cases) {
    auto result = CausalContext::Decode(bytes);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(result.status().message().find("above the maximum"), absl::string_view::npos)
        << what << ": " << result.status();
  }
  EXPECT_TRUE(CausalContext::Decode(Framed(one + Entry("a", max) + zero)).ok());
  std::mt19937 rng(42);
  for (int i = 0; i < 5000; ++i) {
    std::string junk(rng() % 40, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng() % 4 == 0 ? rng() : rng() % 3);
    auto result = CausalContext::Decode(Framed(junk));
    if (result.ok()) {
      // Whatever decodes is canonical: it re-encodes to the same bytes.
      if (!result->empty()) {
        EXPECT_EQ(result->Encode(), Framed(junk));
      }
    } else {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace kv

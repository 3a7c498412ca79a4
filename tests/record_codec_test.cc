#include "storage/record_codec.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storage/coding.h"
#include "storage/crc32c.h"

// The largest single allocation made while tracking_allocations is set: this binary replaces the
// global operator new to watch what decoding asks for.
namespace {
std::atomic<bool> tracking_allocations{false};
std::atomic<size_t> largest_allocation{0};
}  // namespace

namespace {
void* TrackedMalloc(size_t bytes) noexcept {
  if (tracking_allocations.load(std::memory_order_relaxed)) {
    size_t seen = largest_allocation.load(std::memory_order_relaxed);
    while (bytes > seen && !largest_allocation.compare_exchange_weak(seen, bytes)) {
    }
  }
  return std::malloc(bytes == 0 ? 1 : bytes);
}
}  // namespace

// The scalar forms, throwing and not (the array and aligned forms keep their defaults, each
// paired with its own delete).
void* operator new(size_t bytes) {
  if (void* p = TrackedMalloc(bytes)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t bytes, const std::nothrow_t&) noexcept { return TrackedMalloc(bytes); }
// GCC takes free() in a replaced operator delete for a mismatch: it pairs with the malloc above.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace kv {
namespace {

// A random valid set, built through the public operations so that it meets the invariants.
SiblingSet RandomSet(std::mt19937& rng) {
  SiblingSet set;
  const int writes = static_cast<int>(rng() % 8);
  for (int i = 0; i < writes; ++i) {
    Sibling s;
    s.tombstone = rng() % 5 == 0;
    if (!s.tombstone) s.value = std::string(rng() % 20, static_cast<char>('a' + rng() % 26));
    s.timestamp_micros = static_cast<int64_t>(rng()) - (1 << 30);
    if (rng() % 3 == 0) s.idempotency_token = absl::StrCat("tok", rng() % 100);
    CausalContext seen;
    if (rng() % 3 == 0) seen = CausalContext(set.context());
    set.ApplyWrite(absl::StrCat("node", rng() % 3, "#", rng() % 2), seen, std::move(s));
  }
  return set;
}

TEST(RecordCodecTest, RoundTripsRandomSets) {
  int with_replaced = 0;
  for (uint32_t seed = 1; seed <= 500; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    const SiblingSet set = RandomSet(rng);
    auto decoded = DecodeSiblingSet(EncodeSiblingSet(set));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, set) << set.ToString();
    with_replaced += set.replaced_writes().empty() ? 0 : 1;
  }
  EXPECT_GT(with_replaced, 50);  // version 2 is exercised too
}

TEST(RecordCodecTest, EmptySetRoundTrips) {
  auto decoded = DecodeSiblingSet(EncodeSiblingSet(SiblingSet()));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->empty());
}

TEST(RecordCodecTest, EverySingleByteCorruptionIsDataLoss) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    const std::string good = EncodeSiblingSet(RandomSet(rng));
    for (size_t i = 0; i < good.size(); ++i) {
      for (int delta = 1; delta < 256; ++delta) {
        std::string bad = good;
        bad[i] = static_cast<char>(bad[i] + delta);
        ASSERT_EQ(DecodeSiblingSet(bad).status().code(), absl::StatusCode::kDataLoss)
            << "byte " << i << " delta " << delta;
      }
    }
  }
}

TEST(RecordCodecTest, EveryTruncationAndExtensionIsDataLoss) {
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed=", seed));
    std::mt19937 rng(seed);
    const std::string good = EncodeSiblingSet(RandomSet(rng));
    for (size_t n = 0; n < good.size(); ++n) {
      ASSERT_EQ(DecodeSiblingSet(good.substr(0, n)).status().code(), absl::StatusCode::kDataLoss)
          << n;
    }
    EXPECT_EQ(DecodeSiblingSet(good + '\0').status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(RecordCodecTest, ErrorsNameTheProblem) {
  std::string bad = EncodeSiblingSet(SiblingSet());
  bad[0] = 'x';
  EXPECT_NE(DecodeSiblingSet(bad).status().message().find("magic"), absl::string_view::npos);
  bad = EncodeSiblingSet(SiblingSet());
  bad[1] = 9;
  EXPECT_NE(DecodeSiblingSet(bad).status().message().find("version 9"), absl::string_view::npos);
}

// Payloads behind a valid header and checksum (a bug or a hostile peer can produce these; the
// same bytes travel between replicas) are checked field by field.
std::string Framed(const std::string& payload, char version = 1) {
  std::string out = "\xd5";
  out.push_back(version);
  PutFixed32(&out, crc32c::Mask(crc32c::Extend(crc32c::Value(out), payload)));
  return out + payload;
}

std::string Entry(absl::string_view actor, uint64_t counter) {
  std::string out;
  PutLengthPrefixed(&out, actor);
  PutVarint64(&out, counter);
  return out;
}

std::string SiblingBytes(uint32_t actor_index, uint64_t counter, uint8_t flags = 0) {
  std::string out;
  PutVarint32(&out, actor_index);
  PutVarint64(&out, counter);
  out.push_back(static_cast<char>(flags));
  PutFixed64(&out, 0);
  PutLengthPrefixed(&out, "v");
  PutLengthPrefixed(&out, "");
  return out;
}

TEST(RecordCodecTest, FramedHelperMatchesEncoder) {
  VersionVector vv;
  vv.Advance("a", 2);
  Sibling s;
  s.dot = {"a", 2};
  s.value = "v";
  EXPECT_EQ(Framed("\x01" + Entry("a", 2) + "\x01" + SiblingBytes(0, 2)),
            EncodeSiblingSet(SiblingSet(vv, {s})));
}

TEST(RecordCodecTest, ChecksummedButInvalidPayloadsAreDataLoss) {
  const std::string one("\x01", 1), two("\x02", 1), zero(1, '\0');
  std::string huge;
  PutVarint32(&huge, 0xffffffffu);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"huge actor count", huge},
      {"huge sibling count", zero + huge},
      {"context counter 0", one + Entry("a", 0) + zero},
      {"actors out of order", two + Entry("b", 1) + Entry("a", 1) + zero},
      {"actor index out of range", one + Entry("a", 2) + one + SiblingBytes(1, 1)},
      {"dot not covered", one + Entry("a", 2) + one + SiblingBytes(0, 3)},
      {"dot counter 0", one + Entry("a", 2) + one + SiblingBytes(0, 0)},
      {"unknown flags", one + Entry("a", 2) + one + SiblingBytes(0, 1, 0x02)},
      {"siblings out of order",
       one + Entry("a", 2) + two + SiblingBytes(0, 2) + SiblingBytes(0, 1)},
      {"duplicate dots", one + Entry("a", 2) + two + SiblingBytes(0, 1) + SiblingBytes(0, 1)},
      {"missing sibling count", one + Entry("a", 2)},
  };
  for (const auto& [what, payload] : cases) {
    EXPECT_EQ(DecodeSiblingSet(Framed(payload)).status().code(), absl::StatusCode::kDataLoss)
        << what;
  }
  std::mt19937 rng(3);
  for (int i = 0; i < 20000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng() % 4 == 0 ? rng() : rng() % 3);
    auto result = DecodeSiblingSet(Framed(junk));
    if (result.ok()) {
      EXPECT_TRUE(result->CheckInvariants().ok());
      EXPECT_EQ(EncodeSiblingSet(*result), Framed(junk));  // canonical
    } else {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
    }
  }
}

// A count is a claim until its entries decode: a record that claims as many siblings as its
// bytes could hold (here 50,000) and holds one does not make decoding allocate room for the
// claim (about 6 MB of siblings before, reserved up front) before it fails.
TEST(RecordCodecTest, ACountIsNotAllocatedBeforeItsEntriesDecode) {
  constexpr uint32_t kClaimed = 50'000;
  std::string claim;
  PutVarint32(&claim, kClaimed);
  // One valid sibling, then bytes that cannot start another (an endless varint), enough of them
  // for the count to pass the check against the bytes left.
  const std::string payload = "\x01" + Entry("a", 2) + claim + SiblingBytes(0, 1) +
                              std::string(size_t{kClaimed} * 13, '\xff');
  const std::string record = Framed(payload);
  largest_allocation = 0;
  tracking_allocations = true;
  absl::StatusOr<SiblingSet> decoded = DecodeSiblingSet(record);
  tracking_allocations = false;
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss) << decoded.status();
  EXPECT_GT(largest_allocation.load(), 0u) << "allocations were not tracked";
  EXPECT_LT(largest_allocation.load(), 64u << 10)
      << "decoding allocated room for the claimed count";
}

std::string ReplacedBytes(uint32_t actor_index, uint64_t counter, uint64_t fingerprint) {
  std::string out;
  PutVarint32(&out, actor_index);
  PutVarint64(&out, counter);
  PutFixed64(&out, 7);  // timestamp
  PutFixed64(&out, fingerprint);
  return out;
}

// Format version 2 appends the replaced writes; a set without them is still written as version 1,
// so records that do not use them keep their bytes (and Merkle digests) across the upgrade.
TEST(RecordCodecTest, ReplacedWritesUseVersionTwo) {
  VersionVector vv;
  vv.Advance("a", 2);
  Sibling s;
  s.dot = {"a", 2};
  s.value = "v";
  const std::string v1 = EncodeSiblingSet(SiblingSet(vv, {s}));
  EXPECT_EQ(v1[1], 1);
  const SiblingSet with_replaced(vv, {s}, {ReplacedWrite{{"a", 1}, 7, 0x1234}});
  const std::string v2 = EncodeSiblingSet(with_replaced);
  EXPECT_EQ(v2, Framed("\x01" + Entry("a", 2) + "\x01" + SiblingBytes(0, 2) + "\x01" +
                           ReplacedBytes(0, 1, 0x1234),
                       2));
  auto decoded = DecodeSiblingSet(v2);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, with_replaced);
  // A version-1 record decodes as before, with no replaced writes.
  decoded = DecodeSiblingSet(v1);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->replaced_writes().empty());

  const std::string one("\x01", 1), two("\x02", 1), zero(1, '\0');
  const std::string base = one + Entry("a", 2) + one + SiblingBytes(0, 2);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"version 2 without replaced writes", base + zero},
      {"version 2 missing the count", base},
      {"replaced actor index out of range", base + one + ReplacedBytes(1, 1, 5)},
      {"replaced dot not covered", base + one + ReplacedBytes(0, 3, 5)},
      {"replaced dot still a sibling", base + one + ReplacedBytes(0, 2, 5)},
      {"replaced writes out of order", one + Entry("a", 3) + one + SiblingBytes(0, 3) + two +
                                           ReplacedBytes(0, 2, 5) + ReplacedBytes(0, 1, 6)},
      {"replaced writes share a fingerprint", one + Entry("a", 3) + one + SiblingBytes(0, 3) + two +
                                                  ReplacedBytes(0, 1, 5) + ReplacedBytes(0, 2, 5)},
      {"truncated replaced write", base + one + ReplacedBytes(0, 1, 5).substr(0, 10)},
  };
  for (const auto& [what, payload] : cases) {
    EXPECT_EQ(DecodeSiblingSet(Framed(payload, 2)).status().code(), absl::StatusCode::kDataLoss)
        << what;
  }
  // Version 1 carries no replaced writes: the same bytes are trailing garbage there.
  EXPECT_EQ(DecodeSiblingSet(Framed(base + one + ReplacedBytes(0, 1, 5))).status().code(),
            absl::StatusCode::kDataLoss);
}

// Client contexts are decoded by CausalContext::Decode; malformed ones are the client's fault.
TEST(RecordCodecTest, MalformedContextsAreInvalidArgument) {
  const std::string record = EncodeSiblingSet(SiblingSet());
  EXPECT_EQ(CausalContext::Decode(record).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CausalContext::Decode("\xc7").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CausalContext::Decode(std::string(100, '\xff')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kv

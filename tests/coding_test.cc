#include "storage/coding.h"

#include <limits>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "storage/crc32c.h"
#include "storage/expiring_value.h"

namespace kv {
namespace {

TEST(CodingTest, FixedIsLittleEndian) {
  std::string s;
  PutFixed32(&s, 0x04030201u);
  PutFixed64(&s, 0x0807060504030201ull);
  EXPECT_EQ(s, std::string("\x01\x02\x03\x04\x01\x02\x03\x04\x05\x06\x07\x08", 12));
  absl::string_view in = s;
  uint32_t a = 0;
  uint64_t b = 0;
  ASSERT_TRUE(GetFixed32(&in, &a));
  ASSERT_TRUE(GetFixed64(&in, &b));
  EXPECT_EQ(a, 0x04030201u);
  EXPECT_EQ(b, 0x0807060504030201ull);
  EXPECT_TRUE(in.empty());
  EXPECT_FALSE(GetFixed32(&in, &a));
  absl::string_view short_input("\x01\x02\x03", 3);
  EXPECT_FALSE(GetFixed64(&short_input, &b));
}

TEST(CodingTest, VarintRoundTripsBoundaries) {
  std::vector<uint64_t> values = {0,          1,
                                  127,        128,
                                  255,        16383,
                                  16384,      (1ull << 32) - 1,
                                  1ull << 32, std::numeric_limits<uint64_t>::max()};
  for (int shift = 0; shift < 64; ++shift) values.push_back((1ull << shift) - 1);
  std::string s;
  for (uint64_t v : values) PutVarint64(&s, v);
  absl::string_view in = s;
  for (uint64_t v : values) {
    uint64_t got = 0;
    ASSERT_TRUE(GetVarint64(&in, &got));
    EXPECT_EQ(got, v);
  }
  EXPECT_TRUE(in.empty());

  std::string s32;
  PutVarint32(&s32, 0xffffffffu);
  EXPECT_EQ(s32.size(), 5u);
  absl::string_view in32 = s32;
  uint32_t got32 = 0;
  ASSERT_TRUE(GetVarint32(&in32, &got32));
  EXPECT_EQ(got32, 0xffffffffu);
}

TEST(CodingTest, VarintRejectsTruncatedOverflowingAndOverlong) {
  uint32_t v32 = 0;
  uint64_t v64 = 0;
  absl::string_view truncated("\x80\x80", 2);
  EXPECT_FALSE(GetVarint64(&truncated, &v64));
  absl::string_view empty;
  EXPECT_FALSE(GetVarint32(&empty, &v32));
  absl::string_view too_big32("\xff\xff\xff\xff\x1f", 5);  // 2^35 - 1
  EXPECT_FALSE(GetVarint32(&too_big32, &v32));
  absl::string_view too_long32("\x80\x80\x80\x80\x80\x01", 6);
  EXPECT_FALSE(GetVarint32(&too_long32, &v32));
  absl::string_view too_big64("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x03", 10);
  EXPECT_FALSE(GetVarint64(&too_big64, &v64));
  absl::string_view overlong("\x81\x00", 2);
  EXPECT_FALSE(GetVarint64(&overlong, &v64));
  absl::string_view zero("\x00", 1);
  EXPECT_TRUE(GetVarint64(&zero, &v64));
  EXPECT_EQ(v64, 0u);
}

TEST(CodingTest, LengthPrefixedRoundTripAndHostileLength) {
  std::string s;
  PutLengthPrefixed(&s, "hello");
  PutLengthPrefixed(&s, "");
  PutLengthPrefixed(&s, std::string(300, 'x'));
  absl::string_view in = s, v;
  ASSERT_TRUE(GetLengthPrefixed(&in, &v));
  EXPECT_EQ(v, "hello");
  ASSERT_TRUE(GetLengthPrefixed(&in, &v));
  EXPECT_EQ(v, "");
  ASSERT_TRUE(GetLengthPrefixed(&in, &v));
  EXPECT_EQ(v, std::string(300, 'x'));
  EXPECT_TRUE(in.empty());

  std::string hostile;
  PutVarint64(&hostile, std::numeric_limits<uint64_t>::max());
  hostile += "abc";
  absl::string_view hin = hostile;
  EXPECT_FALSE(GetLengthPrefixed(&hin, &v));
  std::string short_value;
  PutVarint64(&short_value, 4);
  short_value += "abc";
  absl::string_view sin = short_value;
  EXPECT_FALSE(GetLengthPrefixed(&sin, &v));
}

TEST(CodingTest, RandomVarintsRoundTrip) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    std::string s;
    PutVarint64(&s, v);
    absl::string_view in = s;
    uint64_t got = 0;
    ASSERT_TRUE(GetVarint64(&in, &got));
    ASSERT_EQ(got, v);
    ASSERT_TRUE(in.empty());
  }
}

TEST(ExpiringValueTest, HeaderRoundTripsAndOtherValuesAreNotExpiring) {
  std::string value;
  PutExpiringValueHeader(&value, -5);
  value += "payload";
  ASSERT_EQ(value.size(), kExpiringValueHeaderBytes + 7);
  int64_t expiry = 0;
  absl::string_view payload;
  ASSERT_TRUE(ParseExpiringValue(value, &expiry, &payload));
  EXPECT_EQ(expiry, -5);
  EXPECT_EQ(payload, "payload");
  EXPECT_FALSE(
      ParseExpiringValue(value.substr(0, kExpiringValueHeaderBytes - 1), &expiry, &payload));
  EXPECT_FALSE(ParseExpiringValue("", &expiry, &payload));
  EXPECT_FALSE(ParseExpiringValue(std::string(20, '\x01'), &expiry, &payload));
}

// Known answers from RFC 3720 (iSCSI), appendix B.4, and the common "123456789" check value.
TEST(Crc32cTest, KnownAnswers) {
  EXPECT_EQ(crc32c::Value("123456789"), 0xe3069283u);
  EXPECT_EQ(crc32c::Value(std::string(32, '\0')), 0x8a9136aau);
  EXPECT_EQ(crc32c::Value(std::string(32, '\xff')), 0x62a8ab43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(crc32c::Value(ascending), 0x46dd794eu);
  EXPECT_EQ(crc32c::Value(descending), 0x113fdb5cu);
  EXPECT_EQ(crc32c::Value(""), 0u);
  EXPECT_EQ(crc32c::ExtendPortable(0, "123456789"), 0xe3069283u);
  EXPECT_EQ(crc32c::ExtendPortable(0, ascending), 0x46dd794eu);
}

// The hardware path (when this CPU has one) and the portable one agree on every length and
// alignment, so data written on one machine verifies on another.
TEST(Crc32cTest, HardwareAndPortablePathsAgree) {
  std::mt19937 rng(11);
  std::string data(300, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t start = 0; start < 9; ++start) {
    for (size_t length = 0; start + length <= data.size(); length += 1 + length / 8) {
      const absl::string_view piece = absl::string_view(data).substr(start, length);
      const uint32_t init = rng();
      ASSERT_EQ(crc32c::Extend(init, piece), crc32c::ExtendPortable(init, piece))
          << "start=" << start << " length=" << length;
    }
  }
  RecordProperty("hardware_accelerated", crc32c::HardwareAccelerated() ? "yes" : "no");
}

TEST(Crc32cTest, ExtendEqualsWholeAndMaskRoundTrips) {
  const std::string data = "hello crc32c world, long enough to use the four-byte loop";
  for (size_t split = 0; split <= data.size(); ++split) {
    EXPECT_EQ(crc32c::Extend(crc32c::Value(data.substr(0, split)), data.substr(split)),
              crc32c::Value(data));
  }
  const uint32_t crc = crc32c::Value(data);
  EXPECT_NE(crc32c::Mask(crc), crc);
  EXPECT_NE(crc32c::Mask(crc32c::Mask(crc)), crc);
  EXPECT_EQ(crc32c::Unmask(crc32c::Mask(crc)), crc);
}

}  // namespace
}  // namespace kv

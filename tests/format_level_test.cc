// Downgrading records and contexts for readers of an older format level.
#include "storage/format_level.h"

#include <string>

#include "gtest/gtest.h"
#include "storage/record_codec.h"
#include "storage/sibling_set.h"

namespace kv {
namespace {

Sibling Tokened(std::string value, std::string token, int64_t micros) {
  Sibling s;
  s.value = std::move(value);
  s.idempotency_token = std::move(token);
  s.timestamp_micros = micros;
  return s;
}

// A record that remembers a replaced tokened write: a write, then an overwrite that saw it.
SiblingSet RecordWithReplacedWrite() {
  SiblingSet record;
  record.ApplyWrite("n1#1", CausalContext(), Tokened("a", "t1", 1000));
  record.ApplyWrite("n1#1", record.ClientContext(), Tokened("b", "t2", 2000));
  return record;
}

TEST(FormatLevelTest, RecordLosesOnlyItsReplacedWriteMemoryForLevelOne) {
  const SiblingSet record = RecordWithReplacedWrite();
  ASSERT_FALSE(record.replaced_writes().empty());
  const std::string encoded = EncodeSiblingSet(record);

  absl::StatusOr<std::string> same = RecordForLevel(encoded, kFormatLevel);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(*same, encoded);

  absl::StatusOr<std::string> legacy = RecordForLevel(encoded, kLegacyFormatLevel);
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_LT(legacy->size(), encoded.size());
  absl::StatusOr<SiblingSet> decoded = DecodeSiblingSet(*legacy);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->replaced_writes().empty());
  EXPECT_EQ(decoded->siblings(), record.siblings());
  EXPECT_EQ(decoded->context(), record.context());
  // It is what a node without the memory would have written: merging it back changes nothing.
  SiblingSet merged = record;
  merged.Merge(*decoded);
  EXPECT_EQ(merged, record);
}

TEST(FormatLevelTest, RecordWithoutMemoryIsSentUnchanged) {
  SiblingSet record;
  record.ApplyWrite("n1#1", CausalContext(), Tokened("a", "t1", 1000));
  const std::string encoded = EncodeSiblingSet(record);
  absl::StatusOr<std::string> legacy = RecordForLevel(encoded, kLegacyFormatLevel);
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(*legacy, encoded);
}

TEST(FormatLevelTest, UndecodableRecordToDowngradeIsDataLoss) {
  EXPECT_EQ(RecordForLevel("not a record", kLegacyFormatLevel).status().code(),
            absl::StatusCode::kDataLoss);
  // At the current level nothing is decoded.
  EXPECT_TRUE(RecordForLevel("not a record", kFormatLevel).ok());
}

TEST(FormatLevelTest, ContextForLevelOneHasNoTokenedVersionsAndEncodesAsVersionOne) {
  SiblingSet record;
  record.ApplyWrite("n1#1", CausalContext(), Tokened("a", "t1", 1000));
  const CausalContext context = record.ClientContext();
  ASSERT_FALSE(context.tokened().empty());

  EXPECT_EQ(ContextForLevel(context, kFormatLevel), context);
  const CausalContext legacy = ContextForLevel(context, kLegacyFormatLevel);
  EXPECT_TRUE(legacy.tokened().empty());
  EXPECT_EQ(legacy.vv(), context.vv());
  EXPECT_EQ(legacy.dots(), context.dots());
  // Version 1 is what a context without tokened versions encodes as (storage/FORMAT.md).
  EXPECT_EQ(legacy.Encode(), CausalContext(context.vv()).Encode());
  absl::StatusOr<CausalContext> decoded = CausalContext::Decode(legacy.Encode());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, legacy);
}

}  // namespace
}  // namespace kv

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

  absl::StatusOr<std::string> same = EncodedRecordForLevel(encoded, kFormatLevel);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(*same, encoded);

  absl::StatusOr<std::string> legacy = EncodedRecordForLevel(encoded, kLegacyFormatLevel);
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
  absl::StatusOr<std::string> legacy = EncodedRecordForLevel(encoded, kLegacyFormatLevel);
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(*legacy, encoded);
}

TEST(FormatLevelTest, UndecodableRecordToDowngradeIsDataLoss) {
  EXPECT_EQ(EncodedRecordForLevel("not a record", kLegacyFormatLevel).status().code(),
            absl::StatusCode::kDataLoss);
  // At the current level nothing is decoded.
  EXPECT_TRUE(EncodedRecordForLevel("not a record", kFormatLevel).ok());
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

// Below level 3 a context loses its key (version 2, or 1 below level 2), and readers of those
// levels refuse a bound one; from level 2 on records are sent whole.
TEST(FormatLevelTest, ContextsForLevelTwoAreNotBoundToTheirKey) {
  SiblingSet record;
  record.ApplyWrite("n1#1", CausalContext(), Tokened("a", "t1", 1000));
  CausalContext bound = record.ClientContext();
  bound.BindToKey("k");
  EXPECT_EQ(ContextForLevel(bound, kFormatLevel), bound);
  EXPECT_TRUE(CheckReadableAtLevel(bound, kKeyBoundContextLevel).ok());
  const CausalContext level2 = ContextForLevel(bound, kReplacedWritesLevel);
  EXPECT_EQ(level2.key_hash(), 0u);
  EXPECT_EQ(level2.tokened(), bound.tokened());
  EXPECT_EQ(level2.Encode()[1], '\x02');
  EXPECT_TRUE(CheckReadableAtLevel(level2, kReplacedWritesLevel).ok());
  EXPECT_EQ(CheckReadableAtLevel(bound, kReplacedWritesLevel).code(),
            absl::StatusCode::kInvalidArgument);
  const CausalContext level1 = ContextForLevel(bound, kLegacyFormatLevel);
  EXPECT_EQ(level1.key_hash(), 0u);
  EXPECT_TRUE(level1.tokened().empty());
  EXPECT_EQ(CheckReadableAtLevel(bound, kLegacyFormatLevel).code(),
            absl::StatusCode::kInvalidArgument);
  // A level-2 reader holds all of a record with replaced writes.
  const SiblingSet full = RecordWithReplacedWrite();
  EXPECT_EQ(RecordForLevel(full, kReplacedWritesLevel), full);
  EXPECT_TRUE(CheckReadableAtLevel(full, kReplacedWritesLevel).ok());
  EXPECT_FALSE(HoldsAllItCan(RecordForLevel(full, kLegacyFormatLevel), full, kReplacedWritesLevel));
}

TEST(FormatLevelTest, ReplicaOfLevelOneHoldsAllItCanWithoutTheMemory) {
  const SiblingSet full = RecordWithReplacedWrite();
  const SiblingSet legacy = RecordForLevel(full, kLegacyFormatLevel);
  EXPECT_TRUE(legacy.replaced_writes().empty());
  EXPECT_EQ(RecordForLevel(full, kFormatLevel), full);
  EXPECT_TRUE(HoldsAllItCan(legacy, full, kLegacyFormatLevel));
  EXPECT_FALSE(HoldsAllItCan(legacy, full, kFormatLevel));
  EXPECT_TRUE(HoldsAllItCan(full, full, kFormatLevel));
  SiblingSet older;  // a replica that missed the overwrite
  older.ApplyWrite("n1#1", CausalContext(), Tokened("a", "t1", 1000));
  EXPECT_FALSE(HoldsAllItCan(older, full, kLegacyFormatLevel));
}

TEST(FormatLevelTest, ReadersOfLevelOneRefuseWhatTheyCannotRead) {
  const SiblingSet full = RecordWithReplacedWrite();
  EXPECT_TRUE(CheckReadableAtLevel(full, kFormatLevel).ok());
  EXPECT_EQ(CheckReadableAtLevel(full, kLegacyFormatLevel).code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(
      CheckReadableAtLevel(RecordForLevel(full, kLegacyFormatLevel), kLegacyFormatLevel).ok());
  const CausalContext context = full.ClientContext();
  ASSERT_FALSE(context.tokened().empty());
  EXPECT_TRUE(CheckReadableAtLevel(context, kFormatLevel).ok());
  EXPECT_EQ(CheckReadableAtLevel(context, kLegacyFormatLevel).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      CheckReadableAtLevel(ContextForLevel(context, kLegacyFormatLevel), kLegacyFormatLevel).ok());
}

}  // namespace
}  // namespace kv

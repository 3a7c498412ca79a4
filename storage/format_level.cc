#include "storage/format_level.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/record_codec.h"

namespace kv {

SiblingSet RecordForLevel(SiblingSet record, uint32_t level) {
  if (level >= kReplacedWritesLevel || record.replaced_writes().empty()) return record;
  return SiblingSet(record.context(), record.siblings());
}

absl::StatusOr<std::string> EncodedRecordForLevel(std::string encoded, uint32_t level) {
  if (level >= kReplacedWritesLevel) return encoded;
  absl::StatusOr<SiblingSet> record = DecodeSiblingSet(encoded);
  if (!record.ok()) return record.status();
  if (record->replaced_writes().empty()) return encoded;
  return EncodeSiblingSet(RecordForLevel(*std::move(record), level));
}

bool HoldsAllItCan(const SiblingSet& held, const SiblingSet& full, uint32_t level) {
  if (level >= kReplacedWritesLevel) return held == full;
  return held.context() == full.context() && held.siblings() == full.siblings();
}

absl::Status CheckReadableAtLevel(const SiblingSet& record, uint32_t level) {
  if (level >= kReplacedWritesLevel || record.replaced_writes().empty()) return absl::OkStatus();
  return absl::DataLossError(
      absl::StrCat("record format 2 (replaced writes) is not readable at format level ", level));
}

absl::Status CheckReadableAtLevel(const CausalContext& context, uint32_t level) {
  if (level < kKeyBoundContextLevel && context.key_hash() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "causal context version 3 (bound to its key) is not readable at format level ", level));
  }
  if (level >= kReplacedWritesLevel || context.tokened().empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "causal context version 2 (tokened versions) is not readable at format level ", level));
}

CausalContext ContextForLevel(CausalContext context, uint32_t level) {
  if (level < kKeyBoundContextLevel) context.Unbind();
  if (level < kReplacedWritesLevel) context.ClearTokened();
  return context;
}

}  // namespace kv

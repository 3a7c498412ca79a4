#include "storage/format_level.h"

#include <utility>

#include "storage/record_codec.h"
#include "storage/sibling_set.h"

namespace kv {

absl::StatusOr<std::string> RecordForLevel(std::string encoded, uint32_t level) {
  if (level >= kFormatLevel) return encoded;
  absl::StatusOr<SiblingSet> record = DecodeSiblingSet(encoded);
  if (!record.ok()) return record.status();
  if (record->replaced_writes().empty()) return encoded;
  return EncodeSiblingSet(SiblingSet(record->context(), record->siblings()));
}

CausalContext ContextForLevel(CausalContext context, uint32_t level) {
  if (level < kFormatLevel) context.ClearTokened();
  return context;
}

}  // namespace kv

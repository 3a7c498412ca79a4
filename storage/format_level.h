// Format levels: which versions of the encodings in storage/FORMAT.md a node reads, so that a
// cluster in the middle of a rolling upgrade sends each node only what it reads.
//
//   level 1  record format 1 and causal context version 1 (nodes built before levels existed;
//            they do not say their level, and refuse anything newer as malformed)
//   level 2  also record format 2 (replaced-write memory) and causal context version 2 (tokened
//            versions)
//   level 3  also causal context version 3 (bound to its key: CausalContext::key_hash)
//
// Nodes gossip their level (node/membership.h FormatLevels). Records sent to or read by a level-1
// node are downgraded (EncodedRecordForLevel, RecordForLevel), and while any member of the
// cluster is below a level the contexts handed to clients are of that level too (ContextForLevel),
// since a client may take a context to any node. Downgrading only drops memory that makes a late
// retry copy recognizable (storage/sibling_set.h, "Retried writes"); versions and causality are
// kept whole.
#ifndef KV_STORAGE_FORMAT_LEVEL_H_
#define KV_STORAGE_FORMAT_LEVEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/sibling_set.h"
#include "storage/version_vector.h"

namespace kv {

inline constexpr uint32_t kLegacyFormatLevel = 1;
// The first level that reads replaced writes (record format 2, context version 2).
inline constexpr uint32_t kReplacedWritesLevel = 2;
// The first level that reads contexts bound to their key (context version 3).
inline constexpr uint32_t kKeyBoundContextLevel = 3;
// The level this build reads and writes.
inline constexpr uint32_t kFormatLevel = 3;

// `record` as a reader of `level` may hold it: below level 2, without its replaced writes.
SiblingSet RecordForLevel(SiblingSet record, uint32_t level);
// The encoded form (storage/record_codec.h): unchanged from level 2 on or if it has no replaced
// writes, else re-encoded without them (record format 1). DATA_LOSS if a record to downgrade
// cannot be decoded.
absl::StatusOr<std::string> EncodedRecordForLevel(std::string encoded, uint32_t level);
// True if a replica of `level` holding `held` holds all it can of `full`: equal records, or
// below level 2 the same versions and context (it cannot hold the replaced writes).
bool HoldsAllItCan(const SiblingSet& held, const SiblingSet& full, uint32_t level);
// OK if a reader of `level` accepts `record` / `context`; else what a node of that level says:
// DATA_LOSS for a record of format 2, INVALID_ARGUMENT for a context of version 2 or 3. (Nodes
// built before levels say it in their own words; these stand in for them in tests.)
absl::Status CheckReadableAtLevel(const SiblingSet& record, uint32_t level);
absl::Status CheckReadableAtLevel(const CausalContext& context, uint32_t level);

// `context` without its key below level 3 (it then encodes as version 2 or 1) and without its
// tokened versions below level 2 (version 1).
CausalContext ContextForLevel(CausalContext context, uint32_t level);

}  // namespace kv

#endif  // KV_STORAGE_FORMAT_LEVEL_H_

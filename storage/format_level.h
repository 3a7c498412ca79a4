// Format levels: which versions of the encodings in storage/FORMAT.md a node reads, so that a
// cluster in the middle of a rolling upgrade sends each node only what it reads.
//
//   level 1  record format 1 and causal context version 1 (nodes built before levels existed;
//            they do not say their level, and refuse anything newer as malformed)
//   level 2  also record format 2 (replaced-write memory) and causal context version 2 (tokened
//            versions)
//
// Nodes gossip their level (node/membership.h FormatLevels). Records sent to a level-1 node are
// downgraded (RecordForLevel), and while any member of the cluster is at level 1 the contexts
// handed to clients are too (ContextForLevel), since a client may take a context to any node.
// Downgrading only drops memory that makes a late retry copy recognizable (storage/sibling_set.h,
// "Retried writes"); versions and causality are kept whole.
#ifndef KV_STORAGE_FORMAT_LEVEL_H_
#define KV_STORAGE_FORMAT_LEVEL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "storage/version_vector.h"

namespace kv {

inline constexpr uint32_t kLegacyFormatLevel = 1;
// The level this build reads and writes.
inline constexpr uint32_t kFormatLevel = 2;

// `encoded` (a record, storage/record_codec.h) as a reader of `level` accepts it: unchanged at
// level 2 or if it has no replaced-write memory, else re-encoded without that memory (format 1).
// DATA_LOSS if a record to downgrade cannot be decoded.
absl::StatusOr<std::string> RecordForLevel(std::string encoded, uint32_t level);

// `context` without its tokened versions below level 2 (it then encodes as version 1).
CausalContext ContextForLevel(CausalContext context, uint32_t level);

}  // namespace kv

#endif  // KV_STORAGE_FORMAT_LEVEL_H_

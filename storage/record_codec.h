// Versioned, checksummed on-disk encoding of a SiblingSet (storage/FORMAT.md).
//
// Decode never trusts its input: a wrong magic or format version, a checksum mismatch, a
// truncated field or a violated SiblingSet invariant is DATA_LOSS with a message naming what was
// wrong. The same encoding travels between replicas (proto/replica.proto carries it as bytes).
#ifndef KV_STORAGE_RECORD_CODEC_H_
#define KV_STORAGE_RECORD_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/sibling_set.h"

namespace kv {

std::string EncodeSiblingSet(const SiblingSet& set);
absl::StatusOr<SiblingSet> DecodeSiblingSet(absl::string_view bytes);

}  // namespace kv

#endif  // KV_STORAGE_RECORD_CODEC_H_

// Per-request replica counts (W for writes, R for reads) and how they resolve against N.
#ifndef KV_NODE_QUORUM_H_
#define KV_NODE_QUORUM_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kv {

struct QuorumSpec {
  enum class Kind { kDefault, kCount, kQuorum, kAll };
  Kind kind = Kind::kDefault;
  uint32_t count = 0;  // for kCount
};

// The number of replicas `spec` asks for out of `n`, with `default_count` for kDefault.
// INVALID_ARGUMENT naming `name` ("w" or "r") when a count is outside 1..n.
inline absl::StatusOr<int> ResolveQuorum(const QuorumSpec& spec, int n, int default_count,
                                         absl::string_view name) {
  switch (spec.kind) {
    case QuorumSpec::Kind::kDefault:
      return default_count < n ? default_count : n;
    case QuorumSpec::Kind::kQuorum:
      return n / 2 + 1;
    case QuorumSpec::Kind::kAll:
      return n;
    case QuorumSpec::Kind::kCount:
      // Compared unsigned: a count above 2^31 must not turn into a negative int (which every
      // acknowledgement count would reach at once).
      if (n >= 1 && spec.count >= 1 && spec.count <= static_cast<uint32_t>(n)) {
        return static_cast<int>(spec.count);
      }
      return absl::InvalidArgumentError(
          absl::StrCat(name, "=", spec.count, " is outside 1..N (replication factor N=", n, ")"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown quorum kind for ", name));
}

}  // namespace kv

#endif  // KV_NODE_QUORUM_H_

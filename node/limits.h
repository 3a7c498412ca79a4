// Request limits enforced by the node. Requests beyond them fail with INVALID_ARGUMENT naming
// the limit and change nothing.
#ifndef KV_NODE_LIMITS_H_
#define KV_NODE_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace kv {

struct Limits {
  size_t max_key_bytes = 1024;
  size_t max_value_bytes = 1 << 20;      // 1 MiB
  size_t max_context_bytes = 64 << 10;   // 64 KiB
  size_t max_token_bytes = 128;
  uint32_t default_list_limit = 100;
  uint32_t max_list_limit = 1000;
  // gRPC's receive limit: a bit above the largest valid request, so that oversized values are
  // rejected by our check (INVALID_ARGUMENT) rather than by the transport.
  size_t max_message_bytes() const { return max_key_bytes + max_value_bytes + max_context_bytes + (64 << 10); }
};

}  // namespace kv

#endif  // KV_NODE_LIMITS_H_

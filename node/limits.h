// Request limits enforced by the node. Requests beyond them fail with INVALID_ARGUMENT naming
// the limit and change nothing, except where a limit says otherwise (a record past
// max_record_bytes is FAILED_PRECONDITION: the request is valid, the key's siblings are the
// problem; a List limit above the largest page is lowered, not refused).
#ifndef KV_NODE_LIMITS_H_
#define KV_NODE_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace kv {

// The largest max_key_bytes a node accepts (node/config_settings.cc): no stored key is longer.
inline constexpr size_t kMaxKeyBytesCeiling = 64 << 10;
// What max_record_bytes must leave beyond a value of max_value_bytes and its key for the
// record's metadata (node/config.cc).
inline constexpr size_t kRecordMetadataAllowance = 64 << 10;

struct Limits {
  size_t max_key_bytes = 1024;
  size_t max_value_bytes = 1 << 20;     // 1 MiB
  size_t max_context_bytes = 64 << 10;  // 64 KiB
  size_t max_token_bytes = 128;
  // Largest stored record (a key's siblings and their metadata) a client write may make: a write
  // that would make the record larger than this and larger than it was gets FAILED_PRECONDITION
  // (resolve the siblings with a context first). Blind writes that keep adding siblings would
  // otherwise grow a record past what a replication message can carry. Replicas merging
  // concurrent siblings may still pass it (up to about this much per coordinating node).
  size_t max_record_bytes = 16 << 20;  // 16 MiB
  uint32_t default_list_limit = 100;
  uint32_t max_list_limit = 1000;
  // gRPC's receive limit. It is well above the largest valid request (and at least the client
  // library's own 64 MiB request limit), so that an oversized value reaches our check and gets
  // INVALID_ARGUMENT naming the limit, rather than the transport's RESOURCE_EXHAUSTED, which
  // clients would retry.
  size_t max_message_bytes() const {
    const size_t largest_valid = max_key_bytes + max_value_bytes + max_context_bytes + (64 << 10);
    const size_t floor = (64 << 20) + (1 << 20);
    return largest_valid > floor ? largest_valid : floor;
  }
};

}  // namespace kv

#endif  // KV_NODE_LIMITS_H_

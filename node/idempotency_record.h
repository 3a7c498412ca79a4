// The record kept for each idempotency token, and the keys it lives under in the engine's
// idempotency column. Two entries per token, written and deleted in one batch:
//
//   "t/" + token                          -> encoded IdempotencyRecord
//   "e/" + fixed64-big-endian(expiry_us)  + token -> "" (expiry index, scanned in time order)
//
// Record encoding (little-endian, coding.h primitives):
//   format      u8 = 1
//   fingerprint length-prefixed (WriteFingerprint of the first request)
//   expiry_us   fixed64, wall-clock microseconds after which the token may be forgotten
//   write_id    length-prefixed
//   context     length-prefixed (the encoded CausalContext returned to the first caller)
//   dot.actor   length-prefixed
//   dot.counter varint64
#ifndef KV_NODE_IDEMPOTENCY_RECORD_H_
#define KV_NODE_IDEMPOTENCY_RECORD_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/version_vector.h"

namespace kv {

struct IdempotencyRecord {
  std::string fingerprint;
  int64_t expiry_micros = 0;
  std::string write_id;
  std::string context;
  Dot dot;
};

std::string EncodeIdempotencyRecord(const IdempotencyRecord& record);
// DATA_LOSS if malformed.
absl::StatusOr<IdempotencyRecord> DecodeIdempotencyRecord(absl::string_view bytes);

std::string IdempotencyTokenKey(absl::string_view token);
std::string IdempotencyExpiryKey(int64_t expiry_micros, absl::string_view token);
inline constexpr absl::string_view kIdempotencyExpiryPrefix = "e/";
// Parses an expiry-index key; false if it is not one.
bool ParseIdempotencyExpiryKey(absl::string_view key, int64_t* expiry_micros,
                               absl::string_view* token);

}  // namespace kv

#endif  // KV_NODE_IDEMPOTENCY_RECORD_H_

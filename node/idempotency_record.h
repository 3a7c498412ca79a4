// The record kept for each idempotency token, and the keys it lives under in the engine's
// idempotency column (Column::kIdempotency, a column of expiring values):
//
//   "t/" + token  -> encoded IdempotencyRecord
//   "f/" + fixed64(fingerprint) + key -> encoded forgotten write (below)
//
// Record encoding, format 2 (written since the single-key layout; little-endian, coding.h
// primitives):
//   header      expiring-value header (storage/expiring_value.h): byte 0xe5, fixed64 expiry_us
//   format      u8 = 2
//   fingerprint length-prefixed (WriteFingerprint of the first request)
//   write_id    length-prefixed
//   context     length-prefixed (the encoded CausalContext returned to the first caller)
//   dot.actor   length-prefixed
//   dot.counter varint64
// expiry_us is the wall-clock time in microseconds after which the token is forgotten. The
// header lets the engine drop expired records by itself (RocksDB: a compaction filter), so no
// index of expiry times is kept.
//
// A forgotten write is a replaced tokened write of `key` that the record's bounded memory
// (SiblingSet::replaced_writes(), storage/sibling_set.h) no longer holds on this replica, kept
// here until its retry window ends so that a late retry copy is still recognised:
//   header      expiring-value header: byte 0xe5, fixed64 expiry_us (timestamp + retry window)
//   format      u8 = 1
//   dot.actor   length-prefixed
//   dot.counter varint64
//   timestamp   fixed64 (the write's timestamp_micros)
// The fingerprint (TokenFingerprint of the write's token and content) is in the key.
//
// Format 1 (read, never written; data directories from before format 2) has no header: format
// u8 = 1, fingerprint, expiry_us fixed64, then the same fields as format 2. Each format-1 record
// has a second entry, an expiry index that the legacy sweep in LocalStore scans in time order:
//   "e/" + fixed64-big-endian(expiry_us) + token -> ""
#ifndef KV_NODE_IDEMPOTENCY_RECORD_H_
#define KV_NODE_IDEMPOTENCY_RECORD_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/sibling_set.h"
#include "storage/version_vector.h"

namespace kv {

struct IdempotencyRecord {
  std::string fingerprint;
  int64_t expiry_micros = 0;
  std::string write_id;
  std::string context;
  Dot dot;
};

// Encodes in format 2.
std::string EncodeIdempotencyRecord(const IdempotencyRecord& record);
// Decodes format 2 or 1; DATA_LOSS if malformed or of an unknown format.
absl::StatusOr<IdempotencyRecord> DecodeIdempotencyRecord(absl::string_view bytes);

std::string IdempotencyTokenKey(absl::string_view token);

// The forgotten write of `key` with TokenFingerprint `fingerprint` (see above).
std::string ForgottenWriteKey(absl::string_view key, uint64_t fingerprint);
std::string EncodeForgottenWrite(const ReplacedWrite& write, int64_t expiry_micros);
// Decodes the value stored under ForgottenWriteKey(key, fingerprint); sets *expiry_micros.
// DATA_LOSS if malformed or of an unknown format.
absl::StatusOr<ReplacedWrite> DecodeForgottenWrite(absl::string_view bytes, uint64_t fingerprint,
                                                   int64_t* expiry_micros);

// Format-1 expiry index (see above): kept to sweep data written before format 2.
std::string IdempotencyExpiryKey(int64_t expiry_micros, absl::string_view token);
inline constexpr absl::string_view kIdempotencyExpiryPrefix = "e/";
// Parses an expiry-index key; false if it is not one.
bool ParseIdempotencyExpiryKey(absl::string_view key, int64_t* expiry_micros,
                               absl::string_view* token);
// The format-1 encoding of `record` (for tests of reading and sweeping old data).
std::string EncodeIdempotencyRecordFormat1(const IdempotencyRecord& record);

}  // namespace kv

#endif  // KV_NODE_IDEMPOTENCY_RECORD_H_

#include "node/idempotency_record.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "storage/coding.h"

namespace kv {
namespace {

constexpr uint8_t kFormat = 1;
constexpr absl::string_view kTokenPrefix = "t/";

}  // namespace

std::string EncodeIdempotencyRecord(const IdempotencyRecord& record) {
  std::string out;
  out.push_back(static_cast<char>(kFormat));
  PutLengthPrefixed(&out, record.fingerprint);
  PutFixed64(&out, static_cast<uint64_t>(record.expiry_micros));
  PutLengthPrefixed(&out, record.write_id);
  PutLengthPrefixed(&out, record.context);
  PutLengthPrefixed(&out, record.dot.actor);
  PutVarint64(&out, record.dot.counter);
  return out;
}

absl::StatusOr<IdempotencyRecord> DecodeIdempotencyRecord(absl::string_view bytes) {
  auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("corrupt idempotency record: ", what));
  };
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != kFormat) return corrupt("format byte");
  bytes.remove_prefix(1);
  IdempotencyRecord record;
  absl::string_view fingerprint, write_id, context, actor;
  uint64_t expiry = 0;
  if (!GetLengthPrefixed(&bytes, &fingerprint) || !GetFixed64(&bytes, &expiry) ||
      !GetLengthPrefixed(&bytes, &write_id) || !GetLengthPrefixed(&bytes, &context) ||
      !GetLengthPrefixed(&bytes, &actor) || !GetVarint64(&bytes, &record.dot.counter)) {
    return corrupt("truncated");
  }
  if (!bytes.empty()) return corrupt("trailing bytes");
  record.fingerprint = std::string(fingerprint);
  record.expiry_micros = static_cast<int64_t>(expiry);
  record.write_id = std::string(write_id);
  record.context = std::string(context);
  record.dot.actor = std::string(actor);
  return record;
}

std::string IdempotencyTokenKey(absl::string_view token) {
  return absl::StrCat(kTokenPrefix, token);
}

std::string IdempotencyExpiryKey(int64_t expiry_micros, absl::string_view token) {
  // Big-endian so that byte order is time order (expiry is never negative in practice; clamp).
  uint64_t value = static_cast<uint64_t>(expiry_micros < 0 ? 0 : expiry_micros);
  std::string key(kIdempotencyExpiryPrefix);
  for (int shift = 56; shift >= 0; shift -= 8) key.push_back(static_cast<char>(value >> shift));
  key.append(token.data(), token.size());
  return key;
}

bool ParseIdempotencyExpiryKey(absl::string_view key, int64_t* expiry_micros,
                               absl::string_view* token) {
  if (!absl::ConsumePrefix(&key, kIdempotencyExpiryPrefix) || key.size() < 8) return false;
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | static_cast<uint8_t>(key[i]);
  *expiry_micros = static_cast<int64_t>(value);
  *token = key.substr(8);
  return true;
}

}  // namespace kv

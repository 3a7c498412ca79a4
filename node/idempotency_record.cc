#include "node/idempotency_record.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "storage/coding.h"
#include "storage/expiring_value.h"

namespace kv {
namespace {

constexpr uint8_t kFormat1 = 1;
constexpr uint8_t kFormat2 = 2;
constexpr absl::string_view kTokenPrefix = "t/";
constexpr absl::string_view kForgottenPrefix = "f/";
constexpr uint8_t kForgottenFormat1 = 1;

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt idempotency record: ", what));
}

// The fields after the expiry, shared by both formats.
void PutResultFields(std::string* out, const IdempotencyRecord& record) {
  PutLengthPrefixed(out, record.write_id);
  PutLengthPrefixed(out, record.context);
  PutLengthPrefixed(out, record.dot.actor);
  PutVarint64(out, record.dot.counter);
}

absl::Status GetResultFields(absl::string_view bytes, IdempotencyRecord* record) {
  absl::string_view write_id, context, actor;
  if (!GetLengthPrefixed(&bytes, &write_id) || !GetLengthPrefixed(&bytes, &context) ||
      !GetLengthPrefixed(&bytes, &actor) || !GetVarint64(&bytes, &record->dot.counter)) {
    return Corrupt("truncated");
  }
  if (!bytes.empty()) return Corrupt("trailing bytes");
  record->write_id = std::string(write_id);
  record->context = std::string(context);
  record->dot.actor = std::string(actor);
  return absl::OkStatus();
}

}  // namespace

std::string EncodeIdempotencyRecord(const IdempotencyRecord& record) {
  std::string out;
  out.reserve(kExpiringValueHeaderBytes + 8 + record.fingerprint.size() + record.write_id.size() +
              record.context.size() + record.dot.actor.size() + 10);
  PutExpiringValueHeader(&out, record.expiry_micros);
  out.push_back(static_cast<char>(kFormat2));
  PutLengthPrefixed(&out, record.fingerprint);
  PutResultFields(&out, record);
  return out;
}

std::string EncodeIdempotencyRecordFormat1(const IdempotencyRecord& record) {
  std::string out;
  out.push_back(static_cast<char>(kFormat1));
  PutLengthPrefixed(&out, record.fingerprint);
  PutFixed64(&out, static_cast<uint64_t>(record.expiry_micros));
  PutResultFields(&out, record);
  return out;
}

absl::StatusOr<IdempotencyRecord> DecodeIdempotencyRecord(absl::string_view bytes) {
  IdempotencyRecord record;
  absl::string_view fingerprint;
  absl::string_view payload;
  if (ParseExpiringValue(bytes, &record.expiry_micros, &payload)) {
    if (payload.empty() || static_cast<uint8_t>(payload[0]) != kFormat2) {
      return Corrupt("unknown format after the expiry header");
    }
    payload.remove_prefix(1);
    if (!GetLengthPrefixed(&payload, &fingerprint)) return Corrupt("truncated");
  } else if (!bytes.empty() && static_cast<uint8_t>(bytes[0]) == kFormat1) {
    payload = bytes.substr(1);
    uint64_t expiry = 0;
    if (!GetLengthPrefixed(&payload, &fingerprint) || !GetFixed64(&payload, &expiry)) {
      return Corrupt("truncated");
    }
    record.expiry_micros = static_cast<int64_t>(expiry);
  } else {
    return Corrupt("format byte");
  }
  if (absl::Status status = GetResultFields(payload, &record); !status.ok()) return status;
  record.fingerprint = std::string(fingerprint);
  return record;
}

std::string IdempotencyTokenKey(absl::string_view token) {
  return absl::StrCat(kTokenPrefix, token);
}

std::string ForgottenWriteKey(absl::string_view key, uint64_t fingerprint) {
  std::string out(kForgottenPrefix);
  PutFixed64(&out, fingerprint);
  out.append(key.data(), key.size());
  return out;
}

std::string EncodeForgottenWrite(const ReplacedWrite& write, int64_t expiry_micros) {
  std::string out;
  out.reserve(kExpiringValueHeaderBytes + 1 + write.dot.actor.size() + 20);
  PutExpiringValueHeader(&out, expiry_micros);
  out.push_back(static_cast<char>(kForgottenFormat1));
  PutLengthPrefixed(&out, write.dot.actor);
  PutVarint64(&out, write.dot.counter);
  PutFixed64(&out, static_cast<uint64_t>(write.timestamp_micros));
  return out;
}

absl::StatusOr<ReplacedWrite> DecodeForgottenWrite(absl::string_view bytes, uint64_t fingerprint,
                                                   int64_t* expiry_micros) {
  absl::string_view payload;
  if (!ParseExpiringValue(bytes, expiry_micros, &payload) || payload.empty() ||
      static_cast<uint8_t>(payload[0]) != kForgottenFormat1) {
    return absl::DataLossError("corrupt forgotten write: header or format byte");
  }
  payload.remove_prefix(1);
  ReplacedWrite write;
  absl::string_view actor;
  uint64_t timestamp = 0;
  if (!GetLengthPrefixed(&payload, &actor) || !GetVarint64(&payload, &write.dot.counter) ||
      !GetFixed64(&payload, &timestamp)) {
    return absl::DataLossError("corrupt forgotten write: truncated");
  }
  if (!payload.empty()) return absl::DataLossError("corrupt forgotten write: trailing bytes");
  write.dot.actor = std::string(actor);
  write.timestamp_micros = static_cast<int64_t>(timestamp);
  write.fingerprint = fingerprint;
  return write;
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

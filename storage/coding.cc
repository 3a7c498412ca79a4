#include "storage/coding.h"

namespace kv {
namespace {

// Appends `value` as a varint: 7 bits per byte, least significant group first, high bit set on
// every byte but the last.
void PutVarint(std::string* dst, uint64_t value) {
  char buf[10];
  size_t n = 0;
  while (value >= 0x80) {
    buf[n++] = static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  buf[n++] = static_cast<char>(value);
  dst->append(buf, n);
}

// Decodes a varint of at most `max_bytes` bytes whose value fits in `max_bits` bits. Rejects
// truncated input, overlong encodings (a zero final byte after the first) and overflow, so every
// value has exactly one accepted encoding.
bool GetVarint(absl::string_view* input, int max_bits, uint64_t* value) {
  uint64_t result = 0;
  for (size_t i = 0; i < input->size(); ++i) {
    const int shift = static_cast<int>(7 * i);
    if (shift >= max_bits) return false;
    const uint64_t byte = static_cast<uint8_t>((*input)[i]);
    const uint64_t group = byte & 0x7f;
    // The bits of this group that land at or above max_bits must be zero.
    if (max_bits - shift < 7 && (group >> (max_bits - shift)) != 0) return false;
    result |= group << shift;
    if ((byte & 0x80) == 0) {
      if (byte == 0 && i > 0) return false;  // overlong
      input->remove_prefix(i + 1);
      *value = result;
      return true;
    }
  }
  return false;  // truncated
}

}  // namespace

void PutFixed32(std::string* dst, uint32_t value) {
  char buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  dst->append(buf, sizeof(buf));
}

void PutFixed64(std::string* dst, uint64_t value) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  dst->append(buf, sizeof(buf));
}

void PutVarint32(std::string* dst, uint32_t value) { PutVarint(dst, value); }
void PutVarint64(std::string* dst, uint64_t value) { PutVarint(dst, value); }

void PutLengthPrefixed(std::string* dst, absl::string_view value) {
  PutVarint64(dst, value.size());
  dst->append(value.data(), value.size());
}

bool GetFixed32(absl::string_view* input, uint32_t* value) {
  if (input->size() < 4) return false;
  uint32_t result = 0;
  for (int i = 0; i < 4; ++i) {
    result |= static_cast<uint32_t>(static_cast<uint8_t>((*input)[i])) << (8 * i);
  }
  input->remove_prefix(4);
  *value = result;
  return true;
}

bool GetFixed64(absl::string_view* input, uint64_t* value) {
  if (input->size() < 8) return false;
  uint64_t result = 0;
  for (int i = 0; i < 8; ++i) {
    result |= static_cast<uint64_t>(static_cast<uint8_t>((*input)[i])) << (8 * i);
  }
  input->remove_prefix(8);
  *value = result;
  return true;
}

bool GetVarint32(absl::string_view* input, uint32_t* value) {
  uint64_t wide = 0;
  if (!GetVarint(input, 32, &wide)) return false;
  *value = static_cast<uint32_t>(wide);
  return true;
}

bool GetVarint64(absl::string_view* input, uint64_t* value) { return GetVarint(input, 64, value); }

bool GetLengthPrefixed(absl::string_view* input, absl::string_view* value) {
  uint64_t length = 0;
  if (!GetVarint64(input, &length)) return false;
  if (length > input->size()) return false;  // checked before any use: hostile lengths are safe
  *value = input->substr(0, static_cast<size_t>(length));
  input->remove_prefix(static_cast<size_t>(length));
  return true;
}

}  // namespace kv

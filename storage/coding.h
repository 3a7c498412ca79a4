// Little-endian fixed-width integers, varints and length-prefixed strings: the building blocks
// of every on-disk encoding (storage/FORMAT.md). Get* functions consume from the front of
// `input` and return false (leaving `input` unspecified) when it is truncated or malformed.
// Malformed varints are those too long or too large for their type and overlong ones (a final
// zero byte after the first), so every value has exactly one accepted encoding.
#ifndef KV_STORAGE_CODING_H_
#define KV_STORAGE_CODING_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kv {

void PutFixed32(std::string* dst, uint32_t value);
void PutFixed64(std::string* dst, uint64_t value);
void PutVarint32(std::string* dst, uint32_t value);
void PutVarint64(std::string* dst, uint64_t value);
// varint64 length, then the bytes.
void PutLengthPrefixed(std::string* dst, absl::string_view value);

bool GetFixed32(absl::string_view* input, uint32_t* value);
bool GetFixed64(absl::string_view* input, uint64_t* value);
bool GetVarint32(absl::string_view* input, uint32_t* value);
bool GetVarint64(absl::string_view* input, uint64_t* value);
// The returned view aliases `input`'s storage.
bool GetLengthPrefixed(absl::string_view* input, absl::string_view* value);

}  // namespace kv

#endif  // KV_STORAGE_CODING_H_

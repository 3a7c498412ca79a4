// Expiring values: a stored value that carries the time after which the store may forget it.
//
//   expiring_value := tag:byte(0xe5) expiry_micros:fixed64 payload
//
// `expiry_micros` is wall-clock Unix time in microseconds (two's-complement int64, little
// endian). In a column that holds expiring values (ColumnHoldsExpiringValues in engine.h) the
// engine may delete such a value at any time once its expiry is before the horizon given to
// Engine::RemoveExpired; values that do not start with the tag are never deleted that way. An
// expired value can still be read for a while, so readers check the expiry themselves.
// Format: storage/FORMAT.md, "Expiring values".
#ifndef KV_STORAGE_EXPIRING_VALUE_H_
#define KV_STORAGE_EXPIRING_VALUE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kv {

inline constexpr char kExpiringValueTag = static_cast<char>(0xe5);
inline constexpr size_t kExpiringValueHeaderBytes = 9;  // tag, fixed64 expiry

// Appends the header (tag and expiry) of an expiring value to `dst`; the payload follows it.
void PutExpiringValueHeader(std::string* dst, int64_t expiry_micros);

// Splits an expiring value into its expiry and payload (a view into `value`). False if `value`
// does not start with the tag or is shorter than the header.
bool ParseExpiringValue(absl::string_view value, int64_t* expiry_micros,
                        absl::string_view* payload);

}  // namespace kv

#endif  // KV_STORAGE_EXPIRING_VALUE_H_

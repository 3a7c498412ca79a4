#include "storage/expiring_value.h"

#include "storage/coding.h"

namespace kv {

void PutExpiringValueHeader(std::string* dst, int64_t expiry_micros) {
  dst->push_back(kExpiringValueTag);
  PutFixed64(dst, static_cast<uint64_t>(expiry_micros));
}

bool ParseExpiringValue(absl::string_view value, int64_t* expiry_micros,
                        absl::string_view* payload) {
  if (value.size() < kExpiringValueHeaderBytes || value[0] != kExpiringValueTag) return false;
  value.remove_prefix(1);
  uint64_t expiry = 0;
  if (!GetFixed64(&value, &expiry)) return false;
  *expiry_micros = static_cast<int64_t>(expiry);
  *payload = value;
  return true;
}

}  // namespace kv

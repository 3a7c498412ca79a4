// CRC-32C (Castagnoli), used to checksum stored records. Stored checksums are masked (rotated
// and offset, as LevelDB does) so that a CRC of data containing CRCs stays well distributed.
#ifndef KV_STORAGE_CRC32C_H_
#define KV_STORAGE_CRC32C_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace kv::crc32c {

// CRC-32C of `data`, continuing from `init` (the CRC of the preceding bytes; 0 to start). Uses
// the CPU's CRC-32C instruction when it has one (HardwareAccelerated()).
uint32_t Extend(uint32_t init, absl::string_view data);
// The same function computed without special instructions (the fallback; tests compare them).
uint32_t ExtendPortable(uint32_t init, absl::string_view data);
bool HardwareAccelerated();
inline uint32_t Value(absl::string_view data) { return Extend(0, data); }

inline uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace kv::crc32c

#endif  // KV_STORAGE_CRC32C_H_

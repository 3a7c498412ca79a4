// CRC-32C two ways: the SSE4.2 crc32 instruction (eight bytes per instruction) on x86-64 CPUs
// that have it, checked once at run time, and otherwise a table-driven loop, four bytes per step
// ("slicing by 4") with tables computed at compile time from the reflected Castagnoli polynomial.
// Both compute the same function; tests compare them.
#include "storage/crc32c.h"

#include <array>
#include <cstddef>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define KV_CRC32C_HAVE_SSE42_PATH 1
#endif

namespace kv::crc32c {
namespace {

constexpr uint32_t kReflectedPolynomial = 0x82f63b78u;

using Tables = std::array<std::array<uint32_t, 256>, 4>;

// tables[0][b] is the CRC register after shifting byte b through it; tables[k][b] is the same
// byte followed by k zero bytes, which lets the loop fold four input bytes per step.
constexpr Tables MakeTables() {
  Tables tables{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kReflectedPolynomial : 0);
    tables[0][b] = crc;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (size_t k = 1; k < 4; ++k) {
      const uint32_t prev = tables[k - 1][b];
      tables[k][b] = (prev >> 8) ^ tables[0][prev & 0xff];
    }
  }
  return tables;
}

constexpr Tables kTables = MakeTables();

#ifdef KV_CRC32C_HAVE_SSE42_PATH
// Compiled for SSE4.2 whatever the build's target; only called after the run-time check.
__attribute__((target("sse4.2"))) uint32_t ExtendSse42(uint32_t init, absl::string_view data) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  uint64_t crc = init ^ 0xffffffffu;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));  // unaligned load; x86 is little-endian like the CRC
    crc = _mm_crc32_u64(crc, word);
    p += 8;
    n -= 8;
  }
  auto crc32 = static_cast<uint32_t>(crc);
  while (n > 0) {
    crc32 = _mm_crc32_u8(crc32, *p);
    ++p;
    --n;
  }
  return crc32 ^ 0xffffffffu;
}

bool CpuHasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

bool HardwareAccelerated() {
#ifdef KV_CRC32C_HAVE_SSE42_PATH
  return CpuHasSse42();
#else
  return false;
#endif
}

uint32_t Extend(uint32_t init, absl::string_view data) {
#ifdef KV_CRC32C_HAVE_SSE42_PATH
  if (CpuHasSse42()) return ExtendSse42(init, data);
#endif
  return ExtendPortable(init, data);
}

uint32_t ExtendPortable(uint32_t init, absl::string_view data) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  uint32_t crc = init ^ 0xffffffffu;
  while (n >= 4) {
    crc ^= static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
           static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
    crc = kTables[3][crc & 0xff] ^ kTables[2][(crc >> 8) & 0xff] ^ kTables[1][(crc >> 16) & 0xff] ^
          kTables[0][crc >> 24];
    p += 4;
    n -= 4;
  }
  while (n > 0) {
    crc = (crc >> 8) ^ kTables[0][(crc ^ *p) & 0xff];
    ++p;
    --n;
  }
  return crc ^ 0xffffffffu;
}

}  // namespace kv::crc32c

#include "node/merkle_tree.h"

#include <algorithm>

#include "node/ring.h"
#include "xxhash.h"

namespace kv {

uint32_t MerkleTree::SegmentOf(absl::string_view key) {
  return static_cast<uint32_t>(HashRing::KeyHash(key) >> 48);
}

uint64_t MerkleTree::RecordDigest(absl::string_view encoded_record) {
  return XXH64(encoded_record.data(), encoded_record.size(), 0);
}

uint64_t MerkleTree::EntryHash(absl::string_view key, uint64_t digest) {
  // Seeding with the digest binds key and record; a key's two hashes (old and new digest) differ
  // unless the digests do.
  return XXH64(key.data(), key.size(), digest);
}

void MerkleTree::Toggle(uint32_t segment, uint64_t hash) {
  leaves_[segment] ^= hash;
  interior_[segment / kLeavesPerInterior] ^= hash;
  root_ ^= hash;
}

void MerkleTree::Clear() {
  std::fill(leaves_.begin(), leaves_.end(), 0);
  std::fill(interior_.begin(), interior_.end(), 0);
  root_ = 0;
}

std::vector<uint64_t> MerkleTree::LeavesOf(uint32_t index) const {
  auto first = leaves_.begin() + static_cast<size_t>(index) * kLeavesPerInterior;
  return std::vector<uint64_t>(first, first + kLeavesPerInterior);
}

std::vector<uint32_t> DifferingIndexes(const std::vector<uint64_t>& a,
                                       const std::vector<uint64_t>& b) {
  std::vector<uint32_t> out;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) out.push_back(static_cast<uint32_t>(i));
  }
  for (size_t i = n; i < std::max(a.size(), b.size()); ++i) out.push_back(static_cast<uint32_t>(i));
  return out;
}

}  // namespace kv

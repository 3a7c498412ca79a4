// MerkleTree: the anti-entropy hash tree that one node keeps for one peer, over the keys both of
// them replicate (node/merkle_index.h maintains it; node/anti_entropy.h compares it).
//
// Shape: kLeaves = 65536 leaves (one per segment: the top 16 bits of the key's ring position,
// HashRing::KeyHash), kInterior = 256 interior nodes (interior i covers leaves 256*i..256*i+255)
// and a root. A leaf is the XOR of EntryHash(key, digest) over the keys of its segment; an
// interior node is the XOR of its leaves, the root the XOR of everything. XOR makes every change
// O(1): replacing a key's digest d1 by d2 toggles EntryHash(key, d1) ^ EntryHash(key, d2) into one
// leaf, its interior node and the root, in any order, and two trees built from the same entries
// are equal whatever the order of changes. The hashes are fixed (xxHash, seed 0), never
// absl::Hash or std::hash, so two processes compare their trees meaningfully.
//
// A value type of 514 KiB; not thread-safe (the owner locks).
#ifndef KV_NODE_MERKLE_TREE_H_
#define KV_NODE_MERKLE_TREE_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"

namespace kv {

class MerkleTree {
 public:
  static constexpr uint32_t kLeaves = 65536;
  static constexpr uint32_t kInterior = 256;
  static constexpr uint32_t kLeavesPerInterior = kLeaves / kInterior;

  MerkleTree() : leaves_(kLeaves, 0), interior_(kInterior, 0) {}

  // The segment of a key: the top 16 bits of its ring position.
  static uint32_t SegmentOf(absl::string_view key);
  // The digest of an encoded record (storage/FORMAT.md): XXH64, seed 0.
  static uint64_t RecordDigest(absl::string_view encoded_record);
  // The contribution of one key holding a record with `digest`.
  static uint64_t EntryHash(absl::string_view key, uint64_t digest);

  // XORs `hash` into the leaf of `segment`, its interior node and the root.
  void Toggle(uint32_t segment, uint64_t hash);
  // Adds (or removes: XOR is its own inverse) a key's entry.
  void ToggleEntry(absl::string_view key, uint64_t digest) {
    Toggle(SegmentOf(key), EntryHash(key, digest));
  }
  void Clear();

  uint64_t root() const { return root_; }
  const std::vector<uint64_t>& interior() const { return interior_; }
  uint64_t leaf(uint32_t segment) const { return leaves_[segment]; }
  // The 256 leaves under interior node `index`, in segment order.
  std::vector<uint64_t> LeavesOf(uint32_t index) const;

  friend bool operator==(const MerkleTree& a, const MerkleTree& b) {
    return a.root_ == b.root_ && a.interior_ == b.interior_ && a.leaves_ == b.leaves_;
  }

 private:
  std::vector<uint64_t> leaves_;
  std::vector<uint64_t> interior_;
  uint64_t root_ = 0;
};

// Indexes where two equally long hash lists differ, in increasing order.
std::vector<uint32_t> DifferingIndexes(const std::vector<uint64_t>& a,
                                       const std::vector<uint64_t>& b);

}  // namespace kv

#endif  // KV_NODE_MERKLE_TREE_H_

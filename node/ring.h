// HashRing: consistent hashing with virtual nodes, deciding which N nodes hold each key.
//
// Each member owns `vnodes_per_member` points on a 64-bit ring; the point of virtual node v of
// member m is XXH64("<m.id>/<v>", seed 0), and a key sits at XXH64(key, seed 0). These hashes
// are fixed by this file's contract (never absl::Hash or std::hash, which are seeded per
// process), so every process and every version places keys identically. A key's preference
// list is the first N distinct members met walking clockwise from the key's point. When members
// carry zone labels and at least N zones exist, the walk skips members whose zone already holds
// a replica, so no two replicas of a key share a zone.
//
// Immutable after Build; safe to share between threads.
#ifndef KV_NODE_RING_H_
#define KV_NODE_RING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kv {

struct Member {
  std::string id;       // node id, unique
  std::string address;  // HOST:PORT of its gRPC server
  std::string zone;     // optional placement label

  friend bool operator==(const Member& a, const Member& b) {
    return a.id == b.id && a.address == b.address && a.zone == b.zone;
  }
};

// A node id that a new node may take (--node_id, --peers): 1 to 64 characters of
// [A-Za-z0-9_.-], the first a letter, a digit or '_'.
bool IsValidNodeId(absl::string_view id);
// What earlier versions accepted (any first character of the set): the rule for ids read from
// stored layouts, gossip and requests that name an existing member.
bool IsWellFormedNodeId(absl::string_view id);
inline constexpr char kNodeIdRule[] =
    "node id must be 1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a letter, a digit "
    "or _";

// OK if `m` is well formed as every earlier version had it (stored layouts and gossip pass it):
// a well-formed id, an address HOST:PORT with a port from 1 to 65535, and a zone that is empty
// or 1 to 64 characters of [A-Za-z0-9_.-]. Otherwise INVALID_ARGUMENT saying which part is
// wrong. New configuration (ParseMembers) is held to IsValidNodeId and storage/host_port.h too.
absl::Status CheckMember(const Member& m);

// Parses "ID=HOST:PORT[@ZONE],..." (the --peers setting). INVALID_ARGUMENT with the offending
// entry if malformed (a second "=" or "@" included) or if an id or an address repeats.
absl::StatusOr<std::vector<Member>> ParseMembers(absl::string_view spec);
std::string FormatMembers(const std::vector<Member>& members);

class HashRing {
 public:
  static constexpr int kDefaultVnodes = 128;

  // INVALID_ARGUMENT if there are no members, an id repeats, or vnodes < 1.
  static absl::StatusOr<HashRing> Build(std::vector<Member> members,
                                        int vnodes_per_member = kDefaultVnodes);

  // The first min(n, size()) distinct members for `key`, primary first.
  std::vector<const Member*> PreferenceList(absl::string_view key, size_t n) const;
  // The preference list of a ring position (PreferenceList of a key at KeyHash(key) == hash).
  std::vector<const Member*> PreferenceListAt(uint64_t hash, size_t n) const;
  // Every vnode position, increasing (for plans that walk the ring arc by arc).
  std::vector<uint64_t> PointHashes() const;
  // True if `member_id` is in the preference list of `key`.
  bool IsReplica(absl::string_view key, size_t n, absl::string_view member_id) const;

  const std::vector<Member>& members() const { return members_; }
  const Member* Find(absl::string_view member_id) const;
  size_t size() const { return members_.size(); }

  // The ring position of a key (exposed for tests and tools).
  static uint64_t KeyHash(absl::string_view key);

 private:
  struct Point {
    uint64_t hash;
    uint32_t member;  // index into members_
  };
  HashRing() = default;

  std::vector<Member> members_;  // sorted by id
  std::vector<Point> points_;    // sorted by hash, then member
  size_t zones_ = 0;             // distinct non-empty zones
};

}  // namespace kv

#endif  // KV_NODE_RING_H_

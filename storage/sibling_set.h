// SiblingSet: the stored record of one key on one replica (a dotted causal container).
//
// It holds the concurrent versions (siblings) of the key, each a value or a tombstone stamped with
// its dot, plus the key's causal context: a version vector covering every dot this replica has
// seen for the key, including dots of versions that were since replaced.
//
// Invariants (checked by Decode and by the property tests):
//   - siblings are sorted by dot and have unique dots;
//   - every sibling's dot is covered by context();
//   - no sibling's dot is covered by another replica's context unless that replica also holds it
//     (this is what Merge maintains).
//
// Merge is the join of dotted causal containers: commutative, associative and idempotent. A
// sibling survives a merge unless the other side has seen its dot (context covers it) and no
// longer holds it, i.e. the other side replaced it. Because it is a join, replicas that have
// received the same writes hold the same record, whatever the order of delivery.
//
// Retried writes. Two siblings carrying the same non-empty idempotency token are one logical
// write that a retry got coordinated twice (on two replicas that had not seen each other's
// copy). Merge keeps both, so that it stays a join; LiveSiblings() shows only the one with the
// smaller dot, and a write with a context covering both replaces both. A copy that arrives only
// after a client replaced the other one stays visible (a known limit: nothing remembers the
// replaced token); the coordinator avoids creating copies where it can (node/coordinator.h).
//
// Values, not thread-safe for concurrent mutation.
#ifndef KV_STORAGE_SIBLING_SET_H_
#define KV_STORAGE_SIBLING_SET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "storage/version_vector.h"

namespace kv {

struct Sibling {
  Dot dot;
  bool tombstone = false;
  std::string value;              // empty for tombstones
  int64_t timestamp_micros = 0;   // coordinator wall clock; informational, never used to order
  std::string idempotency_token;  // empty when the write carried none

  friend bool operator==(const Sibling& a, const Sibling& b) {
    return a.dot == b.dot && a.tombstone == b.tombstone && a.value == b.value &&
           a.timestamp_micros == b.timestamp_micros && a.idempotency_token == b.idempotency_token;
  }
};

class SiblingSet {
 public:
  SiblingSet() = default;
  // Takes parts as decoded from storage; the caller (the codec) checks the invariants with
  // CheckInvariants() before trusting them.
  SiblingSet(VersionVector context, std::vector<Sibling> siblings)
      : context_(std::move(context)), siblings_(std::move(siblings)) {}

  const VersionVector& context() const { return context_; }
  const std::vector<Sibling>& siblings() const { return siblings_; }
  // True when the replica knows nothing of the key (no versions, nothing seen).
  bool empty() const { return siblings_.empty() && context_.empty(); }
  // True when no sibling is a live value (all tombstones, or none at all).
  bool AllTombstones() const;
  // Live (non-tombstone) siblings, in dot order, one per idempotency token (the smallest dot).
  std::vector<Sibling> LiveSiblings() const;

  // Applies a write coordinated by `actor` that has seen `seen`: removes every sibling that
  // `seen` covers, then adds `sibling` (value or tombstone) stamped with a new dot whose counter
  // exceeds every counter of `actor` known to this set or to `seen`. The set's context absorbs
  // seen.vv() (not seen.dots(): a single dot does not imply its predecessors) and the new dot.
  // Returns the new dot.
  // `min_counter`: the new counter is also above it (a store that purged records of this key
  // raises it, so that counters the purged record had seen are never handed out again).
  Dot ApplyWrite(absl::string_view actor, const CausalContext& seen, Sibling sibling,
                 uint64_t min_counter = 0);

  // The context to hand back to the writer after ApplyWrite: `seen` plus the new dot, minus
  // extra dots this set's context already covers. When the new version is the only sibling left,
  // the whole context instead (everything else it covers was replaced), so that writers who
  // chain writes with the returned contexts do not pile up siblings of each other's lineages.
  CausalContext ContextAfterWrite(const CausalContext& seen, const Dot& new_dot) const;

  // Merges another replica's record of the same key into this one.
  void Merge(const SiblingSet& other);

  // OK if the invariants above hold (sorted unique dots, all covered, no counter 0); DATA_LOSS
  // otherwise. (The third invariant relates two replicas and cannot be checked on one.)
  absl::Status CheckInvariants() const;

  // Human-readable, for DescribeKey and test failures.
  std::string ToString() const;

  friend bool operator==(const SiblingSet& a, const SiblingSet& b) {
    return a.context_ == b.context_ && a.siblings_ == b.siblings_;
  }
  friend bool operator!=(const SiblingSet& a, const SiblingSet& b) { return !(a == b); }

 private:
  VersionVector context_;
  std::vector<Sibling> siblings_;
};

}  // namespace kv

#endif  // KV_STORAGE_SIBLING_SET_H_

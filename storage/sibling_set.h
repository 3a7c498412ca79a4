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
// Merge is commutative, associative and idempotent: a sibling survives a merge unless the other
// side has seen its dot (context covers it) and no longer holds it, i.e. the other side replaced
// it. Two siblings carrying the same non-empty idempotency token are one logical write retried
// through two coordinators; Merge keeps only the one with the smaller dot (and, because the
// merged context covers both dots, every replica converges on the same choice).
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
           a.timestamp_micros == b.timestamp_micros &&
           a.idempotency_token == b.idempotency_token;
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
  // Live (non-tombstone) siblings, in dot order.
  std::vector<Sibling> LiveSiblings() const;

  // Applies a write coordinated by `actor` that has seen `seen`: removes every sibling that
  // `seen` covers, then adds `sibling` (value or tombstone) stamped with a new dot whose counter
  // exceeds every counter of `actor` known to this set or to `seen`. The set's context absorbs
  // seen.vv() (not seen.dots(): a single dot does not imply its predecessors) and the new dot.
  // Returns the new dot.
  Dot ApplyWrite(absl::string_view actor, const CausalContext& seen, Sibling sibling);

  // The context to hand back to the writer after ApplyWrite: `seen` plus the new dot, minus
  // extra dots this set's context already covers.
  CausalContext ContextAfterWrite(const CausalContext& seen, const Dot& new_dot) const;

  // Merges another replica's record of the same key into this one.
  void Merge(const SiblingSet& other);

  // OK if the invariants above hold (sorted unique dots, all covered); DATA_LOSS otherwise.
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

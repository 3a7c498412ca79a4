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
// Retried writes. Siblings with the same non-empty idempotency token and the same content
// (tombstone flag and value) are copies of one logical write that a retry got coordinated twice,
// on two replicas that had not seen each other's copy. Merge keeps both while both are live;
// LiveSiblings() shows the one with the smaller dot. Siblings that share a token but differ in
// content are different writes (a client reused a token wrongly) and are all shown.
//
// Once a copy is replaced (a write whose context covers it, or a Merge with a replica that
// replaced it), the set remembers it in replaced_writes(): its dot, timestamp and content
// fingerprint (TokenFingerprint). A sibling whose fingerprint matches a remembered replaced
// write of another dot, created within the retry window of it, is the same logical write and was
// replaced with it: ApplyWrite and Merge drop it (its dot stays in the context, so the drop
// reaches the other replicas as an ordinary replacement) and remember it too. The set keeps at
// most kMaxReplacedWrites of them (one per fingerprint, the most recent by timestamp, then dot;
// and one per dot, the larger timestamp then fingerprint, should a forged context have named a
// dot with another fingerprint);
// what the bound cuts is handed to the caller (TakeForgotten), who keeps it elsewhere for the
// retry window and gives it back (Recall) when a copy of one of those writes shows up; without
// that, a copy that arrives after its logical write fell out of the memory stays visible.
//
// Merge stays commutative and idempotent and, while the memory holds every replaced write
// involved, associative; when the bound forgets one, two merge orders can differ in whether a
// late copy is dropped, and the next merge of the two results drops it (a drop is absorbed like
// any replacement), so replicas still converge.
//
// Contexts carry the tokened versions they cover (CausalContext::tokened(): ClientContext for a
// read, ContextAfterWrite for a write), and ApplyWrite remembers the ones it replaces, so a write
// through a replica that never held the copy its writer read still recognises that copy's retries.
//
// Values, not thread-safe for concurrent mutation.
#ifndef KV_STORAGE_SIBLING_SET_H_
#define KV_STORAGE_SIBLING_SET_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
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

// A replaced version that carried an idempotency token, remembered so that a retry copy of the
// same logical write arriving later is replaced too: its dot, its timestamp and the
// TokenFingerprint of its content.
using ReplacedWrite = TokenedVersion;

// XXH3-64 of the sibling's token, tombstone flag and value (storage/FORMAT.md): equal for copies
// of one logical write, different (but for a 2^-64 chance) for anything else.
uint64_t TokenFingerprint(const Sibling& sibling);

// Copies of one logical write are created within this time of each other: a token older than
// the idempotency TTL is a new logical write (node/local_store.h). Nodes pass their TTL.
inline constexpr absl::Duration kDefaultRetryWindow = absl::Hours(24);
// Bound of SiblingSet::replaced_writes().
inline constexpr size_t kMaxReplacedWrites = 8;
// A tokened version a context names is taken as replaced only if its timestamp is at most this
// far ahead of the write's (clocks of coordinators differ; a forged far-future timestamp would
// otherwise outrank every genuine replaced write).
inline constexpr absl::Duration kTokenedClockSlack = absl::Minutes(5);

class SiblingSet {
 public:
  SiblingSet() = default;
  // Takes parts as decoded from storage; the caller (the codec) checks the invariants with
  // CheckInvariants() before trusting them.
  SiblingSet(VersionVector context, std::vector<Sibling> siblings,
             std::vector<ReplacedWrite> replaced_writes = {})
      : context_(std::move(context)),
        siblings_(std::move(siblings)),
        replaced_(std::move(replaced_writes)) {}

  const VersionVector& context() const { return context_; }
  const std::vector<Sibling>& siblings() const { return siblings_; }
  // Replaced versions that carried a token (see above), sorted by dot, one per fingerprint and
  // one per dot.
  const std::vector<ReplacedWrite>& replaced_writes() const { return replaced_; }
  // True when the replica knows nothing of the key (no versions, nothing seen).
  bool empty() const { return siblings_.empty() && context_.empty(); }
  // True when no sibling is a live value (all tombstones, or none at all).
  bool AllTombstones() const;
  // Live (non-tombstone) siblings, in dot order, one per idempotency token and value (the
  // smallest dot of the copies of one logical write).
  std::vector<Sibling> LiveSiblings() const;
  // The remembered replaced write that `sibling` (which carries a token) is a copy of: same
  // fingerprint, another dot, timestamps at most `retry_window` apart. Null if none.
  const ReplacedWrite* ReplacedCopyOf(const Sibling& sibling,
                                      absl::Duration retry_window = kDefaultRetryWindow) const;

  // Applies a write coordinated by `actor` that has seen `seen`: removes every sibling that
  // `seen` covers and remembers the tokened versions `seen` carries that it replaces (covered
  // by seen.vv() or by this set's context, not a sibling or replaced write it knows, and not
  // more than kTokenedClockSlack ahead of `sibling`; even if this replica never held them),
  // then adds `sibling` (value or tombstone) stamped with a new dot
  // whose counter
  // exceeds every counter of `actor` known to this set or to `seen`. The set's context absorbs
  // seen.vv() (not seen.dots(): a single dot does not imply its predecessors) and the new dot.
  // Returns the new dot.
  // `min_counter`: the new counter is also above it (a store that purged records of this key
  // raises it, so that counters the purged record had seen are never handed out again).
  // Replaced siblings that carried a token are remembered, and copies of them dropped (above);
  // that includes the new sibling if it is a copy of a replaced write (callers that deduplicate
  // check ReplacedCopyOf first).
  Dot ApplyWrite(absl::string_view actor, const CausalContext& seen, Sibling sibling,
                 uint64_t min_counter = 0, absl::Duration retry_window = kDefaultRetryWindow);

  // The context to hand back to the writer after ApplyWrite: `seen` plus the new dot, minus
  // extra dots this set's context already covers. When the new version is the only sibling left,
  // the whole context instead (everything else it covers was replaced), so that writers who
  // chain writes with the returned contexts do not pile up siblings of each other's lineages.
  // Both carry tokened versions (CausalContext::tokened()). ContextAfterWrite: the new version
  // if it has a token, and those of `seen` it still covers, unless the new version is the only
  // sibling left (they were replaced, and this set remembers them). ClientContext: the tokened
  // siblings, then the replaced writes (the most recent first) while CausalContext's bound
  // leaves room, so that a write with it makes the replica it lands on remember them even if
  // that replica never held this record.
  CausalContext ContextAfterWrite(const CausalContext& seen, const Dot& new_dot) const;
  // The context a read returns: this set's context, its tokened siblings and its replaced writes.
  CausalContext ClientContext() const;

  // Merges another replica's record of the same key into this one, then drops copies of
  // replaced writes (above). Every replica must pass the same `retry_window`.
  void Merge(const SiblingSet& other, absl::Duration retry_window = kDefaultRetryWindow);

  // The replaced writes that the bound cut from replaced_writes() during this object's
  // ApplyWrite, Merge and Recall calls since the last TakeForgotten (a copy or a decoded record
  // starts with none). Not part of the record: not encoded, not compared.
  std::vector<ReplacedWrite> TakeForgotten() { return std::exchange(forgotten_, {}); }
  // Remembers again replaced writes of this key that the bound cut earlier (kept by the caller),
  // and drops the siblings that are copies of them (as Merge drops copies of remembered ones);
  // the bound then applies again, and what it cuts is forgotten again (TakeForgotten). A write
  // whose dot this set's context does not cover (the record was purged since) is not
  // remembered (a replaced write must be covered), but its copies are still replaced, and
  // remembered in its place.
  void Recall(const std::vector<ReplacedWrite>& writes,
              absl::Duration retry_window = kDefaultRetryWindow);
  // Everything a retry copy could be recognised by: the replaced writes and the tokened
  // siblings (as replaced writes), for a caller about to delete the record.
  std::vector<ReplacedWrite> TokenedHistory() const;

  // OK if the invariants above hold (sorted unique dots, all covered, no counter 0; replaced
  // writes sorted by unique dot, covered, not a sibling's dot, unique fingerprints); DATA_LOSS
  // otherwise. (The third invariant relates two replicas and cannot be checked on one.)
  absl::Status CheckInvariants() const;

  // Human-readable, for DescribeKey and test failures.
  std::string ToString() const;

  friend bool operator==(const SiblingSet& a, const SiblingSet& b) {
    return a.context_ == b.context_ && a.siblings_ == b.siblings_ && a.replaced_ == b.replaced_;
  }
  friend bool operator!=(const SiblingSet& a, const SiblingSet& b) { return !(a == b); }

 private:
  // Remembers the tokened siblings in `removed` (they just left the set), drops the siblings
  // that are copies of remembered replaced writes (remembering them too) and applies the bound.
  void SettleReplaced(const std::vector<Sibling>& removed,
                      const std::vector<ReplacedWrite>& more_replaced, absl::Duration retry_window);

  VersionVector context_;
  std::vector<Sibling> siblings_;
  std::vector<ReplacedWrite> replaced_;
  std::vector<ReplacedWrite> forgotten_;  // see TakeForgotten
};

}  // namespace kv

#endif  // KV_STORAGE_SIBLING_SET_H_

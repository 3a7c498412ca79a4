// Causality tracking: dots, version vectors and client causal contexts.
//
// An actor is a string naming one incarnation of a node: "<node_id>#<epoch>". A node that starts
// on an empty data directory takes a new epoch, so it never reuses the counters of an earlier
// incarnation (the Riak KV679 data-loss bug). Every version of a key is stamped with a dot
// (actor, counter); counters of one actor are consecutive per key.
//
// All types here are values: copyable, comparable, with no I/O. Not thread-safe for concurrent
// mutation (like std::map).
#ifndef KV_STORAGE_VERSION_VECTOR_H_
#define KV_STORAGE_VERSION_VECTOR_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kv {

// Bounds on the counters of client causal contexts. Nodes add 1 per write, so no honest counter
// comes near either: kMaxAbsorbedCounter leaves 2^62 writes of headroom (146,000 years at a
// million writes per second) before kMaxContextCounter, which in turn is far from 2^64. A forged
// context can thus never make a node's next counter wrap to 0.
//   - Decode refuses a context with a counter above kMaxContextCounter.
//   - A write refuses a context with a counter above kMaxAbsorbedCounter that the key's record
//     does not already hold (node/local_store.h): a forged counter is absorbed into a record, and
//     so into a node's counter floor, at most up to kMaxAbsorbedCounter; from there counters
//     grow by one per write.
//   - A write whose new counter would reach kMaxContextCounter (or wrap to 0) is refused (a
//     record stored before these bounds existed, or a forged one merged from a peer, could hold
//     such counters); and a purge raises the node's counter floor only from counters at most
//     2^48 past kMaxAbsorbedCounter (the node never issued the others), so such a record cannot
//     block the node's writes.
inline constexpr uint64_t kMaxContextCounter = uint64_t{1} << 63;
// The longest actor a context may name. A node's actor is its id (at most 64 bytes), '#' and
// 12 hex digits of an epoch: 77 bytes. A client's context brings its actors into the key's
// record, whose siblings each hold a copy of their actor when decoded, so a longer one would
// make a small record take far more memory than its bytes (Decode refuses it).
inline constexpr size_t kMaxActorBytes = 128;
inline constexpr uint64_t kMaxAbsorbedCounter = uint64_t{1} << 62;

struct Dot {
  std::string actor;
  uint64_t counter = 0;

  // "actor:counter".
  std::string ToString() const;
  friend bool operator==(const Dot& a, const Dot& b) {
    return a.counter == b.counter && a.actor == b.actor;
  }
  friend bool operator!=(const Dot& a, const Dot& b) { return !(a == b); }
  // Orders by actor, then counter: the canonical order of siblings.
  friend bool operator<(const Dot& a, const Dot& b) {
    return a.actor != b.actor ? a.actor < b.actor : a.counter < b.counter;
  }
};

// A version that carried an idempotency token, known by its dot, its coordinator's timestamp and
// its content fingerprint (TokenFingerprint in storage/sibling_set.h). Records remember the ones
// that were replaced (SiblingSet::replaced_writes()); contexts carry the ones a client saw.
struct TokenedVersion {
  Dot dot;
  int64_t timestamp_micros = 0;
  uint64_t fingerprint = 0;

  friend bool operator==(const TokenedVersion& a, const TokenedVersion& b) {
    return a.dot == b.dot && a.timestamp_micros == b.timestamp_micros &&
           a.fingerprint == b.fingerprint;
  }
};

// The order in which a bounded list of tokened versions keeps them (CausalContext::tokened(),
// SiblingSet's replaced writes): the more recent first (by timestamp), then the larger dot.
// Deterministic, so that merges commute.
inline bool MoreRecent(const TokenedVersion& a, const TokenedVersion& b) {
  if (a.timestamp_micros != b.timestamp_micros) return a.timestamp_micros > b.timestamp_micros;
  return b.dot < a.dot;
}

// A map actor -> highest counter seen, where seeing counter c of an actor means having seen
// every counter 1..c of it. Absent actors count as 0.
class VersionVector {
 public:
  VersionVector() = default;

  uint64_t Get(absl::string_view actor) const;
  // Raises the entry of `actor` to `counter` if it is lower; never lowers it.
  void Advance(absl::string_view actor, uint64_t counter);
  // True if the dot is among the versions this vector has seen.
  bool Covers(const Dot& dot) const { return dot.counter != 0 && Get(dot.actor) >= dot.counter; }
  // Pointwise maximum with `other`.
  void Merge(const VersionVector& other);
  // True if this vector has seen everything `other` has (pointwise >=).
  bool Descends(const VersionVector& other) const;
  // True if neither descends from the other.
  static bool Concurrent(const VersionVector& a, const VersionVector& b) {
    return !a.Descends(b) && !b.Descends(a);
  }

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  // Entries in actor order; no entry has counter 0.
  const std::map<std::string, uint64_t, std::less<>>& entries() const { return entries_; }
  // "{actorA:3, actorB:1}".
  std::string ToString() const;

  friend bool operator==(const VersionVector& a, const VersionVector& b) {
    return a.entries_ == b.entries_;
  }
  friend bool operator!=(const VersionVector& a, const VersionVector& b) { return !(a == b); }

 private:
  std::map<std::string, uint64_t, std::less<>> entries_;
};

// What a client has seen of one key (a dotted version vector): a version vector plus single dots
// outside it. A Get returns a context with no extra dots; a Put returns the context it was given
// plus the dot of the version it created, so that a following write replaces exactly what the
// client has seen, never a concurrent version it has not.
//
// On the wire it is opaque bytes (storage/FORMAT.md, "Causal context"); Decode rejects
// malformed input with INVALID_ARGUMENT, which the node returns to the client unchanged.
class CausalContext {
 public:
  CausalContext() = default;
  explicit CausalContext(VersionVector vv) : vv_(std::move(vv)) {}

  const VersionVector& vv() const { return vv_; }
  // Sorted, unique, none covered by vv().
  const std::vector<Dot>& dots() const { return dots_; }
  // The versions with an idempotency token among those the client saw, sorted by dot, unique by
  // dot, each covered by vv() or dots(), at most kMaxTokenedVersions (the most recent by
  // timestamp). A write with this context
  // replaces them, and the replica it lands on remembers them as replaced writes even if it
  // never held them: a retry copy of one of them that arrives later is then dropped there too
  // (storage/sibling_set.h). Not consulted by Covers.
  const std::vector<TokenedVersion>& tokened() const { return tokened_; }
  // Not whether it is bound to a key: an empty context replaces nothing, whatever its key, and
  // encodes to the empty string.
  bool empty() const { return vv_.empty() && dots_.empty() && tokened_.empty(); }

  // The key a context was handed out for, as KeyHash(key); 0: none (a context of version 1 or 2,
  // or handed out for a reader of an older format level: storage/format_level.h). Encode writes
  // version 3 when it is set. A node binds the contexts it hands to clients and refuses a bound
  // context on another key (DecodeForKey), which would replace versions of that key whose dots
  // happen to share actors and counters with the ones the context saw. Never stored.
  uint64_t key_hash() const { return key_hash_; }
  void BindToKey(absl::string_view key) { key_hash_ = KeyHash(key); }
  void Unbind() { key_hash_ = 0; }
  // INVALID_ARGUMENT if bound to another key than `key`.
  absl::Status CheckKey(absl::string_view key) const;
  // XXH3-64 of the key; 1 in place of 0.
  static uint64_t KeyHash(absl::string_view key);

  static constexpr size_t kMaxTokenedVersions = 16;
  // Adds `version` to tokened() if this context covers its dot, then trims to the bound. Of two
  // entries of one dot, the one with the larger (timestamp, fingerprint) is kept.
  void AddTokened(const TokenedVersion& version);
  // As AddTokened, but `version` is kept even at the bound: the least recent other entry makes
  // room for it.
  void AddTokenedKept(const TokenedVersion& version);
  // Forgets tokened() (for readers of causal context version 1: storage/format_level.h).
  void ClearTokened() { tokened_.clear(); }

  // True if vv() covers the dot or it is one of dots().
  bool Covers(const Dot& dot) const;
  // Adds a dot to dots(). Ignored if this context's own vv() already covers it, if it is already
  // present, or if its counter is 0. Only vv() is consulted: a dot some replica's context covers
  // is still added (SiblingSet::ContextAfterWrite relies on this).
  void AddDot(const Dot& dot);
  // Union of both contexts (tokened() trimmed to its bound).
  void Merge(const CausalContext& other);
  // Drops extra dots that `vv` covers (they are implied by the receiver's state), and the
  // tokened versions of those dots.
  void PruneCoveredBy(const VersionVector& vv);
  // Highest counter of `actor` that this context mentions, in vv() or dots().
  uint64_t MaxCounter(absl::string_view actor) const;

  // The empty context encodes to the empty string.
  std::string Encode() const;
  // An empty input decodes to an empty context. INVALID_ARGUMENT if malformed: wrong magic or
  // version, checksum mismatch, truncation, trailing bytes, a non-canonical body (unsorted or
  // duplicate actors or dots, counter 0, a dot covered by the vector), or a counter above
  // kMaxContextCounter. Never allocates more than the input's size.
  static absl::StatusOr<CausalContext> Decode(absl::string_view bytes);
  // Decode of a context a client sent with a write of `key`: also INVALID_ARGUMENT if it is bound
  // to another key. The result is not bound.
  static absl::StatusOr<CausalContext> DecodeForKey(absl::string_view bytes, absl::string_view key);
  std::string ToString() const;

  friend bool operator==(const CausalContext& a, const CausalContext& b) {
    return a.vv_ == b.vv_ && a.dots_ == b.dots_ && a.tokened_ == b.tokened_ &&
           a.key_hash_ == b.key_hash_;
  }

 private:
  // Decode's sections, in order; each reads its part of `*input` into this context (still being
  // built) and checks it against what was read before.
  absl::Status DecodeVersionVector(absl::string_view* input);
  absl::Status DecodeDots(absl::string_view* input);
  // `allow_none`: a count of 0 is well-formed (version 3; version 2 has at least one).
  absl::Status DecodeTokenedVersions(absl::string_view* input, bool allow_none);

  void TrimTokened();

  VersionVector vv_;
  std::vector<Dot> dots_;
  std::vector<TokenedVersion> tokened_;
  uint64_t key_hash_ = 0;
};

}  // namespace kv

#endif  // KV_STORAGE_VERSION_VECTOR_H_

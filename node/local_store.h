// LocalStore: one replica's keys on one node, the core of a single node.
//
// It turns client mutations into versions (dotted version vectors, storage/sibling_set.h),
// enforces request limits, deduplicates by idempotency token, and stores each key's sibling set
// in the engine's data column. Every mutation is one atomic engine batch holding the new record
// and the idempotency record (and, from the replication issue on, outbox entries), so a crash
// never leaves one without the other.
//
// Actor epochs: on first open of an empty engine the store draws a fresh epoch and persists it;
// its actor is "<node_id>#<epoch>". A wiped data directory therefore yields a new actor and
// old dots are never reused.
//
// Errors: INVALID_ARGUMENT for bad input (oversized key/value/context/token, malformed context,
// idempotency token reused with different parameters), NOT_FOUND from ReadRecord for a key the
// replica knows nothing of, engine errors otherwise. A failed call changes nothing.
//
// Thread-safety: all methods may be called concurrently; mutations of one key are serialized by
// a striped lock. Calls block on storage I/O: run them on an Executor, never on a gRPC thread.
#ifndef KV_NODE_LOCAL_STORE_H_
#define KV_NODE_LOCAL_STORE_H_

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/limits.h"
#include "storage/engine.h"
#include "storage/sibling_set.h"

namespace kv {

struct WriteCommand {
  std::string key;
  bool is_delete = false;
  std::string value;              // ignored for deletes
  std::string context;            // encoded CausalContext; empty = none
  std::string idempotency_token;  // empty = no deduplication
};

struct WriteOutcome {
  std::string write_id;       // "<dot>/<base64url key>"
  std::string context;        // encoded CausalContext to hand back to the client
  bool deduplicated = false;  // the token had been seen with the same request
  Dot dot;                    // the new version (the first one when deduplicated)
  SiblingSet record;          // the key's record after the write (empty when deduplicated)
};

struct ListPage {
  std::vector<std::string> keys;
  std::string next_page_token;  // empty when done
};

class LocalStore {
 public:
  struct Options {
    Limits limits;
    absl::Duration idempotency_ttl = absl::Hours(24);
    bool sync_writes = false;  // fsync every acknowledged batch
  };

  // Loads (or, on an empty engine, creates) the node's actor epoch.
  static absl::StatusOr<std::unique_ptr<LocalStore>> Open(Engine* engine, const Clock* clock,
                                                          absl::BitGenRef rng, std::string node_id,
                                                          Options options);

  const std::string& actor() const { return actor_; }
  const Options& options() const { return options_; }

  // Adds mutations to a write's atomic batch (the replication outbox entries for the key).
  using BatchHook = std::function<void(absl::string_view key, WriteBatch* batch)>;

  // Applies a Put or Delete coordinated by this node. A Delete without context removes every
  // version this replica holds (it is written as a tombstone covering them). `hook`, if set, is
  // called exactly once on success, under the key's lock, to add to the batch that is written:
  // the new version's batch, or, when the write is deduplicated, a batch of its own (so that a
  // retried write is sent to the other replicas again).
  //
  // Deduplication: a token seen before on this node returns the first result. A token carried
  // by a version this replica already holds (the write was coordinated elsewhere and has
  // replicated here) also returns that version, when the value matches.
  absl::StatusOr<WriteOutcome> Write(const WriteCommand& command, const BatchHook& hook = {});

  // The replica's record of `key`, tombstones included; NOT_FOUND if it has none.
  absl::StatusOr<SiblingSet> ReadRecord(absl::string_view key);

  // Keys with at least one live version that start with `prefix`, in byte order, at most
  // `limit` (0 = default; capped at the maximum). `page_token` continues an earlier page.
  absl::StatusOr<ListPage> List(absl::string_view prefix, absl::string_view page_token,
                                uint32_t limit);

  // Merges a record received from another replica; returns the merged record.
  absl::StatusOr<SiblingSet> MergeRecord(absl::string_view key, const SiblingSet& remote);

  // Deletes idempotency records older than the TTL; returns how many were removed.
  absl::StatusOr<size_t> ExpireIdempotencyRecords();

  // INVALID_ARGUMENT naming the limit if the key is empty or too long.
  absl::Status ValidateKey(absl::string_view key) const;

 private:
  LocalStore(Engine* engine, const Clock* clock, std::string actor, Options options);
  absl::Mutex& LockFor(absl::string_view key);
  absl::StatusOr<SiblingSet> ReadRecordLocked(absl::string_view key);
  absl::Status ValidateWrite(const WriteCommand& command) const;
  // Writes `hook`'s mutations (if any) in a batch of their own.
  absl::Status RunHookAlone(absl::string_view key, const BatchHook& hook);

  static constexpr size_t kLockStripes = 256;

  Engine* const engine_;
  const Clock* const clock_;
  const std::string actor_;
  const Options options_;
  std::array<absl::Mutex, kLockStripes> stripes_;
};

// Fingerprint of a mutation's parameters, stored with its idempotency token.
std::string WriteFingerprint(const WriteCommand& command);
// Encodes a write id; ParseWriteId reverses it (INVALID_ARGUMENT if malformed).
std::string MakeWriteId(const Dot& dot, absl::string_view key);
absl::Status ParseWriteId(absl::string_view write_id, Dot* dot, std::string* key);

}  // namespace kv

#endif  // KV_NODE_LOCAL_STORE_H_

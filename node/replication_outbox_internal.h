// Internals of ReplicationOutbox shared by its source files (replication_outbox.cc: queues and
// senders; replication_outbox_disk.cc: recovery, scans and deletion of entries on disk). Not for
// use elsewhere.
#ifndef KV_NODE_REPLICATION_OUTBOX_INTERNAL_H_
#define KV_NODE_REPLICATION_OUTBOX_INTERNAL_H_

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "node/replication_outbox.h"

namespace kv {
namespace outbox_internal {

inline constexpr char kSeparator = '\0';
inline constexpr size_t kSeqBytes = 8;

// peer_id + '\0': the prefix of every entry key of the peer.
std::string PeerPrefix(absl::string_view peer_id);
// Splits an outbox column key; false if it is not peer_id '\0' 8-byte-seq.
bool ParseEntryKey(absl::string_view key, absl::string_view* peer_id, uint64_t* seq);

}  // namespace outbox_internal

// Lets late completions and timers find out whether the outbox still exists, and lets the
// destructor wait for those already running inside it. Entering never blocks on a lock held
// across the outbox's work, so an inline completion nested in another one is fine.
struct ReplicationOutbox::Liveness {
  absl::Mutex mu;
  int active ABSL_GUARDED_BY(mu) = 0;
  bool dead ABSL_GUARDED_BY(mu) = false;

  bool Enter() {
    absl::MutexLock lock(&mu);
    if (dead) return false;
    ++active;
    return true;
  }
  void Exit() {
    absl::MutexLock lock(&mu);
    --active;
  }
  // Waits until no one is inside; with `kill`, refuses later entries too.
  void AwaitIdle(bool kill) {
    absl::MutexLock lock(&mu);
    if (kill) dead = true;
    mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &active));
  }
};

// One peer's queue and sender. Every field but `id` is guarded by the outbox's mu_.
struct ReplicationOutbox::PeerState {
  struct Batch {
    std::vector<Waiting> entries;
    size_t records = 0;  // distinct keys
    size_t sent = 0;     // records actually sent (keys without a record send nothing)
  };
  struct Ready {
    uint64_t batch_id;
    std::vector<std::string> keys;
  };

  explicit PeerState(Member m) : id(m.id), member(std::move(m)) {}
  size_t InMemory() const { return queued.size() + in_flight_seqs.size(); }

  const std::string id;
  Member member;  // its address changes when the id joins again elsewhere (AddPeer)
  std::map<uint64_t, Waiting> queued;  // held in memory, not in flight, by seq
  // The seqs in `queued` of each key, so a batch takes all of a key's entries at once.
  std::map<std::string, std::set<uint64_t>, std::less<>> queued_by_key;
  std::map<uint64_t, Batch> in_flight;  // by batch id
  std::set<uint64_t> in_flight_seqs;
  // Seqs (with their keys) handed out by AddEntries and not yet submitted: a scan must not pick
  // them up, since Submit will (their batch may even fail to commit, leaving only this trace).
  std::map<uint64_t, std::string> unsubmitted;
  std::deque<Ready> ready;  // formed batches waiting for Drain to send them
  uint64_t next_batch_id = 1;
  bool draining = false;
  bool scan_requested = false;
  bool on_disk_only = false;  // some entries on disk are not held in memory
  // Set by AddPeer: entries on disk with a smaller seq were left by an earlier run for a peer
  // that Recover did not know, and are not counted in stats.depth yet; the first scan that
  // completes counts them (all of them, held in memory or not) and sets it back to 0.
  uint64_t uncounted_below = 0;
  // Set by AddPeer while a RemovePeer of the same id still deletes its entries below this seq:
  // they belong to the earlier incarnation, and scans skip them.
  uint64_t ignore_below = 0;
  bool paused = false;    // waiting out a backoff
  bool scanning = false;  // ScanDisk is reading entries that are not in memory yet
  bool removed = false;   // RemovePeer: sends nothing more
  size_t isolate = 0;     // after a refused batch: this many batches of one key each
  // Keys whose record the peer refused alone, with how many times in a row.
  std::map<std::string, int, std::less<>> refusals;
  // Keys whose record the peer refused alone as not its replica while its layout was older than
  // this node's (see Refusals), with how many times in a row. Their entries stay queued, but
  // batches skip them while `held` (a timer of a backoff for the key ends it), so that the keys
  // queued after them go on.
  struct Deferral {
    int attempts = 0;
    bool held = false;
  };
  std::map<std::string, Deferral, std::less<>> deferred;
  uint64_t backoff_gen = 0;  // bumped by Resume: the timer of an ended backoff does nothing
  absl::Duration backoff_ceiling;
  PeerOutboxStats stats;
};

}  // namespace kv

#endif  // KV_NODE_REPLICATION_OUTBOX_INTERNAL_H_

// RepairRunner: forced anti-entropy ("repair") as an asynchronous operation. Start() registers an
// operation of kind "repair" in the OperationRegistry and returns its id at once; the job then
// runs one Merkle exchange (node/anti_entropy.h) with each peer in turn (or with one peer), and
// repeats the exchange with a peer while it stops at the per-exchange key limit, up to
// Options::max_exchanges_per_peer times.
//
// Progress: done/total counts peers; counters "exchanges", "segments_different",
// "keys_different", "keys_repaired", "peers_failed"; the message says what it is waiting for.
//
// Waiting: only one exchange runs at a time on a node, so while the periodic exchange (or
// another repair's) runs, the job retries every Options::busy_retry; it also waits until this
// node's Merkle trees are built. It gives up waiting after Options::wait_timeout (that peer then
// counts as failed).
//
// Outcome: SUCCEEDED when every exchange succeeded; FAILED (UNAVAILABLE unless all failures had
// another code) naming each peer whose exchange failed and why. The exchanges that succeeded
// have repaired what they found either way. The repair budget (keys per second) of AntiEntropy
// applies to repairs too.
//
// Restarts: with a durable registry (OperationRegistry::Load) Shutdown leaves a running repair
// RUNNING, and the next run of the node goes on with it under the same id (Resume): the peers
// whose exchanges succeeded before are done (the operation's checkpoint names them, written as
// each one succeeds), and the others are exchanged with, from the first not done (failed peers
// again: exchanges are idempotent; the exchange counters go on adding up, peers_failed starts
// over). Call Resume before the node serves.
//
// Thread-safe. Time only through the Scheduler. Shutdown() (also the destructor) stops the jobs:
// a running operation is left RUNNING for the next run (durable registry) or marked FAILED
// (CANCELLED, "the node is shutting down"), and callbacks that arrive later do nothing. The index,
// anti-entropy, registry and scheduler must outlive it.
#ifndef KV_NODE_REPAIR_RUNNER_H_
#define KV_NODE_REPAIR_RUNNER_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/anti_entropy.h"
#include "node/lifetime_guard.h"
#include "node/merkle_index.h"
#include "node/operations.h"
#include "node/scheduler.h"

namespace kv {

class RepairRunner {
 public:
  struct Options {
    absl::Duration busy_retry = absl::Milliseconds(50);
    absl::Duration wait_timeout = absl::Minutes(10);
    int max_exchanges_per_peer = 100;
  };

  RepairRunner(MerkleIndex* index, AntiEntropy* anti_entropy, OperationRegistry* operations,
               Scheduler* scheduler, Options options);
  ~RepairRunner();
  RepairRunner(const RepairRunner&) = delete;
  RepairRunner& operator=(const RepairRunner&) = delete;

  // Starts a repair with every peer (`peer_id` empty) or with `peer_id`, and returns the
  // operation id. A repair of the same peers that is still running is not started again: its id
  // is returned (so a retried or repeated request costs nothing), and `*already_running` (if not
  // null) is set to say so. INVALID_ARGUMENT for an unknown peer; FAILED_PRECONDITION if this
  // node has no peers; UNAVAILABLE after Shutdown.
  absl::StatusOr<std::string> Start(const std::string& peer_id, bool* already_running = nullptr);

  // Goes on with the repairs an earlier run of this node left running (OperationRegistry::
  // TakeInterrupted), under their ids, with the peers not done (see "Restarts" above); one whose
  // peer is gone ends FAILED (FAILED_PRECONDITION), one whose checkpoint names no peer set FAILED
  // (DATA_LOSS).
  void Resume(const std::vector<OperationInfo>& interrupted);

  // Cancels running repair `id`: it ends FAILED (CANCELLED, a message starting with
  // kCancelledByCaller) now, and the job stops before its next exchange (one that is running
  // finishes: exchanges are idempotent). NOT_FOUND if this runner runs no such repair (it ended
  // before).
  absl::Status Cancel(const std::string& id);
  static constexpr absl::string_view kCancelledByCaller = "cancelled by a caller";

  void Shutdown();

 private:
  // The peers a repair of `peer_id` (empty: all) exchanges with, in order.
  std::vector<std::string> PeersFor(const std::string& peer_id) const;
  struct Job;
  using JobPtr = std::shared_ptr<Job>;
  // Whether `job` was cancelled: then it stops (and is forgotten).
  bool Cancelled(const JobPtr& job);

  void Next(JobPtr job);
  void OnExchange(JobPtr job, absl::StatusOr<ExchangeResult> result);
  void Retry(JobPtr job, const std::string& waiting_for);
  void PeerDone(JobPtr job, absl::Status status);
  void Progress(const JobPtr& job, const std::string& message);

  MerkleIndex* const index_;
  AntiEntropy* const anti_entropy_;
  OperationRegistry* const operations_;
  Scheduler* const scheduler_;
  const Options options_;
  LifetimeGuard guard_;

  absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  // Running operations: id -> the peer asked for ("" for every peer).
  std::map<std::string, std::string> running_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);  // ids; see Cancel
};

}  // namespace kv

#endif  // KV_NODE_REPAIR_RUNNER_H_

// HandoffSender: this node's part of a membership transition. When the placement shows a
// transition (node/placement.h) and this node is a current owner (a *source*), it makes sure that
// every key it holds whose new preference list includes a member that the old one does not (the
// member *gains* the key) reaches that member, sending each key's full record over the network
// once rather than once per old owner. Two phases:
//
//   1. Streaming. The node scans its data column and streams each gained key it is the
//      designated source of (the first member of the key's old preference list that the layout
//      does not name down, node/handoff_plan.h; every node computes the same one) to its
//      gainers, in MergeBatch
//      batches of about Options::batch_bytes. When the scan ends it publishes phase 2 (kComparing).
//   2. Comparing (the safety net). Once every source published that phase 1 is over
//      (StreamedCallback, from gossip), the node scans its merkle column (node/merkle_index.h:
//      every key of the data column with the digest of its encoded record, committed in the same
//      batches) and, for each gained key it is NOT the designated source of, sends (key, digest)
//      to the gainers; for each key it loses (an old owner that is not a new one: a leaving
//      node, or the owner a joining node replaces) it sends (key, digest) to every new owner, so
//      that nothing leaves with it even when nobody gains the key (a leave down to N members or
//      fewer); and when another old owner of the key is named down (a remove), to every new
//      owner but itself and the gainers it streamed to (KeyHandoff::CompareWith).
//      Options::digests_per_batch pairs at a time (PeerTransport::CompareDigests). A gainer answers
//      the keys it has no record of or another digest for; the node sends those records (read
//      again, so at least as new as the digested one) with MergeBatch.
//
// Why no acknowledged write misses its new owner (beyond what the previous every-owner design
// missed). A write acknowledged before a source's scan passes its key is in that source's
// record (records only grow by merge). If the source is the designated one, phase 1 sends it; if
// not, phase 2 compares digests after phase 1 ended everywhere: an equal digest means the gainer
// holds that very record, a different one makes the node send its record. So every old owner's
// copy reaches each gainer, as when every old owner streamed everything, but each non-designated
// copy costs a (key, 8-byte digest) comparison when it is already there; and since phase 2 scans
// later than phase 1, writes that reached a non-designated owner during phase 1 are caught too. The
// designated source may be stale or lack the key (W of N acknowledged it; its outbox entry is
// pending, dropped or was never made by a coordinator that had not seen the transition): the
// owners that do hold the write fill the gap in phase 2. Writes coordinated with the transition
// placement also reach the gainers directly (outbox). Merging is idempotent and commutative, so a
// record sent twice, or older than the gainer's, changes nothing; tombstones travel like values.
//
// Progress: the ProgressCallback gets the node's HandoffProgress (node/membership.h) after every
// batch that every gainer acknowledged as durable, at every phase change, and with done = true
// once both phases ended. A call that fails is retried until it succeeds (a gainer that is down
// delays completion; it never completes without it), after a capped exponential backoff with
// full jitter: uniform in [0, ceiling], the ceiling starting at Options::retry and doubling with
// each failure in a row up to Options::max_retry, back to Options::retry after a success. (A
// record a gainer refuses for good, rather than being down, holds the change up likewise. The
// store's record size limit keeps one coordinator's writes from making one too large to send;
// siblings merged from more than three coordinators at that limit can still pass it.) Every
// failure is published as HandoffProgress::last_error (so the change's operation says why it
// waits) and logged when its text changes; a retry sends the records as they are stored then, so
// a record shrunk meanwhile (its siblings resolved by a write with its context) goes through. A
// gainer that does not know CompareDigests (UNIMPLEMENTED, an earlier version) gets every record of
// the batch. The throughput limit (Options::bytes_per_second) counts full record bytes of both
// phases. A newer layout cancels the job; a restart starts it again from phase 1.
//
// Thread-safe. Steps run on the executor and the scheduler; Shutdown (also the destructor) stops
// the job and waits for running callbacks; the engine, transport, scheduler and executor must
// outlive it.
#ifndef KV_NODE_HANDOFF_H_
#define KV_NODE_HANDOFF_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/lifetime_guard.h"
#include "node/membership.h"
#include "node/peer_transport.h"
#include "node/placement.h"
#include "node/scheduler.h"
#include "storage/engine.h"

namespace kv {

class HandoffSender {
 public:
  struct Options {
    size_t replication_factor = 3;
    uint64_t bytes_per_second = 64 << 20;  // 0: unlimited
    size_t batch_bytes = 1 << 20;
    size_t digests_per_batch = 4096;
    // Keys read per scan step at most (each step is one executor task).
    size_t keys_per_step = 10'000;
    absl::Duration retry = absl::Seconds(1);       // the first retry's backoff ceiling
    absl::Duration max_retry = absl::Seconds(10);  // the largest ceiling
    // How often a node waiting to start phase 2 asks whether phase 1 ended everywhere.
    absl::Duration poll = absl::Milliseconds(50);
  };
  using ProgressCallback = std::function<void(const HandoffProgress& progress)>;
  // Whether every source of `transition` published that its phase 1 is over
  // (node/handoff_plan.h AllSourcesStreamed over the gossiped member table).
  using StreamedCallback = std::function<bool(const ClusterLayout& transition)>;

  // `rng` (backoff jitter) must outlive the sender; it is used under the sender's own lock.
  HandoffSender(std::string self_id, Engine* engine, PeerTransport* transport, Scheduler* scheduler,
                Executor* executor, const Clock* clock, absl::BitGenRef rng, Options options,
                ProgressCallback progress, StreamedCallback all_streamed);
  ~HandoffSender();
  HandoffSender(const HandoffSender&) = delete;
  HandoffSender& operator=(const HandoffSender&) = delete;

  // Starts the handoff for `placement` if it is a transition this node owns keys in and no job
  // for that version ran yet; a job for an older version stops.
  void OnPlacement(std::shared_ptr<const Placement> placement);
  void Shutdown();

 private:
  struct Job;
  using JobPtr = std::shared_ptr<Job>;
  void StartScan(JobPtr job);
  void Scan(JobPtr job);
  void SendRecords(JobPtr job);
  void OnRecordsSent(JobPtr job, bool ok);
  void Compare(JobPtr job);
  void OnCompared(JobPtr job, bool ok);
  // Chooses the next step once a batch is through: records still wanted, more scan, phase 2,
  // or done.
  void Next(JobPtr job);
  void WaitForStreamed(JobPtr job);
  // Moves up to a batch of wanted records into the (empty) pending batch. A read error ends the
  // batch before the key it failed on, which stays wanted; with nothing read, it is returned,
  // naming the key.
  absl::Status FillFromWanted(Job& job);
  // Runs `step` once the average rate is back under Options::bytes_per_second.
  void Throttled(const JobPtr& job, std::function<void()> step);
  void Publish(const Job& job);
  // Runs `step` after the job's next backoff (see the header comment), or resets the backoff.
  void RetryLater(const JobPtr& job, std::function<void()> step);
  void ResetBackoff(Job& job);
  // A call of the job failed with `error`: publishes and logs it, then RetryLater(step).
  void Failed(const JobPtr& job, std::string error, std::function<void()> step);
  // The error of the first gainer (by id) whose call of the current batch failed.
  std::string FirstCallError(Job& job);
  // A call of the job succeeded: resets the backoff and clears the published error.
  void Succeeded(Job& job);
  // Replaces the records of the pending batch that are still to be sent with their stored
  // versions when those are not larger (a record resolved meanwhile goes through; the batch
  // never outgrows a message), and drops those no longer stored (purged tombstones).
  void RefreshPending(Job& job);
  bool Current(const JobPtr& job);

  const std::string self_id_;
  Engine* const engine_;
  PeerTransport* const transport_;
  Scheduler* const scheduler_;
  Executor* const executor_;
  const Clock* const clock_;
  const Options options_;
  const ProgressCallback progress_;
  // Serializes publications, so that none of a job that OnPlacement ended follows its last word.
  // The progress callback runs under it: it must not block or call back into this sender.
  absl::Mutex publish_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  HandoffProgress published_ ABSL_GUARDED_BY(publish_mu_);  // the last progress published
  const StreamedCallback all_streamed_;
  LifetimeGuard guard_;

  absl::Mutex rng_mu_;
  absl::BitGenRef rng_ ABSL_GUARDED_BY(rng_mu_);

  absl::Mutex mu_;
  uint64_t started_version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t latest_version_ ABSL_GUARDED_BY(mu_) = 0;  // the newest layout OnPlacement saw
  JobPtr job_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kv

#endif  // KV_NODE_HANDOFF_H_

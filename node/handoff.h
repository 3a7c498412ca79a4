// HandoffSender: this node's part of a membership transition. When the placement shows a
// transition (node/placement.h) and this node is a current owner, it scans its data column once
// and streams every record whose new preference list includes a member that the old one does
// not (the member gains the key) to that member, in MergeBatch batches of about
// Options::batch_bytes, at most Options::bytes_per_second on average. Records are merged on
// arrival, so sending a key that the gainer already has (from the outbox, another old owner, or a
// resent batch) is harmless; tombstones travel like values (no resurrection).
//
// Every old owner streams, not only one per key: a key acknowledged by W of the old replicas is
// then handed off by whichever of them holds it. This costs up to N-fold transfer; see README.
//
// Progress: the ProgressCallback gets (layout version, records sent, bytes sent, done) after
// every batch that every gainer acknowledged as durable; done = the scan reached the end. A
// batch that fails is resent after Options::retry until it succeeds (a gainer that is down
// delays completion; it never completes without it). A newer layout cancels the job.
//
// Thread-safe. Steps run on the executor and the scheduler; Shutdown (also the destructor) stops
// the job and waits for running callbacks; the engine, transport, scheduler and executor must
// outlive it.
#ifndef KV_NODE_HANDOFF_H_
#define KV_NODE_HANDOFF_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/lifetime_guard.h"
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
    absl::Duration retry = absl::Seconds(1);
  };
  using ProgressCallback =
      std::function<void(uint64_t layout_version, uint64_t keys, uint64_t bytes, bool done)>;

  HandoffSender(std::string self_id, Engine* engine, PeerTransport* transport, Scheduler* scheduler,
                Executor* executor, const Clock* clock, Options options, ProgressCallback progress);
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
  void Step(JobPtr job);
  void Send(JobPtr job);
  void OnSent(JobPtr job, bool ok);
  bool Current(const JobPtr& job);

  const std::string self_id_;
  Engine* const engine_;
  PeerTransport* const transport_;
  Scheduler* const scheduler_;
  Executor* const executor_;
  const Clock* const clock_;
  const Options options_;
  const ProgressCallback progress_;
  LifetimeGuard guard_;

  absl::Mutex mu_;
  uint64_t started_version_ ABSL_GUARDED_BY(mu_) = 0;
  JobPtr job_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kv

#endif  // KV_NODE_HANDOFF_H_

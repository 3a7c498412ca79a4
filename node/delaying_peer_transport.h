// DelayingPeerTransport: a fault point for tests and demonstrations. It wraps a PeerTransport
// and holds every MergeRecords call for a fixed delay before passing it on, so that replication
// lag becomes long enough to watch (kvnode --fault_replication_delay). Reads, forwarded
// writes, anti-entropy calls and digest comparisons pass through at once. Thread-safe; `inner` and
// `scheduler` must outlive it.
#ifndef KV_NODE_DELAYING_PEER_TRANSPORT_H_
#define KV_NODE_DELAYING_PEER_TRANSPORT_H_

#include <utility>

#include "node/forwarding_peer_transport.h"
#include "node/peer_transport.h"
#include "node/scheduler.h"

namespace kv {

class DelayingPeerTransport : public ForwardingPeerTransport {
 public:
  DelayingPeerTransport(PeerTransport* inner, Scheduler* scheduler, absl::Duration delay)
      : ForwardingPeerTransport(inner), scheduler_(scheduler), delay_(delay) {}

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    scheduler_->RunAfter(
        delay_, [this, peer, records = std::move(records), done = std::move(done)]() mutable {
          inner()->MergeRecords(peer, std::move(records), std::move(done));
        });
  }

 private:
  Scheduler* const scheduler_;
  const absl::Duration delay_;
};

}  // namespace kv

#endif  // KV_NODE_DELAYING_PEER_TRANSPORT_H_

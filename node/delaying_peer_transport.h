// DelayingPeerTransport: a fault point for tests and demonstrations. It wraps a PeerTransport
// and holds every MergeRecords call for a fixed delay before passing it on, so that replication
// lag becomes long enough to watch (kvnode --fault_replication_delay). Reads, forwarded
// writes, anti-entropy calls and digest comparisons pass through at once. Thread-safe; `inner` and
// `scheduler` must outlive it.
#ifndef KV_NODE_DELAYING_PEER_TRANSPORT_H_
#define KV_NODE_DELAYING_PEER_TRANSPORT_H_

#include <utility>

#include "node/peer_transport.h"
#include "node/scheduler.h"

namespace kv {

class DelayingPeerTransport : public PeerTransport {
 public:
  DelayingPeerTransport(PeerTransport* inner, Scheduler* scheduler, absl::Duration delay)
      : inner_(inner), scheduler_(scheduler), delay_(delay) {}

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    scheduler_->RunAfter(
        delay_, [this, peer, records = std::move(records), done = std::move(done)]() mutable {
          inner_->MergeRecords(peer, std::move(records), std::move(done));
        });
  }
  void ReadRecord(const Member& peer, std::string key,
                  std::function<void(absl::StatusOr<std::string>)> done) override {
    inner_->ReadRecord(peer, std::move(key), std::move(done));
  }
  void ListKeys(const Member& peer, std::string prefix, std::string page_token, uint32_t limit,
                std::function<void(absl::StatusOr<ListPage>)> done) override {
    inner_->ListKeys(peer, std::move(prefix), std::move(page_token), limit, std::move(done));
  }
  void ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                    std::function<void(absl::StatusOr<WriteReply>)> done) override {
    inner_->ForwardWrite(peer, std::move(command), w, std::move(done));
  }
  void MerkleNodes(const Member& peer, MerkleLevel level, std::vector<uint32_t> indexes,
                   std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done) override {
    inner_->MerkleNodes(peer, level, std::move(indexes), std::move(done));
  }
  void SegmentKeys(const Member& peer, std::vector<uint32_t> segments,
                   std::function<void(absl::StatusOr<std::vector<KeyDigest>>)> done) override {
    inner_->SegmentKeys(peer, std::move(segments), std::move(done));
  }
  void PurgeRecord(const Member& peer, std::string key, std::string expected_record,
                   std::function<void(absl::Status)> done) override {
    inner_->PurgeRecord(peer, std::move(key), std::move(expected_record), std::move(done));
  }
  void CompareDigests(const Member& peer, std::vector<KeyDigest> digests,
                      std::function<void(absl::StatusOr<std::vector<std::string>>)> done) override {
    inner_->CompareDigests(peer, std::move(digests), std::move(done));
  }

 private:
  PeerTransport* const inner_;
  Scheduler* const scheduler_;
  const absl::Duration delay_;
};

}  // namespace kv

#endif  // KV_NODE_DELAYING_PEER_TRANSPORT_H_

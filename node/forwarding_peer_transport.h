// ForwardingPeerTransport: a PeerTransport that passes every call to another one. Decorators
// (fault points, test sabotage) derive from it and override only the calls they change. `inner`
// must outlive it; thread-safe as far as `inner` is.
#ifndef KV_NODE_FORWARDING_PEER_TRANSPORT_H_
#define KV_NODE_FORWARDING_PEER_TRANSPORT_H_

#include <utility>

#include "node/peer_transport.h"

namespace kv {

class ForwardingPeerTransport : public PeerTransport {
 public:
  explicit ForwardingPeerTransport(PeerTransport* inner) : inner_(inner) {}

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    inner_->MergeRecords(peer, std::move(records), std::move(done));
  }
  void ReadRecord(const Member& peer, std::string key,
                  std::function<void(absl::StatusOr<std::string>)> done) override {
    inner_->ReadRecord(peer, std::move(key), std::move(done));
  }
  void ReadRecordForQuorum(const Member& peer, std::string key,
                           std::function<void(absl::StatusOr<QuorumRecord>)> done) override {
    inner_->ReadRecordForQuorum(peer, std::move(key), std::move(done));
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
  void SegmentKeys(const Member& peer, std::vector<uint32_t> segments, size_t max_bytes,
                   std::function<void(absl::StatusOr<SegmentKeyList>)> done) override {
    inner_->SegmentKeys(peer, std::move(segments), max_bytes, std::move(done));
  }
  void PurgeRecord(const Member& peer, std::string key, std::string expected_record,
                   uint64_t layout_version, std::function<void(absl::Status)> done) override {
    inner_->PurgeRecord(peer, std::move(key), std::move(expected_record), layout_version,
                        std::move(done));
  }
  void ReserveLayout(const Member& peer, uint64_t version, LayoutBallot ballot, std::string change,
                     std::function<void(LayoutPromise)> done) override {
    inner_->ReserveLayout(peer, version, std::move(ballot), std::move(change), std::move(done));
  }
  void AcceptLayout(const Member& peer, LayoutBallot ballot, ClusterLayout layout,
                    std::function<void(absl::Status)> done) override {
    inner_->AcceptLayout(peer, std::move(ballot), std::move(layout), std::move(done));
  }
  void ReleaseLayout(const Member& peer, uint64_t version, LayoutBallot ballot) override {
    inner_->ReleaseLayout(peer, version, std::move(ballot));
  }
  void CompareDigests(const Member& peer, std::vector<KeyDigest> digests,
                      std::function<void(absl::StatusOr<std::vector<std::string>>)> done) override {
    inner_->CompareDigests(peer, std::move(digests), std::move(done));
  }

 protected:
  PeerTransport* inner() const { return inner_; }

 private:
  PeerTransport* const inner_;
};

}  // namespace kv

#endif  // KV_NODE_FORWARDING_PEER_TRANSPORT_H_

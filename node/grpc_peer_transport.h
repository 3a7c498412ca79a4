// GrpcPeerTransport: PeerTransport (and GossipTransport) over gRPC. Record merges, reads and
// gossip exchanges use the internal kv.internal.v1.Replica service; forwarded writes use the peer's
// public kv.v1.KV service (the peer coordinates them exactly as it would a client's).
//
// One channel per peer address (and a separate one for gossip), created on first use and kept
// until DropIdleChannels finds it unused for Options::idle_channel_lifetime (an address of a node
// that went away, or was replaced under a new one, is not kept for good).
// While calls are in flight and nothing has been read from the peer for keepalive_time, a
// channel pings it, and closes the connection when the ping goes unanswered for
// keepalive_timeout: the calls in flight then fail UNAVAILABLE, and the channel connects again,
// resolving the peer's name anew. So a connection to a peer that stopped answering (its host
// gone without closing it, or its name now pointing to a replacement) is dropped within
// keepalive_time + keepalive_timeout of silence, rather than kept until TCP gives up (many
// minutes, or never for a stopped process whose kernel still acknowledges). Calls with shorter
// deadlines (merges, reads, gossip) still end at their deadlines, and calls to a peer that
// accepts connections but never completes the handshake wait for gRPC's connect timeout (20 s)
// or their deadline, as before.
// Every call has a deadline (Options; anti-entropy calls and digest comparisons use read_timeout);
// its callback is handed to the executor, so callers may block in it (e.g. on storage) without
// stalling gRPC's threads. The destructor cancels the calls still in flight and waits until their
// callbacks have been handed to the executor, which must outlive it; those calls end CANCELLED.
// Any other call that ends CANCELLED was dropped by the peer before it started (gRPC does so while
// a server shuts down) and is reported as UNAVAILABLE. Thread-safe.
#ifndef KV_NODE_GRPC_PEER_TRANSPORT_H_
#define KV_NODE_GRPC_PEER_TRANSPORT_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "node/executor.h"
#include "node/gossip_transport.h"
#include "node/peer_transport.h"
#include "storage/format_level.h"

namespace grpc {
class Channel;
class ChannelCredentials;
class ClientContext;
class Status;
}  // namespace grpc
namespace kv::v1 {
class KV;
}
namespace kv::internal::v1 {
class Replica;
}

namespace kv {

class GrpcPeerTransport : public PeerTransport, public GossipTransport {
 public:
  struct Options {
    absl::Duration merge_timeout = absl::Seconds(2);
    absl::Duration read_timeout = absl::Seconds(2);
    absl::Duration forward_timeout = absl::Seconds(5);
    absl::Duration gossip_timeout = absl::Seconds(1);
    int max_message_bytes = 64 << 20;
    // Keepalive pings while calls are in flight (see above); a zero keepalive_time sends none.
    // keepalive_time is raised to 1 s (kvnode accepts a ping a second from its peers and
    // clients, node/node_server.cc) and keepalive_timeout to 100 ms; both are capped at a day.
    absl::Duration keepalive_time = absl::Seconds(2);
    absl::Duration keepalive_timeout = absl::Seconds(3);
    // The storage format level this node reads (storage/format_level.h), asked of peers in
    // ReadRecord. Below kFormatLevel only to act as an older node in tests: records read that
    // it could not read then fail with DATA_LOSS, as they would on such a node.
    uint32_t format_level = kFormatLevel;
    // Credentials of the channels to peers; null: plaintext (kvnode without --tls_*).
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Sent with every call (node/cluster_name.h); empty: none.
    std::string cluster_name;
    // How long a channel no call has used may stay (DropIdleChannels); InfiniteDuration: for good.
    // Raised to a minute: a call's context holds the channel too (unseen by DropIdleChannels),
    // and the method that starts a call drops its own references to the call and the stubs on
    // the caller's thread (maybe one of gRPC's) a moment after it made the stubs used.
    absl::Duration idle_channel_lifetime = absl::Hours(1);
    // Times channel use for DropIdleChannels; null: SteadyClock.
    const Clock* clock = nullptr;
  };

  GrpcPeerTransport(std::string self_id, Executor* executor, Options options);
  ~GrpcPeerTransport() override;

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override;
  void ReadRecord(const Member& peer, std::string key,
                  std::function<void(absl::StatusOr<std::string>)> done) override;
  void ReadRecordForQuorum(const Member& peer, std::string key,
                           std::function<void(absl::StatusOr<QuorumRecord>)> done) override;
  void ListKeys(const Member& peer, std::string prefix, std::string page_token, uint32_t limit,
                std::function<void(absl::StatusOr<ListPage>)> done) override;
  void ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                    std::function<void(absl::StatusOr<WriteReply>)> done) override;
  void MerkleNodes(const Member& peer, MerkleLevel level, std::vector<uint32_t> indexes,
                   std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done) override;
  void SegmentKeys(const Member& peer, std::vector<uint32_t> segments, size_t max_bytes,
                   std::function<void(absl::StatusOr<SegmentKeyList>)> done) override;
  void PurgeRecord(const Member& peer, std::string key, std::string expected_record,
                   uint64_t layout_version, std::function<void(absl::Status)> done) override;
  void CompareDigests(const Member& peer, std::vector<KeyDigest> digests,
                      std::function<void(absl::StatusOr<std::vector<std::string>>)> done) override;
  // For ReserveLayout and AcceptLayout, `done` runs on the gRPC thread that completes the call
  // (the call is released on the executor): a commit waits for it on an executor thread.
  // ReleaseLayout has no answer.
  void ReserveLayout(const Member& peer, uint64_t version, LayoutBallot ballot, std::string change,
                     std::function<void(LayoutPromise)> done) override;
  void ReleaseLayout(const Member& peer, uint64_t version, LayoutBallot ballot) override;
  void AcceptLayout(const Member& peer, LayoutBallot ballot, ClusterLayout layout,
                    std::function<void(absl::Status)> done) override;
  void Gossip(const std::string& address, GossipDigest digest,
              std::function<void(absl::StatusOr<GossipDigest>)> done) override;

  // Closes and forgets the channels that no call holds and none has used for
  // idle_channel_lifetime; returns how many. A later call to such an address makes a new channel.
  // Must not run on one of gRPC's threads (it may drop a channel's last reference).
  size_t DropIdleChannels();
  // How many channels the transport holds (gossip's included).
  size_t ChannelCount() const;

 private:
  // ReadRecord and ReadRecordForQuorum.
  void Read(const Member& peer, std::string key, bool for_quorum,
            std::function<void(absl::StatusOr<QuorumRecord>)> done);
  // A channel and stubs for one peer address; stubs outlive every call made through them.
  struct PeerStubs;
  // Gossip gets its own channel per address: its calls reach peers that are not up yet (at
  // start-up) or down, and a failed connection puts a channel into reconnect backoff, during
  // which it fails every call at once; replication must not inherit that.
  std::shared_ptr<PeerStubs> StubsFor(const Member& peer, bool gossip = false);
  // ForwardWrite's call; `method(stub, context, request, response, on_done)` starts Put or Delete.
  template <typename Request, typename Response, typename Method>
  void SendForwardedWrite(std::shared_ptr<PeerStubs> stubs, WriteCommand command, QuorumSpec w,
                          Method method, std::function<void(absl::StatusOr<WriteReply>)> done);
  // In-flight accounting, so that the destructor can cancel and wait for outstanding calls. End
  // is called while the call's context still exists (its address may be reused once it is
  // freed) and counts the call as releasing until Released: the call's and its stubs' channel
  // references are dropped in between, while the destructor waits.
  void Begin(grpc::ClientContext* context);
  void End(grpc::ClientContext* context);
  void Released();
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // no call in flight or releasing
  // A call's status for the caller: CANCELLED becomes UNAVAILABLE unless this transport's
  // destruction cancelled the call (see above).
  absl::Status FromPeer(const grpc::Status& status) const;
  // Runs `done` on the executor, then ends the call and releases it and its stubs there.
  void Complete(std::shared_ptr<void> call, grpc::ClientContext* context,
                std::shared_ptr<PeerStubs> stubs, std::function<void()> done);

  const std::string self_id_;
  Executor* const executor_;
  const Options options_;
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<PeerStubs>> peers_ ABSL_GUARDED_BY(mu_);
  std::set<grpc::ClientContext*> in_flight_ ABSL_GUARDED_BY(mu_);
  int releasing_ ABSL_GUARDED_BY(mu_) = 0;  // calls between End and Released
  // Set by the destructor before it cancels the calls in flight: their CANCELLED is this
  // transport's, not a peer's.
  std::atomic<bool> cancelling_{false};
};

}  // namespace kv

#endif  // KV_NODE_GRPC_PEER_TRANSPORT_H_

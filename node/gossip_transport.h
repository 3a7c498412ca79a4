// GossipTransport: how the gossip module exchanges membership tables with another node.
// GrpcPeerTransport implements it with the kv.internal.v1.Replica Gossip call; unit tests use an
// in-memory network.
//
// Peers are addressed by HOST:PORT rather than by member, because a node that starts with only
// --seeds knows its seeds' addresses but not their ids. The call is asynchronous: `done` runs
// exactly once, on some executor thread, never inline in the caller's stack, with the peer's
// table (after it merged ours) or an error (UNAVAILABLE or DEADLINE_EXCEEDED when the peer could
// not be reached in time). Implementations are thread-safe.
#ifndef KV_NODE_GOSSIP_TRANSPORT_H_
#define KV_NODE_GOSSIP_TRANSPORT_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "node/membership.h"

namespace kv {

class GossipTransport {
 public:
  virtual ~GossipTransport() = default;
  virtual void Gossip(const std::string& address, GossipDigest digest,
                      std::function<void(absl::StatusOr<GossipDigest>)> done) = 0;
};

}  // namespace kv

#endif  // KV_NODE_GOSSIP_TRANSPORT_H_

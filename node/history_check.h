// AskPeerGenerations: before a node opens its store, asks other nodes which history generation
// they last saw from it (node/local_store.h, "History generations"), so that a data directory
// restored from a backup or a snapshot is told apart from the one the node last ran on.
//
// Each address gets one gossip exchange with an empty table (it learns nothing from this node,
// so the entry it holds for this node is still the one from the node's last run), all at once.
// The answer is the highest generation any entry for `node_id` at one of `self_addresses`
// carries: an entry at another address is another cluster's node of the same id (an address
// given to this node that now serves another cluster), or this node's run on another address,
// and is ignored,
// as are generations above kMaxPeerGeneration (no node advances that far). Gossip entries live in
// memory: a peer that restarted since this node last ran no longer holds its entry until this
// node gossips again, and a whole cluster restarted at once knows none.
//
// Thread-safety: the call blocks its caller for at most `timeout`, on the monotonic clock
// (storage/steady_timer.h), whatever the wall clock does (transport callbacks that come
// later are ignored); the transport must outlive the exchanges it was given.
#ifndef KV_NODE_HISTORY_CHECK_H_
#define KV_NODE_HISTORY_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "node/gossip_transport.h"

namespace kv {

struct PeerGenerations {
  uint64_t highest = 0;      // 0: no answer held an entry for the node with a generation
  std::string highest_from;  // the address that reported `highest`
  size_t asked = 0;
  size_t answered = 0;
};

inline constexpr uint64_t kMaxPeerGeneration = uint64_t{1} << 48;

PeerGenerations AskPeerGenerations(GossipTransport* transport, const std::string& node_id,
                                   const std::vector<std::string>& self_addresses,
                                   const std::vector<std::string>& addresses,
                                   absl::Duration timeout);

}  // namespace kv

#endif  // KV_NODE_HISTORY_CHECK_H_

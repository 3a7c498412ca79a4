// PeerTransport: how one node's core talks to another node. GrpcPeerTransport implements it over
// the kv.internal.v1.Replica and kv.v1.KV services; the deterministic simulation implements it
// with a simulated network (loss, duplication, reordering, delay, partitions).
//
// Every call is asynchronous and runs `done` exactly once, on some executor thread, never inline
// in the caller's stack. Failures that may succeed later are UNAVAILABLE or DEADLINE_EXCEEDED.
// Records travel encoded (storage/FORMAT.md); receivers merge them, so duplicated or reordered
// deliveries are harmless. Implementations are thread-safe.
#ifndef KV_NODE_PEER_TRANSPORT_H_
#define KV_NODE_PEER_TRANSPORT_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "node/local_store.h"
#include "node/quorum.h"
#include "node/ring.h"

namespace kv {

// A key and its encoded sibling set.
struct EncodedRecord {
  std::string key;
  std::string record;
};

// The answer to a coordinated write, as a client sees it.
struct WriteReply {
  std::string write_id;
  std::string context;  // encoded CausalContext
  bool deduplicated = false;
};

// A W shortfall reported by a replica that did store the write (it keeps replicating). A node
// that forwarded the write must hand this answer back rather than try another replica, which
// would create a second copy of the write. In process the mark is a status payload; over gRPC it
// is the trailing metadata kWriteStoredMetadata.
inline constexpr absl::string_view kWriteStoredPayload = "type.kv/write-stored";
inline constexpr char kWriteStoredMetadata[] = "kv-write-stored";
inline absl::Status MarkWriteStored(absl::Status status) {
  status.SetPayload(kWriteStoredPayload, absl::Cord("1"));
  return status;
}
inline bool IsWriteStored(const absl::Status& status) {
  return status.GetPayload(kWriteStoredPayload).has_value();
}

class PeerTransport {
 public:
  virtual ~PeerTransport() = default;

  // Merges every record into the peer's replica; OK only once all are durable there.
  virtual void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                            std::function<void(absl::Status)> done) = 0;
  // The peer's encoded record of `key`, tombstones included; NOT_FOUND if it has none.
  virtual void ReadRecord(const Member& peer, std::string key,
                          std::function<void(absl::StatusOr<std::string>)> done) = 0;
  // One page of the peer's own keys (LocalStore::List semantics).
  virtual void ListKeys(const Member& peer, std::string prefix, std::string page_token,
                        uint32_t limit, std::function<void(absl::StatusOr<ListPage>)> done) = 0;
  // Asks the peer (a replica of the key) to coordinate this write.
  virtual void ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                            std::function<void(absl::StatusOr<WriteReply>)> done) = 0;
};

}  // namespace kv

#endif  // KV_NODE_PEER_TRANSPORT_H_

// LevelingPeerTransport: sends each peer records in a format it reads (storage/format_level.h),
// so that replication, repair and purges keep working while a rolling upgrade leaves members of
// an older level in the cluster.
//
// It wraps the node's PeerTransport. The records of MergeRecords (replication, read repair,
// anti-entropy, handoff) are downgraded for a peer whose FormatLevels::MemberFormatLevel is below
// kReplacedWritesLevel; records without replaced-write memory are sent unchanged, without
// re-encoding. A record that cannot be decoded is sent as it is (the peer rejects it as it would
// have). Other calls pass through: records a peer reads from this node are downgraded by the
// replica service (ReadRecordRequest.reader_format_level), and a tombstone purge is only asked of
// replicas whose record equals this node's byte for byte, which a downgraded replica's does not
// while this node's remembers replaced writes (such tombstones wait for the upgrade). The peer
// merges a downgraded record into what it holds, so nothing it had is lost; what it lacks is the
// memory that recognizes late retry copies, which it could not store anyway. Digests of
// downgraded replicas differ from the others' until the upgrade completes, so anti-entropy keeps
// comparing (and re-sending) those keys meanwhile.
//
// Thread-safe; `inner` and `levels` must outlive it.
#ifndef KV_NODE_LEVELING_PEER_TRANSPORT_H_
#define KV_NODE_LEVELING_PEER_TRANSPORT_H_

#include <functional>
#include <string>
#include <vector>

#include "node/forwarding_peer_transport.h"
#include "node/membership.h"

namespace kv {

class LevelingPeerTransport : public ForwardingPeerTransport {
 public:
  LevelingPeerTransport(PeerTransport* inner, const FormatLevels* levels)
      : ForwardingPeerTransport(inner), levels_(levels) {}

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override;

 private:
  const FormatLevels* const levels_;
};

}  // namespace kv

#endif  // KV_NODE_LEVELING_PEER_TRANSPORT_H_

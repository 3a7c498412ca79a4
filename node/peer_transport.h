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

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "node/layout_reservations.h"
#include "node/local_store.h"
#include "node/quorum.h"
#include "node/ring.h"
#include "storage/message_size_limit.h"

namespace kv {

// A key and its encoded sibling set.
struct EncodedRecord {
  std::string key;
  std::string record;
};

// A replica's answer to PeerTransport::ReadRecordForQuorum.
struct QuorumRecord {
  std::string record;  // encoded, tombstones included
  // The replica is catching up (LocalStore::ReadRecordForQuorum): its record may lack a write it
  // acknowledged, so it rules out no live version the merged answer lacks.
  bool catching_up = false;
};

// Adapters between the two read callbacks: `done` of a plain read given a quorum read's answer
// (the mark dropped), and `done` of a quorum read given a plain read's answer (marked
// `catching_up`).
inline std::function<void(absl::StatusOr<QuorumRecord>)> RecordOnly(
    std::function<void(absl::StatusOr<std::string>)> done) {
  return [done = std::move(done)](absl::StatusOr<QuorumRecord> answer) {
    if (!answer.ok()) return done(answer.status());
    done(std::move(answer->record));
  };
}
inline std::function<void(absl::StatusOr<std::string>)> MarkedRecord(
    bool catching_up, std::function<void(absl::StatusOr<QuorumRecord>)> done) {
  return [catching_up, done = std::move(done)](absl::StatusOr<std::string> record) {
    if (!record.ok()) return done(record.status());
    done(QuorumRecord{*std::move(record), catching_up});
  };
}

// A key and the digest of its record on a replica (node/merkle_tree.h).
struct KeyDigest {
  std::string key;
  uint64_t digest = 0;
};

// The keys of some Merkle segments (node/merkle_tree.h) on a replica, answering a SegmentKeys
// call: the entries of the first `segments` of the segments asked for (sorted, without
// repeats), in segment then key order. Fewer segments than asked are answered once the entries
// reach the call's byte limit; the caller asks for the others again.
struct SegmentKeyList {
  std::vector<KeyDigest> entries;
  size_t segments = 0;
};

// The levels of an anti-entropy hash tree (node/merkle_tree.h).
enum class MerkleLevel : uint32_t { kRoot = 0, kInterior = 1, kLeaves = 2 };

// The answer to a coordinated write, as a client sees it.
struct WriteReply {
  std::string write_id;
  std::string context;  // encoded CausalContext
  bool deduplicated = false;
};

// Whether a peer's error is about the records it was sent (it answered, and would refuse the
// same records again: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, DATA_LOSS) rather than
// about the peer or the network (retry later). The outbox gives up on a record refused alone
// several times; anti-entropy skips it.
inline bool IsRecordRefusal(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

// gRPC's verdict on a message larger than a size limit (RESOURCE_EXHAUSTED, "Received message
// larger than max" from the receiver, "Sent message larger than max" from this node's channel):
// about that message (one record too large), not about the peer. A peer's other
// RESOURCE_EXHAUSTED answers (its storage is behind) are about the peer: they pass.
inline bool IsMessageTooLarge(const absl::Status& status) {
  return absl::IsResourceExhausted(status) && IsMessageSizeLimitMessage(status.message());
}

// A W shortfall reported by a replica that did store the write (it keeps replicating). A node
// that forwarded the write must hand this answer back rather than try another replica, which
// would create a second copy of the write. In process the mark is a status payload; over gRPC it
// is the trailing metadata kWriteStoredMetadata.
inline constexpr absl::string_view kWriteStoredPayload = "type.kv/write-stored";
inline constexpr char kWriteStoredMetadata[] = "kv-write-stored";
// Request metadata of a write one node forwards to another (ForwardWrite): the receiver sets
// WriteCommand::forwarded and never hands the write on (node/coordinator.h), so two nodes whose
// layouts differ cannot pass it back and forth.
inline constexpr char kForwardedWriteMetadata[] = "kv-forwarded-write";

// `status` with the mark `payload` (an in-process status payload, value "1"), and the test.
inline absl::Status WithMark(absl::Status status, absl::string_view payload) {
  status.SetPayload(payload, absl::Cord("1"));
  return status;
}
inline bool HasMark(const absl::Status& status, absl::string_view payload) {
  return status.GetPayload(payload).has_value();
}

inline absl::Status MarkWriteStored(absl::Status status) {
  return WithMark(std::move(status), kWriteStoredPayload);
}
inline bool IsWriteStored(const absl::Status& status) {
  return HasMark(status, kWriteStoredPayload);
}

// A refusal by a node of another cluster (node/cluster_name.h): UNAVAILABLE, for to the caller
// its member is not there, marked so that a node forwarding a write whose every replica answers
// so tells its client what is likely wrong. In process the mark is a status payload; over
// gRPC it is the trailing metadata kClusterMismatchMetadata.
inline constexpr absl::string_view kOtherClusterPayload = "type.kv/other-cluster";
inline absl::Status MarkOtherCluster(absl::Status status) {
  return WithMark(std::move(status), kOtherClusterPayload);
}
inline bool IsOtherCluster(const absl::Status& status) {
  return HasMark(status, kOtherClusterPayload);
}

// A refusal of a record by a member that does not replicate its key in its layout
// (Placement::CheckMayHold): final for that member as long as its layout stands, so a sender gives
// the record up at once rather than retrying it. In process the mark is a status payload; over
// gRPC it is the trailing metadata kNotAReplicaMetadata.
inline constexpr absl::string_view kNotAReplicaPayload = "type.kv/not-a-replica";
inline constexpr char kNotAReplicaMetadata[] = "kv-not-a-replica";
inline absl::Status MarkNotAReplica(absl::Status status) {
  return WithMark(std::move(status), kNotAReplicaPayload);
}
inline bool IsNotAReplica(const absl::Status& status) {
  return HasMark(status, kNotAReplicaPayload);
}
// The refusing member's layout version, when it says (payload kNotAReplicaVersionPayload, trailing
// metadata kNotAReplicaVersionMetadata, decimal): a sender with a newer layout knows the refusal
// may pass once the member has learned it.
inline constexpr absl::string_view kNotAReplicaVersionPayload = "type.kv/not-a-replica-version";
inline constexpr char kNotAReplicaVersionMetadata[] = "kv-not-a-replica-layout-version";
inline absl::Status MarkNotAReplica(absl::Status status, uint64_t layout_version) {
  status = MarkNotAReplica(std::move(status));
  status.SetPayload(kNotAReplicaVersionPayload, absl::Cord(absl::StrCat(layout_version)));
  return status;
}
inline std::optional<uint64_t> NotAReplicaLayoutVersion(const absl::Status& status) {
  const auto payload = status.GetPayload(kNotAReplicaVersionPayload);  // absl::optional
  uint64_t version = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &version)) {
    return std::nullopt;
  }
  return version;
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
  // ReadRecord for a client read's quorum (Coordinator): a peer that is catching up answers
  // UNAVAILABLE where it holds no live version, and marks the record it holds otherwise
  // (LocalStore::ReadRecordForQuorum), so that the read does not count it toward NOT_FOUND.
  // Anti-entropy, handoff and purges read with ReadRecord, which always answers what the peer
  // holds. The default (for transports of tests) is ReadRecord, unmarked.
  virtual void ReadRecordForQuorum(const Member& peer, std::string key,
                                   std::function<void(absl::StatusOr<QuorumRecord>)> done) {
    ReadRecord(peer, std::move(key), MarkedRecord(/*catching_up=*/false, std::move(done)));
  }
  // One page of the peer's own keys (LocalStore::List semantics).
  virtual void ListKeys(const Member& peer, std::string prefix, std::string page_token,
                        uint32_t limit, std::function<void(absl::StatusOr<ListPage>)> done) = 0;
  // Asks the peer (a replica of the key) to coordinate this write.
  virtual void ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                            std::function<void(absl::StatusOr<WriteReply>)> done) = 0;

  // Anti-entropy (node/anti_entropy.h). The defaults answer UNIMPLEMENTED at once, for transports
  // of tests that never exchange trees; real transports override all three.
  //
  // Hashes of the peer's tree for this node: the root, the 256 interior nodes, or the 256 leaves
  // of each interior node in `indexes` (in order). UNAVAILABLE while the peer builds its tree.
  virtual void MerkleNodes(const Member& peer, MerkleLevel level, std::vector<uint32_t> indexes,
                           std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done);
  // The peer's keys, with digests, in `segments` (increasing) that this node also replicates:
  // those of the first SegmentKeyList::segments of them, whose entries reach about `max_bytes`
  // (MerkleIndex::SegmentEntries; 0: no limit).
  virtual void SegmentKeys(const Member& peer, std::vector<uint32_t> segments, size_t max_bytes,
                           std::function<void(absl::StatusOr<SegmentKeyList>)> done);
  // Asks the peer to purge its record of `key` if it still equals `expected_record` (encoded):
  // OK if purged, NOT_FOUND if it had none, FAILED_PRECONDITION if it changed, or if the peer's
  // cluster layout is in transition or of another version than `layout_version` (the one the
  // record was confirmed under; 0: none stated).
  virtual void PurgeRecord(const Member& peer, std::string key, std::string expected_record,
                           uint64_t layout_version, std::function<void(absl::Status)> done);

  // Membership change (node/layout_reservations.h), phase 1: asks the peer to promise layout
  // `version` to `ballot` (whose proposer is this node); `change` describes the layout the
  // proposer means to install. The peer's answer, or why none came (UNAVAILABLE,
  // DEADLINE_EXCEEDED, UNIMPLEMENTED from a peer that predates reservations), is in
  // LayoutPromise::status. `done` may run on a transport thread without the node's executor: the
  // caller may wait for it on an executor thread. The default answers UNIMPLEMENTED at once.
  virtual void ReserveLayout(const Member& peer, uint64_t version, LayoutBallot ballot,
                             std::string change, std::function<void(LayoutPromise)> done);
  // Phase 2: asks the peer to accept `layout` under `ballot`; threads as for ReserveLayout.
  virtual void AcceptLayout(const Member& peer, LayoutBallot ballot, ClusterLayout layout,
                            std::function<void(absl::Status)> done);
  // After a failed commit: asks the peer to end the lease of `ballot`'s promise of `version`
  // (LayoutReservations::Release). Best effort, no answer; the default does nothing.
  virtual void ReleaseLayout(const Member& peer, uint64_t version, LayoutBallot ballot);

  // Handoff safety net (node/handoff.h): of `digests` (key and MerkleTree::RecordDigest of the
  // sender's record), the keys the peer has no record of or another digest for, in the order
  // given. The default answers UNIMPLEMENTED at once; a sender then sends every record.
  virtual void CompareDigests(const Member& peer, std::vector<KeyDigest> digests,
                              std::function<void(absl::StatusOr<std::vector<std::string>>)> done);
};

inline void PeerTransport::MerkleNodes(
    const Member& /*peer*/, MerkleLevel /*level*/, std::vector<uint32_t> /*indexes*/,
    std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done) {
  done(absl::UnimplementedError("this transport does not carry anti-entropy calls"));
}
inline void PeerTransport::SegmentKeys(const Member& /*peer*/, std::vector<uint32_t> /*segments*/,
                                       size_t /*max_bytes*/,
                                       std::function<void(absl::StatusOr<SegmentKeyList>)> done) {
  done(absl::UnimplementedError("this transport does not carry anti-entropy calls"));
}
inline void PeerTransport::ReserveLayout(const Member& /*peer*/, uint64_t /*version*/,
                                         LayoutBallot /*ballot*/, std::string /*change*/,
                                         std::function<void(LayoutPromise)> done) {
  LayoutPromise promise;
  promise.status = absl::UnimplementedError("this transport does not carry layout reservations");
  done(std::move(promise));
}
inline void PeerTransport::AcceptLayout(const Member& /*peer*/, LayoutBallot /*ballot*/,
                                        ClusterLayout /*layout*/,
                                        std::function<void(absl::Status)> done) {
  done(absl::UnimplementedError("this transport does not carry layout reservations"));
}
inline void PeerTransport::ReleaseLayout(const Member& /*peer*/, uint64_t /*version*/,
                                         LayoutBallot /*ballot*/) {}
inline void PeerTransport::PurgeRecord(const Member& /*peer*/, std::string /*key*/,
                                       std::string /*expected_record*/, uint64_t /*layout_version*/,
                                       std::function<void(absl::Status)> done) {
  done(absl::UnimplementedError("this transport does not carry tombstone purges"));
}

inline void PeerTransport::CompareDigests(
    const Member& /*peer*/, std::vector<KeyDigest> /*digests*/,
    std::function<void(absl::StatusOr<std::vector<std::string>>)> done) {
  done(absl::UnimplementedError("this transport does not carry handoff digest comparisons"));
}

}  // namespace kv

#endif  // KV_NODE_PEER_TRANSPORT_H_

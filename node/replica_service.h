// ReplicaService: the internal kv.internal.v1.Replica gRPC service, through which replicas
// exchange encoded sibling sets (storage/FORMAT.md) and merge them.
//
// MergeBatch first checks that this node takes records from the sender and may keep every
// record of the batch (with a placement set, Placement::CheckSender: FAILED_PRECONDITION for a
// sender that is not a member of this node's layout, such as a member removed while down and
// restarted with its data; Placement::CheckMayHold: the same for a key this member does not
// replicate in its layout; nothing is merged: either would bring back a copy no purge asks
// about, C8),
// decodes and checks every record (INVALID_ARGUMENT naming the first bad record, and nothing is
// merged), then merges them through LocalStore::MergeRecordsAsync (queued together, so that they
// share commit groups of at most 256 mutations or 4 MiB each, committed from the gRPC thread as
// the Put handlers write) and answers once all are durable; if a later group fails, the records
// of earlier groups stay merged (harmless: merging is idempotent) and the call fails.
// Merging is idempotent, so a retried batch is harmless. ReadRecord returns found = false for a key
// the node knows nothing of.
//
// Anti-entropy: MerkleNodes and SegmentKeys answer from the node's MerkleIndex (UNAVAILABLE while
// its trees are being built, INVALID_ARGUMENT for an unknown requester, a bad index or more than
// 256 of them); PurgeRecord deletes a record through LocalStore::PurgeIfUnchanged (tombstone
// purge, node/tombstone_reaper.h), and only a record of tombstones (INVALID_ARGUMENT for one
// with a live version); with a placement set, a node whose layout is in transition refuses
// it (FAILED_PRECONDITION), so that a reaper that has not learned of the change yet purges
// nothing there (it keeps its own copy when a replica does not purge). So does a node whose
// layout version is not the one the request was confirmed under (a stable layout the reaper has
// not adopted yet, or one the node has not learned yet), checked again inside the purge's commit
// so that no layout adopted meanwhile slips between the check and the delete. Without an index
// (null) MerkleNodes and SegmentKeys answer UNIMPLEMENTED.
//
// CompareDigests (handoff phase 2, node/handoff_plan.h KeysNotMatching) answers which of the
// given keys this replica lacks or holds with another digest; it reads only.
//
// ReserveLayout and AcceptLayout are the two phases of agreeing on the next layout version
// (node/layout_reservations.h), answered against the gossiper's layout on the gRPC thread (a
// promise or accept that changes what the member stored is written, synced, before the answer).
// ReserveLayout's call status is OK whenever LayoutReservations::Reserve answered; its answer is in
// the response. AcceptLayout answers as LayoutReservations::Accept. Both answer INVALID_ARGUMENT
// for a change text over kMaxLayoutChangeBytes (AcceptLayout: for any layout CheckLayout refuses),
// UNIMPLEMENTED without reservations set. ReleaseLayout ends the lease of a failed commit's
// promise (LayoutReservations::Release; memory only).
//
// Gossip merges the caller's membership table into the node's Gossiper and answers with the
// node's table, on the gRPC thread (memory only); UNIMPLEMENTED without a gossiper (null).
//
// Every call is checked by the CertificateAuthorizer (kvnode --tls_peer_names): a caller whose
// certificate names no allowed host gets PERMISSION_DENIED, and nothing is read or changed.
//
// Handlers never wait for another thread: MergeBatch may commit its groups (and others queued
// meanwhile) on the gRPC thread, as the Put handlers do, and ReserveLayout and AcceptLayout store
// their promise (a synced write) on it; all other storage work runs on the injected Executor.
// Thread-safe; `store`, `executor`, `merkle` and `gossiper` must outlive the service.
#ifndef KV_NODE_REPLICA_SERVICE_H_
#define KV_NODE_REPLICA_SERVICE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/call_gate.h"
#include "node/certificate_authorizer.h"
#include "node/executor.h"
#include "node/gossip.h"
#include "node/layout_reservations.h"
#include "node/local_store.h"
#include "node/merkle_index.h"
#include "node/placement.h"
#include "replica.grpc.pb.h"

namespace kv {

class ReplicaService final : public internal::v1::Replica::CallbackService {
 public:
  // New calls are refused with UNAVAILABLE once `gate` is closed.
  // Calls `authorizer` does not let in are refused with PERMISSION_DENIED.
  ReplicaService(LocalStore* store, Executor* executor, CallGate* gate,
                 const MerkleIndex* merkle = nullptr, Gossiper* gossiper = nullptr,
                 CertificateAuthorizer authorizer = CertificateAuthorizer());

  // Makes MergeBatch refuse records of keys node `self_id` does not replicate in `placement`'s
  // layout (see above). Call before serving; `placement` must outlive the service.
  void SetPlacement(const PlacementHolder* placement, std::string self_id,
                    size_t replication_factor) {
    placement_ = placement;
    self_id_ = std::move(self_id);
    replication_factor_ = replication_factor;
  }

  // Makes ReserveLayout and AcceptLayout answer from `reservations` against the gossiper's
  // layout (without both they answer UNIMPLEMENTED), and ReleaseLayout release there. Call before
  // serving; `reservations` must outlive the service.
  void SetLayoutReservations(LayoutReservations* reservations) { reservations_ = reservations; }

  // Makes every call from a node of another cluster fail with UNAVAILABLE (node/cluster_name.h).
  // Call before serving.
  void SetClusterName(std::string name) { cluster_name_ = std::move(name); }

  grpc::ServerUnaryReactor* MergeBatch(grpc::CallbackServerContext* context,
                                       const internal::v1::MergeBatchRequest* request,
                                       internal::v1::MergeBatchResponse* response) override;
  grpc::ServerUnaryReactor* ListKeys(grpc::CallbackServerContext* context,
                                     const internal::v1::ListKeysRequest* request,
                                     internal::v1::ListKeysResponse* response) override;
  grpc::ServerUnaryReactor* ReadRecord(grpc::CallbackServerContext* context,
                                       const internal::v1::ReadRecordRequest* request,
                                       internal::v1::ReadRecordResponse* response) override;
  grpc::ServerUnaryReactor* MerkleNodes(grpc::CallbackServerContext* context,
                                        const internal::v1::MerkleNodesRequest* request,
                                        internal::v1::MerkleNodesResponse* response) override;
  grpc::ServerUnaryReactor* SegmentKeys(grpc::CallbackServerContext* context,
                                        const internal::v1::SegmentKeysRequest* request,
                                        internal::v1::SegmentKeysResponse* response) override;
  grpc::ServerUnaryReactor* PurgeRecord(grpc::CallbackServerContext* context,
                                        const internal::v1::PurgeRecordRequest* request,
                                        internal::v1::PurgeRecordResponse* response) override;
  grpc::ServerUnaryReactor* CompareDigests(grpc::CallbackServerContext* context,
                                           const internal::v1::CompareDigestsRequest* request,
                                           internal::v1::CompareDigestsResponse* response) override;
  grpc::ServerUnaryReactor* Gossip(grpc::CallbackServerContext* context,
                                   const internal::v1::GossipRequest* request,
                                   internal::v1::GossipResponse* response) override;
  grpc::ServerUnaryReactor* ReserveLayout(grpc::CallbackServerContext* context,
                                          const internal::v1::ReserveLayoutRequest* request,
                                          internal::v1::ReserveLayoutResponse* response) override;
  grpc::ServerUnaryReactor* AcceptLayout(grpc::CallbackServerContext* context,
                                         const internal::v1::AcceptLayoutRequest* request,
                                         internal::v1::AcceptLayoutResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseLayout(grpc::CallbackServerContext* context,
                                          const internal::v1::ReleaseLayoutRequest* request,
                                          internal::v1::ReleaseLayoutResponse* response) override;

 private:
  // FAILED_PRECONDITION, with a placement set, while this node's layout is in transition or if
  // its version is not `confirmed_version` (0: not stated by the requester, not compared).
  absl::Status CheckPurgeLayout(uint64_t confirmed_version) const;
  // MergeBatch's checks: the records decoded, or the batch's error (nothing is merged).
  absl::StatusOr<std::vector<SiblingSet>> DecodeMergeBatch(
      const internal::v1::MergeBatchRequest& request) const;
  absl::Status DoReadRecord(const internal::v1::ReadRecordRequest& request,
                            internal::v1::ReadRecordResponse* response);

  // The gate's verdict, then the authorizer's, then the caller's cluster name's (which adds a
  // trailer to `context` when it refuses).
  absl::Status Admit(grpc::CallbackServerContext* context) const;

  LocalStore* const store_;
  Executor* const executor_;
  CallGate* const gate_;
  const MerkleIndex* const merkle_;
  Gossiper* const gossiper_;
  const CertificateAuthorizer authorizer_;
  const PlacementHolder* placement_ = nullptr;  // see SetPlacement
  LayoutReservations* reservations_ = nullptr;  // see SetLayoutReservations
  std::string self_id_;
  std::string cluster_name_;  // empty: calls are not checked (see SetClusterName)
  size_t replication_factor_ = 0;
};

}  // namespace kv

#endif  // KV_NODE_REPLICA_SERVICE_H_

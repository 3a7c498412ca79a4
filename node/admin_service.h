// AdminService: the kv.v1.Admin gRPC service of a node.
//
// Ping echoes its payload inline on the gRPC thread (no executor hop, no storage): it measures
// the transport ceiling. NodeStatus reads the engine's key estimate on the executor.
// ClusterStatus reports the membership as this node sees it: each member's reachability (the
// last replication attempt to it), its outbox backlog and drops, and the replication lag of
// writes coordinated here, and each member's liveness as gossip sees it (UP/DOWN/UNKNOWN, its
// heartbeat and incarnation, and how long ago its heartbeat last advanced here).
//
// StartRepair, ChangeMembership, GetOperation, ListOperations, CancelOperation and
// AntiEntropyStatus
// (admin_service_operations.cc) start and show long admin jobs (node/operations.h,
// node/repair_runner.h, node/membership_change.h) and the anti-entropy state per peer and per
// range; they answer on the gRPC thread (a start writes its operation and token to the meta
// column, unsynced), except a ChangeMembership commit, which waits on the executor for the
// members' layout reservations. A start that carries an
// idempotency token is remembered with its answer (node/start_tokens.h): a retry of it on this
// node gets the first answer and starts nothing.
//
// ChangeMembership, RunAntiEntropy, StartRepair and CancelOperation answer PERMISSION_DENIED,
// starting (or cancelling) nothing, to a caller the administrators' CertificateAuthorizer does not
// let in (--tls_admin_names).
//
// Thread-safety: thread-safe; the engine, executor and clocks must outlive the service.
#ifndef KV_NODE_ADMIN_SERVICE_H_
#define KV_NODE_ADMIN_SERVICE_H_

#include <string>

#include "absl/time/time.h"
#include "kv.grpc.pb.h"
#include "node/anti_entropy.h"
#include "node/call_gate.h"
#include "node/certificate_authorizer.h"
#include "node/clock.h"
#include "node/coordinator.h"
#include "node/executor.h"
#include "node/gossip.h"
#include "node/membership_change.h"
#include "node/merkle_index.h"
#include "node/operations.h"
#include "node/repair_runner.h"
#include "node/replication_outbox.h"
#include "node/start_tokens.h"
#include "node/tls.h"
#include "node/tombstone_reaper.h"
#include "storage/engine.h"

namespace kv {

// Trailing metadata of a NOT_FOUND answer to GetOperation or CancelOperation for an operation of
// another node (value "1"; the message names that node): the client asks another endpoint.
inline constexpr char kOperationElsewhereMetadata[] = "kv-operation-elsewhere";

class AdminService final : public v1::Admin::CallbackService {
 public:
  struct NodeInfo {
    std::string node_id;
    std::string actor;
    std::string listen_address;
    std::string version;
  };

  // Uptime is measured from construction, on `steady_clock` (kvnode: SteadyClock, which never
  // steps). Start tokens are stamped on `wall_clock` (kvnode: SystemClock): their times are
  // stored and compared with a later run's clock, which a steady clock's are not.
  // New calls are refused with UNAVAILABLE once `gate` is closed.
  // `anti_entropy` and `repairs` may be null (anti-entropy unavailable: FAILED_PRECONDITION);
  // `gossiper` may be null (no liveness).
  AdminService(NodeInfo info, Engine* engine, Coordinator* coordinator, ReplicationOutbox* outbox,
               MerkleIndex* merkle, AntiEntropy* anti_entropy, TombstoneReaper* reaper,
               OperationRegistry* operations, RepairRunner* repairs, Executor* executor,
               CallGate* gate, const Clock* steady_clock, const Clock* wall_clock,
               const Gossiper* gossiper = nullptr);

  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const v1::PingRequest* request,
                                 v1::PingResponse* response) override;
  grpc::ServerUnaryReactor* NodeStatus(grpc::CallbackServerContext* context,
                                       const v1::NodeStatusRequest* request,
                                       v1::NodeStatusResponse* response) override;
  grpc::ServerUnaryReactor* ClusterStatus(grpc::CallbackServerContext* context,
                                          const v1::ClusterStatusRequest* request,
                                          v1::ClusterStatusResponse* response) override;
  grpc::ServerUnaryReactor* RunAntiEntropy(grpc::CallbackServerContext* context,
                                           const v1::RunAntiEntropyRequest* request,
                                           v1::RunAntiEntropyResponse* response) override;
  grpc::ServerUnaryReactor* StartRepair(grpc::CallbackServerContext* context,
                                        const v1::StartRepairRequest* request,
                                        v1::StartRepairResponse* response) override;
  grpc::ServerUnaryReactor* ChangeMembership(grpc::CallbackServerContext* context,
                                             const v1::ChangeMembershipRequest* request,
                                             v1::ChangeMembershipResponse* response) override;
  // Set before serving; without it ChangeMembership is FAILED_PRECONDITION.
  void SetMembershipChanger(MembershipChanger* changer) { changer_ = changer; }
  // Keeps the idempotency tokens of operation starts in `journal` (StartTokens::Load), so that a
  // retry after a restart gets the first answer. Call before serving.
  absl::Status LoadStartTokens(StartTokenJournal* journal) { return start_tokens_.Load(journal); }
  // The node's TLS (node/tls.h), for NodeStatus; null or plaintext: no TLS fields.
  void SetTls(const NodeTls* tls) { tls_ = tls; }
  // Who may call ChangeMembership, RunAntiEntropy, StartRepair and CancelOperation
  // (node/certificate_authorizer.h);
  // everyone until set.
  void SetAdministrators(CertificateAuthorizer administrators) {
    administrators_ = std::move(administrators);
  }
  grpc::ServerUnaryReactor* GetOperation(grpc::CallbackServerContext* context,
                                         const v1::GetOperationRequest* request,
                                         v1::GetOperationResponse* response) override;
  grpc::ServerUnaryReactor* ListOperations(grpc::CallbackServerContext* context,
                                           const v1::ListOperationsRequest* request,
                                           v1::ListOperationsResponse* response) override;
  grpc::ServerUnaryReactor* CancelOperation(grpc::CallbackServerContext* context,
                                            const v1::CancelOperationRequest* request,
                                            v1::CancelOperationResponse* response) override;
  grpc::ServerUnaryReactor* AntiEntropyStatus(grpc::CallbackServerContext* context,
                                              const v1::AntiEntropyStatusRequest* request,
                                              v1::AntiEntropyStatusResponse* response) override;

  // What NodeStatus and ClusterStatus answer, filled on the calling thread (the metrics scrape
  // reads them too). Thread-safe.
  void FillNodeStatus(v1::NodeStatusResponse* response) const;
  void FillClusterStatus(v1::ClusterStatusResponse* response) const;

 private:
  // Operation `id` of this node; for another node's, NOT_FOUND marked
  // kOperationElsewhereMetadata in `context`'s trailers, naming
  // the node's address and the kvctl command (`operation VERB ID`) to run there.
  absl::StatusOr<OperationInfo> FindOperation(grpc::CallbackServerContext* context,
                                              const std::string& id, absl::string_view verb);
  // ClusterStatus's parts: one MemberStatus per member of `ring`, from the outbox, anti-entropy
  // and gossip views; the coordinator's counters and replication lag percentiles.
  void FillMembers(const HashRing& ring, v1::ClusterStatusResponse* response) const;
  static void FillGossip(const MemberView& view, v1::MemberStatus* out);
  static void FillAntiEntropy(const PeerAntiEntropyStats& stats, v1::MemberStatus* out);
  static void FillOutbox(const PeerOutboxStats& stats, v1::MemberStatus* out);
  static void FillCoordinatorStats(CoordinatorStats stats, v1::ClusterStatusResponse* response);

  const NodeInfo info_;
  Engine* const engine_;
  Coordinator* const coordinator_;
  ReplicationOutbox* const outbox_;
  MerkleIndex* const merkle_;
  AntiEntropy* const anti_entropy_;  // null when anti-entropy is disabled
  TombstoneReaper* const reaper_;
  OperationRegistry* const operations_;
  RepairRunner* const repairs_;  // null when anti-entropy is unavailable
  MembershipChanger* changer_ = nullptr;
  const NodeTls* tls_ = nullptr;
  CertificateAuthorizer administrators_;
  StartTokens start_tokens_;  // of StartRepair and committed ChangeMembership calls
  Executor* const executor_;
  CallGate* const gate_;
  const Clock* const steady_clock_;
  const Gossiper* const gossiper_;
  const absl::Time started_;
};

}  // namespace kv

#endif  // KV_NODE_ADMIN_SERVICE_H_

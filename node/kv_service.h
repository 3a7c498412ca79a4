// KvService: the public kv.v1.KV gRPC service, a thin adapter over the Coordinator (any node
// serves any key: it coordinates when it is a replica of the key, forwards writes otherwise, and
// reads from the replicas).
//
// Requests are checked on the gRPC thread (gate, key size, quorum kind). Reads from memory are
// answered there; other reads, List and the Describe calls run on the injected Executor, which
// finishes the call. Put and Delete are committed by the store on the gRPC thread that submits
// one while no other thread commits (LocalStore::WriteAsync without a commit executor): that
// thread may block on storage for its group and the groups queued behind it, while the other
// handlers only queue their writes. Once the node begins shutting down (the CallGate is
// closed) new calls get UNAVAILABLE.
//
// Get answers NOT_FOUND when the replicas' answers hold no live version and enough replicas
// answered to rule one out, UNAVAILABLE when too few did (Coordinator, "Reads"). A write that is
// stored here but reached fewer than W replicas is UNAVAILABLE with the trailing metadata
// "kv-write-stored", so that clients retry it (same idempotency token) on this node rather than
// elsewhere.
// DescribeKey shows every replica's record side by side; DescribeWrite where a write has spread.
//
// GetBatch runs each of its gets as the Get it would be alone (answered here from memory when it
// can, through the coordinator otherwise) and answers once every item has its result; past
// kGetBatchAnswerBytes of answers, the items still to finish are left to be sent alone (smaller
// ones after them may still fit). Once more than kGetBatchWastedBytes were read and left out so,
// the items not started yet are not read at all (those already reading through the coordinator,
// R above 1 or a record not in memory, still finish their reads; at most
// kGetBatchReadsInFlight of a batch read so at once).
//
// PutBatch runs each of its items (puts, then deletes) as the Put or Delete it would be alone and
// answers once every item has its result (the W shortfall mark is then per item); the items'
// writes are queued together (LocalStore::HoldCommits), so the items this node coordinates share
// commit groups.
//
// Thread-safety: thread-safe; everything passed in must outlive the service.
#ifndef KV_NODE_KV_SERVICE_H_
#define KV_NODE_KV_SERVICE_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "kv.grpc.pb.h"
#include "node/call_gate.h"
#include "node/certificate_authorizer.h"
#include "node/coordinator.h"
#include "node/executor.h"
#include "node/local_store.h"
#include "node/quorum.h"

namespace kv {

// The most items (puts and deletes) a PutBatch may carry (its size is capped by the message size
// limit too).
inline constexpr int kMaxPutBatchItems = 1000;
// The most gets a GetBatch may carry.
inline constexpr int kMaxGetBatchItems = 1000;
// About the most bytes of answers a GetBatch carries: once its answered items pass this, the
// items still to finish are answered send_alone instead (kv.proto, GetBatchResult). The first
// item to finish is always answered, whatever its size.
inline constexpr size_t kGetBatchAnswerBytes = 1 << 20;
// The most bytes a GetBatch reads for items it then leaves out; past them, the rest go unread.
inline constexpr size_t kGetBatchWastedBytes = 4 << 20;
// The most items of one GetBatch read through the coordinator at once (R above 1, or a record
// not in memory); the others wait for one of these to finish.
inline constexpr size_t kGetBatchReadsInFlight = 64;

// The quorum a request asks for; INVALID_ARGUMENT naming `name` ("w" or "r") for an unknown
// kind. Counts are checked against N by the Coordinator.
absl::StatusOr<QuorumSpec> ToQuorumSpec(const v1::Quorum& quorum, absl::string_view name);

class KvService final : public v1::KV::CallbackService {
 public:
  // New calls are refused with UNAVAILABLE once `gate` is closed.
  KvService(Coordinator* coordinator, LocalStore* store, Executor* executor, CallGate* gate);

  // Makes a Put or Delete that a node of another cluster forwards fail with UNAVAILABLE
  // (node/cluster_name.h); clients' calls carry no cluster name and are not affected. Call
  // before serving.
  void SetClusterName(std::string name) { cluster_name_ = std::move(name); }
  // false: writes marked as first attempts (PutRequest.first_attempt) are treated as unmarked.
  // Before the server starts.
  void SetTrustFirstAttempts(bool trust) { trust_first_attempts_ = trust; }
  // The callers whose writes may carry the mark of a write another node forwarded
  // (kForwardedWriteMetadata, WriteCommand::forwarded): from any other caller the mark is
  // ignored and the write is coordinated as a client's. Default: every caller (no
  // --tls_peer_names). Before the server starts.
  void SetPeers(CertificateAuthorizer peers) { peers_ = std::move(peers); }

  grpc::ServerUnaryReactor* DescribeWrite(grpc::CallbackServerContext* context,
                                          const v1::DescribeWriteRequest* request,
                                          v1::DescribeWriteResponse* response) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest* request,
                                v1::PutResponse* response) override;
  grpc::ServerUnaryReactor* PutBatch(grpc::CallbackServerContext* context,
                                     const v1::PutBatchRequest* request,
                                     v1::PutBatchResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override;
  grpc::ServerUnaryReactor* GetBatch(grpc::CallbackServerContext* context,
                                     const v1::GetBatchRequest* request,
                                     v1::GetBatchResponse* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListRequest* request,
                                 v1::ListResponse* response) override;
  grpc::ServerUnaryReactor* DescribeKey(grpc::CallbackServerContext* context,
                                        const v1::DescribeKeyRequest* request,
                                        v1::DescribeKeyResponse* response) override;

 private:
  class BatchReads;  // the reads of a GetBatch through the coordinator

  // Checks made on the gRPC thread before any work is queued: the gate and the key.
  absl::Status Admit(absl::string_view key) const;
  template <typename Response>
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* context, WriteCommand command,
                                  const v1::Quorum& w, Response* response);

  Coordinator* const coordinator_;
  LocalStore* const store_;
  Executor* const executor_;
  CallGate* const gate_;
  std::string cluster_name_;  // empty: forwarded writes are not checked
  bool trust_first_attempts_ = true;
  CertificateAuthorizer peers_;
};

}  // namespace kv

#endif  // KV_NODE_KV_SERVICE_H_

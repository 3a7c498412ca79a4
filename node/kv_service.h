// KvService: the public kv.v1.KV gRPC service of a single node, a thin adapter over LocalStore.
//
// Handlers never block: requests are checked on the gRPC thread (key size, quorum), and every
// call that touches storage runs on the injected Executor, which finishes the call. Once the
// node begins shutting down (the CallGate is closed) new calls get UNAVAILABLE.
//
// This build has no replication (N = 1): a quorum of DEFAULT, QUORUM, ALL or COUNT(1) is served,
// COUNT(0) and COUNT(>1) are INVALID_ARGUMENT naming N. Errors from LocalStore keep their code
// and message (INVALID_ARGUMENT for bad input, which changes nothing). Get answers NOT_FOUND when
// the node holds no live version of the key. DescribeKey shows this node's record, tombstones
// included.
//
// Thread-safety: thread-safe; `store` and `executor` must outlive the service.
#ifndef KV_NODE_KV_SERVICE_H_
#define KV_NODE_KV_SERVICE_H_

#include <string>

#include "absl/status/status.h"
#include "kv.grpc.pb.h"
#include "node/call_gate.h"
#include "node/executor.h"
#include "node/local_store.h"

namespace kv {

// Checks a requested quorum against the replication factor `n`; `name` ("w" or "r") is used in
// the error message.
absl::Status CheckQuorum(const v1::Quorum& quorum, int n, absl::string_view name);

class KvService final : public v1::KV::CallbackService {
 public:
  // New calls are refused with UNAVAILABLE once `gate` is closed.
  KvService(LocalStore* store, Executor* executor, CallGate* gate, std::string node_id);

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest* request,
                                v1::PutResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override;
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
  // Checks made on the gRPC thread before any work is queued: the gate, the key, the quorum
  // (when `quorum` is not null).
  absl::Status Admit(absl::string_view key, const v1::Quorum* quorum,
                     absl::string_view quorum_name) const;
  absl::Status DoGet(const v1::GetRequest& request, v1::GetResponse* response);
  absl::Status DoDescribeKey(const v1::DescribeKeyRequest& request,
                             v1::DescribeKeyResponse* response);

  LocalStore* const store_;
  Executor* const executor_;
  CallGate* const gate_;
  const std::string node_id_;
};

}  // namespace kv

#endif  // KV_NODE_KV_SERVICE_H_

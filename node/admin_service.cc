#include "node/admin_service.h"

#include <utility>

#include "node/grpc_util.h"

namespace kv {

AdminService::AdminService(NodeInfo info, Engine* engine, Executor* executor, CallGate* gate,
                           const Clock* clock)
    : info_(std::move(info)),
      engine_(engine),
      executor_(executor),
      gate_(gate),
      clock_(clock),
      started_(clock->Now()) {}

grpc::ServerUnaryReactor* AdminService::Ping(grpc::CallbackServerContext* context,
                                             const v1::PingRequest* request,
                                             v1::PingResponse* response) {
  absl::Status admitted = gate_->Check();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  response->set_payload(request->payload());
  response->set_node_id(info_.node_id);
  return FinishNow(gate_, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::NodeStatus(grpc::CallbackServerContext* context,
                                                   const v1::NodeStatusRequest* request,
                                                   v1::NodeStatusResponse* response) {
  absl::Status admitted = gate_->Check();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  return FinishOnExecutor(context, gate_, executor_, [this, response] {
    response->set_node_id(info_.node_id);
    response->set_actor(info_.actor);
    response->set_listen_address(info_.listen_address);
    response->set_approximate_keys(engine_->ApproximateCount(Column::kData));
    response->set_uptime_seconds(absl::ToInt64Seconds(clock_->Now() - started_));
    response->set_version(info_.version);
    return absl::OkStatus();
  });
}

}  // namespace kv

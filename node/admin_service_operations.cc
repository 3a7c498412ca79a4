// AdminService: operations (StartRepair, GetOperation, ListOperations) and AntiEntropyStatus.
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/admin_service.h"
#include "node/grpc_util.h"

namespace kv {
namespace {

int64_t UnixMicrosOrZero(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixMicros(t);
}

void ToProto(const OperationInfo& op, const std::string& node_id, v1::Operation* out) {
  out->set_operation_id(op.id);
  out->set_node_id(node_id);
  out->set_kind(op.kind);
  out->set_description(op.description);
  switch (op.state) {
    case OperationState::kRunning:
      out->set_state(v1::Operation::RUNNING);
      break;
    case OperationState::kSucceeded:
      out->set_state(v1::Operation::SUCCEEDED);
      break;
    case OperationState::kFailed:
      out->set_state(v1::Operation::FAILED);
      out->set_error_code(static_cast<int32_t>(op.error.code()));
      out->set_error_message(std::string(op.error.message()));
      break;
  }
  out->set_start_unix_micros(UnixMicrosOrZero(op.started));
  out->set_end_unix_micros(UnixMicrosOrZero(op.ended));
  out->set_progress_done(op.done);
  out->set_progress_total(op.total);
  out->set_progress_unit(op.unit);
  out->set_progress_message(op.message);
  for (const auto& [name, value] : op.counters) (*out->mutable_counters())[name] = value;
}

void ToProto(const PeerAntiEntropyStats& stats, v1::PeerAntiEntropyStatus* out) {
  out->set_peer_id(stats.peer_id);
  out->set_exchanges(stats.exchanges);
  out->set_failed_exchanges(stats.failed_exchanges);
  out->set_last_exchange_unix_micros(UnixMicrosOrZero(stats.last_exchange));
  out->set_last_exchange_duration_us(absl::ToInt64Microseconds(stats.last_duration));
  out->set_last_attempt_unix_micros(UnixMicrosOrZero(stats.last_attempt));
  out->set_last_error(stats.last_error);
  out->set_in_sync(stats.in_sync);
  out->set_last_segments_different(stats.last_segments_different);
  out->set_last_keys_different(stats.last_keys_different);
  out->set_last_keys_repaired(stats.last_keys_repaired);
  out->set_keys_repaired(stats.keys_repaired);
  for (const RangeAntiEntropyStats& range : stats.ranges) {
    v1::AntiEntropyRangeStatus* r = out->add_ranges();
    r->set_index(range.index);
    r->set_last_difference_unix_micros(UnixMicrosOrZero(range.last_difference));
    r->set_last_keys_different(range.last_keys_different);
    r->set_keys_different_total(range.keys_different_total);
    r->set_keys_repaired(range.keys_repaired);
  }
}

}  // namespace

grpc::ServerUnaryReactor* AdminService::StartRepair(grpc::CallbackServerContext* context,
                                                    const v1::StartRepairRequest* request,
                                                    v1::StartRepairResponse* response) {
  absl::Status status = gate_->Check();
  if (status.ok() && repairs_ == nullptr) {
    status = absl::FailedPreconditionError("anti-entropy is not available on this node");
  }
  if (status.ok()) {
    absl::StatusOr<std::string> id = repairs_->Start(request->peer_id());
    status = id.status();
    if (id.ok()) {
      response->set_operation_id(*id);
      response->set_node_id(info_.node_id);
    }
  }
  return FinishNow(gate_, status);
}

grpc::ServerUnaryReactor* AdminService::ChangeMembership(grpc::CallbackServerContext* context,
                                                         const v1::ChangeMembershipRequest* request,
                                                         v1::ChangeMembershipResponse* response) {
  absl::Status status = gate_->Check();
  if (status.ok() && changer_ == nullptr) {
    status = absl::FailedPreconditionError("membership changes are not available on this node");
  }
  MembershipChanger::Action action = MembershipChanger::Action::kJoin;
  if (request->action() == v1::ChangeMembershipRequest::LEAVE) {
    action = MembershipChanger::Action::kLeave;
  } else if (request->action() != v1::ChangeMembershipRequest::JOIN && status.ok()) {
    status = absl::InvalidArgumentError("action must be JOIN or LEAVE");
  }
  if (status.ok() && request->node_id().empty()) {
    status = absl::InvalidArgumentError("node_id is required");
  }
  if (!status.ok()) return FinishNow(gate_, status);
  absl::StatusOr<MembershipChanger::Plan> plan;
  if (request->commit()) {
    auto committed =
        changer_->Commit(action, request->node_id(), request->expected_layout_version());
    if (committed.ok()) {
      plan = std::move(committed->first);
      response->set_operation_id(committed->second);
      response->set_node_id(info_.node_id);
    } else {
      plan = committed.status();
    }
  } else {
    plan = changer_->MakePlan(action, request->node_id());
  }
  if (!plan.ok()) return FinishNow(gate_, plan.status());
  response->set_layout_version(plan->current.version);
  for (const Member& m : plan->transition.members) response->add_members_before(m.id);
  for (const Member& m : plan->transition.next) response->add_members_after(m.id);
  response->set_moved_fraction(plan->movement.moved_fraction);
  for (const OwnershipMove& move : plan->movement.moves) {
    v1::OwnershipMove* out = response->add_moves();
    out->set_from_node_id(move.from);
    out->set_to_node_id(move.to);
    out->set_fraction(move.fraction);
  }
  for (const MemberShare& share : plan->movement.shares) {
    v1::MemberShare* out = response->add_shares();
    out->set_node_id(share.id);
    out->set_primary_before(share.primary_before);
    out->set_primary_after(share.primary_after);
    out->set_replica_before(share.replica_before);
    out->set_replica_after(share.replica_after);
  }
  return FinishNow(gate_, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::GetOperation(grpc::CallbackServerContext* context,
                                                     const v1::GetOperationRequest* request,
                                                     v1::GetOperationResponse* response) {
  absl::Status status = gate_->Check();
  if (!status.ok()) return FinishNow(gate_, status);
  absl::StatusOr<OperationInfo> op = operations_->Get(request->operation_id());
  if (op.ok()) {
    ToProto(*op, info_.node_id, response->mutable_operation());
    return FinishNow(gate_, absl::OkStatus());
  }
  status = op.status();
  // An id of another member: say where to ask.
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(request->operation_id());
  if (parts.ok() && parts->node_id != info_.node_id) {
    for (const Member& member : coordinator_->ring().members()) {
      if (member.id != parts->node_id) continue;
      status = absl::NotFoundError(absl::StrCat(status.message(), " at ", member.address,
                                                " (kvctl --endpoints=", member.address,
                                                " operation get ", request->operation_id(), ")"));
    }
  }
  return FinishNow(gate_, status);
}

grpc::ServerUnaryReactor* AdminService::ListOperations(grpc::CallbackServerContext* context,
                                                       const v1::ListOperationsRequest* request,
                                                       v1::ListOperationsResponse* response) {
  absl::Status status = gate_->Check();
  if (!status.ok()) return FinishNow(gate_, status);
  for (const OperationInfo& op : operations_->List()) {
    ToProto(op, info_.node_id, response->add_operations());
  }
  return FinishNow(gate_, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::AntiEntropyStatus(
    grpc::CallbackServerContext* context, const v1::AntiEntropyStatusRequest* request,
    v1::AntiEntropyStatusResponse* response) {
  absl::Status status = gate_->Check();
  if (status.ok() && anti_entropy_ == nullptr) {
    status = absl::FailedPreconditionError("anti-entropy is not available on this node");
  }
  if (!status.ok()) return FinishNow(gate_, status);
  response->set_node_id(info_.node_id);
  response->set_merkle_ready(merkle_->ready());
  response->set_interval_us(absl::ToInt64Microseconds(anti_entropy_->periodic_interval()));
  response->set_keys_per_second(anti_entropy_->options().keys_per_second);
  response->set_running_exchange_peer(anti_entropy_->running_peer());
  for (const PeerAntiEntropyStats& stats : anti_entropy_->Stats(request->include_ranges())) {
    ToProto(stats, response->add_peers());
  }
  return FinishNow(gate_, absl::OkStatus());
}

}  // namespace kv

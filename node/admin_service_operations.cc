// AdminService: operations (StartRepair, ChangeMembership, GetOperation, ListOperations,
// CancelOperation) and
// AntiEntropyStatus.
#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "node/admin_service.h"
#include "node/grpc_util.h"
#include "storage/status_macros.h"
#include "storage/steady_timer.h"

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

// The method and the request's bytes without its idempotency token: what StartTokens compares a
// retry with. (These requests have no map fields, so equal requests serialize to equal bytes.)
template <typename Request>
std::string FingerprintWithoutToken(const Request& request) {
  Request copy = request;
  copy.clear_idempotency_token();
  return absl::StrCat(copy.GetTypeName(), "\n", copy.SerializeAsString());
}

// How long a start may wait for another call's start of the same token: what the call's
// deadline leaves, less the time its answer needs to reach the caller before that deadline.
absl::Duration WaitBudget(const grpc::CallbackServerContext& context) {
  constexpr absl::Duration kAnswerMargin = absl::Milliseconds(100);
  const absl::Duration left = TimeUntil(context.deadline());
  // A deadline days away is none (and one past what the clock type holds may have wrapped).
  if (left > absl::Hours(24) || left < -absl::Hours(24 * 365)) return absl::InfiniteDuration();
  return std::max(absl::ZeroDuration(), left - kAnswerMargin);
}

// Runs `start` (which fills a response) unless the request's token already started it, through
// `tokens`, and sets `response` to the answer: the new one, or the token's first one marked
// deduplicated.
template <typename Request, typename Response, typename Start>
absl::Status StartOnce(StartTokens& tokens, const grpc::CallbackServerContext& context,
                       const Request& request, Response* response, Start start) {
  KV_ASSIGN_OR_RETURN(StartTokens::Answer answer,
                      tokens.Run(
                          request.idempotency_token(), FingerprintWithoutToken(request),
                          [&]() -> absl::StatusOr<std::string> {
                            Response started;
                            KV_RETURN_IF_ERROR(start(&started));
                            return started.SerializeAsString();
                          },
                          WaitBudget(context)));
  if (!response->ParseFromString(answer.response)) {
    return absl::InternalError("could not read back the answer remembered for this token");
  }
  response->set_deduplicated(answer.deduplicated);
  return absl::OkStatus();
}

void FillPlan(const MembershipChanger::Plan& plan, v1::ChangeMembershipResponse* response) {
  response->set_layout_version(plan.current.version);
  for (const Member& m : plan.transition.members) response->add_members_before(m.id);
  for (const Member& m : plan.transition.next) response->add_members_after(m.id);
  response->set_moved_fraction(plan.movement.moved_fraction);
  for (const OwnershipMove& move : plan.movement.moves) {
    v1::OwnershipMove* out = response->add_moves();
    out->set_from_node_id(move.from);
    out->set_to_node_id(move.to);
    out->set_fraction(move.fraction);
  }
  for (const MemberShare& share : plan.movement.shares) {
    v1::MemberShare* out = response->add_shares();
    out->set_node_id(share.id);
    out->set_primary_before(share.primary_before);
    out->set_primary_after(share.primary_after);
    out->set_replica_before(share.replica_before);
    out->set_replica_after(share.replica_after);
  }
}

}  // namespace

grpc::ServerUnaryReactor* AdminService::StartRepair(grpc::CallbackServerContext* context,
                                                    const v1::StartRepairRequest* request,
                                                    v1::StartRepairResponse* response) {
  absl::Status status = gate_->Check();
  if (status.ok()) status = administrators_.Check(*context);
  if (status.ok() && repairs_ == nullptr) {
    status = absl::FailedPreconditionError("anti-entropy is not available on this node");
  }
  if (!status.ok()) return FinishNow(gate_, status);
  status = StartOnce(start_tokens_, *context, *request, response,
                     [&](v1::StartRepairResponse* started) -> absl::Status {
                       bool already_running = false;
                       KV_ASSIGN_OR_RETURN(std::string id,
                                           repairs_->Start(request->peer_id(), &already_running));
                       started->set_operation_id(std::move(id));
                       started->set_already_running(already_running);
                       started->set_node_id(info_.node_id);
                       return absl::OkStatus();
                     });
  return FinishNow(gate_, status);
}

grpc::ServerUnaryReactor* AdminService::ChangeMembership(grpc::CallbackServerContext* context,
                                                         const v1::ChangeMembershipRequest* request,
                                                         v1::ChangeMembershipResponse* response) {
  absl::Status status = gate_->Check();
  if (status.ok()) status = administrators_.Check(*context);
  if (status.ok() && changer_ == nullptr) {
    status = absl::FailedPreconditionError("membership changes are not available on this node");
  }
  MembershipChanger::Action action = MembershipChanger::Action::kJoin;
  if (request->action() == v1::ChangeMembershipRequest::LEAVE) {
    action = MembershipChanger::Action::kLeave;
  } else if (request->action() == v1::ChangeMembershipRequest::REMOVE_DOWN) {
    action = MembershipChanger::Action::kRemoveDown;
  } else if (request->action() != v1::ChangeMembershipRequest::JOIN && status.ok()) {
    status = absl::InvalidArgumentError("action must be JOIN, LEAVE or REMOVE_DOWN");
  }
  if (status.ok() && request->node_id().empty()) {
    status = absl::InvalidArgumentError("node_id is required");
  }
  if (!status.ok()) return FinishNow(gate_, status);
  if (!request->commit()) {
    absl::StatusOr<MembershipChanger::Plan> plan = changer_->MakePlan(action, request->node_id());
    if (plan.ok()) FillPlan(*plan, response);
    return FinishNow(gate_, plan.status());
  }
  // A commit waits for the members' layout reservations (MembershipChanger::Commit): not on
  // this gRPC thread.
  return FinishOnExecutor(context, gate_, executor_, [this, context, action, request, response] {
    return StartOnce(start_tokens_, *context, *request, response,
                     [&](v1::ChangeMembershipResponse* started) -> absl::Status {
                       KV_ASSIGN_OR_RETURN(auto committed,
                                           changer_->Commit(action, request->node_id(),
                                                            request->expected_layout_version()));
                       FillPlan(committed.first, started);
                       started->set_operation_id(std::move(committed.second));
                       started->set_node_id(info_.node_id);
                       return absl::OkStatus();
                     });
  });
}

grpc::ServerUnaryReactor* AdminService::GetOperation(grpc::CallbackServerContext* context,
                                                     const v1::GetOperationRequest* request,
                                                     v1::GetOperationResponse* response) {
  absl::Status status = gate_->Check();
  if (!status.ok()) return FinishNow(gate_, status);
  absl::StatusOr<OperationInfo> op = FindOperation(context, request->operation_id(), "get");
  if (op.ok()) ToProto(*op, info_.node_id, response->mutable_operation());
  return FinishNow(gate_, op.status());
}

absl::StatusOr<OperationInfo> AdminService::FindOperation(grpc::CallbackServerContext* context,
                                                          const std::string& id,
                                                          absl::string_view verb) {
  absl::StatusOr<OperationInfo> op = operations_->Get(id);
  if (op.ok()) return op;
  absl::Status status = op.status();
  // An id of another node: marked so, for the client to ask another endpoint, and saying where
  // to ask when that node is a member.
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(id);
  if (parts.ok() && parts->node_id != info_.node_id) {
    // A constant value: the id's node part is any bytes a caller sent, and gRPC aborts the
    // process on a metadata value outside printable ASCII.
    context->AddTrailingMetadata(kOperationElsewhereMetadata, "1");
    for (const Member& member : coordinator_->ring().members()) {
      if (member.id != parts->node_id) continue;
      status = absl::NotFoundError(absl::StrCat(status.message(), " at ", member.address,
                                                " (kvctl --endpoints=", member.address,
                                                " operation ", verb, " ", id, ")"));
    }
  }
  return status;
}

grpc::ServerUnaryReactor* AdminService::CancelOperation(grpc::CallbackServerContext* context,
                                                        const v1::CancelOperationRequest* request,
                                                        v1::CancelOperationResponse* response) {
  absl::Status status = gate_->Check();
  if (status.ok()) status = administrators_.Check(*context);
  if (!status.ok()) return FinishNow(gate_, status);
  const std::string& id = request->operation_id();
  absl::StatusOr<OperationInfo> op = FindOperation(context, id, "cancel");
  if (!op.ok()) return FinishNow(gate_, op.status());
  if (op->kind != "repair" || repairs_ == nullptr) {
    return FinishNow(
        gate_,
        absl::FailedPreconditionError(absl::StrCat(
            "operation ", id, " (", op->kind, ") cannot be cancelled",
            op->kind == "repair"
                ? ""
                : ": a membership change completes once every source has handed off its keys; "
                  "a member that died during it is removed with kvctl cluster remove, and a "
                  "completed change is undone with the opposite one (leave after a join)")));
  }
  if (op->state == OperationState::kRunning) {
    status = repairs_->Cancel(id);
    // NOT_FOUND: it ended between the two looks; it is answered as it ended.
    if (!status.ok() && !absl::IsNotFound(status)) return FinishNow(gate_, status);
    op = operations_->Get(id);
    if (!op.ok()) return FinishNow(gate_, op.status());
    if (op->state == OperationState::kRunning) {  // not this runner's (never expected)
      return FinishNow(gate_, absl::AbortedError(
                                  absl::StrCat("repair ", id, " is ending on its own; ask again")));
    }
  }
  // A repair a caller cancelled before (this is a retry) is answered again.
  const bool cancelled_by_caller =
      absl::IsCancelled(op->error) &&
      absl::StartsWith(op->error.message(), RepairRunner::kCancelledByCaller);
  if (!cancelled_by_caller) {
    return FinishNow(gate_, absl::FailedPreconditionError(absl::StrCat(
                                "operation ", id, " has ended (", OperationStateName(op->state),
                                op->error.ok() ? "" : absl::StrCat(": ", op->error.message()),
                                "); only a running one can be cancelled")));
  }
  ToProto(*op, info_.node_id, response->mutable_operation());
  return FinishNow(gate_, absl::OkStatus());
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

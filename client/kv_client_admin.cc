// Client's cluster and admin calls (client/kv_client.h): cluster status, repairs, membership
// changes, long operations and anti-entropy status.
#include <string>
#include <utility>
#include <vector>

#include "client/kv_client.h"
#include "client/kv_client_impl.h"

namespace kv {

using client_internal::EndpointPolicy;
using client_internal::WaitFor;

absl::StatusOr<ClusterStatusResult> Client::ClusterStatus(const CallOptions& options) {
  return impl_->ClusterStatus(impl_->PickEndpoint(0), EndpointPolicy::kFailover, options);
}

absl::StatusOr<ClusterStatusResult> Client::ClusterStatusOf(size_t endpoint_index,
                                                            const CallOptions& options) {
  return impl_->ClusterStatus(endpoint_index, EndpointPolicy::kPinned, options);
}

absl::StatusOr<RepairStarted> Client::StartRepair(absl::string_view peer_id,
                                                  const StartOptions& options) {
  v1::StartRepairRequest request;
  request.set_peer_id(std::string(peer_id));
  request.set_idempotency_token(options.idempotency_token.empty() ? NewIdempotencyToken()
                                                                  : options.idempotency_token);
  size_t answered_by = 0;
  absl::StatusOr<RepairStarted> started =
      impl_->AdminCall<v1::StartRepairRequest, v1::StartRepairResponse, RepairStarted>(
          options, EndpointPolicy::kStart, std::move(request),
          [](v1::Admin::Stub* stub, grpc::ClientContext* context, const v1::StartRepairRequest* req,
             v1::StartRepairResponse* resp, std::function<void(grpc::Status)> on_done) {
            stub->async()->StartRepair(context, req, resp, std::move(on_done));
          },
          &client_internal::FromStartRepairResponse, std::nullopt, &answered_by);
  if (started.ok()) impl_->RememberOperationNode(started->operation_id, answered_by);
  return started;
}

absl::StatusOr<MembershipPlan> Client::ChangeMembership(MembershipAction action,
                                                        absl::string_view node_id, bool commit,
                                                        uint64_t expected_layout_version,
                                                        const StartOptions& options) {
  v1::ChangeMembershipRequest request;
  switch (action) {
    case MembershipAction::kJoin:
      request.set_action(v1::ChangeMembershipRequest::JOIN);
      break;
    case MembershipAction::kLeave:
      request.set_action(v1::ChangeMembershipRequest::LEAVE);
      break;
    case MembershipAction::kRemoveDown:
      request.set_action(v1::ChangeMembershipRequest::REMOVE_DOWN);
      break;
  }
  request.set_node_id(std::string(node_id));
  request.set_commit(commit);
  request.set_expected_layout_version(expected_layout_version);
  if (commit) {
    request.set_idempotency_token(options.idempotency_token.empty() ? NewIdempotencyToken()
                                                                    : options.idempotency_token);
  }
  size_t answered_by = 0;
  absl::StatusOr<MembershipPlan> plan =
      impl_->AdminCall<v1::ChangeMembershipRequest, v1::ChangeMembershipResponse, MembershipPlan>(
          options, commit ? EndpointPolicy::kStart : EndpointPolicy::kFailover, std::move(request),
          [](v1::Admin::Stub* stub, grpc::ClientContext* context,
             const v1::ChangeMembershipRequest* req, v1::ChangeMembershipResponse* resp,
             std::function<void(grpc::Status)> on_done) {
            stub->async()->ChangeMembership(context, req, resp, std::move(on_done));
          },
          &client_internal::FromChangeMembershipResponse, std::nullopt, &answered_by);
  if (plan.ok() && !plan->operation_id.empty()) {
    impl_->RememberOperationNode(plan->operation_id, answered_by);
  }
  return plan;
}

absl::StatusOr<OperationStatus> Client::GetOperation(absl::string_view operation_id,
                                                     const CallOptions& options) {
  v1::GetOperationRequest request;
  request.set_operation_id(std::string(operation_id));
  // To the endpoint that started it or last answered about it, when there is one: retries stay
  // there (another node does not know the operation). Otherwise the endpoints in turn, until the
  // operation's node answers (EndpointPolicy::kOperation: the others say it is not theirs).
  const std::optional<size_t> owner = impl_->OperationEndpoint(operation_id);
  size_t answered_by = 0;
  absl::StatusOr<OperationStatus> op =
      impl_->AdminCall<v1::GetOperationRequest, v1::GetOperationResponse, OperationStatus>(
          options, owner ? EndpointPolicy::kPinned : EndpointPolicy::kOperation, std::move(request),
          [](v1::Admin::Stub* stub, grpc::ClientContext* context,
             const v1::GetOperationRequest* req, v1::GetOperationResponse* resp,
             std::function<void(grpc::Status)> on_done) {
            stub->async()->GetOperation(context, req, resp, std::move(on_done));
          },
          &client_internal::FromGetOperationResponse, owner, &answered_by);
  if (op.ok()) impl_->RememberOperationNode(operation_id, answered_by);
  return op;
}

absl::StatusOr<OperationStatus> Client::CancelOperation(absl::string_view operation_id,
                                                        const CallOptions& options) {
  v1::CancelOperationRequest request;
  request.set_operation_id(std::string(operation_id));
  // The operation's node answers a retry the same (it may have cancelled before its answer was
  // lost); an UNAVAILABLE or a timeout moves on, and so does a node saying the operation is
  // another node's (EndpointPolicy::kOperation).
  size_t answered_by = 0;
  absl::StatusOr<OperationStatus> op =
      impl_->AdminCall<v1::CancelOperationRequest, v1::CancelOperationResponse, OperationStatus>(
          options, EndpointPolicy::kOperation, std::move(request),
          [](v1::Admin::Stub* stub, grpc::ClientContext* context,
             const v1::CancelOperationRequest* req, v1::CancelOperationResponse* resp,
             std::function<void(grpc::Status)> on_done) {
            stub->async()->CancelOperation(context, req, resp, std::move(on_done));
          },
          &client_internal::FromCancelOperationResponse, impl_->OperationEndpoint(operation_id),
          &answered_by);
  if (op.ok()) impl_->RememberOperationNode(operation_id, answered_by);
  return op;
}

absl::StatusOr<std::vector<OperationStatus>> Client::ListOperations(const CallOptions& options) {
  return impl_->AdminCall<v1::ListOperationsRequest, v1::ListOperationsResponse,
                          std::vector<OperationStatus>>(
      options, EndpointPolicy::kFailover, v1::ListOperationsRequest(),
      [](v1::Admin::Stub* stub, grpc::ClientContext* context, const v1::ListOperationsRequest* req,
         v1::ListOperationsResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->ListOperations(context, req, resp, std::move(on_done));
      },
      &client_internal::FromListOperationsResponse);
}

absl::StatusOr<AntiEntropyStatusResult> Client::AntiEntropyStatus(bool include_ranges,
                                                                  const CallOptions& options) {
  v1::AntiEntropyStatusRequest request;
  request.set_include_ranges(include_ranges);
  return impl_->AdminCall<v1::AntiEntropyStatusRequest, v1::AntiEntropyStatusResponse,
                          AntiEntropyStatusResult>(
      options, EndpointPolicy::kFailover, std::move(request),
      [](v1::Admin::Stub* stub, grpc::ClientContext* context,
         const v1::AntiEntropyStatusRequest* req, v1::AntiEntropyStatusResponse* resp,
         std::function<void(grpc::Status)> on_done) {
        stub->async()->AntiEntropyStatus(context, req, resp, std::move(on_done));
      },
      &client_internal::FromAntiEntropyStatusResponse);
}

const char* OperationStateName(OperationStatus::State state) {
  switch (state) {
    case OperationStatus::State::kRunning:
      return "RUNNING";
    case OperationStatus::State::kSucceeded:
      return "SUCCEEDED";
    case OperationStatus::State::kFailed:
      return "FAILED";
    case OperationStatus::State::kUnknown:
      break;
  }
  return "UNKNOWN";
}

}  // namespace kv

#include "client/kv_client_convert.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kv::client_internal {

bool IsValidUtf8(absl::string_view bytes) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int continuation = 0;
    // Bounds of the first continuation byte, which exclude overlong forms, surrogates
    // (U+D800..U+DFFF) and code points above U+10FFFF.
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      continuation = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      continuation = 2;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      continuation = 3;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return false;  // 0x80..0xC1 or 0xF5..0xFF cannot start a sequence
    }
    if (n - i <= static_cast<size_t>(continuation)) return false;
    for (int k = 1; k <= continuation; ++k) {
      const auto byte = static_cast<unsigned char>(bytes[i + k]);
      const unsigned char lo = k == 1 ? low : 0x80;
      const unsigned char hi = k == 1 ? high : 0xBF;
      if (byte < lo || byte > hi) return false;
    }
    i += continuation + 1;
  }
  return true;
}

absl::Status CheckStringFields(const google::protobuf::Message& request) {
  // Every call runs this: walk the descriptor (no allocation) rather than list the set fields.
  const google::protobuf::Descriptor* descriptor = request.GetDescriptor();
  const google::protobuf::Reflection* reflection = request.GetReflection();
  std::string scratch;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->type() != google::protobuf::FieldDescriptor::TYPE_STRING || field->is_repeated()) {
      continue;
    }
    if (!IsValidUtf8(reflection->GetStringReference(request, field, &scratch))) {
      return absl::InvalidArgumentError(absl::StrCat(field->name(), " is not valid UTF-8 (",
                                                     descriptor->name(),
                                                     " carries it as text); nothing was sent"));
    }
  }
  return absl::OkStatus();
}

void ToProto(const Quorum& quorum, v1::Quorum* proto) {
  switch (quorum.kind) {
    case Quorum::Kind::kDefault:
      proto->set_kind(v1::Quorum::DEFAULT);
      break;
    case Quorum::Kind::kCount:
      proto->set_kind(v1::Quorum::COUNT);
      proto->set_count(quorum.count);
      break;
    case Quorum::Kind::kQuorum:
      proto->set_kind(v1::Quorum::QUORUM);
      break;
    case Quorum::Kind::kAll:
      proto->set_kind(v1::Quorum::ALL);
      break;
  }
}

Version FromProto(const v1::Sibling& sibling) {
  Version version;
  version.value = sibling.value();
  version.tombstone = sibling.tombstone();
  version.dot = sibling.dot();
  version.timestamp_micros = sibling.timestamp_micros();
  return version;
}

WriteResult FromPutResponse(v1::PutResponse* response) {
  WriteResult result;
  result.write_id = std::move(*response->mutable_write_id());
  result.context = std::move(*response->mutable_context());
  result.deduplicated = response->deduplicated();
  return result;
}

WriteResult FromDeleteResponse(v1::DeleteResponse* response) {
  WriteResult result;
  result.write_id = std::move(*response->mutable_write_id());
  result.context = std::move(*response->mutable_context());
  result.deduplicated = response->deduplicated();
  return result;
}

GetResult FromGetResponse(v1::GetResponse* response) {
  GetResult result;
  result.siblings.reserve(response->siblings_size());
  for (const v1::Sibling& sibling : response->siblings()) {
    result.siblings.push_back(FromProto(sibling));
  }
  result.context = std::move(*response->mutable_context());
  return result;
}

ListResult FromListResponse(v1::ListResponse* response) {
  ListResult result;
  result.keys.reserve(response->keys_size());
  for (std::string& key : *response->mutable_keys()) result.keys.push_back(std::move(key));
  result.next_page_token = std::move(*response->mutable_next_page_token());
  return result;
}

DescribeKeyResult FromDescribeKeyResponse(v1::DescribeKeyResponse* response) {
  DescribeKeyResult result;
  result.converged = response->converged();
  result.replicas.reserve(response->replicas_size());
  for (const v1::ReplicaView& proto : response->replicas()) {
    ReplicaView view;
    view.node_id = proto.node_id();
    view.reachable = proto.reachable();
    view.error = proto.error();
    view.has_record = proto.has_record();
    view.context = proto.context();
    view.versions.reserve(proto.siblings_size());
    for (const v1::Sibling& sibling : proto.siblings()) view.versions.push_back(FromProto(sibling));
    result.replicas.push_back(std::move(view));
  }
  return result;
}

DescribeWriteResult FromDescribeWriteResponse(v1::DescribeWriteResponse* response) {
  DescribeWriteResult result;
  switch (response->state()) {
    case v1::DescribeWriteResponse::PENDING:
      result.state = DescribeWriteResult::State::kPending;
      break;
    case v1::DescribeWriteResponse::REPLICATED:
      result.state = DescribeWriteResult::State::kReplicated;
      break;
    default:  // STATE_UNSPECIFIED, or a state added after this client was built
      result.state = DescribeWriteResult::State::kUnknown;
      break;
  }
  result.key = std::move(*response->mutable_key());
  result.dot = std::move(*response->mutable_dot());
  result.replicas.reserve(response->replicas_size());
  for (v1::ReplicaWriteState& proto : *response->mutable_replicas()) {
    ReplicaWriteState replica;
    replica.node_id = std::move(*proto.mutable_node_id());
    replica.applied = proto.applied();
    replica.reachable = proto.reachable();
    replica.error = std::move(*proto.mutable_error());
    result.replicas.push_back(std::move(replica));
  }
  return result;
}

namespace {

MemberStatus FromMemberStatus(v1::MemberStatus* proto) {
  MemberStatus member;
  member.node_id = std::move(*proto->mutable_node_id());
  member.address = std::move(*proto->mutable_address());
  member.zone = std::move(*proto->mutable_zone());
  member.self = proto->self();
  member.reachable = proto->reachable();
  member.outbox_depth = proto->outbox_depth();
  member.outbox_dropped = proto->outbox_dropped();
  member.sent_records = proto->sent_records();
  member.last_error = std::move(*proto->mutable_last_error());
  member.last_success_unix_micros = proto->last_success_unix_micros();
  // Nodes that predate gossip send neither liveness nor last_heard_ms_ago (0). Read before the
  // liveness is moved out: a member heard less than 1 ms ago also says 0.
  const bool predates_gossip = proto->liveness().empty();
  member.liveness = predates_gossip ? "UNKNOWN" : std::move(*proto->mutable_liveness());
  member.heartbeat = proto->heartbeat();
  member.incarnation = proto->incarnation();
  member.last_heard_ms_ago =
      predates_gossip && proto->last_heard_ms_ago() == 0 ? -1 : proto->last_heard_ms_ago();
  return member;
}

}  // namespace

ClusterStatusResult FromClusterStatusResponse(v1::ClusterStatusResponse* response) {
  ClusterStatusResult result;
  result.node_id = std::move(*response->mutable_node_id());
  result.replication_factor = response->replication_factor();
  result.default_w = response->default_w();
  result.default_r = response->default_r();
  result.members.reserve(response->members_size());
  for (v1::MemberStatus& proto : *response->mutable_members()) {
    result.members.push_back(FromMemberStatus(&proto));
  }
  result.outside_layout.reserve(response->outside_layout_size());
  for (v1::MemberStatus& proto : *response->mutable_outside_layout()) {
    result.outside_layout.push_back(FromMemberStatus(&proto));
  }
  result.writes_coordinated = response->writes_coordinated();
  result.writes_forwarded = response->writes_forwarded();
  result.read_repairs = response->read_repairs();
  result.replication_lag_p50_us = response->replication_lag_p50_us();
  result.replication_lag_p99_us = response->replication_lag_p99_us();
  result.replication_lag_max_us = response->replication_lag_max_us();
  result.replication_lag_samples = response->replication_lag_samples();
  result.layout_version = response->layout_version();
  result.layout_next_members.assign(response->layout_next_members().begin(),
                                    response->layout_next_members().end());
  result.layout_change = response->layout_change();
  result.layout_conflict = response->layout_conflict();
  result.settings_conflict = response->settings_conflict();
  result.catching_up = response->catching_up();
  result.history_conflict = response->history_conflict();
  return result;
}

RepairStarted FromStartRepairResponse(v1::StartRepairResponse* response) {
  return RepairStarted{std::move(*response->mutable_operation_id()),
                       std::move(*response->mutable_node_id()), response->deduplicated(),
                       response->already_running()};
}

MembershipPlan FromChangeMembershipResponse(v1::ChangeMembershipResponse* response) {
  MembershipPlan plan;
  plan.layout_version = response->layout_version();
  plan.members_before.assign(response->members_before().begin(), response->members_before().end());
  plan.members_after.assign(response->members_after().begin(), response->members_after().end());
  plan.moved_fraction = response->moved_fraction();
  for (const v1::OwnershipMove& m : response->moves()) {
    plan.moves.push_back({m.from_node_id(), m.to_node_id(), m.fraction()});
  }
  for (const v1::MemberShare& s : response->shares()) {
    plan.shares.push_back({s.node_id(), s.primary_before(), s.primary_after(), s.replica_before(),
                           s.replica_after()});
  }
  plan.operation_id = response->operation_id();
  plan.node_id = response->node_id();
  plan.deduplicated = response->deduplicated();
  return plan;
}

OperationStatus FromOperation(v1::Operation* operation) {
  OperationStatus op;
  op.operation_id = std::move(*operation->mutable_operation_id());
  op.node_id = std::move(*operation->mutable_node_id());
  op.kind = std::move(*operation->mutable_kind());
  op.description = std::move(*operation->mutable_description());
  switch (operation->state()) {
    case v1::Operation::RUNNING:
      op.state = OperationStatus::State::kRunning;
      break;
    case v1::Operation::SUCCEEDED:
      op.state = OperationStatus::State::kSucceeded;
      break;
    case v1::Operation::FAILED:
      op.state = OperationStatus::State::kFailed;
      break;
    default:
      op.state = OperationStatus::State::kUnknown;
  }
  op.error_code = operation->error_code();
  op.error_message = std::move(*operation->mutable_error_message());
  op.start_unix_micros = operation->start_unix_micros();
  op.end_unix_micros = operation->end_unix_micros();
  op.progress_done = operation->progress_done();
  op.progress_total = operation->progress_total();
  op.progress_unit = std::move(*operation->mutable_progress_unit());
  op.progress_message = std::move(*operation->mutable_progress_message());
  for (const auto& [name, value] : operation->counters()) op.counters[name] = value;
  return op;
}

OperationStatus FromGetOperationResponse(v1::GetOperationResponse* response) {
  return FromOperation(response->mutable_operation());
}

OperationStatus FromCancelOperationResponse(v1::CancelOperationResponse* response) {
  return FromOperation(response->mutable_operation());
}

std::vector<OperationStatus> FromListOperationsResponse(v1::ListOperationsResponse* response) {
  std::vector<OperationStatus> list;
  for (v1::Operation& op : *response->mutable_operations()) list.push_back(FromOperation(&op));
  return list;
}

AntiEntropyStatusResult FromAntiEntropyStatusResponse(v1::AntiEntropyStatusResponse* response) {
  AntiEntropyStatusResult result;
  result.node_id = std::move(*response->mutable_node_id());
  result.merkle_ready = response->merkle_ready();
  result.interval_us = response->interval_us();
  result.keys_per_second = response->keys_per_second();
  result.running_exchange_peer = std::move(*response->mutable_running_exchange_peer());
  for (v1::PeerAntiEntropyStatus& proto : *response->mutable_peers()) {
    PeerAntiEntropyStatus peer;
    peer.peer_id = std::move(*proto.mutable_peer_id());
    peer.exchanges = proto.exchanges();
    peer.failed_exchanges = proto.failed_exchanges();
    peer.last_exchange_unix_micros = proto.last_exchange_unix_micros();
    peer.last_exchange_duration_us = proto.last_exchange_duration_us();
    peer.last_attempt_unix_micros = proto.last_attempt_unix_micros();
    peer.last_error = std::move(*proto.mutable_last_error());
    peer.in_sync = proto.in_sync();
    peer.last_segments_different = proto.last_segments_different();
    peer.last_keys_different = proto.last_keys_different();
    peer.last_keys_repaired = proto.last_keys_repaired();
    peer.keys_repaired = proto.keys_repaired();
    for (const v1::AntiEntropyRangeStatus& r : proto.ranges()) {
      peer.ranges.push_back(AntiEntropyRangeStatus{r.index(), r.last_difference_unix_micros(),
                                                   r.last_keys_different(),
                                                   r.keys_different_total(), r.keys_repaired()});
    }
    result.peers.push_back(std::move(peer));
  }
  return result;
}

}  // namespace kv::client_internal

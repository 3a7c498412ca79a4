#include "client/kv_client_convert.h"

#include <string>
#include <utility>

namespace kv::client_internal {

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

ClusterStatusResult FromClusterStatusResponse(v1::ClusterStatusResponse* response) {
  ClusterStatusResult result;
  result.node_id = std::move(*response->mutable_node_id());
  result.replication_factor = response->replication_factor();
  result.default_w = response->default_w();
  result.default_r = response->default_r();
  result.members.reserve(response->members_size());
  for (v1::MemberStatus& proto : *response->mutable_members()) {
    MemberStatus member;
    member.node_id = std::move(*proto.mutable_node_id());
    member.address = std::move(*proto.mutable_address());
    member.zone = std::move(*proto.mutable_zone());
    member.self = proto.self();
    member.reachable = proto.reachable();
    member.outbox_depth = proto.outbox_depth();
    member.outbox_dropped = proto.outbox_dropped();
    member.sent_records = proto.sent_records();
    member.last_error = std::move(*proto.mutable_last_error());
    member.last_success_unix_micros = proto.last_success_unix_micros();
    member.liveness = proto.liveness().empty() ? "UNKNOWN" : std::move(*proto.mutable_liveness());
    member.heartbeat = proto.heartbeat();
    member.incarnation = proto.incarnation();
    // Nodes that predate gossip send neither liveness nor this field (0).
    member.last_heard_ms_ago = proto.liveness().empty() && proto.last_heard_ms_ago() == 0
                                   ? -1
                                   : proto.last_heard_ms_ago();
    result.members.push_back(std::move(member));
  }
  result.writes_coordinated = response->writes_coordinated();
  result.writes_forwarded = response->writes_forwarded();
  result.read_repairs = response->read_repairs();
  result.replication_lag_p50_us = response->replication_lag_p50_us();
  result.replication_lag_p99_us = response->replication_lag_p99_us();
  result.replication_lag_max_us = response->replication_lag_max_us();
  result.replication_lag_samples = response->replication_lag_samples();
  return result;
}

}  // namespace kv::client_internal

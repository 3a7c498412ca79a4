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

}  // namespace kv::client_internal

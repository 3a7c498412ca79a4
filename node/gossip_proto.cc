#include "node/gossip_proto.h"

namespace kv {

void DigestToProto(const GossipDigest& digest,
                   google::protobuf::RepeatedPtrField<internal::v1::GossipMember>* out) {
  out->Reserve(static_cast<int>(digest.members.size()));
  for (const MemberEntry& entry : digest.members) {
    internal::v1::GossipMember* m = out->Add();
    m->set_node_id(entry.member.id);
    m->set_address(entry.member.address);
    m->set_zone(entry.member.zone);
    m->set_incarnation(entry.incarnation);
    m->set_heartbeat(entry.heartbeat);
    m->set_ring_status(entry.ring_status == RingStatus::kNormal ? internal::v1::GossipMember::NORMAL
                                                                : internal::v1::GossipMember::NONE);
  }
}

GossipDigest DigestFromProto(
    const std::string& from_id,
    const google::protobuf::RepeatedPtrField<internal::v1::GossipMember>& members) {
  GossipDigest digest;
  digest.from_id = from_id;
  digest.members.reserve(members.size());
  for (const internal::v1::GossipMember& m : members) {
    if (m.node_id().empty()) continue;
    MemberEntry entry;
    entry.member = Member{m.node_id(), m.address(), m.zone()};
    entry.incarnation = m.incarnation();
    entry.heartbeat = m.heartbeat();
    entry.ring_status = m.ring_status() == internal::v1::GossipMember::NORMAL ? RingStatus::kNormal
                                                                              : RingStatus::kNone;
    digest.members.push_back(std::move(entry));
  }
  return digest;
}

}  // namespace kv

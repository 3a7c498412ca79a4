// Conversions between the gossip module's GossipDigest and the kv.internal.v1 Gossip messages
// (proto/replica.proto). Entries without a node id are dropped. Pure functions; thread-safe.
#ifndef KV_NODE_GOSSIP_PROTO_H_
#define KV_NODE_GOSSIP_PROTO_H_

#include "google/protobuf/repeated_ptr_field.h"
#include "node/membership.h"
#include "replica.pb.h"

namespace kv {

void DigestToProto(const GossipDigest& digest,
                   google::protobuf::RepeatedPtrField<internal::v1::GossipMember>* out);
GossipDigest DigestFromProto(
    const std::string& from_id,
    const google::protobuf::RepeatedPtrField<internal::v1::GossipMember>& members);

}  // namespace kv

#endif  // KV_NODE_GOSSIP_PROTO_H_

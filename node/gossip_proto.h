// Conversions between the gossip module's GossipDigest and the kv.internal.v1 Gossip messages
// (proto/replica.proto). Entries without a node id are dropped. Pure functions; thread-safe.
#ifndef KV_NODE_GOSSIP_PROTO_H_
#define KV_NODE_GOSSIP_PROTO_H_

#include "absl/status/statusor.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "node/layout_reservations.h"
#include "node/membership.h"
#include "replica.pb.h"

namespace kv {

void DigestToProto(const GossipDigest& digest,
                   google::protobuf::RepeatedPtrField<internal::v1::GossipMember>* out);
GossipDigest DigestFromProto(
    const std::string& from_id,
    const google::protobuf::RepeatedPtrField<internal::v1::GossipMember>& members);

void LayoutToProto(const ClusterLayout& layout, internal::v1::ClusterLayout* out);
ClusterLayout LayoutFromProto(const internal::v1::ClusterLayout& layout);
// The meta column's encoding of a layout.
std::string EncodeLayout(const ClusterLayout& layout);
// DATA_LOSS if `bytes` do not parse or hold a layout CheckLayout refuses.
absl::StatusOr<ClusterLayout> DecodeLayout(absl::string_view bytes);

// replica.proto LayoutAcceptorState bytes; DATA_LOSS from Decode if they do not parse or hold an
// accepted layout CheckLayout refuses.
std::string EncodeAcceptorState(const LayoutAcceptorState& state);
absl::StatusOr<LayoutAcceptorState> DecodeAcceptorState(absl::string_view bytes);

// A whole GossipRequest or GossipResponse.
template <typename Message>
void DigestToMessage(const GossipDigest& digest, Message* out) {
  out->set_from_node_id(digest.from_id);
  DigestToProto(digest, out->mutable_members());
  LayoutToProto(digest.layout, out->mutable_layout());
}
template <typename Message>
GossipDigest DigestFromMessage(const Message& message) {
  GossipDigest digest = DigestFromProto(message.from_node_id(), message.members());
  digest.layout = LayoutFromProto(message.layout());
  return digest;
}

}  // namespace kv

#endif  // KV_NODE_GOSSIP_PROTO_H_

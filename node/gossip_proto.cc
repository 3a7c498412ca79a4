#include "node/gossip_proto.h"

#include <utility>

#include "absl/strings/str_cat.h"

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
    const HandoffProgress& handoff = entry.handoff;
    m->set_handoff_version(handoff.layout_version);
    m->set_handoff_keys(handoff.keys);
    m->set_handoff_bytes(handoff.bytes);
    m->set_handoff_done(handoff.done);
    m->set_handoff_phase(static_cast<uint32_t>(handoff.phase));
    m->set_handoff_digests(handoff.digests);
    m->set_handoff_compared_keys(handoff.compared_keys);
    m->set_handoff_compared_bytes(handoff.compared_bytes);
    m->set_handoff_last_error(handoff.last_error.substr(0, kMaxHandoffErrorBytes));
    m->set_format_level(entry.format_level);
    m->set_holds_records(entry.holds_records);
    m->set_layout_version(entry.layout_version);
    m->set_knows_members_down(entry.knows_members_down);
    m->set_agrees_completions(entry.agrees_completions);
    m->set_settings(entry.settings);
    m->set_clean_layout_version(entry.clean_layout_version);
    m->set_generation(entry.generation);
    m->set_earlier_generation(entry.earlier_generation);
    m->set_earlier_incarnation(entry.earlier_incarnation);
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
    HandoffProgress& handoff = entry.handoff;
    handoff.layout_version = m.handoff_version();
    handoff.keys = m.handoff_keys();
    handoff.bytes = m.handoff_bytes();
    handoff.done = m.handoff_done();
    // An unknown (newer) phase reads as none: only `done` then ends phase 1 for it.
    handoff.phase = m.handoff_phase() <= static_cast<uint32_t>(HandoffPhase::kComparing)
                        ? static_cast<HandoffPhase>(m.handoff_phase())
                        : HandoffPhase::kNone;
    handoff.digests = m.handoff_digests();
    handoff.compared_keys = m.handoff_compared_keys();
    handoff.compared_bytes = m.handoff_compared_bytes();
    handoff.last_error = m.handoff_last_error().substr(0, kMaxHandoffErrorBytes);
    entry.format_level = m.format_level();
    entry.holds_records = m.holds_records();
    entry.layout_version = m.layout_version();
    entry.knows_members_down = m.knows_members_down();
    entry.agrees_completions = m.agrees_completions();
    entry.settings = m.settings();
    entry.clean_layout_version = m.clean_layout_version();
    entry.generation = m.generation();
    entry.earlier_generation = m.earlier_generation();
    entry.earlier_incarnation = m.earlier_incarnation();
    digest.members.push_back(std::move(entry));
  }
  return digest;
}

namespace {

void MembersToProto(const std::vector<Member>& members,
                    google::protobuf::RepeatedPtrField<internal::v1::LayoutMember>* out) {
  for (const Member& m : members) {
    internal::v1::LayoutMember* p = out->Add();
    p->set_node_id(m.id);
    p->set_address(m.address);
    p->set_zone(m.zone);
  }
}

std::vector<Member> MembersFromProto(
    const google::protobuf::RepeatedPtrField<internal::v1::LayoutMember>& members) {
  std::vector<Member> out;
  // Every member, one with an empty id included: CheckLayout then refuses the layout, rather
  // than this node adopting another layout than the sender's under the same version.
  for (const internal::v1::LayoutMember& m : members) {
    out.push_back(Member{m.node_id(), m.address(), m.zone()});
  }
  return out;
}

}  // namespace

void LayoutToProto(const ClusterLayout& layout, internal::v1::ClusterLayout* out) {
  out->set_version(layout.version);
  MembersToProto(layout.members, out->mutable_members());
  MembersToProto(layout.next, out->mutable_next());
  out->set_change(layout.change);
  for (const std::string& id : layout.down) out->add_down(id);
}

ClusterLayout LayoutFromProto(const internal::v1::ClusterLayout& layout) {
  ClusterLayout out;
  out.version = layout.version();
  out.members = MembersFromProto(layout.members());
  out.next = MembersFromProto(layout.next());
  out.change = layout.change();
  out.down.assign(layout.down().begin(), layout.down().end());
  if (out.members.empty()) out = ClusterLayout();  // malformed: as if none was sent
  return out;
}

std::string EncodeLayout(const ClusterLayout& layout) {
  internal::v1::ClusterLayout proto;
  LayoutToProto(layout, &proto);
  return proto.SerializeAsString();
}

absl::StatusOr<ClusterLayout> DecodeLayout(absl::string_view bytes) {
  internal::v1::ClusterLayout proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("the stored cluster layout does not parse");
  }
  ClusterLayout layout = LayoutFromProto(proto);
  if (absl::Status valid = CheckLayout(layout); !valid.ok()) {
    return absl::DataLossError(
        absl::StrCat("the stored cluster layout is not valid: ", valid.message()));
  }
  return layout;
}

std::string EncodeAcceptorState(const LayoutAcceptorState& state) {
  internal::v1::LayoutAcceptorState proto;
  proto.set_version(state.version);
  proto.set_promised_round(state.promised.round);
  proto.set_promised_proposer(state.promised.proposer);
  if (state.accepted.has_value()) {
    LayoutToProto(*state.accepted, proto.mutable_accepted());
    proto.set_accepted_round(state.accepted_ballot.round);
    proto.set_accepted_proposer(state.accepted_ballot.proposer);
  }
  return proto.SerializeAsString();
}

absl::StatusOr<LayoutAcceptorState> DecodeAcceptorState(absl::string_view bytes) {
  internal::v1::LayoutAcceptorState proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(
        "the stored layout promise (meta key layout_acceptor) does not parse; the node does not "
        "start rather than forget what it promised other members during a membership change");
  }
  LayoutAcceptorState state;
  state.version = proto.version();
  state.promised = {proto.promised_round(), proto.promised_proposer()};
  if (proto.accepted().version() != 0) {
    ClusterLayout accepted = LayoutFromProto(proto.accepted());
    if (absl::Status valid = CheckLayout(accepted); !valid.ok()) {
      return absl::DataLossError(
          absl::StrCat("the stored accepted layout is not valid: ", valid.message()));
    }
    state.accepted = std::move(accepted);
    state.accepted_ballot = {proto.accepted_round(), proto.accepted_proposer()};
  }
  return state;
}

}  // namespace kv

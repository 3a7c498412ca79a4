#include "node/replica_service.h"

#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "node/cluster_layout.h"
#include "node/cluster_name.h"
#include "node/gossip_proto.h"
#include "node/grpc_util.h"
#include "node/handoff_plan.h"
#include "storage/format_level.h"
#include "storage/record_codec.h"
#include "storage/status_macros.h"

namespace kv {

ReplicaService::ReplicaService(LocalStore* store, Executor* executor, CallGate* gate,
                               const MerkleIndex* merkle, Gossiper* gossiper,
                               CertificateAuthorizer authorizer)
    : store_(store),
      executor_(executor),
      gate_(gate),
      merkle_(merkle),
      gossiper_(gossiper),
      authorizer_(std::move(authorizer)) {}

absl::Status ReplicaService::Admit(grpc::CallbackServerContext* context) const {
  absl::Status admitted = gate_->Check();
  if (admitted.ok()) admitted = authorizer_.Check(*context);
  if (admitted.ok() && !cluster_name_.empty()) {
    admitted = RefuseOtherCluster(context, cluster_name_);
  }
  return admitted;
}

namespace {

// A failure of this node's storage is not the records' fault: UNAVAILABLE, so that the sender's
// outbox keeps them and sends them again (a refusal code would make it give up on them). A
// corrupt record read (DATA_LOSS) stays as it is: it concerns one key, which the sender isolates
// and gives up on after a few refusals, rather than holding back every batch to this node.
absl::Status ForPeer(const absl::Status& status, absl::string_view consequence) {
  if (absl::IsDataLoss(status)) return status;
  return StorageFailureAsUnavailable(status, consequence);
}

absl::Status NoAntiEntropy() {
  return absl::UnimplementedError("anti-entropy is not enabled on this node");
}

}  // namespace

grpc::ServerUnaryReactor* ReplicaService::MerkleNodes(
    grpc::CallbackServerContext* context, const internal::v1::MerkleNodesRequest* request,
    internal::v1::MerkleNodesResponse* response) {
  absl::Status status = Admit(context);
  if (status.ok() && merkle_ == nullptr) status = NoAntiEntropy();
  if (status.ok() && request->level() > static_cast<uint32_t>(MerkleLevel::kLeaves)) {
    status = absl::InvalidArgumentError("Merkle tree level must be 0, 1 or 2");
  }
  if (status.ok()) {
    // Memory only: answered on the gRPC thread.
    absl::StatusOr<std::vector<uint64_t>> hashes =
        merkle_->Nodes(request->requester_id(), static_cast<MerkleLevel>(request->level()),
                       std::vector<uint32_t>(request->indexes().begin(), request->indexes().end()));
    if (hashes.ok()) {
      response->mutable_hashes()->Add(hashes->begin(), hashes->end());
    } else {
      status = hashes.status();
    }
  }
  return FinishNow(gate_, status);
}

grpc::ServerUnaryReactor* ReplicaService::SegmentKeys(
    grpc::CallbackServerContext* context, const internal::v1::SegmentKeysRequest* request,
    internal::v1::SegmentKeysResponse* response) {
  absl::Status admitted = Admit(context);
  if (admitted.ok() && merkle_ == nullptr) admitted = NoAntiEntropy();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  return FinishOnExecutor(context, gate_, executor_, [this, request, response]() -> absl::Status {
    KV_ASSIGN_OR_RETURN(
        SegmentKeyList list,
        merkle_->SegmentEntries(
            request->requester_id(),
            std::vector<uint32_t>(request->segments().begin(), request->segments().end()),
            MerkleIndex::SegmentKeysAnswerLimit(request->max_response_bytes())));
    // A requester that sets no limit predates segments_answered: a short answer would look to it
    // like segments without keys here, so it gets none.
    if (request->max_response_bytes() == 0) {
      const std::set<uint32_t> asked(request->segments().begin(), request->segments().end());
      if (list.segments < asked.size()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the keys of these ", asked.size(), " segments exceed ",
                         MerkleIndex::kMaxSegmentKeysAnswerBytes,
                         " bytes, more than one answer holds; ask for fewer segments, or with "
                         "max_response_bytes (and read segments_answered)"));
      }
    }
    response->set_segments_answered(static_cast<uint32_t>(list.segments));
    for (KeyDigest& entry : list.entries) {
      internal::v1::SegmentKey* out = response->add_entries();
      out->set_key(std::move(entry.key));
      out->set_digest(entry.digest);
    }
    return absl::OkStatus();
  });
}

absl::Status ReplicaService::CheckPurgeLayout(uint64_t confirmed_version) const {
  if (placement_ == nullptr) return absl::OkStatus();
  return CheckPurgeOnLayout(placement_->Get()->layout(), confirmed_version, self_id_);
}

grpc::ServerUnaryReactor* ReplicaService::PurgeRecord(
    grpc::CallbackServerContext* context, const internal::v1::PurgeRecordRequest* request,
    internal::v1::PurgeRecordResponse* /*response*/) {
  absl::Status valid = Admit(context);
  // A tombstone of a key stored before max_key_bytes was lowered is purged too.
  if (valid.ok()) valid = store_->ValidateStoredKey(request->key());
  if (valid.ok()) valid = CheckPurgeLayout(request->layout_version());
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_, [this, request]() -> absl::Status {
    absl::StatusOr<SiblingSet> expected = DecodeSiblingSet(request->expected_record());
    if (!expected.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the expected record from \"", request->requester_id(),
                       "\" is invalid: ", expected.status().message()));
    }
    // Only a deleted key's tombstones are ever purged: a live record is never removed this way,
    // whoever asks.
    if (!expected->AllTombstones()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the expected record from \"", request->requester_id(),
                       "\" holds a live version: only tombstones are purged"));
    }
    // Checked again inside the commit: a layout adopted since the first check (the node adopts
    // layouts while purges queue) must not let this purge through.
    return ForPeer(store_->PurgeIfUnchanged(request->key(), *expected,
                                            [this, request](absl::string_view /*key*/) {
                                              return CheckPurgeLayout(request->layout_version());
                                            }),
                   "the record was not purged");
  });
}

grpc::ServerUnaryReactor* ReplicaService::CompareDigests(
    grpc::CallbackServerContext* context, const internal::v1::CompareDigestsRequest* request,
    internal::v1::CompareDigestsResponse* response) {
  absl::Status admitted = Admit(context);
  // Without an index the sender gets UNIMPLEMENTED and sends every record instead.
  if (admitted.ok() && merkle_ == nullptr) admitted = NoAntiEntropy();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  return FinishOnExecutor(context, gate_, executor_, [this, request, response]() -> absl::Status {
    std::vector<KeyDigest> digests;
    digests.reserve(request->entries_size());
    for (const internal::v1::SegmentKey& entry : request->entries()) {
      digests.push_back(KeyDigest{entry.key(), entry.digest()});
    }
    absl::StatusOr<std::vector<std::string>> keys = KeysNotMatching(*merkle_, digests);
    if (!keys.ok()) {
      return absl::Status(keys.status().code(),
                          absl::StrCat("comparing the digests from \"", request->from_node_id(),
                                       "\": ", keys.status().message()));
    }
    for (std::string& key : *keys) response->add_keys(std::move(key));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ReplicaService::MergeBatch(grpc::CallbackServerContext* context,
                                                     const internal::v1::MergeBatchRequest* request,
                                                     internal::v1::MergeBatchResponse* response) {
  absl::Status admitted = Admit(context);
  if (admitted.ok()) admitted = store_->AdmitWrites();  // the sender's outbox retries
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  absl::StatusOr<std::vector<SiblingSet>> decoded = DecodeMergeBatch(*request);
  if (!decoded.ok()) {
    if (IsNotAReplica(decoded.status())) {
      context->AddTrailingMetadata(kNotAReplicaMetadata, "1");
      if (std::optional<uint64_t> version = NotAReplicaLayoutVersion(decoded.status())) {
        context->AddTrailingMetadata(kNotAReplicaVersionMetadata, absl::StrCat(*version));
      }
    }
    return FinishNow(gate_, decoded.status());
  }
  // Merged from this gRPC thread, as kvnode's Put handlers write (LocalStore::WriteAsync): the
  // thread may commit the group, which saves the hand-off to the executor and back.
  grpc::ServerUnaryReactor* reactor = gate_->NewReactor();
  auto records = std::make_shared<std::vector<SiblingSet>>(*std::move(decoded));
  std::vector<LocalStore::RemoteRecord> remote;
  remote.reserve(records->size());
  for (int i = 0; i < request->records_size(); ++i) {
    remote.push_back(LocalStore::RemoteRecord{request->records(i).key(), &(*records)[i]});
  }
  store_->MergeRecordsAsync(
      std::move(remote), [reactor, request, response, records](absl::Status merged) {
        if (merged.ok()) response->set_merged(request->records_size());
        // Not the records' fault: the sender keeps them and tries again. A batch longer than
        // one commit group may have had its first groups merged: merging again changes nothing.
        reactor->Finish(ToGrpcStatus(
            ForPeer(merged,
                    "this batch was not merged, or only in part; send it again (merging is "
                    "idempotent)")));
      });
  return reactor;
}

grpc::ServerUnaryReactor* ReplicaService::ReadRecord(grpc::CallbackServerContext* context,
                                                     const internal::v1::ReadRecordRequest* request,
                                                     internal::v1::ReadRecordResponse* response) {
  absl::Status valid = Admit(context);
  // As PurgeRecord: the tombstone reaper confirms such a key's tombstones by reading them.
  if (valid.ok()) valid = store_->ValidateStoredKey(request->key());
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_,
                          [this, request, response] { return DoReadRecord(*request, response); });
}

grpc::ServerUnaryReactor* ReplicaService::ListKeys(grpc::CallbackServerContext* context,
                                                   const internal::v1::ListKeysRequest* request,
                                                   internal::v1::ListKeysResponse* response) {
  absl::Status valid = Admit(context);
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_, [this, request, response]() -> absl::Status {
    KV_ASSIGN_OR_RETURN(ListPage page,
                        store_->List(request->prefix(), request->page_token(), request->limit()));
    for (std::string& key : page.keys) response->add_keys(std::move(key));
    response->set_next_page_token(std::move(page.next_page_token));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<SiblingSet>> ReplicaService::DecodeMergeBatch(
    const internal::v1::MergeBatchRequest& request) const {
  if (placement_ != nullptr) {
    const std::shared_ptr<const Placement> placement = placement_->Get();
    if (absl::Status sender = placement->CheckSender(self_id_, request.from_node_id());
        !sender.ok()) {
      return sender;
    }
    for (int i = 0; i < request.records_size(); ++i) {
      absl::Status may_hold =
          placement->CheckMayHold(self_id_, request.records(i).key(), replication_factor_);
      if (!may_hold.ok()) {
        return MarkNotAReplica(absl::FailedPreconditionError(absl::StrCat(
                                   "record ", i, " of the batch from \"", request.from_node_id(),
                                   "\" is refused: ", may_hold.message())),
                               placement->layout().version);
      }
    }
  }
  // Decode everything first, so that a bad record rejects the batch before anything changes.
  std::vector<SiblingSet> decoded;
  decoded.reserve(request.records_size());
  for (int i = 0; i < request.records_size(); ++i) {
    const internal::v1::ReplicaRecord& record = request.records(i);
    // A key longer than this node's max_key_bytes is one another node stored (before the limit
    // was lowered, or under a larger one): the replicas must still converge on it.
    absl::Status valid = store_->ValidateStoredKey(record.key());
    absl::StatusOr<SiblingSet> set = DecodeSiblingSet(record.record());
    if (valid.ok() && !set.ok()) valid = set.status();
    if (valid.ok()) valid = CheckReadableAtLevel(*set, store_->options().format_level);
    if (!valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("record ", i, " of the batch from \"",
                                                     request.from_node_id(),
                                                     "\" is invalid: ", valid.message()));
    }
    decoded.push_back(*std::move(set));
  }
  return decoded;
}

absl::Status ReplicaService::DoReadRecord(const internal::v1::ReadRecordRequest& request,
                                          internal::v1::ReadRecordResponse* response) {
  absl::StatusOr<LocalStore::QuorumRead> read =
      store_->ReadRecordAs(request.key(), request.for_read_quorum());
  if (absl::IsNotFound(read.status())) {
    response->set_found(false);
    return absl::OkStatus();
  }
  if (!read.ok()) return read.status();
  absl::StatusOr<SiblingSet> record = std::move(read->record);
  response->set_found(true);
  response->set_catching_up(read->catching_up);
  const uint32_t level =
      request.reader_format_level() == 0 ? kLegacyFormatLevel : request.reader_format_level();
  response->set_record(EncodeSiblingSet(RecordForLevel(*std::move(record), level)));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ReplicaService::ReserveLayout(
    grpc::CallbackServerContext* context, const internal::v1::ReserveLayoutRequest* request,
    internal::v1::ReserveLayoutResponse* response) {
  absl::Status status = Admit(context);
  if (status.ok() && (reservations_ == nullptr || gossiper_ == nullptr)) {
    status = absl::UnimplementedError("this node takes no layout reservations");
  }
  if (status.ok() && request->change().size() > kMaxLayoutChangeBytes) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "the change text is ", request->change().size(), " bytes, over ", kMaxLayoutChangeBytes));
  }
  if (!status.ok()) return FinishNow(gate_, status);
  // On the executor: a promise that changes the member's state is stored, synced, before it is
  // answered, and a gRPC thread must not wait for the disk.
  return FinishOnExecutor(context, gate_, executor_, [this, request, response] {
    const LayoutPromise promise =
        reservations_->Reserve({request->round(), request->proposer_id()}, request->version(),
                               request->change(), gossiper_->Layout());
    response->set_code(static_cast<int32_t>(promise.status.code()));
    response->set_message(std::string(promise.status.message()));
    response->set_promised_round(promise.promised_round);
    if (promise.accepted.has_value()) {
      LayoutToProto(*promise.accepted, response->mutable_accepted());
      response->set_accepted_round(promise.accepted_ballot.round);
      response->set_accepted_proposer(promise.accepted_ballot.proposer);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ReplicaService::AcceptLayout(
    grpc::CallbackServerContext* context, const internal::v1::AcceptLayoutRequest* request,
    internal::v1::AcceptLayoutResponse* /*response*/) {
  absl::Status status = Admit(context);
  if (status.ok() && (reservations_ == nullptr || gossiper_ == nullptr)) {
    status = absl::UnimplementedError("this node takes no layout reservations");
  }
  ClusterLayout layout;
  if (status.ok()) {
    layout = LayoutFromProto(request->layout());
    status = CheckLayout(layout);
  }
  if (!status.ok()) return FinishNow(gate_, status);
  // On the executor, as ReserveLayout: an accept is stored, synced, before it is answered.
  return FinishOnExecutor(context, gate_, executor_, [this, request, layout = std::move(layout)] {
    return reservations_->Accept({request->round(), request->proposer_id()}, layout,
                                 gossiper_->Layout());
  });
}

grpc::ServerUnaryReactor* ReplicaService::ReleaseLayout(
    grpc::CallbackServerContext* context, const internal::v1::ReleaseLayoutRequest* request,
    internal::v1::ReleaseLayoutResponse* /*response*/) {
  absl::Status status = Admit(context);
  if (status.ok() && reservations_ == nullptr) {
    status = absl::UnimplementedError("this node takes no layout reservations");
  }
  if (status.ok()) {
    reservations_->Release({request->round(), request->proposer_id()}, request->version());
  }
  return FinishNow(gate_, status);
}

grpc::ServerUnaryReactor* ReplicaService::Gossip(grpc::CallbackServerContext* context,
                                                 const internal::v1::GossipRequest* request,
                                                 internal::v1::GossipResponse* response) {
  absl::Status status = Admit(context);
  if (status.ok() && gossiper_ == nullptr) {
    status = absl::UnimplementedError("gossip is not enabled on this node");
  }
  if (status.ok()) {
    const GossipDigest answer = gossiper_->HandleGossip(DigestFromMessage(*request));
    DigestToMessage(answer, response);
  }
  return FinishNow(gate_, status);
}

}  // namespace kv

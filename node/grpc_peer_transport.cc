#include "node/grpc_peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "kv.grpc.pb.h"
#include "node/cluster_name.h"
#include "node/gossip_proto.h"
#include "node/grpc_util.h"
#include "node/merkle_index.h"
#include "replica.grpc.pb.h"
#include "storage/record_codec.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(WallDeadlineAfter(timeout));
}

v1::Quorum ToProto(const QuorumSpec& spec) {
  v1::Quorum q;
  switch (spec.kind) {
    case QuorumSpec::Kind::kDefault:
      q.set_kind(v1::Quorum::DEFAULT);
      break;
    case QuorumSpec::Kind::kCount:
      q.set_kind(v1::Quorum::COUNT);
      q.set_count(spec.count);
      break;
    case QuorumSpec::Kind::kQuorum:
      q.set_kind(v1::Quorum::QUORUM);
      break;
    case QuorumSpec::Kind::kAll:
      q.set_kind(v1::Quorum::ALL);
      break;
  }
  return q;
}

// One outstanding call: owns what gRPC needs until the callback runs.
template <typename Request, typename Response>
struct Call {
  grpc::ClientContext context;
  Request request;
  Response response;
};

}  // namespace

GrpcPeerTransport::GrpcPeerTransport(std::string self_id, Executor* executor, Options options)
    : self_id_(std::move(self_id)),
      executor_(executor),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : SteadyClock::Get()) {}

GrpcPeerTransport::~GrpcPeerTransport() {
  absl::MutexLock lock(&mu_);
  cancelling_ = true;
  for (grpc::ClientContext* context : in_flight_) context->TryCancel();
  mu_.Await(absl::Condition(this, &GrpcPeerTransport::Idle));
}

bool GrpcPeerTransport::Idle() const { return in_flight_.empty() && releasing_ == 0; }

absl::Status GrpcPeerTransport::FromPeer(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::CANCELLED && !cancelling_.load()) {
    return absl::UnavailableError(absl::StrCat(
        "the peer dropped the call before starting it (CANCELLED: ", status.error_message(),
        "); it is probably shutting down"));
  }
  return ToAbslStatus(status);
}

void GrpcPeerTransport::Begin(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  in_flight_.insert(context);
}

void GrpcPeerTransport::End(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  in_flight_.erase(context);
  ++releasing_;
}

void GrpcPeerTransport::Released() {
  absl::MutexLock lock(&mu_);
  --releasing_;
}

void GrpcPeerTransport::Complete(std::shared_ptr<void> call, grpc::ClientContext* context,
                                 std::shared_ptr<PeerStubs> stubs, std::function<void()> done) {
  // The call and the stubs are released on the executor, never on a gRPC thread: dropping the
  // last reference to a channel (the stubs, or the call's context, hold one) from gRPC's own
  // callback thread can make gRPC 1.51 free its callback completion queue twice. Once the
  // executor is shut down this runs inline on the gRPC thread; the destructor then waits until
  // Released, still holding every channel a call holds (in peers_: DropIdleChannels leaves those
  // alone), so these are never the last references.
  executor_->Schedule([this, call = std::move(call), context, stubs = std::move(stubs),
                       done = std::move(done)]() mutable {
    done();
    End(context);
    call.reset();
    stubs.reset();
    Released();
  });
}

struct GrpcPeerTransport::PeerStubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<internal::v1::Replica::Stub> replica;
  std::unique_ptr<v1::KV::Stub> kv;
  absl::Time last_used;  // guarded by the transport's mu_
};

std::shared_ptr<GrpcPeerTransport::PeerStubs> GrpcPeerTransport::StubsFor(const Member& peer,
                                                                          bool gossip) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<PeerStubs>& stubs = peers_[gossip ? "gossip|" + peer.address : peer.address];
  if (!stubs) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(options_.max_message_bytes);
    args.SetMaxSendMessageSize(options_.max_message_bytes);
    // Reconnect quickly after a peer restarts: replication retries have their own backoff.
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    if (options_.keepalive_time > absl::ZeroDuration()) {
      // At least a second apart (kvnode refuses pings more often), at most a day.
      auto clamped_ms = [](absl::Duration d, absl::Duration min) {
        return static_cast<int>(absl::ToInt64Milliseconds(std::clamp(d, min, absl::Hours(24))));
      };
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                  clamped_ms(options_.keepalive_time, absl::Seconds(1)));
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                  clamped_ms(options_.keepalive_timeout, absl::Milliseconds(100)));
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
      args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // a call waiting on a silent peer
    }
    // Distinct channel arguments keep gRPC from sharing one subchannel between the two channels.
    if (gossip) args.SetString("kv.channel_purpose", "gossip");
    stubs = std::make_shared<PeerStubs>();
    const std::shared_ptr<grpc::ChannelCredentials> credentials =
        options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials();
    stubs->channel =
        options_.cluster_name.empty()
            ? grpc::CreateCustomChannel(peer.address, credentials, args)
            : grpc::experimental::CreateCustomChannelWithInterceptors(
                  peer.address, credentials, args, ClusterNameInterceptors(options_.cluster_name));
    stubs->replica = internal::v1::Replica::NewStub(stubs->channel);
    stubs->kv = v1::KV::NewStub(stubs->channel);
  }
  stubs->last_used = clock_->Now();
  return stubs;
}

size_t GrpcPeerTransport::DropIdleChannels() {
  std::vector<std::shared_ptr<PeerStubs>> dropped;  // destroyed after mu_ is released
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto it = peers_.begin(); it != peers_.end();) {
      // A count of one: no call holds the stubs, and no call can take them without mu_.
      if (it->second.use_count() == 1 &&
          now - it->second->last_used >=
              std::max(options_.idle_channel_lifetime, absl::Minutes(1))) {
        dropped.push_back(std::move(it->second));
        it = peers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  return dropped.size();
}

size_t GrpcPeerTransport::ChannelCount() const {
  absl::MutexLock lock(&mu_);
  return peers_.size();
}

void GrpcPeerTransport::MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                                     std::function<void(absl::Status)> done) {
  auto call =
      std::make_shared<Call<internal::v1::MergeBatchRequest, internal::v1::MergeBatchResponse>>();
  SetDeadline(&call->context, options_.merge_timeout);
  call->request.set_from_node_id(self_id_);
  for (EncodedRecord& r : records) {
    internal::v1::ReplicaRecord* out = call->request.add_records();
    out->set_key(std::move(r.key));
    out->set_record(std::move(r.record));
  }
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->MergeBatch(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        grpc::ClientContext* context = &call->context;
        absl::Status merged = FromPeer(status);
        const auto& trailers = context->GetServerTrailingMetadata();
        if (!merged.ok() && trailers.count(kNotAReplicaMetadata) > 0) {
          auto version = trailers.find(kNotAReplicaVersionMetadata);
          uint64_t layout_version = 0;
          if (version != trailers.end() &&
              absl::SimpleAtoi(absl::string_view(version->second.data(), version->second.size()),
                               &layout_version)) {
            merged = MarkNotAReplica(std::move(merged), layout_version);
          } else {
            merged = MarkNotAReplica(std::move(merged));  // a node that does not say
          }
        }
        Complete(std::move(call), context, std::move(stubs),
                 [merged = std::move(merged), done = std::move(done)] { done(merged); });
      });
}

void GrpcPeerTransport::ReadRecord(const Member& peer, std::string key,
                                   std::function<void(absl::StatusOr<std::string>)> done) {
  Read(peer, std::move(key), /*for_quorum=*/false, RecordOnly(std::move(done)));
}

void GrpcPeerTransport::ReadRecordForQuorum(
    const Member& peer, std::string key, std::function<void(absl::StatusOr<QuorumRecord>)> done) {
  Read(peer, std::move(key), /*for_quorum=*/true, std::move(done));
}

void GrpcPeerTransport::Read(const Member& peer, std::string key, bool for_quorum,
                             std::function<void(absl::StatusOr<QuorumRecord>)> done) {
  auto call =
      std::make_shared<Call<internal::v1::ReadRecordRequest, internal::v1::ReadRecordResponse>>();
  SetDeadline(&call->context, options_.read_timeout);
  call->request.set_key(std::move(key));
  call->request.set_for_read_quorum(for_quorum);
  call->request.set_reader_format_level(options_.format_level);
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->ReadRecord(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        absl::StatusOr<QuorumRecord> result;
        if (!status.ok()) {
          result = FromPeer(status);
        } else if (!call->response.found()) {
          result = absl::NotFoundError("replica has no record of the key");
        } else {
          result = QuorumRecord{std::move(*call->response.mutable_record()),
                                call->response.catching_up()};
          if (options_.format_level < kReplacedWritesLevel) {
            absl::StatusOr<SiblingSet> record = DecodeSiblingSet(result->record);
            absl::Status readable = record.ok()
                                        ? CheckReadableAtLevel(*record, options_.format_level)
                                        : record.status();
            if (!readable.ok()) result = readable;
          }
        }
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [result = std::move(result), done = std::move(done)]() mutable {
                   done(std::move(result));
                 });
      });
}

void GrpcPeerTransport::ListKeys(const Member& peer, std::string prefix, std::string page_token,
                                 uint32_t limit,
                                 std::function<void(absl::StatusOr<ListPage>)> done) {
  auto call =
      std::make_shared<Call<internal::v1::ListKeysRequest, internal::v1::ListKeysResponse>>();
  SetDeadline(&call->context, options_.read_timeout);
  call->request.set_prefix(std::move(prefix));
  call->request.set_page_token(std::move(page_token));
  call->request.set_limit(limit);
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->ListKeys(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        absl::StatusOr<ListPage> result;
        if (status.ok()) {
          ListPage page;
          for (std::string& key : *call->response.mutable_keys()) {
            page.keys.push_back(std::move(key));
          }
          page.next_page_token = std::move(*call->response.mutable_next_page_token());
          result = std::move(page);
        } else {
          result = FromPeer(status);
        }
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [result = std::move(result), done = std::move(done)]() mutable {
                   done(std::move(result));
                 });
      });
}

namespace {

// The forwarded write's answer as a WriteReply; the trailing metadata marks a W shortfall on a
// replica that stored the write, or a node of another cluster.
template <typename Response>
absl::StatusOr<WriteReply> ForwardedReply(grpc::ClientContext* context, const absl::Status& status,
                                          const Response& response) {
  if (status.ok()) {
    return WriteReply{response.write_id(), response.context(), response.deduplicated()};
  }
  if (context->GetServerTrailingMetadata().count(kWriteStoredMetadata) > 0) {
    return MarkWriteStored(status);
  }
  if (context->GetServerTrailingMetadata().count(kClusterMismatchMetadata) > 0) {
    return MarkOtherCluster(status);
  }
  return status;
}

}  // namespace

template <typename Request, typename Response, typename Method>
void GrpcPeerTransport::SendForwardedWrite(std::shared_ptr<PeerStubs> stubs, WriteCommand command,
                                           QuorumSpec w, Method method,
                                           std::function<void(absl::StatusOr<WriteReply>)> done) {
  auto call = std::make_shared<Call<Request, Response>>();
  // No longer than the client waits: an answer after that reaches no one, and the call would
  // hold the coordinator's work (and this node's memory) for nothing.
  SetDeadline(&call->context, std::min(options_.forward_timeout, command.deadline - SteadyNow()));
  call->request.set_key(std::move(command.key));
  if constexpr (std::is_same_v<Request, v1::PutRequest>) {
    call->request.set_value(std::move(command.value));
  }
  call->request.set_context(std::move(command.context));
  call->request.set_idempotency_token(std::move(command.idempotency_token));
  *call->request.mutable_w() = ToProto(w);
  call->context.AddMetadata(kForwardedWriteMetadata, "1");
  Begin(&call->context);
  method(stubs->kv.get(), &call->context, &call->request, &call->response,
         [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
           absl::StatusOr<WriteReply> reply =
               ForwardedReply(&call->context, FromPeer(status), call->response);
           grpc::ClientContext* context = &call->context;
           Complete(std::move(call), context, std::move(stubs),
                    [reply = std::move(reply), done = std::move(done)]() mutable {
                      done(std::move(reply));
                    });
         });
}

void GrpcPeerTransport::ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                                     std::function<void(absl::StatusOr<WriteReply>)> done) {
  if (command.is_delete) {
    SendForwardedWrite<v1::DeleteRequest, v1::DeleteResponse>(
        StubsFor(peer), std::move(command), w,
        [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::DeleteRequest* request,
           v1::DeleteResponse* response, std::function<void(grpc::Status)> on_done) {
          stub->async()->Delete(context, request, response, std::move(on_done));
        },
        std::move(done));
  } else {
    SendForwardedWrite<v1::PutRequest, v1::PutResponse>(
        StubsFor(peer), std::move(command), w,
        [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::PutRequest* request,
           v1::PutResponse* response, std::function<void(grpc::Status)> on_done) {
          stub->async()->Put(context, request, response, std::move(on_done));
        },
        std::move(done));
  }
}

void GrpcPeerTransport::MerkleNodes(
    const Member& peer, MerkleLevel level, std::vector<uint32_t> indexes,
    std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done) {
  auto call =
      std::make_shared<Call<internal::v1::MerkleNodesRequest, internal::v1::MerkleNodesResponse>>();
  SetDeadline(&call->context, options_.read_timeout);
  call->request.set_requester_id(self_id_);
  call->request.set_level(static_cast<uint32_t>(level));
  for (uint32_t index : indexes) call->request.add_indexes(index);
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->MerkleNodes(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        absl::StatusOr<std::vector<uint64_t>> result = absl::UnknownError("no answer");
        if (!status.ok()) result = FromPeer(status);
        if (status.ok()) {
          result =
              std::vector<uint64_t>(call->response.hashes().begin(), call->response.hashes().end());
        }
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [result = std::move(result), done = std::move(done)]() mutable {
                   done(std::move(result));
                 });
      });
}

void GrpcPeerTransport::SegmentKeys(const Member& peer, std::vector<uint32_t> segments,
                                    size_t max_bytes,
                                    std::function<void(absl::StatusOr<SegmentKeyList>)> done) {
  auto call =
      std::make_shared<Call<internal::v1::SegmentKeysRequest, internal::v1::SegmentKeysResponse>>();
  SetDeadline(&call->context, options_.read_timeout);
  call->request.set_requester_id(self_id_);
  for (uint32_t segment : segments) call->request.add_segments(segment);
  // Never 0 (which peers take for a requester that cannot page: node/replica_service.cc).
  call->request.set_max_response_bytes(max_bytes == 0 ? MerkleIndex::kMaxSegmentKeysAnswerBytes
                                                      : max_bytes);
  const size_t asked = segments.size();
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->SegmentKeys(
      &call->context, &call->request, &call->response,
      [this, call, stubs, asked, done = std::move(done)](grpc::Status status) mutable {
        absl::StatusOr<SegmentKeyList> result = absl::UnknownError("no answer");
        if (!status.ok()) result = FromPeer(status);
        if (status.ok()) {
          SegmentKeyList list;
          list.entries.reserve(call->response.entries_size());
          for (internal::v1::SegmentKey& entry : *call->response.mutable_entries()) {
            list.entries.push_back(KeyDigest{std::move(*entry.mutable_key()), entry.digest()});
          }
          // 0: a node from before the byte limit, which answers every segment.
          const size_t answered = call->response.segments_answered();
          list.segments = answered == 0 ? asked : std::min(answered, asked);
          result = std::move(list);
        }
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [result = std::move(result), done = std::move(done)]() mutable {
                   done(std::move(result));
                 });
      });
}

void GrpcPeerTransport::PurgeRecord(const Member& peer, std::string key,
                                    std::string expected_record, uint64_t layout_version,
                                    std::function<void(absl::Status)> done) {
  auto call =
      std::make_shared<Call<internal::v1::PurgeRecordRequest, internal::v1::PurgeRecordResponse>>();
  SetDeadline(&call->context, options_.merge_timeout);
  call->request.set_requester_id(self_id_);
  call->request.set_key(std::move(key));
  call->request.set_expected_record(std::move(expected_record));
  call->request.set_layout_version(layout_version);
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->PurgeRecord(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [status = FromPeer(status), done = std::move(done)] { done(status); });
      });
}

namespace {

// A member's answer to ReserveLayout (the call itself succeeded). A grant must echo the ballot's
// round (an empty answer comes from a node from before layout agreement) and may name only a
// usable accepted layout of the requested version.
LayoutPromise PromiseFromAnswer(const internal::v1::ReserveLayoutRequest& request,
                                const internal::v1::ReserveLayoutResponse& answer) {
  LayoutPromise promise;
  const int code = answer.code();
  if (code != 0) {
    promise.status = absl::Status(
        code > 0 && code <= 16 ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown,
        answer.message());
  }
  promise.promised_round = answer.promised_round();
  if (!promise.status.ok()) return promise;
  if (answer.promised_round() != request.round()) {
    promise.status = absl::UnimplementedError(
        "the peer answered without promising the ballot (a node from before layout agreement)");
    return promise;
  }
  if (answer.accepted().version() == 0) return promise;
  ClusterLayout accepted = LayoutFromProto(answer.accepted());
  absl::Status valid = CheckLayout(accepted);
  if (valid.ok() && accepted.version != request.version()) {
    valid = absl::InvalidArgumentError(
        absl::StrCat("it is of version ", accepted.version, ", not ", request.version()));
  }
  if (!valid.ok()) {
    promise.status = absl::InternalError(absl::StrCat(
        "the peer's promise names an accepted layout that cannot be used: ", valid.message()));
    return promise;
  }
  promise.accepted = std::move(accepted);
  promise.accepted_ballot = {answer.accepted_round(), answer.accepted_proposer()};
  return promise;
}

}  // namespace

void GrpcPeerTransport::ReserveLayout(const Member& peer, uint64_t version, LayoutBallot ballot,
                                      std::string change, std::function<void(LayoutPromise)> done) {
  auto call = std::make_shared<
      Call<internal::v1::ReserveLayoutRequest, internal::v1::ReserveLayoutResponse>>();
  SetDeadline(&call->context, options_.merge_timeout);
  call->request.set_proposer_id(std::move(ballot.proposer));
  call->request.set_round(ballot.round);
  call->request.set_version(version);
  call->request.set_change(std::move(change));
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->ReserveLayout(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        LayoutPromise promise;
        promise.status = FromPeer(status);
        if (promise.status.ok()) promise = PromiseFromAnswer(call->request, call->response);
        // Here, not on the executor, where the caller may be waiting.
        done(std::move(promise));
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs), [] {});
      });
}

void GrpcPeerTransport::AcceptLayout(const Member& peer, LayoutBallot ballot, ClusterLayout layout,
                                     std::function<void(absl::Status)> done) {
  auto call = std::make_shared<
      Call<internal::v1::AcceptLayoutRequest, internal::v1::AcceptLayoutResponse>>();
  SetDeadline(&call->context, options_.merge_timeout);
  call->request.set_proposer_id(std::move(ballot.proposer));
  call->request.set_round(ballot.round);
  LayoutToProto(layout, call->request.mutable_layout());
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->AcceptLayout(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        done(FromPeer(status));  // here, not on the executor, where the caller may be waiting
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs), [] {});
      });
}

void GrpcPeerTransport::ReleaseLayout(const Member& peer, uint64_t version, LayoutBallot ballot) {
  auto call = std::make_shared<
      Call<internal::v1::ReleaseLayoutRequest, internal::v1::ReleaseLayoutResponse>>();
  SetDeadline(&call->context, options_.merge_timeout);
  call->request.set_proposer_id(std::move(ballot.proposer));
  call->request.set_round(ballot.round);
  call->request.set_version(version);
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->ReleaseLayout(&call->context, &call->request, &call->response,
                                         [this, call, stubs](grpc::Status /*status*/) mutable {
                                           // Best effort: a lease not released (an older peer, a
                                           // lost call) lapses by itself.
                                           grpc::ClientContext* context = &call->context;
                                           Complete(std::move(call), context, std::move(stubs),
                                                    [] {});
                                         });
}

void GrpcPeerTransport::CompareDigests(
    const Member& peer, std::vector<KeyDigest> digests,
    std::function<void(absl::StatusOr<std::vector<std::string>>)> done) {
  auto call = std::make_shared<
      Call<internal::v1::CompareDigestsRequest, internal::v1::CompareDigestsResponse>>();
  SetDeadline(&call->context, options_.read_timeout);
  call->request.set_from_node_id(self_id_);
  call->request.mutable_entries()->Reserve(static_cast<int>(digests.size()));
  for (KeyDigest& digest : digests) {
    internal::v1::SegmentKey* out = call->request.add_entries();
    out->set_key(std::move(digest.key));
    out->set_digest(digest.digest);
  }
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  Begin(&call->context);
  stubs->replica->async()->CompareDigests(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        absl::StatusOr<std::vector<std::string>> result = absl::UnknownError("no answer");
        if (!status.ok()) result = FromPeer(status);
        if (status.ok()) {
          std::vector<std::string> keys;
          keys.reserve(call->response.keys_size());
          for (std::string& key : *call->response.mutable_keys()) keys.push_back(std::move(key));
          result = std::move(keys);
        }
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [result = std::move(result), done = std::move(done)]() mutable {
                   done(std::move(result));
                 });
      });
}

void GrpcPeerTransport::Gossip(const std::string& address, GossipDigest digest,
                               std::function<void(absl::StatusOr<GossipDigest>)> done) {
  auto call = std::make_shared<Call<internal::v1::GossipRequest, internal::v1::GossipResponse>>();
  SetDeadline(&call->context, options_.gossip_timeout);
  DigestToMessage(digest, &call->request);
  call->request.set_from_node_id(self_id_);
  std::shared_ptr<PeerStubs> stubs = StubsFor(Member{"", address, ""}, /*gossip=*/true);
  Begin(&call->context);
  stubs->replica->async()->Gossip(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) mutable {
        absl::StatusOr<GossipDigest> result;
        if (status.ok()) {
          result = DigestFromMessage(call->response);
        } else if (call->context.GetServerTrailingMetadata().count(kClusterMismatchMetadata) > 0) {
          // A node of another cluster: FAILED_PRECONDITION, which the gossiper logs, rather than
          // the UNAVAILABLE of a peer that is down.
          result = absl::FailedPreconditionError(status.error_message());
        } else {
          result = FromPeer(status);
        }
        grpc::ClientContext* context = &call->context;
        Complete(std::move(call), context, std::move(stubs),
                 [result = std::move(result), done = std::move(done)]() mutable {
                   done(std::move(result));
                 });
      });
}

}  // namespace kv

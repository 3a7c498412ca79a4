#include "node/grpc_peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "kv.grpc.pb.h"
#include "node/grpc_util.h"
#include "replica.grpc.pb.h"

namespace kv {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

v1::Quorum ToProto(const QuorumSpec& spec) {
  v1::Quorum q;
  switch (spec.kind) {
    case QuorumSpec::Kind::kDefault:
      q.set_kind(v1::Quorum::DEFAULT);
      break;
    case QuorumSpec::Kind::kCount:
      q.set_kind(v1::Quorum::COUNT);
      break;
    case QuorumSpec::Kind::kQuorum:
      q.set_kind(v1::Quorum::QUORUM);
      break;
    case QuorumSpec::Kind::kAll:
      q.set_kind(v1::Quorum::ALL);
      break;
  }
  q.set_count(spec.count);
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
    : self_id_(std::move(self_id)), executor_(executor), options_(options) {}

GrpcPeerTransport::~GrpcPeerTransport() = default;

struct GrpcPeerTransport::PeerStubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<internal::v1::Replica::Stub> replica;
  std::unique_ptr<v1::KV::Stub> kv;
};

std::shared_ptr<GrpcPeerTransport::PeerStubs> GrpcPeerTransport::StubsFor(const Member& peer) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<PeerStubs>& stubs = peers_[peer.address];
  if (!stubs) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(options_.max_message_bytes);
    args.SetMaxSendMessageSize(options_.max_message_bytes);
    // Reconnect quickly after a peer restarts: replication retries have their own backoff.
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    stubs = std::make_shared<PeerStubs>();
    stubs->channel =
        grpc::CreateCustomChannel(peer.address, grpc::InsecureChannelCredentials(), args);
    stubs->replica = internal::v1::Replica::NewStub(stubs->channel);
    stubs->kv = v1::KV::NewStub(stubs->channel);
  }
  return stubs;
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
  stubs->replica->async()->MergeBatch(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) {
        executor_->Schedule([status = FromGrpc(status), done] { done(status); });
      });
}

void GrpcPeerTransport::ReadRecord(const Member& peer, std::string key,
                                   std::function<void(absl::StatusOr<std::string>)> done) {
  auto call =
      std::make_shared<Call<internal::v1::ReadRecordRequest, internal::v1::ReadRecordResponse>>();
  SetDeadline(&call->context, options_.read_timeout);
  call->request.set_key(std::move(key));
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  stubs->replica->async()->ReadRecord(
      &call->context, &call->request, &call->response,
      [this, call, stubs, done = std::move(done)](grpc::Status status) {
        absl::StatusOr<std::string> result;
        if (!status.ok()) {
          result = FromGrpc(status);
        } else if (!call->response.found()) {
          result = absl::NotFoundError("replica has no record of the key");
        } else {
          result = std::move(*call->response.mutable_record());
        }
        executor_->Schedule(
            [result = std::move(result), done]() mutable { done(std::move(result)); });
      });
}

void GrpcPeerTransport::ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                                     std::function<void(absl::StatusOr<WriteReply>)> done) {
  std::shared_ptr<PeerStubs> stubs = StubsFor(peer);
  auto finish = [this, done = std::move(done)](
                    grpc::ClientContext* call_context, const grpc::Status& status,
                    const std::string& write_id, const std::string& context, bool deduplicated) {
    absl::StatusOr<WriteReply> reply;
    if (status.ok()) {
      reply = WriteReply{write_id, context, deduplicated};
    } else if (call_context->GetServerTrailingMetadata().count(kWriteStoredMetadata) > 0) {
      reply = MarkWriteStored(FromGrpc(status));
    } else {
      reply = FromGrpc(status);
    }
    executor_->Schedule([reply = std::move(reply), done]() mutable { done(std::move(reply)); });
  };
  if (command.is_delete) {
    auto call = std::make_shared<Call<v1::DeleteRequest, v1::DeleteResponse>>();
    SetDeadline(&call->context, options_.forward_timeout);
    call->request.set_key(std::move(command.key));
    call->request.set_context(std::move(command.context));
    call->request.set_idempotency_token(std::move(command.idempotency_token));
    *call->request.mutable_w() = ToProto(w);
    stubs->kv->async()->Delete(&call->context, &call->request, &call->response,
                               [call, stubs, finish](grpc::Status status) {
                                 finish(&call->context, status, call->response.write_id(),
                                        call->response.context(), call->response.deduplicated());
                               });
    return;
  }
  auto call = std::make_shared<Call<v1::PutRequest, v1::PutResponse>>();
  SetDeadline(&call->context, options_.forward_timeout);
  call->request.set_key(std::move(command.key));
  call->request.set_value(std::move(command.value));
  call->request.set_context(std::move(command.context));
  call->request.set_idempotency_token(std::move(command.idempotency_token));
  *call->request.mutable_w() = ToProto(w);
  stubs->kv->async()->Put(&call->context, &call->request, &call->response,
                          [call, stubs, finish](grpc::Status status) {
                            finish(&call->context, status, call->response.write_id(),
                                   call->response.context(), call->response.deduplicated());
                          });
}

}  // namespace kv

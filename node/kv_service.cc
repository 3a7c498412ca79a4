#include "node/kv_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "node/grpc_util.h"
#include "node/quorum.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

// Replicas per key on this single-node build.
constexpr int kReplicationFactor = 1;

void ToProto(const Sibling& sibling, v1::Sibling* out) {
  out->set_value(sibling.value);
  out->set_tombstone(sibling.tombstone);
  out->set_dot(sibling.dot.ToString());
  out->set_timestamp_micros(sibling.timestamp_micros);
}

// Runs a Put or Delete and fills the response fields they share.
template <typename Response>
absl::Status ApplyWrite(LocalStore* store, const WriteCommand& command, Response* response) {
  KV_ASSIGN_OR_RETURN(WriteOutcome outcome, store->Write(command));
  response->set_write_id(std::move(outcome.write_id));
  response->set_context(std::move(outcome.context));
  response->set_deduplicated(outcome.deduplicated);
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckQuorum(const v1::Quorum& quorum, int n, absl::string_view name) {
  QuorumSpec spec;
  spec.count = quorum.count();
  switch (quorum.kind()) {
    case v1::Quorum::DEFAULT:
      spec.kind = QuorumSpec::Kind::kDefault;
      break;
    case v1::Quorum::COUNT:
      spec.kind = QuorumSpec::Kind::kCount;
      break;
    case v1::Quorum::QUORUM:
      spec.kind = QuorumSpec::Kind::kQuorum;
      break;
    case v1::Quorum::ALL:
      spec.kind = QuorumSpec::Kind::kAll;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": unknown quorum kind ", static_cast<int>(quorum.kind()),
                       "; use DEFAULT, COUNT (1..N, N=", n, "), QUORUM or ALL"));
  }
  return ResolveQuorum(spec, n, n, name).status();
}

KvService::KvService(LocalStore* store, Executor* executor, CallGate* gate, std::string node_id)
    : store_(store), executor_(executor), gate_(gate), node_id_(std::move(node_id)) {}

absl::Status KvService::Admit(absl::string_view key, const v1::Quorum* quorum,
                              absl::string_view quorum_name) const {
  KV_RETURN_IF_ERROR(gate_->Check());
  KV_RETURN_IF_ERROR(store_->ValidateKey(key));
  if (quorum == nullptr) return absl::OkStatus();
  return CheckQuorum(*quorum, kReplicationFactor, quorum_name);
}

grpc::ServerUnaryReactor* KvService::Put(grpc::CallbackServerContext* context,
                                         const v1::PutRequest* request, v1::PutResponse* response) {
  absl::Status valid = Admit(request->key(), &request->w(), "w");
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_, [this, request, response] {
    WriteCommand command;
    command.key = request->key();
    command.value = request->value();
    command.context = request->context();
    command.idempotency_token = request->idempotency_token();
    return ApplyWrite(store_, command, response);
  });
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* context,
                                            const v1::DeleteRequest* request,
                                            v1::DeleteResponse* response) {
  absl::Status valid = Admit(request->key(), &request->w(), "w");
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_, [this, request, response] {
    WriteCommand command;
    command.key = request->key();
    command.is_delete = true;
    command.context = request->context();
    command.idempotency_token = request->idempotency_token();
    return ApplyWrite(store_, command, response);
  });
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* context,
                                         const v1::GetRequest* request, v1::GetResponse* response) {
  absl::Status valid = Admit(request->key(), &request->r(), "r");
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_,
                          [this, request, response] { return DoGet(*request, response); });
}

absl::Status KvService::DoGet(const v1::GetRequest& request, v1::GetResponse* response) {
  absl::StatusOr<SiblingSet> record = store_->ReadRecord(request.key());
  if (absl::IsNotFound(record.status()) || (record.ok() && record->AllTombstones())) {
    return absl::NotFoundError("key not found: it has no live version on this node");
  }
  if (!record.ok()) return record.status();
  for (const Sibling& sibling : record->LiveSiblings()) ToProto(sibling, response->add_siblings());
  response->set_context(CausalContext(record->context()).Encode());
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvService::List(grpc::CallbackServerContext* context,
                                          const v1::ListRequest* request,
                                          v1::ListResponse* response) {
  absl::Status valid = gate_->Check();
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_, [this, request, response]() -> absl::Status {
    KV_ASSIGN_OR_RETURN(ListPage page,
                        store_->List(request->prefix(), request->page_token(), request->limit()));
    for (std::string& key : page.keys) response->add_keys(std::move(key));
    response->set_next_page_token(std::move(page.next_page_token));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvService::DescribeKey(grpc::CallbackServerContext* context,
                                                 const v1::DescribeKeyRequest* request,
                                                 v1::DescribeKeyResponse* response) {
  absl::Status valid = Admit(request->key(), nullptr, "");
  if (!valid.ok()) return FinishNow(gate_, valid);
  return FinishOnExecutor(context, gate_, executor_,
                          [this, request, response] { return DoDescribeKey(*request, response); });
}

absl::Status KvService::DoDescribeKey(const v1::DescribeKeyRequest& request,
                                      v1::DescribeKeyResponse* response) {
  absl::StatusOr<SiblingSet> record = store_->ReadRecord(request.key());
  if (!record.ok() && !absl::IsNotFound(record.status())) return record.status();
  response->set_key(request.key());
  v1::ReplicaView* view = response->add_replicas();
  view->set_node_id(node_id_);
  view->set_reachable(true);
  view->set_has_record(record.ok());
  if (record.ok()) {
    for (const Sibling& sibling : record->siblings()) ToProto(sibling, view->add_siblings());
    view->set_context(record->context().ToString());
  }
  // One replica always agrees with itself.
  response->set_converged(true);
  return absl::OkStatus();
}

}  // namespace kv

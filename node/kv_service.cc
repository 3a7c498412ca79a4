#include "node/kv_service.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "node/cluster_name.h"
#include "node/grpc_util.h"
#include "node/peer_transport.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

void ToProto(const Sibling& sibling, v1::Sibling* out) {
  out->set_value(sibling.value);
  out->set_tombstone(sibling.tombstone);
  out->set_dot(sibling.dot.ToString());
  out->set_timestamp_micros(sibling.timestamp_micros);
}

// True when every replica answered and all hold the same record (absent counts as a record). A
// replica that could not be asked may hold anything, so while one is unreachable the key does
// not count as converged.
bool Converged(const std::vector<ReplicaRecordView>& views) {
  const std::optional<SiblingSet>* first = nullptr;
  for (const ReplicaRecordView& view : views) {
    if (!view.status.ok()) return false;
    if (first == nullptr) {
      first = &view.record;
    } else if (*first != view.record) {
      return false;
    }
  }
  return true;
}

// A GetBatch item left out of a full answer (`read`: after its record was read): the client
// sends it alone.
void SendAlone(v1::GetBatchResult* result, bool read) {
  result->clear_response();
  result->set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  result->set_message(absl::StrCat("GetBatch answer full (", kGetBatchAnswerBytes, " bytes)",
                                   read ? "" : "; not read", ": send this get alone"));
  result->set_send_alone(true);
}

// Get's answer from the merged record: its live siblings and its context; NOT_FOUND when no
// sibling is live.
absl::Status FillGetResponse(SiblingSet record, absl::string_view key, const LocalStore& store,
                             v1::GetResponse* response) {
  if (record.AllTombstones()) return absl::NotFoundError("key not found: it has no live version");
  for (const Sibling& sibling : record.LiveSiblings()) {
    ToProto(sibling, response->add_siblings());
  }
  response->set_context(store.ContextForClients(record.ClientContext(), key));
  return absl::OkStatus();
}

// The write a Put asks for (alone or as an item of a PutBatch).
WriteCommand FromPutRequest(const v1::PutRequest& request) {
  WriteCommand command;
  command.key = request.key();
  command.value = request.value();
  command.context = request.context();
  command.idempotency_token = request.idempotency_token();
  command.first_attempt = request.first_attempt();
  return command;
}

// The write a Delete asks for (alone or as an item of a PutBatch).
WriteCommand FromDeleteRequest(const v1::DeleteRequest& request) {
  WriteCommand command;
  command.key = request.key();
  command.is_delete = true;
  command.context = request.context();
  command.idempotency_token = request.idempotency_token();
  command.first_attempt = request.first_attempt();
  return command;
}

// A successful write's answer (PutResponse or DeleteResponse).
template <typename Response>
void FillWriteResponse(WriteReply reply, Response* out) {
  out->set_write_id(std::move(reply.write_id));
  out->set_context(std::move(reply.context));
  out->set_deduplicated(reply.deduplicated);
}

}  // namespace

absl::StatusOr<QuorumSpec> ToQuorumSpec(const v1::Quorum& quorum, absl::string_view name) {
  QuorumSpec spec;
  spec.count = quorum.count();
  if (quorum.kind() != v1::Quorum::COUNT && quorum.count() != 0) {
    // A count the node would ignore is a client mistake (it meant COUNT, or set the wrong
    // field); answering with another quorum than the one asked for would hide it.
    return absl::InvalidArgumentError(absl::StrCat(name, ": count ", quorum.count(),
                                                   " is only used with kind COUNT (kind is ",
                                                   v1::Quorum::Kind_Name(quorum.kind()), ")"));
  }
  switch (quorum.kind()) {
    case v1::Quorum::DEFAULT:
      spec.kind = QuorumSpec::Kind::kDefault;
      return spec;
    case v1::Quorum::COUNT:
      spec.kind = QuorumSpec::Kind::kCount;
      return spec;
    case v1::Quorum::QUORUM:
      spec.kind = QuorumSpec::Kind::kQuorum;
      return spec;
    case v1::Quorum::ALL:
      spec.kind = QuorumSpec::Kind::kAll;
      return spec;
    default:
      return absl::InvalidArgumentError(absl::StrCat(name, ": unknown quorum kind ",
                                                     static_cast<int>(quorum.kind()),
                                                     "; use DEFAULT, COUNT (1..N), QUORUM or ALL"));
  }
}

namespace {

// Starts a batch call of `n` items (PutBatch, GetBatch), named `method` in errors. Answers it at
// once, and returns {its reactor, false}, while `gate` is closed, for more than `limit` items, or
// for none. Otherwise returns {its reactor, true} with one result per item already in `response`:
// every result exists before any item can finish, so each item's callback fills only its own
// element, and the last one to finish answers the call.
template <typename Response>
std::pair<grpc::ServerUnaryReactor*, bool> OpenBatch(CallGate* gate, absl::string_view method,
                                                     int n, int limit, Response* response) {
  if (absl::Status open = gate->Check(); !open.ok()) return {FinishNow(gate, open), false};
  if (n > limit) {
    return {FinishNow(gate, absl::InvalidArgumentError(absl::StrCat(method, " of ", n,
                                                                    " items exceeds the limit of ",
                                                                    limit, " items per batch"))),
            false};
  }
  grpc::ServerUnaryReactor* reactor = gate->NewReactor();
  if (n == 0) {
    reactor->Finish(grpc::Status::OK);
    return {reactor, false};
  }
  for (int i = 0; i < n; ++i) response->add_results();
  return {reactor, true};
}

}  // namespace

KvService::KvService(Coordinator* coordinator, LocalStore* store, Executor* executor,
                     CallGate* gate)
    : coordinator_(coordinator), store_(store), executor_(executor), gate_(gate) {}

absl::Status KvService::Admit(absl::string_view key) const {
  KV_RETURN_IF_ERROR(gate_->Check());
  return store_->ValidateKey(key);
}

template <typename Response>
grpc::ServerUnaryReactor* KvService::Write(grpc::CallbackServerContext* context,
                                           WriteCommand command, const v1::Quorum& w,
                                           Response* response) {
  absl::StatusOr<QuorumSpec> spec = ToQuorumSpec(w, "w");
  absl::Status valid = gate_->Check();
  // The whole write (key, value, context and token sizes, the token's bytes), before a storage
  // that is behind sheds load: its RESOURCE_EXHAUSTED is retried, and a write that can never
  // succeed must not be.
  if (valid.ok()) valid = store_->ValidateWrite(command);
  if (valid.ok()) valid = spec.status();
  if (valid.ok() && !cluster_name_.empty()) valid = RefuseOtherCluster(context, cluster_name_);
  if (valid.ok()) valid = store_->AdmitWrites();
  if (!valid.ok()) return FinishNow(gate_, valid);
  // The write may be committed on this thread, with the writes that other calls queue meanwhile
  // (LocalStore::WriteAsync without a commit executor); `finish` may run before this returns.
  command.forwarded =
      context->client_metadata().count(kForwardedWriteMetadata) > 0 && peers_.Check(*context).ok();
  command.deadline = DeadlineOf(*context);
  // A forwarding node may have tried another node with it first.
  if (command.forwarded || !trust_first_attempts_) command.first_attempt = false;
  grpc::ServerUnaryReactor* reactor = gate_->NewReactor();
  auto finish = [reactor](const absl::Status& status) { reactor->Finish(ToGrpcStatus(status)); };
  coordinator_->Write(std::move(command), *spec,
                      [context, response, finish](absl::StatusOr<WriteReply> reply) {
                        if (!reply.ok()) {
                          if (IsWriteStored(reply.status())) {
                            context->AddTrailingMetadata(kWriteStoredMetadata, "1");
                          }
                          finish(reply.status());
                          return;
                        }
                        FillWriteResponse(*std::move(reply), response);
                        finish(absl::OkStatus());
                      });
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Put(grpc::CallbackServerContext* context,
                                         const v1::PutRequest* request, v1::PutResponse* response) {
  return Write(context, FromPutRequest(*request), request->w(), response);
}

grpc::ServerUnaryReactor* KvService::PutBatch(grpc::CallbackServerContext* context,
                                              const v1::PutBatchRequest* request,
                                              v1::PutBatchResponse* response) {
  const int puts = request->puts_size();
  const int n = puts + request->deletes_size();
  const std::pair<grpc::ServerUnaryReactor*, bool> batch =
      OpenBatch(gate_, "PutBatch", n, kMaxPutBatchItems, response);
  grpc::ServerUnaryReactor* const reactor = batch.first;
  if (!batch.second) return reactor;
  // The whole call, before any item is queued (and after the item count, which no retry
  // fixes): clients retry it, each item with its token.
  if (absl::Status admitted = store_->AdmitWrites(); !admitted.ok()) {
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  auto left = std::make_shared<std::atomic<int>>(n);
  auto finish_item = [reactor, left](v1::PutBatchResult* result, const absl::Status& status) {
    if (!status.ok()) {
      result->set_code(static_cast<int>(status.code()));
      result->set_message(std::string(status.message()));
      result->set_write_stored(IsWriteStored(status));
    }
    if (left->fetch_sub(1, std::memory_order_acq_rel) == 1) {
      reactor->Finish(grpc::Status::OK);
    }
  };
  // A token on two items of the batch is not a first attempt of either: both must look it up,
  // so that the second is refused as a reuse (with first_attempt each would record it unseen).
  std::map<absl::string_view, int> token_uses;
  for (const v1::PutRequest& put : request->puts()) {
    if (!put.idempotency_token().empty()) ++token_uses[put.idempotency_token()];
  }
  for (const v1::DeleteRequest& del : request->deletes()) {
    if (!del.idempotency_token().empty()) ++token_uses[del.idempotency_token()];
  }
  const absl::Time deadline = DeadlineOf(*context);
  // The items' writes share commit groups: none commits before all are queued.
  CommitQueue::Hold hold = store_->HoldCommits();
  for (int i = 0; i < n; ++i) {
    const bool is_put = i < puts;
    const v1::Quorum& w = is_put ? request->puts(i).w() : request->deletes(i - puts).w();
    WriteCommand command =
        is_put ? FromPutRequest(request->puts(i)) : FromDeleteRequest(request->deletes(i - puts));
    if (!trust_first_attempts_) command.first_attempt = false;
    command.deadline = deadline;
    if (command.first_attempt) {
      auto uses = token_uses.find(command.idempotency_token);
      if (uses != token_uses.end() && uses->second > 1) command.first_attempt = false;
    }
    v1::PutBatchResult* result = response->mutable_results(i);
    absl::StatusOr<QuorumSpec> spec = ToQuorumSpec(w, "w");
    absl::Status valid = store_->ValidateKey(command.key);
    if (valid.ok()) valid = spec.status();
    if (!valid.ok()) {
      finish_item(result, valid);
      continue;
    }
    coordinator_->Write(std::move(command), *spec,
                        [result, is_put, finish_item](absl::StatusOr<WriteReply> reply) {
                          if (!reply.ok()) {
                            finish_item(result, reply.status());
                            return;
                          }
                          if (is_put) {
                            FillWriteResponse(*std::move(reply), result->mutable_response());
                          } else {
                            FillWriteResponse(*std::move(reply), result->mutable_delete_response());
                          }
                          finish_item(result, absl::OkStatus());
                        });
  }
  return reactor;
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* context,
                                            const v1::DeleteRequest* request,
                                            v1::DeleteResponse* response) {
  return Write(context, FromDeleteRequest(*request), request->w(), response);
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* /*context*/,
                                         const v1::GetRequest* request, v1::GetResponse* response) {
  absl::StatusOr<QuorumSpec> spec = ToQuorumSpec(request->r(), "r");
  absl::Status valid = Admit(request->key());
  if (valid.ok()) valid = spec.status();
  if (!valid.ok()) return FinishNow(gate_, valid);
  // Most reads are answered here: this node's replica alone (R=1), from memory, without a
  // thread hop. Anything else goes through the coordinator, which reads storage on its executor,
  // not on this thread.
  SiblingSet record;
  if (coordinator_->TryReadFromMemory(request->key(), *spec, &record)) {
    return FinishNow(gate_, FillGetResponse(std::move(record), request->key(), *store_, response));
  }
  grpc::ServerUnaryReactor* reactor = gate_->NewReactor();
  coordinator_->Read(
      request->key(), *spec,
      [reactor, request, response, store = store_](absl::StatusOr<SiblingSet> rec) {
        // The request lives until the call is finished.
        reactor->Finish(ToGrpcStatus(
            rec.ok() ? FillGetResponse(*std::move(rec), request->key(), *store, response)
                     : rec.status()));
      });
  return reactor;
}

// The GetBatch items read through the coordinator (R above 1, or a record not in memory), at most
// kGetBatchReadsInFlight at a time: each read holds a record until its item is answered, and an
// item is left unread (sent alone) once the batch has read more than kGetBatchWastedBytes for
// nothing, which only items not started yet can be spared, and once the call is cancelled or
// past its deadline (a batch whose reads each wait out a peer's timeout takes a while). Reads
// are started by Pump, which
// runs on one thread at a time: a read answered at once (on the starting thread) asks the
// thread already pumping for the next one rather than starting it from within its callback.
class KvService::BatchReads : public std::enable_shared_from_this<BatchReads> {
 public:
  struct Item {
    int index;  // in the request's gets and the response's results
    QuorumSpec r;
  };
  using FinishItem = std::function<void(v1::GetBatchResult*, const absl::Status&)>;

  BatchReads(Coordinator* coordinator, const LocalStore* store,
             grpc::CallbackServerContext* context, const v1::GetBatchRequest* request,
             v1::GetBatchResponse* response, std::vector<Item> items,
             std::shared_ptr<std::atomic<size_t>> wasted_bytes, FinishItem finish_item,
             std::function<void()> item_done)
      : coordinator_(coordinator),
        store_(store),
        context_(context),
        deadline_(DeadlineOf(*context)),
        request_(request),
        response_(response),
        items_(std::move(items)),
        wasted_bytes_(std::move(wasted_bytes)),
        finish_item_(std::move(finish_item)),
        item_done_(std::move(item_done)) {}

  void Start() {
    for (size_t i = 0; i < std::min(items_.size(), kGetBatchReadsInFlight); ++i) Pump();
  }

 private:
  // Starts the next item, or has the thread pumping already do so.
  void Pump() {
    if (pumps_.fetch_add(1, std::memory_order_acq_rel) > 0) return;
    do {
      StartNext();
    } while (pumps_.fetch_sub(1, std::memory_order_acq_rel) > 1);
  }

  // Starts the next item's read; the items after it that are left unread are answered here.
  // Touches the request and response only for an item not answered yet: the call is finished
  // (and they are freed) once the last item is.
  void StartNext() {
    for (;;) {
      const size_t k = next_.fetch_add(1, std::memory_order_relaxed);
      if (k >= items_.size()) return;
      const Item& item = items_[k];
      v1::GetBatchResult* result = response_->mutable_results(item.index);
      if (wasted_bytes_->load(std::memory_order_relaxed) > kGetBatchWastedBytes) {
        SendAlone(result, /*read=*/false);
        item_done_();
        continue;
      }
      // No one waits for the answer any more: the items left are not read.
      if (context_->IsCancelled() || SteadyNow() >= deadline_) {
        finish_item_(result, absl::DeadlineExceededError(
                                 "not read: the call was cancelled or its deadline passed "
                                 "before this item's turn"));
        continue;
      }
      const v1::GetRequest& get = request_->gets(item.index);
      coordinator_->Read(get.key(), item.r,
                         [self = shared_from_this(), result, &get](absl::StatusOr<SiblingSet> rec) {
                           self->finish_item_(
                               result,
                               rec.ok() ? FillGetResponse(*std::move(rec), get.key(), *self->store_,
                                                          result->mutable_response())
                                        : rec.status());
                           self->Pump();
                         });
      return;
    }
  }

  Coordinator* const coordinator_;
  const LocalStore* const store_;
  // Valid while an item is not answered: the call is finished once the last one is.
  grpc::CallbackServerContext* const context_;
  const absl::Time deadline_;  // the call's, on SteadyNow's scale
  const v1::GetBatchRequest* const request_;
  v1::GetBatchResponse* const response_;
  const std::vector<Item> items_;
  const std::shared_ptr<std::atomic<size_t>> wasted_bytes_;
  const FinishItem finish_item_;
  const std::function<void()> item_done_;
  std::atomic<size_t> next_{0};   // the next item of items_ to start
  std::atomic<size_t> pumps_{0};  // Pump calls not yet served
};

grpc::ServerUnaryReactor* KvService::GetBatch(grpc::CallbackServerContext* context,
                                              const v1::GetBatchRequest* request,
                                              v1::GetBatchResponse* response) {
  const int n = request->gets_size();
  const std::pair<grpc::ServerUnaryReactor*, bool> batch =
      OpenBatch(gate_, "GetBatch", n, kMaxGetBatchItems, response);
  grpc::ServerUnaryReactor* const reactor = batch.first;
  if (!batch.second) return reactor;
  auto left = std::make_shared<std::atomic<int>>(n);
  auto answered_bytes = std::make_shared<std::atomic<size_t>>(0);
  // Bytes read and then left out for want of room. Past kGetBatchWastedBytes the items not
  // started by then are not read at all: a small request naming many large records would
  // otherwise cost every read (and hold every record) for one item's answer.
  auto wasted_bytes = std::make_shared<std::atomic<size_t>>(0);
  // The last item to finish answers the call.
  auto item_done = [reactor, left] {
    if (left->fetch_sub(1, std::memory_order_acq_rel) == 1) reactor->Finish(grpc::Status::OK);
  };
  auto finish_item = [item_done, answered_bytes, wasted_bytes](v1::GetBatchResult* result,
                                                               const absl::Status& status) {
    if (!status.ok()) {
      result->clear_response();
      result->set_code(static_cast<int>(status.code()));
      result->set_message(std::string(status.message()));
    } else {
      const size_t bytes = result->response().ByteSizeLong();
      const size_t before = answered_bytes->fetch_add(bytes, std::memory_order_relaxed);
      if (before > 0 && before + bytes > kGetBatchAnswerBytes) {
        answered_bytes->fetch_sub(bytes, std::memory_order_relaxed);
        wasted_bytes->fetch_add(bytes, std::memory_order_relaxed);
        SendAlone(result, /*read=*/true);
      }
    }
    item_done();
  };
  // The items read through the coordinator, started once the others are answered.
  std::vector<BatchReads::Item> reads;
  for (int i = 0; i < n; ++i) {
    const v1::GetRequest& get = request->gets(i);
    v1::GetBatchResult* result = response->mutable_results(i);
    if (wasted_bytes->load(std::memory_order_relaxed) > kGetBatchWastedBytes) {
      SendAlone(result, /*read=*/false);
      item_done();
      continue;
    }
    absl::StatusOr<QuorumSpec> spec = ToQuorumSpec(get.r(), "r");
    absl::Status valid = store_->ValidateKey(get.key());
    if (valid.ok()) valid = spec.status();
    if (!valid.ok()) {
      finish_item(result, valid);
      continue;
    }
    SiblingSet record;
    if (coordinator_->TryReadFromMemory(get.key(), *spec, &record)) {
      finish_item(result, FillGetResponse(std::move(record), get.key(), *store_,
                                          result->mutable_response()));
      continue;
    }
    reads.push_back(BatchReads::Item{i, *spec});
  }
  if (!reads.empty()) {
    std::make_shared<BatchReads>(coordinator_, store_, context, request, response, std::move(reads),
                                 std::move(wasted_bytes), std::move(finish_item),
                                 std::move(item_done))
        ->Start();
  }
  return reactor;
}

grpc::ServerUnaryReactor* KvService::List(grpc::CallbackServerContext* context,
                                          const v1::ListRequest* request,
                                          v1::ListResponse* response) {
  absl::Status valid = gate_->Check();
  // Checked here, before every member is asked: a member's error (one that is down answers
  // UNAVAILABLE) could otherwise be the answer to a malformed request.
  if (valid.ok()) valid = store_->ValidateList(request->prefix(), request->page_token());
  if (!valid.ok()) return FinishNow(gate_, valid);
  return StartOnExecutor(context, gate_, executor_, [this, request, response](auto finish) {
    coordinator_->List(request->prefix(), request->page_token(), request->limit(),
                       [response, finish](absl::StatusOr<ListPage> page) {
                         if (!page.ok()) {
                           finish(page.status());
                           return;
                         }
                         for (std::string& key : page->keys) response->add_keys(std::move(key));
                         response->set_next_page_token(std::move(page->next_page_token));
                         finish(absl::OkStatus());
                       });
  });
}

grpc::ServerUnaryReactor* KvService::DescribeKey(grpc::CallbackServerContext* context,
                                                 const v1::DescribeKeyRequest* request,
                                                 v1::DescribeKeyResponse* response) {
  absl::Status valid = Admit(request->key());
  if (!valid.ok()) return FinishNow(gate_, valid);
  const absl::Time answer_by = DeadlineOf(*context);
  return StartOnExecutor(context, gate_, executor_,
                         [this, request, response, answer_by](auto finish) {
                           coordinator_->DescribeKey(
                               request->key(), answer_by,
                               [request, response, finish](std::vector<ReplicaRecordView> views) {
                                 response->set_key(request->key());
                                 for (const ReplicaRecordView& view : views) {
                                   v1::ReplicaView* out = response->add_replicas();
                                   out->set_node_id(view.member.id);
                                   out->set_reachable(view.status.ok());
                                   if (!view.status.ok())
                                     out->set_error(std::string(view.status.message()));
                                   out->set_has_record(view.record.has_value());
                                   if (view.record) {
                                     for (const Sibling& sibling : view.record->siblings()) {
                                       ToProto(sibling, out->add_siblings());
                                     }
                                     out->set_context(view.record->context().ToString());
                                   }
                                 }
                                 response->set_converged(Converged(views));
                                 finish(absl::OkStatus());
                               });
                         });
}

grpc::ServerUnaryReactor* KvService::DescribeWrite(grpc::CallbackServerContext* context,
                                                   const v1::DescribeWriteRequest* request,
                                                   v1::DescribeWriteResponse* response) {
  absl::Status valid = gate_->Check();
  if (!valid.ok()) return FinishNow(gate_, valid);
  const absl::Time answer_by = DeadlineOf(*context);
  return StartOnExecutor(
      context, gate_, executor_, [this, request, response, answer_by](auto finish) {
        coordinator_->DescribeWrite(
            request->write_id(), answer_by, [response, finish](absl::StatusOr<WriteStatus> status) {
              if (!status.ok()) {
                finish(status.status());
                return;
              }
              response->set_state(status->state == WriteStatus::State::kReplicated
                                      ? v1::DescribeWriteResponse::REPLICATED
                                      : v1::DescribeWriteResponse::PENDING);
              response->set_key(status->key);
              response->set_dot(status->dot.ToString());
              for (const WriteStatus::Replica& replica : status->replicas) {
                v1::ReplicaWriteState* out = response->add_replicas();
                out->set_node_id(replica.member.id);
                out->set_applied(replica.applied);
                out->set_reachable(replica.status.ok());
                if (!replica.status.ok()) out->set_error(std::string(replica.status.message()));
              }
              finish(absl::OkStatus());
            });
      });
}

}  // namespace kv

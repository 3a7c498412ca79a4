#include "client/kv_client.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/kv_client_convert.h"
#include "client/kv_client_options.h"
#include "client/kv_client_retrying_call.h"
#include "client/kv_client_timer.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "kv.grpc.pb.h"
#include "kv.pb.h"

namespace kv {

using client_internal::EndpointPolicy;
using client_internal::FromGrpcStatus;

namespace {

// Runs an asynchronous call and waits for its callback: the one code path of synchronous calls.
template <typename Result, typename StartFn>
Result WaitFor(StartFn start) {
  absl::Notification finished;
  Result result;
  start([&](Result r) {
    result = std::move(r);
    finished.Notify();
  });
  finished.WaitForNotification();
  return result;
}

}  // namespace

std::string NewIdempotencyToken() {
  thread_local absl::BitGen rng;
  const uint64_t high = absl::Uniform<uint64_t>(rng);
  const uint64_t low = absl::Uniform<uint64_t>(rng);
  return absl::StrCat(absl::Hex(high, absl::kZeroPad16), absl::Hex(low, absl::kZeroPad16));
}

struct Client::Impl {
  // Issues one attempt of a method of a service (Stub is v1::KV::Stub or v1::Admin::Stub).
  template <typename Stub, typename Request, typename Response>
  using Method = void (*)(Stub* stub, grpc::ClientContext* context, const Request* request,
                          Response* response, std::function<void(grpc::Status)> on_done);

  explicit Impl(ClientOptions client_options)
      : options(std::move(client_options)), budget(options.retry) {
    for (const std::string& endpoint : options.endpoints) {
      std::shared_ptr<grpc::Channel> channel = options.channel_factory
                                                   ? options.channel_factory(endpoint)
                                                   : client_internal::DefaultChannel(endpoint);
      kv_stubs.push_back(v1::KV::NewStub(channel));
      admin_stubs.push_back(v1::Admin::NewStub(channel));
      channels.push_back(std::move(channel));
    }
    env.options = &options.retry;
    env.budget = &budget;
    env.timer = &timer;
    env.attempt_timeout = options.attempt_timeout;
    env.backoff = [this](int retry) {
      absl::MutexLock lock(&rng_mu);
      return JitteredBackoff(options.retry, retry, rng);
    };
    env.failover = [this](size_t from) { return PickEndpoint(from + 1); };
    env.endpoint_name = [this](size_t endpoint) { return options.endpoints[endpoint]; };
  }

  ~Impl() {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* pending) { return *pending == 0; }, &pending));
  }

  // The first endpoint at or after `start` (cyclically) whose channel is not known to be down;
  // `start` itself if all are down.
  size_t PickEndpoint(size_t start) const {
    const size_t n = channels.size();
    for (size_t i = 0; i < n; ++i) {
      const size_t endpoint = (start + i) % n;
      if (channels[endpoint]->GetState(/*try_to_connect=*/false) !=
          GRPC_CHANNEL_TRANSIENT_FAILURE) {
        return endpoint;
      }
    }
    return start % n;
  }

  // The first attempt of a call that may go anywhere: round robin.
  size_t NextEndpoint() { return PickEndpoint(next_endpoint++); }

  template <typename Stub>
  Stub* StubFor(size_t endpoint) const {
    if constexpr (std::is_same_v<Stub, v1::KV::Stub>) {
      return kv_stubs[endpoint].get();
    } else {
      return admin_stubs[endpoint].get();
    }
  }

  absl::StatusOr<absl::Time> Deadline(const CallOptions& call_options) const {
    if (call_options.deadline < absl::ZeroDuration()) {
      return absl::InvalidArgumentError("CallOptions::deadline must be >= 0 (0 = client default)");
    }
    const absl::Duration timeout = call_options.deadline == absl::ZeroDuration()
                                       ? options.call_deadline
                                       : call_options.deadline;
    return absl::Now() + timeout;
  }

  // Counts a call as pending and wraps its callback so that the count drops only after the
  // callback (and everything it captured) is gone.
  template <typename Result>
  std::function<void(Result)> BeginCall(std::function<void(Result)> done) {
    {
      absl::MutexLock lock(&mu);
      ++pending;
    }
    return [this, done = std::move(done)](Result result) mutable {
      {
        std::function<void(Result)> callback = std::move(done);
        callback(std::move(result));
      }
      absl::MutexLock lock(&mu);
      --pending;
    };
  }

  // Runs `finish(status)` on the timer thread: callbacks never run on the caller's thread.
  template <typename Result>
  void FailLater(absl::Status status, std::function<void(Result)> finish) {
    timer.RunAt(absl::Now(), [status = std::move(status), finish = std::move(finish)]() mutable {
      finish(std::move(status));
    });
  }

  // A call with retries and the size check, whose first attempt goes to `first_endpoint` and
  // whose retries move as `policy` says; `convert` turns the response into the result.
  template <typename Stub, typename Request, typename Response, typename Result>
  void Call(const CallOptions& call_options, size_t first_endpoint, EndpointPolicy policy,
            Request request, Method<Stub, Request, Response> method, Result (*convert)(Response*),
            std::function<void(absl::StatusOr<Result>)> done) {
    std::function<void(absl::StatusOr<Result>)> finish = BeginCall(std::move(done));
    if (first_endpoint >= channels.size()) {
      return FailLater(absl::InvalidArgumentError(absl::StrCat("endpoint index ", first_endpoint,
                                                               " is out of range; the client has ",
                                                               channels.size(), " endpoints")),
                       std::move(finish));
    }
    absl::StatusOr<absl::Time> deadline = Deadline(call_options);
    if (!deadline.ok()) return FailLater(deadline.status(), std::move(finish));
    const size_t request_bytes = request.ByteSizeLong();
    if (request_bytes > options.max_request_bytes) {
      return FailLater(absl::InvalidArgumentError(absl::StrCat(
                           "request of ", request_bytes, " bytes exceeds the client's limit of ",
                           options.max_request_bytes,
                           " bytes (ClientOptions::max_request_bytes); nothing was sent")),
                       std::move(finish));
    }
    struct State {
      Request request;
      Response response;
    };
    auto state = std::make_shared<State>();
    state->request = std::move(request);
    auto start_attempt = [this, state, method](size_t endpoint, grpc::ClientContext* context,
                                               std::function<void(grpc::Status)> on_done) {
      state->response.Clear();
      method(StubFor<Stub>(endpoint), context, &state->request, &state->response,
             std::move(on_done));
    };
    auto call_done = [state, convert, finish = std::move(finish)](absl::Status status,
                                                                  int /*attempts*/) {
      if (!status.ok()) return finish(std::move(status));
      finish(convert(&state->response));
    };
    client_internal::StartRetryingCall(env, *deadline, first_endpoint, policy,
                                       std::move(start_attempt), std::move(call_done));
  }

  absl::StatusOr<ClusterStatusResult> ClusterStatus(size_t first_endpoint, EndpointPolicy policy,
                                                    const CallOptions& call_options) {
    return WaitFor<absl::StatusOr<ClusterStatusResult>>([&](auto done) {
      Call<v1::Admin::Stub, v1::ClusterStatusRequest, v1::ClusterStatusResponse,
           ClusterStatusResult>(
          call_options, first_endpoint, policy, v1::ClusterStatusRequest(),
          [](v1::Admin::Stub* stub, grpc::ClientContext* context,
             const v1::ClusterStatusRequest* req, v1::ClusterStatusResponse* resp,
             std::function<void(grpc::Status)> on_done) {
            stub->async()->ClusterStatus(context, req, resp, std::move(on_done));
          },
          &client_internal::FromClusterStatusResponse, std::move(done));
    });
  }

  // A synchronous admin call to the first endpoint not known to be down, with failover.
  template <typename Request, typename Response, typename Result>
  absl::StatusOr<Result> AdminCall(const CallOptions& call_options, Request request,
                                   Method<v1::Admin::Stub, Request, Response> method,
                                   Result (*convert)(Response*)) {
    return WaitFor<absl::StatusOr<Result>>([&](auto done) {
      Call<v1::Admin::Stub, Request, Response, Result>(
          call_options, PickEndpoint(0), EndpointPolicy::kFailover, std::move(request),
          std::move(method), convert, std::move(done));
    });
  }

  void Ping(size_t endpoint, std::function<void(absl::Status)> done) {
    std::function<void(absl::Status)> finish = BeginCall(std::move(done));
    if (endpoint >= channels.size()) {
      return FailLater(absl::InvalidArgumentError(absl::StrCat(
                           "PingAsync: endpoint index ", endpoint,
                           " is out of range; the client has ", channels.size(), " endpoints")),
                       std::move(finish));
    }
    struct State {
      std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
      v1::PingRequest request;
      v1::PingResponse response;
    };
    auto state = std::make_shared<State>();
    state->context->set_deadline(absl::ToChronoTime(absl::Now() + options.call_deadline));
    admin_stubs[endpoint]->async()->Ping(
        state->context.get(), &state->request, &state->response,
        [state, finish = std::move(finish)](grpc::Status status) {
          state->context.reset();  // before the call counts as done: see RetryingCall
          finish(FromGrpcStatus(status));
        });
  }

  const ClientOptions options;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::KV::Stub>> kv_stubs;
  std::vector<std::unique_ptr<v1::Admin::Stub>> admin_stubs;
  RetryBudget budget;
  std::atomic<size_t> next_endpoint{0};  // round-robin start of calls

  absl::Mutex rng_mu;
  absl::BitGen rng ABSL_GUARDED_BY(rng_mu);

  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;  // calls whose callback has not finished

  client_internal::TimerThread timer;
  client_internal::RetryEnv env;
};

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  absl::Status valid = client_internal::ValidateOptions(options);
  if (!valid.ok()) return valid;
  auto impl = std::make_unique<Impl>(std::move(options));
  for (size_t i = 0; i < impl->channels.size(); ++i) {
    if (impl->channels[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ClientOptions::channel_factory returned no channel for ", impl->options.endpoints[i]));
    }
  }
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const ClientOptions& Client::options() const { return impl_->options; }

void Client::PutAsync(std::string key, std::string value, WriteOptions options,
                      std::function<void(absl::StatusOr<WriteResult>)> done) {
  v1::PutRequest request;
  request.set_key(std::move(key));
  request.set_value(std::move(value));
  request.set_context(std::move(options.context));
  // One token per logical call: every attempt sends this same request.
  request.set_idempotency_token(options.idempotency_token.empty()
                                    ? NewIdempotencyToken()
                                    : std::move(options.idempotency_token));
  client_internal::ToProto(options.w, request.mutable_w());
  impl_->Call<v1::KV::Stub, v1::PutRequest, v1::PutResponse, WriteResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kWrite, std::move(request),
      [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::PutRequest* req,
         v1::PutResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->Put(context, req, resp, std::move(on_done));
      },
      &client_internal::FromPutResponse, std::move(done));
}

void Client::GetAsync(std::string key, ReadOptions options,
                      std::function<void(absl::StatusOr<GetResult>)> done) {
  v1::GetRequest request;
  request.set_key(std::move(key));
  client_internal::ToProto(options.r, request.mutable_r());
  impl_->Call<v1::KV::Stub, v1::GetRequest, v1::GetResponse, GetResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kFailover, std::move(request),
      [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::GetRequest* req,
         v1::GetResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->Get(context, req, resp, std::move(on_done));
      },
      &client_internal::FromGetResponse, std::move(done));
}

void Client::DeleteAsync(std::string key, WriteOptions options,
                         std::function<void(absl::StatusOr<WriteResult>)> done) {
  v1::DeleteRequest request;
  request.set_key(std::move(key));
  request.set_context(std::move(options.context));
  request.set_idempotency_token(options.idempotency_token.empty()
                                    ? NewIdempotencyToken()
                                    : std::move(options.idempotency_token));
  client_internal::ToProto(options.w, request.mutable_w());
  impl_->Call<v1::KV::Stub, v1::DeleteRequest, v1::DeleteResponse, WriteResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kWrite, std::move(request),
      [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::DeleteRequest* req,
         v1::DeleteResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->Delete(context, req, resp, std::move(on_done));
      },
      &client_internal::FromDeleteResponse, std::move(done));
}

void Client::ListAsync(std::string prefix, std::string page_token, uint32_t limit,
                       CallOptions options, std::function<void(absl::StatusOr<ListResult>)> done) {
  v1::ListRequest request;
  request.set_prefix(std::move(prefix));
  request.set_page_token(std::move(page_token));
  request.set_limit(limit);
  impl_->Call<v1::KV::Stub, v1::ListRequest, v1::ListResponse, ListResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kFailover, std::move(request),
      [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::ListRequest* req,
         v1::ListResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->List(context, req, resp, std::move(on_done));
      },
      &client_internal::FromListResponse, std::move(done));
}

void Client::DescribeKeyAsync(std::string key, CallOptions options,
                              std::function<void(absl::StatusOr<DescribeKeyResult>)> done) {
  v1::DescribeKeyRequest request;
  request.set_key(std::move(key));
  impl_->Call<v1::KV::Stub, v1::DescribeKeyRequest, v1::DescribeKeyResponse, DescribeKeyResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kFailover, std::move(request),
      [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::DescribeKeyRequest* req,
         v1::DescribeKeyResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->DescribeKey(context, req, resp, std::move(on_done));
      },
      &client_internal::FromDescribeKeyResponse, std::move(done));
}

void Client::DescribeWriteAsync(std::string write_id, CallOptions options,
                                std::function<void(absl::StatusOr<DescribeWriteResult>)> done) {
  v1::DescribeWriteRequest request;
  request.set_write_id(std::move(write_id));
  impl_->Call<v1::KV::Stub, v1::DescribeWriteRequest, v1::DescribeWriteResponse,
              DescribeWriteResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kFailover, std::move(request),
      [](v1::KV::Stub* stub, grpc::ClientContext* context, const v1::DescribeWriteRequest* req,
         v1::DescribeWriteResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->DescribeWrite(context, req, resp, std::move(on_done));
      },
      &client_internal::FromDescribeWriteResponse, std::move(done));
}

void Client::PingAsync(size_t endpoint_index, std::function<void(absl::Status)> done) {
  impl_->Ping(endpoint_index, std::move(done));
}

absl::StatusOr<WriteResult> Client::Put(absl::string_view key, absl::string_view value,
                                        const WriteOptions& options) {
  return WaitFor<absl::StatusOr<WriteResult>>(
      [&](auto done) { PutAsync(std::string(key), std::string(value), options, std::move(done)); });
}

absl::StatusOr<GetResult> Client::Get(absl::string_view key, const ReadOptions& options) {
  return WaitFor<absl::StatusOr<GetResult>>(
      [&](auto done) { GetAsync(std::string(key), options, std::move(done)); });
}

absl::StatusOr<WriteResult> Client::Delete(absl::string_view key, const WriteOptions& options) {
  return WaitFor<absl::StatusOr<WriteResult>>(
      [&](auto done) { DeleteAsync(std::string(key), options, std::move(done)); });
}

absl::StatusOr<ListResult> Client::List(absl::string_view prefix, absl::string_view page_token,
                                        uint32_t limit, const CallOptions& options) {
  return WaitFor<absl::StatusOr<ListResult>>([&](auto done) {
    ListAsync(std::string(prefix), std::string(page_token), limit, options, std::move(done));
  });
}

absl::StatusOr<DescribeKeyResult> Client::DescribeKey(absl::string_view key,
                                                      const CallOptions& options) {
  return WaitFor<absl::StatusOr<DescribeKeyResult>>(
      [&](auto done) { DescribeKeyAsync(std::string(key), options, std::move(done)); });
}

absl::StatusOr<DescribeWriteResult> Client::DescribeWrite(absl::string_view write_id,
                                                          const CallOptions& options) {
  return WaitFor<absl::StatusOr<DescribeWriteResult>>(
      [&](auto done) { DescribeWriteAsync(std::string(write_id), options, std::move(done)); });
}

absl::StatusOr<ClusterStatusResult> Client::ClusterStatus(const CallOptions& options) {
  return impl_->ClusterStatus(impl_->PickEndpoint(0), EndpointPolicy::kFailover, options);
}

absl::StatusOr<ClusterStatusResult> Client::ClusterStatusOf(size_t endpoint_index,
                                                            const CallOptions& options) {
  return impl_->ClusterStatus(endpoint_index, EndpointPolicy::kPinned, options);
}

absl::StatusOr<RepairStarted> Client::StartRepair(absl::string_view peer_id,
                                                  const CallOptions& options) {
  v1::StartRepairRequest request;
  request.set_peer_id(std::string(peer_id));
  return impl_->AdminCall<v1::StartRepairRequest, v1::StartRepairResponse, RepairStarted>(
      options, std::move(request),
      [](v1::Admin::Stub* stub, grpc::ClientContext* context, const v1::StartRepairRequest* req,
         v1::StartRepairResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->StartRepair(context, req, resp, std::move(on_done));
      },
      &client_internal::FromStartRepairResponse);
}

absl::StatusOr<MembershipPlan> Client::ChangeMembership(bool join, absl::string_view node_id,
                                                        bool commit,
                                                        uint64_t expected_layout_version,
                                                        const CallOptions& options) {
  v1::ChangeMembershipRequest request;
  request.set_action(join ? v1::ChangeMembershipRequest::JOIN : v1::ChangeMembershipRequest::LEAVE);
  request.set_node_id(std::string(node_id));
  request.set_commit(commit);
  request.set_expected_layout_version(expected_layout_version);
  return impl_
      ->AdminCall<v1::ChangeMembershipRequest, v1::ChangeMembershipResponse, MembershipPlan>(
          options, std::move(request),
          [](v1::Admin::Stub* stub, grpc::ClientContext* context,
             const v1::ChangeMembershipRequest* req, v1::ChangeMembershipResponse* resp,
             std::function<void(grpc::Status)> on_done) {
            stub->async()->ChangeMembership(context, req, resp, std::move(on_done));
          },
          &client_internal::FromChangeMembershipResponse);
}

absl::StatusOr<OperationStatus> Client::GetOperation(absl::string_view operation_id,
                                                     const CallOptions& options) {
  v1::GetOperationRequest request;
  request.set_operation_id(std::string(operation_id));
  return impl_->AdminCall<v1::GetOperationRequest, v1::GetOperationResponse, OperationStatus>(
      options, std::move(request),
      [](v1::Admin::Stub* stub, grpc::ClientContext* context, const v1::GetOperationRequest* req,
         v1::GetOperationResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->GetOperation(context, req, resp, std::move(on_done));
      },
      &client_internal::FromGetOperationResponse);
}

absl::StatusOr<std::vector<OperationStatus>> Client::ListOperations(const CallOptions& options) {
  return impl_->AdminCall<v1::ListOperationsRequest, v1::ListOperationsResponse,
                          std::vector<OperationStatus>>(
      options, v1::ListOperationsRequest(),
      [](v1::Admin::Stub* stub, grpc::ClientContext* context, const v1::ListOperationsRequest* req,
         v1::ListOperationsResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub->async()->ListOperations(context, req, resp, std::move(on_done));
      },
      &client_internal::FromListOperationsResponse);
}

absl::StatusOr<AntiEntropyStatusResult> Client::AntiEntropyStatus(bool include_ranges,
                                                                  const CallOptions& options) {
  v1::AntiEntropyStatusRequest request;
  request.set_include_ranges(include_ranges);
  return impl_->AdminCall<v1::AntiEntropyStatusRequest, v1::AntiEntropyStatusResponse,
                          AntiEntropyStatusResult>(
      options, std::move(request),
      [](v1::Admin::Stub* stub, grpc::ClientContext* context,
         const v1::AntiEntropyStatusRequest* req, v1::AntiEntropyStatusResponse* resp,
         std::function<void(grpc::Status)> on_done) {
        stub->async()->AntiEntropyStatus(context, req, resp, std::move(on_done));
      },
      &client_internal::FromAntiEntropyStatusResponse);
}

const char* OperationStateName(OperationStatus::State state) {
  switch (state) {
    case OperationStatus::State::kRunning:
      return "RUNNING";
    case OperationStatus::State::kSucceeded:
      return "SUCCEEDED";
    case OperationStatus::State::kFailed:
      return "FAILED";
    case OperationStatus::State::kUnknown:
      break;
  }
  return "UNKNOWN";
}

absl::StatusOr<GetResult> Client::GetResolved(absl::string_view key, const ReadOptions& options) {
  if (!impl_->options.merger) {
    return absl::FailedPreconditionError(
        "GetResolved needs a sibling merger: set ClientOptions::merger when creating the Client");
  }
  absl::StatusOr<GetResult> got = Get(key, options);
  if (!got.ok() || got->siblings.size() == 1) return got;
  if (got->siblings.empty()) {
    return absl::NotFoundError(absl::StrCat("key has no live version: ", key));
  }
  std::vector<std::string> values;
  values.reserve(got->siblings.size());
  int64_t newest_micros = 0;
  for (Version& sibling : got->siblings) {
    newest_micros = std::max(newest_micros, sibling.timestamp_micros);
    values.push_back(std::move(sibling.value));
  }
  Version merged;
  merged.value = impl_->options.merger(values);
  merged.timestamp_micros = newest_micros;
  GetResult result;
  result.siblings.push_back(std::move(merged));
  result.context = std::move(got->context);
  return result;
}

}  // namespace kv

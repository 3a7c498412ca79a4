// Internal to kv_client: the state a Client shares across its calls (channels, stubs, retry
// environment, the count of calls in flight) and the generic asynchronous call with retries that
// every method of client/kv_client.h goes through. Not installed.
#ifndef KV_CLIENT_KV_CLIENT_IMPL_H_
#define KV_CLIENT_KV_CLIENT_IMPL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
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
#include "client/kv_client.h"
#include "client/kv_client_coalescer.h"
#include "client/kv_client_convert.h"
#include "client/kv_client_options.h"
#include "client/kv_client_retrying_call.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "kv.grpc.pb.h"
#include "kv.pb.h"
#include "storage/steady_timer.h"

namespace kv {
namespace client_internal {

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

}  // namespace client_internal

struct Client::Impl {
  // Issues one attempt of a method of a service (Stub is v1::KV::Stub or v1::Admin::Stub).
  template <typename Stub, typename Request, typename Response>
  using Method =
      std::function<void(Stub* stub, grpc::ClientContext* context, const Request* request,
                         Response* response, std::function<void(grpc::Status)> on_done)>;

  // `credentials`: for the channels made without ClientOptions::channel_factory.
  Impl(ClientOptions client_options, const std::shared_ptr<grpc::ChannelCredentials>& credentials)
      : options(std::move(client_options)), budget(options.retry) {
    for (const std::string& endpoint : options.endpoints) {
      std::shared_ptr<grpc::Channel> channel =
          options.channel_factory ? options.channel_factory(endpoint)
                                  : client_internal::DefaultChannel(endpoint, credentials, options);
      // A null channel (a channel_factory's failure) gets no stubs: Create refuses the client
      // before any call could use them.
      kv_stubs.push_back(channel == nullptr ? nullptr : v1::KV::NewStub(channel));
      admin_stubs.push_back(channel == nullptr ? nullptr : v1::Admin::NewStub(channel));
      channels.push_back(std::move(channel));
    }
    std::vector<v1::KV::Stub*> stubs;
    for (const auto& stub : kv_stubs) stubs.push_back(stub.get());
    coalescer = std::make_unique<client_internal::Coalescer>(
        options.put_coalescing, options.get_coalescing, std::move(stubs), &timer, &budget);
    env.options = &options.retry;
    env.budget = &budget;
    env.timer = &timer;
    env.attempt_timeout = options.attempt_timeout;
    env.backoff = [this](int retry, absl::Duration limit) {
      absl::MutexLock lock(&rng_mu);
      return JitteredBackoff(options.retry, retry, rng, limit);
    };
    env.failover = [this](size_t from) { return PickEndpoint(from + 1); };
    env.endpoint_name = [this](size_t endpoint) { return options.endpoints[endpoint]; };
    env.endpoint_count = channels.size();
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
    return SteadyNow() + timeout;
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
    timer.RunAfter(absl::ZeroDuration(),
                   [status = std::move(status), finish = std::move(finish)]() mutable {
                     finish(std::move(status));
                   });
  }

  // A call with retries and the size check, whose first attempt goes to `first_endpoint` and
  // whose retries move as `policy` says; `convert` turns the response into the result.
  template <typename Stub, typename Request, typename Response, typename Result>
  void Call(const CallOptions& call_options, size_t first_endpoint,
            client_internal::EndpointPolicy policy, Request request,
            Method<Stub, Request, Response> method, Result (*convert)(Response*),
            std::function<void(absl::StatusOr<Result>)> done, size_t* answered_by = nullptr) {
    std::function<void(absl::StatusOr<Result>)> finish = BeginCall(std::move(done));
    if (first_endpoint >= channels.size()) {
      return FailLater(absl::InvalidArgumentError(absl::StrCat("endpoint index ", first_endpoint,
                                                               " is out of range; the client has ",
                                                               channels.size(), " endpoints")),
                       std::move(finish));
    }
    absl::StatusOr<absl::Time> deadline = Deadline(call_options);
    if (!deadline.ok()) return FailLater(deadline.status(), std::move(finish));
    if (absl::Status text = client_internal::CheckStringFields(request); !text.ok()) {
      return FailLater(std::move(text), std::move(finish));
    }
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
      size_t endpoint = 0;  // of the latest attempt
      bool attempted = false;
    };
    auto state = std::make_shared<State>();
    state->request = std::move(request);
    auto start_attempt = [this, state, method = std::move(method)](
                             size_t endpoint, grpc::ClientContext* context,
                             std::function<void(grpc::Status)> on_done) {
      state->response.Clear();
      state->endpoint = endpoint;
      if constexpr (std::is_same_v<Request, v1::PutRequest> ||
                    std::is_same_v<Request, v1::DeleteRequest>) {
        // A retry is never a first attempt (PutRequest.first_attempt). The attempt before has
        // finished, so nothing reads the request meanwhile.
        if (state->attempted) state->request.set_first_attempt(false);
      }
      state->attempted = true;
      method(StubFor<Stub>(endpoint), context, &state->request, &state->response,
             std::move(on_done));
    };
    auto call_done = [state, convert, answered_by, finish = std::move(finish)](absl::Status status,
                                                                               int /*attempts*/) {
      if (!status.ok()) return finish(std::move(status));
      if (answered_by != nullptr) *answered_by = state->endpoint;
      finish(convert(&state->response));
    };
    client_internal::StartRetryingCall(env, *deadline, first_endpoint, policy,
                                       std::move(start_attempt), std::move(call_done));
  }

  absl::StatusOr<ClusterStatusResult> ClusterStatus(size_t first_endpoint,
                                                    client_internal::EndpointPolicy policy,
                                                    const CallOptions& call_options) {
    return client_internal::WaitFor<absl::StatusOr<ClusterStatusResult>>([&](auto done) {
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

  // A synchronous admin call to `first_endpoint` (the first endpoint not known to be down if
  // absent); `policy` says where its retries go (kFailover for reads, kStart for the starts of
  // operations, kOperation or kPinned for the reads and cancels of operations). On success
  // `answered_by` (if not null) is set to the endpoint that answered.
  template <typename Request, typename Response, typename Result>
  absl::StatusOr<Result> AdminCall(const CallOptions& call_options,
                                   client_internal::EndpointPolicy policy, Request request,
                                   Method<v1::Admin::Stub, Request, Response> method,
                                   Result (*convert)(Response*),
                                   std::optional<size_t> first_endpoint = std::nullopt,
                                   size_t* answered_by = nullptr) {
    return client_internal::WaitFor<absl::StatusOr<Result>>([&](auto done) {
      Call<v1::Admin::Stub, Request, Response, Result>(
          call_options, first_endpoint.value_or(PickEndpoint(0)), policy, std::move(request),
          std::move(method), convert, std::move(done), answered_by);
    });
  }

  // An operation is known only to the node that runs it (its id begins with that node's id), so
  // the client remembers which endpoint answered the start of an operation and asks it first
  // about the operations of that node.
  void RememberOperationNode(absl::string_view operation_id, size_t endpoint) {
    const size_t colon = operation_id.find(':');
    if (colon == absl::string_view::npos) return;
    absl::MutexLock lock(&operation_nodes_mu);
    operation_nodes[std::string(operation_id.substr(0, colon))] = endpoint;
  }
  // The endpoint remembered for the node of `operation_id`, if any.
  std::optional<size_t> OperationEndpoint(absl::string_view operation_id) {
    const size_t colon = operation_id.find(':');
    if (colon == absl::string_view::npos) return std::nullopt;
    absl::MutexLock lock(&operation_nodes_mu);
    auto it = operation_nodes.find(operation_id.substr(0, colon));
    if (it == operation_nodes.end()) return std::nullopt;
    return it->second;
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
    state->context->set_deadline(WallDeadlineAfter(options.call_deadline));
    admin_stubs[endpoint]->async()->Ping(
        state->context.get(), &state->request, &state->response,
        [state, finish = std::move(finish)](grpc::Status status) {
          state->context.reset();  // before the call counts as done: see RetryingCall
          finish(client_internal::FromGrpcStatus(status));
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

  absl::Mutex operation_nodes_mu;
  // Node id -> the endpoint that last answered the start of one of its operations.
  std::map<std::string, size_t, std::less<>> operation_nodes ABSL_GUARDED_BY(operation_nodes_mu);

  // Before the timer: a flush timer task may still run until the timer thread has stopped.
  std::unique_ptr<client_internal::Coalescer> coalescer;
  // The one thread the Client owns: it runs the backoff before a retry, the coalescer's flushes
  // and callbacks that must not run on the caller's thread (calls that fail before reaching the
  // network). Not grpc::Alarm, so that the Client alone decides when timers stop and no gRPC
  // thread ever sleeps; on the monotonic clock, so that a step of the wall clock delays no retry.
  // The Client waits for its pending calls before it stops, so the only tasks dropped then are
  // flush timers of Puts that have left since.
  TimerThread timer;
  client_internal::RetryEnv env;
};

}  // namespace kv

#endif  // KV_CLIENT_KV_CLIENT_IMPL_H_

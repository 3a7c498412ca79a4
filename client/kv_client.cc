#include "client/kv_client.h"

#include "client/kv_client_impl.h"

namespace kv {

using client_internal::EndpointPolicy;
using client_internal::WaitFor;

std::string NewIdempotencyToken() {
  thread_local absl::BitGen rng;
  const uint64_t high = absl::Uniform<uint64_t>(rng);
  const uint64_t low = absl::Uniform<uint64_t>(rng);
  return absl::StrCat(absl::Hex(high, absl::kZeroPad16), absl::Hex(low, absl::kZeroPad16));
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  absl::Status valid = client_internal::ValidateOptions(options);
  if (!valid.ok()) return valid;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.channel_factory) {
    credentials = client_internal::ChannelCredentials(options.tls);
    if (credentials == nullptr) {
      return absl::InternalError("gRPC could not make TLS credentials from the checked TlsOptions");
    }
  }
  auto impl = std::make_unique<Impl>(std::move(options), credentials);
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
  // One token per logical call: every attempt sends this same request (Impl::Call unmarks the
  // first attempt once it is made).
  request.set_first_attempt(options.idempotency_token.empty() &&
                            impl_->options.mark_first_attempts);
  request.set_idempotency_token(options.idempotency_token.empty()
                                    ? NewIdempotencyToken()
                                    : std::move(options.idempotency_token));
  client_internal::ToProto(options.w, request.mutable_w());
  impl_->Call<v1::KV::Stub, v1::PutRequest, v1::PutResponse, WriteResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kWrite, std::move(request),
      [coalescer = impl_->coalescer.get()](v1::KV::Stub* stub, grpc::ClientContext* context,
                                           const v1::PutRequest* req, v1::PutResponse* resp,
                                           std::function<void(grpc::Status)> on_done) {
        coalescer->Send(stub, context, req, resp, std::move(on_done));
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
      [coalescer = impl_->coalescer.get()](v1::KV::Stub* stub, grpc::ClientContext* context,
                                           const v1::GetRequest* req, v1::GetResponse* resp,
                                           std::function<void(grpc::Status)> on_done) {
        coalescer->SendGet(stub, context, req, resp, std::move(on_done));
      },
      &client_internal::FromGetResponse, std::move(done));
}

void Client::DeleteAsync(std::string key, WriteOptions options,
                         std::function<void(absl::StatusOr<WriteResult>)> done) {
  v1::DeleteRequest request;
  request.set_key(std::move(key));
  request.set_context(std::move(options.context));
  request.set_first_attempt(options.idempotency_token.empty() &&
                            impl_->options.mark_first_attempts);
  request.set_idempotency_token(options.idempotency_token.empty()
                                    ? NewIdempotencyToken()
                                    : std::move(options.idempotency_token));
  client_internal::ToProto(options.w, request.mutable_w());
  impl_->Call<v1::KV::Stub, v1::DeleteRequest, v1::DeleteResponse, WriteResult>(
      options, impl_->NextEndpoint(), EndpointPolicy::kWrite, std::move(request),
      [coalescer = impl_->coalescer.get()](v1::KV::Stub* stub, grpc::ClientContext* context,
                                           const v1::DeleteRequest* req, v1::DeleteResponse* resp,
                                           std::function<void(grpc::Status)> on_done) {
        coalescer->SendDelete(stub, context, req, resp, std::move(on_done));
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

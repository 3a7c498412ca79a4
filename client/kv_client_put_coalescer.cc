#include "client/kv_client_put_coalescer.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kv_client_retrying_call.h"

namespace kv::client_internal {
namespace {

// Items with less time left than this before their deadline are not put in a batch.
constexpr std::chrono::milliseconds kLeastBatchTime(50);

}  // namespace

PutCoalescer::PutCoalescer(const PutCoalescingOptions& options, std::vector<v1::KV::Stub*> stubs,
                           TimerThread* timer)
    : options_(options), timer_(timer), stubs_(std::move(stubs)), endpoints_(stubs_.size()) {}

void PutCoalescer::Send(v1::KV::Stub* stub, grpc::ClientContext* context,
                        const v1::PutRequest* request, v1::PutResponse* response,
                        std::function<void(grpc::Status)> on_done) {
  Item item{context, request, response, std::move(on_done), 0};
  bool arm_timer = false;
  uint64_t generation = 0;
  size_t endpoint = 0;
  while (endpoint < stubs_.size() && stubs_[endpoint] != stub) ++endpoint;  // a handful
  if (endpoint == stubs_.size()) {
    // Not one of this coalescer's stubs (never the case in a Client): a plain Put.
    stub->async()->Put(context, request, response, std::move(item.on_done));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    Endpoint& e = endpoints_[endpoint];
    if (options_.max_in_flight <= 0 || e.batches_unsupported ||
        e.in_flight < options_.max_in_flight) {
      ++e.in_flight;
    } else {
      item.bytes = request->ByteSizeLong();
      if (e.waiting.empty()) {
        arm_timer = true;
        generation = ++e.flush_generation;
      }
      e.waiting.push_back(std::move(item));
      item.on_done = nullptr;
    }
  }
  if (arm_timer) {
    timer_->RunAt(absl::Now() + options_.max_delay,
                  [this, endpoint, generation]() { Flush(endpoint, generation); });
  }
  if (item.on_done) SendAlone(endpoint, std::move(item));
}

void PutCoalescer::SendAlone(size_t endpoint, Item item) {
  v1::KV::Stub* stub = stubs_[endpoint];
  grpc::ClientContext* context = item.context;
  const v1::PutRequest* request = item.request;
  v1::PutResponse* response = item.response;
  stub->async()->Put(context, request, response,
                     [this, endpoint, on_done = std::move(item.on_done)](grpc::Status status) {
                       // Before on_done: once the last attempt is done, the Client may go.
                       Release(endpoint, 1);
                       on_done(status);
                     });
}

std::vector<PutCoalescer::Item> PutCoalescer::TakeBatch(Endpoint& e) {
  std::vector<Item> batch;
  if (e.waiting.empty()) return batch;
  size_t bytes = 0;
  size_t taken = 0;
  while (taken < e.waiting.size() && batch.size() < options_.max_batch_items) {
    const size_t item_bytes = e.waiting[taken].bytes;
    if (!batch.empty() && bytes + item_bytes > options_.max_batch_bytes) break;
    bytes += item_bytes;
    batch.push_back(std::move(e.waiting[taken]));
    ++taken;
  }
  e.waiting.erase(e.waiting.begin(), e.waiting.begin() + static_cast<ptrdiff_t>(taken));
  // The items left keep their place; the timer armed for the oldest ones covers them (they are
  // no older than the ones taken).
  e.in_flight += static_cast<int>(batch.size());
  return batch;
}

void PutCoalescer::Release(size_t endpoint, int items) {
  std::vector<std::vector<Item>> batches;
  {
    absl::MutexLock lock(&mu_);
    Endpoint& e = endpoints_[endpoint];
    e.in_flight -= items;
    ++e.flush_generation;  // the flush timer of the items waiting now is no longer needed
    while (!e.waiting.empty()) batches.push_back(TakeBatch(e));
  }
  for (std::vector<Item>& batch : batches) SendBatch(endpoint, std::move(batch));
}

void PutCoalescer::Flush(size_t endpoint, uint64_t generation) {
  std::vector<std::vector<Item>> batches;
  {
    absl::MutexLock lock(&mu_);
    Endpoint& e = endpoints_[endpoint];
    if (e.flush_generation != generation) return;  // those items left; newer ones have a timer
    while (!e.waiting.empty()) batches.push_back(TakeBatch(e));
  }
  for (std::vector<Item>& batch : batches) SendBatch(endpoint, std::move(batch));
}

void PutCoalescer::SendBatch(size_t endpoint, std::vector<Item> items) {
  v1::KV::Stub* stub = stubs_[endpoint];
  bool unsupported;
  {
    absl::MutexLock lock(&mu_);
    unsupported = endpoints_[endpoint].batches_unsupported;
  }
  if (!unsupported && items.size() > 1) {
    // An item with little time left goes alone: as the batch's deadline it would cut the
    // others' attempts short.
    const auto soon = std::chrono::system_clock::now() + kLeastBatchTime;
    auto late = std::stable_partition(items.begin(), items.end(), [soon](const Item& item) {
      return item.context->deadline() >= soon;
    });
    for (auto it = late; it != items.end(); ++it) SendAlone(endpoint, std::move(*it));
    items.erase(late, items.end());
  }
  if (items.size() <= 1 || unsupported) {
    // One Put alone is the cheaper call.
    for (Item& item : items) SendAlone(endpoint, std::move(item));
    return;
  }
  struct Call {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    v1::PutBatchRequest request;
    v1::PutBatchResponse response;
    std::vector<Item> items;
  };
  auto call = std::make_shared<Call>();
  auto deadline = std::chrono::system_clock::time_point::max();
  for (const Item& item : items) {
    deadline = std::min(deadline, item.context->deadline());
    *call->request.add_puts() = *item.request;
  }
  call->context->set_deadline(deadline);
  call->items = std::move(items);
  stub->async()->PutBatch(call->context.get(), &call->request, &call->response,
                          [this, endpoint, call](grpc::Status status) {
                            // The context holds a reference to the channel: it goes before any item
                            // completes, so that the Client, not this gRPC thread, releases the
                            // channel last (see RetryingCall).
                            call->context.reset();
                            if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
                              // An older node: its items go again as single Puts, on their own
                              // contexts (not used yet), and so does every later attempt to this
                              // endpoint.
                              std::vector<Item> items = std::move(call->items);
                              {
                                absl::MutexLock lock(&mu_);
                                endpoints_[endpoint].batches_unsupported = true;
                              }
                              for (Item& item : items) SendAlone(endpoint, std::move(item));
                              return;
                            }
                            std::vector<Item> items = std::move(call->items);
                            Release(endpoint, static_cast<int>(items.size()));
                            CompleteBatch(status, call->response, items);
                          });
}

void PutCoalescer::CompleteBatch(const grpc::Status& status, v1::PutBatchResponse& response,
                                 std::vector<Item>& items) {
  if (status.ok() && response.results_size() != static_cast<int>(items.size())) {
    const grpc::Status mismatch(grpc::StatusCode::INTERNAL,
                                absl::StrCat("PutBatch answered ", response.results_size(),
                                             " results for ", items.size(), " puts"));
    for (Item& item : items) item.on_done(mismatch);
    return;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    Item& item = items[i];
    if (!status.ok()) {
      item.on_done(status);
      continue;
    }
    v1::PutBatchResult* result = response.mutable_results(static_cast<int>(i));
    if (result->code() == 0) {
      item.response->Swap(result->mutable_response());
      item.on_done(grpc::Status::OK);
      continue;
    }
    const int code = result->code();
    const grpc::StatusCode grpc_code =
        code > 0 && code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)
            ? static_cast<grpc::StatusCode>(code)
            : grpc::StatusCode::UNKNOWN;
    item.on_done(grpc::Status(grpc_code, result->message(),
                              result->write_stored() ? kWriteStoredMetadataKey : ""));
  }
}

}  // namespace kv::client_internal

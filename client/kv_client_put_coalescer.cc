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
// How long an endpoint that answered PutBatch with UNIMPLEMENTED gets single calls only, or one
// whose PutBatch ignored deletes single Deletes (it may be upgraded meanwhile).
constexpr absl::Duration kRefusalMemory = absl::Minutes(1);

}  // namespace

PutCoalescer::PutCoalescer(const PutCoalescingOptions& options, std::vector<v1::KV::Stub*> stubs,
                           TimerThread* timer, RetryBudget* budget)
    : options_(options),
      timer_(timer),
      budget_(budget),
      stubs_(std::move(stubs)),
      endpoints_(stubs_.size()) {}

bool PutCoalescer::BatchesRefused(const Endpoint& e) {
  return e.refused_until != absl::InfinitePast() && absl::Now() < e.refused_until;
}

bool PutCoalescer::DeletesRefused(const Endpoint& e) {
  return e.deletes_refused_until != absl::InfinitePast() && absl::Now() < e.deletes_refused_until;
}

void PutCoalescer::Send(v1::KV::Stub* stub, grpc::ClientContext* context,
                        const v1::PutRequest* request, v1::PutResponse* response,
                        std::function<void(grpc::Status)> on_done) {
  Item item;
  item.context = context;
  item.request = request;
  item.response = response;
  item.on_done = std::move(on_done);
  Submit(stub, std::move(item));
}

void PutCoalescer::SendDelete(v1::KV::Stub* stub, grpc::ClientContext* context,
                              const v1::DeleteRequest* request, v1::DeleteResponse* response,
                              std::function<void(grpc::Status)> on_done) {
  Item item;
  item.context = context;
  item.delete_request = request;
  item.delete_response = response;
  item.on_done = std::move(on_done);
  Submit(stub, std::move(item));
}

void PutCoalescer::Call(v1::KV::Stub* stub, const Item& item,
                        std::function<void(grpc::Status)> on_done) {
  if (item.is_delete()) {
    stub->async()->Delete(item.context, item.delete_request, item.delete_response,
                          std::move(on_done));
  } else {
    stub->async()->Put(item.context, item.request, item.response, std::move(on_done));
  }
}

void PutCoalescer::Submit(v1::KV::Stub* stub, Item item) {
  bool arm_timer = false;
  uint64_t generation = 0;
  size_t endpoint = 0;
  while (endpoint < stubs_.size() && stubs_[endpoint] != stub) ++endpoint;  // a handful
  if (endpoint == stubs_.size()) {
    // Not one of this coalescer's stubs (never the case in a Client): a plain call.
    std::function<void(grpc::Status)> on_done = std::move(item.on_done);
    Call(stub, item, std::move(on_done));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    Endpoint& e = endpoints_[endpoint];
    // An attempt with little time left goes alone at once: it could not join a batch anyway.
    if (options_.max_in_flight <= 0 || e.in_flight < options_.max_in_flight || BatchesRefused(e) ||
        (item.is_delete() && DeletesRefused(e)) ||
        item.context->deadline() < std::chrono::system_clock::now() + kLeastBatchTime) {
      ++e.in_flight;
    } else {
      item.bytes =
          item.is_delete() ? item.delete_request->ByteSizeLong() : item.request->ByteSizeLong();
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
  std::function<void(grpc::Status)> on_done = std::move(item.on_done);
  Call(stubs_[endpoint], item, [this, endpoint, on_done = std::move(on_done)](grpc::Status status) {
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
  bool refused;
  bool deletes_refused;
  {
    absl::MutexLock lock(&mu_);
    refused = BatchesRefused(endpoints_[endpoint]);
    deletes_refused = DeletesRefused(endpoints_[endpoint]);
  }
  if (!refused && deletes_refused) {
    // Deletes that waited since before the node was found to ignore batched deletes.
    auto alone = std::stable_partition(items.begin(), items.end(),
                                       [](const Item& item) { return !item.is_delete(); });
    for (auto it = alone; it != items.end(); ++it) SendAlone(endpoint, std::move(*it));
    items.erase(alone, items.end());
  }
  if (!refused && items.size() > 1) {
    // The batch's deadline is its earliest item's, so an item with much less time left than the
    // others goes alone rather than cut their attempts short: one with under kLeastBatchTime
    // left, or under half the time the longest-lived item has.
    const auto now = std::chrono::system_clock::now();
    auto latest = now;
    for (const Item& item : items) latest = std::max(latest, item.context->deadline());
    const auto keep_from = std::max(now + kLeastBatchTime, now + (latest - now) / 2);
    auto alone = std::stable_partition(items.begin(), items.end(), [keep_from](const Item& item) {
      return item.context->deadline() >= keep_from;
    });
    for (auto it = alone; it != items.end(); ++it) SendAlone(endpoint, std::move(*it));
    items.erase(alone, items.end());
  }
  if (items.size() <= 1 || refused) {
    // One write alone is the cheaper call.
    for (Item& item : items) SendAlone(endpoint, std::move(item));
    return;
  }
  struct Batch {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    v1::PutBatchRequest request;
    v1::PutBatchResponse response;
    std::vector<Item> items;
  };
  auto call = std::make_shared<Batch>();
  auto deadline = std::chrono::system_clock::time_point::max();
  // The puts first, then the deletes: the order of the request's fields and of the results.
  std::stable_partition(items.begin(), items.end(),
                        [](const Item& item) { return !item.is_delete(); });
  for (const Item& item : items) {
    deadline = std::min(deadline, item.context->deadline());
    if (item.is_delete()) {
      *call->request.add_deletes() = *item.delete_request;
    } else {
      *call->request.add_puts() = *item.request;
    }
  }
  call->context->set_deadline(deadline);
  call->items = std::move(items);
  stub->async()->PutBatch(
      call->context.get(), &call->request, &call->response,
      [this, endpoint, call](grpc::Status status) {
        // The context holds a reference to the channel: it goes before any item
        // completes, so that the Client, not this gRPC thread, releases the
        // channel last (see RetryingCall).
        call->context.reset();
        if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
          // An older node: its items go again as single calls, on their own
          // contexts (not used yet), and so does every later attempt to this
          // endpoint for a while.
          std::vector<Item> items = std::move(call->items);
          {
            absl::MutexLock lock(&mu_);
            endpoints_[endpoint].refused_until = absl::Now() + kRefusalMemory;
          }
          for (Item& item : items) SendAlone(endpoint, std::move(item));
          return;
        }
        std::vector<Item> items = std::move(call->items);
        const int puts = call->request.puts_size();
        if (status.ok() && call->request.deletes_size() > 0 &&
            call->response.results_size() == puts) {
          // A node that knows PutBatch but not its deletes: it applied none
          // of them. They go again alone (still counted in flight), and so
          // does every later Delete to this endpoint for a while; its Puts
          // still go in batches.
          std::vector<Item> deletes(std::make_move_iterator(items.begin() + puts),
                                    std::make_move_iterator(items.end()));
          items.resize(static_cast<size_t>(puts));
          {
            absl::MutexLock lock(&mu_);
            endpoints_[endpoint].deletes_refused_until = absl::Now() + kRefusalMemory;
          }
          for (Item& item : deletes) SendAlone(endpoint, std::move(item));
        }
        Release(endpoint, static_cast<int>(items.size()));
        CompleteBatch(SharedStatus(status), call->response, items);
      });
}

grpc::Status PutCoalescer::SharedStatus(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:  // retried as UNAVAILABLE (RetryingCall)
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // One failed call, charged once; each Put then only asks whether it may retry.
      budget_->RecordFailureAndTryRetry();
      return grpc::Status(status.error_code(), status.error_message(), kSharedFailureDetails);
    default:
      return status;
  }
}

void PutCoalescer::CompleteBatch(const grpc::Status& status, v1::PutBatchResponse& response,
                                 std::vector<Item>& items) {
  if (status.ok() && response.results_size() != static_cast<int>(items.size())) {
    const grpc::Status mismatch(grpc::StatusCode::INTERNAL,
                                absl::StrCat("PutBatch answered ", response.results_size(),
                                             " results for ", items.size(), " writes"));
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
      if (item.is_delete()) {
        item.delete_response->Swap(result->mutable_delete_response());
      } else {
        item.response->Swap(result->mutable_response());
      }
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

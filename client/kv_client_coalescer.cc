#include "client/kv_client_coalescer.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/kv_client_retrying_call.h"
#include "storage/steady_timer.h"

namespace kv::client_internal {
namespace {

// Items with less time left than this before their deadline are not put in a batch.
constexpr std::chrono::milliseconds kLeastBatchTime(50);
// How long an endpoint that answered PutBatch or GetBatch with UNIMPLEMENTED gets single calls of
// that kind only, or one whose PutBatch ignored deletes single Deletes (it may be upgraded
// meanwhile).
constexpr absl::Duration kRefusalMemory = absl::Minutes(1);

// `context`'s deadline, a wall-clock time, as a time on the steady clock (SteadyNow).
absl::Time SteadyDeadline(const grpc::ClientContext& context) {
  return SteadyNow() + TimeUntil(context.deadline());
}

// The wall-clock deadline that gRPC needs for `deadline` on the steady clock, read now.
std::chrono::system_clock::time_point WallDeadline(absl::Time deadline) {
  return WallDeadlineAfter(deadline - SteadyNow());
}

}  // namespace

Coalescer::Coalescer(const CoalescingOptions& writes, const CoalescingOptions& reads,
                     std::vector<v1::KV::Stub*> stubs, TimerThread* timer, RetryBudget* budget)
    : writes_(writes),
      reads_(reads),
      timer_(timer),
      budget_(budget),
      stubs_(std::move(stubs)),
      endpoints_(stubs_.size()) {}

bool Coalescer::Refused(absl::Time until) {
  return until != absl::InfinitePast() && SteadyNow() < until;
}

size_t Coalescer::Item::ByteSize() const {
  if (is_get()) return get_request->ByteSizeLong();
  return is_delete() ? delete_request->ByteSizeLong() : request->ByteSizeLong();
}

std::pair<int, uint32_t> Coalescer::Item::Quorum() const {
  const v1::Quorum& quorum =
      is_get() ? get_request->r() : (is_delete() ? delete_request->w() : request->w());
  return {static_cast<int>(quorum.kind()), quorum.count()};
}

void Coalescer::Send(v1::KV::Stub* stub, grpc::ClientContext* context,
                     const v1::PutRequest* request, v1::PutResponse* response,
                     std::function<void(grpc::Status)> on_done) {
  Item item{context, std::move(on_done)};
  item.request = request;
  item.response = response;
  Submit(stub, std::move(item));
}

void Coalescer::SendDelete(v1::KV::Stub* stub, grpc::ClientContext* context,
                           const v1::DeleteRequest* request, v1::DeleteResponse* response,
                           std::function<void(grpc::Status)> on_done) {
  Item item{context, std::move(on_done)};
  item.delete_request = request;
  item.delete_response = response;
  Submit(stub, std::move(item));
}

void Coalescer::SendGet(v1::KV::Stub* stub, grpc::ClientContext* context,
                        const v1::GetRequest* request, v1::GetResponse* response,
                        std::function<void(grpc::Status)> on_done) {
  Item item{context, std::move(on_done)};
  item.get_request = request;
  item.get_response = response;
  Submit(stub, std::move(item));
}

void Coalescer::Call(v1::KV::Stub* stub, const Item& item,
                     std::function<void(grpc::Status)> on_done) {
  if (item.is_get()) {
    stub->async()->Get(item.context, item.get_request, item.get_response, std::move(on_done));
  } else if (item.is_delete()) {
    stub->async()->Delete(item.context, item.delete_request, item.delete_response,
                          std::move(on_done));
  } else {
    stub->async()->Put(item.context, item.request, item.response, std::move(on_done));
  }
}

void Coalescer::Submit(v1::KV::Stub* stub, Item item) {
  bool arm_timer = false;
  uint64_t generation = 0;
  absl::Duration flush_in;
  size_t endpoint = 0;
  while (endpoint < stubs_.size() && stubs_[endpoint] != stub) ++endpoint;  // a handful
  if (endpoint == stubs_.size()) {
    // Not one of this coalescer's stubs (never the case in a Client): a plain call.
    std::function<void(grpc::Status)> on_done = std::move(item.on_done);
    Call(stub, item, std::move(on_done));
    return;
  }
  const bool reads_lane = item.is_get();
  const CoalescingOptions& options = OptionsOf(reads_lane);
  {
    absl::MutexLock lock(&mu_);
    Endpoint& e = endpoints_[endpoint];
    Lane& lane = e.lane(reads_lane);
    // An attempt with little time left goes alone at once: it could not join a batch anyway.
    if (options.max_in_flight <= 0 || lane.in_flight < options.max_in_flight ||
        Refused(lane.refused_until) || (item.is_delete() && Refused(e.deletes_refused_until)) ||
        item.context->deadline() < std::chrono::system_clock::now() + kLeastBatchTime) {
      ++lane.in_flight;
    } else {
      item.bytes = item.ByteSize();
      item.waited = true;
      item.deadline = SteadyDeadline(*item.context);
      // It waits at most max_delay, and never past half of the least time a batch needs before
      // its own deadline (it has more than that left: see above), whatever max_delay is.
      const absl::Time now = SteadyNow();
      const absl::Time leave_by =
          std::min(now + options.max_delay, item.deadline - absl::FromChrono(kLeastBatchTime) / 2);
      if (lane.waiting.empty()) {
        arm_timer = true;
        generation = ++lane.flush_generation;
        lane.flush_at = leave_by;
      } else if (leave_by < lane.flush_at) {
        // One more timer for the same items: whichever fires first flushes them all.
        arm_timer = true;
        generation = lane.flush_generation;
        lane.flush_at = leave_by;
      }
      flush_in = std::max(absl::ZeroDuration(), leave_by - now);
      lane.waiting.push_back(std::move(item));
      item.on_done = nullptr;
    }
  }
  if (arm_timer) {
    timer_->RunAfter(flush_in, [this, endpoint, reads_lane, generation]() {
      Flush(endpoint, reads_lane, generation);
    });
  }
  if (item.on_done) SendAlone(endpoint, std::move(item));
}

void Coalescer::Unmark(Item& item) {
  if (item.is_delete()) {
    if (!item.delete_request->first_attempt()) return;
    auto copy = std::make_shared<v1::DeleteRequest>(*item.delete_request);
    copy->set_first_attempt(false);
    item.delete_request = copy.get();
    item.unmarked = std::move(copy);
  } else if (item.request != nullptr && item.request->first_attempt()) {
    auto copy = std::make_shared<v1::PutRequest>(*item.request);
    copy->set_first_attempt(false);
    item.request = copy.get();
    item.unmarked = std::move(copy);
  }
}

void Coalescer::SendAlone(size_t endpoint, Item item) {
  if (item.waited) item.context->set_deadline(WallDeadline(item.deadline));
  std::function<void(grpc::Status)> on_done = std::move(item.on_done);
  const bool reads_lane = item.is_get();
  Call(stubs_[endpoint], item,
       [this, endpoint, reads_lane, on_done = std::move(on_done),
        unmarked = item.unmarked](grpc::Status status) {
         // Before on_done: once the last attempt is done, the Client may go.
         Release(endpoint, reads_lane, 1);
         on_done(status);
       });
}

std::vector<Coalescer::Item> Coalescer::TakeBatch(Lane& lane, const CoalescingOptions& options) {
  std::vector<Item> batch;
  if (lane.waiting.empty()) return batch;
  size_t bytes = 0;
  size_t taken = 0;
  while (taken < lane.waiting.size() && batch.size() < options.max_batch_items) {
    const size_t item_bytes = lane.waiting[taken].bytes;
    if (!batch.empty() && bytes + item_bytes > options.max_batch_bytes) break;
    bytes += item_bytes;
    batch.push_back(std::move(lane.waiting[taken]));
    ++taken;
  }
  lane.waiting.erase(lane.waiting.begin(), lane.waiting.begin() + static_cast<ptrdiff_t>(taken));
  lane.in_flight += static_cast<int>(batch.size());
  return batch;
}

void Coalescer::Release(size_t endpoint, bool reads_lane, int items) {
  std::vector<std::vector<Item>> batches;
  {
    absl::MutexLock lock(&mu_);
    Lane& lane = endpoints_[endpoint].lane(reads_lane);
    lane.in_flight -= items;
    ++lane.flush_generation;  // the flush timer of the items waiting now is no longer needed
    while (!lane.waiting.empty()) batches.push_back(TakeBatch(lane, OptionsOf(reads_lane)));
  }
  for (std::vector<Item>& batch : batches) SendBatch(endpoint, std::move(batch));
}

void Coalescer::Flush(size_t endpoint, bool reads_lane, uint64_t generation) {
  std::vector<std::vector<Item>> batches;
  {
    absl::MutexLock lock(&mu_);
    Lane& lane = endpoints_[endpoint].lane(reads_lane);
    if (lane.flush_generation != generation) return;  // those items left; newer ones have a timer
    while (!lane.waiting.empty()) batches.push_back(TakeBatch(lane, OptionsOf(reads_lane)));
  }
  for (std::vector<Item>& batch : batches) SendBatch(endpoint, std::move(batch));
}

void Coalescer::RefuseBatches(size_t endpoint, bool reads_lane, std::vector<Item> items) {
  {
    absl::MutexLock lock(&mu_);
    endpoints_[endpoint].lane(reads_lane).refused_until = SteadyNow() + kRefusalMemory;
  }
  for (Item& item : items) SendAlone(endpoint, std::move(item));
}

void Coalescer::SendBatch(size_t endpoint, std::vector<Item> items) {
  if (items.empty()) return;
  const bool reads_lane = items.front().is_get();
  bool refused;
  bool deletes_refused;
  {
    absl::MutexLock lock(&mu_);
    refused = Refused(endpoints_[endpoint].lane(reads_lane).refused_until);
    deletes_refused = Refused(endpoints_[endpoint].deletes_refused_until);
  }
  if (!refused && deletes_refused) {
    // Deletes that waited since before the node was found to ignore batched deletes.
    auto alone = std::stable_partition(items.begin(), items.end(),
                                       [](const Item& item) { return !item.is_delete(); });
    for (auto it = alone; it != items.end(); ++it) SendAlone(endpoint, std::move(*it));
    items.erase(alone, items.end());
  }
  if (!refused && items.size() > 1) {
    // One batch per quorum (see "Quorums" in the header), in the order of their first items;
    // each then keeps the items with time enough for its own batch (below).
    std::vector<std::vector<Item>> groups;
    for (Item& item : items) {
      auto group = std::find_if(groups.begin(), groups.end(), [&item](const std::vector<Item>& g) {
        return g.front().Quorum() == item.Quorum();
      });
      if (group == groups.end()) {
        groups.emplace_back().push_back(std::move(item));
      } else {
        group->push_back(std::move(item));
      }
    }
    if (groups.size() > 1) {
      for (std::vector<Item>& group : groups) SendBatch(endpoint, std::move(group));
      return;
    }
    items = std::move(groups.front());
  }
  if (!refused && items.size() > 1) {
    // The batch's deadline is its earliest item's, so an item with much less time left than the
    // others goes alone rather than cut their attempts short: one with under kLeastBatchTime
    // left, or under half the time the longest-lived item has.
    const absl::Time now = SteadyNow();
    absl::Time latest = now;
    for (const Item& item : items) latest = std::max(latest, item.deadline);
    const absl::Time keep_from =
        std::max(now + absl::FromChrono(kLeastBatchTime), now + (latest - now) / 2);
    auto alone = std::stable_partition(items.begin(), items.end(), [keep_from](const Item& item) {
      return item.deadline >= keep_from;
    });
    for (auto it = alone; it != items.end(); ++it) SendAlone(endpoint, std::move(*it));
    items.erase(alone, items.end());
  }
  if (items.size() <= 1 || refused) {
    // One call alone is the cheaper call.
    for (Item& item : items) SendAlone(endpoint, std::move(item));
    return;
  }
  if (reads_lane) {
    SendGetBatch(endpoint, std::move(items));
  } else {
    SendPutBatch(endpoint, std::move(items));
  }
}

void Coalescer::SendPutBatch(size_t endpoint, std::vector<Item> items) {
  v1::KV::Stub* stub = stubs_[endpoint];
  struct Batch {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    v1::PutBatchRequest request;
    v1::PutBatchResponse response;
    std::vector<Item> items;
  };
  auto call = std::make_shared<Batch>();
  absl::Time deadline = absl::InfiniteFuture();
  // The puts first, then the deletes: the order of the request's fields and of the results.
  std::stable_partition(items.begin(), items.end(),
                        [](const Item& item) { return !item.is_delete(); });
  for (const Item& item : items) {
    deadline = std::min(deadline, item.deadline);
    if (item.is_delete()) {
      *call->request.add_deletes() = *item.delete_request;
    } else {
      *call->request.add_puts() = *item.request;
    }
  }
  call->context->set_deadline(WallDeadline(deadline));
  call->items = std::move(items);
  auto on_answer = [this, endpoint, call](grpc::Status status) {
    // The context holds a reference to the channel: it goes before any item
    // completes, so that the Client, not this gRPC thread, releases the
    // channel last (see RetryingCall).
    call->context.reset();
    if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      // An older node: its items go again as single calls, on their own
      // contexts (not used yet), and so does every later attempt to this
      // endpoint for a while.
      RefuseBatches(endpoint, /*reads_lane=*/false, std::move(call->items));
      return;
    }
    std::vector<Item> items = std::move(call->items);
    if (IsMessageOverSizeLimit(status)) {
      // The batch was too large for the node (nothing applied) or its answer for the channel
      // (everything may be applied): each write goes again alone within its attempt, without
      // its first-attempt mark, so that a node that applied it answers it from its token.
      for (Item& item : items) {
        Unmark(item);
        SendAlone(endpoint, std::move(item));
      }
      return;
    }
    const int puts = call->request.puts_size();
    std::vector<Item> deletes;  // to send again alone
    if (status.ok() && call->request.deletes_size() > 0 && call->response.results_size() == puts) {
      // A node that knows PutBatch but not its deletes: it applied none
      // of them. They go again alone (still counted in flight), and so
      // does every later Delete to this endpoint for a while; its Puts
      // still go in batches.
      deletes.assign(std::make_move_iterator(items.begin() + puts),
                     std::make_move_iterator(items.end()));
      items.resize(static_cast<size_t>(puts));
      {
        absl::MutexLock lock(&mu_);
        endpoints_[endpoint].deletes_refused_until = SteadyNow() + kRefusalMemory;
      }
    }
    Release(endpoint, /*reads_lane=*/false, static_cast<int>(items.size()));
    CompleteBatch(SharedStatus(status), call->response, items);
    // Last: once the last item is sent, its answer may end the Client (on
    // another thread), so nothing here touches the coalescer after it.
    // Unmarked: a broken node answering one result short of its items looks the same, and may
    // have applied them.
    for (Item& item : deletes) {
      Unmark(item);
      SendAlone(endpoint, std::move(item));
    }
  };
  stub->async()->PutBatch(call->context.get(), &call->request, &call->response,
                          std::move(on_answer));
}

void Coalescer::SendGetBatch(size_t endpoint, std::vector<Item> items) {
  struct Batch {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    v1::GetBatchRequest request;
    v1::GetBatchResponse response;
    std::vector<Item> items;
  };
  auto call = std::make_shared<Batch>();
  absl::Time deadline = absl::InfiniteFuture();
  for (const Item& item : items) {
    deadline = std::min(deadline, item.deadline);
    *call->request.add_gets() = *item.get_request;
  }
  call->context->set_deadline(WallDeadline(deadline));
  call->items = std::move(items);
  stubs_[endpoint]->async()->GetBatch(
      call->context.get(), &call->request, &call->response,
      [this, endpoint, call](grpc::Status status) {
        call->context.reset();  // before any item completes, as in SendPutBatch
        if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
          // An older node: single Gets for a while.
          RefuseBatches(endpoint, /*reads_lane=*/true, std::move(call->items));
          return;
        }
        std::vector<Item> items = std::move(call->items);
        if (IsMessageOverSizeLimit(status)) {
          // The answer was too large for the channel (or the request for the node): each alone
          // may fit. Another RESOURCE_EXHAUSTED (an overloaded node) is a failure of the call,
          // which each item retries after its backoff, below.
          for (Item& item : items) SendAlone(endpoint, std::move(item));
          return;
        }
        std::vector<Item> alone;  // to send again alone
        if (status.ok() && call->response.results_size() == static_cast<int>(items.size())) {
          // Items the node left out of a full answer go again alone (still counted in flight).
          std::vector<Item> kept;
          v1::GetBatchResponse kept_results;
          for (size_t i = 0; i < items.size(); ++i) {
            v1::GetBatchResult* result = call->response.mutable_results(static_cast<int>(i));
            if (result->send_alone()) {
              alone.push_back(std::move(items[i]));
            } else {
              kept.push_back(std::move(items[i]));
              kept_results.add_results()->Swap(result);
            }
          }
          call->response.Swap(&kept_results);
          items = std::move(kept);
        }
        Release(endpoint, /*reads_lane=*/true, static_cast<int>(items.size()));
        CompleteGetBatch(SharedStatus(status), call->response, items);
        // Last, as in SendPutBatch: nothing here touches the coalescer after them.
        for (Item& item : alone) SendAlone(endpoint, std::move(item));
      });
}

grpc::Status Coalescer::SharedStatus(const grpc::Status& status) {
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

grpc::Status Coalescer::ItemStatus(int code, const std::string& message, bool write_stored) {
  const grpc::StatusCode grpc_code =
      code > 0 && code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)
          ? static_cast<grpc::StatusCode>(code)
          : grpc::StatusCode::UNKNOWN;
  return grpc::Status(grpc_code, message, write_stored ? kWriteStoredMetadataKey : "");
}

namespace {

// Completes `items` from a batch's answer: `response.results(i)` is items[i]'s, which
// `complete(item, result)` completes. A batch that failed as a whole gives each item `status`.
// An answer with another count of results fails every item INTERNAL, its message ending with
// `may_be_applied` (what the node may have done with them).
template <typename Response, typename Item, typename Complete>
void CompleteItems(const grpc::Status& status, Response& response, std::vector<Item>& items,
                   absl::string_view method, absl::string_view may_be_applied, Complete complete) {
  if (status.ok() && response.results_size() != static_cast<int>(items.size())) {
    // Not retried (INTERNAL: the node is broken), but the node may have applied the writes.
    const grpc::Status mismatch(
        grpc::StatusCode::INTERNAL,
        absl::StrCat(method, " answered ", response.results_size(), " results for ", items.size(),
                     " items", may_be_applied));
    for (Item& item : items) item.on_done(mismatch);
    return;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (!status.ok()) {
      items[i].on_done(status);
    } else {
      complete(items[i], *response.mutable_results(static_cast<int>(i)));
    }
  }
}

}  // namespace

void Coalescer::CompleteBatch(const grpc::Status& status, v1::PutBatchResponse& response,
                              std::vector<Item>& items) {
  constexpr absl::string_view kMayBeApplied =
      "; the node may have applied the writes (a retry with the same idempotency token does not "
      "apply one twice)";
  CompleteItems(
      status, response, items, "PutBatch", kMayBeApplied,
      [](Item& item, v1::PutBatchResult& result) {
        if (result.code() != 0) {
          item.on_done(ItemStatus(result.code(), result.message(), result.write_stored()));
          return;
        }
        if (item.is_delete()) {
          item.delete_response->Swap(result.mutable_delete_response());
        } else {
          item.response->Swap(result.mutable_response());
        }
        item.on_done(grpc::Status::OK);
      });
}

void Coalescer::CompleteGetBatch(const grpc::Status& status, v1::GetBatchResponse& response,
                                 std::vector<Item>& items) {
  CompleteItems(
      status, response, items, "GetBatch", "", [](Item& item, v1::GetBatchResult& result) {
        if (result.code() != 0) {
          item.on_done(ItemStatus(result.code(), result.message(), /*write_stored=*/false));
          return;
        }
        item.get_response->Swap(result.mutable_response());
        item.on_done(grpc::Status::OK);
      });
}

}  // namespace kv::client_internal

// Internal to kv_client: sends the attempts of Put, Delete and Get calls to an endpoint,
// coalescing those that wait into PutBatch calls (kv.v1.KV/PutBatch, which carries deletes too)
// and GetBatch calls. Writes and reads are coalesced apart, each under its own options
// (ClientOptions::put_coalescing, ClientOptions::get_coalescing) and counted apart: a read never
// waits for writes in flight, nor a write for reads.
//
// An attempt goes out at once as a call of its own while fewer than
// CoalescingOptions::max_in_flight calls of its kind (alone or in batches) to its endpoint are in
// flight, so a few concurrent calls cost what they always did. Otherwise it waits; when a call
// of its kind to the endpoint finishes, the waiting attempts leave together as one batch (at most
// max_batch_items items and about max_batch_bytes bytes each; the rest in further batches), and
// attempts that have waited max_delay leave whatever is in flight. So under load one RPC
// carries many calls, which gRPC's per-call cost makes worth it (on the client, and on the node,
// which commits a batch's writes together); without load nothing waits.
//
// Every attempt still gets its own status, as its call alone would have: a batch's item results
// carry the node's code and message, and a W shortfall (the node stored the write) comes back
// as an UNAVAILABLE whose error details are kWriteStoredMetadataKey, as the unary call says it in
// its trailers. A batch that fails as a whole gives its status to each of its items. A node that
// does not know PutBatch or GetBatch (UNIMPLEMENTED: an older version) gets the batch's items as
// single calls, and only single calls of that kind for a minute, then batches again. The items a
// node left out of a full GetBatch answer (GetBatchResult.send_alone), and those of a GetBatch
// whose answer was too large for the channel (RESOURCE_EXHAUSTED, IsMessageOverSizeLimit),
// go again alone, within their attempt; another RESOURCE_EXHAUSTED is the batch's failure, which
// each item retries after its backoff. One that knows PutBatch but not its deletes (it answers the
// puts only, having applied no delete) gets the batch's deletes again as single Deletes, and its
// Deletes go alone for a minute while its Puts are still batched.
//
// Quorums. A batch is answered once its slowest item is, and an item waits for as many replicas
// as its quorum says (a Get's R, a write's W): so only attempts of the same quorum share a batch,
// and Gets with R=1 never wait for a Get with R=all in the same answer (nor W=1 writes for a
// W=all one). The attempts that left together go as one batch per quorum among them (an attempt
// alone in its quorum goes alone).
//
// A batch's deadline is the earliest of its items' attempt deadlines, so no item waits past its
// own. An attempt that waits keeps its deadline on the monotonic clock (SteadyNow), read when it
// starts waiting, and its call (alone or the batch's) gets a gRPC deadline made from that when it
// leaves: a step of the wall clock while it waits neither cuts its attempt short nor stretches
// it (gRPC turns the wall-clock deadline it is given into a monotonic one when the call starts).
// Attempts with less than 50 ms left, or with less than half the time of the batch's longest-lived
// item, go alone rather than cut the others short; an item whose batch still timed out before its
// own deadline is retried like any attempt that timed out (an attempt timeout). A batch that fails
// as a whole is charged to the retry budget once, not per item.
//
// Thread-safe. The stubs, the timer and the budget must outlive the coalescer; every attempt's
// context, request and response must stay alive until its `on_done` has run.
#ifndef KV_CLIENT_KV_CLIENT_COALESCER_H_
#define KV_CLIENT_KV_CLIENT_COALESCER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "client/retry_policy.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "kv.grpc.pb.h"
#include "kv.pb.h"
#include "storage/steady_timer.h"

namespace kv::client_internal {

class Coalescer {
 public:
  // `stubs[i]` is endpoint i's stub (null stubs are never sent to). `writes` applies to Puts and
  // Deletes, `reads` to Gets. A batch call that fails as a whole is charged to `budget` once (not
  // once per item).
  Coalescer(const CoalescingOptions& writes, const CoalescingOptions& reads,
            std::vector<v1::KV::Stub*> stubs, TimerThread* timer, RetryBudget* budget);
  Coalescer(const Coalescer&) = delete;
  Coalescer& operator=(const Coalescer&) = delete;

  // Sends one attempt of a Put through `stub` (one of the stubs given) with `context` (its
  // deadline set); `on_done` gets the attempt's status exactly once, with `response` filled when
  // it is OK.
  void Send(v1::KV::Stub* stub, grpc::ClientContext* context, const v1::PutRequest* request,
            v1::PutResponse* response, std::function<void(grpc::Status)> on_done);
  // The same for one attempt of a Delete.
  void SendDelete(v1::KV::Stub* stub, grpc::ClientContext* context,
                  const v1::DeleteRequest* request, v1::DeleteResponse* response,
                  std::function<void(grpc::Status)> on_done);
  // The same for one attempt of a Get.
  void SendGet(v1::KV::Stub* stub, grpc::ClientContext* context, const v1::GetRequest* request,
               v1::GetResponse* response, std::function<void(grpc::Status)> on_done);

 private:
  // One attempt: a Put (request and response set), a Delete (delete_request and delete_response
  // set) or a Get (get_request and get_response set).
  struct Item {
    grpc::ClientContext* context;
    std::function<void(grpc::Status)> on_done;
    const v1::PutRequest* request = nullptr;
    v1::PutResponse* response = nullptr;
    const v1::DeleteRequest* delete_request = nullptr;
    v1::DeleteResponse* delete_response = nullptr;
    const v1::GetRequest* get_request = nullptr;
    v1::GetResponse* get_response = nullptr;
    size_t bytes = 0;
    // A copy of the write's request without its first-attempt mark, which `request` or
    // `delete_request` then points to: for a write sent again alone after a batch the node may
    // have applied (Unmark).
    std::shared_ptr<const google::protobuf::Message> unmarked = nullptr;
    // Set when it starts waiting: its attempt's deadline on the steady clock (see above).
    bool waited = false;
    absl::Time deadline = absl::InfiniteFuture();
    bool is_delete() const { return delete_request != nullptr; }
    bool is_get() const { return get_request != nullptr; }
    size_t ByteSize() const;
    // The replicas its call waits for: its Get's R or its write's W, as (kind, count).
    std::pair<int, uint32_t> Quorum() const;
  };
  // The calls of one kind (writes or reads) to one endpoint.
  struct Lane {
    int in_flight = 0;  // calls in flight, alone or in batches
    // Until then only single calls: the node answered the batch call with UNIMPLEMENTED.
    absl::Time refused_until = absl::InfinitePast();
    std::vector<Item> waiting;
    uint64_t flush_generation = 0;  // of the flush timer armed for the current waiting items
    // When the earliest flush timer of the current waiting items fires: max_delay after the
    // first, or sooner for an item whose own deadline comes first.
    absl::Time flush_at = absl::InfiniteFuture();
  };
  struct Endpoint {
    Lane writes;
    Lane reads;
    // Until then Deletes go alone: the node's PutBatch ignored deletes (an older version).
    absl::Time deletes_refused_until = absl::InfinitePast();
    Lane& lane(bool reads_lane) { return reads_lane ? reads : writes; }
  };

  // Send, SendDelete and SendGet: sends `item` through `stub` at once or queues it.
  void Submit(v1::KV::Stub* stub, Item item);
  // Sends `item` alone as a unary call on its own context; in_flight already counts it.
  void SendAlone(size_t endpoint, Item item);
  // The unary call of `item` on `stub`, `on_done` receiving its status.
  static void Call(v1::KV::Stub* stub, const Item& item, std::function<void(grpc::Status)> on_done);
  // Sends `items` (all writes or all reads) as batches of one quorum each (see "Quorums" above);
  // in_flight already counts them.
  void SendBatch(size_t endpoint, std::vector<Item> items);
  void SendPutBatch(size_t endpoint, std::vector<Item> items);
  void SendGetBatch(size_t endpoint, std::vector<Item> items);
  // A call to `endpoint` carrying `items` calls of the lane's kind finished: its waiting items
  // leave.
  void Release(size_t endpoint, bool reads_lane, int items);
  // Takes the next batch of waiting items of `lane` (and counts it in flight) if there are any.
  std::vector<Item> TakeBatch(Lane& lane, const CoalescingOptions& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The flush timer: the lane's waiting items that waited max_delay leave now.
  void Flush(size_t endpoint, bool reads_lane, uint64_t generation);
  const CoalescingOptions& OptionsOf(bool reads_lane) const {
    return reads_lane ? reads_ : writes_;
  }
  static bool Refused(absl::Time until);
  // Marks the lane's batch calls refused for a while (the node answered UNIMPLEMENTED) and
  // sends `items` again alone.
  void RefuseBatches(size_t endpoint, bool reads_lane, std::vector<Item> items);
  // The status a batch that failed as a whole gives each of its items: a retryable one is
  // charged to the budget here, once, and marked kSharedFailureDetails.
  grpc::Status SharedStatus(const grpc::Status& status);
  // The status of an item that failed within a batch that succeeded.
  static grpc::Status ItemStatus(int code, const std::string& message, bool write_stored);
  // Makes `item`'s write go without its first-attempt mark: a node that may have applied the
  // batch it was in then looks its token up (a copy applied twice otherwise).
  static void Unmark(Item& item);
  // Completes the items of a batch from its answer (their puts first, then their deletes, the
  // order of the request and of its results).
  static void CompleteBatch(const grpc::Status& status, v1::PutBatchResponse& response,
                            std::vector<Item>& items);
  static void CompleteGetBatch(const grpc::Status& status, v1::GetBatchResponse& response,
                               std::vector<Item>& items);

  const CoalescingOptions writes_;
  const CoalescingOptions reads_;
  TimerThread* const timer_;
  RetryBudget* const budget_;
  const std::vector<v1::KV::Stub*> stubs_;  // of each endpoint
  absl::Mutex mu_;
  std::vector<Endpoint> endpoints_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv::client_internal

#endif  // KV_CLIENT_KV_CLIENT_COALESCER_H_

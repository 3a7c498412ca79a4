// Get coalescing (client/kv_client_coalescer.h, kv.v1.KV/GetBatch): Gets that wait while others
// are in flight leave as one GetBatch, against a real kvnode, and each keeps its own result,
// error and retry; reads and writes are counted apart, so a write in flight holds no read back;
// a node without GetBatch gets single Gets. The node's side of GetBatch (limit, per-item errors)
// is driven through its stub.
//
// Coalescing is forced deterministically: get_coalescing.max_in_flight = 1 and a long max_delay,
// with the first Get's answer held until the burst is issued, so the first Get goes out alone
// and all the others wait for it and leave together.
#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/kv_client.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/loopback_server.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// Counts a channel's Get, GetBatch and Put calls. The answer of the first call to `held_method`
// is held until Release(). The OK status of the first `drop_batches` GetBatch calls becomes
// UNAVAILABLE after the node answered (a lost response), then that of the next
// `exhaust_batches` RESOURCE_EXHAUSTED.
struct Counts {
  explicit Counts(std::string method) : held_method(std::move(method)) {}
  std::atomic<int> gets{0};
  std::atomic<int> batches{0};
  std::atomic<int> puts{0};
  std::atomic<int> drop_batches{0};
  std::atomic<int> exhaust_batches{0};  // the same, as RESOURCE_EXHAUSTED (an overloaded node)
  const std::string held_method;
  absl::Notification release;
  std::atomic<bool> held_one{false};
};

class CountCalls : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit CountCalls(std::shared_ptr<Counts> counts) : counts_(std::move(counts)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    const std::string method = info->method();
    if (method == "/kv.v1.KV/Get") ++counts_->gets;
    if (method == "/kv.v1.KV/Put") ++counts_->puts;
    const bool batch = method == "/kv.v1.KV/GetBatch";
    if (batch) ++counts_->batches;
    const bool held = method == counts_->held_method && !counts_->held_one.exchange(true);
    return new Interceptor(batch, held, counts_);
  }

 private:
  class Interceptor : public grpc::experimental::Interceptor {
   public:
    Interceptor(bool batch, bool held, std::shared_ptr<Counts> counts)
        : batch_(batch), held_(held), counts_(std::move(counts)) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(
              grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
        if (held_) counts_->release.WaitForNotification();
        grpc::Status* status = methods->GetRecvStatus();
        if (batch_ && status->ok() && counts_->drop_batches.fetch_sub(1) > 0) {
          *status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "response lost (test)");
        } else if (batch_ && status->ok() && counts_->exhaust_batches.fetch_sub(1) > 0) {
          *status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "node overloaded (test)");
        }
      }
      methods->Proceed();
    }

   private:
    const bool batch_;
    const bool held_;
    std::shared_ptr<Counts> counts_;
  };
  std::shared_ptr<Counts> counts_;
};

// `max_receive_bytes`: the channels' limit on a message received (0: no limit).
ClientOptions ForcedCoalescing(std::vector<std::string> endpoints, std::shared_ptr<Counts> counts,
                               int max_receive_bytes = 0) {
  ClientOptions options;
  options.endpoints = std::move(endpoints);
  options.get_coalescing.max_in_flight = 1;
  options.get_coalescing.max_delay = absl::Seconds(30);
  options.put_coalescing.max_in_flight = 0;  // one RPC per Put: the held Put stays alone
  options.channel_factory = [counts, max_receive_bytes](const std::string& endpoint) {
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> creators;
    creators.push_back(std::make_unique<CountCalls>(counts));
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(max_receive_bytes > 0 ? max_receive_bytes : -1);
    return grpc::experimental::CreateCustomChannelWithInterceptors(
        endpoint, grpc::InsecureChannelCredentials(), args, std::move(creators));
  };
  return options;
}

// Issues every Get at once (GetAsync), releases the held answer and waits for all.
std::vector<absl::StatusOr<GetResult>> GetAll(Client& client, Counts& counts,
                                              const std::vector<std::string>& keys,
                                              const std::vector<ReadOptions>& options = {}) {
  std::vector<absl::StatusOr<GetResult>> results(keys.size(), absl::UnknownError("not done"));
  absl::BlockingCounter done(static_cast<int>(keys.size()));
  for (size_t i = 0; i < keys.size(); ++i) {
    client.GetAsync(keys[i], options.empty() ? ReadOptions() : options[i],
                    [&results, &done, i](absl::StatusOr<GetResult> result) {
                      results[i] = std::move(result);
                      done.DecrementCount();
                    });
  }
  if (!counts.release.HasBeenNotified()) counts.release.Notify();
  done.Wait();
  return results;
}

std::vector<std::string> ValuesOf(const absl::StatusOr<GetResult>& result) {
  if (!result.ok()) return {std::string(absl::StatusCodeToString(result.status().code()))};
  std::vector<std::string> values;
  for (const Version& version : result->siblings) values.push_back(version.value);
  return values;
}

class GetCoalescingProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::NodeProcess::Options options;
    options.data_dir = dir_.Sub("n1");
    absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    ClientOptions plain;
    plain.endpoints = {node_.endpoint()};
    absl::StatusOr<std::unique_ptr<Client>> writer = Client::Create(plain);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int i = 0; i < 30; ++i) {
      ASSERT_TRUE((*writer)->Put(absl::StrCat("k", i), absl::StrCat("v", i)).ok());
    }
  }

  testing::TempDir dir_;
  testing::NodeProcess node_;
};

TEST_F(GetCoalescingProcessTest, WaitingGetsLeaveAsOneBatchAndEachGetsItsOwnResult) {
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 30; ++i) keys.push_back(absl::StrCat("k", i));
  keys.push_back("never-written");
  keys.push_back(std::string(2000, 'x'));  // over the node's 1024-byte key limit
  keys.push_back("k3");                    // with R=2 on a 1-node cluster
  std::vector<ReadOptions> options(keys.size());
  options.back().r = Quorum::Count(2);
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys, options);

  for (int i = 0; i < 30; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(absl::StrCat("v", i))) << i;
    if (results[i].ok()) {
      EXPECT_FALSE(results[i]->context.empty()) << i;
    }
  }
  EXPECT_EQ(results[30].status().code(), absl::StatusCode::kNotFound) << results[30].status();
  EXPECT_EQ(results[31].status().code(), absl::StatusCode::kInvalidArgument)
      << results[31].status();
  EXPECT_THAT(std::string(results[31].status().message()), HasSubstr("max_key_bytes"));
  EXPECT_EQ(results[32].status().code(), absl::StatusCode::kInvalidArgument)
      << results[32].status();
  // The first Get went alone; the 32 others waited for it and left together: the 31 with the
  // default R as one batch, and the one with R=2, alone in its quorum, as a single Get.
  EXPECT_EQ(counts->gets.load(), 2);
  EXPECT_EQ(counts->batches.load(), 1);
}

TEST_F(GetCoalescingProcessTest, EachQuorumKeepsTheItemsWithTimeEnoughForItsOwnBatch) {
  // Gets with the default R and 20 s to go wait beside two Gets with R=all and 2 s to go. Each
  // quorum leaves as its own batch, so the R=all ones are judged against each other (about the
  // same deadline: they share a batch), not against the 20 s ones (next to which they would
  // have less than half the time, and gone alone).
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  std::vector<ReadOptions> options;
  for (int i = 0; i < 12; ++i) {
    keys.push_back(absl::StrCat("k", i));
    ReadOptions read;
    read.deadline = i < 10 ? absl::Seconds(20) : absl::Seconds(2);
    if (i >= 10) read.r = Quorum::All();
    options.push_back(read);
  }
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys, options);
  for (int i = 0; i < 12; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(absl::StrCat("v", i))) << i;
  }
  // The held Get alone; then one batch of 9 and one of 2.
  EXPECT_EQ(counts->gets.load(), 1);
  EXPECT_EQ(counts->batches.load(), 2);
}

TEST_F(GetCoalescingProcessTest, ABatchWhoseResponseWasLostIsRetried) {
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  counts->drop_batches = 1;
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 10; ++i) keys.push_back(absl::StrCat("k", i));
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys);
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(absl::StrCat("v", i))) << i;
  }
  // The batch's answer was lost (and so each of its items retried), not spared.
  EXPECT_LE(counts->drop_batches.load(), 0);
  EXPECT_GE(counts->batches.load(), 1);
}

TEST_F(GetCoalescingProcessTest, AWriteInFlightHoldsNoReadBack) {
  // The first Put's answer is held: with writes and reads counted together, every Get would
  // wait behind it (max_in_flight = 1) until its 30 s max_delay.
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Put");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Notification put_done;
  (*client)->PutAsync("held", "value", WriteOptions(),
                      [&put_done](absl::StatusOr<WriteResult> result) {
                        EXPECT_TRUE(result.ok()) << result.status();
                        put_done.Notify();
                      });
  ReadOptions quick;
  quick.deadline = absl::Seconds(5);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<GetResult> got = (*client)->Get(absl::StrCat("k", i), quick);
    EXPECT_THAT(ValuesOf(got), ElementsAre(absl::StrCat("v", i))) << i;
  }
  EXPECT_FALSE(put_done.HasBeenNotified());
  counts->release.Notify();
  put_done.WaitForNotification();
}

// Six keys with 400 KiB values, big0 .. big5.
void WriteBigValues(const std::string& endpoint) {
  ClientOptions plain;
  plain.endpoints = {endpoint};
  absl::StatusOr<std::unique_ptr<Client>> writer = Client::Create(plain);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE((*writer)->Put(absl::StrCat("big", i), std::string(400 << 10, 'a' + i)).ok());
  }
}

TEST_F(GetCoalescingProcessTest, GetsLeftOutOfAFullAnswerGoAgainAlone) {
  WriteBigValues(node_.endpoint());
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 6; ++i) keys.push_back(absl::StrCat("big", i));
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys);
  for (int i = 0; i < 6; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(std::string(400 << 10, 'a' + i))) << i;
  }
  // big0 alone (held); big1 .. big5 in one batch, whose answer (about 1 MiB) took two of them;
  // the three others went again alone.
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->gets.load(), 1 + 3);
}

TEST_F(GetCoalescingProcessTest, ABatchTooLargeForTheChannelGoesAgainAsSingleGets) {
  WriteBigValues(node_.endpoint());
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  // Room for one 400 KiB answer, not two. One attempt per Get: the items go again alone within
  // their attempt, not as retries.
  ClientOptions options = ForcedCoalescing({node_.endpoint()}, counts, 600 << 10);
  options.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<std::string> keys = {"big0", "big1", "big2"};
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys);
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(std::string(400 << 10, 'a' + i))) << i;
  }
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->gets.load(), 3);
}

TEST_F(GetCoalescingProcessTest, AnOverloadedNodesBatchFailureIsRetriedNotResentAtOnce) {
  // A RESOURCE_EXHAUSTED that does not say the answer was too large is the node's (overloaded):
  // the items fail their attempt, to be retried after a backoff, rather than go again alone at
  // once to the same busy node. With one attempt each, they end with it.
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  counts->exhaust_batches = 1;
  ClientOptions options = ForcedCoalescing({node_.endpoint()}, counts);
  options.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 4; ++i) keys.push_back(absl::StrCat("k", i));
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys);
  EXPECT_THAT(ValuesOf(results[0]), ElementsAre("v0"));  // alone, held
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(results[i].status().code(), absl::StatusCode::kResourceExhausted)
        << i << ": " << results[i].status();
  }
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->gets.load(), 1);
}

TEST_F(GetCoalescingProcessTest, ABatchFailureOfAnOverloadedNodeIsRetriedAfterABackoff) {
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  counts->exhaust_batches = 1;
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 4; ++i) keys.push_back(absl::StrCat("k", i));
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys);
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(absl::StrCat("v", i))) << i;
  }
  EXPECT_LE(counts->exhaust_batches.load(), 0);
}

TEST_F(GetCoalescingProcessTest, AGetWhoseAnswerIsOverTheChannelsLimitIsNotRetried) {
  WriteBigValues(node_.endpoint());
  auto counts = std::make_shared<Counts>("none");
  // Room for 100 KiB: a 400 KiB value's answer never fits, on any attempt or node.
  ClientOptions options = ForcedCoalescing({node_.endpoint()}, counts, 100 << 10);
  options.retry.max_attempts = 5;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::StatusOr<GetResult> result = (*client)->Get("big0");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("larger than a size limit"));
  EXPECT_EQ(counts->gets.load(), 1);
  // A Get whose answer fits still works on the same client.
  EXPECT_THAT(ValuesOf((*client)->Get("k1")), ElementsAre("v1"));
}

TEST_F(GetCoalescingProcessTest, TheNodeRefusesOversizedBatchesAndAnswersEmptyOnes) {
  std::unique_ptr<v1::KV::Stub> stub =
      v1::KV::NewStub(grpc::CreateChannel(node_.endpoint(), grpc::InsecureChannelCredentials()));
  {
    v1::GetBatchRequest request;
    for (int i = 0; i < 1001; ++i) request.add_gets()->set_key(absl::StrCat("k", i));
    v1::GetBatchResponse response;
    grpc::ClientContext context;
    grpc::Status status = stub->GetBatch(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("1000"));
  }
  {
    v1::GetBatchRequest request;
    v1::GetBatchResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetBatch(&context, request, &response).ok());
    EXPECT_EQ(response.results_size(), 0);
  }
  {
    v1::GetBatchRequest request;
    request.add_gets()->set_key("k7");
    request.add_gets()->set_key("");
    v1::GetRequest* bad_r = request.add_gets();
    bad_r->set_key("k8");
    bad_r->mutable_r()->set_kind(static_cast<v1::Quorum::Kind>(42));
    v1::GetBatchResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetBatch(&context, request, &response).ok());
    ASSERT_EQ(response.results_size(), 3);
    EXPECT_EQ(response.results(0).code(), 0);
    ASSERT_EQ(response.results(0).response().siblings_size(), 1);
    EXPECT_EQ(response.results(0).response().siblings(0).value(), "v7");
    EXPECT_EQ(response.results(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(response.results(2).code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(response.results(2).message(), HasSubstr("unknown quorum kind"));
  }
  {
    WriteBigValues(node_.endpoint());
    v1::GetBatchRequest request;
    for (int i = 0; i < 4; ++i) request.add_gets()->set_key(absl::StrCat("big", i));
    request.add_gets()->set_key("k7");  // small: fits beside the two that were answered
    v1::GetBatchResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetBatch(&context, request, &response).ok());
    ASSERT_EQ(response.results_size(), 5);
    EXPECT_EQ(response.results(4).code(), 0);
    EXPECT_FALSE(response.results(4).send_alone());
    EXPECT_EQ(response.results(4).response().siblings_size(), 1);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(response.results(i).code(), 0) << i;
      EXPECT_FALSE(response.results(i).send_alone()) << i;
    }
    for (int i = 2; i < 4; ++i) {
      EXPECT_EQ(response.results(i).code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << i;
      EXPECT_TRUE(response.results(i).send_alone()) << i;
      EXPECT_EQ(response.results(i).response().siblings_size(), 0) << i;
      EXPECT_THAT(response.results(i).message(), Not(HasSubstr("not read"))) << i;
    }
  }
  {
    // A small request naming large records many times: once about 4 MiB were read for items
    // left out, the rest are not read at all (each would cost a read and a copy of 400 KiB).
    v1::GetBatchRequest request;
    for (int i = 0; i < 1000; ++i) request.add_gets()->set_key(absl::StrCat("big", i % 4));
    v1::GetBatchResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetBatch(&context, request, &response).ok());
    ASSERT_EQ(response.results_size(), 1000);
    int answered = 0;
    int read_and_left = 0;
    int unread = 0;
    for (const v1::GetBatchResult& result : response.results()) {
      if (result.code() == 0) {
        ++answered;
        continue;
      }
      EXPECT_EQ(result.code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_TRUE(result.send_alone());
      ++(absl::StrContains(result.message(), "not read") ? unread : read_and_left);
    }
    EXPECT_EQ(answered, 2);
    EXPECT_GE(read_and_left, 10);  // 4 MiB of 400 KiB records
    EXPECT_LE(read_and_left, 12);
    EXPECT_EQ(answered + read_and_left + unread, 1000);
  }
}

TEST(GetCoalescingClusterTest, BatchedGetsThatAskOtherReplicasEachGetTheirOwnResult) {
  // R=2 on 3 nodes: no item can be answered from the node's memory alone, so each finishes on
  // another thread, once a peer has answered (Coordinator::Read).
  testing::Cluster::Options options;
  absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster = testing::Cluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  {
    ClientOptions plain;
    plain.endpoints = {(*cluster)->endpoint(0)};
    absl::StatusOr<std::unique_ptr<Client>> writer = Client::Create(plain);
    ASSERT_TRUE(writer.ok()) << writer.status();
    WriteOptions all;
    all.w = Quorum::All();
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE((*writer)->Put(absl::StrCat("k", i), absl::StrCat("v", i), all).ok());
    }
  }
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({(*cluster)->endpoint(1)}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 20; ++i) keys.push_back(absl::StrCat("k", i));
  keys.push_back("never-written");
  std::vector<ReadOptions> reads(keys.size());
  for (ReadOptions& read : reads) read.r = Quorum::Count(2);
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys, reads);
  for (int i = 0; i < 20; ++i) {
    EXPECT_THAT(ValuesOf(results[i]), ElementsAre(absl::StrCat("v", i))) << i;
  }
  EXPECT_EQ(results[20].status().code(), absl::StatusCode::kNotFound) << results[20].status();
  EXPECT_EQ(counts->gets.load(), 1);
  EXPECT_EQ(counts->batches.load(), 1);
}

// A node of a version before GetBatch: Get only (GetBatch answers UNIMPLEMENTED, gRPC's
// default). Each key's value is the key itself.
class NodeWithoutGetBatch final : public v1::KV::CallbackService {
 public:
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override {
    response->add_siblings()->set_value(request->key());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

TEST(GetCoalescingFakeNodeTest, ANodeWithoutGetBatchGetsSingleGets) {
  NodeWithoutGetBatch service;
  testing::LoopbackServer server({&service});
  ASSERT_TRUE(server.ok());
  auto counts = std::make_shared<Counts>("/kv.v1.KV/Get");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::string> keys;
  for (int i = 0; i < 8; ++i) keys.push_back(absl::StrCat("key", i));
  const std::vector<absl::StatusOr<GetResult>> results = GetAll(**client, *counts, keys);
  for (int i = 0; i < 8; ++i) EXPECT_THAT(ValuesOf(results[i]), ElementsAre(keys[i])) << i;
  // One refused batch; every Get answered by a single call.
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->gets.load(), 8);
  // And the next burst goes as single calls at once: the refusal is remembered.
  const std::vector<absl::StatusOr<GetResult>> again = GetAll(**client, *counts, keys);
  for (int i = 0; i < 8; ++i) EXPECT_THAT(ValuesOf(again[i]), ElementsAre(keys[i])) << i;
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->gets.load(), 16);
}

}  // namespace
}  // namespace kv

// kv::Client against a real kvnode process on loopback: round trips, siblings and causal
// contexts, the merge hook, and idempotent retries of a Put whose response was lost after the
// node applied it (the loss is injected by a client interceptor, so the request did reach it).
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/kv_client.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

// Turns the status of the first `drops` successful Puts into UNAVAILABLE after the response
// arrived: to the client the response is lost, while the node has applied the write.
class LosePutResponses : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit LosePutResponses(std::shared_ptr<std::atomic<int>> drops_left)
      : drops_left_(std::move(drops_left)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new Interceptor(std::string(info->method()) == "/kv.v1.KV/Put", drops_left_);
  }

 private:
  class Interceptor : public grpc::experimental::Interceptor {
   public:
    Interceptor(bool is_put, std::shared_ptr<std::atomic<int>> drops_left)
        : is_put_(is_put), drops_left_(std::move(drops_left)) {}

    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (is_put_ && methods->QueryInterceptionHookPoint(
                         grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
        grpc::Status* status = methods->GetRecvStatus();
        if (status->ok() && drops_left_->fetch_sub(1) > 0) {
          *status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "response lost (test)");
        }
      }
      methods->Proceed();
    }

   private:
    const bool is_put_;
    std::shared_ptr<std::atomic<int>> drops_left_;
  };

  std::shared_ptr<std::atomic<int>> drops_left_;
};

std::vector<std::string> Values(const GetResult& result) {
  std::vector<std::string> values;
  for (const Version& version : result.siblings) values.push_back(version.value);
  return values;
}

class KvClientProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::NodeProcess::Options options;
    options.node_id = "n1";
    options.data_dir = dir_.Sub("n1");
    absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
  }

  std::unique_ptr<Client> MakeClient(ClientOptions options = {}) {
    options.endpoints = {node_.endpoint()};
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  testing::TempDir dir_;
  testing::NodeProcess node_;
};

TEST_F(KvClientProcessTest, PutGetDeleteListRoundTrip) {
  std::unique_ptr<Client> client = MakeClient();
  for (const char* key : {"a/1", "a/2", "b/1"}) {
    absl::StatusOr<WriteResult> put = client->Put(key, std::string("value of ") + key);
    ASSERT_TRUE(put.ok()) << key << ": " << put.status();
    EXPECT_FALSE(put->write_id.empty());
    EXPECT_FALSE(put->deduplicated);
  }
  absl::StatusOr<GetResult> got = client->Get("a/1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), ElementsAre("value of a/1"));
  EXPECT_FALSE(got->siblings[0].dot.empty());

  absl::StatusOr<ListResult> listed = client->List("a/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(listed->keys, ElementsAre("a/1", "a/2"));

  absl::StatusOr<DescribeKeyResult> described = client->DescribeKey("a/1");
  ASSERT_TRUE(described.ok()) << described.status();
  ASSERT_THAT(described->replicas, ::testing::Not(::testing::IsEmpty()));
  EXPECT_TRUE(described->replicas[0].has_record);
  EXPECT_THAT(described->replicas[0].versions, SizeIs(1));

  WriteOptions delete_options;
  delete_options.context = got->context;
  absl::StatusOr<WriteResult> deleted = client->Delete("a/1", delete_options);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  // Deletes and listings are eventually consistent (C4); on one node they settle at once, but
  // allow a few seconds rather than depend on that.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  absl::StatusCode get_code = absl::StatusCode::kOk;
  std::vector<std::string> keys;
  while (absl::Now() < give_up) {
    get_code = client->Get("a/1").status().code();
    listed = client->List("a/");
    ASSERT_TRUE(listed.ok()) << listed.status();
    keys = listed->keys;
    if (get_code == absl::StatusCode::kNotFound && keys.size() == 1) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(get_code, absl::StatusCode::kNotFound);
  EXPECT_THAT(keys, ElementsAre("a/2"));

  absl::Notification pinged;
  absl::Status ping_status;
  client->PingAsync(0, [&](absl::Status status) {
    ping_status = status;
    pinged.Notify();
  });
  pinged.WaitForNotification();
  EXPECT_TRUE(ping_status.ok()) << ping_status;
}

TEST_F(KvClientProcessTest, RetryOfAPutWhoseResponseWasLostCreatesOneVersion) {
  auto drops_left = std::make_shared<std::atomic<int>>(1);
  ClientOptions options;
  options.channel_factory = [drops_left](const std::string& endpoint) {
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> creators;
    creators.push_back(std::make_unique<LosePutResponses>(drops_left));
    return grpc::experimental::CreateCustomChannelWithInterceptors(
        endpoint, grpc::InsecureChannelCredentials(), grpc::ChannelArguments(),
        std::move(creators));
  };
  std::unique_ptr<Client> client = MakeClient(std::move(options));

  absl::StatusOr<WriteResult> put = client->Put("k", "once");
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_LE(drops_left->load(), 0) << "the interceptor never dropped a response";
  EXPECT_TRUE(put->deduplicated) << "the retry should have found the first attempt's write";

  absl::StatusOr<GetResult> got = client->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), ElementsAre("once"));
}

TEST_F(KvClientProcessTest, CallerTokenReusedWithSameRequestIsDeduplicated) {
  std::unique_ptr<Client> client = MakeClient();
  WriteOptions options;
  options.idempotency_token = NewIdempotencyToken();
  absl::StatusOr<WriteResult> first = client->Put("k", "v", options);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->deduplicated);
  absl::StatusOr<WriteResult> again = client->Put("k", "v", options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(again->write_id, first->write_id);

  // The same token with other parameters is the caller's mistake: INVALID_ARGUMENT, not retried.
  absl::StatusOr<WriteResult> other = client->Put("k", "different", options);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument) << other.status();

  absl::StatusOr<GetResult> got = client->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), ElementsAre("v"));
}

TEST_F(KvClientProcessTest, PutsWithoutContextBecomeSiblingsAndAPutWithContextReplacesThem) {
  std::unique_ptr<Client> client = MakeClient();
  ASSERT_TRUE(client->Put("k", "v1").ok());
  ASSERT_TRUE(client->Put("k", "v2").ok());  // a second logical Put, no context: concurrent
  absl::StatusOr<GetResult> got = client->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), UnorderedElementsAre("v1", "v2"));

  WriteOptions options;
  options.context = got->context;
  ASSERT_TRUE(client->Put("k", "v3", options).ok());
  got = client->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), ElementsAre("v3"));
}

TEST_F(KvClientProcessTest, GetResolvedMergesSiblingsIntoOneWritableValue) {
  ClientOptions options;
  int merges = 0;
  options.merger = [&merges](const std::vector<std::string>& values) {
    ++merges;
    std::vector<std::string> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    return absl::StrJoin(sorted, ",");
  };
  std::unique_ptr<Client> client = MakeClient(std::move(options));
  ASSERT_TRUE(client->Put("cart", "apple").ok());
  ASSERT_TRUE(client->Put("cart", "pear").ok());

  absl::StatusOr<GetResult> resolved = client->GetResolved("cart");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_THAT(Values(*resolved), ElementsAre("apple,pear"));
  EXPECT_EQ(merges, 1);

  // Writing the merged value back with the resolved context replaces both siblings.
  WriteOptions write;
  write.context = resolved->context;
  ASSERT_TRUE(client->Put("cart", resolved->siblings[0].value, write).ok());
  absl::StatusOr<GetResult> got = client->Get("cart");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), ElementsAre("apple,pear"));
  resolved = client->GetResolved("cart");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(merges, 1);  // a single sibling needs no merge
}

TEST_F(KvClientProcessTest, CallsFailWhileTheNodeIsDownAndRecoverAfterItRestarts) {
  ClientOptions options;
  options.call_deadline = absl::Seconds(2);
  std::unique_ptr<Client> client = MakeClient(std::move(options));
  ASSERT_TRUE(client->Put("k", "before").ok());

  node_.process().Kill();
  const absl::Time start = absl::Now();
  absl::Status down = client->Put("k", "while down").status();
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));

  ASSERT_TRUE(node_.KillAndRestart().ok());
  // The channel reconnects within about a second (its reconnect backoff); until then calls may
  // still fail fast, and the failures of the outage have used up the retry budget. New calls
  // succeed once it has reconnected.
  const absl::Time give_up = absl::Now() + absl::Seconds(15);
  absl::StatusOr<WriteResult> after = client->Put("k2", "after");
  while (!after.ok() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
    after = client->Put("k2", "after");
  }
  ASSERT_TRUE(after.ok()) << after.status();
  absl::StatusOr<GetResult> got = client->Get("k2");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Values(*got), ElementsAre("after"));
}

}  // namespace
}  // namespace kv

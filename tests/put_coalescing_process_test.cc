// Put coalescing (client/kv_client_coalescer.h, kv.v1.KV/PutBatch): Puts and Deletes that
// wait while others are in flight leave as one PutBatch, against a real kvnode, and each keeps
// its own result, error, idempotent retry and W-shortfall handling; a node without PutBatch gets
// single Puts, one whose PutBatch ignores deletes single Deletes. The node's side of PutBatch
// (limits, per-item errors) is driven through its stub.
//
// Coalescing is forced deterministically: max_in_flight = 1 and a long max_delay, so the first
// of a burst of PutAsync calls goes out alone and all the others wait for it and leave together.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
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

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Counts the Put, Delete and PutBatch calls of a channel; turns the OK status of the first
// `drop_batches` PutBatch calls into UNAVAILABLE after the node answered (a lost response).
class CountCalls : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  struct Counts {
    std::atomic<int> puts{0};
    std::atomic<int> deletes{0};
    std::atomic<int> batches{0};
    std::atomic<int> drop_batches{0};
    // The answer of the first Put, and of the first after each HoldNextPut(), is held until
    // Release(), so that the writes issued after it all wait for it (and leave as one batch).
    void HoldNextPut() {
      absl::MutexLock lock(&mu);
      release = std::make_shared<absl::Notification>();
      hold_next_put = true;
    }
    void Release() {
      absl::MutexLock lock(&mu);
      if (!release->HasBeenNotified()) release->Notify();
    }
    // The notification to wait for if the Put being started is held, else null.
    std::shared_ptr<absl::Notification> TakeHold() {
      absl::MutexLock lock(&mu);
      if (!hold_next_put) return nullptr;
      hold_next_put = false;
      return release;
    }

    absl::Mutex mu;
    bool hold_next_put ABSL_GUARDED_BY(mu) = true;
    std::shared_ptr<absl::Notification> release ABSL_GUARDED_BY(mu) =
        std::make_shared<absl::Notification>();
  };
  explicit CountCalls(std::shared_ptr<Counts> counts) : counts_(std::move(counts)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    const std::string method = info->method();
    std::shared_ptr<absl::Notification> held =
        method == "/kv.v1.KV/Put" ? counts_->TakeHold() : nullptr;
    if (method == "/kv.v1.KV/Put") ++counts_->puts;
    if (method == "/kv.v1.KV/Delete") ++counts_->deletes;
    const bool batch = method == "/kv.v1.KV/PutBatch";
    if (batch) ++counts_->batches;
    return new Interceptor(batch, std::move(held), counts_);
  }

 private:
  class Interceptor : public grpc::experimental::Interceptor {
   public:
    Interceptor(bool batch, std::shared_ptr<absl::Notification> held,
                std::shared_ptr<Counts> counts)
        : batch_(batch), held_(std::move(held)), counts_(std::move(counts)) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (held_ && methods->QueryInterceptionHookPoint(
                       grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
        held_->WaitForNotification();
      }
      if (batch_ && methods->QueryInterceptionHookPoint(
                        grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
        grpc::Status* status = methods->GetRecvStatus();
        if (status->ok() && counts_->drop_batches.fetch_sub(1) > 0) {
          *status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "response lost (test)");
        }
      }
      methods->Proceed();
    }

   private:
    const bool batch_;
    const std::shared_ptr<absl::Notification> held_;  // null: not held
    std::shared_ptr<Counts> counts_;
  };
  std::shared_ptr<Counts> counts_;
};

// `max_receive_bytes`, `max_send_bytes`: the channels' limits on a message (0: gRPC's defaults).
ClientOptions ForcedCoalescing(std::vector<std::string> endpoints,
                               std::shared_ptr<CountCalls::Counts> counts,
                               int max_receive_bytes = 0, int max_send_bytes = 0) {
  ClientOptions options;
  options.endpoints = std::move(endpoints);
  options.put_coalescing.max_in_flight = 1;
  options.put_coalescing.max_delay = absl::Seconds(30);
  options.channel_factory = [counts, max_receive_bytes,
                             max_send_bytes](const std::string& endpoint) {
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> creators;
    creators.push_back(std::make_unique<CountCalls>(counts));
    grpc::ChannelArguments args;
    if (max_receive_bytes > 0) args.SetMaxReceiveMessageSize(max_receive_bytes);
    if (max_send_bytes > 0) args.SetMaxSendMessageSize(max_send_bytes);
    return grpc::experimental::CreateCustomChannelWithInterceptors(
        endpoint, grpc::InsecureChannelCredentials(), args, std::move(creators));
  };
  return options;
}

struct Burst {
  std::vector<absl::StatusOr<WriteResult>> results;
};

// Issues every put at once (PutAsync), releases the first Put's answer and waits for all.
Burst PutAll(Client& client, CountCalls::Counts& counts,
             const std::vector<std::pair<std::string, std::string>>& puts,
             const std::vector<WriteOptions>& options = {}) {
  Burst burst;
  burst.results.resize(puts.size(), absl::UnknownError("not done"));
  absl::BlockingCounter done(static_cast<int>(puts.size()));
  for (size_t i = 0; i < puts.size(); ++i) {
    client.PutAsync(puts[i].first, puts[i].second, options.empty() ? WriteOptions() : options[i],
                    [&burst, &done, i](absl::StatusOr<WriteResult> result) {
                      burst.results[i] = std::move(result);
                      done.DecrementCount();
                    });
  }
  counts.Release();
  done.Wait();
  return burst;
}

// One write of a burst: a Put of `value`, or a Delete.
struct Write {
  bool is_delete;
  std::string key;
  std::string value;
};

// Issues every write at once (PutAsync, DeleteAsync), releases the first Put's answer and waits
// for all.
Burst WriteAll(Client& client, CountCalls::Counts& counts, const std::vector<Write>& writes,
               const std::vector<WriteOptions>& options = {}) {
  Burst burst;
  burst.results.resize(writes.size(), absl::UnknownError("not done"));
  absl::BlockingCounter done(static_cast<int>(writes.size()));
  for (size_t i = 0; i < writes.size(); ++i) {
    auto finish = [&burst, &done, i](absl::StatusOr<WriteResult> result) {
      burst.results[i] = std::move(result);
      done.DecrementCount();
    };
    const WriteOptions write_options = options.empty() ? WriteOptions() : options[i];
    if (writes[i].is_delete) {
      client.DeleteAsync(writes[i].key, write_options, std::move(finish));
    } else {
      client.PutAsync(writes[i].key, writes[i].value, write_options, std::move(finish));
    }
  }
  counts.Release();
  done.Wait();
  return burst;
}

// Puts of `value` to k0, k1, ... k<n-1>.
std::vector<std::pair<std::string, std::string>> NumberedPuts(int n, const std::string& value) {
  std::vector<std::pair<std::string, std::string>> puts;
  for (int i = 0; i < n; ++i) puts.push_back({absl::StrCat("k", i), value});
  return puts;
}

void ExpectAllOk(const Burst& burst) {
  for (size_t i = 0; i < burst.results.size(); ++i) {
    EXPECT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
  }
}

class PutCoalescingProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::NodeProcess::Options options;
    options.data_dir = dir_.Sub("n1");
    absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
  }

  std::vector<std::string> Values(Client& client, const std::string& key) {
    absl::StatusOr<GetResult> got = client.Get(key);
    std::vector<std::string> values;
    if (!got.ok()) return {std::string(absl::StatusCodeToString(got.status().code()))};
    for (const Version& version : got->siblings) values.push_back(version.value);
    return values;
  }

  testing::TempDir dir_;
  testing::NodeProcess node_;
};

TEST_F(PutCoalescingProcessTest, WaitingPutsLeaveAsOneBatchAndEachGetsItsOwnResult) {
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::pair<std::string, std::string>> puts;
  for (int i = 0; i < 40; ++i) puts.push_back({absl::StrCat("k", i), absl::StrCat("v", i)});
  puts.push_back({std::string(2000, 'x'), "a key over the node's 1024-byte limit"});
  // A token used twice in the same batch with different values: the second is the caller's
  // mistake, as it would be in two separate calls.
  std::vector<WriteOptions> options(puts.size());
  options[1].idempotency_token = options[2].idempotency_token = NewIdempotencyToken();
  const Burst burst = PutAll(**client, *counts, puts, options);

  for (int i = 0; i < 40; ++i) {
    if (i == 2) continue;
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
    EXPECT_FALSE(burst.results[i]->write_id.empty());
    EXPECT_FALSE(burst.results[i]->deduplicated);
  }
  EXPECT_EQ(burst.results[2].status().code(), absl::StatusCode::kInvalidArgument)
      << burst.results[2].status();
  EXPECT_EQ(burst.results[40].status().code(), absl::StatusCode::kInvalidArgument)
      << burst.results[40].status();
  EXPECT_THAT(std::string(burst.results[40].status().message()),
              ::testing::HasSubstr("max_key_bytes"));
  // The first Put went alone; the 40 others waited for it and left together.
  EXPECT_EQ(counts->puts.load(), 1);
  EXPECT_EQ(counts->batches.load(), 1);

  for (int i = 0; i < 40; ++i) {
    if (i == 2) continue;
    EXPECT_THAT(Values(**client, absl::StrCat("k", i)), ElementsAre(absl::StrCat("v", i)));
  }
  EXPECT_THAT(Values(**client, "k2"), ElementsAre("NOT_FOUND"));
}

// A write waiting for a batch leaves by its own deadline, not only after max_delay (30 s here):
// the first Put's answer is held for as long as the test wants, and the second, with a 1 s
// deadline, must have its answer long before max_delay.
TEST_F(PutCoalescingProcessTest, AWaitingWriteLeavesByItsOwnDeadline) {
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Notification first_done;
  (*client)->PutAsync("held", "v", WriteOptions(),
                      [&](absl::StatusOr<WriteResult>) { first_done.Notify(); });
  absl::Notification second_done;
  absl::StatusOr<WriteResult> second = absl::UnknownError("not done");
  WriteOptions short_deadline;
  short_deadline.deadline = absl::Seconds(1);
  const absl::Time started = absl::Now();
  (*client)->PutAsync("waits", "v", short_deadline, [&](absl::StatusOr<WriteResult> result) {
    second = std::move(result);
    second_done.Notify();
  });
  const bool answered = second_done.WaitForNotificationWithTimeout(absl::Seconds(10));
  const absl::Duration took = absl::Now() - started;
  counts->Release();
  ASSERT_TRUE(first_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  if (!answered) second_done.WaitForNotification();
  EXPECT_TRUE(answered) << "the waiting write was answered only after " << took;
  // It went alone with little time left: answered either way, never after its deadline's
  // neighbourhood.
  EXPECT_TRUE(second.ok() || absl::IsDeadlineExceeded(second.status())) << second.status();
  EXPECT_EQ(counts->batches.load(), 0);
}

TEST(PutCoalescingClusterTest, WritesOfAnotherQuorumDoNotHoldABatchBack) {
  // Node 0 holds each replication send for kDelay, so a write it coordinates with W=2 cannot be
  // acknowledged before then, while one with W=1 is acknowledged once node 0 holds it. The
  // writes that wait together leave as one batch per W: the W=1 ones are answered at once, not
  // when the W=2 ones of the same burst are.
  // The W=2 writes wait up to two sends (the held Put's is in flight when they commit), well
  // within a --write_ack_timeout raised so that they are never answered UNAVAILABLE and retried
  // on a slow machine.
  constexpr absl::Duration kDelay = absl::Milliseconds(1500);
  testing::Cluster::Options cluster_options;
  cluster_options.extra_flags = {"--write_ack_timeout=20s"};
  cluster_options.node_flags[0] = {
      absl::StrCat("--fault_replication_delay=", absl::FormatDuration(kDelay))};
  absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster =
      testing::Cluster::Start(cluster_options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({(*cluster)->endpoint(0)}, counts));
  ASSERT_TRUE(client.ok()) << client.status();

  // The first (held) Put and ten more with W=1, and four with W=2, all waiting together.
  constexpr int kOne = 11;
  constexpr int kTwo = 4;
  std::vector<absl::StatusOr<WriteResult>> results(kOne + kTwo, absl::UnknownError("not done"));
  std::vector<absl::Time> finished(kOne + kTwo);
  absl::BlockingCounter ones_done(kOne);
  absl::BlockingCounter all_done(kOne + kTwo);
  const absl::Time start = absl::Now();
  for (int i = 0; i < kOne + kTwo; ++i) {
    WriteOptions options;
    options.w = i < kOne ? Quorum::Count(1) : Quorum::Count(2);
    (*client)->PutAsync(absl::StrCat("k", i), absl::StrCat("v", i), options,
                        [&, i](absl::StatusOr<WriteResult> result) {
                          results[i] = std::move(result);
                          finished[i] = absl::Now();
                          if (i < kOne) ones_done.DecrementCount();
                          all_done.DecrementCount();
                        });
  }
  counts->Release();
  ones_done.Wait();
  const absl::Duration ones_took = absl::Now() - start;
  all_done.Wait();

  for (int i = 0; i < kOne + kTwo; ++i) {
    EXPECT_TRUE(results[i].ok()) << i << ": " << results[i].status();
  }
  EXPECT_LT(ones_took, kDelay) << "the W=1 writes waited for the W=2 ones";
  for (int i = kOne; i < kOne + kTwo; ++i) {
    EXPECT_GE(finished[i] - start, kDelay - absl::Milliseconds(100)) << i;
  }
  // The held Put went alone; the 14 that waited for it left as two batches, one per W.
  EXPECT_EQ(counts->puts.load(), 1);
  EXPECT_EQ(counts->batches.load(), 2);
}

TEST_F(PutCoalescingProcessTest, WaitingDeletesShareTheBatchAndEachGetsItsOwnResult) {
  {
    ClientOptions plain;
    plain.endpoints = {node_.endpoint()};
    absl::StatusOr<std::unique_ptr<Client>> writer = Client::Create(plain);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE((*writer)->Put(absl::StrCat("d", i), "old").ok());
    }
  }
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  // The first Put goes alone (its answer held); deletes and puts interleaved wait for it.
  std::vector<Write> writes = {{false, "first", "v"}};
  for (int i = 0; i < 10; ++i) {
    writes.push_back({true, absl::StrCat("d", i), ""});
    writes.push_back({false, absl::StrCat("p", i), absl::StrCat("v", i)});
  }
  writes.push_back({true, "never-written", ""});
  writes.push_back({true, std::string(2000, 'x'), ""});  // over the node's 1024-byte key limit
  const Burst burst = WriteAll(**client, *counts, writes);

  for (size_t i = 0; i + 1 < writes.size(); ++i) {
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
    // A write id names its key: each result is its own write's, not another item's.
    EXPECT_TRUE(
        absl::EndsWith(burst.results[i]->write_id, "/" + absl::WebSafeBase64Escape(writes[i].key)))
        << i << ": " << burst.results[i]->write_id;
    EXPECT_FALSE(burst.results[i]->deduplicated) << i;
  }
  EXPECT_EQ(burst.results.back().status().code(), absl::StatusCode::kInvalidArgument)
      << burst.results.back().status();
  EXPECT_THAT(std::string(burst.results.back().status().message()),
              ::testing::HasSubstr("max_key_bytes"));
  EXPECT_EQ(counts->puts.load(), 1);
  EXPECT_EQ(counts->deletes.load(), 0);
  EXPECT_EQ(counts->batches.load(), 1);
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(Values(**client, absl::StrCat("d", i)), ElementsAre("NOT_FOUND")) << i;
    EXPECT_THAT(Values(**client, absl::StrCat("p", i)), ElementsAre(absl::StrCat("v", i))) << i;
  }
}

TEST_F(PutCoalescingProcessTest, ABatchOfDeletesWhoseResponseWasLostIsRetriedByToken) {
  auto counts = std::make_shared<CountCalls::Counts>();
  counts->drop_batches = 1;
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<Write> writes = {{false, "first", "v"}};
  for (int i = 0; i < 10; ++i) writes.push_back({true, absl::StrCat("d", i), ""});
  const Burst burst = WriteAll(**client, *counts, writes);
  EXPECT_LE(counts->drop_batches.load(), 0) << "no batch response was dropped";
  int deduplicated = 0;
  for (size_t i = 0; i < writes.size(); ++i) {
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
    deduplicated += burst.results[i]->deduplicated ? 1 : 0;
  }
  // The node applied every delete of the lost batch; each retry found its first result.
  EXPECT_EQ(deduplicated, 10);
}

TEST_F(PutCoalescingProcessTest, ABatchWhoseResponseWasLostIsRetriedWithoutSecondVersions) {
  auto counts = std::make_shared<CountCalls::Counts>();
  counts->drop_batches = 1;
  // With the default retry budget (20 tokens, retries while more than 10 are left): the lost
  // call is charged once, not once per Put, or half of its Puts would give up at once.
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({node_.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<std::pair<std::string, std::string>> puts = NumberedPuts(20, "once");
  const Burst burst = PutAll(**client, *counts, puts);
  EXPECT_LE(counts->drop_batches.load(), 0) << "no batch response was dropped";
  int deduplicated = 0;
  for (size_t i = 0; i < puts.size(); ++i) {
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
    deduplicated += burst.results[i]->deduplicated ? 1 : 0;
  }
  // Every item of the lost batch (all but the first Put) was applied by the node, and its retry
  // found the write by its token.
  EXPECT_EQ(deduplicated, 19);
  for (const auto& [key, value] : puts) {
    EXPECT_THAT(Values(**client, key), ElementsAre("once")) << key;
  }
}

// A batch over the channel's send limit reached no node: its Puts go again alone, each under
// the limit, within their attempt.
TEST_F(PutCoalescingProcessTest, ABatchTooLargeToSendGoesAgainAsSinglePuts) {
  auto counts = std::make_shared<CountCalls::Counts>();
  ClientOptions options =
      ForcedCoalescing({node_.endpoint()}, counts, /*max_receive_bytes=*/0, 300 << 10);
  options.put_coalescing.max_batch_bytes = 1 << 20;
  options.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const Burst burst = PutAll(**client, *counts, NumberedPuts(4, std::string(200 << 10, 'v')));
  ExpectAllOk(burst);
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->puts.load(), 1 + 3);  // the held first one, then the batch's three alone
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Values(**client, absl::StrCat("k", i)).size(), 1u) << i;
  }
  // A Put over the limit alone ends at once: every attempt would meet the same limit.
  options.retry.max_attempts = 5;
  client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const int puts_before = counts->puts.load();
  const absl::StatusOr<WriteResult> big = (*client)->Put("big", std::string(400 << 10, 'v'));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("larger than a size limit"));
  EXPECT_EQ(counts->puts.load(), puts_before + 1);
}

// A batch whose answer is over the channel's receive limit was applied: its writes go again
// alone without their first-attempt marks, and the node answers each from its token.
TEST_F(PutCoalescingProcessTest, ABatchWhoseAnswerIsTooLargeIsAnsweredWriteByWrite) {
  auto counts = std::make_shared<CountCalls::Counts>();
  ClientOptions options = ForcedCoalescing({node_.endpoint()}, counts, 4 << 10);
  options.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const Burst burst = PutAll(**client, *counts, NumberedPuts(61, "v"));
  ExpectAllOk(burst);
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->puts.load(), 1 + 60);
  for (int i = 1; i < 61; ++i) {
    ASSERT_TRUE(burst.results[i].ok());
    EXPECT_TRUE(burst.results[i]->deduplicated) << i;
    EXPECT_EQ(Values(**client, absl::StrCat("k", i)).size(), 1u) << i;
  }
}

TEST_F(PutCoalescingProcessTest, WaitingPutsAreSplitIntoBatchesOfTheItemLimit) {
  auto counts = std::make_shared<CountCalls::Counts>();
  ClientOptions options = ForcedCoalescing({node_.endpoint()}, counts);
  options.put_coalescing.max_batch_items = 5;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  ASSERT_TRUE(client.ok()) << client.status();
  const Burst burst = PutAll(**client, *counts, NumberedPuts(21, "v"));
  ExpectAllOk(burst);
  EXPECT_EQ(counts->puts.load(), 1);
  EXPECT_EQ(counts->batches.load(), 4);  // the 20 that waited, 5 per batch
}

TEST_F(PutCoalescingProcessTest, PutsLeaveAfterMaxDelayWhileTheCallInFlightHangs) {
  auto counts = std::make_shared<CountCalls::Counts>();
  ClientOptions options = ForcedCoalescing({node_.endpoint()}, counts);
  options.put_coalescing.max_delay = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Notification first_done;
  (*client)->PutAsync("first", "v", {}, [&](absl::StatusOr<WriteResult> result) {
    EXPECT_TRUE(result.ok()) << result.status();
    first_done.Notify();
  });
  // The first Put's answer is held (CountCalls): the others can only leave by the flush timer.
  constexpr int kWaiting = 10;
  std::atomic<int> ok{0};
  std::atomic<int> finished{0};
  absl::Notification all_finished;
  for (int i = 0; i < kWaiting; ++i) {
    (*client)->PutAsync(absl::StrCat("k", i), "v", {}, [&](absl::StatusOr<WriteResult> result) {
      if (result.ok()) ++ok;
      if (++finished == kWaiting) all_finished.Notify();
    });
  }
  const bool left = all_finished.WaitForNotificationWithTimeout(absl::Seconds(20));
  EXPECT_TRUE(left) << "the waiting Puts did not leave while the call in flight hung";
  EXPECT_FALSE(first_done.HasBeenNotified());
  counts->Release();
  if (!left) all_finished.WaitForNotification();
  EXPECT_EQ(ok.load(), kWaiting);
  EXPECT_EQ(counts->batches.load(), 1);
  first_done.WaitForNotification();
}

TEST_F(PutCoalescingProcessTest, TheNodeRefusesOversizedBatchesAndChecksEachItem) {
  std::unique_ptr<v1::KV::Stub> stub =
      v1::KV::NewStub(grpc::CreateChannel(node_.endpoint(), grpc::InsecureChannelCredentials()));
  {
    v1::PutBatchRequest request;
    for (int i = 0; i < 1001; ++i) {
      v1::PutRequest* put = request.add_puts();
      put->set_key(absl::StrCat("k", i));
      put->set_value("v");
    }
    v1::PutBatchResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub->PutBatch(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr("1000"));
  }
  {
    // The limit counts deletes too.
    v1::PutBatchRequest request;
    for (int i = 0; i < 999; ++i) {
      v1::PutRequest* put = request.add_puts();
      put->set_key(absl::StrCat("k", i));
      put->set_value("v");
    }
    request.add_deletes()->set_key("a");
    request.add_deletes()->set_key("b");
    v1::PutBatchResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub->PutBatch(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr("1001 items"));
  }
  {
    v1::PutBatchRequest request;
    v1::PutBatchResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(stub->PutBatch(&context, request, &response).ok());
    EXPECT_EQ(response.results_size(), 0);
  }
  {
    // Deletes only: answered in order, each with its own result.
    v1::PutBatchRequest request;
    request.add_deletes()->set_key("gone");
    request.add_deletes()->set_key("");  // an empty key
    v1::DeleteRequest* bad_quorum = request.add_deletes();
    bad_quorum->set_key("quorum");
    bad_quorum->mutable_w()->set_count(2);  // a count with kind DEFAULT
    v1::PutBatchResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->PutBatch(&context, request, &response).ok());
    ASSERT_EQ(response.results_size(), 3);
    EXPECT_EQ(response.results(0).code(), 0) << response.results(0).message();
    EXPECT_FALSE(response.results(0).delete_response().write_id().empty());
    EXPECT_TRUE(response.results(0).response().write_id().empty());
    EXPECT_EQ(response.results(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(response.results(2).code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(response.results(2).message(), ::testing::HasSubstr("kind COUNT"));
  }
  {
    // One token on two items of other keys, both marked as first attempts: a token names one
    // write, so one of them is refused as a reuse (not both recorded, each as if unseen).
    v1::PutBatchRequest request;
    for (const char* key : {"dup-a", "dup-b"}) {
      v1::PutRequest* put = request.add_puts();
      put->set_key(key);
      put->set_value("v");
      put->set_idempotency_token("one-token-two-writes");
      put->set_first_attempt(true);
    }
    v1::PutBatchResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->PutBatch(&context, request, &response).ok());
    ASSERT_EQ(response.results_size(), 2);
    EXPECT_EQ(response.results(0).code(), 0) << response.results(0).message();
    EXPECT_EQ(response.results(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(response.results(1).message(), ::testing::HasSubstr("reused"));
  }
  v1::PutBatchRequest request;
  request.add_puts()->set_key("good");
  request.mutable_puts(0)->set_value("v");
  request.add_puts()->set_key("");  // an empty key
  v1::PutRequest* bad_quorum = request.add_puts();
  bad_quorum->set_key("quorum");
  bad_quorum->mutable_w()->set_count(2);  // a count with kind DEFAULT
  v1::PutBatchResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->PutBatch(&context, request, &response).ok());
  ASSERT_EQ(response.results_size(), 3);
  EXPECT_EQ(response.results(0).code(), 0) << response.results(0).message();
  EXPECT_FALSE(response.results(0).response().write_id().empty());
  EXPECT_EQ(response.results(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(response.results(2).code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(response.results(2).message(), ::testing::HasSubstr("kind COUNT"));
}

// A node of an older version: Put and Delete only (PutBatch answers UNIMPLEMENTED, gRPC's
// default); or with kStoredFirst a node that answers the first attempt at each key as a W
// shortfall it stored (UNAVAILABLE marked kv-write-stored), and OK after; or with
// kBatchesWithoutDeletes a node whose PutBatch knows puts only (it ignores the deletes field,
// as the version before batched deletes did) and answers OK; or with kShortAnswers a broken node
// whose PutBatch answers one result fewer than it got items; or with kAnswerTooLarge a node whose
// PutBatch applies its items and then fails as gRPC does when the answer is over the channel's
// receive limit.
class FakeNode final : public v1::KV::CallbackService {
 public:
  enum class Mode {
    kNoBatches,
    kStoredFirst,
    kBatchesWithoutDeletes,
    kShortAnswers,
    kAnswerTooLarge
  };
  struct Log {
    absl::Mutex mu;
    // key -> the names of the fake nodes its attempts reached, in order.
    std::map<std::string, std::vector<std::string>> attempts ABSL_GUARDED_BY(mu);
    // key -> the first_attempt marks of its single Put and Delete calls, in order.
    std::map<std::string, std::vector<bool>> single_marks ABSL_GUARDED_BY(mu);
  };
  FakeNode(std::string name, Mode mode, std::shared_ptr<Log> log)
      : name_(std::move(name)),
        batches_(mode != Mode::kNoBatches),
        batched_deletes_(mode == Mode::kStoredFirst || mode == Mode::kShortAnswers ||
                         mode == Mode::kAnswerTooLarge),
        stored_first_(mode == Mode::kStoredFirst),
        short_answers_(mode == Mode::kShortAnswers),
        answer_too_large_(mode == Mode::kAnswerTooLarge),
        log_(std::move(log)) {}

  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    v1::PutResponse put_response;
    LogMark(request->key(), request->first_attempt());
    const bool stored = Answer(request->key(), &put_response);
    response->set_write_id(put_response.write_id());
    if (stored) context->AddTrailingMetadata("kv-write-stored", "1");
    reactor->Finish(stored ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "1 of 2 acks (fake)")
                           : grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest* request,
                                v1::PutResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    LogMark(request->key(), request->first_attempt());
    const bool stored = Answer(request->key(), response);
    if (stored) context->AddTrailingMetadata("kv-write-stored", "1");
    reactor->Finish(stored ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "1 of 2 acks (fake)")
                           : grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* PutBatch(grpc::CallbackServerContext* context,
                                     const v1::PutBatchRequest* request,
                                     v1::PutBatchResponse* response) override {
    if (!batches_) return v1::KV::CallbackService::PutBatch(context, request, response);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    auto answer = [this, response](const std::string& key, bool is_delete) {
      v1::PutBatchResult* result = response->add_results();
      v1::PutResponse put_response;
      if (Answer(key, &put_response)) {
        result->set_code(grpc::StatusCode::UNAVAILABLE);
        result->set_message("1 of 2 acks (fake)");
        result->set_write_stored(true);
      } else if (is_delete) {
        result->mutable_delete_response()->set_write_id(put_response.write_id());
      } else {
        *result->mutable_response() = put_response;
      }
    };
    for (const v1::PutRequest& put : request->puts()) answer(put.key(), false);
    if (batched_deletes_) {
      for (const v1::DeleteRequest& del : request->deletes()) answer(del.key(), true);
    }
    if (short_answers_ && response->results_size() > 0) response->mutable_results()->RemoveLast();
    if (answer_too_large_) {
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   "Received message larger than max (9000 vs. 4096)"));
      return reactor;
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  void LogMark(const std::string& key, bool first_attempt) {
    absl::MutexLock lock(&log_->mu);
    log_->single_marks[key].push_back(first_attempt);
  }
  // Logs the attempt; true if it is the first at this key and stored_first_ (answer: stored).
  bool Answer(const std::string& key, v1::PutResponse* response) {
    absl::MutexLock lock(&log_->mu);
    std::vector<std::string>& attempts = log_->attempts[key];
    attempts.push_back(name_);
    response->set_write_id(absl::StrCat(name_, ":", key));
    return stored_first_ && attempts.size() == 1;
  }

  const std::string name_;
  const bool batches_;
  const bool batched_deletes_;
  const bool stored_first_;
  const bool short_answers_;
  const bool answer_too_large_;
  std::shared_ptr<Log> log_;
};

TEST(PutCoalescingFakeNodeTest, ANodeWithoutPutBatchGetsSinglePuts) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode old_node("old", FakeNode::Mode::kNoBatches, log);
  testing::LoopbackServer server({&old_node});
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  for (int round = 0; round < 2; ++round) {
    std::vector<std::pair<std::string, std::string>> puts;
    for (int i = 0; i < 10; ++i) puts.push_back({absl::StrCat("r", round, "k", i), "v"});
    const Burst burst = PutAll(**client, *counts, puts);
    for (size_t i = 0; i < puts.size(); ++i) {
      ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
      EXPECT_EQ(burst.results[i]->write_id, "old:" + puts[i].first);
    }
  }
  // One PutBatch was tried (UNIMPLEMENTED) and its items went again alone; the second round
  // sent single Puts only.
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->puts.load(), 20);
  absl::MutexLock lock(&log->mu);
  EXPECT_EQ(log->attempts.size(), 20u);
  for (const auto& [key, attempts] : log->attempts) EXPECT_THAT(attempts, ElementsAre("old"));
}

TEST(PutCoalescingFakeNodeTest, ANodeWhosePutBatchIgnoresDeletesGetsThemAlone) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode old_node("old", FakeNode::Mode::kBatchesWithoutDeletes, log);
  testing::LoopbackServer server({&old_node});
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  for (int round = 0; round < 2; ++round) {
    // Each round's first Put goes alone, its answer held while the rest wait for it. Round 0
    // interleaves Puts and Deletes. Round 1 issues its Puts first, so that they all wait before
    // any Delete (alone by then) finishes and lets them leave as one batch.
    std::vector<Write> writes = {{false, absl::StrCat("r", round, "first"), "v"}};
    for (int i = 0; i < 5; ++i) {
      if (round == 0) writes.push_back({true, absl::StrCat("r", round, "d", i), ""});
      writes.push_back({false, absl::StrCat("r", round, "p", i), "v"});
    }
    if (round == 1) {
      for (int i = 0; i < 5; ++i) writes.push_back({true, absl::StrCat("r", round, "d", i), ""});
    }
    counts->HoldNextPut();
    const Burst burst = WriteAll(**client, *counts, writes);
    for (size_t i = 0; i < writes.size(); ++i) {
      ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
      EXPECT_EQ(burst.results[i]->write_id, "old:" + writes[i].key);
    }
  }
  // Round 0: the first Put alone, then one PutBatch whose 5 deletes the node ignored: they went
  // again alone. Round 1: the Deletes alone (remembered for a minute), the Puts still batched.
  EXPECT_EQ(counts->batches.load(), 2);
  EXPECT_EQ(counts->puts.load(), 2);
  EXPECT_EQ(counts->deletes.load(), 5 + 5);
  absl::MutexLock lock(&log->mu);
  EXPECT_EQ(log->attempts.size(), 22u);
  for (const auto& [key, attempts] : log->attempts) EXPECT_THAT(attempts, ElementsAre("old"));
}

TEST(PutCoalescingFakeNodeTest, ABatchOfDeletesOnlyThatTheNodeIgnoredGoesAgainAlone) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode old_node("old", FakeNode::Mode::kBatchesWithoutDeletes, log);
  testing::LoopbackServer server({&old_node});
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  // The first Put goes alone, its answer held; the Deletes wait and leave as one batch, which
  // the node answers with no result at all.
  std::vector<Write> writes = {{false, "first", "v"}};
  for (int i = 0; i < 5; ++i) writes.push_back({true, absl::StrCat("d", i), ""});
  const Burst burst = WriteAll(**client, *counts, writes);
  for (size_t i = 0; i < writes.size(); ++i) {
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
    EXPECT_EQ(burst.results[i]->write_id, "old:" + writes[i].key);
  }
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->puts.load(), 1);
  EXPECT_EQ(counts->deletes.load(), 5);
  absl::MutexLock lock(&log->mu);
  EXPECT_EQ(log->attempts.size(), 6u);
  for (const auto& [key, attempts] : log->attempts) EXPECT_THAT(attempts, ElementsAre("old"));
}

TEST(PutCoalescingFakeNodeTest, ABatchAnsweredWithTooFewResultsSaysItsWritesMayBeApplied) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode broken("broken", FakeNode::Mode::kShortAnswers, log);
  testing::LoopbackServer server({&broken});
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  // The first Put goes alone, its answer held; the others wait and leave as one batch, which the
  // node answered with one result too few: none of them can tell its own, and each may be stored.
  std::vector<Write> writes = {{false, "first", "v"}};
  for (int i = 0; i < 4; ++i) writes.push_back({i % 2 == 1, absl::StrCat("k", i), "v"});
  const Burst burst = WriteAll(**client, *counts, writes);
  ASSERT_TRUE(burst.results[0].ok()) << burst.results[0].status();
  for (size_t i = 1; i < writes.size(); ++i) {
    EXPECT_EQ(burst.results[i].status().code(), absl::StatusCode::kInternal)
        << i << ": " << burst.results[i].status();
    EXPECT_THAT(std::string(burst.results[i].status().message()),
                AllOf(HasSubstr("answered 3 results for 4 items"),
                      HasSubstr("may have applied the writes")));
  }
  EXPECT_EQ(counts->batches.load(), 1);
  absl::MutexLock lock(&log->mu);
  EXPECT_EQ(log->attempts.size(), writes.size());  // INTERNAL is not retried
}

// One result short with a Delete in the batch looks like a node that ignores batched deletes:
// the Delete goes again alone, without its first-attempt mark, since a broken node looks the
// same and may have applied it (a marked copy would skip the token lookup).
TEST(PutCoalescingFakeNodeTest, ADeleteSentAgainAfterAShortAnswerIsNotMarkedAFirstAttempt) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode broken("broken", FakeNode::Mode::kShortAnswers, log);
  testing::LoopbackServer server({&broken});
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<Write> writes = {
      {false, "first", "v"}, {false, "k0", "v"}, {false, "k1", "v"}, {true, "d0", ""}};
  const Burst burst = WriteAll(**client, *counts, writes);
  for (size_t i = 0; i < writes.size(); ++i) {
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
  }
  EXPECT_EQ(counts->batches.load(), 1);
  EXPECT_EQ(counts->deletes.load(), 1);
  absl::MutexLock lock(&log->mu);
  EXPECT_THAT(log->single_marks["first"], ElementsAre(true));
  EXPECT_THAT(log->single_marks["d0"], ElementsAre(false));
}

// A batch the node applied but whose answer the channel refused: each write goes again alone
// without its first-attempt mark, so that the node looks its token up (marked, it would skip the
// lookup and could apply a write whose record has forgotten it twice).
TEST(PutCoalescingFakeNodeTest, WritesSentAgainAfterAnAnswerTooLargeAreNotMarkedFirstAttempts) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode node("n", FakeNode::Mode::kAnswerTooLarge, log);
  testing::LoopbackServer server({&node});
  auto counts = std::make_shared<CountCalls::Counts>();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(ForcedCoalescing({server.endpoint()}, counts));
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<Write> writes = {
      {false, "first", "v"}, {false, "k0", "v"}, {false, "k1", "v"}, {true, "d0", ""}};
  const Burst burst = WriteAll(**client, *counts, writes);
  for (size_t i = 0; i < writes.size(); ++i) {
    ASSERT_TRUE(burst.results[i].ok()) << i << ": " << burst.results[i].status();
  }
  EXPECT_EQ(counts->batches.load(), 1);
  absl::MutexLock lock(&log->mu);
  EXPECT_THAT(log->single_marks["first"], ElementsAre(true));
  for (const char* key : {"k0", "k1", "d0"}) {
    EXPECT_THAT(log->single_marks[key], ElementsAre(false)) << key;
  }
}

TEST(PutCoalescingFakeNodeTest, AnItemStoredShortOfWIsRetriedOnTheNodeThatStoredIt) {
  auto log = std::make_shared<FakeNode::Log>();
  FakeNode a("a", FakeNode::Mode::kStoredFirst, log);
  FakeNode b("b", FakeNode::Mode::kStoredFirst, log);
  testing::LoopbackServer server_a({&a});
  testing::LoopbackServer server_b({&b});
  auto counts = std::make_shared<CountCalls::Counts>();
  ClientOptions options = ForcedCoalescing({server_a.endpoint(), server_b.endpoint()}, counts);
  options.retry.initial_backoff = absl::Milliseconds(1);
  options.retry.budget_max_tokens = 1000;  // every Put fails once on purpose
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  ASSERT_TRUE(client.ok()) << client.status();
  // Puts and Deletes: a delete's shortfall comes back marked in its batch result too.
  std::vector<Write> writes;
  for (int i = 0; i < 30; ++i) writes.push_back({i % 2 == 1, absl::StrCat("k", i), "v"});
  const Burst burst = WriteAll(**client, *counts, writes);
  ExpectAllOk(burst);
  EXPECT_GE(counts->batches.load(), 1);
  absl::MutexLock lock(&log->mu);
  ASSERT_EQ(log->attempts.size(), writes.size());
  for (const auto& [key, attempts] : log->attempts) {
    // An UNAVAILABLE without the mark would have failed over to the other node.
    ASSERT_EQ(attempts.size(), 2u) << key;
    EXPECT_EQ(attempts[0], attempts[1]) << key << " was retried on another node";
  }
}

}  // namespace
}  // namespace kv

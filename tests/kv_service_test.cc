// KvService over a real LocalStore (MemoryEngine) and Coordinator of a one-node ring, served on
// loopback: the order of its refusals. Bad input is refused as such (INVALID_ARGUMENT, which
// clients do not retry) also while the storage is behind and sheds load with RESOURCE_EXHAUSTED
// (which clients retry): a write that can never succeed must not spend a client's retries.
#include "node/kv_service.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "node/call_gate.h"
#include "node/coordinator.h"
#include "node/placement.h"
#include "node/replication_outbox.h"
#include "storage/memory_engine.h"
#include "storage/steady_timer.h"
#include "tests/loopback_server.h"
#include "tests/manual_scheduler.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

using ::testing::HasSubstr;
using testing::ManualScheduler;
using testing::QueueExecutor;

// Records the deadline of each write it is asked to forward, and answers UNAVAILABLE. Holds
// every record read until the test answers it.
class RecordingTransport : public testing::StubPeerTransport {
 public:
  using ReadDone = std::function<void(absl::StatusOr<std::string>)>;
  void ReadRecord(const Member&, std::string, ReadDone done) override {
    absl::MutexLock lock(&mu_);
    held_reads_.push_back(std::move(done));
    ++reads_;
    most_held_ = std::max(most_held_, held_reads_.size());
  }
  // Answers the reads held now NOT_FOUND; returns how many.
  size_t AnswerHeldReads() {
    std::vector<ReadDone> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_reads_);
    }
    for (ReadDone& done : held) done(absl::NotFoundError("no record"));
    return held.size();
  }
  size_t held_reads() const {
    absl::MutexLock lock(&mu_);
    return held_reads_.size();
  }
  size_t most_held_reads() const {
    absl::MutexLock lock(&mu_);
    return most_held_;
  }
  size_t reads() const {
    absl::MutexLock lock(&mu_);
    return reads_;
  }

  void ForwardWrite(const Member&, WriteCommand command, QuorumSpec,
                    std::function<void(absl::StatusOr<WriteReply>)> done) override {
    {
      absl::MutexLock lock(&mu_);
      deadlines_.push_back(command.deadline);
    }
    done(absl::UnavailableError("not forwarded in this test"));
  }
  std::vector<absl::Time> deadlines() const {
    absl::MutexLock lock(&mu_);
    return deadlines_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<absl::Time> deadlines_ ABSL_GUARDED_BY(mu_);
  std::vector<ReadDone> held_reads_ ABSL_GUARDED_BY(mu_);
  size_t most_held_ ABSL_GUARDED_BY(mu_) = 0;
  size_t reads_ ABSL_GUARDED_BY(mu_) = 0;
};

class KvServiceTest : public ::testing::Test {
 protected:
  // The ring's members; n1 is the node under test.
  virtual std::vector<Member> Members() const { return {Member{"n1", "127.0.0.1:1", ""}}; }

  void SetUp() override {
    const std::vector<Member> members = Members();
    holder_ = std::make_unique<PlacementHolder>(
        Placement::Fixed(std::make_shared<const HashRing>(HashRing::Build(members).value())));
    LocalStore::Options options;
    options.commit_executor = &commits_;  // runs only when the test says: the storage is behind
    options.max_queued_write_bytes = 10 << 10;
    store_ = LocalStore::Open(&engine_, &clock_, rng_, "n1", options).value();
    outbox_ = std::make_unique<ReplicationOutbox>(std::vector<Member>{}, &engine_, &transport_,
                                                  &scheduler_, &executor_, rng_,
                                                  ReplicationOutbox::Options{});
    ASSERT_TRUE(outbox_->Recover().ok());
    ClusterOptions cluster;
    cluster.self_id = "n1";
    cluster.replication_factor = 1;
    cluster.default_w = 1;
    coordinator_ = std::make_unique<Coordinator>(cluster, holder_.get(), store_.get(),
                                                 outbox_.get(), &transport_, &executor_, &clock_);
    service_ = std::make_unique<KvService>(coordinator_.get(), store_.get(), &executor_, &gate_);
    server_ = std::make_unique<testing::LoopbackServer>(
        std::initializer_list<grpc::Service*>{service_.get()});
    ASSERT_TRUE(server_->ok());
    stub_ = v1::KV::NewStub(
        grpc::CreateChannel(server_->endpoint(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    commits_.Drain();  // the writes queued by the test are answered
    executor_.Drain();
    server_.reset();
    service_.reset();
    coordinator_.reset();
    outbox_->Shutdown();
    executor_.Drain();
  }

  // Queues writes straight into the store until it sheds load (its commits do not run).
  void FillTheCommitQueue() {
    for (int i = 0; i < 100 && store_->AdmitWrites().ok(); ++i) {
      store_->WriteAsync({absl::StrCat("queued", i), false, std::string(1000, 'v'), "", ""}, {},
                         [](absl::StatusOr<WriteOutcome>) {});
    }
    ASSERT_TRUE(absl::IsResourceExhausted(store_->AdmitWrites()));
  }

  grpc::Status Put(const v1::PutRequest& request) {
    grpc::ClientContext context;
    v1::PutResponse response;
    return stub_->Put(&context, request, &response);
  }

  ManualClock clock_;
  std::mt19937_64 rng_{11};
  MemoryEngine engine_;
  QueueExecutor commits_;
  QueueExecutor executor_;
  ManualScheduler scheduler_{&clock_, &executor_};
  RecordingTransport transport_;
  CallGate gate_;
  std::unique_ptr<PlacementHolder> holder_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<ReplicationOutbox> outbox_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<KvService> service_;
  std::unique_ptr<testing::LoopbackServer> server_;
  std::unique_ptr<v1::KV::Stub> stub_;
};

TEST_F(KvServiceTest, BadInputIsRefusedAsSuchWhileTheStorageIsBehind) {
  ASSERT_NO_FATAL_FAILURE(FillTheCommitQueue());
  v1::PutRequest too_large;
  too_large.set_key("k");
  too_large.set_value(std::string((1 << 20) + 1, 'v'));  // over max_value_bytes (1 MiB)
  grpc::Status status = Put(too_large);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("max_value_bytes"));

  v1::PutRequest bad_token;
  bad_token.set_key("k");
  bad_token.set_value("v");
  bad_token.set_idempotency_token("with a space");
  status = Put(bad_token);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  v1::PutBatchRequest too_many;
  for (int i = 0; i < kMaxPutBatchItems + 1; ++i) {
    v1::PutRequest* put = too_many.add_puts();
    put->set_key(absl::StrCat("b", i));
    put->set_value("v");
  }
  grpc::ClientContext context;
  v1::PutBatchResponse batch_response;
  status = stub_->PutBatch(&context, too_many, &batch_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  // A well-formed write is shed, to be retried.
  v1::PutRequest fine;
  fine.set_key("k");
  fine.set_value("v");
  status = Put(fine);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("storage is behind"));
}

// n1 replicates none of the keys it is asked for (N=1 on a ring of two): it forwards them.
class KvServiceForwardingTest : public KvServiceTest {
 protected:
  std::vector<Member> Members() const override {
    return {Member{"n1", "127.0.0.1:1", ""}, Member{"n2", "127.0.0.1:2", ""}};
  }
  // A key whose one replica is n2.
  std::string KeyOfN2() const {
    for (int i = 0;; ++i) {
      std::string key = absl::StrCat("key", i);
      if (!holder_->Get()->current().IsReplica(key, 1, "n1")) return key;
    }
  }
};

// The forwarded call waits no longer than the client does (GrpcPeerTransport bounds its own
// wait by the command's deadline): the client's deadline goes with the command, for a Put and
// for each item of a PutBatch, and a call without one forwards a command without one.
TEST_F(KvServiceForwardingTest, AForwardedWriteCarriesItsClientsDeadline) {
  const std::string key = KeyOfN2();
  v1::PutRequest put;
  put.set_key(key);
  put.set_value("v");
  const absl::Time before = SteadyNow();
  {
    grpc::ClientContext context;
    context.set_deadline(WallDeadlineAfter(absl::Seconds(30)));
    v1::PutResponse response;
    EXPECT_EQ(stub_->Put(&context, put, &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  {
    grpc::ClientContext context;
    context.set_deadline(WallDeadlineAfter(absl::Seconds(40)));
    v1::PutBatchRequest batch;
    *batch.add_puts() = put;
    v1::PutBatchResponse response;
    EXPECT_TRUE(stub_->PutBatch(&context, batch, &response).ok());
  }
  EXPECT_EQ(Put(put).error_code(), grpc::StatusCode::UNAVAILABLE);  // no deadline
  const std::vector<absl::Time> deadlines = transport_.deadlines();
  ASSERT_EQ(deadlines.size(), 3u);
  // gRPC carries a deadline as a timeout, so it may arrive a little earlier than it was set;
  // and the system clock it is read on may drift a little from SteadyNow's.
  EXPECT_GT(deadlines[0], before + absl::Seconds(25));
  EXPECT_LT(deadlines[0], SteadyNow() + absl::Seconds(31));
  EXPECT_GT(deadlines[1], before + absl::Seconds(35));
  EXPECT_LT(deadlines[1], SteadyNow() + absl::Seconds(41));
  EXPECT_EQ(deadlines[2], absl::InfiniteFuture());
}

// A GetBatch reads at most kGetBatchReadsInFlight of its items through the coordinator at once
// (each read holds a record until its item is answered), and starts the next as each finishes.
TEST_F(KvServiceForwardingTest, AGetBatchReadsBoundedlyManyItemsAtOnce) {
  const std::string key = KeyOfN2();  // read from n2: n1 holds no replica of it
  constexpr size_t kItems = 2 * kGetBatchReadsInFlight + 10;
  v1::GetBatchRequest batch;
  for (size_t i = 0; i < kItems; ++i) batch.add_gets()->set_key(key);
  grpc::ClientContext context;
  v1::GetBatchResponse response;
  absl::Notification done;
  grpc::Status status;
  stub_->async()->GetBatch(&context, &batch, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (transport_.held_reads() < kGetBatchReadsInFlight && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  absl::SleepFor(absl::Milliseconds(200));  // room for reads beyond the bound to start
  EXPECT_EQ(transport_.held_reads(), kGetBatchReadsInFlight);
  while (!done.HasBeenNotified() && absl::Now() < give_up) {
    if (transport_.AnswerHeldReads() == 0) absl::SleepFor(absl::Milliseconds(5));
  }
  if (!done.HasBeenNotified()) {  // the call's state is on this stack: end it before returning
    context.TryCancel();
    while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(10))) {
      transport_.AnswerHeldReads();
    }
    FAIL() << "the GetBatch did not finish once every read was answered";
  }
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(transport_.reads(), kItems);
  EXPECT_EQ(transport_.most_held_reads(), kGetBatchReadsInFlight);
  ASSERT_EQ(response.results_size(), static_cast<int>(kItems));
  for (const v1::GetBatchResult& result : response.results()) {
    EXPECT_EQ(result.code(), static_cast<int>(absl::StatusCode::kNotFound)) << result.message();
  }
}

// The items a GetBatch has not started reading when its call ends (deadline or cancel) are not
// read at all: their reads would answer no one.
TEST_F(KvServiceForwardingTest, AGetBatchStartsNoReadAfterItsDeadline) {
  const std::string key = KeyOfN2();
  v1::GetBatchRequest batch;
  for (size_t i = 0; i < 2 * kGetBatchReadsInFlight; ++i) batch.add_gets()->set_key(key);
  grpc::ClientContext context;
  context.set_deadline(WallDeadlineAfter(absl::Seconds(2)));
  v1::GetBatchResponse response;
  absl::Notification done;
  grpc::Status status;
  stub_->async()->GetBatch(&context, &batch, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();  // the reads are held past the deadline
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  // The server's deadline comes a little after the client's: gRPC sends the time left, which the
  // server counts from the call's arrival.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(transport_.held_reads(), kGetBatchReadsInFlight);
  // Answered now, the reads make room for items whose turn comes after the deadline.
  transport_.AnswerHeldReads();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(transport_.reads(), kGetBatchReadsInFlight);
  EXPECT_EQ(transport_.held_reads(), 0u);
  // Reads started anyway are answered, so that the call ends and the server can stop.
  while (transport_.AnswerHeldReads() > 0) absl::SleepFor(absl::Milliseconds(50));
}

}  // namespace
}  // namespace kv

// KvService over a real LocalStore (MemoryEngine) and Coordinator of a one-node ring, served on
// loopback: the order of its refusals. Bad input is refused as such (INVALID_ARGUMENT, which
// clients do not retry) also while the storage is behind and sheds load with RESOURCE_EXHAUSTED
// (which clients retry): a write that can never succeed must not spend a client's retries.
#include "node/kv_service.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "node/call_gate.h"
#include "node/coordinator.h"
#include "node/placement.h"
#include "node/replication_outbox.h"
#include "storage/memory_engine.h"
#include "tests/loopback_server.h"
#include "tests/manual_scheduler.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

using ::testing::HasSubstr;
using testing::ManualScheduler;
using testing::QueueExecutor;

class KvServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<Member> members = {Member{"n1", "127.0.0.1:1", ""}};
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
  testing::StubPeerTransport transport_;
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

}  // namespace
}  // namespace kv

// kv::Client against an in-process gRPC server whose KV service is a scripted fake: it answers
// each request with the next scripted status code (OK once the script is used up), optionally
// marking failures as a stored write's W shortfall, and records every request, so the tests can
// count attempts, see where they went and compare idempotency tokens.
#include "client/kv_client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/kv_client_convert.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// Finishes only when the client gives up on the call (deadline or cancellation).
class HangingReactor : public grpc::ServerUnaryReactor {
 public:
  void OnCancel() override { Finish(grpc::Status::CANCELLED); }
  void OnDone() override { delete this; }
};

// A two-member cluster as node `node_id` would describe it: itself, and a peer that is down.
void FillClusterStatus(const std::string& node_id, v1::ClusterStatusResponse* response) {
  response->set_node_id(node_id);
  response->set_replication_factor(3);
  response->set_default_w(2);
  response->set_default_r(1);
  v1::MemberStatus* self = response->add_members();
  self->set_node_id(node_id);
  self->set_address("127.0.0.1:7700");
  self->set_zone("z1");
  self->set_self(true);
  self->set_reachable(true);
  v1::MemberStatus* peer = response->add_members();
  peer->set_node_id("n2");
  peer->set_address("127.0.0.1:7701");
  peer->set_outbox_depth(57);
  peer->set_outbox_dropped(3);
  peer->set_sent_records(1234);
  peer->set_last_error("connection refused");
  peer->set_last_success_unix_micros(1'700'000'000'000'000);
  response->set_writes_coordinated(10);
  response->set_writes_forwarded(4);
  response->set_read_repairs(2);
  response->set_replication_lag_p50_us(1500);
  response->set_replication_lag_p99_us(9000);
  response->set_replication_lag_max_us(12000);
  response->set_replication_lag_samples(812);
}

// Test-only KV and Admin services. Thread-safe.
class ScriptedKv final : public v1::KV::CallbackService, public v1::Admin::CallbackService {
 public:
  // The codes answered to the next requests (any method), in order; OK afterwards.
  void Script(std::vector<grpc::StatusCode> codes) {
    absl::MutexLock lock(&mu_);
    script_.assign(codes.begin(), codes.end());
  }
  void FailAll(grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    fail_all_ = code;
  }
  void HangAll() {
    absl::MutexLock lock(&mu_);
    hang_ = true;
  }
  // The next `count` failed answers carry the trailing metadata "kv-write-stored".
  void MarkWriteStored(int count) {
    absl::MutexLock lock(&mu_);
    write_stored_marks_ = count;
  }
  void SetGetResponse(v1::GetResponse response) {
    absl::MutexLock lock(&mu_);
    get_response_ = std::move(response);
  }
  void SetDescribeWriteResponse(v1::DescribeWriteResponse response) {
    absl::MutexLock lock(&mu_);
    describe_write_response_ = std::move(response);
  }
  // Names this server in ClusterStatus answers.
  void SetNodeId(std::string node_id) {
    absl::MutexLock lock(&mu_);
    node_id_ = std::move(node_id);
  }
  // The state GetOperation reports (a newer node's may be one this client does not know).
  void SetOperationState(int state) {
    absl::MutexLock lock(&mu_);
    operation_state_ = state;
  }
  std::vector<std::string> described_write_ids() const {
    absl::MutexLock lock(&mu_);
    return described_write_ids_;
  }
  std::vector<v1::PutRequest> puts() const {
    absl::MutexLock lock(&mu_);
    return puts_;
  }
  std::vector<v1::DeleteRequest> deletes() const {
    absl::MutexLock lock(&mu_);
    return deletes_;
  }
  int requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  std::vector<v1::StartRepairRequest> repairs() const {
    absl::MutexLock lock(&mu_);
    return repairs_;
  }
  std::vector<v1::ChangeMembershipRequest> membership_changes() const {
    absl::MutexLock lock(&mu_);
    return membership_changes_;
  }

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest* request,
                                v1::PutResponse* response) override {
    absl::MutexLock lock(&mu_);
    puts_.push_back(*request);
    response->set_write_id(absl::StrCat("w", puts_.size()));
    response->set_context("put-context");
    return Answer(context);
  }
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override {
    absl::MutexLock lock(&mu_);
    deletes_.push_back(*request);
    response->set_write_id("d1");
    response->set_deduplicated(true);
    return Answer(context);
  }
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override {
    absl::MutexLock lock(&mu_);
    *response = get_response_;
    return Answer(context);
  }
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListRequest* request,
                                 v1::ListResponse* response) override {
    absl::MutexLock lock(&mu_);
    response->add_keys(request->prefix() + "1");
    response->add_keys(request->prefix() + "2");
    response->set_next_page_token(
        absl::StrCat("after:", request->page_token(), ":", request->limit()));
    return Answer(context);
  }
  grpc::ServerUnaryReactor* DescribeKey(grpc::CallbackServerContext* context,
                                        const v1::DescribeKeyRequest* request,
                                        v1::DescribeKeyResponse* response) override {
    absl::MutexLock lock(&mu_);
    response->set_key(request->key());
    v1::ReplicaView* replica = response->add_replicas();
    replica->set_node_id("n1");
    replica->set_reachable(true);
    replica->set_has_record(true);
    replica->set_context("{n1:2}");
    v1::Sibling* tombstone = replica->add_siblings();
    tombstone->set_tombstone(true);
    tombstone->set_dot("n1:2");
    tombstone->set_timestamp_micros(7);
    v1::ReplicaView* down = response->add_replicas();
    down->set_node_id("n2");
    down->set_error("connection refused");
    return Answer(context);
  }
  grpc::ServerUnaryReactor* DescribeWrite(grpc::CallbackServerContext* context,
                                          const v1::DescribeWriteRequest* request,
                                          v1::DescribeWriteResponse* response) override {
    absl::MutexLock lock(&mu_);
    described_write_ids_.push_back(request->write_id());
    *response = describe_write_response_;
    return Answer(context);
  }
  grpc::ServerUnaryReactor* ClusterStatus(grpc::CallbackServerContext* context,
                                          const v1::ClusterStatusRequest*,
                                          v1::ClusterStatusResponse* response) override {
    absl::MutexLock lock(&mu_);
    FillClusterStatus(node_id_, response);
    return Answer(context);
  }
  grpc::ServerUnaryReactor* StartRepair(grpc::CallbackServerContext* context,
                                        const v1::StartRepairRequest* request,
                                        v1::StartRepairResponse* response) override {
    absl::MutexLock lock(&mu_);
    repairs_.push_back(*request);
    response->set_operation_id(absl::StrCat(node_id_, ":1-", repairs_.size()));
    response->set_node_id(node_id_);
    response->set_deduplicated(repairs_.size() > 1);
    return Answer(context);
  }
  grpc::ServerUnaryReactor* ChangeMembership(grpc::CallbackServerContext* context,
                                             const v1::ChangeMembershipRequest* request,
                                             v1::ChangeMembershipResponse* response) override {
    absl::MutexLock lock(&mu_);
    membership_changes_.push_back(*request);
    if (request->commit()) {
      response->set_operation_id(absl::StrCat(node_id_, ":1-", membership_changes_.size()));
      response->set_node_id(node_id_);
      response->set_deduplicated(true);
    }
    return Answer(context);
  }
  // Knows the operations whose id names this server's node id (as a node knows only its own).
  grpc::ServerUnaryReactor* GetOperation(grpc::CallbackServerContext* context,
                                         const v1::GetOperationRequest* request,
                                         v1::GetOperationResponse* response) override {
    return AnswerAboutOperation(context, request->operation_id(), std::nullopt,
                                response->mutable_operation());
  }
  // Cancels any operation it knows: it comes back FAILED.
  grpc::ServerUnaryReactor* CancelOperation(grpc::CallbackServerContext* context,
                                            const v1::CancelOperationRequest* request,
                                            v1::CancelOperationResponse* response) override {
    return AnswerAboutOperation(context, request->operation_id(), v1::Operation::FAILED,
                                response->mutable_operation());
  }
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context, const v1::PingRequest*,
                                 v1::PingResponse* response) override {
    absl::MutexLock lock(&mu_);
    response->set_node_id("fake");
    return Answer(context);
  }

 private:
  // Operation `id` in `state` (absent: as SetOperationState said), or NOT_FOUND marked as another
  // node's as kvnode marks it (node/admin_service.h); scripted codes first.
  grpc::ServerUnaryReactor* AnswerAboutOperation(grpc::CallbackServerContext* context,
                                                 const std::string& id, std::optional<int> state,
                                                 v1::Operation* operation) {
    absl::MutexLock lock(&mu_);
    if ((!script_.empty() && script_.front() != grpc::StatusCode::OK) ||
        fail_all_ != grpc::StatusCode::OK) {
      return Answer(context);
    }
    ++requests_;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (!absl::StartsWith(id, absl::StrCat(node_id_, ":"))) {
      context->AddTrailingMetadata("kv-operation-elsewhere", "1");
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "operation of another node"));
      return reactor;
    }
    operation->set_operation_id(id);
    operation->set_node_id(node_id_);
    operation->set_state(static_cast<v1::Operation::State>(state.value_or(operation_state_)));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++requests_;
    if (hang_) return new HangingReactor;
    grpc::StatusCode code = fail_all_;
    if (!script_.empty()) {
      code = script_.front();
      script_.pop_front();
    }
    if (code != grpc::StatusCode::OK && write_stored_marks_ > 0) {
      --write_stored_marks_;
      context->AddTrailingMetadata("kv-write-stored", "1");
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(code == grpc::StatusCode::OK
                        ? grpc::Status::OK
                        : grpc::Status(code, absl::StrCat("scripted code ", code)));
    return reactor;
  }

  mutable absl::Mutex mu_;
  std::deque<grpc::StatusCode> script_ ABSL_GUARDED_BY(mu_);
  grpc::StatusCode fail_all_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  bool hang_ ABSL_GUARDED_BY(mu_) = false;
  int write_stored_marks_ ABSL_GUARDED_BY(mu_) = 0;
  std::string node_id_ ABSL_GUARDED_BY(mu_) = "fake";
  int operation_state_ ABSL_GUARDED_BY(mu_) = v1::Operation::RUNNING;
  v1::GetResponse get_response_ ABSL_GUARDED_BY(mu_);
  v1::DescribeWriteResponse describe_write_response_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> described_write_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::PutRequest> puts_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::DeleteRequest> deletes_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::StartRepairRequest> repairs_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ChangeMembershipRequest> membership_changes_ ABSL_GUARDED_BY(mu_);
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
};

// A ScriptedKv served on 127.0.0.1 at a port chosen by the kernel.
class FakeServer {
 public:
  FakeServer() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(static_cast<v1::KV::CallbackService*>(&kv_));
    builder.RegisterService(static_cast<v1::Admin::CallbackService*>(&kv_));
    server_ = builder.BuildAndStart();
    endpoint_ = absl::StrCat("127.0.0.1:", port);
  }
  ~FakeServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  ScriptedKv& kv() { return kv_; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  ScriptedKv kv_;
  std::unique_ptr<grpc::Server> server_;
  std::string endpoint_;
};

// A loopback port nothing listens on (bound, then released).
std::string DeadEndpoint() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

// A loopback endpoint that never completes a connection, like a host that drops packets: it
// listens with a full accept queue and never accepts, so new connections' SYNs are dropped.
class BlackHoleEndpoint {
 public:
  BlackHoleEndpoint() {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listener_, 0);
    socklen_t len = sizeof(addr);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    endpoint_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
    for (int i = 0; i < 2; ++i) {  // fill the queue (a backlog of 0 holds one)
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      fillers_.push_back(fd);
    }
  }
  ~BlackHoleEndpoint() {
    for (int fd : fillers_) close(fd);
    close(listener_);
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  int listener_ = -1;
  std::vector<int> fillers_;
  std::string endpoint_;
};

ClientOptions FastOptions(std::vector<std::string> endpoints) {
  ClientOptions options;
  options.endpoints = std::move(endpoints);
  options.call_deadline = absl::Seconds(10);
  options.retry.initial_backoff = absl::Milliseconds(1);
  options.retry.max_backoff = absl::Milliseconds(5);
  return options;
}

std::unique_ptr<Client> MakeClient(ClientOptions options) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

class KvClientTest : public ::testing::Test {
 protected:
  FakeServer server_;
};

class RetryableCodeTest : public KvClientTest,
                          public ::testing::WithParamInterface<grpc::StatusCode> {};

TEST_P(RetryableCodeTest, IsRetriedUntilSuccess) {
  server_.kv().Script({GetParam(), GetParam()});
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  absl::StatusOr<WriteResult> put = client->Put("k", "v");
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->write_id, "w3");
  EXPECT_EQ(server_.kv().requests(), 3);
}

INSTANTIATE_TEST_SUITE_P(All, RetryableCodeTest,
                         ::testing::Values(grpc::StatusCode::UNAVAILABLE,
                                           grpc::StatusCode::RESOURCE_EXHAUSTED,
                                           grpc::StatusCode::ABORTED,
                                           grpc::StatusCode::DEADLINE_EXCEEDED));

class NonRetryableCodeTest : public KvClientTest,
                             public ::testing::WithParamInterface<grpc::StatusCode> {};

TEST_P(NonRetryableCodeTest, IsTriedOnceAndKeepsCodeAndMessage) {
  server_.kv().Script({GetParam()});
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  absl::StatusOr<WriteResult> put = client->Put("k", "v");
  EXPECT_EQ(static_cast<int>(put.status().code()), static_cast<int>(GetParam()));
  EXPECT_EQ(put.status().message(), absl::StrCat("scripted code ", GetParam()));
  EXPECT_EQ(server_.kv().requests(), 1);
}

INSTANTIATE_TEST_SUITE_P(
    All, NonRetryableCodeTest,
    ::testing::Values(grpc::StatusCode::UNKNOWN, grpc::StatusCode::INVALID_ARGUMENT,
                      grpc::StatusCode::NOT_FOUND, grpc::StatusCode::ALREADY_EXISTS,
                      grpc::StatusCode::PERMISSION_DENIED, grpc::StatusCode::FAILED_PRECONDITION,
                      grpc::StatusCode::OUT_OF_RANGE, grpc::StatusCode::UNIMPLEMENTED,
                      grpc::StatusCode::INTERNAL, grpc::StatusCode::DATA_LOSS,
                      grpc::StatusCode::UNAUTHENTICATED));

TEST_F(KvClientTest, EveryAttemptOfOnePutCarriesTheSameToken) {
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::ABORTED});
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  ASSERT_TRUE(client->Put("k", "v1").ok());
  ASSERT_TRUE(client->Put("k", "v2").ok());
  std::vector<v1::PutRequest> puts = server_.kv().puts();
  ASSERT_THAT(puts, SizeIs(4));
  const std::string first = puts[0].idempotency_token();
  EXPECT_THAT(first, ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_EQ(puts[1].idempotency_token(), first);
  EXPECT_EQ(puts[2].idempotency_token(), first);
  EXPECT_EQ(puts[2].value(), "v1");
  EXPECT_NE(puts[3].idempotency_token(), first);  // a second logical Put
  EXPECT_EQ(puts[3].value(), "v2");
  // Only the first attempt of each says so (PutRequest.first_attempt).
  EXPECT_TRUE(puts[0].first_attempt());
  EXPECT_FALSE(puts[1].first_attempt());
  EXPECT_FALSE(puts[2].first_attempt());
  EXPECT_TRUE(puts[3].first_attempt());
}

TEST_F(KvClientTest, FirstAttemptsAreNotMarkedWhenTheClientIsToldNotTo) {
  ClientOptions options = FastOptions({server_.endpoint()});
  options.mark_first_attempts = false;
  std::unique_ptr<Client> client = MakeClient(options);
  ASSERT_TRUE(client->Put("k", "v").ok());
  ASSERT_TRUE(client->Delete("k").ok());
  ASSERT_THAT(server_.kv().puts(), SizeIs(1));
  EXPECT_FALSE(server_.kv().puts()[0].first_attempt());
  ASSERT_THAT(server_.kv().deletes(), SizeIs(1));
  EXPECT_FALSE(server_.kv().deletes()[0].first_attempt());
}

TEST_F(KvClientTest, CallerTokenIsUsedAsIsOnEveryAttempt) {
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  WriteOptions options;
  options.idempotency_token = "my-token";
  options.context = "ctx";
  options.w = Quorum::Count(2);
  ASSERT_TRUE(client->Put("k", "v", options).ok());
  std::vector<v1::PutRequest> puts = server_.kv().puts();
  ASSERT_THAT(puts, SizeIs(2));
  for (const v1::PutRequest& put : puts) {
    EXPECT_EQ(put.idempotency_token(), "my-token");
    // The caller's token may have been sent before, by another Client or process.
    EXPECT_FALSE(put.first_attempt());
    EXPECT_EQ(put.context(), "ctx");
    EXPECT_EQ(put.w().kind(), v1::Quorum::COUNT);
    EXPECT_EQ(put.w().count(), 2u);
  }
}

TEST_F(KvClientTest, DeleteRetriesWithOneToken) {
  server_.kv().Script({grpc::StatusCode::RESOURCE_EXHAUSTED});
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  absl::StatusOr<WriteResult> deleted = client->Delete("k");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_TRUE(deleted->deduplicated);
  std::vector<v1::DeleteRequest> deletes = server_.kv().deletes();
  ASSERT_THAT(deletes, SizeIs(2));
  EXPECT_FALSE(deletes[0].idempotency_token().empty());
  EXPECT_EQ(deletes[0].idempotency_token(), deletes[1].idempotency_token());
  EXPECT_TRUE(deletes[0].first_attempt());
  EXPECT_FALSE(deletes[1].first_attempt());
}

TEST_F(KvClientTest, CallDeadlineBoundsRetriesOfAFailingServer) {
  server_.kv().FailAll(grpc::StatusCode::UNAVAILABLE);
  ClientOptions options = FastOptions({server_.endpoint()});
  options.call_deadline = absl::Milliseconds(500);
  options.retry.max_attempts = 1000000;
  options.retry.budget_max_tokens = 1e9;
  const absl::Time start = absl::Now();
  absl::StatusOr<WriteResult> put = MakeClient(options)->Put("k", "v");
  const absl::Duration elapsed = absl::Now() - start;
  // UNAVAILABLE from the server, or DEADLINE_EXCEEDED if the last attempt ran out of time.
  EXPECT_THAT(put.status().code(), ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                                    absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(put.status().message(), HasSubstr("kv client: gave up after"));
  EXPECT_GT(server_.kv().requests(), 2);
  EXPECT_LT(elapsed, absl::Seconds(5));
}

TEST_F(KvClientTest, ARetryThatFitsBeforeTheDeadlineIsNotSkipped) {
  // A backoff ceiling far beyond the call's deadline: the wait is drawn from the time the call
  // has left, so the retry happens (it used to give up whenever the draw landed past the
  // deadline: about 97% of such calls here).
  ClientOptions options = FastOptions({server_.endpoint()});
  options.call_deadline = absl::Milliseconds(500);
  options.retry.initial_backoff = absl::Seconds(10);
  options.retry.max_backoff = absl::Seconds(10);
  std::unique_ptr<Client> client = MakeClient(options);
  for (int i = 0; i < 5; ++i) {
    server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
    const absl::Time start = absl::Now();
    absl::StatusOr<WriteResult> put = client->Put(absl::StrCat("k", i), "v");
    EXPECT_TRUE(put.ok()) << i << ": " << put.status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  }
  EXPECT_EQ(server_.kv().requests(), 10);
}

TEST_F(KvClientTest, AttemptTimeoutsAreRetriedWithinTheCallDeadline) {
  server_.kv().HangAll();
  ClientOptions options = FastOptions({server_.endpoint()});
  options.call_deadline = absl::Seconds(1);
  options.attempt_timeout = absl::Milliseconds(100);
  const absl::Time start = absl::Now();
  absl::StatusOr<WriteResult> put = MakeClient(options)->Put("k", "v");
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(put.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(server_.kv().requests(), 2);
  EXPECT_GE(elapsed, absl::Milliseconds(150));
  EXPECT_LT(elapsed, absl::Seconds(5));
}

TEST_F(KvClientTest, PerCallDeadlineOverridesTheClientDefault) {
  server_.kv().HangAll();
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  ReadOptions options;
  options.deadline = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  absl::StatusOr<GetResult> got = client->Get("k", options);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(server_.kv().requests(), 1);  // no time left for a second attempt
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(KvClientTest, FailsOverFromADeadEndpoint) {
  std::unique_ptr<Client> client = MakeClient(FastOptions({DeadEndpoint(), server_.endpoint()}));
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<WriteResult> put = client->Put(absl::StrCat("k", i), "v");
    ASSERT_TRUE(put.ok()) << "put " << i << ": " << put.status();
  }
  EXPECT_EQ(server_.kv().requests(), 10);
}

// A long-lived client with a dead endpoint, whose channel gRPC tries again after each reconnect
// backoff (made short here): the channel stays TRANSIENT_FAILURE meanwhile, so calls keep
// skipping it instead of failing over from it, each at a cost to the retry budget (which would
// run out: one token per failover against 0.2 back per success).
TEST_F(KvClientTest, ADeadEndpointDoesNotDrainTheRetryBudget) {
  ClientOptions options = FastOptions({DeadEndpoint(), server_.endpoint()});
  options.channel_factory = [](const std::string& endpoint) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 5);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5);
    return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
  };
  std::unique_ptr<Client> client = MakeClient(options);
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<WriteResult> put = client->Put(absl::StrCat("k", i), "v");
    ASSERT_TRUE(put.ok()) << "put " << i << ": " << put.status();
    absl::SleepFor(absl::Milliseconds(10));  // past the dead channel's reconnect backoff
  }
  EXPECT_EQ(server_.kv().requests(), 100);
}

// A dead host that drops packets leaves its channel connecting: after connect_timeout gRPC gives
// up on the connection, the waiting call moves to the next endpoint, and later calls skip the
// dead one. Without the timeout the first call waits its whole deadline (gRPC's connect timeout
// is 20 s) and fails.
TEST_F(KvClientTest, AnEndpointThatNeverConnectsCostsOneCallTheConnectTimeout) {
  BlackHoleEndpoint black_hole;
  ClientOptions options = FastOptions({black_hole.endpoint(), server_.endpoint()});
  options.call_deadline = absl::Seconds(8);
  options.connect_timeout = absl::Seconds(1);
  std::unique_ptr<Client> client = MakeClient(options);
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<WriteResult> put = client->Put(absl::StrCat("k", i), "v");
    ASSERT_TRUE(put.ok()) << "put " << i << ": " << put.status();
  }
  EXPECT_EQ(server_.kv().requests(), 10);
}

TEST_F(KvClientTest, UnavailableMovesToTheNextEndpointAbortedStays) {
  FakeServer other;
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::ABORTED});
  // The first call starts at endpoint 0 (server_), fails over to `other`.
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  ASSERT_TRUE(client->Put("k", "v").ok());
  EXPECT_EQ(server_.kv().requests(), 1);
  ASSERT_THAT(other.kv().puts(), SizeIs(1));
  EXPECT_EQ(other.kv().puts()[0].idempotency_token(), server_.kv().puts()[0].idempotency_token());
  // The second call starts at endpoint 1 (`other`)... which answers OK at once; the third starts
  // at endpoint 0, gets ABORTED and retries there.
  ASSERT_TRUE(client->Put("k", "v").ok());
  EXPECT_EQ(other.kv().requests(), 2);
  ASSERT_TRUE(client->Put("k", "v").ok());
  EXPECT_EQ(server_.kv().requests(), 3);
  EXPECT_EQ(other.kv().requests(), 2);
}

// The client never cancels an attempt: a CANCELLED answer is a node dropping the call unstarted
// (gRPC answers so for calls that reach a server while it shuts down). The call moves on to
// another endpoint with the same token, like after UNAVAILABLE.
TEST_F(KvClientTest, CancelledByTheNodeIsRetriedOnTheNextEndpoint) {
  FakeServer other;
  server_.kv().Script({grpc::StatusCode::CANCELLED});
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  absl::StatusOr<WriteResult> put = client->Put("k", "v");
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(server_.kv().requests(), 1);
  ASSERT_THAT(other.kv().puts(), SizeIs(1));
  EXPECT_EQ(other.kv().puts()[0].idempotency_token(), server_.kv().puts()[0].idempotency_token());
}

TEST_F(KvClientTest, CancelledOnEveryAttemptIsReportedAsUnavailable) {
  server_.kv().FailAll(grpc::StatusCode::CANCELLED);
  ClientOptions options = FastOptions({server_.endpoint()});
  options.retry.max_attempts = 3;
  absl::StatusOr<GetResult> get = MakeClient(options)->Get("k");
  EXPECT_EQ(get.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      get.status().message(),
      HasSubstr("the node dropped the call before starting it (CANCELLED: scripted code 1)"));
  EXPECT_THAT(get.status().message(), HasSubstr("gave up after 3 attempts"));
  EXPECT_EQ(server_.kv().requests(), 3);
}

TEST_F(KvClientTest, RoundRobinSpreadsCallsOverEndpoints) {
  FakeServer other;
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  server_.kv().SetGetResponse(v1::GetResponse());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(client->Get("k").ok());
  EXPECT_EQ(server_.kv().requests(), 5);
  EXPECT_EQ(other.kv().requests(), 5);
}

TEST_F(KvClientTest, BudgetStopsRetryingAfterManyFailuresAndSuccessesRefillIt) {
  server_.kv().FailAll(grpc::StatusCode::UNAVAILABLE);
  ClientOptions options = FastOptions({server_.endpoint()});
  options.retry.max_attempts = 100;
  options.retry.budget_max_tokens = 10;
  options.retry.budget_success_credit = 1;
  std::unique_ptr<Client> client = MakeClient(options);
  // 10 tokens; retries allowed while more than 5 remain: the 5th failure is the last attempt.
  EXPECT_EQ(client->Put("k", "v").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server_.kv().requests(), 5);
  absl::Status drained = client->Put("k", "v").status();
  EXPECT_EQ(server_.kv().requests(), 6);  // no retry at all
  EXPECT_THAT(drained.message(), HasSubstr("retry budget"));

  server_.kv().FailAll(grpc::StatusCode::OK);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(client->Put("k", "v").ok());
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  ASSERT_TRUE(client->Put("k", "v").ok());
  EXPECT_EQ(server_.kv().requests(), 6 + 10 + 2);  // retried again
}

TEST_F(KvClientTest, OversizedRequestFailsLocally) {
  ClientOptions options = FastOptions({server_.endpoint()});
  options.max_request_bytes = 1000;
  std::unique_ptr<Client> client = MakeClient(options);
  absl::StatusOr<WriteResult> put = client->Put("k", std::string(2000, 'x'));
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(put.status().message(), HasSubstr("max_request_bytes"));
  EXPECT_EQ(server_.kv().requests(), 0);
  EXPECT_TRUE(client->Put("k", std::string(500, 'x')).ok());
}

// Covers a call answered by the server, one refused locally, and one failing fast on a channel
// already known to be down (where gRPC could complete the call inline).
TEST_F(KvClientTest, AsyncCallbacksNeverRunOnTheCallingThread) {
  ClientOptions options = FastOptions({server_.endpoint()});
  options.max_request_bytes = 100;
  ClientOptions dead_options = FastOptions({DeadEndpoint()});
  dead_options.retry.max_attempts = 1;
  std::unique_ptr<Client> client = MakeClient(options);
  std::unique_ptr<Client> dead = MakeClient(dead_options);
  EXPECT_FALSE(dead->Put("k", "v").ok());  // the channel is now in TRANSIENT_FAILURE
  struct Case {
    Client* client;
    std::string value;
  };
  for (const Case& c : {Case{client.get(), "small"}, Case{client.get(), std::string(200, 'x')},
                        Case{dead.get(), "v"}}) {
    absl::Notification done;
    std::thread::id callback_thread;
    c.client->PutAsync("k", c.value, {}, [&](absl::StatusOr<WriteResult>) {
      callback_thread = std::this_thread::get_id();
      done.Notify();
    });
    done.WaitForNotification();
    EXPECT_NE(callback_thread, std::this_thread::get_id());
  }
}

TEST_F(KvClientTest, DestructorWaitsForPendingCalls) {
  server_.kv().HangAll();
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  absl::Notification called;
  WriteOptions options;
  options.deadline = absl::Milliseconds(300);
  client->PutAsync("k", "v", options, [&](absl::StatusOr<WriteResult> result) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
    called.Notify();
  });
  client.reset();
  EXPECT_TRUE(called.HasBeenNotified());
}

TEST_F(KvClientTest, GetResolvedMergesSiblingsAndKeepsTheContext) {
  v1::GetResponse response;
  response.add_siblings()->set_value("a");
  response.add_siblings()->set_value("b");
  response.mutable_siblings(1)->set_timestamp_micros(42);
  response.set_context("get-context");
  server_.kv().SetGetResponse(response);
  ClientOptions options = FastOptions({server_.endpoint()});
  int merges = 0;
  options.merger = [&merges](const std::vector<std::string>& values) {
    ++merges;
    return absl::StrJoin(values, "+");
  };
  std::unique_ptr<Client> client = MakeClient(options);
  absl::StatusOr<GetResult> resolved = client->GetResolved("k");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  ASSERT_THAT(resolved->siblings, SizeIs(1));
  EXPECT_EQ(resolved->siblings[0].value, "a+b");
  EXPECT_EQ(resolved->siblings[0].timestamp_micros, 42);
  EXPECT_EQ(resolved->context, "get-context");
  EXPECT_EQ(merges, 1);

  response.mutable_siblings()->RemoveLast();
  server_.kv().SetGetResponse(response);
  resolved = client->GetResolved("k");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->siblings[0].value, "a");
  EXPECT_EQ(merges, 1);  // one sibling: nothing to merge
}

TEST_F(KvClientTest, GetResolvedWithoutMergerFailsBeforeSending) {
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  EXPECT_EQ(client->GetResolved("k").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_.kv().requests(), 0);
}

TEST_F(KvClientTest, ListAndDescribeKeyMapTheResponses) {
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  absl::StatusOr<ListResult> list = client->List("p/", "tok", 7);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(list->keys, ElementsAre("p/1", "p/2"));
  EXPECT_EQ(list->next_page_token, "after:tok:7");

  absl::StatusOr<DescribeKeyResult> described = client->DescribeKey("k");
  ASSERT_TRUE(described.ok()) << described.status();
  ASSERT_THAT(described->replicas, SizeIs(2));
  const ReplicaView& up = described->replicas[0];
  EXPECT_EQ(up.node_id, "n1");
  EXPECT_TRUE(up.reachable);
  EXPECT_TRUE(up.has_record);
  EXPECT_EQ(up.context, "{n1:2}");
  ASSERT_THAT(up.versions, SizeIs(1));
  EXPECT_TRUE(up.versions[0].tombstone);
  EXPECT_EQ(up.versions[0].dot, "n1:2");
  EXPECT_EQ(up.versions[0].timestamp_micros, 7);
  EXPECT_FALSE(described->replicas[1].reachable);
  EXPECT_EQ(described->replicas[1].error, "connection refused");
  EXPECT_FALSE(described->converged);
}

TEST_F(KvClientTest, PingTriesOneEndpointOnce) {
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), DeadEndpoint()}));
  auto ping = [&](size_t endpoint) {
    absl::Notification done;
    absl::Status status;
    client->PingAsync(endpoint, [&](absl::Status s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    return status;
  };
  EXPECT_TRUE(ping(0).ok());
  EXPECT_EQ(server_.kv().requests(), 1);
  EXPECT_EQ(ping(1).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ping(2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server_.kv().requests(), 1);
}

// A W shortfall on a node that stored the write: the retry must meet that node again, where the
// token deduplicates it, rather than a second coordinator.
TEST_F(KvClientTest, WriteStoredShortfallRetriesOnTheSameEndpoint) {
  FakeServer other;
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::UNAVAILABLE});
  server_.kv().MarkWriteStored(2);
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  absl::StatusOr<WriteResult> put = client->Put("k", "v");  // starts at endpoint 0 (server_)
  ASSERT_TRUE(put.ok()) << put.status();
  std::vector<v1::PutRequest> puts = server_.kv().puts();
  ASSERT_THAT(puts, SizeIs(3));
  EXPECT_EQ(puts[1].idempotency_token(), puts[0].idempotency_token());
  EXPECT_EQ(puts[2].idempotency_token(), puts[0].idempotency_token());
  EXPECT_EQ(other.kv().requests(), 0);

  // Delete too; this call starts at endpoint 1 (`other`).
  other.kv().Script({grpc::StatusCode::UNAVAILABLE});
  other.kv().MarkWriteStored(1);
  ASSERT_TRUE(client->Delete("k").ok());
  std::vector<v1::DeleteRequest> deletes = other.kv().deletes();
  ASSERT_THAT(deletes, SizeIs(2));
  EXPECT_EQ(deletes[1].idempotency_token(), deletes[0].idempotency_token());
  EXPECT_EQ(server_.kv().requests(), 3);
}

TEST_F(KvClientTest, UnmarkedUnavailableAfterAShortfallFailsOver) {
  FakeServer other;
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::UNAVAILABLE});
  server_.kv().MarkWriteStored(1);  // only the first failure says the write is stored
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  ASSERT_TRUE(client->Put("k", "v").ok());
  EXPECT_EQ(server_.kv().requests(), 2);
  ASSERT_THAT(other.kv().puts(), SizeIs(1));
  EXPECT_EQ(other.kv().puts()[0].idempotency_token(), server_.kv().puts()[0].idempotency_token());
}

TEST_F(KvClientTest, GivingUpAfterAShortfallSaysWhereTheWriteIsStored) {
  FakeServer other;
  server_.kv().FailAll(grpc::StatusCode::UNAVAILABLE);
  server_.kv().MarkWriteStored(1000);
  ClientOptions options = FastOptions({server_.endpoint(), other.endpoint()});
  options.retry.max_attempts = 3;
  absl::StatusOr<WriteResult> put = MakeClient(options)->Put("k", "v");
  EXPECT_EQ(put.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(put.status().message(),
              HasSubstr(absl::StrCat("the write is stored on ", server_.endpoint())));
  EXPECT_EQ(server_.kv().requests(), 3);
  EXPECT_EQ(other.kv().requests(), 0);
}

// Only writes store anything: a marked UNAVAILABLE on a read fails over as usual.
TEST_F(KvClientTest, ShortfallMarkOnAReadStillFailsOver) {
  FakeServer other;
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  server_.kv().MarkWriteStored(1);
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  ASSERT_TRUE(client->Get("k").ok());
  EXPECT_EQ(server_.kv().requests(), 1);
  EXPECT_EQ(other.kv().requests(), 1);
}

TEST_F(KvClientTest, DescribeWriteMapsStateKeyDotAndReplicas) {
  v1::DescribeWriteResponse response;
  response.set_state(v1::DescribeWriteResponse::PENDING);
  response.set_key("k");
  response.set_dot("n1.1:7");
  v1::ReplicaWriteState* applied = response.add_replicas();
  applied->set_node_id("n1");
  applied->set_applied(true);
  applied->set_reachable(true);
  v1::ReplicaWriteState* pending = response.add_replicas();
  pending->set_node_id("n2");
  pending->set_reachable(true);
  v1::ReplicaWriteState* down = response.add_replicas();
  down->set_node_id("n3");
  down->set_error("connection refused");
  server_.kv().SetDescribeWriteResponse(response);
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});  // retried like any call
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));

  absl::StatusOr<DescribeWriteResult> described = client->DescribeWrite("n1.1:7/aw");
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_THAT(server_.kv().described_write_ids(), ElementsAre("n1.1:7/aw", "n1.1:7/aw"));
  EXPECT_EQ(described->state, DescribeWriteResult::State::kPending);
  EXPECT_EQ(described->key, "k");
  EXPECT_EQ(described->dot, "n1.1:7");
  ASSERT_THAT(described->replicas, SizeIs(3));
  EXPECT_EQ(described->replicas[0].node_id, "n1");
  EXPECT_TRUE(described->replicas[0].applied);
  EXPECT_TRUE(described->replicas[0].reachable);
  EXPECT_EQ(described->replicas[1].node_id, "n2");
  EXPECT_FALSE(described->replicas[1].applied);
  EXPECT_TRUE(described->replicas[1].reachable);
  EXPECT_FALSE(described->replicas[2].reachable);
  EXPECT_EQ(described->replicas[2].error, "connection refused");

  response.set_state(v1::DescribeWriteResponse::REPLICATED);
  server_.kv().SetDescribeWriteResponse(response);
  absl::Notification done;
  absl::StatusOr<DescribeWriteResult> async_result;
  client->DescribeWriteAsync("w", {}, [&](absl::StatusOr<DescribeWriteResult> result) {
    async_result = std::move(result);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(async_result.ok()) << async_result.status();
  EXPECT_EQ(async_result->state, DescribeWriteResult::State::kReplicated);

  server_.kv().SetDescribeWriteResponse(v1::DescribeWriteResponse());
  EXPECT_EQ(client->DescribeWrite("w")->state, DescribeWriteResult::State::kUnknown);
  server_.kv().Script({grpc::StatusCode::INVALID_ARGUMENT});
  EXPECT_EQ(client->DescribeWrite("w").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KvClientTest, ClusterStatusMapsEveryField) {
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint()}));
  absl::StatusOr<ClusterStatusResult> status = client->ClusterStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->node_id, "fake");
  EXPECT_EQ(status->replication_factor, 3u);
  EXPECT_EQ(status->default_w, 2u);
  EXPECT_EQ(status->default_r, 1u);
  EXPECT_EQ(status->writes_coordinated, 10u);
  EXPECT_EQ(status->writes_forwarded, 4u);
  EXPECT_EQ(status->read_repairs, 2u);
  EXPECT_EQ(status->replication_lag_p50_us, 1500);
  EXPECT_EQ(status->replication_lag_p99_us, 9000);
  EXPECT_EQ(status->replication_lag_max_us, 12000);
  EXPECT_EQ(status->replication_lag_samples, 812u);
  ASSERT_THAT(status->members, SizeIs(2));
  const MemberStatus& self = status->members[0];
  EXPECT_EQ(self.node_id, "fake");
  EXPECT_EQ(self.address, "127.0.0.1:7700");
  EXPECT_EQ(self.zone, "z1");
  EXPECT_TRUE(self.self);
  EXPECT_TRUE(self.reachable);
  const MemberStatus& peer = status->members[1];
  EXPECT_EQ(peer.node_id, "n2");
  EXPECT_FALSE(peer.self);
  EXPECT_FALSE(peer.reachable);
  EXPECT_EQ(peer.outbox_depth, 57u);
  EXPECT_EQ(peer.outbox_dropped, 3u);
  EXPECT_EQ(peer.sent_records, 1234u);
  EXPECT_EQ(peer.last_error, "connection refused");
  EXPECT_EQ(peer.last_success_unix_micros, 1'700'000'000'000'000);
}

TEST_F(KvClientTest, ClusterStatusAsksTheFirstReachableEndpointWithRetries) {
  FakeServer other;
  server_.kv().SetNodeId("first");
  other.kv().SetNodeId("second");
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  for (int i = 0; i < 3; ++i) {  // not round robin: always the first
    absl::StatusOr<ClusterStatusResult> status = client->ClusterStatus();
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_EQ(status->node_id, "first");
  }
  server_.kv().Script({grpc::StatusCode::ABORTED});  // retried on the same endpoint
  EXPECT_EQ(client->ClusterStatus()->node_id, "first");
  EXPECT_EQ(server_.kv().requests(), 5);
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});  // fails over
  EXPECT_EQ(client->ClusterStatus()->node_id, "second");
  EXPECT_EQ(other.kv().requests(), 1);

  std::unique_ptr<Client> dead_first = MakeClient(FastOptions({DeadEndpoint(), other.endpoint()}));
  absl::StatusOr<ClusterStatusResult> status = dead_first->ClusterStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->node_id, "second");
}

TEST_F(KvClientTest, ClusterStatusOfAsksOnlyThatEndpoint) {
  FakeServer other;
  other.kv().SetNodeId("second");
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  EXPECT_EQ(client->ClusterStatusOf(1)->node_id, "second");
  EXPECT_EQ(client->ClusterStatusOf(0)->node_id, "fake");
  other.kv().Script({grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::UNAVAILABLE});
  EXPECT_EQ(client->ClusterStatusOf(1)->node_id, "second");  // retried there, not elsewhere
  EXPECT_EQ(other.kv().requests(), 4);
  EXPECT_EQ(server_.kv().requests(), 1);
  EXPECT_EQ(client->ClusterStatusOf(2).status().code(), absl::StatusCode::kInvalidArgument);

  ClientOptions options = FastOptions({DeadEndpoint(), server_.endpoint()});
  options.call_deadline = absl::Milliseconds(500);
  EXPECT_FALSE(MakeClient(options)->ClusterStatusOf(0).ok());
  EXPECT_EQ(server_.kv().requests(), 1);
}

// A start is deduplicated by the node that first got it, so its retries carry one token, and a
// timeout (the answer may be lost) retries on that node, where other calls would fail over; an
// unreachable node still fails over.
TEST_F(KvClientTest, StartRepairRetriesCarryOneTokenAndStayAfterATimeout) {
  FakeServer other;
  other.kv().SetNodeId("second");
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  server_.kv().Script({grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::DEADLINE_EXCEEDED});
  absl::StatusOr<RepairStarted> started = client->StartRepair("n3");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->node_id, "fake");
  EXPECT_EQ(started->operation_id, "fake:1-3");
  EXPECT_TRUE(started->deduplicated);
  EXPECT_EQ(other.kv().requests(), 0);
  std::vector<v1::StartRepairRequest> repairs = server_.kv().repairs();
  ASSERT_EQ(repairs.size(), 3u);
  EXPECT_EQ(repairs[0].idempotency_token().size(), 32u);
  for (const v1::StartRepairRequest& r : repairs) {
    EXPECT_EQ(r.idempotency_token(), repairs[0].idempotency_token());
    EXPECT_EQ(r.peer_id(), "n3");
  }

  // The next call is another request: a new token. A caller's token is sent as is.
  ASSERT_TRUE(client->StartRepair().ok());
  StartOptions options;
  options.idempotency_token = "mine";
  ASSERT_TRUE(client->StartRepair("", options).ok());
  repairs = server_.kv().repairs();
  ASSERT_EQ(repairs.size(), 5u);
  EXPECT_NE(repairs[3].idempotency_token(), repairs[0].idempotency_token());
  EXPECT_EQ(repairs[3].idempotency_token().size(), 32u);
  EXPECT_EQ(repairs[4].idempotency_token(), "mine");

  // An unavailable node: the start goes to the next one, with the same token.
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  ASSERT_TRUE(client->StartRepair("", options).ok());
  ASSERT_EQ(other.kv().repairs().size(), 1u);
  EXPECT_EQ(other.kv().repairs()[0].idempotency_token(), "mine");
  std::unique_ptr<Client> dead_first = MakeClient(FastOptions({DeadEndpoint(), other.endpoint()}));
  absl::StatusOr<RepairStarted> elsewhere = dead_first->StartRepair();
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.status();
  EXPECT_EQ(elsewhere->node_id, "second");
}

// A start that fails over after UNAVAILABLE and is then refused elsewhere says that the node it
// left may have started it (only that node remembers the token).
TEST_F(KvClientTest, AStartRefusedAfterAFailoverNamesTheNodeThatMayHaveStartedIt) {
  FakeServer other;
  other.kv().SetNodeId("second");
  other.kv().FailAll(grpc::StatusCode::FAILED_PRECONDITION);
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  absl::StatusOr<RepairStarted> started = client->StartRepair("n3");
  ASSERT_EQ(started.status().code(), absl::StatusCode::kFailedPrecondition) << started.status();
  EXPECT_THAT(std::string(started.status().message()),
              ::testing::HasSubstr(absl::StrCat("an earlier attempt on ", server_.endpoint(),
                                                " ended UNAVAILABLE and may have started")));
  // Refused by the first node asked: its verdict, unchanged.
  std::unique_ptr<Client> direct = MakeClient(FastOptions({other.endpoint()}));
  absl::StatusOr<RepairStarted> refused = direct->StartRepair("n3");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::Not(::testing::HasSubstr("earlier attempt")));
}

// kvctl waiting for an operation that ends in a state it does not know (a newer node's) does not
// report success.
TEST_F(KvClientTest, KvctlDoesNotTakeAnUnknownOperationStateForSuccess) {
  server_.kv().SetOperationState(7);
  ::kv::testing::CommandResult r = ::kv::testing::RunCommand(
      {KVCTL_PATH, "--endpoints=" + server_.endpoint(), "--timeout=10s", "repair", "--wait"}, "",
      absl::Seconds(60));
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("does not know")) << r.err;
  server_.kv().SetOperationState(v1::Operation::SUCCEEDED);
  r = ::kv::testing::RunCommand(
      {KVCTL_PATH, "--endpoints=" + server_.endpoint(), "--timeout=10s", "repair", "--wait"}, "",
      absl::Seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(KvClientTest, KvctlOperationWaitEndsWhenTheOperationsNodeNoLongerKeepsIt) {
  // kvctl reads the operation once, then polls. Once those reads have come, the node answers
  // NOT_FOUND unmarked: its own operation that it no longer keeps (expired). The wait ends there
  // instead of polling until --wait-timeout.
  std::thread forget([this] {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (server_.kv().requests() < 2 && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    server_.kv().FailAll(grpc::StatusCode::NOT_FOUND);
  });
  const ::kv::testing::CommandResult r =
      ::kv::testing::RunCommand({KVCTL_PATH, "--endpoints=" + server_.endpoint(), "operation",
                                 "wait", "fake:1-1", "--wait-timeout=60s"},
                                "", absl::Seconds(90));
  forget.join();
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;  // the state is unknown: not a usage error
  EXPECT_THAT(r.err, HasSubstr("is no longer kept by its node")) << r.err;
}

TEST_F(KvClientTest, GetOperationAsksTheEndpointThatStartedIt) {
  FakeServer other;
  other.kv().SetNodeId("second");
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  // The first endpoint refuses the start for a moment: the repair starts on the second one.
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  absl::StatusOr<RepairStarted> started = client->StartRepair();
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(started->node_id, "second");
  // The first endpoint answers again, but only the second one knows the operation.
  absl::StatusOr<OperationStatus> op = client->GetOperation(started->operation_id);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->node_id, "second");
  EXPECT_EQ(op->state, OperationStatus::State::kRunning);

  // So for a membership change.
  server_.kv().Script({grpc::StatusCode::UNAVAILABLE});
  absl::StatusOr<MembershipPlan> plan =
      client->ChangeMembership(MembershipAction::kJoin, "n4", true);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(absl::StartsWith(plan->operation_id, "second:")) << plan->operation_id;
  op = client->GetOperation(plan->operation_id);
  ASSERT_TRUE(op.ok()) << op.status();

  // The node that started it is unavailable for a moment (restarting): the retry asks it again,
  // not another node, which does not know the operation and would answer NOT_FOUND.
  other.kv().Script({grpc::StatusCode::UNAVAILABLE});
  const int asked_first = server_.kv().requests();
  op = client->GetOperation(started->operation_id);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->node_id, "second");
  EXPECT_EQ(server_.kv().requests(), asked_first);

  // Ids of nodes this client started nothing on go to the first endpoint, as before.
  EXPECT_EQ(client->GetOperation("third:1-1").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(client->GetOperation("fake:1-1").ok());
}

TEST_F(KvClientTest, GetOperationFindsTheOperationsNodeAmongTheEndpoints) {
  FakeServer second;
  FakeServer third;
  second.kv().SetNodeId("second");
  third.kv().SetNodeId("third");
  std::unique_ptr<Client> client =
      MakeClient(FastOptions({server_.endpoint(), second.endpoint(), third.endpoint()}));
  // Started by another client: the first endpoints say it is not theirs, the third has it.
  absl::StatusOr<OperationStatus> op = client->GetOperation("third:1-1");
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->node_id, "third");
  EXPECT_EQ(server_.kv().requests(), 1);
  EXPECT_EQ(second.kv().requests(), 1);
  EXPECT_EQ(third.kv().requests(), 1);
  // Remembered: the next read goes there first.
  ASSERT_TRUE(client->GetOperation("third:1-2").ok());
  EXPECT_EQ(server_.kv().requests(), 1);
  EXPECT_EQ(third.kv().requests(), 2);

  // A node no endpoint is: NOT_FOUND once each endpoint has said so.
  absl::StatusOr<OperationStatus> nowhere = client->GetOperation("fourth:1-1");
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kNotFound) << nowhere.status();
  EXPECT_EQ(server_.kv().requests(), 2);
  EXPECT_EQ(second.kv().requests(), 2);
  EXPECT_EQ(third.kv().requests(), 3);
}

TEST_F(KvClientTest, GetOperationOfANodeThatIsDownIsUnavailableNotNotFound) {
  FakeServer second;
  FakeServer third;
  second.kv().SetNodeId("second");
  third.kv().SetNodeId("third");
  std::unique_ptr<Client> client =
      MakeClient(FastOptions({server_.endpoint(), third.endpoint(), second.endpoint()}));
  // The operation's node ("second", the last endpoint) answers UNAVAILABLE throughout
  // (restarting, or down); the others say the operation is not their own. The client keeps
  // asking "second" and ends with its UNAVAILABLE, which a caller retries, not with another
  // node's NOT_FOUND.
  second.kv().FailAll(grpc::StatusCode::UNAVAILABLE);
  CallOptions soon;
  soon.deadline = absl::Milliseconds(300);
  absl::StatusOr<OperationStatus> op = client->GetOperation("second:1-1", soon);
  EXPECT_EQ(op.status().code(), absl::StatusCode::kUnavailable) << op.status();
  EXPECT_EQ(server_.kv().requests(), 1);  // asked once: it said the operation is not its own
  EXPECT_EQ(third.kv().requests(), 1);
  EXPECT_GE(second.kv().requests(), 2);  // retried there

  // Once the node answers again, so does the read.
  second.kv().FailAll(grpc::StatusCode::OK);
  op = client->GetOperation("second:1-1");
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->node_id, "second");
}

TEST_F(KvClientTest, CancelOperationIsAskedOfTheOperationsNode) {
  FakeServer second;
  second.kv().SetNodeId("second");
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), second.endpoint()}));
  absl::StatusOr<OperationStatus> cancelled = client->CancelOperation("second:1-1");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->node_id, "second");
  EXPECT_EQ(cancelled->state, OperationStatus::State::kFailed);
  EXPECT_EQ(server_.kv().requests(), 1);  // said it is not its own

  // The operation's node does not answer: UNAVAILABLE, not the other node's NOT_FOUND.
  second.kv().FailAll(grpc::StatusCode::UNAVAILABLE);
  CallOptions soon;
  soon.deadline = absl::Milliseconds(300);
  cancelled = client->CancelOperation("second:1-2", soon);
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kUnavailable) << cancelled.status();
}

TEST_F(KvClientTest, CommittedMembershipChangeIsTokenedAndStaysAfterATimeout) {
  FakeServer other;
  other.kv().SetNodeId("second");
  std::unique_ptr<Client> client = MakeClient(FastOptions({server_.endpoint(), other.endpoint()}));
  server_.kv().Script({grpc::StatusCode::DEADLINE_EXCEEDED});
  absl::StatusOr<MembershipPlan> committed =
      client->ChangeMembership(MembershipAction::kJoin, "n4", /*commit=*/true, 7);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->node_id, "fake");
  EXPECT_TRUE(committed->deduplicated);
  EXPECT_EQ(other.kv().requests(), 0);
  std::vector<v1::ChangeMembershipRequest> changes = server_.kv().membership_changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].idempotency_token().size(), 32u);
  EXPECT_EQ(changes[1].idempotency_token(), changes[0].idempotency_token());
  EXPECT_EQ(changes[1].expected_layout_version(), 7u);

  // A plan changes nothing: no token, and a timeout fails over like other admin reads.
  server_.kv().Script({grpc::StatusCode::DEADLINE_EXCEEDED});
  absl::StatusOr<MembershipPlan> plan = client->ChangeMembership(
      /*join=*/false, "n2", false);  // the form from before MembershipAction
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->deduplicated);
  ASSERT_EQ(other.kv().membership_changes().size(), 1u);
  EXPECT_TRUE(other.kv().membership_changes()[0].idempotency_token().empty());
  EXPECT_EQ(other.kv().membership_changes()[0].action(), v1::ChangeMembershipRequest::LEAVE);

  // Each action reaches the node as its own request action.
  ASSERT_TRUE(client->ChangeMembership(MembershipAction::kRemoveDown, "n3", false).ok());
  ASSERT_TRUE(client->ChangeMembership(MembershipAction::kJoin, "n5", false).ok());
  std::vector<v1::ChangeMembershipRequest> all = server_.kv().membership_changes();
  for (const v1::ChangeMembershipRequest& r : other.kv().membership_changes()) all.push_back(r);
  std::map<std::string, v1::ChangeMembershipRequest::Action> action_of;
  for (const v1::ChangeMembershipRequest& r : all) action_of[r.node_id()] = r.action();
  EXPECT_EQ(action_of["n3"], v1::ChangeMembershipRequest::REMOVE_DOWN);
  EXPECT_EQ(action_of["n5"], v1::ChangeMembershipRequest::JOIN);
}

TEST(KvClientCreateTest, RejectsBadOptions) {
  EXPECT_EQ(Client::Create(ClientOptions()).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions options = FastOptions({"127.0.0.1:1"});
  options.retry.max_attempts = 0;
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = FastOptions({"127.0.0.1:1"});
  options.call_deadline = absl::ZeroDuration();
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  for (absl::Duration connect_timeout :
       {absl::ZeroDuration(), absl::Milliseconds(99), absl::Hours(2)}) {
    options = FastOptions({"127.0.0.1:1"});
    options.connect_timeout = connect_timeout;
    absl::Status status = Client::Create(options).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("connect_timeout"));
  }
  for (absl::Duration keepalive_time :
       {absl::Milliseconds(-1), absl::Milliseconds(999), absl::Hours(25)}) {
    options = FastOptions({"127.0.0.1:1"});
    options.keepalive_time = keepalive_time;
    absl::Status status = Client::Create(options).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("keepalive_time"));
  }
  options = FastOptions({"127.0.0.1:1"});
  options.keepalive_time = absl::ZeroDuration();  // no pings
  EXPECT_TRUE(Client::Create(options).ok());
  options.keepalive_timeout = absl::Milliseconds(50);
  EXPECT_THAT(Client::Create(options).status().message(), HasSubstr("keepalive_timeout"));
  // An infinite budget is not "no budget": it would never refill to half, and allow no retry.
  options = FastOptions({"127.0.0.1:1"});
  options.retry.budget_max_tokens = std::numeric_limits<double>::infinity();
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvClientCreateTest, ChannelFactoryWithoutAChannelIsInvalid) {
  ClientOptions options = FastOptions({"127.0.0.1:1", "127.0.0.1:2"});
  options.channel_factory = [](const std::string& endpoint) -> std::shared_ptr<grpc::Channel> {
    if (endpoint == "127.0.0.1:2") return nullptr;
    return grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  };
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), ::testing::HasSubstr("127.0.0.1:2"));
}

TEST(KvClientCreateTest, NegativeCallDeadlineIsInvalid) {
  std::unique_ptr<Client> client = MakeClient(FastOptions({"127.0.0.1:1"}));
  ReadOptions options;
  options.deadline = absl::Milliseconds(-1);
  EXPECT_EQ(client->Get("k", options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IdempotencyTokenTest, Is32HexCharsAndFresh) {
  const std::string a = NewIdempotencyToken();
  EXPECT_THAT(a, ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(a, NewIdempotencyToken());
}

// A member heard less than 1 ms ago is reported with last_heard_ms_ago 0, not as never heard
// (-1 is kept for a node that predates gossip and sends neither liveness nor the field).
TEST(ClusterStatusConversionTest, AMemberHeardJustNowIsNotNeverHeard) {
  v1::ClusterStatusResponse response;
  v1::MemberStatus* now = response.add_members();
  now->set_node_id("n1");
  now->set_liveness("UP");
  now->set_last_heard_ms_ago(0);
  v1::MemberStatus* old = response.add_members();
  old->set_node_id("n2");
  ClusterStatusResult result = client_internal::FromClusterStatusResponse(&response);
  ASSERT_EQ(result.members.size(), 2u);
  EXPECT_EQ(result.members[0].liveness, "UP");
  EXPECT_EQ(result.members[0].last_heard_ms_ago, 0);
  EXPECT_EQ(result.members[1].liveness, "UNKNOWN");
  EXPECT_EQ(result.members[1].last_heard_ms_ago, -1);
}

}  // namespace
}  // namespace kv

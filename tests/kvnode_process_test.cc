// Real kvnode processes on loopback, driven through the generated gRPC stubs (not the client
// library): the public API round trip, bad input (C7), idempotency (C6), graceful shutdown under
// load, health checking and server reflection. Startup errors: kvnode_startup_process_test.cc.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "replica.grpc.pb.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return context;
}

std::shared_ptr<grpc::Channel> Connect(const std::string& endpoint) {
  return grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
}

grpc::Status Put(v1::KV::Stub* kv, const std::string& key, const std::string& value,
                 v1::PutResponse* out = nullptr, const std::string& token = "",
                 const std::string& context = "") {
  v1::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_idempotency_token(token);
  request.set_context(context);
  v1::PutResponse ignored;
  return kv->Put(Ctx().get(), request, out != nullptr ? out : &ignored);
}

grpc::Status Get(v1::KV::Stub* kv, const std::string& key, v1::GetResponse* out) {
  v1::GetRequest request;
  request.set_key(key);
  return kv->Get(Ctx().get(), request, out);
}

std::vector<std::string> Values(const v1::GetResponse& response) {
  std::vector<std::string> values;
  for (const v1::Sibling& s : response.siblings()) values.push_back(s.value());
  return values;
}

std::vector<std::string> ListAll(v1::KV::Stub* kv, const std::string& prefix) {
  v1::ListRequest request;
  request.set_prefix(prefix);
  v1::ListResponse response;
  grpc::Status status = kv->List(Ctx().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return {response.keys().begin(), response.keys().end()};
}

#define EXPECT_GRPC_OK(expr)                                               \
  do {                                                                     \
    const grpc::Status s_ = (expr);                                        \
    EXPECT_TRUE(s_.ok()) << s_.error_code() << ": " << s_.error_message(); \
  } while (0)

void ExpectInvalidArgument(const grpc::Status& status, const std::string& substring) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(substring));
}

// --- protobuf wire helpers for the services we have no generated code for ---

bool ReadVarint(absl::string_view* in, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// The payloads of every length-delimited field `number` of an encoded message.
std::vector<absl::string_view> LengthDelimitedFields(absl::string_view message, uint64_t number) {
  std::vector<absl::string_view> fields;
  uint64_t tag = 0, value = 0;
  while (!message.empty() && ReadVarint(&message, &tag)) {
    if ((tag & 7) == 0) {
      if (!ReadVarint(&message, &value)) break;
    } else if ((tag & 7) == 2) {
      if (!ReadVarint(&message, &value) || value > message.size()) break;
      if ((tag >> 3) == number) fields.push_back(message.substr(0, value));
      message.remove_prefix(value);
    } else {
      break;
    }
  }
  return fields;
}

// Asks the server reflection service (grpc.reflection.v1alpha) for its list of services.
std::vector<std::string> ListServicesByReflection(const std::string& endpoint) {
  grpc::GenericStub stub(Connect(endpoint));
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&cq](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == want;
  };
  // ServerReflectionRequest { list_services (field 7) = "*" }.
  grpc::Slice request_slice(std::string("\x3a\x01*", 3));
  grpc::ByteBuffer request(&request_slice, 1), response;
  grpc::Status status;
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = step(1);
  call->Write(request, reinterpret_cast<void*>(2));
  ok = ok && step(2);
  call->WritesDone(reinterpret_cast<void*>(3));
  ok = ok && step(3);
  call->Read(&response, reinterpret_cast<void*>(4));
  ok = ok && step(4);
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  cq.Shutdown();
  void* tag;
  bool ignored;
  while (cq.Next(&tag, &ignored)) {
  }
  std::vector<std::string> names;
  if (!ok) return names;
  std::vector<grpc::Slice> slices;
  std::string bytes;
  (void)response.Dump(&slices);
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // ServerReflectionResponse.list_services_response (6) -> service (1) -> name (1).
  for (absl::string_view list : LengthDelimitedFields(bytes, 6)) {
    for (absl::string_view service : LengthDelimitedFields(list, 1)) {
      for (absl::string_view name : LengthDelimitedFields(service, 1)) names.emplace_back(name);
    }
  }
  return names;
}

// --- one running node per test ---

class KvnodeProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { StartNode({}); }

  void StartNode(std::vector<std::string> extra_flags) {
    testing::NodeProcess::Options options;
    options.data_dir = dir_.Sub("n1");
    options.extra_flags = std::move(extra_flags);
    absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = *std::move(node);
    channel_ = Connect(node_.endpoint());
    kv_ = v1::KV::NewStub(channel_);
    admin_ = v1::Admin::NewStub(channel_);
    replica_ = internal::v1::Replica::NewStub(channel_);
  }

  // Puts `value` under `key` on n1 and reads the key's record through the Replica service.
  void PutAndReadRecord(const std::string& key, const std::string& value,
                        internal::v1::ReadRecordResponse* record) {
    EXPECT_GRPC_OK(Put(kv_.get(), key, value));
    internal::v1::ReadRecordRequest read;
    read.set_key(key);
    EXPECT_GRPC_OK(replica_->ReadRecord(Ctx().get(), read, record));
    ASSERT_TRUE(record->found());
  }

  testing::TempDir dir_;
  testing::NodeProcess node_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KV::Stub> kv_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<internal::v1::Replica::Stub> replica_;
};

TEST_F(KvnodeProcessTest, PutGetOverwriteListDeleteDescribe) {
  v1::PutResponse put;
  EXPECT_GRPC_OK(Put(kv_.get(), "fruit/apple", "red", &put));
  EXPECT_FALSE(put.write_id().empty());
  EXPECT_FALSE(put.context().empty());
  EXPECT_FALSE(put.deduplicated());

  v1::GetResponse got;
  EXPECT_GRPC_OK(Get(kv_.get(), "fruit/apple", &got));
  EXPECT_THAT(Values(got), ElementsAre("red"));
  EXPECT_THAT(got.siblings(0).dot(), StartsWith("n1#"));
  EXPECT_GT(got.siblings(0).timestamp_micros(), 0);

  // An overwrite that carries the context replaces the version it saw.
  EXPECT_GRPC_OK(Put(kv_.get(), "fruit/apple", "green", &put, "", got.context()));
  EXPECT_GRPC_OK(Get(kv_.get(), "fruit/apple", &got));
  EXPECT_THAT(Values(got), ElementsAre("green"));

  EXPECT_GRPC_OK(Put(kv_.get(), "fruit/banana", "yellow"));
  EXPECT_GRPC_OK(Put(kv_.get(), "veg/carrot", "orange"));
  EXPECT_THAT(ListAll(kv_.get(), "fruit/"), ElementsAre("fruit/apple", "fruit/banana"));
  EXPECT_THAT(ListAll(kv_.get(), ""), ElementsAre("fruit/apple", "fruit/banana", "veg/carrot"));

  // Paging: one key per page.
  v1::ListRequest list;
  list.set_limit(1);
  std::vector<std::string> paged;
  for (int page = 0; page < 10; ++page) {
    v1::ListResponse response;
    EXPECT_GRPC_OK(kv_->List(Ctx().get(), list, &response));
    paged.insert(paged.end(), response.keys().begin(), response.keys().end());
    if (response.next_page_token().empty()) break;
    list.set_page_token(response.next_page_token());
  }
  EXPECT_THAT(paged, ElementsAre("fruit/apple", "fruit/banana", "veg/carrot"));

  v1::DeleteRequest del;
  del.set_key("fruit/apple");
  del.set_context(got.context());
  v1::DeleteResponse deleted;
  EXPECT_GRPC_OK(kv_->Delete(Ctx().get(), del, &deleted));
  EXPECT_FALSE(deleted.write_id().empty());
  EXPECT_EQ(Get(kv_.get(), "fruit/apple", &got).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(ListAll(kv_.get(), "fruit/"), ElementsAre("fruit/banana"));

  // DescribeKey shows the tombstone that Get hides.
  v1::DescribeKeyRequest describe;
  describe.set_key("fruit/apple");
  v1::DescribeKeyResponse described;
  EXPECT_GRPC_OK(kv_->DescribeKey(Ctx().get(), describe, &described));
  EXPECT_EQ(described.key(), "fruit/apple");
  EXPECT_TRUE(described.converged());
  ASSERT_EQ(described.replicas_size(), 1);
  const v1::ReplicaView& view = described.replicas(0);
  EXPECT_EQ(view.node_id(), "n1");
  EXPECT_TRUE(view.reachable());
  EXPECT_TRUE(view.has_record());
  ASSERT_EQ(view.siblings_size(), 1);
  EXPECT_TRUE(view.siblings(0).tombstone());
  EXPECT_THAT(view.context(), HasSubstr("n1#"));

  describe.set_key("never-written");
  EXPECT_GRPC_OK(kv_->DescribeKey(Ctx().get(), describe, &described));
  ASSERT_EQ(described.replicas_size(), 1);
  EXPECT_FALSE(described.replicas(0).has_record());
  EXPECT_EQ(described.replicas(0).siblings_size(), 0);
}

TEST_F(KvnodeProcessTest, WritesWithoutContextBecomeSiblings) {
  EXPECT_GRPC_OK(Put(kv_.get(), "k", "a"));
  EXPECT_GRPC_OK(Put(kv_.get(), "k", "b"));
  v1::GetResponse got;
  EXPECT_GRPC_OK(Get(kv_.get(), "k", &got));
  EXPECT_THAT(Values(got), ElementsAre("a", "b"));
}

TEST_F(KvnodeProcessTest, QuorumIsCheckedAgainstN) {
  v1::PutRequest put;
  put.set_key("q");
  put.set_value("v");
  v1::PutResponse response;
  for (v1::Quorum::Kind kind : {v1::Quorum::DEFAULT, v1::Quorum::QUORUM, v1::Quorum::ALL}) {
    put.mutable_w()->set_kind(kind);
    EXPECT_GRPC_OK(kv_->Put(Ctx().get(), put, &response));
  }
  put.mutable_w()->set_kind(v1::Quorum::COUNT);
  put.mutable_w()->set_count(1);
  EXPECT_GRPC_OK(kv_->Put(Ctx().get(), put, &response));
  // Counts above 2^31 too (they must not wrap to a negative number, which any count of
  // acknowledgements would satisfy): refused, and nothing is written.
  put.set_key("q-bad");
  for (uint32_t bad : {0u, 2u, 2147483648u, 4294967295u}) {
    put.mutable_w()->set_count(bad);
    ExpectInvalidArgument(kv_->Put(Ctx().get(), put, &response), "N=1");
  }
  v1::GetRequest get;
  get.set_key("q-bad");
  v1::GetResponse got;
  EXPECT_EQ(kv_->Get(Ctx().get(), get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  get.set_key("q");
  get.mutable_r()->set_kind(v1::Quorum::COUNT);
  for (uint32_t bad : {3u, 2147483648u, 4294967295u}) {
    get.mutable_r()->set_count(bad);
    ExpectInvalidArgument(kv_->Get(Ctx().get(), get, &got), "N=1");
  }
  // A count with another kind would be ignored: refused, and nothing is written.
  for (v1::Quorum::Kind kind : {v1::Quorum::DEFAULT, v1::Quorum::QUORUM, v1::Quorum::ALL}) {
    v1::PutRequest other;
    other.set_key("q-count");
    other.set_value("v");
    other.mutable_w()->set_kind(kind);
    other.mutable_w()->set_count(1);
    ExpectInvalidArgument(kv_->Put(Ctx().get(), other, &response), "only used with kind COUNT");
  }
  get.set_key("q-count");
  get.mutable_r()->set_kind(v1::Quorum::QUORUM);
  get.mutable_r()->set_count(1);
  ExpectInvalidArgument(kv_->Get(Ctx().get(), get, &got), "only used with kind COUNT");
  get.clear_r();
  grpc::Status missing = kv_->Get(Ctx().get(), get, &got);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND) << missing.error_message();
}

TEST_F(KvnodeProcessTest, OversizedKeyIsRejectedAndNothingStored) {
  const std::string key(1025, 'k');
  ExpectInvalidArgument(Put(kv_.get(), key, "v"), "max_key_bytes");
  v1::GetResponse got;
  ExpectInvalidArgument(Get(kv_.get(), key, &got), "max_key_bytes");
  v1::DescribeKeyRequest describe;
  describe.set_key(key);
  v1::DescribeKeyResponse described;
  ExpectInvalidArgument(kv_->DescribeKey(Ctx().get(), describe, &described), "max_key_bytes");
  ExpectInvalidArgument(Put(kv_.get(), "", "v"), "key");
  EXPECT_THAT(ListAll(kv_.get(), ""), ElementsAre());
  // The node keeps serving, and a key at the limit is fine.
  EXPECT_GRPC_OK(Put(kv_.get(), std::string(1024, 'k'), "v"));
  EXPECT_THAT(ListAll(kv_.get(), ""), ElementsAre(std::string(1024, 'k')));
}

TEST_F(KvnodeProcessTest, OversizedValueIsRejectedByTheNodeNotTheTransport) {
  const size_t limit = 1 << 20;
  // Rejected by our check (INVALID_ARGUMENT naming the limit), not RESOURCE_EXHAUSTED.
  ExpectInvalidArgument(Put(kv_.get(), "big", std::string(limit + 1, 'v')), "max_value_bytes");
  v1::GetResponse got;
  EXPECT_EQ(Get(kv_.get(), "big", &got).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_OK(Put(kv_.get(), "big", std::string(limit, 'v')));
  EXPECT_GRPC_OK(Get(kv_.get(), "big", &got));
  ASSERT_EQ(got.siblings_size(), 1);
  EXPECT_EQ(got.siblings(0).value().size(), limit);
}

TEST_F(KvnodeProcessTest, MalformedContextIsRejectedAndNothingStored) {
  ExpectInvalidArgument(Put(kv_.get(), "k", "v", nullptr, "", "\xff\xfe not a context"), "context");
  v1::DeleteRequest del;
  del.set_key("k");
  del.set_context("garbage");
  v1::DeleteResponse deleted;
  ExpectInvalidArgument(kv_->Delete(Ctx().get(), del, &deleted), "context");
  v1::DescribeKeyRequest describe;
  describe.set_key("k");
  v1::DescribeKeyResponse described;
  EXPECT_GRPC_OK(kv_->DescribeKey(Ctx().get(), describe, &described));
  ASSERT_EQ(described.replicas_size(), 1);
  EXPECT_FALSE(described.replicas(0).has_record());
}

TEST_F(KvnodeProcessTest, IdempotencyTokenDeduplicatesRetries) {
  v1::PutResponse first, second;
  EXPECT_GRPC_OK(Put(kv_.get(), "k", "v1", &first, "token-1"));
  EXPECT_GRPC_OK(Put(kv_.get(), "k", "v1", &second, "token-1"));
  EXPECT_FALSE(first.deduplicated());
  EXPECT_TRUE(second.deduplicated());
  EXPECT_EQ(second.write_id(), first.write_id());
  v1::GetResponse got;
  EXPECT_GRPC_OK(Get(kv_.get(), "k", &got));
  EXPECT_THAT(Values(got), ElementsAre("v1"));

  ExpectInvalidArgument(Put(kv_.get(), "k", "v2", nullptr, "token-1"),
                        "idempotency token reused with different parameters");
  EXPECT_GRPC_OK(Get(kv_.get(), "k", &got));
  EXPECT_THAT(Values(got), ElementsAre("v1"));

  v1::DeleteRequest del;
  del.set_key("k");
  del.set_idempotency_token("token-2");
  v1::DeleteResponse d1, d2;
  EXPECT_GRPC_OK(kv_->Delete(Ctx().get(), del, &d1));
  EXPECT_GRPC_OK(kv_->Delete(Ctx().get(), del, &d2));
  EXPECT_TRUE(d2.deduplicated());
  EXPECT_EQ(d1.write_id(), d2.write_id());
}

// A write marked as a first attempt (PutRequest.first_attempt) records its token without looking
// it up: its unmarked retry is deduplicated, and a marked reuse of the token on another key (which
// the mark promises cannot happen) is not refused, unless the node runs with
// --trust_first_attempts=false.
TEST_F(KvnodeProcessTest, FirstAttemptMarksAreTrustedUnlessTheNodeIsToldNotTo) {
  for (const bool trust : {true, false}) {
    SCOPED_TRACE(trust);
    if (!trust) {
      node_.process().Kill();
      StartNode({"--trust_first_attempts=false"});
    }
    const std::string token = absl::StrCat("token-", trust);
    v1::PutRequest marked;
    marked.set_key(absl::StrCat("k-", trust));
    marked.set_value("v");
    marked.set_idempotency_token(token);
    marked.set_first_attempt(true);
    v1::PutResponse first, retry;
    EXPECT_GRPC_OK(kv_->Put(Ctx().get(), marked, &first));
    EXPECT_FALSE(first.deduplicated());
    EXPECT_GRPC_OK(Put(kv_.get(), marked.key(), "v", &retry, token));
    EXPECT_TRUE(retry.deduplicated());
    EXPECT_EQ(retry.write_id(), first.write_id());

    marked.set_key(absl::StrCat("other-", trust));
    v1::PutResponse reused;
    const grpc::Status status = kv_->Put(Ctx().get(), marked, &reused);
    if (trust) {
      EXPECT_GRPC_OK(status);
    } else {
      ExpectInvalidArgument(status, "idempotency token reused with different parameters");
    }
  }
}

TEST_F(KvnodeProcessTest, HealthReflectionAndAdmin) {
  EXPECT_TRUE(testing::WaitForServing(node_.endpoint(), absl::Seconds(5)));
  const std::vector<std::string> services = ListServicesByReflection(node_.endpoint());
  EXPECT_THAT(services,
              ::testing::IsSupersetOf(
                  {"kv.v1.KV", "kv.v1.Admin", "kv.internal.v1.Replica", "grpc.health.v1.Health"}));
  v1::PingRequest ping;
  ping.set_payload("hello");
  v1::PingResponse pong;
  EXPECT_GRPC_OK(admin_->Ping(Ctx().get(), ping, &pong));
  EXPECT_EQ(pong.payload(), "hello");
  EXPECT_EQ(pong.node_id(), "n1");

  v1::NodeStatusResponse status;
  EXPECT_GRPC_OK(admin_->NodeStatus(Ctx().get(), v1::NodeStatusRequest(), &status));
  EXPECT_EQ(status.node_id(), "n1");
  EXPECT_THAT(status.actor(), StartsWith("n1#"));
  EXPECT_EQ(status.listen_address(), node_.endpoint());
  EXPECT_FALSE(status.version().empty());
  EXPECT_GE(status.uptime_seconds(), 0);

  // The startup log says who the node is and how to reach it with kvctl.
  const std::string log = node_.process().Stderr();
  EXPECT_THAT(log, HasSubstr("msg=\"kvnode serving\" node_id=n1 actor=" + status.actor()));
  EXPECT_THAT(log, HasSubstr("kvctl --endpoints=" + node_.endpoint() + " put hello world"));
}

TEST_F(KvnodeProcessTest, ReplicaServiceReadsAndMergesRecords) {
  internal::v1::ReadRecordResponse record;
  ASSERT_NO_FATAL_FAILURE(PutAndReadRecord("shared", "from-n1", &record));
  internal::v1::ReadRecordRequest read;
  read.set_key("absent");
  internal::v1::ReadRecordResponse absent;
  EXPECT_GRPC_OK(replica_->ReadRecord(Ctx().get(), read, &absent));
  EXPECT_FALSE(absent.found());

  testing::NodeProcess::Options options;
  options.node_id = "n2";
  options.data_dir = dir_.Sub("n2");
  absl::StatusOr<testing::NodeProcess> n2 = testing::NodeProcess::Start(options);
  ASSERT_TRUE(n2.ok()) << n2.status();
  auto channel2 = Connect(n2->endpoint());
  auto replica2 = internal::v1::Replica::NewStub(channel2);
  auto kv2 = v1::KV::NewStub(channel2);

  // n2 is a cluster of one, which n1 is not a member of: the batch names no sender, as one
  // from a node of an earlier version would (a non-member sender is refused, see below).
  internal::v1::MergeBatchRequest bad;
  internal::v1::ReplicaRecord* good_record = bad.add_records();
  good_record->set_key("shared");
  good_record->set_record(record.record());
  internal::v1::ReplicaRecord* bad_record = bad.add_records();
  bad_record->set_key("other");
  bad_record->set_record("not a record");
  internal::v1::MergeBatchResponse merged;
  ExpectInvalidArgument(replica2->MergeBatch(Ctx().get(), bad, &merged), "record 1");
  v1::GetResponse got;
  EXPECT_EQ(Get(kv2.get(), "shared", &got).error_code(), grpc::StatusCode::NOT_FOUND);

  bad.mutable_records()->RemoveLast();
  EXPECT_GRPC_OK(replica2->MergeBatch(Ctx().get(), bad, &merged));
  EXPECT_EQ(merged.merged(), 1u);
  EXPECT_GRPC_OK(Get(kv2.get(), "shared", &got));
  EXPECT_THAT(Values(got), ElementsAre("from-n1"));
  EXPECT_THAT(got.siblings(0).dot(), StartsWith("n1#"));
}

// A member keeps no copy of a key it does not replicate in its layout (a stray no tombstone purge
// would ask about, C8): MergeBatch refuses the batch with FAILED_PRECONDITION and stores nothing.
TEST_F(KvnodeProcessTest, ReplicaServiceRefusesRecordsOfKeysTheNodeDoesNotReplicate) {
  internal::v1::ReadRecordResponse record;
  ASSERT_NO_FATAL_FAILURE(PutAndReadRecord("shared", "from-n1", &record));
  internal::v1::ReadRecordRequest read;

  // n2 of five members (the others never start), three replicas per key.
  testing::NodeProcess::Options options;
  options.node_id = "n2";
  options.data_dir = dir_.Sub("n2");
  options.port = testing::PickFreePort();
  options.extra_flags = {absl::StrCat("--peers=n1=127.0.0.1:1,n2=127.0.0.1:", options.port,
                                      ",n3=127.0.0.1:3,n4=127.0.0.1:4,n5=127.0.0.1:5"),
                         "--replication_factor=3"};
  absl::StatusOr<testing::NodeProcess> n2 = testing::NodeProcess::Start(options);
  ASSERT_TRUE(n2.ok()) << n2.status();
  auto replica2 = internal::v1::Replica::NewStub(Connect(n2->endpoint()));
  int refused = 0;
  int merged = 0;
  for (int i = 0; i < 40; ++i) {
    const std::string key = absl::StrCat("k", i);
    internal::v1::MergeBatchRequest batch;
    batch.set_from_node_id("n1");
    internal::v1::ReplicaRecord* r = batch.add_records();
    r->set_key(key);
    r->set_record(record.record());
    internal::v1::MergeBatchResponse response;
    std::unique_ptr<grpc::ClientContext> context = Ctx();
    const grpc::Status status = replica2->MergeBatch(context.get(), batch, &response);
    read.set_key(key);
    internal::v1::ReadRecordResponse stored;
    EXPECT_GRPC_OK(replica2->ReadRecord(Ctx().get(), read, &stored));
    if (status.ok()) {
      ++merged;
      EXPECT_TRUE(stored.found()) << key;
    } else {
      ++refused;
      EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << key;
      EXPECT_THAT(status.error_message(), HasSubstr("n2 is not a replica of key \"" + key));
      EXPECT_FALSE(stored.found()) << key << " was stored although refused";
      // Marked (kNotAReplicaMetadata, node/peer_transport.h), so that the sender gives the
      // record up at once.
      EXPECT_EQ(context->GetServerTrailingMetadata().count("kv-not-a-replica"), 1u) << key;
    }
  }
  // About 3 keys in 5 are n2's.
  EXPECT_GT(merged, 10);
  EXPECT_GT(refused, 5);
}

// A member takes no records from a node that is not a member of its layout (say one removed
// while it was down, restarted with its data and an old layout): such records could bring back
// keys deleted and purged since (C8). Refused with FAILED_PRECONDITION, marked, nothing stored.
TEST_F(KvnodeProcessTest, ReplicaServiceRefusesRecordsFromANonMember) {
  internal::v1::ReadRecordResponse record;
  ASSERT_NO_FATAL_FAILURE(PutAndReadRecord("shared", "from-n1", &record));
  testing::NodeProcess::Options options;
  options.node_id = "n2";
  options.data_dir = dir_.Sub("n2");
  options.port = testing::PickFreePort();
  options.extra_flags = {
      absl::StrCat("--peers=n1=127.0.0.1:1,n2=127.0.0.1:", options.port, ",n3=127.0.0.1:3")};
  absl::StatusOr<testing::NodeProcess> n2 = testing::NodeProcess::Start(options);
  ASSERT_TRUE(n2.ok()) << n2.status();
  auto replica2 = internal::v1::Replica::NewStub(Connect(n2->endpoint()));
  internal::v1::ReadRecordRequest read;
  read.set_key("shared");
  for (const char* sender : {"n9", "n1"}) {
    internal::v1::MergeBatchRequest batch;
    batch.set_from_node_id(sender);
    internal::v1::ReplicaRecord* r = batch.add_records();
    r->set_key("shared");
    r->set_record(record.record());
    internal::v1::MergeBatchResponse response;
    std::unique_ptr<grpc::ClientContext> context = Ctx();
    const grpc::Status status = replica2->MergeBatch(context.get(), batch, &response);
    internal::v1::ReadRecordResponse stored;
    EXPECT_GRPC_OK(replica2->ReadRecord(Ctx().get(), read, &stored));
    if (std::string(sender) == "n9") {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_THAT(status.error_message(), HasSubstr("\"n9\" is not a member of cluster layout"));
      EXPECT_EQ(context->GetServerTrailingMetadata().count("kv-not-a-replica"), 1u);
      EXPECT_FALSE(stored.found()) << "stored although refused";
    } else {  // a member (all three replicate every key)
      EXPECT_GRPC_OK(status);
      EXPECT_TRUE(stored.found());
    }
  }
}

// The Replica service is answered to callers it admits, which a buggy or hostile peer may be:
// a purge of a record with a live version is refused and removes nothing (only tombstones are
// ever purged), and a Merkle leaves request with more indexes than the tree has interior nodes
// is refused before anything is built for it (16M indexes asked 32 GiB of answer).
TEST_F(KvnodeProcessTest, ReplicaServiceRefusesPurgingALiveRecordAndOversizedTreeRequests) {
  internal::v1::ReadRecordResponse record;
  ASSERT_NO_FATAL_FAILURE(PutAndReadRecord("kept", "live", &record));
  internal::v1::PurgeRecordRequest purge;
  purge.set_requester_id("n1");
  purge.set_key("kept");
  purge.set_expected_record(record.record());
  internal::v1::PurgeRecordResponse purged;
  const grpc::Status refused = replica_->PurgeRecord(Ctx().get(), purge, &purged);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("only tombstones are purged"));
  v1::GetResponse got;
  EXPECT_GRPC_OK(Get(kv_.get(), "kept", &got));
  ASSERT_EQ(got.siblings_size(), 1);
  EXPECT_EQ(got.siblings(0).value(), "live");

  internal::v1::MerkleNodesRequest leaves;
  leaves.set_requester_id("n1");
  leaves.set_level(2);  // the leaves of each interior node asked for
  for (int i = 0; i < 100000; ++i) leaves.add_indexes(0);
  internal::v1::MerkleNodesResponse hashes;
  const grpc::Status too_many = replica_->MerkleNodes(Ctx().get(), leaves, &hashes);
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << too_many.error_message();
  EXPECT_THAT(too_many.error_message(), HasSubstr("at most 256 interior node indexes"));
  EXPECT_GRPC_OK(Get(kv_.get(), "kept", &got));  // still serving
}

// A key stored before max_key_bytes was lowered keeps its record readable, mergeable and
// purgeable through the Replica service, where the tombstone reapers of the key's other replicas
// confirm and purge its tombstones; clients can no longer write or read it.
TEST_F(KvnodeProcessTest, TheTombstoneOfAKeyLongerThanALoweredLimitIsStillReadAndPurged) {
  const std::string key(200, 'k');
  v1::PutResponse put;
  EXPECT_GRPC_OK(Put(kv_.get(), key, "v", &put));
  v1::DeleteRequest del;
  del.set_key(key);
  del.set_context(put.context());
  v1::DeleteResponse deleted;
  EXPECT_GRPC_OK(kv_->Delete(Ctx().get(), del, &deleted));
  node_.process().Kill();
  StartNode({"--max_key_bytes=64"});
  ExpectInvalidArgument(Put(kv_.get(), key, "v"), "max_key_bytes");

  internal::v1::ReadRecordRequest read;
  read.set_key(key);
  internal::v1::ReadRecordResponse record;
  EXPECT_GRPC_OK(replica_->ReadRecord(Ctx().get(), read, &record));
  ASSERT_TRUE(record.found());
  // Another replica's record of such a key is merged too: replicas converge on every stored key.
  internal::v1::MergeBatchRequest batch;
  internal::v1::ReplicaRecord* merged_record = batch.add_records();
  merged_record->set_key(std::string(200, 'm'));
  merged_record->set_record(record.record());
  internal::v1::MergeBatchResponse merged;
  EXPECT_GRPC_OK(replica_->MergeBatch(Ctx().get(), batch, &merged));
  EXPECT_EQ(merged.merged(), 1u);
  internal::v1::ReadRecordRequest read_merged;
  read_merged.set_key(merged_record->key());
  internal::v1::ReadRecordResponse merged_read;
  EXPECT_GRPC_OK(replica_->ReadRecord(Ctx().get(), read_merged, &merged_read));
  EXPECT_TRUE(merged_read.found());
  internal::v1::PurgeRecordRequest purge;
  purge.set_requester_id("n1");
  purge.set_key(key);
  purge.set_expected_record(record.record());
  internal::v1::PurgeRecordResponse purged;
  EXPECT_GRPC_OK(replica_->PurgeRecord(Ctx().get(), purge, &purged));
  record.Clear();
  EXPECT_GRPC_OK(replica_->ReadRecord(Ctx().get(), read, &record));
  EXPECT_FALSE(record.found());

  // No node stores a key beyond the ceiling of max_key_bytes: such a request is malformed.
  read.set_key(std::string(64 << 10 | 1, 'k'));
  const grpc::Status too_long = replica_->ReadRecord(Ctx().get(), read, &record);
  EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << too_long.error_message();
  purge.set_key(read.key());
  const grpc::Status purge_too_long = replica_->PurgeRecord(Ctx().get(), purge, &purged);
  EXPECT_EQ(purge_too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << purge_too_long.error_message();
}

// A malformed List is refused as such before the members are asked: with the others down, their
// UNAVAILABLE must not be the answer to a bad page token or prefix.
TEST_F(KvnodeProcessTest, AMalformedListIsInvalidWhateverTheOtherMembersAnswer) {
  testing::NodeProcess::Options options;
  options.node_id = "n2";
  options.data_dir = dir_.Sub("n2");
  options.port = testing::PickFreePort();
  // The others are soon DOWN, and a DOWN member's UNAVAILABLE comes at once.
  options.extra_flags = {
      absl::StrCat("--peers=n1=127.0.0.1:1,n2=127.0.0.1:", options.port, ",n3=127.0.0.1:3"),
      "--gossip_interval=100ms", "--failure_timeout=300ms"};
  absl::StatusOr<testing::NodeProcess> n2 = testing::NodeProcess::Start(options);
  ASSERT_TRUE(n2.ok()) << n2.status();
  absl::SleepFor(absl::Seconds(1));
  auto kv2 = v1::KV::NewStub(Connect(n2->endpoint()));
  for (int i = 0; i < 3; ++i) {
    v1::ListRequest bad_token;
    bad_token.set_page_token("!!");
    v1::ListResponse page;
    grpc::Status status = kv2->List(Ctx().get(), bad_token, &page);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("malformed page token"));
    v1::ListRequest long_prefix;
    long_prefix.set_prefix(std::string(5000, 'p'));
    status = kv2->List(Ctx().get(), long_prefix, &page);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
}

// An error that quotes a long request field is still answered with its own code: the message is
// cut to fit a trailer (one over gRPC's metadata limit turned into a transport error).
TEST_F(KvnodeProcessTest, AnErrorQuotingALongFieldKeepsItsCode) {
  v1::DescribeWriteRequest request;
  request.set_write_id(std::string(20000, 'a'));
  v1::DescribeWriteResponse response;
  const grpc::Status status = kv_->DescribeWrite(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_LE(status.error_message().size(), 2100u);
}

TEST_F(KvnodeProcessTest, SigtermFinishesInFlightWritesAndExitsZero) {
  node_.process().Kill();
  StartNode({"--sync_writes"});  // slower writes: more of them are in flight at SIGTERM
  constexpr int kWriters = 8;
  absl::Mutex mu;
  std::map<std::string, std::string> acked;
  std::vector<grpc::Status> failures;
  std::atomic<int> acked_count{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0;; ++i) {
        const std::string key = absl::StrCat("w", t, "-", i);
        const std::string value = absl::StrCat("value-", t, "-", i, std::string(256, 'x'));
        const grpc::Status status = Put(kv_.get(), key, value);
        absl::MutexLock lock(&mu);
        if (!status.ok()) {
          failures.push_back(status);
          return;
        }
        acked[key] = value;
        acked_count.fetch_add(1);
      }
    });
  }
  while (acked_count.load() < 500) absl::SleepFor(absl::Milliseconds(5));
  node_.process().Signal(SIGTERM);
  for (std::thread& w : writers) w.join();
  absl::StatusOr<int> exit_code = node_.process().Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << node_.process().Stderr();
  EXPECT_THAT(node_.process().Stderr(), HasSubstr("kvnode stopped cleanly"));
  // Calls that reached the node before shutdown finished; later ones were refused.
  for (const grpc::Status& failure : failures) {
    EXPECT_EQ(failure.error_code(), grpc::StatusCode::UNAVAILABLE) << failure.error_message();
  }

  StartNode({});
  for (const auto& [key, value] : acked) {
    v1::GetResponse got;
    ASSERT_TRUE(Get(kv_.get(), key, &got).ok()) << key;
    EXPECT_THAT(Values(got), ElementsAre(value)) << key;
  }
}

TEST_F(KvnodeProcessTest, DrainRefusesNewCallsAndReportsNotServing) {
  node_.process().Kill();
  StartNode({"--shutdown_drain=3s"});
  EXPECT_GRPC_OK(Put(kv_.get(), "before", "v"));
  node_.process().Signal(SIGTERM);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(testing::WaitForServing(node_.endpoint(), absl::Milliseconds(500)));
  const grpc::Status refused = Put(kv_.get(), "during", "v");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(), HasSubstr("shutting down"));
  absl::StatusOr<int> exit_code = node_.process().Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << node_.process().Stderr();

  StartNode({});
  v1::GetResponse got;
  EXPECT_GRPC_OK(Get(kv_.get(), "before", &got));
  EXPECT_EQ(Get(kv_.get(), "during", &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace kv

// kvnode --metrics_listen: real kvnode processes serve Prometheus text over HTTP, scraped here
// with a plain socket.
//   - one node: every call is counted by method and status code, with its latency; the store's
//     state (node info, keys, coordinated writes) is there too;
//   - three nodes (N=3, W=2): the replication lag of the writes a node coordinated, the records
//     each peer confirmed, a killed peer seen DOWN with its hinted writes as outbox depth, which
//     drains when it returns;
//   - bad --metrics_listen values exit 2, a taken address exits 1; neither touches the data
//     directory.
// Every wait is a poll with a deadline.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kRpcTimeout = absl::Seconds(20);
constexpr absl::Duration kWaitTimeout = absl::Seconds(30);

// Scrapes `port` until `done(text)` holds or the wait times out; returns the last scrape.
std::string ScrapeUntil(int port, const std::function<bool(const std::string&)>& done) {
  const absl::Time deadline = absl::Now() + kWaitTimeout;
  std::string text;
  do {
    absl::StatusOr<std::string> scraped = testing::HttpGet(port, "/metrics");
    if (scraped.ok()) {
      text = *std::move(scraped);
      if (done(text)) break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  return text;
}

// The metrics port node `index` of `cluster` logged at its last start ("kvnode serving ...
// metrics=http://127.0.0.1:PORT/metrics"); the nodes are started with port 0.
int MetricsPort(testing::Cluster& cluster, size_t index) {
  // The line is written just after the server starts serving: poll for it.
  const std::string marker = "metrics=http://127.0.0.1:";
  const absl::Time deadline = absl::Now() + kWaitTimeout;
  std::string logs;
  int port = 0;
  do {
    logs = cluster.Logs(index);
    const size_t at = logs.rfind(marker);
    if (at != std::string::npos) {
      const size_t begin = at + marker.size();
      const size_t end = logs.find('/', begin);
      if (end != std::string::npos && absl::SimpleAtoi(logs.substr(begin, end - begin), &port)) {
        break;
      }
      port = 0;
    }
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);
  EXPECT_GT(port, 0) << "no metrics address in the log of node " << index << ":\n" << logs;
  return port;
}

// Calls `method` (a name no service has) with an empty message; its status.
grpc::Status CallUnknownMethod(const std::string& endpoint, const std::string& method) {
  grpc::GenericStub stub(grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(kRpcTimeout));
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status result;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   result = std::move(status);
                   done.Notify();
                 });
  done.WaitForNotification();
  return result;
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(kRpcTimeout));
  return context;
}

grpc::Status Put(v1::KV::Stub* kv, const std::string& key, const std::string& value) {
  v1::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  v1::PutResponse response;
  return kv->Put(Ctx().get(), request, &response);
}

std::unique_ptr<v1::KV::Stub> KvStub(const std::string& endpoint) {
  return v1::KV::NewStub(grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
}

TEST(MetricsProcessTest, OneNodeCountsCallsByMethodAndCode) {
  testing::Cluster::Options options;
  options.nodes = 1;
  options.replication_factor = 1;
  options.write_quorum = 1;
  options.extra_flags = {"--metrics_listen=127.0.0.1:0"};
  absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster = testing::Cluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const int metrics_port = MetricsPort(**cluster, 0);
  std::unique_ptr<v1::KV::Stub> kv = KvStub((*cluster)->endpoint(0));

  for (int i = 0; i < 5; ++i) {
    grpc::Status put = Put(kv.get(), absl::StrCat("key-", i), "value");
    ASSERT_TRUE(put.ok()) << put.error_message();
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Put(kv.get(), "", "value").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A PutBatch counts once as a call, and item by item under its items' kinds and own codes.
  v1::PutBatchRequest batch;
  for (const char* key : {"batch-1", "", "batch-2"}) {
    v1::PutRequest* item = batch.add_puts();
    item->set_key(key);
    item->set_value("value");
  }
  batch.add_deletes()->set_key("batch-1");
  v1::PutBatchResponse batch_response;
  ASSERT_TRUE(kv->PutBatch(Ctx().get(), batch, &batch_response).ok());
  ASSERT_EQ(batch_response.results_size(), 4);
  EXPECT_EQ(batch_response.results(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(batch_response.results(3).code(), grpc::StatusCode::OK);
  // A GetBatch the same way, by its items' own codes.
  v1::GetBatchRequest get_batch;
  for (const char* key : {"batch-2", "", "never-written"}) get_batch.add_gets()->set_key(key);
  v1::GetBatchResponse get_batch_response;
  ASSERT_TRUE(kv->GetBatch(Ctx().get(), get_batch, &get_batch_response).ok());
  ASSERT_EQ(get_batch_response.results_size(), 3);
  // A GetBatch over the item limit is refused as a whole: each of its Gets counts as an
  // operation refused with the batch's code.
  v1::GetBatchRequest too_many;
  for (int i = 0; i < 1001; ++i) too_many.add_gets()->set_key("batch-2");
  v1::GetBatchResponse refused;
  ASSERT_EQ(kv->GetBatch(Ctx().get(), too_many, &refused).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetRequest get;
  get.set_key("missing");
  v1::GetResponse got;
  EXPECT_EQ(kv->Get(Ctx().get(), get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  // Methods no service has count under one label, whatever name the client sends.
  for (const char* method : {"/kv.v1.KV/NoSuchMethod", "/no.such.Service/Call"}) {
    EXPECT_EQ(CallUnknownMethod((*cluster)->endpoint(0), method).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }

  // Waits for the counts of the last calls (each is counted as its status is sent).
  const std::string put_ok = R"(kv_grpc_requests_total{code="OK",method="/kv.v1.KV/Put"})";
  const std::string get_missing =
      R"(kv_grpc_requests_total{code="NOT_FOUND",method="/kv.v1.KV/Get"})";
  const std::string text = ScrapeUntil(metrics_port, [&](const std::string& t) {
    return testing::MetricSample(t, get_missing).value_or(0) >= 1 &&
           testing::MetricSample(t,
                                 R"(kv_grpc_requests_total{code="UNIMPLEMENTED",method="unknown"})")
                   .value_or(0) >= 2;
  });
  EXPECT_EQ(testing::MetricSample(text, put_ok), 5) << text;
  EXPECT_EQ(testing::MetricSample(
                text, R"(kv_grpc_requests_total{code="INVALID_ARGUMENT",method="/kv.v1.KV/Put"})"),
            2)
      << text;
  EXPECT_EQ(testing::MetricSample(text, get_missing), 1) << text;
  EXPECT_EQ(testing::MetricSample(
                text, R"(kv_grpc_requests_total{code="OK",method="/kv.v1.KV/PutBatch"})"),
            1)
      << text;
  EXPECT_EQ(testing::MetricSample(text, R"(kv_put_batch_items_total{code="OK",op="put"})"), 2)
      << text;
  EXPECT_EQ(
      testing::MetricSample(text, R"(kv_put_batch_items_total{code="INVALID_ARGUMENT",op="put"})"),
      1)
      << text;
  EXPECT_EQ(testing::MetricSample(text, R"(kv_put_batch_items_total{code="OK",op="delete"})"), 1)
      << text;
  EXPECT_FALSE(testing::MetricSample(
                   text, R"(kv_put_batch_items_total{code="INVALID_ARGUMENT",op="delete"})")
                   .has_value())
      << text;
  EXPECT_EQ(testing::MetricSample(
                text, R"(kv_grpc_requests_total{code="OK",method="/kv.v1.KV/GetBatch"})"),
            1)
      << text;
  for (const char* code : {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}) {
    EXPECT_EQ(testing::MetricSample(
                  text, absl::StrCat(R"(kv_get_batch_items_total{code=")", code, R"("})")),
              1)
        << code << "\n"
        << text;
  }
  EXPECT_EQ(
      testing::MetricSample(
          text, R"(kv_grpc_requests_total{code="INVALID_ARGUMENT",method="/kv.v1.KV/GetBatch"})"),
      1)
      << text;
  // Every Put, Delete and Get, alone or batched, by its own result.
  const std::vector<std::pair<std::string, double>> operations = {
      {R"(kv_operations_total{code="OK",op="put"})", 5 + 2},
      {R"(kv_operations_total{code="INVALID_ARGUMENT",op="put"})", 2 + 1},
      {R"(kv_operations_total{code="OK",op="delete"})", 1},
      {R"(kv_operations_total{code="OK",op="get"})", 1},
      {R"(kv_operations_total{code="INVALID_ARGUMENT",op="get"})", 1 + 1001},
      {R"(kv_operations_total{code="NOT_FOUND",op="get"})", 1 + 1},
  };
  for (const auto& [sample, count] : operations) {
    EXPECT_EQ(testing::MetricSample(text, sample), count) << sample << "\n" << text;
  }
  EXPECT_FALSE(
      testing::MetricSample(text, R"(kv_operations_total{code="INVALID_ARGUMENT",op="delete"})")
          .has_value())
      << text;
  EXPECT_EQ(testing::MetricSample(
                text, R"(kv_grpc_requests_total{code="UNIMPLEMENTED",method="unknown"})"),
            2)
      << text;
  EXPECT_THAT(text, ::testing::Not(HasSubstr("NoSuch")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("no.such")));
  // Every method of the node's services is known (no call yet: a histogram with no samples).
  EXPECT_EQ(
      testing::MetricSample(
          text, R"(kv_grpc_request_duration_seconds_count{method="/kv.v1.Admin/ClusterStatus"})"),
      0)
      << text;
  EXPECT_EQ(testing::MetricSample(
                text, R"(kv_grpc_request_duration_seconds_count{method="/kv.v1.KV/Put"})"),
            7)
      << text;
  EXPECT_EQ(
      testing::MetricSample(
          text, R"(kv_grpc_request_duration_seconds_bucket{method="/kv.v1.KV/Put",le="+Inf"})"),
      7)
      << text;
  EXPECT_GT(
      testing::MetricSample(text, R"(kv_grpc_request_duration_seconds_sum{method="/kv.v1.KV/Put"})")
          .value_or(0),
      0)
      << text;
  // The store's state.
  // 5 Puts, 2 puts and a delete of the batch.
  EXPECT_EQ(testing::MetricSample(text, "kv_writes_coordinated_total"), 8) << text;
  EXPECT_EQ(testing::MetricSample(text, "kv_members"), 1) << text;
  EXPECT_EQ(testing::MetricSample(text, "kv_layout_in_transition"), 0) << text;
  EXPECT_EQ(testing::MetricSample(text, "kv_settings_conflict"), 0) << text;
  EXPECT_EQ(testing::MetricSample(text, "kv_history_conflict"), 0) << text;
  EXPECT_THAT(text, HasSubstr(R"(kv_node_info{actor="n1#)")) << text;
  EXPECT_THAT(text, HasSubstr(R"(",node_id="n1",version=")")) << text;
  EXPECT_THAT(text, HasSubstr("# TYPE kv_grpc_requests_total counter"));
  EXPECT_THAT(text, HasSubstr("# TYPE kv_outbox_depth gauge"));

  // Only /metrics is served.
  absl::StatusOr<std::string> other = testing::HttpGet(metrics_port, "/other");
  EXPECT_TRUE(absl::IsNotFound(other.status())) << other.status();
  EXPECT_TRUE((*cluster)->StopAll().ok()) << (*cluster)->LogTails();
  EXPECT_EQ((*cluster)->SanitizerReports(), "");
}

TEST(MetricsProcessTest, ThreeNodesShowReplicationLagLivenessAndHintedWrites) {
  testing::Cluster::Options options;
  options.nodes = 3;
  // A failure timeout well above a stall of a loaded (sanitizer) build, so that only the killed
  // node is judged DOWN.
  options.extra_flags = {"--gossip_interval=200ms", "--failure_timeout=3s",
                         "--metrics_listen=127.0.0.1:0"};
  absl::StatusOr<std::unique_ptr<testing::Cluster>> started = testing::Cluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  testing::Cluster& cluster = **started;
  const std::vector<int> ports = {MetricsPort(cluster, 0), MetricsPort(cluster, 1)};
  std::unique_ptr<v1::KV::Stub> kv = KvStub(cluster.endpoint(0));

  // N=3 on 3 nodes: n1 coordinates every write sent to it.
  constexpr int kWrites = 40;
  for (int i = 0; i < kWrites; ++i) {
    grpc::Status put = Put(kv.get(), absl::StrCat("key-", i), "value");
    ASSERT_TRUE(put.ok()) << put.error_message();
  }
  // Waits for everything asserted below: replication, gossip and the lag window settle at
  // their own pace on a loaded machine.
  std::string text = ScrapeUntil(ports[0], [&](const std::string& t) {
    // A write whose first replication attempt to a peer failed (a slow batch timing out) has no
    // lag sample: at least one, at most one per write.
    bool settled = testing::MetricSample(t, "kv_replication_lag_recent_samples").value_or(0) >= 1;
    for (const char* peer : {"n2", "n3"}) {
      const std::string label = absl::StrCat(R"({peer=")", peer, R"("})");
      settled =
          settled &&
          testing::MetricSample(t, "kv_replicated_records_total" + label).value_or(0) >= kWrites &&
          testing::MetricSample(t, "kv_outbox_depth" + label) == 0 &&
          testing::MetricSample(t, "kv_member_up" + label) == 1;
    }
    return settled;
  });
  EXPECT_EQ(testing::MetricSample(text, "kv_writes_coordinated_total"), kWrites) << text;
  const double samples =
      testing::MetricSample(text, "kv_replication_lag_recent_samples").value_or(0);
  EXPECT_GE(samples, 1) << text;
  EXPECT_LE(samples, kWrites) << text;
  const std::optional<double> p50 =
      testing::MetricSample(text, R"(kv_replication_lag_recent_seconds{quantile="0.5"})");
  const std::optional<double> max =
      testing::MetricSample(text, R"(kv_replication_lag_recent_seconds{quantile="1"})");
  ASSERT_TRUE(p50.has_value() && max.has_value()) << text;
  EXPECT_GT(*p50, 0);
  for (const char* peer : {"n2", "n3"}) {
    EXPECT_EQ(testing::MetricSample(
                  text, absl::StrCat(R"(kv_replicated_records_total{peer=")", peer, R"("})")),
              kWrites)
        << text;
    EXPECT_EQ(testing::MetricSample(text, absl::StrCat(R"(kv_outbox_depth{peer=")", peer, R"("})")),
              0)
        << text;
    EXPECT_EQ(testing::MetricSample(text, absl::StrCat(R"(kv_member_up{peer=")", peer, R"("})")), 1)
        << text;
  }
  // The replicas counted the merges they were sent.
  const std::string replica_text = ScrapeUntil(ports[1], [](const std::string&) { return true; });
  EXPECT_GE(testing::MetricSample(
                replica_text,
                R"(kv_grpc_requests_total{code="OK",method="/kv.internal.v1.Replica/MergeBatch"})")
                .value_or(0),
            1)
      << replica_text;

  // n3 dies: gossip reports it DOWN, and the writes it is owed wait in n1's outbox.
  cluster.Kill(2);
  text = ScrapeUntil(ports[0], [](const std::string& t) {
    return testing::MetricSample(t, R"(kv_member_up{peer="n3"})") == 0;
  });
  ASSERT_EQ(testing::MetricSample(text, R"(kv_member_up{peer="n3"})"), 0) << text;
  constexpr int kHinted = 10;
  for (int i = 0; i < kHinted; ++i) {
    grpc::Status put = Put(kv.get(), absl::StrCat("hinted-", i), "value");
    ASSERT_TRUE(put.ok()) << put.error_message();
  }
  text = ScrapeUntil(ports[0], [](const std::string& t) {
    return testing::MetricSample(t, R"(kv_outbox_depth{peer="n3"})").value_or(0) >= kHinted &&
           testing::MetricSample(t, R"(kv_peer_reachable{peer="n3"})") == 0 &&
           testing::MetricSample(t, R"(kv_outbox_depth{peer="n2"})") == 0;
  });
  EXPECT_EQ(testing::MetricSample(text, R"(kv_outbox_depth{peer="n3"})"), kHinted) << text;
  EXPECT_EQ(testing::MetricSample(text, R"(kv_peer_reachable{peer="n3"})"), 0) << text;
  EXPECT_EQ(testing::MetricSample(text, R"(kv_outbox_depth{peer="n2"})"), 0) << text;

  // n3 returns: the hinted writes drain.
  ASSERT_TRUE(cluster.Restart(2).ok());
  text = ScrapeUntil(ports[0], [](const std::string& t) {
    return testing::MetricSample(t, R"(kv_outbox_depth{peer="n3"})") == 0 &&
           testing::MetricSample(t, R"(kv_replicated_records_total{peer="n3"})").value_or(0) >=
               kWrites + kHinted &&
           testing::MetricSample(t, R"(kv_member_up{peer="n3"})") == 1;
  });
  EXPECT_EQ(testing::MetricSample(text, R"(kv_outbox_depth{peer="n3"})"), 0) << text;
  EXPECT_EQ(testing::MetricSample(text, R"(kv_replicated_records_total{peer="n3"})"),
            kWrites + kHinted)
      << text;
  EXPECT_EQ(testing::MetricSample(text, R"(kv_member_up{peer="n3"})"), 1) << text;
  EXPECT_TRUE(cluster.StopAll().ok()) << cluster.LogTails();
  EXPECT_EQ(cluster.SanitizerReports(), "");
}

TEST(MetricsProcessTest, BadOrTakenMetricsAddressIsReportedAndChangesNothing) {
  testing::TempDir dir;
  const std::string listen = absl::StrCat("--listen=127.0.0.1:", testing::PickFreePort());
  for (const char* bad : {"localhost:9700", "127.0.0.1", "[::1]:9700", "127.0.0.1:70000"}) {
    const std::string data_dir = dir.Sub("bad");
    testing::CommandResult r = testing::RunCommand(
        {KVNODE_PATH, "--data_dir=" + data_dir, listen, absl::StrCat("--metrics_listen=", bad)});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("--metrics_listen")) << bad;
    EXPECT_FALSE(std::filesystem::exists(data_dir)) << bad;
  }
  // An address another process holds.
  const int taken = testing::BindLoopback(0);
  sockaddr_in bound{};
  socklen_t bound_size = sizeof(bound);
  ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&bound), &bound_size), 0);
  const int taken_port = ntohs(bound.sin_port);
  ASSERT_EQ(::listen(taken, 1), 0);
  const std::string data_dir = dir.Sub("taken");
  testing::CommandResult r =
      testing::RunCommand({KVNODE_PATH, "--data_dir=" + data_dir, listen,
                           absl::StrCat("--metrics_listen=127.0.0.1:", taken_port)});
  close(taken);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat("cannot serve metrics on 127.0.0.1:", taken_port)));
  EXPECT_FALSE(std::filesystem::exists(data_dir));
}

}  // namespace
}  // namespace kv

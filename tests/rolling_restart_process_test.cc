// A rolling restart under load, on loopback: three real kvnode processes (N=3, W=2), client
// threads writing and reading through kv::Client with every endpoint, and each node stopped
// (SIGTERM, clean exit) and started again in turn. What a user expects of it: no call fails, and
// every acknowledged write ends up on all replicas.
//
// The nodes run with --shutdown_drain=0s, the harshest case: calls keep reaching a node until its
// listener closes, so some reach it while gRPC shuts down and are dropped unstarted (CANCELLED),
// others are refused (UNAVAILABLE) or find the port closed. The client must take every one of
// them elsewhere. Each thread makes a new Client every few calls, as short-lived processes such
// as kvctl do, so that new connections keep arriving during the shutdowns.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/kv_client.h"
#include "gtest/gtest.h"
#include "tests/cluster_util.h"

namespace kv {
namespace {

constexpr int kThreads = 6;
constexpr int kCallsPerClient = 10;
constexpr absl::Duration kConvergeTimeout = absl::Seconds(60);

std::unique_ptr<Client> NewClient(const std::vector<std::string>& endpoints) {
  ClientOptions options;
  options.endpoints = endpoints;
  options.call_deadline = absl::Seconds(20);
  return Client::Create(options).value();
}

TEST(RollingRestartProcessTest, ClientsSeeNoFailureAndEveryAcknowledgedWriteReplicates) {
  testing::Cluster::Options options;
  options.nodes = 3;
  options.extra_flags = {"--shutdown_drain=0s"};
  absl::StatusOr<std::unique_ptr<testing::Cluster>> started = testing::Cluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  testing::Cluster& cluster = **started;
  const std::vector<std::string> endpoints = cluster.endpoints();

  absl::Mutex mu;
  std::map<std::string, std::string> acked;  // key -> write id; guarded by mu
  std::vector<std::string> failures;         // guarded by mu
  std::atomic<int> calls{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<Client> client;
      std::string last_key;
      for (int i = 0; !stop.load(); ++i) {
        if (i % kCallsPerClient == 0) client = NewClient(endpoints);
        if (i % 2 == 1 && !last_key.empty()) {
          absl::StatusOr<GetResult> got = client->Get(last_key);
          ++calls;
          if (!got.ok()) {
            absl::MutexLock lock(&mu);
            failures.push_back(absl::StrCat("get ", last_key, ": ", got.status().ToString()));
          }
          continue;
        }
        const std::string key = absl::StrCat("roll/", t, "/", i);
        absl::StatusOr<WriteResult> put = client->Put(key, absl::StrCat("value ", i));
        ++calls;
        absl::MutexLock lock(&mu);
        if (put.ok()) {
          acked[key] = put->write_id;
          last_key = key;
        } else {
          failures.push_back(absl::StrCat("put ", key, ": ", put.status().ToString()));
        }
      }
    });
  }

  std::vector<std::string> steps;
  for (size_t node = 0; node < cluster.size(); ++node) {
    absl::SleepFor(absl::Milliseconds(700));  // load on all three first
    const absl::StatusOr<int> code = cluster.Stop(node);
    const absl::Status restarted = cluster.Restart(node);
    steps.push_back(
        absl::StrCat(cluster.node_id(node), ": stop ",
                     code.ok() ? absl::StrCat("exit ", *code) : code.status().ToString(),
                     ", restart ", restarted.ToString()));
    if (!code.ok() || *code != 0 || !restarted.ok()) break;
  }
  absl::SleepFor(absl::Milliseconds(700));
  stop = true;
  for (std::thread& thread : threads) thread.join();
  const std::string restarts = absl::StrJoin(steps, "; ");
  ASSERT_EQ(steps.size(), cluster.size()) << restarts;
  for (const std::string& step : steps) {
    EXPECT_NE(step.find("exit 0, restart OK"), std::string::npos) << restarts;
  }

  absl::MutexLock lock(&mu);
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << calls.load()
                                << " calls failed during the rolling restart; first: "
                                << absl::StrJoin(
                                       failures.begin(),
                                       failures.begin() + std::min<size_t>(failures.size(), 5),
                                       "\n  ");
  ASSERT_GT(acked.size(), 100u) << "too little load to mean anything";

  // Every acknowledged write reaches all three replicas.
  std::unique_ptr<Client> client = NewClient(endpoints);
  const absl::Time deadline = absl::Now() + kConvergeTimeout;
  std::vector<std::string> pending;
  for (const auto& [key, write_id] : acked) pending.push_back(write_id);
  while (!pending.empty() && absl::Now() < deadline) {
    std::vector<std::string> still;
    for (const std::string& write_id : pending) {
      absl::StatusOr<DescribeWriteResult> described = client->DescribeWrite(write_id);
      if (!described.ok() || described->state != DescribeWriteResult::State::kReplicated) {
        still.push_back(write_id);
      }
    }
    pending.swap(still);
    if (!pending.empty()) absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(pending.empty()) << pending.size() << " of " << acked.size()
                               << " acknowledged writes not on all replicas after "
                               << absl::FormatDuration(kConvergeTimeout) << "; first "
                               << pending.front();
  const absl::Status stopped = cluster.StopAll();
  EXPECT_TRUE(stopped.ok()) << stopped;
  const std::string reports = cluster.SanitizerReports();
  EXPECT_TRUE(reports.empty()) << reports;
  std::fprintf(stderr, "%d calls, %zu acknowledged writes; %s\n", calls.load(), acked.size(),
               restarts.c_str());
}

}  // namespace
}  // namespace kv

// Smoke tests of the real kvbench binary against a real single-node kvnode: a short run with the
// transport ceiling prints one JSON object with sane numbers, no errors and the node's
// replication lag, reads of keys that were never written count as successes but are reported
// apart, a paced run neither hides a stall nor a rate it could not reach, and bad flags exit
// with 2.
#include <signal.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::kv::testing::CommandResult;
using ::kv::testing::NodeProcess;
using ::kv::testing::RunCommand;
using ::kv::testing::TempDir;

class KvbenchProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NodeProcess::Options options;
    options.data_dir = dir_.Sub("n1");
    absl::StatusOr<NodeProcess> node = NodeProcess::Start(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = *std::move(node);
  }

  CommandResult Kvbench(std::vector<std::string> args) {
    args.insert(args.begin(), {KVBENCH_PATH, "--endpoints=" + node_.endpoint()});
    return RunCommand(args, "", absl::Seconds(60));
  }

  static nlohmann::json ParseReport(const CommandResult& result) {
    nlohmann::json json = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(json.is_object()) << "stdout is not one JSON object: " << result.out
                                  << "\nstderr: " << result.err;
    return json;
  }

  TempDir dir_;
  NodeProcess node_;
};

TEST_F(KvbenchProcessTest, RateCapsTheWorkload) {
  // 200 ops/s for 2 s: far below what the node does, so the cap is what limits it.
  const CommandResult result = Kvbench({"--json", "--duration=2s", "--warmup=0s", "--rate=200",
                                        "--workload=put", "--keys=100", "--concurrency=8"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  EXPECT_EQ(report.value("rate_cap", 0.0), 200.0) << report;
  EXPECT_GT(report.value("ops_per_sec", 0.0), 100) << report;
  EXPECT_LE(report.value("ops_per_sec", 1e9), 210) << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;
  EXPECT_DOUBLE_EQ(report.value("rate_achieved_fraction", 0.0),
                   report.value("ops_per_sec", 0.0) / 200)
      << report;
  EXPECT_EQ(Kvbench({"--rate=-1"}).exit_code, 2);
}

// Failed operations do not count toward the rate achieved: a paced run whose every Put is
// refused (values over the node's limit) achieved none of it, and says so.
TEST_F(KvbenchProcessTest, FailedOperationsDoNotCountTowardTheRateAchieved) {
  const CommandResult result =
      Kvbench({"--json", "--duration=1s", "--warmup=0s", "--rate=200", "--workload=put",
               "--keys=10", "--concurrency=4", "--value_size=2000000"});
  EXPECT_EQ(result.exit_code, 3) << result.out << result.err;  // no successful operation
  const nlohmann::json report = ParseReport(result);
  EXPECT_GT(report.value("error_count", 0), 100) << report;
  EXPECT_EQ(report.value("rate_achieved_fraction", 1.0), 0.0) << report;
  EXPECT_TRUE(absl::StrContains(result.err, "of --rate=200 was achieved")) << result.err;
}

// A paced run times each operation from its slot: a half-second stall of the node (SIGSTOP)
// shows in the latencies of every operation due during it, not only of the few outstanding, and
// the slots are made up afterwards.
TEST_F(KvbenchProcessTest, AStallShowsInThePacedLatencies) {
  CommandResult result;
  std::thread bench([&] {
    result = Kvbench({"--json", "--duration=3s", "--warmup=0s", "--rate=200", "--workload=put",
                      "--keys=100", "--concurrency=4", "--timeout=10s"});
  });
  absl::SleepFor(absl::Milliseconds(1200));
  node_.process().Signal(SIGSTOP);
  absl::SleepFor(absl::Milliseconds(500));
  node_.process().Signal(SIGCONT);
  bench.join();
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  // About 100 of the 600 operations were due during the stall: more than 1%.
  EXPECT_GT(report.value("p99_us", 0.0), 250'000) << report;
  EXPECT_GT(report.value("rate_achieved_fraction", 0.0), 0.9) << report;
}

// Each request slot writes only its own keys (so that two outstanding writes never race on one),
// and the chosen zipfian rank picks the slot's rank-th key: the slot's hottest key gets about the
// share of the distribution's first rank (about 10% here), not the 64 first ranks' (about half).
// The key's dot counter on the single node counts the writes to it.
TEST_F(KvbenchProcessTest, EachRequestSlotsWritesFollowTheKeyDistribution) {
  const CommandResult result = Kvbench({"--json", "--duration=2s", "--warmup=0s", "--workload=put",
                                        "--keys=6400", "--concurrency=64"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const double writes_per_slot = ParseReport(result).value("writes", 0.0) / 64;
  ASSERT_GT(writes_per_slot, 50);
  const CommandResult got = RunCommand(
      {KVCTL_PATH, "--endpoints=" + node_.endpoint(), "--json", "get", "kvbench/0000000000"}, "",
      absl::Seconds(30));
  ASSERT_EQ(got.exit_code, 0) << got.out << got.err;
  const std::string dot = ParseReport(got)["siblings"][0].value("dot", "");
  ASSERT_NE(dot.find(':'), std::string::npos) << got.out;
  const double hottest = std::stod(dot.substr(dot.find(':') + 1));
  EXPECT_LT(hottest / writes_per_slot, 0.3) << dot << " of " << writes_per_slot;
  EXPECT_GT(hottest / writes_per_slot, 0.03) << dot << " of " << writes_per_slot;
}

// The delete workload alternates Puts and Deletes at random, each with the key's newest context:
// both kinds are counted, and each key ends with one version (a value or none), never siblings.
TEST_F(KvbenchProcessTest, TheDeleteWorkloadReplacesValuesAndTombstonesWithoutSiblings) {
  const CommandResult result = Kvbench({"--json", "--duration=1s", "--warmup=0s",
                                        "--workload=delete", "--keys=8", "--concurrency=4"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  EXPECT_EQ(report.value("workload", ""), "delete") << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;
  const double writes = report.value("writes", 0.0);
  const double deletes = report.value("deletes", 0.0);
  EXPECT_GT(writes, 20) << report;
  EXPECT_GT(deletes, 20) << report;
  EXPECT_NEAR(deletes / (writes + deletes), 0.5, 0.2) << report;
  for (int i = 0; i < 8; ++i) {
    const CommandResult got =
        RunCommand({KVCTL_PATH, "--endpoints=" + node_.endpoint(), "--json", "get",
                    absl::StrCat("kvbench/", absl::Dec(i, absl::kZeroPad10))},
                   "", absl::Seconds(30));
    if (got.exit_code == 1) continue;  // deleted last
    ASSERT_EQ(got.exit_code, 0) << got.out << got.err;
    EXPECT_EQ(ParseReport(got)["siblings"].size(), 1u) << got.out;
  }
}

// A rate the node cannot reach is reported as such, not silently capped.
TEST_F(KvbenchProcessTest, ARateTheNodesCannotKeepUpWithIsReported) {
  const CommandResult result = Kvbench({"--json", "--duration=1s", "--warmup=0s", "--rate=1000000",
                                        "--workload=put", "--keys=100", "--concurrency=2"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  EXPECT_LT(report.value("rate_achieved_fraction", 1.0), 0.5) << report;
  EXPECT_TRUE(absl::StrContains(result.err, "of --rate=1000000 was achieved")) << result.err;
}

TEST_F(KvbenchProcessTest, RoundsReportEachRoundsRatioAndTheirMedian) {
  const CommandResult result = Kvbench({"--json", "--duration=3s", "--warmup=0s", "--ceiling",
                                        "--rounds=3", "--keys=100", "--concurrency=8"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  ASSERT_TRUE(report["round_ratios"].is_array()) << report;
  ASSERT_EQ(report["round_ratios"].size(), 3u) << report;
  std::vector<double> ratios;
  for (const nlohmann::json& r : report["round_ratios"]) ratios.push_back(r.get<double>());
  std::sort(ratios.begin(), ratios.end());
  EXPECT_GT(ratios[0], 0) << report;
  EXPECT_DOUBLE_EQ(report.value("ratio_to_ceiling", 0.0), ratios[1]) << report;
  // The rounds' measured windows add up to --duration.
  EXPECT_NEAR(report.value("seconds", 0.0), 3.0, 0.3) << report;
  EXPECT_NEAR(report.value("ceiling_seconds", 0.0), 3.0, 0.3) << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;
}

TEST_F(KvbenchProcessTest, ShortRunWithCeilingReportsOrderedPercentilesAndNoErrors) {
  const CommandResult result = Kvbench(
      {"--json", "--duration=2s", "--warmup=0s", "--ceiling", "--keys=100", "--concurrency=8"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  ASSERT_TRUE(report.is_object());

  EXPECT_GT(report.value("ops_per_sec", 0.0), 0) << report;
  const double p50 = report.value("p50_us", -1.0);
  const double p99 = report.value("p99_us", -1.0);
  const double p999 = report.value("p999_us", -1.0);
  EXPECT_GT(p50, 0) << report;
  EXPECT_LE(p50, p99) << report;
  EXPECT_LE(p99, p999) << report;

  ASSERT_TRUE(report["errors"].is_object()) << report;
  EXPECT_TRUE(report["errors"].empty()) << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;
  EXPECT_GT(report.value("reads", 0), 0) << report;  // workload a: reads and updates
  EXPECT_GT(report.value("writes", 0), 0) << report;
  EXPECT_EQ(report.value("reads_not_found", -1), 0) << report;  // every key was preloaded
  EXPECT_EQ(report["preload"].value("keys", 0), 100) << report;

  EXPECT_GT(report.value("ceiling_ops_per_sec", 0.0), 0) << report;
  EXPECT_GT(report.value("ratio_to_ceiling", 0.0), 0) << report;
  EXPECT_EQ(report.value("ceiling_error_count", -1), 0) << report;

  // The node was asked for its replication lag after the run.
  ASSERT_TRUE(report["replication_lag_nodes"].is_array()) << report;
  ASSERT_EQ(report["replication_lag_nodes"].size(), 1u) << report;
  const nlohmann::json& node = report["replication_lag_nodes"][0];
  EXPECT_FALSE(node.contains("error")) << report;
  EXPECT_EQ(node.value("node_id", ""), "n1") << report;
  EXPECT_TRUE(absl::StrContains(report.value("replication_lag_method", ""), "largest")) << report;
  if (node.value("samples", 0) > 0) {
    EXPECT_LE(report.value("replication_lag_p50_us", -1),
              report.value("replication_lag_p99_us", -2))
        << report;
    EXPECT_EQ(report.value("replication_lag_p99_us", -1), node.value("p99_us", -2)) << report;
  } else {
    EXPECT_FALSE(report.contains("replication_lag_p99_us")) << report;
  }

  // Progress went to stderr, once per second.
  EXPECT_TRUE(absl::StrContains(result.err, "ops/s")) << result.err;
}

// --ceiling_endpoints sends the ceiling's Pings to other nodes than the workload: to an address
// nobody listens on, every Ping fails while the workload, on the node, does not.
TEST_F(KvbenchProcessTest, CeilingEndpointsTakeTheCeilingsPingsElsewhere) {
  const std::string nobody = "127.0.0.1:" + std::to_string(::kv::testing::PickFreePort());
  const CommandResult result =
      Kvbench({"--json", "--duration=1s", "--warmup=0s", "--ceiling", "--workload=put", "--keys=50",
               "--concurrency=4", "--timeout=200ms", "--ceiling_endpoints=" + nobody});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  EXPECT_EQ(report["ceiling_endpoints"], nlohmann::json::array({nobody})) << report;
  EXPECT_GT(report.value("ceiling_error_count", 0), 0) << report;
  EXPECT_EQ(report.value("ceiling_ops_per_sec", -1.0), 0.0) << report;
  EXPECT_GT(report.value("ops_per_sec", 0.0), 0) << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;

  // Without the flag the ceiling pings the workload's nodes.
  const CommandResult same = Kvbench({"--json", "--duration=1s", "--warmup=0s", "--ceiling",
                                      "--workload=put", "--keys=50", "--concurrency=4"});
  ASSERT_EQ(same.exit_code, 0) << same.out << same.err;
  const nlohmann::json same_report = ParseReport(same);
  EXPECT_EQ(same_report["ceiling_endpoints"], same_report["endpoints"]) << same_report;
  EXPECT_GT(same_report.value("ceiling_ops_per_sec", 0.0), 0) << same_report;
}

TEST_F(KvbenchProcessTest, ReadsOfUnwrittenKeysCountAsSuccessesButAreReportedApart) {
  const CommandResult result =
      Kvbench({"--json", "--workload=c", "--no-preload", "--duration=1s", "--warmup=0s",
               "--keys=50", "--concurrency=4", "--distribution=uniform"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  EXPECT_GT(report.value("ops_per_sec", 0.0), 0) << report;
  EXPECT_GT(report.value("reads_not_found", 0), 0) << report;
  EXPECT_EQ(report.value("reads_not_found", 0), report.value("reads", -1)) << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;
  EXPECT_FALSE(report.contains("preload")) << report;
}

// The largest --keys the help allows runs in memory that follows the keys touched (one context
// per key up front was 32 GB: std::bad_alloc).
TEST_F(KvbenchProcessTest, TheLargestKeyCountRuns) {
  const CommandResult result =
      Kvbench({"--json", "--workload=a", "--no-preload", "--duration=300ms", "--warmup=0s",
               "--keys=1000000000", "--concurrency=4", "--distribution=uniform"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const nlohmann::json report = ParseReport(result);
  EXPECT_GT(report.value("writes", 0), 0) << report;
  EXPECT_EQ(report.value("error_count", -1), 0) << report;
}

// The preload replaces what an earlier run wrote: however many runs preload a key, it keeps
// one version (blind writes would add a sibling per run).
TEST_F(KvbenchProcessTest, RepeatedPreloadsLeaveOneVersionPerKey) {
  for (int run = 0; run < 3; ++run) {
    const CommandResult result = Kvbench({"--json", "--workload=c", "--duration=200ms",
                                          "--warmup=0s", "--keys=20", "--concurrency=4"});
    ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
    EXPECT_EQ(ParseReport(result)["preload"].value("keys", 0), 20);
  }
  for (int index : {0, 7, 19}) {
    const std::string key = absl::StrFormat("kvbench/%010d", index);
    const CommandResult get =
        RunCommand({KVCTL_PATH, "--endpoints=" + node_.endpoint(), "--json", "get", key}, "",
                   absl::Seconds(20));
    ASSERT_EQ(get.exit_code, 0) << get.out << get.err;
    const nlohmann::json json = nlohmann::json::parse(get.out, nullptr, false);
    ASSERT_TRUE(json.is_object()) << get.out;
    EXPECT_EQ(json["siblings"].size(), 1u) << key << ": " << get.out;
  }
}

TEST_F(KvbenchProcessTest, BadFlagsExitWithUsageError) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--workload=z"},
                                               {"--concurrency=0"},
                                               {"--duration=soon"},
                                               {"--frobnicate"},
                                               {"--ceiling_endpoints=127.0.0.1:1"},
                                               {"--ceiling", "--ceiling_endpoints=nohost"},
                                               // Would overflow the run's deadline (it ended
                                               // at once, "0 ops in 9223372036.85s").
                                               {"--duration=100000000h"},
                                               {"--warmup=99999999999h"},
                                               {"--timeout=9000000h"},
                                               {"positional"}}) {
    const CommandResult result = Kvbench(args);
    EXPECT_EQ(result.exit_code, 2) << args[0] << ": " << result.err;
  }
  // Values over the node's max_value_bytes (1 MiB): the preload is refused, a usage error.
  const CommandResult too_big = Kvbench(
      {"--workload=c", "--keys=2", "--value_size=2000000", "--duration=200ms", "--warmup=0s"});
  EXPECT_EQ(too_big.exit_code, 2) << too_big.err;
  EXPECT_TRUE(absl::StrContains(too_big.err, "preload failed")) << too_big.err;
  const CommandResult help = Kvbench({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(help.out, "--ceiling")) << help.out;
}

}  // namespace
}  // namespace kv

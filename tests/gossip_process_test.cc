// Gossip membership and failure detection with real kvnode processes on loopback (issue 4
// item 3), gossiping every 100 ms with a 1 s failure timeout:
//   - every node sees every other UP; a paused (SIGSTOP) node is reported DOWN by all the others
//     within the failure timeout (plus gossip slack), and UP again after SIGCONT; a killed
//     (SIGKILL) node is DOWN, and UP with a new incarnation after it restarts;
//   - while a node is down, W=2 writes and R=1 reads through the live nodes keep succeeding
//     quickly (coordinators route around it instead of waiting for timeouts);
//   - a node started with only --seeds learns the full member list, places keys exactly as the
//     others do, and serves; a node the seed's cluster does not list refuses to start.
//   - a node outside the layout that goes away is forgotten by every member after
//     --gossip_forget_after, and known again when it comes back.
// Every wait is a poll with a deadline; every loop is bounded.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "gtest/gtest.h"
#include "storage/small_file.h"
#include "tests/cluster_util.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::kv::testing::PickFreePort;
using ::kv::testing::Subprocess;
using ::kv::testing::TempDir;
using ::kv::testing::WriteFile;

constexpr absl::Duration kFailureTimeout = absl::Seconds(1);
// Detection may take the timeout plus a few gossip rounds; a slow sanitizer build on a busy
// 2-core machine gets more slack on top.
constexpr absl::Duration kDetectBound = absl::Seconds(4);
constexpr absl::Duration kPoll = absl::Milliseconds(20);

std::unique_ptr<testing::Cluster> StartCluster(int nodes, std::vector<size_t> seeds_only = {},
                                               std::vector<size_t> joiners = {},
                                               std::vector<std::string> flags = {}) {
  testing::Cluster::Options options;
  options.nodes = nodes;
  options.seeds_only = std::move(seeds_only);
  options.joiners = std::move(joiners);
  options.extra_flags = {"--gossip_interval=100ms",
                         absl::StrCat("--failure_timeout=", absl::FormatDuration(kFailureTimeout)),
                         "--shutdown_drain=0s"};
  options.extra_flags.insert(options.extra_flags.end(), flags.begin(), flags.end());
  absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster = testing::Cluster::Start(options);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return cluster.ok() ? *std::move(cluster) : nullptr;
}

std::unique_ptr<Client> ClientFor(const std::vector<std::string>& endpoints) {
  ClientOptions options;
  options.endpoints = endpoints;
  options.call_deadline = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return *std::move(client);
}

// `member`'s entry in node `index`'s ClusterStatus (among the members or the nodes outside the
// layout), if it answered and lists it.
std::optional<MemberStatus> MemberAsSeenBy(testing::Cluster& cluster, size_t index,
                                           const std::string& member) {
  std::unique_ptr<Client> client = ClientFor({cluster.endpoint(index)});
  CallOptions call;
  call.deadline = absl::Seconds(2);
  absl::StatusOr<ClusterStatusResult> status = client->ClusterStatus(call);
  if (!status.ok()) return std::nullopt;
  for (const MemberStatus& m : status->members) {
    if (m.node_id == member) return m;
  }
  for (const MemberStatus& m : status->outside_layout) {
    if (m.node_id == member) return m;
  }
  return std::nullopt;
}

// Polls until every node of `observers` reports `member` as `liveness`; returns how long it
// took, or InfiniteDuration after `limit`.
absl::Duration WaitForLiveness(testing::Cluster& cluster, const std::vector<size_t>& observers,
                               const std::string& member, const std::string& liveness,
                               absl::Duration limit) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < limit) {
    bool all = true;
    for (size_t i : observers) {
      std::optional<MemberStatus> seen = MemberAsSeenBy(cluster, i, member);
      all = all && seen && seen->liveness == liveness;
    }
    if (all) return absl::Now() - start;
    absl::SleepFor(kPoll);
  }
  return absl::InfiniteDuration();
}

size_t CountOccurrences(absl::string_view text, absl::string_view what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != absl::string_view::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

// Writes `count` keys with W=2 through the given endpoints one at a time; returns the slowest
// write. Every write must succeed.
absl::Duration WriteKeys(const std::vector<std::string>& endpoints, const std::string& prefix,
                         int count) {
  absl::Duration slowest;
  for (int i = 0; i < count; ++i) {
    std::unique_ptr<Client> client = ClientFor({endpoints[i % endpoints.size()]});
    WriteOptions options;
    options.w = Quorum::Count(2);
    options.deadline = absl::Seconds(5);
    const absl::Time start = absl::Now();
    absl::StatusOr<WriteResult> put = client->Put(absl::StrCat(prefix, i), "v", options);
    slowest = std::max(slowest, absl::Now() - start);
    EXPECT_TRUE(put.ok()) << prefix << i << ": " << put.status();
    ReadOptions read;
    read.deadline = absl::Seconds(5);
    EXPECT_TRUE(client->Get(absl::StrCat(prefix, i), read).ok()) << prefix << i;
  }
  return slowest;
}

TEST(GossipProcessTest, DownNodeIsDetectedRoutedAroundAndSeenUpAgain) {
  // 4 nodes, N=3: some writes land on a node that is not a replica and must be forwarded.
  std::unique_ptr<testing::Cluster> cluster = StartCluster(4);
  ASSERT_NE(cluster, nullptr);
  const std::vector<size_t> live = {0, 1, 2};
  const std::vector<std::string> live_endpoints = {cluster->endpoint(0), cluster->endpoint(1),
                                                   cluster->endpoint(2)};
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_NE(WaitForLiveness(*cluster, {0, 1, 2, 3}, cluster->node_id(i), "UP", absl::Seconds(20)),
              absl::InfiniteDuration())
        << cluster->node_id(i) << " never UP everywhere\n"
        << cluster->LogTails();
  }
  std::optional<MemberStatus> before = MemberAsSeenBy(*cluster, 0, "n4");
  ASSERT_TRUE(before.has_value());
  EXPECT_GT(before->heartbeat, 0u);
  EXPECT_GE(before->last_heard_ms_ago, 0);

  // SIGSTOP: connections stay open, nothing answers.
  ASSERT_TRUE(cluster->Pause(3));
  const absl::Duration down = WaitForLiveness(*cluster, live, "n4", "DOWN", kDetectBound);
  ASSERT_NE(down, absl::InfiniteDuration()) << "n4 not DOWN on every live node\n"
                                            << cluster->LogTails();
  std::cout << "paused n4 reported DOWN by all live nodes after " << absl::FormatDuration(down)
            << " (failure_timeout " << absl::FormatDuration(kFailureTimeout) << ")\n";
  const absl::Duration slowest = WriteKeys(live_endpoints, "paused-", 60);
  std::cout << "60 W=2 writes (+ reads) with n4 paused: slowest write "
            << absl::FormatDuration(slowest) << "\n";
  // Without routing around it, a write forwarded to n4 would wait for the forward timeout (5 s).
  EXPECT_LT(slowest, absl::Seconds(2));
  for (size_t i : live) {
    EXPECT_EQ(MemberAsSeenBy(*cluster, i, cluster->node_id(i))->liveness, "UP");
  }
  // DescribeKey does not wait on the DOWN replica either: it is shown unreachable, not asked.
  {
    std::unique_ptr<Client> client = ClientFor({cluster->endpoint(0)});
    int with_n4 = 0;
    for (int i = 0; i < 20; ++i) {
      const absl::Time start = absl::Now();
      absl::StatusOr<DescribeKeyResult> described = client->DescribeKey(absl::StrCat("paused-", i));
      ASSERT_TRUE(described.ok()) << described.status();
      EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "paused-" << i;
      for (const ReplicaView& view : described->replicas) {
        if (view.node_id != "n4") continue;
        ++with_n4;
        EXPECT_FALSE(view.reachable);
        EXPECT_TRUE(absl::StrContains(view.error, "DOWN")) << view.error;
        // What the DOWN replica holds is unknown: the key does not count as converged.
        EXPECT_FALSE(described->converged) << "paused-" << i;
      }
    }
    EXPECT_GT(with_n4, 0);  // N=3 of 4 nodes: most keys have a replica on n4
  }
  // A write that needs the DOWN replica (W=all) is refused at once, not at its deadline, and
  // says why; the copies it made stay and replicate later.
  {
    std::unique_ptr<Client> client = ClientFor({cluster->endpoint(0)});
    int refused = 0;
    for (int i = 0; i < 10; ++i) {
      WriteOptions all;
      all.w = Quorum::All();
      all.deadline = absl::Seconds(5);
      const absl::Time start = absl::Now();
      absl::StatusOr<WriteResult> put = client->Put(absl::StrCat("all-", i), "v", all);
      if (put.ok()) continue;  // a key whose replicas are all live
      ++refused;
      EXPECT_TRUE(absl::IsUnavailable(put.status())) << put.status();
      EXPECT_TRUE(absl::StrContains(put.status().message(), "DOWN")) << put.status();
      EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << put.status();
    }
    EXPECT_GT(refused, 0);
  }
  cluster->Resume(3);
  const absl::Duration up = WaitForLiveness(*cluster, live, "n4", "UP", kDetectBound);
  ASSERT_NE(up, absl::InfiniteDuration()) << cluster->LogTails();
  std::cout << "resumed n4 reported UP again after " << absl::FormatDuration(up) << "\n";

  // SIGKILL, then restart: a new incarnation.
  cluster->Kill(3);
  ASSERT_NE(WaitForLiveness(*cluster, live, "n4", "DOWN", kDetectBound), absl::InfiniteDuration())
      << cluster->LogTails();
  const absl::Duration slowest_killed = WriteKeys(live_endpoints, "killed-", 30);
  EXPECT_LT(slowest_killed, absl::Seconds(2));
  ASSERT_TRUE(cluster->Restart(3).ok()) << cluster->LogTails();
  ASSERT_NE(WaitForLiveness(*cluster, live, "n4", "UP", kDetectBound), absl::InfiniteDuration())
      << cluster->LogTails();
  std::optional<MemberStatus> after = MemberAsSeenBy(*cluster, 0, "n4");
  ASSERT_TRUE(after.has_value());
  EXPECT_GT(after->incarnation, before->incarnation);
  EXPECT_TRUE(cluster->StopAll().ok()) << cluster->LogTails();
  EXPECT_EQ(cluster->SanitizerReports(), "");
}

TEST(GossipProcessTest, SeedsOnlyNodeLearnsTheMembersAndPlacesKeysLikeTheOthers) {
  // n4 gets only --seeds=<n1>; the others list all four in --peers.
  std::unique_ptr<testing::Cluster> cluster = StartCluster(4, {3});
  ASSERT_NE(cluster, nullptr);
  std::unique_ptr<Client> via_seeds_only = ClientFor({cluster->endpoint(3)});
  std::unique_ptr<Client> via_n1 = ClientFor({cluster->endpoint(0)});
  absl::StatusOr<ClusterStatusResult> learned = via_seeds_only->ClusterStatus();
  absl::StatusOr<ClusterStatusResult> configured = via_n1->ClusterStatus();
  ASSERT_TRUE(learned.ok()) << learned.status();
  ASSERT_TRUE(configured.ok()) << configured.status();
  ASSERT_EQ(learned->members.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(learned->members[i].node_id, configured->members[i].node_id);
    EXPECT_EQ(learned->members[i].address, configured->members[i].address);
  }
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_NE(WaitForLiveness(*cluster, {3}, cluster->node_id(i), "UP", absl::Seconds(20)),
              absl::InfiniteDuration())
        << cluster->LogTails();
  }
  // Same ring: every key has the same replicas, in the same order, seen from either node.
  for (int i = 0; i < 20; ++i) {
    const std::string key = absl::StrCat("placed-", i);
    absl::StatusOr<DescribeKeyResult> a = via_seeds_only->DescribeKey(key);
    absl::StatusOr<DescribeKeyResult> b = via_n1->DescribeKey(key);
    ASSERT_TRUE(a.ok() && b.ok()) << key;
    ASSERT_EQ(a->replicas.size(), 3u);
    ASSERT_EQ(a->replicas.size(), b->replicas.size());
    for (size_t r = 0; r < a->replicas.size(); ++r) {
      EXPECT_EQ(a->replicas[r].node_id, b->replicas[r].node_id) << key;
    }
  }
  // And it serves: a write through it is readable through another node.
  WriteOptions w;
  w.w = Quorum::Count(2);
  ASSERT_TRUE(via_seeds_only->Put("from-seeds-only", "hello", w).ok());
  absl::StatusOr<GetResult> got = via_n1->Get("from-seeds-only");
  ASSERT_TRUE(got.ok()) << got.status();

  // A node that the seed's cluster layout does not list serves and waits to be joined (it
  // forwards requests; kvctl cluster join adds it: tests/membership_process_test.cc).
  TempDir dir;
  absl::StatusOr<Subprocess> stranger = Subprocess::Start(
      {KVNODE_PATH, "--node_id=n9", absl::StrCat("--listen=127.0.0.1:", PickFreePort()),
       "--data_dir=" + dir.Sub("n9"), "--seeds=" + cluster->endpoint(0), "--seed_timeout=5s"},
      dir.Sub("logs"));
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline && !absl::StrContains(stranger->Stderr(), "kvnode serving")) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(absl::StrContains(stranger->Stderr(), "waits to be joined")) << stranger->Stderr();
  EXPECT_TRUE(absl::StrContains(stranger->Stderr(), "kvnode serving")) << stranger->Stderr();
  stranger->Signal(SIGTERM);
  absl::StatusOr<int> code = stranger->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << stranger->Stderr();
  EXPECT_TRUE(cluster->StopAll().ok()) << cluster->LogTails();
}

// A node that waited to be joined and went away is forgotten by every member once it has been
// silent for --gossip_forget_after (5 s here): it leaves cluster status, and does not come back
// from a member's gossip; started again, it is known again.
TEST(GossipProcessTest, ANodeThatWentAwayIsForgottenByEveryNode) {
  constexpr absl::Duration kForgetAfter = absl::Seconds(5);
  std::unique_ptr<testing::Cluster> cluster =
      StartCluster(4, {}, /*joiners=*/{3},
                   {absl::StrCat("--gossip_forget_after=", absl::FormatDuration(kForgetAfter))});
  ASSERT_NE(cluster, nullptr);
  ASSERT_TRUE(cluster->Restart(3).ok()) << cluster->LogTails();  // n4 waits to be joined
  const std::vector<size_t> members = {0, 1, 2};
  ASSERT_NE(WaitForLiveness(*cluster, members, "n4", "UP", absl::Seconds(20)),
            absl::InfiniteDuration())
      << cluster->LogTails();
  // kvctl shows it apart from the members, as a node waiting to be joined.
  testing::CommandResult kvctl =
      testing::RunCommand({KVCTL_PATH, "--endpoints=" + cluster->endpoint(0), "cluster", "status"});
  EXPECT_EQ(kvctl.exit_code, 0) << kvctl.err;
  EXPECT_TRUE(absl::StrContains(kvctl.out, "known to gossip, not members")) << kvctl.out;
  EXPECT_TRUE(absl::StrContains(kvctl.out, cluster->endpoint(3))) << kvctl.out;
  EXPECT_TRUE(absl::StrContains(kvctl.out, "3 member(s)")) << kvctl.out;
  // Each says what n4 is: n1 a node outside the layout, n4 itself.
  auto n4_state_seen_by = [&](size_t node) {
    const testing::CommandResult status = testing::RunCommand(
        {KVCTL_PATH, "--endpoints=" + cluster->endpoint(node), "--json", "cluster", "status"});
    const nlohmann::json json = nlohmann::json::parse(status.out, nullptr, false);
    if (!json.is_object()) return std::string("(no JSON) ") + status.out + status.err;
    for (const nlohmann::json& other : json.value("outside_layout", nlohmann::json::array())) {
      if (other.value("node_id", "") == "n4") return other.value("state", "");
    }
    return std::string("(n4 not listed) ") + status.out;
  };
  EXPECT_EQ(n4_state_seen_by(0), "outside");
  EXPECT_EQ(n4_state_seen_by(3), "self");
  cluster->Kill(3);
  const absl::Time killed = absl::Now();
  // DOWN first, then forgotten about 5 s after its last heartbeat, by every member.
  bool seen_down = false;
  auto listed_by_any = [&] {
    bool listed = false;
    for (size_t i : members) {
      std::optional<MemberStatus> seen = MemberAsSeenBy(*cluster, i, "n4");
      if (seen && seen->liveness == "DOWN") seen_down = true;
      listed = listed || seen.has_value();
    }
    return listed;
  };
  absl::Time forgotten = absl::InfiniteFuture();
  while (absl::Now() - killed < absl::Seconds(40)) {
    if (!listed_by_any()) {
      forgotten = absl::Now();
      break;
    }
    absl::SleepFor(kPoll);
  }
  ASSERT_NE(forgotten, absl::InfiniteFuture()) << cluster->LogTails();
  std::cout << "n4 forgotten by every member " << absl::FormatDuration(forgotten - killed)
            << " after it was killed\n";
  EXPECT_TRUE(seen_down);
  // Not before forget_after since its last heartbeat (one gossip interval before the kill at
  // most, with slack).
  EXPECT_GE(forgotten - killed, kForgetAfter - absl::Milliseconds(500));
  for (size_t i : members) {
    EXPECT_TRUE(absl::StrContains(cluster->Logs(i), "forgetting a member")) << cluster->Logs(i);
  }
  kvctl = testing::RunCommand(
      {KVCTL_PATH, "--endpoints=" + cluster->endpoint(0), "--json", "cluster", "status"});
  EXPECT_EQ(kvctl.exit_code, 0) << kvctl.err;
  EXPECT_TRUE(absl::StrContains(kvctl.out, "\"outside_layout\":[]")) << kvctl.out;
  // Gossip among the members does not bring it back (each keeps the forgotten version aside).
  for (int round = 0; round < 20; ++round) {
    EXPECT_FALSE(listed_by_any()) << "round " << round;
    absl::SleepFor(absl::Milliseconds(100));
  }
  // Started again (a new incarnation), it is known again.
  ASSERT_TRUE(cluster->Restart(3).ok()) << cluster->LogTails();
  EXPECT_NE(WaitForLiveness(*cluster, members, "n4", "UP", absl::Seconds(20)),
            absl::InfiniteDuration())
      << cluster->LogTails();
  EXPECT_TRUE(cluster->StopAll().ok()) << cluster->LogTails();
}

// A step of one node's wall clock (an NTP correction, a virtual machine resumed), made with
// libfaketime (the node alone sees it; its monotonic clock is left alone). Its timers and its
// failure detector measure on the monotonic clock, so a step back neither stops its gossip (the
// others would judge it DOWN: its heartbeat stops) nor keeps it from judging a paused peer
// DOWN, and a step forward does not judge every peer DOWN at once.
TEST(GossipProcessTest, AStepOfANodesWallClockNeitherStopsItsGossipNorMisjudgesItsPeers) {
  const std::string libfaketime = testing::LibfaketimePath();
  ASSERT_FALSE(libfaketime.empty()) << "libfaketimeMT.so.1 is missing: install Debian's "
                                       "faketime package (deploy/setup-deps.sh does)";
  // Longer than the other tests' timeout: libfaketime keeps two of n1's gRPC threads polling
  // (README, Limits), which on 2 cores slows every process of the test.
  constexpr absl::Duration kTimeout = absl::Seconds(3);
  TempDir dir;
  const std::string offset = dir.Sub("offset");
  // libfaketime reads the file at every call: replaced whole, never seen half written.
  auto set_offset = [&](const std::string& value) { testing::ReplaceFile(offset, value + "\n"); };
  set_offset("+0");
  testing::Cluster::Options options;
  options.nodes = 3;
  options.extra_flags = {"--gossip_interval=100ms",
                         absl::StrCat("--failure_timeout=", absl::FormatDuration(kTimeout)),
                         "--shutdown_drain=0s"};
  options.node_env[0] = testing::FaketimeEnv(libfaketime);
  options.node_env[0]["FAKETIME_TIMESTAMP_FILE"] = offset;
  options.node_env[0]["FAKETIME_NO_CACHE"] = "1";
  absl::StatusOr<std::unique_ptr<testing::Cluster>> started = testing::Cluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  testing::Cluster& cluster = **started;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_NE(WaitForLiveness(cluster, {0, 1, 2}, cluster.node_id(i), "UP", absl::Seconds(20)),
              absl::InfiniteDuration())
        << cluster.LogTails();
  }
  std::unique_ptr<Client> via_n1 = ClientFor({cluster.endpoint(0)});
  WriteOptions all;
  all.w = Quorum::All();
  all.deadline = absl::Seconds(5);

  // Back one hour. n1's heartbeat keeps advancing as the others see it, for two failure
  // timeouts (without the monotonic clock it stopped at once).
  set_offset("-1h");
  const std::optional<MemberStatus> first = MemberAsSeenBy(cluster, 1, "n1");
  ASSERT_TRUE(first.has_value());
  const absl::Time watch_until = absl::Now() + 2 * kTimeout;
  while (absl::Now() < watch_until) {
    for (size_t observer : {1, 2}) {
      std::optional<MemberStatus> seen = MemberAsSeenBy(cluster, observer, "n1");
      ASSERT_TRUE(seen.has_value());
      ASSERT_EQ(seen->liveness, "UP") << cluster.node_id(observer) << " judged n1 "
                                      << seen->liveness << " after n1's clock went back\n"
                                      << cluster.LogTails();
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  const std::optional<MemberStatus> last = MemberAsSeenBy(cluster, 1, "n1");
  ASSERT_TRUE(last.has_value());
  // Gossip every 100 ms: about 60 rounds.
  EXPECT_GE(last->heartbeat, first->heartbeat + 10);
  // Writes through n1 reach every replica; n1's stamp of the last delivery shows the step took
  // effect there.
  absl::StatusOr<WriteResult> put = via_n1->Put("after-the-step-back", "v", all);
  ASSERT_TRUE(put.ok()) << put.status();
  const std::optional<MemberStatus> delivered = MemberAsSeenBy(cluster, 0, "n2");
  ASSERT_TRUE(delivered.has_value());
  ASSERT_GT(delivered->last_success_unix_micros, 0);
  EXPECT_LT(absl::FromUnixMicros(delivered->last_success_unix_micros),
            absl::Now() - absl::Minutes(50));
  // n1 measures the caller's deadline on the clock it measures everything on: every replica is
  // asked and answers, none is cut off as out of time.
  absl::StatusOr<DescribeKeyResult> described = via_n1->DescribeKey("after-the-step-back");
  ASSERT_TRUE(described.ok()) << described.status();
  for (const ReplicaView& view : described->replicas) {
    EXPECT_TRUE(view.reachable) << view.node_id << ": " << view.error;
  }
  EXPECT_TRUE(described->converged);

  // A peer paused while n1's clock is behind is judged DOWN by n1 within the usual bound.
  ASSERT_TRUE(cluster.Pause(2));
  EXPECT_NE(WaitForLiveness(cluster, {0}, "n3", "DOWN", kTimeout + kDetectBound),
            absl::InfiniteDuration())
      << "n1 did not judge the paused n3 DOWN with its clock an hour behind\n"
      << cluster.LogTails();
  cluster.Resume(2);
  ASSERT_NE(WaitForLiveness(cluster, {0, 1}, "n3", "UP", kTimeout + kDetectBound),
            absl::InfiniteDuration())
      << cluster.LogTails();

  // Forward two hours: n1 judges nobody DOWN (it logs every judgement).
  const size_t downs_before = CountOccurrences(cluster.Logs(0), "member is DOWN");
  set_offset("+1h");
  absl::SleepFor(2 * kTimeout);
  for (const char* peer : {"n2", "n3"}) {
    std::optional<MemberStatus> seen = MemberAsSeenBy(cluster, 0, peer);
    ASSERT_TRUE(seen.has_value());
    EXPECT_EQ(seen->liveness, "UP") << peer;
  }
  EXPECT_EQ(CountOccurrences(cluster.Logs(0), "member is DOWN"), downs_before)
      << "n1 judged a peer DOWN after its clock jumped forward\n"
      << cluster.Logs(0);
  put = via_n1->Put("after-the-step-forward", "v", all);
  EXPECT_TRUE(put.ok()) << put.status();
  EXPECT_TRUE(cluster.StopAll().ok()) << cluster.LogTails();
  EXPECT_EQ(cluster.SanitizerReports(), "");
}

// A member restarted without --peers or --seeds (a lost unit file, a typo) stays a member of its
// cluster: it starts from the layout it stored, rather than as a cluster of one that would accept
// writes with N=W=R=1 apart from its peers.
TEST(GossipProcessTest, AMemberRestartedWithoutClusterFlagsStaysInItsCluster) {
  std::unique_ptr<testing::Cluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<int> stopped = cluster->Stop(2);
  ASSERT_TRUE(stopped.ok() && *stopped == 0) << cluster->LogTails();
  TempDir logs;
  absl::StatusOr<Subprocess> bare = Subprocess::Start(
      {KVNODE_PATH, "--node_id=n3", "--listen=" + cluster->endpoint(2),
       "--data_dir=" + cluster->data_dir(2), "--gossip_interval=100ms", "--shutdown_drain=0s"},
      logs.Sub("logs"));
  ASSERT_TRUE(bare.ok()) << bare.status();
  ASSERT_TRUE(testing::WaitForServing(cluster->endpoint(2), absl::Seconds(30))) << bare->Stderr();
  EXPECT_TRUE(absl::StrContains(bare->Stderr(), "starting from the stored cluster layout"))
      << bare->Stderr();
  std::unique_ptr<Client> via_bare = ClientFor({cluster->endpoint(2)});
  absl::StatusOr<ClusterStatusResult> status = via_bare->ClusterStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->members.size(), 3u);
  // A write through it with W=all reaches the other two members.
  WriteOptions all;
  all.w = Quorum::All();
  absl::StatusOr<WriteResult> put = via_bare->Put("restarted-bare", "v", all);
  ASSERT_TRUE(put.ok()) << put.status() << "\n" << bare->Stderr();
  absl::StatusOr<GetResult> got = ClientFor({cluster->endpoint(0)})->Get("restarted-bare");
  ASSERT_TRUE(got.ok()) << got.status();
  bare->Signal(SIGTERM);
  absl::StatusOr<int> code = bare->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << bare->Stderr();
  EXPECT_TRUE(cluster->StopAll().ok()) << cluster->LogTails();
}

// A member restarted with another --peers list than the one it stored at the same layout version
// (an edited config file, a typo) starts, and its log says that every member must be given the
// same list and how to change membership instead.
TEST(GossipProcessTest, AMemberRestartedWithOtherPeersIsWarnedAbout) {
  std::unique_ptr<testing::Cluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<int> stopped = cluster->Stop(2);
  ASSERT_TRUE(stopped.ok() && *stopped == 0) << cluster->LogTails();
  TempDir logs;
  const std::string fewer_peers =
      absl::StrCat("--peers=n1=", cluster->endpoint(0), ",n3=", cluster->endpoint(2));
  absl::StatusOr<Subprocess> edited =
      Subprocess::Start({KVNODE_PATH, "--node_id=n3", "--listen=" + cluster->endpoint(2),
                         "--data_dir=" + cluster->data_dir(2), fewer_peers,
                         "--gossip_interval=100ms", "--shutdown_drain=0s"},
                        logs.Sub("logs"));
  ASSERT_TRUE(edited.ok()) << edited.status();
  ASSERT_TRUE(testing::WaitForServing(cluster->endpoint(2), absl::Seconds(30))) << edited->Stderr();
  const std::string log = edited->Stderr();
  EXPECT_TRUE(absl::StrContains(log, "the configured --peers differ from the cluster layout"))
      << log;
  EXPECT_TRUE(absl::StrContains(log, "kvctl cluster join|leave|remove")) << log;
  edited->Signal(SIGTERM);
  absl::StatusOr<int> code = edited->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << edited->Stderr();
  EXPECT_TRUE(cluster->StopAll().ok()) << cluster->LogTails();
}

// A member started with another value limit and another gossip_forget_after than the others is
// reported by every node's cluster status (and kvctl's), naming the settings.
TEST(GossipProcessTest, AMemberWithOtherSizeLimitsIsReported) {
  testing::Cluster::Options options;
  options.nodes = 3;
  options.extra_flags = {"--gossip_interval=100ms", "--shutdown_drain=0s"};
  options.node_flags[2] = {"--max_value_bytes=100", "--gossip_forget_after=0"};
  absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster = testing::Cluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::unique_ptr<Client> via_n1 = ClientFor({(*cluster)->endpoint(0)});
  std::string conflict;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    absl::StatusOr<ClusterStatusResult> status = via_n1->ClusterStatus();
    if (status.ok() && !status->settings_conflict.empty()) {
      conflict = status->settings_conflict;
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(conflict,
            "n3 runs with max_value_bytes=100,gossip_forget_after=0 (this node: "
            "max_value_bytes=1048576,gossip_forget_after=1h)");
  testing::CommandResult kvctl = testing::RunCommand(
      {KVCTL_PATH, "--endpoints=" + (*cluster)->endpoint(0), "cluster", "status"});
  EXPECT_EQ(kvctl.exit_code, 0) << kvctl.err;
  EXPECT_TRUE(absl::StrContains(kvctl.out, "WARNING: members run with other settings: n3 runs"))
      << kvctl.out;
  EXPECT_TRUE((*cluster)->StopAll().ok()) << (*cluster)->LogTails();
}

// Such a first start records neither its --cluster_name nor its --node_id in the new data
// directory (it never learned which cluster it is in), so the corrected start on the same
// directory goes ahead and records its own.
TEST(GossipProcessTest, SeedsOnlyNodeWithNoAnsweringSeedDoesNotServe) {
  TempDir dir;
  const int dead_port = PickFreePort();
  absl::StatusOr<Subprocess> node = Subprocess::Start(
      {KVNODE_PATH, "--node_id=n1", absl::StrCat("--listen=127.0.0.1:", PickFreePort()),
       "--data_dir=" + dir.Sub("n1"), absl::StrCat("--seeds=127.0.0.1:", dead_port),
       "--seed_timeout=2s", "--cluster_name=mistyped"},
      dir.Sub("logs"));
  ASSERT_TRUE(node.ok()) << node.status();
  absl::StatusOr<int> code = node->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_NE(*code, 0);
  EXPECT_TRUE(absl::StrContains(node->Stderr(), "no seed told the cluster layout"))
      << node->Stderr();
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(dir.Sub("n1")) / "CLUSTER_NAME"));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(dir.Sub("n1")) / "NODE_ID"));

  // Started again on the same directory with another name and id (as a cluster of one here).
  absl::StatusOr<Subprocess> corrected = Subprocess::Start(
      {KVNODE_PATH, "--node_id=n2", absl::StrCat("--listen=127.0.0.1:", PickFreePort()),
       "--data_dir=" + dir.Sub("n1"), "--cluster_name=right"},
      dir.Sub("logs2"));
  ASSERT_TRUE(corrected.ok()) << corrected.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline && !absl::StrContains(corrected->Stderr(), "kvnode serving") &&
         corrected->running()) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(absl::StrContains(corrected->Stderr(), "kvnode serving")) << corrected->Stderr();
  corrected->Signal(SIGTERM);
  code = corrected->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << corrected->Stderr();
  absl::StatusOr<std::string> recorded =
      ReadSmallRegularFile((std::filesystem::path(dir.Sub("n1")) / "CLUSTER_NAME").string(), 100);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(*recorded, "right\n");
  recorded = ReadSmallRegularFile((std::filesystem::path(dir.Sub("n1")) / "NODE_ID").string(), 100);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(*recorded, "n2\n");
}

// SIGTERM while a seeds-only node still waits for its seeds stops it at once, cleanly (exit 0),
// rather than after seed_timeout (a container runtime would kill it first).
TEST(GossipProcessTest, SeedsOnlyNodeWaitingForASeedStopsOnSigterm) {
  TempDir dir;
  const int dead_port = PickFreePort();
  absl::StatusOr<Subprocess> node = Subprocess::Start(
      {KVNODE_PATH, "--node_id=n1", absl::StrCat("--listen=127.0.0.1:", PickFreePort()),
       "--data_dir=" + dir.Sub("n1"), absl::StrCat("--seeds=127.0.0.1:", dead_port),
       "--seed_timeout=120s"},
      dir.Sub("logs"));
  ASSERT_TRUE(node.ok()) << node.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline && !absl::StrContains(node->Stderr(), "asking the seeds")) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(absl::StrContains(node->Stderr(), "asking the seeds")) << node->Stderr();
  absl::SleepFor(absl::Milliseconds(500));
  node->Signal(SIGTERM);
  absl::StatusOr<int> code = node->Wait(absl::Seconds(15));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << node->Stderr();
  EXPECT_EQ(*code, 0) << node->Stderr();
  EXPECT_TRUE(absl::StrContains(node->Stderr(), "stopped before serving")) << node->Stderr();
}

}  // namespace
}  // namespace kv

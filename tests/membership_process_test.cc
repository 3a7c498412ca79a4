// Issue 4 item 4: join and leave while serving, through the real kvctl against real kvnode
// processes on loopback (N=3, W=2, periodic anti-entropy off so that only the handoff can move
// data to new owners):
//   - 3 nodes hold preloaded keys; a 4th starts with --seeds and waits to be joined (it serves
//     as a forwarding coordinator); `kvctl cluster join n4` shows the plan (1/4 of the replica
//     data moves, each node ends up first replica of ~1/4 of the keys) and changes nothing;
//     `--commit` prints an operation id that `kvctl operation get` follows to SUCCEEDED (the same
//     commit again with its --token, after the change, answers that operation), while a
//     writer keeps writing new keys; afterwards every acknowledged key is readable through every
//     node and present on each of its (new) replicas, and the handoff sent about one full record
//     per gained key (one source per key; the other old owners compare digests);
//     then each old node removes the records of keys it no longer owns (checked with the
//     Replica service's local read on a sample of keys whose replicas exclude it);
//   - then n2 leaves the same way under load; afterwards no key has n2 among its replicas and
//     every acknowledged key is readable and on all of its replicas, and n1 dropped the
//     replication entries it still had for n2.
// Every wait and every load loop is bounded; every node is stopped with SIGTERM at the end.
#include <grpcpp/grpcpp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "gtest/gtest.h"
#include "replica.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::kv::testing::CommandResult;
using ::kv::testing::RunCommand;

constexpr int kPreloaded = 1500;
constexpr int kMaxLoadWrites = 3000;
constexpr absl::Duration kChangeTimeout = absl::Seconds(120);

class MembershipProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::Cluster::Options options;
    options.nodes = 4;
    options.joiners = {3};
    options.extra_flags = {"--anti_entropy_interval=0", "--gossip_interval=100ms",
                           "--cleanup_confirm_delay=1s"};
    if (slow_handoff_) options.extra_flags.push_back("--handoff_mb_per_second=1");
    if (n1_wall_clock_behind_ || n1_wall_clock_stepped_) {
      const std::string libfaketime = testing::LibfaketimePath();
      ASSERT_FALSE(libfaketime.empty()) << "libfaketimeMT.so.1 is missing: install Debian's "
                                           "faketime package (deploy/setup-deps.sh does)";
      options.node_env[0] = testing::FaketimeEnv(libfaketime);
      if (n1_wall_clock_stepped_) {
        // The offset is read from a file at every call (StepN1WallClock replaces it).
        ASSERT_NO_FATAL_FAILURE(StepN1WallClock("+0"));
        options.node_env[0]["FAKETIME_TIMESTAMP_FILE"] = clock_offset_;
        options.node_env[0]["FAKETIME_NO_CACHE"] = "1";
      } else {
        options.node_env[0]["FAKETIME"] = "-1h";
      }
      // libfaketime keeps two of n1's gRPC threads polling (README, Limits), which on 2 cores
      // slows every process: no member is judged DOWN for that.
      options.extra_flags.push_back("--failure_timeout=20s");
    }
    if (fast_purge_) {
      for (const char* flag : {"--tombstone_min_age=1s", "--tombstone_confirm_delay=5s",
                               "--tombstone_sweep_interval=200ms"}) {
        options.extra_flags.push_back(flag);
      }
    }
    absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster =
        testing::Cluster::Start(std::move(options));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    client_ = ClientFor({cluster_->endpoint(0), cluster_->endpoint(1), cluster_->endpoint(2)});
  }

  void TearDown() override {
    StopWriter();
    client_.reset();
    if (cluster_ == nullptr) return;
    EXPECT_TRUE(cluster_->StopAll().ok()) << cluster_->LogTails();
    EXPECT_EQ(cluster_->SanitizerReports(), "");
  }

  bool slow_handoff_ = false;  // set before SetUp: 1 MB/s per source
  bool fast_purge_ = false;    // set before SetUp: tombstones purged a few seconds after a delete
  bool n1_wall_clock_behind_ = false;   // set before SetUp: n1's wall clock an hour behind
  bool n1_wall_clock_stepped_ = false;  // set before SetUp: n1's wall clock steps when told

  // Moves n1's wall clock to `offset` from the real one (libfaketime's "+7h" form). The file is
  // replaced whole, so libfaketime never reads it half written.
  void StepN1WallClock(const std::string& offset) {
    testing::ReplaceFile(clock_offset_, offset + "\n");
  }
  testing::TempDir clock_dir_;
  const std::string clock_offset_ = clock_dir_.Sub("offset");

  static std::unique_ptr<Client> ClientFor(std::vector<std::string> endpoints) {
    ClientOptions options;
    options.endpoints = std::move(endpoints);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  nlohmann::json KvctlJson(size_t node, std::vector<std::string> args, int expected_exit) {
    std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(node),
                                     "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    const CommandResult result = RunCommand(argv, "", absl::Seconds(60));
    EXPECT_EQ(result.exit_code, expected_exit) << result.out << result.err;
    nlohmann::json json = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
    return json.is_object() ? json : nlohmann::json::object();
  }

  // Polls `done` every 200 ms for up to 30 s.
  static bool Eventually(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  // Whether `kvctl cluster join n4` through node `via` succeeds within 30 s (once gossip has made
  // the waiting n4 known there).
  bool JoinPlannable(size_t via) {
    return Eventually([&] {
      const CommandResult plan = RunCommand(
          {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(via), "cluster", "join", "n4"}, "",
          absl::Seconds(30));
      return plan.exit_code == 0;
    });
  }

  // Writes new keys through `client_` until stopped (at most kMaxLoadWrites), remembering the
  // acknowledged ones.
  void StartWriter(const std::string& prefix) {
    stop_ = false;
    writer_ = std::thread([this, prefix] {
      for (int i = 0; i < kMaxLoadWrites && !stop_; ++i) {
        const std::string key = absl::StrCat(prefix, i);
        if (client_->Put(key, absl::StrCat("v-", key)).ok()) {
          absl::MutexLock lock(&mu_);
          acked_.push_back(key);
        }
      }
    });
  }
  void StopWriter() {
    stop_ = true;
    if (writer_.joinable()) writer_.join();
  }

  // Commits the change and follows its operation to the end; returns the final operation JSON.
  // `kvctl cluster status` reports the layout before (version V), during (V+1, with the owners
  // after the change, when a poll catches it) and after it (V+2, no change in progress). Then
  // `kvctl operation wait` and a retried `--commit --wait` answer at once with the outcome.
  nlohmann::json CommitAndWait(size_t via, const std::string& verb, const std::string& node) {
    const uint64_t before =
        KvctlJson(via, {"cluster", "status"}, 0).value("layout_version", uint64_t{0});
    EXPECT_GT(before, 0u);
    const std::vector<std::string> commit = {"cluster", verb, node, "--commit",
                                             absl::StrCat("--token=test-", verb, "-", node)};
    nlohmann::json committed = KvctlJson(via, commit, 0);
    const std::string id = committed.value("operation_id", "");
    EXPECT_FALSE(id.empty()) << committed.dump();
    EXPECT_FALSE(committed.value("deduplicated", true)) << committed.dump();
    nlohmann::json op;
    const absl::Time deadline = absl::Now() + kChangeTimeout;
    while (absl::Now() < deadline) {
      op = KvctlJson(via, {"operation", "get", id}, 0);
      if (op.value("state", "") != "RUNNING") break;
      nlohmann::json status = KvctlJson(via, {"cluster", "status"}, 0);
      if (status.value("layout_version", uint64_t{0}) == before + 1) {
        EXPECT_FALSE(status["layout_next_members"].empty()) << status.dump();
        // "remove n4 (down)" for a remove.
        EXPECT_TRUE(
            absl::StartsWith(status.value("layout_change", ""), absl::StrCat(verb, " ", node)))
            << status.dump();
        if (verb == "join") {  // not on the ring yet: listed outside it, as joining
          bool joining = false;
          for (const nlohmann::json& other : status["outside_layout"]) {
            joining = joining ||
                      (other.value("node_id", "") == node && other.value("state", "") == "joining");
          }
          EXPECT_TRUE(joining) << status.dump();
        }
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    EXPECT_EQ(op.value("state", ""), "SUCCEEDED") << op.dump() << cluster_->LogTails();
    // The node applies a new layout asynchronously, right after the operation installs it.
    nlohmann::json after;
    for (int i = 0; i < 50; ++i) {
      after = KvctlJson(via, {"cluster", "status"}, 0);
      if (after.value("layout_version", uint64_t{0}) == before + 2) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_EQ(after.value("layout_version", uint64_t{0}), before + 2) << after.dump();
    EXPECT_TRUE(after["layout_next_members"].empty()) << after.dump();
    // A retry of the commit (its answer lost, say) gets the same operation, also now that the
    // change is done, and changes nothing.
    nlohmann::json retried = KvctlJson(via, commit, 0);
    EXPECT_EQ(retried.value("operation_id", ""), id) << retried.dump();
    EXPECT_TRUE(retried.value("deduplicated", false)) << retried.dump();
    std::vector<std::string> commit_wait = commit;
    commit_wait.push_back("--wait");
    nlohmann::json waited = KvctlJson(via, commit_wait, 0);
    EXPECT_EQ(waited["operation"].value("state", ""), "SUCCEEDED") << waited.dump();
    EXPECT_EQ(KvctlJson(via, {"operation", "wait", id}, 0)["operation"].value("state", ""),
              "SUCCEEDED");
    EXPECT_EQ(KvctlJson(via, {"cluster", "status"}, 0).value("layout_version", uint64_t{0}),
              before + 2);
    return op;
  }

  // Whether `kvctl cluster remove NODE` through n1 succeeds within 30 s (once n1's failure
  // detector has the node down).
  bool RemovePlannable(const std::string& node) {
    return Eventually([&] {
      return RunCommand(
                 {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "cluster", "remove", node},
                 "", absl::Seconds(30))
                 .exit_code == 0;
    });
  }

  // Restarts n4 (it waits to be joined) and returns n1's layout version once a join of n4 can be
  // planned through n1; 0 if that never happened.
  uint64_t RestartJoinerUntilPlannable() {
    if (!cluster_->Restart(3).ok()) return 0;
    const bool plannable = Eventually([&] {
      const std::vector<std::string> plan = {
          KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "--json", "cluster", "join", "n4"};
      return RunCommand(plan, "", absl::Seconds(30)).exit_code == 0;
    });
    if (!plannable) return 0;
    return KvctlJson(0, {"cluster", "status"}, 0).value("layout_version", uint64_t{0});
  }

  // The join of n4 as another proposer ("rival") lays it out at version before + 1, under
  // another change text than a commit through kvctl gives it: "join n4 (rival)".
  internal::v1::ClusterLayout RivalJoin(uint64_t before) {
    internal::v1::GossipResponse table;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status learned =
        ReplicaOf(0)->Gossip(&context, internal::v1::GossipRequest(), &table);
    EXPECT_TRUE(learned.ok()) << learned.error_message();
    EXPECT_EQ(table.layout().version(), before);
    internal::v1::ClusterLayout rivals = table.layout();
    rivals.set_version(before + 1);
    rivals.set_change("join n4 (rival)");
    *rivals.mutable_next() = rivals.members();
    for (const internal::v1::GossipMember& member : table.members()) {
      if (member.node_id() != "n4") continue;
      internal::v1::LayoutMember* joining = rivals.add_next();
      joining->set_node_id(member.node_id());
      joining->set_address(member.address());
      joining->set_zone(member.zone());
    }
    EXPECT_EQ(rivals.next_size(), 4);
    return rivals;
  }

  // The rival's phases 1 and 2 on `node`, ballot (1, "rival"); then the rival stops.
  void RivalAccepts(size_t node, const internal::v1::ClusterLayout& layout) {
    grpc::ClientContext context;
    SetDeadline(&context);
    internal::v1::ReserveLayoutRequest request;
    request.set_proposer_id("rival");
    request.set_round(1);
    request.set_version(layout.version());
    request.set_change(layout.change());
    internal::v1::ReserveLayoutResponse response;
    const grpc::Status answered = ReplicaOf(node)->ReserveLayout(&context, request, &response);
    ASSERT_TRUE(answered.ok()) << answered.error_message();
    ASSERT_EQ(response.code(), 0) << response.message();

    grpc::ClientContext accept_context;
    SetDeadline(&accept_context);
    internal::v1::AcceptLayoutRequest accept;
    accept.set_proposer_id("rival");
    accept.set_round(1);
    *accept.mutable_layout() = layout;
    internal::v1::AcceptLayoutResponse accepted;
    const grpc::Status status = ReplicaOf(node)->AcceptLayout(&accept_context, accept, &accepted);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  // Restarts the joiner n4 until its join can be planned, then has the rival promise and accept
  // its join on n2 and n3 (a majority), and stop. Returns the layout version before (0 on
  // failure).
  uint64_t RivalJoinAcceptedByN2AndN3() {
    const uint64_t before = RestartJoinerUntilPlannable();
    if (before == 0) return 0;
    const internal::v1::ClusterLayout rivals = RivalJoin(before);
    for (const size_t node : {1, 2}) {
      if (!HasFailure()) RivalAccepts(node, rivals);
    }
    return HasFailure() ? 0 : before;
  }

  // Waits until all four nodes completed the join of n4 (layout before + 2, four members) and
  // checks that some poll saw the rival's transition (its change text) on the way.
  void ExpectRivalJoinCompleted(uint64_t before) {
    const absl::Time deadline = absl::Now() + kChangeTimeout;
    std::string layouts;
    bool completed = false;
    bool saw_rivals = false;
    while (!completed && absl::Now() < deadline) {
      completed = true;
      layouts.clear();
      for (size_t node = 0; node < 4; ++node) {
        const nlohmann::json status = KvctlJson(node, {"cluster", "status"}, 0);
        const uint64_t version = status.value("layout_version", uint64_t{0});
        saw_rivals = saw_rivals || status.value("layout_change", "") == "join n4 (rival)";
        completed = completed && version == before + 2 && status["layout_next_members"].empty() &&
                    status["members"].size() == 4;
        absl::StrAppend(&layouts, cluster_->node_id(node), ": ", version, " ",
                        status.value("layout_change", ""), "\n");
      }
      if (!completed) absl::SleepFor(absl::Milliseconds(200));
    }
    EXPECT_TRUE(completed) << layouts << cluster_->LogTails();
    EXPECT_TRUE(saw_rivals) << "no node reported the rival's change";
  }

  // Every key is readable through each endpoint, and (eventually, bounded) every replica the
  // cluster now places it on holds it. Returns how many keys `member` is a replica of.
  int CheckKeys(const std::vector<std::string>& keys, const std::vector<size_t>& via,
                const std::string& member, const std::string& absent) {
    for (size_t node : via) {
      std::unique_ptr<Client> client = ClientFor({cluster_->endpoint(node)});
      int missing = 0;
      for (const std::string& key : keys) {
        if (!client->Get(key).ok()) ++missing;
      }
      EXPECT_EQ(missing, 0) << "keys not readable through " << cluster_->node_id(node);
    }
    int on_member = 0;
    int incomplete = 0;
    for (const std::string& key : keys) {
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (true) {
        absl::StatusOr<DescribeKeyResult> d = client_->DescribeKey(key);
        bool complete = d.ok() && d->replicas.size() == 3;
        bool has_member = false;
        for (const ReplicaView& r : d.ok() ? d->replicas : std::vector<ReplicaView>()) {
          complete = complete && r.reachable && r.has_record;
          has_member = has_member || r.node_id == member;
          EXPECT_NE(r.node_id, absent) << key;
        }
        if (complete || absl::Now() >= deadline) {
          if (!complete) ++incomplete;
          if (has_member) ++on_member;
          break;
        }
        absl::SleepFor(absl::Milliseconds(100));
      }
    }
    EXPECT_EQ(incomplete, 0) << "keys missing on some of their replicas";
    return on_member;
  }

  // The Replica service of `node`, as a peer would call it.
  std::unique_ptr<internal::v1::Replica::Stub> ReplicaOf(size_t node) {
    return internal::v1::Replica::NewStub(
        grpc::CreateChannel(cluster_->endpoint(node), grpc::InsecureChannelCredentials()));
  }
  static void SetDeadline(grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }

  // Asks `node` to purge `key` if its record is `expected` (the reaper's request).
  // `layout_version`: the layout the purge was confirmed on (0: not stated).
  grpc::Status PurgeRecord(size_t node, const std::string& key, const std::string& expected,
                           uint64_t layout_version = 0) {
    grpc::ClientContext context;
    SetDeadline(&context);
    internal::v1::PurgeRecordRequest request;
    request.set_requester_id("test");
    request.set_key(key);
    request.set_expected_record(expected);
    request.set_layout_version(layout_version);
    internal::v1::PurgeRecordResponse response;
    return ReplicaOf(node)->PurgeRecord(&context, request, &response);
  }

  // `node`'s own record of `key` (the Replica service's local read); found() is false if none.
  internal::v1::ReadRecordResponse LocalRecord(size_t node, const std::string& key) {
    return LocalRecord(*ReplicaOf(node), key);
  }
  // The same through `replica`, a stub kept for many reads.
  static internal::v1::ReadRecordResponse LocalRecord(internal::v1::Replica::Stub& replica,
                                                      const std::string& key) {
    grpc::ClientContext context;
    SetDeadline(&context);
    internal::v1::ReadRecordRequest request;
    request.set_key(key);
    internal::v1::ReadRecordResponse response;
    const grpc::Status status = replica.ReadRecord(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
  bool HoldsLocally(size_t node, const std::string& key) { return LocalRecord(node, key).found(); }

  // For each of `nodes`, up to `per_node` of `keys` whose replicas (per DescribeKey) exclude it
  // and as many that include it.
  std::map<size_t, std::pair<std::vector<std::string>, std::vector<std::string>>> SampleOwnership(
      const std::vector<std::string>& keys, const std::vector<size_t>& nodes, size_t per_node) {
    std::map<size_t, std::pair<std::vector<std::string>, std::vector<std::string>>> sample;
    for (const std::string& key : keys) {
      absl::StatusOr<DescribeKeyResult> d = client_->DescribeKey(key);
      if (!d.ok()) continue;
      for (size_t node : nodes) {
        bool replica = false;
        for (const ReplicaView& r : d->replicas)
          replica = replica || r.node_id == cluster_->node_id(node);
        std::vector<std::string>& into = replica ? sample[node].second : sample[node].first;
        if (into.size() < per_node) into.push_back(key);
      }
      bool full = true;
      for (size_t node : nodes) {
        full =
            full && sample[node].first.size() == per_node && sample[node].second.size() == per_node;
      }
      if (full) break;
    }
    return sample;
  }

  std::vector<std::string> Acked() {
    absl::MutexLock lock(&mu_);
    return acked_;
  }

  std::unique_ptr<testing::Cluster> cluster_;
  std::unique_ptr<Client> client_;
  std::thread writer_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::vector<std::string> acked_ ABSL_GUARDED_BY(mu_);
};

TEST_F(MembershipProcessTest, FourthNodeJoinsThenOneLeavesUnderLoad) {
  const std::string value(1000, 'x');
  std::vector<std::string> keys;
  for (int i = 0; i < kPreloaded; ++i) {
    const std::string key = absl::StrCat("pre/", i);
    ASSERT_TRUE(client_->Put(key, value).ok()) << key;
    keys.push_back(key);
  }
  // n4 starts with --seeds and waits to be joined; gossip makes it known to n1.
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();
  nlohmann::json plan;
  const absl::Time known_by = absl::Now() + absl::Seconds(20);
  while (absl::Now() < known_by) {
    std::vector<std::string> argv = {
        KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "--json", "cluster", "join", "n4"};
    const CommandResult result = RunCommand(argv, "", absl::Seconds(30));
    if (result.exit_code == 0) {
      plan = nlohmann::json::parse(result.out, nullptr, false);
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(plan.is_object() && plan.contains("moved_fraction")) << plan.dump();
  EXPECT_NEAR(plan["moved_fraction"].get<double>(), 0.25, 0.06) << plan.dump();
  for (const nlohmann::json& share : plan["shares"]) {
    EXPECT_NEAR(share["primary_after"].get<double>(), 0.25, 0.07) << plan.dump();
  }
  // The plan alone changes nothing: a second plan starts from the same layout version.
  EXPECT_EQ(KvctlJson(0, {"cluster", "join", "n4"}, 0).value("layout_version", 0),
            plan.value("layout_version", 0));

  StartWriter("join/");
  const nlohmann::json joined = CommitAndWait(0, "join", "n4");
  StopWriter();
  std::cout << "join operation: " << joined.dump() << "\n";
  std::vector<std::string> all = keys;
  const std::vector<std::string> load = Acked();
  all.insert(all.end(), load.begin(), load.end());
  EXPECT_GT(load.size(), 0u);
  const int on_n4 = CheckKeys(all, {0, 1, 2, 3}, "n4", "");
  // n4 replicates ~3/4 of the keys (N=3 of 4 members).
  EXPECT_NEAR(static_cast<double>(on_n4) / static_cast<double>(all.size()), 0.75, 0.1);
  // One source per key: the handoff sent about one full record per key n4 gained (every old
  // owner sending it would be ~3 per key); the other old owners sent digests.
  const nlohmann::json& counters = joined["counters"];
  EXPECT_LE(counters.value("keys_total", uint64_t{0}), static_cast<uint64_t>(on_n4) * 5 / 4)
      << joined.dump();
  EXPECT_GT(counters.value("digests_total", uint64_t{0}), 0u) << joined.dump();

  // The old nodes remove, in the background, the records of keys they no longer own (~1/4 each)
  // and keep the others. Preloaded keys only: nothing writes them during or after the change.
  const auto sample = SampleOwnership(keys, {0, 1, 2}, 20);
  for (const auto& [node, lost_and_kept] : sample) {
    const auto& [lost, kept] = lost_and_kept;
    EXPECT_EQ(lost.size(), 20u) << cluster_->node_id(node);
    std::string still_held;
    EXPECT_TRUE(Eventually([&] {
      still_held.clear();
      for (const std::string& key : lost) {
        if (HoldsLocally(node, key)) absl::StrAppend(&still_held, key, " ");
      }
      return still_held.empty();
    })) << cluster_->node_id(node)
        << " still holds keys it no longer owns: " << still_held << cluster_->LogTails();
    for (const std::string& key : kept) {
      EXPECT_TRUE(HoldsLocally(node, key)) << cluster_->node_id(node) << " lost " << key;
    }
  }
  EXPECT_TRUE(
      absl::StrContains(cluster_->Logs(0), "pass removing records this node no longer owns ended"))
      << cluster_->LogTails();

  // Anti-entropy follows the new ring without a restart: a forced repair from n4 exchanges with
  // every other member (refused while a tree is being rebuilt, so retried for a while).
  std::string last_repair;
  EXPECT_TRUE(Eventually([&] {
    std::vector<std::string> ids;
    const nlohmann::json status = KvctlJson(3, {"cluster", "anti-entropy"}, 0);
    for (const nlohmann::json& peer : status["peers"]) {
      ids.push_back(peer.value("peer_id", ""));
    }
    last_repair = absl::StrJoin(ids, ",");
    if (ids != std::vector<std::string>{"n1", "n2", "n3"}) return false;
    const std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(3),
                                           "repair", "--wait", "--wait-timeout=20s"};
    const CommandResult repair = RunCommand(argv, "", absl::Seconds(30));
    last_repair = repair.out + repair.err;
    return repair.exit_code == 0;
  })) << last_repair
      << cluster_->LogTails();

  {
    absl::MutexLock lock(&mu_);
    acked_.clear();
  }
  StartWriter("leave/");
  const nlohmann::json left = CommitAndWait(0, "leave", "n2");
  StopWriter();
  std::cout << "leave operation: " << left.dump() << "\n";
  const std::vector<std::string> load2 = Acked();
  all.insert(all.end(), load2.begin(), load2.end());
  const int on_n4_after = CheckKeys(all, {0, 2, 3}, "n4", "n2");
  EXPECT_EQ(on_n4_after, static_cast<int>(all.size()));  // 3 members, N=3: every key

  // n1's exchanges forget the member that left.
  EXPECT_TRUE(Eventually([&] {
    std::vector<std::string> ids;
    const nlohmann::json status = KvctlJson(0, {"cluster", "anti-entropy"}, 0);
    for (const nlohmann::json& peer : status["peers"]) {
      ids.push_back(peer.value("peer_id", ""));
    }
    return ids == std::vector<std::string>{"n3", "n4"};
  })) << cluster_->LogTails();

  // n1 stopped replicating to the member that left and dropped what it still had queued for it.
  EXPECT_TRUE(Eventually([&] {
    return absl::StrContains(cluster_->Logs(0), "dropped the entries of a member that left");
  })) << cluster_->LogTails();
  const nlohmann::json status_after_leave = KvctlJson(0, {"cluster", "status"}, 0);
  for (const nlohmann::json& member : status_after_leave["members"]) {
    if (member.value("node_id", "") == "n2") {
      EXPECT_EQ(member.value("outbox_depth", uint64_t{0}), 0u) << member.dump();
    }
  }

  // The node that left stops by itself (exit_after_leave), cleanly.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (cluster_->running(1) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(cluster_->running(1)) << "n2 is still running after it left";
  absl::StatusOr<int> code = cluster_->Stop(1);  // reaps it; marks the exit as expected
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << cluster_->LogTails();
  EXPECT_TRUE(absl::StrContains(cluster_->Logs(1), "has left the cluster")) << cluster_->LogTails();

  // Started again on its old data directory, n2 may not join again: its versions of keys deleted
  // and purged since it left would come back (C8). It must start on an empty directory.
  ASSERT_TRUE(cluster_->Restart(1).ok()) << cluster_->LogTails();
  std::string refused;
  EXPECT_TRUE(Eventually([&] {
    const std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0),
                                           "cluster", "join", "n2"};
    const CommandResult result = RunCommand(argv, "", absl::Seconds(30));
    refused = result.out + result.err;
    return result.exit_code != 0 && absl::StrContains(refused, "holds records from before");
  })) << refused
      << cluster_->LogTails();
  EXPECT_FALSE(absl::StrContains(KvctlJson(0, {"cluster", "status"}, 0).dump(), "join n2"));
}

// A member that is down for good (killed here, its disk taken as lost) is removed with `kvctl
// cluster remove`: the other owners of its keys hand them off in its place (streaming those it was
// the designated source of), nobody waits for its handoff, and every key ends up on each of its
// new owners. While the member answers, the remove is refused.
TEST_F(MembershipProcessTest, AMemberDownForGoodIsRemovedAndTheOthersHandOffItsKeys) {
  // n4 joins first, so that the remove gives keys new owners (N=3 of 4 members).
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();
  ASSERT_TRUE(JoinPlannable(0)) << cluster_->LogTails();
  CommitAndWait(0, "join", "n4");
  ASSERT_FALSE(HasFailure());
  // Every replica holds every key when it is acknowledged (W=all), n4 included.
  std::vector<std::string> keys;
  WriteOptions all;
  all.w = Quorum::All();
  for (int i = 0; i < kPreloaded / 3; ++i) {
    keys.push_back(absl::StrCat("down/", i));
    ASSERT_TRUE(client_->Put(keys.back(), "v-" + keys.back(), all).ok()) << keys.back();
  }

  const CommandResult refused = RunCommand(
      {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "cluster", "remove", "n4", "--commit"},
      "", absl::Seconds(30));
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_TRUE(absl::StrContains(refused.err, "node n4 is UP here")) << refused.err;
  const CommandResult self =
      RunCommand({KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "cluster", "remove", "n1"},
                 "", absl::Seconds(30));
  EXPECT_TRUE(absl::StrContains(self.err, "node n1 is this node")) << self.err;

  cluster_->Kill(3);
  // Plannable once n1's failure detector has n4 down.
  ASSERT_TRUE(RemovePlannable("n4")) << cluster_->LogTails();
  const nlohmann::json op = CommitAndWait(0, "remove", "n4");
  EXPECT_EQ(op.value("kind", ""), "remove") << op.dump();
  // Sources n1..n3: n4 hands off nothing.
  EXPECT_EQ(op["progress"].value("total", uint64_t{0}), 3u) << op.dump();

  // Every key is on each of the three remaining members, checked on each member's own copy
  // before any read could repair one. (Anti-entropy is off in these tests.)
  std::vector<std::unique_ptr<internal::v1::Replica::Stub>> replicas;
  for (size_t node = 0; node < 3; ++node) replicas.push_back(ReplicaOf(node));
  int missing = 0;
  for (const std::string& key : keys) {
    for (size_t node = 0; node < 3; ++node) {
      if (!LocalRecord(*replicas[node], key).found()) ++missing;
    }
  }
  EXPECT_EQ(missing, 0) << "copies missing on the remaining members, of " << keys.size() * 3;
  EXPECT_GT(op["counters"].value("keys_total", uint64_t{0}), 0u) << op.dump();
  EXPECT_FALSE(op["counters"].contains("keys_from_n4")) << op.dump();

  // Were n4 to come back after all, it learns it is no longer a member and stops, cleanly.
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (cluster_->running(3) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(cluster_->running(3)) << "n4 is still running after it was removed";
  absl::StatusOr<int> code = cluster_->Stop(3);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << cluster_->LogTails();
  EXPECT_TRUE(absl::StrContains(cluster_->Logs(3), "has left the cluster")) << cluster_->LogTails();
}

// A member that dies during a change would hold it up for good (it never finishes its handoff).
// Removing it replaces the running transition by one without it, and that one completes.
TEST_F(MembershipProcessTest, AMemberThatDiesDuringAJoinIsRemovedAndTheJoinCompletesWithoutIt) {
  std::vector<std::string> keys;
  WriteOptions all;
  all.w = Quorum::All();
  for (int i = 0; i < kPreloaded / 3; ++i) {
    keys.push_back(absl::StrCat("died/", i));
    ASSERT_TRUE(client_->Put(keys.back(), "v-" + keys.back(), all).ok()) << keys.back();
  }
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();
  ASSERT_TRUE(JoinPlannable(0)) << cluster_->LogTails();
  const uint64_t before =
      KvctlJson(0, {"cluster", "status"}, 0).value("layout_version", uint64_t{0});

  // n3 dies for good; the join (a majority of n1..n3 commits it) then waits for its handoff.
  cluster_->Kill(2);
  const std::string join_id =
      KvctlJson(0, {"cluster", "join", "n4", "--commit"}, 0).value("operation_id", "");
  ASSERT_FALSE(join_id.empty());
  ASSERT_TRUE(Eventually([&] {
    const nlohmann::json op = KvctlJson(0, {"operation", "get", join_id}, 0);
    return absl::StrContains(op["progress"].value("message", ""), "n3 (phase 1)");
  })) << KvctlJson(0, {"operation", "get", join_id}, 0).dump();
  EXPECT_EQ(KvctlJson(0, {"operation", "get", join_id}, 0).value("state", ""), "RUNNING");
  // A membership change cannot be cancelled; the refusal says what to do instead.
  const nlohmann::json refused = KvctlJson(0, {"operation", "cancel", join_id}, 3);
  EXPECT_EQ(refused["error"].value("code", ""), "FAILED_PRECONDITION") << refused.dump();
  EXPECT_TRUE(absl::StrContains(refused["error"].value("message", ""), "kvctl cluster remove"))
      << refused.dump();

  // Plannable once n1's failure detector has n3 down; the plan is the join without n3.
  ASSERT_TRUE(RemovePlannable("n3")) << cluster_->LogTails();
  const nlohmann::json plan = KvctlJson(0, {"cluster", "remove", "n3"}, 0);
  EXPECT_EQ(plan.value("layout_version", uint64_t{0}), before + 1) << plan.dump();
  EXPECT_EQ(plan["members_after"], nlohmann::json({"n1", "n2", "n4"})) << plan.dump();
  // --wait follows the remove's operation to its end (exit 0: SUCCEEDED; within KvctlJson's
  // 60 s).
  const nlohmann::json removed =
      KvctlJson(0, {"cluster", "remove", "n3", "--commit", "--wait", "--wait-timeout=50s"}, 0);
  const std::string remove_id = removed.value("operation_id", "");
  ASSERT_FALSE(remove_id.empty()) << removed.dump() << cluster_->LogTails();
  const nlohmann::json op = removed.value("operation", nlohmann::json::object());
  EXPECT_EQ(op.value("state", ""), "SUCCEEDED") << removed.dump() << cluster_->LogTails();
  EXPECT_EQ(op.value("kind", ""), "remove") << op.dump();
  // It took the version of the join's completion (the transition may have completed by now).
  EXPECT_EQ(op.value("description", ""),
            absl::StrCat("join n4; remove n3 (down) (layout version ", before + 2, ")"))
      << op.dump();
  EXPECT_EQ(op["progress"].value("total", uint64_t{0}), 2u) << op.dump();  // n1 and n2
  const nlohmann::json join_op = KvctlJson(0, {"operation", "get", join_id}, 0);
  EXPECT_EQ(join_op.value("state", ""), "FAILED") << join_op.dump();
  EXPECT_TRUE(absl::StrContains(join_op.dump(), "replaced the transition")) << join_op.dump();
  // operation wait on it: FAILED is exit 3, with the error.
  const nlohmann::json join_waited = KvctlJson(0, {"operation", "wait", join_id}, 3);
  EXPECT_TRUE(absl::StrContains(join_waited["error"].value("message", ""), "join " + join_id))
      << join_waited.dump();

  // Join (before + 1), remove during it (+ 2, the join's completion's version), completed (+ 3):
  // n1, n2 and n4.
  nlohmann::json after;
  ASSERT_TRUE(Eventually([&] {
    after = KvctlJson(0, {"cluster", "status"}, 0);
    return after.value("layout_version", uint64_t{0}) == before + 3;
  })) << after.dump();
  EXPECT_TRUE(after["layout_next_members"].empty()) << after.dump();

  // With N=3 of three members, every key is on each of them: checked on each member's own copy
  // before any read could repair one (anti-entropy is off in these tests).
  int missing = 0;
  for (size_t node : {size_t{0}, size_t{1}, size_t{3}}) {
    std::unique_ptr<internal::v1::Replica::Stub> replica = ReplicaOf(node);
    for (const std::string& key : keys) {
      if (!LocalRecord(*replica, key).found()) ++missing;
    }
  }
  EXPECT_EQ(missing, 0) << "copies missing on n1, n2, n4, of " << keys.size() * 3;
}

// Another process may take a joiner's port before the joiner first starts (tests run in
// parallel); the cluster helper then starts it on another port, rather than talk to the other
// process as if it were the joiner.
TEST_F(MembershipProcessTest, JoinerWhosePortWasTakenStartsOnAnother) {
  const std::string taken = cluster_->endpoint(3);
  const int port = std::stoi(taken.substr(taken.rfind(':') + 1));
  const int fd = testing::BindLoopback(port);
  ASSERT_EQ(listen(fd, 1), 0);
  const absl::Status restarted = cluster_->Restart(3);
  close(fd);
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_NE(cluster_->endpoint(3), taken);
  EXPECT_TRUE(testing::ListensOn(cluster_->pid(3), std::stoi(cluster_->endpoint(3).substr(
                                                       cluster_->endpoint(3).rfind(':') + 1))));
}

// A node that joined through a seed restarts while that seed is down: it starts from its stored
// layout (before, it waited for the seed and gave up), serves, and hears from the other members.
TEST_F(MembershipProcessTest, AJoinedNodeRestartsWhileItsSeedIsDown) {
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();  // waits to be joined
  ASSERT_TRUE(JoinPlannable(1)) << cluster_->LogTails();           // gossip made n4 known to n2
  CommitAndWait(1, "join", "n4");
  cluster_->Kill(0);  // n1, the seed of n4
  cluster_->Kill(3);
  const absl::Status restarted = cluster_->Restart(3);
  ASSERT_TRUE(restarted.ok()) << restarted << cluster_->LogTails();
  EXPECT_TRUE(absl::StrContains(cluster_->Logs(3), "seeds are not waited for"))
      << cluster_->LogTails();
  ASSERT_TRUE(Eventually([&] {
    const nlohmann::json status = KvctlJson(3, {"cluster", "status"}, 0);
    bool n2_up = false;
    for (const nlohmann::json& m : status["members"]) {
      n2_up = n2_up || (m.value("node_id", "") == "n2" && m.value("liveness", "") == "UP");
    }
    return n2_up;
  })) << KvctlJson(3, {"cluster", "status"}, 0).dump();
  ASSERT_TRUE(cluster_->Restart(0).ok()) << cluster_->LogTails();
}

// A change coordinated by a node whose wall clock is an hour behind (libfaketime, from its start;
// its monotonic clock is left alone): its wait for the members' promises is on the monotonic
// clock, so it hears them. A wait that ended at a wall-clock deadline (abseil's timed waits) ended
// at once there, before any answer, and the change could not be committed.
class MembershipWallClockTest : public MembershipProcessTest {
 protected:
  void SetUp() override {
    n1_wall_clock_behind_ = true;
    MembershipProcessTest::SetUp();
  }
};

TEST_F(MembershipWallClockTest, ANodeWhoseWallClockIsBehindCommitsAJoin) {
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();  // waits to be joined
  ASSERT_TRUE(JoinPlannable(0)) << cluster_->LogTails();
  CommitAndWait(0, "join", "n4");
}

// A step of the wall clock of the node running a change, during its handoff (libfaketime, seven
// hours forward: past the change's 6 h timeout): the change's deadline is on the monotonic clock,
// so the operation never reports itself overdue, and completes.
class MembershipWallClockStepTest : public MembershipProcessTest {
 protected:
  void SetUp() override {
    n1_wall_clock_stepped_ = true;
    slow_handoff_ = true;
    MembershipProcessTest::SetUp();
  }
};

TEST_F(MembershipWallClockStepTest, AStepForwardDuringAJoinNeitherMakesItOverdueNorStopsIt) {
  // About 9 MB per source: at 1 MB/s, a handoff of several seconds, most of it after the step
  // (abseil's clock, which the operation registry reads, can take a second or two to follow it).
  const std::string value(8000, 'x');
  for (int i = 0; i < 3 * kPreloaded; ++i) {
    ASSERT_TRUE(client_->Put(absl::StrCat("pre/", i), value).ok()) << i;
  }
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();  // waits to be joined
  ASSERT_TRUE(JoinPlannable(0)) << cluster_->LogTails();
  const nlohmann::json committed =
      KvctlJson(0, {"cluster", "join", "n4", "--commit", "--token=test-step-join"}, 0);
  const std::string id = committed.value("operation_id", "");
  ASSERT_FALSE(id.empty()) << committed.dump();
  ASSERT_NO_FATAL_FAILURE(StepN1WallClock("+7h"));  // the transition is installed: it runs
  const absl::Time stepped = absl::Now();
  nlohmann::json op;
  uint64_t bytes_at_first_read = 0;  // handed off, as the first read after the step shows
  uint64_t bytes_later = 0;          // as a read at least 2 s after the step shows, still RUNNING
  bool first_read = true;
  const absl::Time deadline = absl::Now() + kChangeTimeout;
  while (absl::Now() < deadline) {
    op = KvctlJson(0, {"operation", "get", id}, 0);
    const nlohmann::json progress = op.value("progress", nlohmann::json::object());
    EXPECT_FALSE(absl::StrContains(progress.value("message", ""), "overdue")) << op.dump();
    if (op.value("state", "") != "RUNNING") break;
    const uint64_t bytes =
        op.value("counters", nlohmann::json::object()).value("bytes_total", uint64_t{0});
    if (first_read) bytes_at_first_read = bytes;
    first_read = false;
    if (absl::Now() - stepped >= absl::Seconds(2)) bytes_later = bytes;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(op.value("state", ""), "SUCCEEDED") << op.dump() << cluster_->LogTails();
  // The handoff went on for seconds after the step (else this test proves little: preload more).
  EXPECT_GT(bytes_later, bytes_at_first_read) << op.dump();
  // n1's clock did step: the operation ended seven hours after it started, on its clock.
  EXPECT_GE(op.value("end_unix_micros", int64_t{0}) - op.value("start_unix_micros", int64_t{0}),
            absl::ToInt64Microseconds(absl::Hours(7)))
      << op.dump();
  ASSERT_TRUE(Eventually([&] {
    const nlohmann::json status = KvctlJson(0, {"cluster", "status"}, 0);
    return status.value("layout_version", uint64_t{0}) >= 3 &&
           status["layout_next_members"].empty();
  })) << cluster_->LogTails();
}

// Tombstone purging pauses during a join and resumes on the new ring once it completes (it used
// to stop until a restart): keys deleted after the join are purged from all their owners, the
// joiner among them, and stay deleted.
class MembershipPurgeTest : public MembershipProcessTest {
 protected:
  void SetUp() override {
    fast_purge_ = true;
    MembershipProcessTest::SetUp();
  }
};

TEST_F(MembershipPurgeTest, PurgingResumesOnTheNewRingAfterAJoin) {
  constexpr int kKeys = 40;
  auto key_of = [](int i) { return absl::StrCat("gone/", i); };
  for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(client_->Put(key_of(i), "v").ok()) << key_of(i);
  ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();  // waits to be joined
  ASSERT_TRUE(JoinPlannable(0)) << cluster_->LogTails();
  CommitAndWait(0, "join", "n4");
  ASSERT_TRUE(Eventually([&] {
    for (size_t node = 0; node < 4; ++node) {
      if (!absl::StrContains(cluster_->Logs(node), "tombstone purging resumed on the new ring")) {
        return false;
      }
    }
    return true;
  })) << cluster_->LogTails();

  std::unique_ptr<Client> all = ClientFor(
      {cluster_->endpoint(0), cluster_->endpoint(1), cluster_->endpoint(2), cluster_->endpoint(3)});
  ASSERT_NE(all, nullptr);
  bool joiner_owns_one = false;
  for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(all->Delete(key_of(i)).ok()) << key_of(i);
  // Purged: no owner keeps a record of any key (before the purge each holds a tombstone).
  std::string left;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  bool purged = false;
  while (!purged && absl::Now() < deadline) {
    purged = true;
    for (int i = 0; i < kKeys && purged; ++i) {
      absl::StatusOr<DescribeKeyResult> described = all->DescribeKey(key_of(i));
      if (!described.ok()) {
        left = absl::StrCat(key_of(i), ": ", described.status().ToString());
        purged = false;
        break;
      }
      for (const ReplicaView& replica : described->replicas) {
        joiner_owns_one = joiner_owns_one || replica.node_id == "n4";
        if (!replica.reachable || replica.has_record) {
          left = absl::StrCat(key_of(i), " on ", replica.node_id,
                              replica.reachable ? " still has a record" : " unreachable");
          purged = false;
        }
      }
    }
    if (!purged) absl::SleepFor(absl::Milliseconds(300));
  }
  EXPECT_TRUE(purged) << left << "\n" << cluster_->LogTails();
  EXPECT_TRUE(joiner_owns_one) << "no deleted key has the joined node among its owners";
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_TRUE(absl::IsNotFound(all->Get(key_of(i)).status())) << key_of(i);
  }
}

// Two commits at once on two nodes must not both install a layout version (gossip keeps the first
// layout of a version a node sees, so the cluster would split for good). Another proposer holds
// the next version on two of the three members, and got its layout accepted there (a majority),
// then stopped before installing it. A commit through n1 is refused while the rival's lease
// runs, says who holds the version, and changes nothing. After that, even with one of those two
// members down and the other restarted, a commit must not install its own layout of that version
// (the rival's may already be on some node): it installs the rival's and says so, and the
// cluster completes that change.
TEST_F(MembershipProcessTest, ACommitWaitsForAnotherProposerThenInstallsItsAcceptedLayout) {
  const uint64_t before = RivalJoinAcceptedByN2AndN3();
  ASSERT_GT(before, 0u) << cluster_->LogTails();
  const std::vector<std::string> commit = {
      KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "cluster", "join", "n4", "--commit"};
  const CommandResult refused = RunCommand(commit, "", absl::Seconds(30));
  EXPECT_NE(refused.exit_code, 0) << refused.out;
  EXPECT_TRUE(absl::StrContains(refused.err, "reserved by 1 of 3 members")) << refused.err;
  EXPECT_TRUE(absl::StrContains(refused.err, "reserved by rival for \"join n4 (rival)\""))
      << refused.err;
  for (size_t node = 0; node < 3; ++node) {
    EXPECT_EQ(KvctlJson(node, {"cluster", "status"}, 0).value("layout_version", uint64_t{0}),
              before);
  }
  // The rival never installed its layout. n3 goes down and n2 is killed and restarted: the only
  // majority n1 can reach is n1 and n2, so only the promise n2 stored before answering tells n1
  // of the rival's layout (a restart ends the lease: a commit may go on at once).
  cluster_->Kill(2);
  ASSERT_TRUE(cluster_->KillAndRestart(1).ok()) << cluster_->LogTails();
  const CommandResult finished = RunCommand(commit, "", absl::Seconds(30));
  EXPECT_NE(finished.exit_code, 0) << finished.out;
  // n1 installs the rival's layout itself, or (on a slow machine) n2's watch is finishing it
  // already (5 s after the restart, FinishAcceptedLayout) or did, and n1 says so.
  EXPECT_TRUE(absl::StrContains(finished.err, "from an earlier commit by rival") ||
              absl::StrContains(finished.err, "reserved by n2 for \"join n4 (rival)\"") ||
              absl::StrContains(finished.err, "(join n4 (rival)) is still running"))
      << finished.err;
  ASSERT_TRUE(cluster_->Restart(2).ok()) << cluster_->LogTails();
  // Every node takes the rival's layout and then the one completing it (the takeover watch
  // completes a transition nobody runs an operation for).
  ExpectRivalJoinCompleted(before);
}

// Replica.ReleaseLayout, as a failed commit sends it to the members that granted it a promise:
// it ends the lease of that promise only, so another proposer is promised the version at once.
TEST_F(MembershipProcessTest, AReleasedLeaseLetsAnotherProposerInAtOnce) {
  const uint64_t version =
      KvctlJson(1, {"cluster", "status"}, 0).value("layout_version", uint64_t{0}) + 1;
  ASSERT_GT(version, 1u) << cluster_->LogTails();
  auto reserve = [&](const std::string& proposer, uint64_t round) {
    grpc::ClientContext context;
    SetDeadline(&context);
    internal::v1::ReserveLayoutRequest request;
    request.set_proposer_id(proposer);
    request.set_round(round);
    request.set_version(version);
    request.set_change("join n4 (" + proposer + ")");
    internal::v1::ReserveLayoutResponse response;
    const grpc::Status answered = ReplicaOf(1)->ReserveLayout(&context, request, &response);
    EXPECT_TRUE(answered.ok()) << answered.error_message();
    return response;
  };
  auto release = [&](const std::string& proposer, uint64_t round) {
    grpc::ClientContext context;
    SetDeadline(&context);
    internal::v1::ReleaseLayoutRequest request;
    request.set_proposer_id(proposer);
    request.set_round(round);
    request.set_version(version);
    internal::v1::ReleaseLayoutResponse response;
    return ReplicaOf(1)->ReleaseLayout(&context, request, &response);
  };
  ASSERT_EQ(reserve("first", 1).code(), 0);
  EXPECT_EQ(reserve("second", 2).code(), grpc::StatusCode::FAILED_PRECONDITION);
  const grpc::Status not_the_promise = release("second", 2);
  EXPECT_TRUE(not_the_promise.ok()) << not_the_promise.error_message();
  EXPECT_EQ(reserve("second", 2).code(), grpc::StatusCode::FAILED_PRECONDITION);
  const grpc::Status released = release("first", 1);
  EXPECT_TRUE(released.ok()) << released.error_message();
  const internal::v1::ReserveLayoutResponse granted = reserve("second", 2);
  EXPECT_EQ(granted.code(), 0) << granted.message();
}

// The proposer of a join got it accepted by n2 and n3 (a majority: the layout is chosen) and
// stopped before installing it; nobody commits anything after. The members that accepted it
// finish it once the proposer's lease is over, and the join completes.
TEST_F(MembershipProcessTest, ALayoutAcceptedButNeverInstalledIsFinishedByTheMembers) {
  const uint64_t before = RivalJoinAcceptedByN2AndN3();
  ASSERT_GT(before, 0u) << cluster_->LogTails();
  ExpectRivalJoinCompleted(before);
  EXPECT_TRUE(
      absl::StrContains(cluster_->Logs(1) + cluster_->Logs(2),
                        "finishing a cluster layout this node accepted but nobody installed"));
}

// The race a review found: a join committed through n1 and a leave through n2 at the same moment.
// Before layout reservations both succeeded and the cluster split for good into two layouts of
// one version. Now at most one commit succeeds, and every node ends on the same layout.
TEST_F(MembershipProcessTest, TwoCommitsAtOnceOnTwoNodesLeaveOneLayout) {
  const uint64_t before = RestartJoinerUntilPlannable();
  ASSERT_GT(before, 0u) << cluster_->LogTails();
  const std::vector<std::vector<std::string>> commits = {
      {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "cluster", "join", "n4", "--commit"},
      {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(1), "cluster", "leave", "n3", "--commit"}};
  std::vector<CommandResult> results(commits.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < commits.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = RunCommand(commits[i], "", absl::Seconds(30)); });
  }
  for (std::thread& thread : threads) thread.join();
  int succeeded = 0;
  for (const CommandResult& result : results) {
    std::cout << "exit " << result.exit_code << ": " << result.out << result.err << "\n";
    if (result.exit_code == 0) ++succeeded;
  }
  EXPECT_LE(succeeded, 1);
  // If the leave won, n3 stops on its own once the transition completes: reap it, and compare
  // the nodes that are still members or joining.
  std::vector<size_t> compared = {0, 1, 2, 3};
  if (results[1].exit_code == 0) {
    const absl::Time deadline = absl::Now() + kChangeTimeout;
    while (cluster_->running(2) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
    ASSERT_FALSE(cluster_->running(2))
        << "n3 is still running after it left" << cluster_->LogTails();
    absl::StatusOr<int> code = cluster_->Stop(2);  // reaps it; marks the exit as expected
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0) << cluster_->LogTails();
    compared = {0, 1, 3};
  }
  // Every node, the joiner included, settles on one layout: the same version, change and members.
  std::string layouts;
  const bool converged = Eventually([&] {
    std::set<std::string> seen;
    layouts.clear();
    for (const size_t node : compared) {
      const nlohmann::json status = KvctlJson(node, {"cluster", "status"}, 0);
      std::set<std::string> members;  // of the ring the node places keys on
      for (const nlohmann::json& member : status["members"]) {
        members.insert(member.value("node_id", ""));
      }
      const std::string layout = absl::StrCat(
          status.value("layout_version", uint64_t{0}), " ", status.value("layout_change", ""),
          " members ", absl::StrJoin(members, ","), " next ", status["layout_next_members"].dump());
      absl::StrAppend(&layouts, cluster_->node_id(node), ": ", layout, "\n");
      seen.insert(layout);
      // A split is also reported by the nodes that hear of the other layout.
      EXPECT_EQ(status.value("layout_conflict", ""), "") << cluster_->node_id(node);
    }
    return seen.size() == 1;
  });
  EXPECT_TRUE(converged) << layouts << cluster_->LogTails();
  EXPECT_GE(KvctlJson(0, {"cluster", "status"}, 0).value("layout_version", uint64_t{0}), before);
}

// The node that committed a change is killed before completing it. Its operation is on its disk:
// the restarted node goes on with it under the same id. A node that lost it (one built before
// operations were stored: --fault_forget_operations) leaves the transition to another node's
// takeover watch, once every source is done. Here the joining node commits its own join (it is
// not a source) and is killed during the handoff.
class MembershipTakeoverTest : public MembershipProcessTest {
 protected:
  void SetUp() override {
    slow_handoff_ = true;
    MembershipProcessTest::SetUp();
  }

  // Writes 3 * kPreloaded keys of 1,000 bytes (about 1.5 MB per designated source of a join:
  // at 1 MB/s the handoff takes more than a second) and restarts the joiner n4.
  std::vector<std::string> PreloadAndRestartJoiner() {
    const std::string value(1000, 'x');
    std::vector<std::string> keys;
    for (int i = 0; i < 3 * kPreloaded; ++i) {
      keys.push_back(absl::StrCat("pre/", i));
      EXPECT_TRUE(client_->Put(keys.back(), value).ok()) << keys.back();
    }
    EXPECT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();
    return keys;
  }

  // Kills the joiner n4 during the handoff of the join it committed and restarts it (with
  // `forget_operations`: without its stored operations); the join completes on every node, and
  // the operation says so on n4 (resumed) or is gone (forgotten; another node took over).
  void RunKilledCommitter(bool forget_operations) {
    // The handoff outlasts the kill below.
    const std::vector<std::string> keys = PreloadAndRestartJoiner();
    ASSERT_FALSE(HasFailure());
    const uint64_t before =
        KvctlJson(0, {"cluster", "status"}, 0).value("layout_version", uint64_t{0});
    const std::string id = CommitJoin(3);
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(Eventually([&] {
      return KvctlJson(1, {"cluster", "status"}, 0).value("layout_version", uint64_t{0}) ==
             before + 1;
    })) << cluster_->LogTails();
    cluster_->Kill(3);
    if (forget_operations) cluster_->SetNodeFlags(3, {"--fault_forget_operations=true"});
    ASSERT_TRUE(cluster_->Restart(3).ok()) << cluster_->LogTails();
    if (forget_operations) {
      KvctlJson(3, {"operation", "get", id}, 1);  // NOT_FOUND
    } else {
      const nlohmann::json op = KvctlJson(3, {"operation", "get", id}, 0);
      EXPECT_NE(op.value("state", ""), "FAILED") << op;
    }
    // The transition completes, on every node.
    const absl::Time deadline = absl::Now() + kChangeTimeout;
    bool completed = false;
    while (!completed && absl::Now() < deadline) {
      completed = true;
      for (size_t node = 0; node < 4; ++node) {
        const nlohmann::json status = KvctlJson(node, {"cluster", "status"}, 0);
        completed = completed && status.value("layout_version", uint64_t{0}) == before + 2 &&
                    status.value("layout_change", "").empty();
      }
      if (!completed) absl::SleepFor(absl::Milliseconds(200));
    }
    ASSERT_TRUE(completed) << cluster_->LogTails();
    bool taken_over = false;
    for (size_t node = 0; node < 4; ++node) {
      taken_over = taken_over || absl::StrContains(cluster_->Logs(node), "nobody completed");
    }
    if (forget_operations) {
      EXPECT_TRUE(taken_over) << cluster_->LogTails();
    } else {
      EXPECT_TRUE(absl::StrContains(cluster_->Logs(3), "resuming a membership change operation"))
          << cluster_->LogTails();
      nlohmann::json op;
      EXPECT_TRUE(Eventually([&] {
        op = KvctlJson(3, {"operation", "get", id}, 0);
        return op.value("state", "") == "SUCCEEDED";
      })) << op;
      EXPECT_EQ(op.value("kind", ""), "join") << op;
    }
    const int on_n4 = CheckKeys(keys, {0, 3}, "n4", "");
    EXPECT_NEAR(static_cast<double>(on_n4) / static_cast<double>(keys.size()), 0.75, 0.1);
  }

  // Commits the join of n4 through node `via` once gossip made n4 a candidate there; returns
  // the operation id (empty if that never happened).
  std::string CommitJoin(size_t via) {
    std::string id;
    EXPECT_TRUE(Eventually([&] {
      const std::vector<std::string> argv = {
          KVCTL_PATH, "--endpoints=" + cluster_->endpoint(via), "--json", "cluster", "join", "n4",
          "--commit"};
      const CommandResult result = RunCommand(argv, "", absl::Seconds(30));
      if (result.exit_code != 0) return false;
      id = nlohmann::json::parse(result.out, nullptr, false).value("operation_id", "");
      return !id.empty();
    })) << cluster_->LogTails();
    return id;
  }
};

TEST_F(MembershipTakeoverTest, TransitionCompletesAfterTheCommittingNodeIsKilled) {
  RunKilledCommitter(/*forget_operations=*/false);
}

TEST_F(MembershipTakeoverTest, TransitionCompletesAfterTheCommittingNodeForgotItsOperation) {
  RunKilledCommitter(/*forget_operations=*/true);
}

// A new owner that stops answering during the handoff holds the join up; the operation says which
// source retries after what, and the join completes once the new owner answers again.
TEST_F(MembershipTakeoverTest, AStalledHandoffSaysWhyInItsOperationAndResumes) {
  // A tombstone's record, for the purge requests below (only tombstones are ever purged).
  WriteOptions all;
  all.w = Quorum::All();
  ASSERT_TRUE(client_->Put("purge/probe", "v", all).ok());
  ASSERT_TRUE(client_->Delete("purge/probe", all).ok());
  const std::string record = LocalRecord(0, "purge/probe").record();
  ASSERT_FALSE(record.empty());
  const std::vector<std::string> keys = PreloadAndRestartJoiner();
  ASSERT_FALSE(HasFailure());
  const std::string id = CommitJoin(0);
  ASSERT_FALSE(id.empty());
  // At 1 MB/s per source the handoff's second batch is a second away.
  ASSERT_TRUE(cluster_->Pause(3));
  nlohmann::json op;
  const bool explained = Eventually([&] {
    op = KvctlJson(0, {"operation", "get", id}, 0);
    return absl::StrContains(op.dump(), "retries after: sending records to n4");
  });
  // A node in the transition refuses to purge (its reaper is paused; one that has not learned of
  // the change yet could ask). The key does not exist: without the refusal the answer is OK.
  const grpc::Status purge = PurgeRecord(0, "no/such/key", record);
  EXPECT_EQ(purge.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << purge.error_message();
  EXPECT_TRUE(absl::StrContains(purge.error_message(), "does not purge tombstones while"))
      << purge.error_message();
  cluster_->Resume(3);
  EXPECT_TRUE(explained) << op.dump() << cluster_->LogTails();
  EXPECT_EQ(op.value("state", ""), "RUNNING") << op.dump();
  const absl::Time deadline = absl::Now() + kChangeTimeout;
  do {
    op = KvctlJson(0, {"operation", "get", id}, 0);
    if (op.value("state", "") != "RUNNING") break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  ASSERT_EQ(op.value("state", ""), "SUCCEEDED") << op.dump() << cluster_->LogTails();
  EXPECT_FALSE(absl::StrContains(op.dump(), "retries after")) << op.dump();
  const int on_n4 = CheckKeys(keys, {0, 3}, "n4", "");
  EXPECT_NEAR(static_cast<double>(on_n4) / static_cast<double>(keys.size()), 0.75, 0.1);
  // Out of the transition, a purge confirmed on another layout's ring is refused too (a reaper
  // that has not adopted the completed layout yet, or one ahead of this node), and one
  // confirmed on this node's layout is served.
  const uint64_t version =
      KvctlJson(0, {"cluster", "status"}, 0).value("layout_version", uint64_t{0});
  ASSERT_GT(version, 1u);
  for (const uint64_t other : {version - 1, version + 1}) {
    const grpc::Status refused = PurgeRecord(0, "no/such/key", record, other);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << other << ": " << refused.error_message();
    EXPECT_TRUE(absl::StrContains(refused.error_message(),
                                  absl::StrCat("confirmed on the ring of layout version ", other)))
        << refused.error_message();
  }
  const grpc::Status served = PurgeRecord(0, "no/such/key", record, version);
  EXPECT_TRUE(served.ok()) << served.error_message();
}

}  // namespace
}  // namespace kv

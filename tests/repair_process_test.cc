// Issue 4: forced anti-entropy as an asynchronous operation, through the real kvctl against a
// 3-node cluster of real kvnode processes on loopback (N=3, W=2), with periodic anti-entropy off
// (--anti_entropy_interval=0), so that only the forced exchange can repair anything:
//   - a replica whose data directory was wiped holds nothing of the fully replicated keys;
//     `kvctl repair` prints an operation id at once, `kvctl operation get ID` goes from RUNNING to
//     SUCCEEDED with the keys repaired counted, and afterwards every key is on every replica;
//   - `kvctl cluster anti-entropy` shows the exchange per peer, and with --ranges per range;
//   - an unknown id is NOT_FOUND (exit 1), another node's id names its owner (exit 1), a
//     malformed id is a usage error (exit 2); `repair --wait` ends SUCCEEDED (exit 0), an unknown
//     --peer is exit 2;
//   - `repair --token=T` twice answers the same operation (deduplicated) and starts one; T with
//     another request is refused (exit 2);
//   - after a kill -9 and restart of its node, the operation reads as it did, and a retried
//     start with its token is still deduplicated (both kept on disk).
// Every node is stopped with SIGTERM at the end and must exit cleanly. Every wait is bounded.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "replica.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/staged_crash.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::kv::testing::CommandResult;
using ::kv::testing::RunCommand;

constexpr int kKeys = 200;
constexpr absl::Duration kRepairTimeout = absl::Seconds(60);

class RepairProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::Cluster::Options options;
    options.nodes = 3;
    options.extra_flags = {"--anti_entropy_interval=0"};
    options.extra_flags.insert(options.extra_flags.end(), extra_flags_.begin(), extra_flags_.end());
    if (!n1_env_.empty()) options.node_env[0] = n1_env_;
    absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster =
        testing::Cluster::Start(std::move(options));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    ClientOptions client_options;
    client_options.endpoints = cluster_->endpoints();
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(client_options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    client_.reset();
    if (cluster_ == nullptr) return;
    EXPECT_TRUE(cluster_->StopAll().ok()) << cluster_->LogTails();
    EXPECT_EQ(cluster_->SanitizerReports(), "");
  }

  CommandResult Kvctl(size_t node, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(node)};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, "", absl::Seconds(90));
  }

  nlohmann::json KvctlJson(size_t node, std::vector<std::string> args, int expected_exit) {
    args.push_back("--json");
    const CommandResult result = Kvctl(node, args);
    EXPECT_EQ(result.exit_code, expected_exit) << result.out << result.err;
    nlohmann::json json = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(json.is_object()) << "stdout is not one JSON object: " << result.out;
    return json;
  }

  // How many of the test's keys node `node_id` holds a record of (DescribeKey asks every
  // replica; it does not repair).
  int KeysHeldBy(const std::string& node_id) {
    int held = 0;
    for (int i = 0; i < kKeys; ++i) {
      absl::StatusOr<DescribeKeyResult> described = client_->DescribeKey(absl::StrCat("r/", i));
      if (!described.ok()) continue;
      for (const ReplicaView& replica : described->replicas) {
        if (replica.node_id == node_id && replica.has_record) ++held;
      }
    }
    return held;
  }

  // Writes the test's keys to every replica, then wipes node `victim`'s data directory and
  // restarts it: only a repair puts the keys back.
  void WipeAfterFullWrites(size_t victim) {
    WriteOptions all;
    all.w = Quorum::All();
    for (int i = 0; i < kKeys; ++i) {
      absl::StatusOr<WriteResult> put =
          client_->Put(absl::StrCat("r/", i), absl::StrCat("v", i), all);
      ASSERT_TRUE(put.ok()) << put.status();
    }
    absl::StatusOr<int> stopped = cluster_->Stop(victim);
    ASSERT_TRUE(stopped.ok()) << stopped.status();
    std::error_code ec;
    std::filesystem::remove_all(cluster_->data_dir(victim), ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(cluster_->Restart(victim).ok()) << cluster_->LogTails();
  }

  std::vector<std::string> extra_flags_;       // set before SetUp
  std::map<std::string, std::string> n1_env_;  // set before SetUp: added to n1's environment
  std::unique_ptr<testing::Cluster> cluster_;
  std::unique_ptr<Client> client_;
};

// A node that restarts after a machine crash without sync_writes may lack writes it acknowledged
// (its write-ahead log's tail). Until anti-entropy has compared it with every peer it is
// "catching up": cluster status says so, and reads do not count its answers that a key has no
// live version, so a Get of a missing key through another node with the third one down is
// UNAVAILABLE rather than NOT_FOUND (which needs N-W+1 = 2 such answers). The crash is staged by
// rewriting the stopped node's record of its previous run (how kvnode sees a machine crash: not
// stopped cleanly, writes not synced, another boot id).
TEST_F(RepairProcessTest, ANodeThatMayHaveLostWritesDoesNotCountTowardNotFoundUntilItCaughtUp) {
  WriteOptions all;
  all.w = Quorum::All();
  ASSERT_TRUE(client_->Put("held", "v", all).ok());
  absl::StatusOr<int> stopped = cluster_->Stop(0);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  ASSERT_TRUE(testing::StageMachineCrash(cluster_->data_dir(0)).ok());
  ASSERT_TRUE(cluster_->Restart(0).ok()) << cluster_->LogTails();
  nlohmann::json status = KvctlJson(0, {"cluster", "status"}, 0);
  EXPECT_EQ(status.value("catching_up", false), true) << status.dump();
  const CommandResult text = Kvctl(0, {"cluster", "status"});
  EXPECT_NE(text.out.find("n1 is catching up"), std::string::npos) << text.out;
  // A record it holds is answered to a read's quorum marked as a catching-up replica's (its live
  // version may be one that a write it lost replaced: it rules nothing out); to other readers
  // (anti-entropy, handoff) unmarked.
  auto replica = internal::v1::Replica::NewStub(
      grpc::CreateChannel(cluster_->endpoint(0), grpc::InsecureChannelCredentials()));
  for (const bool for_quorum : {true, false}) {
    internal::v1::ReadRecordRequest read;
    read.set_key("held");
    read.set_for_read_quorum(for_quorum);
    internal::v1::ReadRecordResponse answer;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const grpc::Status status = replica->ReadRecord(&context, read, &answer);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(answer.found());
    EXPECT_EQ(answer.catching_up(), for_quorum) << "for_read_quorum=" << for_quorum;
  }

  ASSERT_TRUE(cluster_->Stop(2).ok());
  // Through n2 (which asks n1) and through n1 itself: one answer that counts is not enough.
  for (size_t via : {size_t{1}, size_t{0}}) {
    const CommandResult get = Kvctl(via, {"--timeout=3s", "get", "never-written"});
    EXPECT_EQ(get.exit_code, 3) << "via node " << via << ": " << get.out << get.err;
  }
  ASSERT_TRUE(cluster_->Restart(2).ok()) << cluster_->LogTails();

  // n1 may still be backing off its connection to n3, which just restarted: try again.
  CommandResult repaired = Kvctl(0, {"repair", "--wait"});
  for (const absl::Time deadline = absl::Now() + kRepairTimeout;
       repaired.exit_code != 0 && absl::Now() < deadline;) {
    absl::SleepFor(absl::Seconds(1));
    repaired = Kvctl(0, {"repair", "--wait"});
  }
  ASSERT_EQ(repaired.exit_code, 0) << repaired.out << repaired.err;
  status = KvctlJson(0, {"cluster", "status"}, 0);
  EXPECT_EQ(status.value("catching_up", true), false) << status.dump();
  ASSERT_TRUE(cluster_->Stop(2).ok());
  const CommandResult get = Kvctl(1, {"--timeout=3s", "get", "never-written"});
  EXPECT_EQ(get.exit_code, 1) << get.out << get.err;  // n1 and n2 answer: NOT_FOUND
  ASSERT_TRUE(cluster_->Restart(2).ok()) << cluster_->LogTails();
}

TEST_F(RepairProcessTest, ForcedRepairIsAnOperationThatRestoresAWipedReplica) {
  const size_t victim = 2;
  const std::string victim_id = cluster_->node_id(victim);
  WipeAfterFullWrites(victim);
  ASSERT_FALSE(HasFailure());
  // Premise: nothing but the forced repair puts the keys back (writes were on all replicas, so no
  // outbox holds them; periodic anti-entropy is off).
  ASSERT_EQ(KeysHeldBy(victim_id), 0);

  const CommandResult started = Kvctl(0, {"repair"});
  ASSERT_EQ(started.exit_code, 0) << started.out << started.err;
  const std::string id(absl::StripAsciiWhitespace(started.out));
  EXPECT_TRUE(absl::StartsWith(id, "n1:")) << id;
  EXPECT_TRUE(absl::StrContains(started.err, "kvctl operation get " + id)) << started.err;

  nlohmann::json op;
  const absl::Time deadline = absl::Now() + kRepairTimeout;
  std::vector<std::string> states;
  while (absl::Now() < deadline) {
    op = KvctlJson(0, {"operation", "get", id}, 0);
    const std::string state = op.value("state", "");
    if (states.empty() || states.back() != state) states.push_back(state);
    if (state != "RUNNING") break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(op.value("state", ""), "SUCCEEDED") << op;
  EXPECT_EQ(op.value("operation_id", ""), id);
  EXPECT_EQ(op.value("node_id", ""), "n1");
  EXPECT_EQ(op.value("kind", ""), "repair");
  EXPECT_EQ(op["progress"].value("done", 0), 2) << op;
  EXPECT_EQ(op["progress"].value("total", 0), 2) << op;
  EXPECT_EQ(op["progress"].value("unit", ""), "peers") << op;
  EXPECT_GE(op["counters"].value("keys_repaired", 0), kKeys) << op;
  EXPECT_GE(op["counters"].value("exchanges", 0), 2) << op;
  EXPECT_GT(op.value("end_unix_micros", int64_t{0}), 0) << op;
  EXPECT_EQ(KeysHeldBy(victim_id), kKeys);

  // A repair that ended cannot be cancelled (exit 3, saying how it ended).
  const CommandResult cancel_ended = Kvctl(0, {"operation", "cancel", id});
  EXPECT_EQ(cancel_ended.exit_code, 3) << cancel_ended.out << cancel_ended.err;
  EXPECT_TRUE(absl::StrContains(cancel_ended.err, "has ended (SUCCEEDED")) << cancel_ended.err;
  // operation wait on an operation that ended answers at once, with its outcome.
  const nlohmann::json waited_json = KvctlJson(0, {"operation", "wait", id}, 0);
  EXPECT_EQ(waited_json["operation"].value("state", ""), "SUCCEEDED") << waited_json;
  EXPECT_EQ(waited_json.value("operation_id", ""), id) << waited_json;

  // The text form says the same.
  const CommandResult text = Kvctl(0, {"operation", "get", id});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(absl::StrContains(text.out, "SUCCEEDED")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "keys_repaired")) << text.out;

  // Status per peer and per range.
  nlohmann::json ae = KvctlJson(0, {"cluster", "anti-entropy", "--ranges"}, 0);
  ASSERT_TRUE(ae["peers"].is_array()) << ae;
  bool saw_victim = false;
  for (const nlohmann::json& peer : ae["peers"]) {
    if (peer.value("peer_id", "") != victim_id) continue;
    saw_victim = true;
    EXPECT_GE(peer.value("exchanges", 0), 1) << peer;
    EXPECT_GE(peer.value("keys_repaired", 0), kKeys) << peer;
    EXPECT_GT(peer.value("last_exchange_unix_micros", int64_t{0}), 0) << peer;
    ASSERT_TRUE(peer["ranges"].is_array()) << peer;
    EXPECT_FALSE(peer["ranges"].empty()) << peer;
    uint64_t repaired = 0;
    for (const nlohmann::json& range : peer["ranges"]) {
      repaired += range.value("keys_repaired", uint64_t{0});
    }
    EXPECT_EQ(repaired, peer.value("keys_repaired", uint64_t{0})) << peer;
  }
  EXPECT_TRUE(saw_victim) << ae;
  const CommandResult ae_text = Kvctl(0, {"cluster", "anti-entropy"});
  EXPECT_EQ(ae_text.exit_code, 0) << ae_text.err;
  EXPECT_TRUE(absl::StrContains(ae_text.out, victim_id)) << ae_text.out;

  // Unknown, foreign and malformed ids.
  nlohmann::json unknown = KvctlJson(0, {"operation", "get", "n1:abc-999"}, 1);
  EXPECT_EQ(unknown["error"].value("code", ""), "NOT_FOUND") << unknown;
  const CommandResult foreign = Kvctl(1, {"operation", "get", id});
  EXPECT_EQ(foreign.exit_code, 1) << foreign.err;
  EXPECT_TRUE(absl::StrContains(foreign.err, "belongs to node n1")) << foreign.err;
  EXPECT_TRUE(absl::StrContains(foreign.err, cluster_->endpoint(0))) << foreign.err;
  // Given both endpoints, the client asks on from the node that says it is not its own.
  const CommandResult found =
      RunCommand({KVCTL_PATH, "--endpoints=" + cluster_->endpoint(1) + "," + cluster_->endpoint(0),
                  "operation", "get", id},
                 "", absl::Seconds(90));
  EXPECT_EQ(found.exit_code, 0) << found.out << found.err;
  EXPECT_TRUE(absl::StrContains(found.out, id)) << found.out;
  // A node part no node can have (the node's answer must not echo it into its metadata, which
  // gRPC would abort on): another node's, and the node goes on.
  for (const char* odd : {"n\t1:abc-1", "\xc3\xa9:abc-1"}) {
    const CommandResult strange = Kvctl(0, {"operation", "get", odd});
    EXPECT_EQ(strange.exit_code, 1) << strange.err;
    EXPECT_TRUE(absl::StrContains(strange.err, "NOT_FOUND")) << strange.err;
  }
  EXPECT_EQ(Kvctl(0, {"operation", "get", id}).exit_code, 0) << cluster_->LogTails();
  const CommandResult malformed = Kvctl(0, {"operation", "get", "not-an-id"});
  EXPECT_EQ(malformed.exit_code, 2) << malformed.err;
  const CommandResult usage = Kvctl(0, {"operation", "get"});
  EXPECT_EQ(usage.exit_code, 2) << usage.err;

  // repair --wait ends with the final state; the replicas are in sync now.
  const CommandResult waited = Kvctl(1, {"repair", "--wait", "--peer=n3"});
  EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "SUCCEEDED")) << waited.out;
  const CommandResult bad_peer = Kvctl(1, {"repair", "--peer=nobody"});
  EXPECT_EQ(bad_peer.exit_code, 2) << bad_peer.err;

  nlohmann::json list = KvctlJson(0, {"operation", "list"}, 0);
  ASSERT_TRUE(list["operations"].is_array()) << list;
  ASSERT_EQ(list["operations"].size(), 1u) << list;
  EXPECT_EQ(list["operations"][0].value("operation_id", ""), id);

  // A retried start (same --token, same request) gets the first operation and starts nothing;
  // the token with another request is refused.
  nlohmann::json first = KvctlJson(1, {"repair", "--peer=n3", "--token=repair-once"}, 0);
  nlohmann::json again = KvctlJson(1, {"repair", "--peer=n3", "--token=repair-once"}, 0);
  EXPECT_FALSE(first.value("deduplicated", true)) << first;
  EXPECT_TRUE(again.value("deduplicated", false)) << again;
  EXPECT_EQ(again.value("operation_id", ""), first.value("operation_id", "-")) << again;
  const CommandResult other_request = Kvctl(1, {"repair", "--token=repair-once"});
  EXPECT_EQ(other_request.exit_code, 2) << other_request.err;
  EXPECT_TRUE(absl::StrContains(other_request.err, "another request")) << other_request.err;
  const CommandResult empty_token = Kvctl(1, {"repair", "--token="});
  EXPECT_EQ(empty_token.exit_code, 2) << empty_token.err;
  // Node 2's operations: the --wait repair and the tokened one, once.
  nlohmann::json list2 = KvctlJson(1, {"operation", "list"}, 0);
  ASSERT_TRUE(list2["operations"].is_array()) << list2;
  EXPECT_EQ(list2["operations"].size(), 2u) << list2;

  // Operations outlive their node's process, also a kill: the first one reads as it did.
  cluster_->Kill(0);
  ASSERT_TRUE(cluster_->Restart(0).ok()) << cluster_->LogTails();
  const nlohmann::json after = KvctlJson(0, {"operation", "get", id}, 0);
  EXPECT_EQ(after.value("state", ""), "SUCCEEDED") << after;
  EXPECT_EQ(after["counters"], op["counters"]) << after;
  EXPECT_EQ(after.value("end_unix_micros", int64_t{0}), op.value("end_unix_micros", int64_t{1}))
      << after;
  nlohmann::json list_after = KvctlJson(0, {"operation", "list"}, 0);
  ASSERT_TRUE(list_after["operations"].is_array()) << list_after;
  EXPECT_EQ(list_after["operations"].size(), 1u) << list_after;
  // So do the tokens that started operations: a retry after the restart starts nothing.
  cluster_->Kill(1);
  ASSERT_TRUE(cluster_->Restart(1).ok()) << cluster_->LogTails();
  nlohmann::json retried = KvctlJson(1, {"repair", "--peer=n3", "--token=repair-once"}, 0);
  EXPECT_TRUE(retried.value("deduplicated", false)) << retried;
  EXPECT_EQ(retried.value("operation_id", ""), first.value("operation_id", "-")) << retried;
  const CommandResult misused = Kvctl(1, {"repair", "--token=repair-once"});
  EXPECT_EQ(misused.exit_code, 2) << misused.err;
  EXPECT_EQ(KvctlJson(1, {"operation", "list"}, 0)["operations"].size(), 2u);
}

class RestoredDirectoryProcessTest : public RepairProcessTest {
 protected:
  void SetUp() override {
    extra_flags_ = {"--gossip_interval=200ms"};  // n1's generation reaches the others soon
    RepairProcessTest::SetUp();
  }

  std::unique_ptr<Client> ClientOf(size_t node) {
    ClientOptions options;
    options.endpoints = {cluster_->endpoint(node)};
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // Writes `keys` keys through n1 ("before-backup") and copies its stopped directory; runs n1
  // again (a clean restart: it keeps its epoch) and overwrites them ("after-backup"), long enough
  // for the others to hold n1's later generation; then stops n1 and puts the copy in place of its
  // directory.
  // Starts n1 while n2 and n3 are paused, so that its start's check finds no peer to ask.
  absl::Status RestartN1WhileItsPeersArePaused() {
    const bool paused = cluster_->Pause(1) && cluster_->Pause(2);
    const absl::Status restarted =
        paused ? cluster_->Restart(0) : absl::InternalError("could not pause n2 and n3");
    cluster_->Resume(1);  // SIGCONT: harmless to a node that was not paused
    cluster_->Resume(2);
    return restarted;
  }

  void RestoreN1FromBeforeItsLastRun(int keys) {
    OverwriteThrough(0, keys, "before-backup");
    ASSERT_TRUE(cluster_->Stop(0).ok());
    const std::string backup = cluster_->data_dir(0) + ".backup";
    std::error_code ec;
    std::filesystem::copy(cluster_->data_dir(0), backup, std::filesystem::copy_options::recursive,
                          ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(cluster_->Restart(0).ok()) << cluster_->LogTails();
    OverwriteThrough(0, keys, "after-backup");
    absl::SleepFor(absl::Seconds(2));  // ten gossip rounds: the others hold n1's new generation
    EXPECT_FALSE(absl::StrContains(cluster_->Logs(0), "took a new actor epoch"))
        << cluster_->Logs(0);
    ASSERT_TRUE(cluster_->Stop(0).ok());
    std::filesystem::remove_all(cluster_->data_dir(0), ec);
    ASSERT_FALSE(ec) << ec.message();
    std::filesystem::rename(backup, cluster_->data_dir(0), ec);
    ASSERT_FALSE(ec) << ec.message();
  }

  // The values n2's own replica holds for key `i` (R=1 through n2).
  std::vector<std::string> ValuesOnN2(int i) {
    std::vector<std::string> values;
    std::unique_ptr<Client> n2 = ClientOf(1);
    if (n2 == nullptr) return values;
    absl::StatusOr<GetResult> got = n2->Get(absl::StrCat("restored/", i));
    EXPECT_TRUE(got.ok()) << i << ": " << got.status();
    if (got.ok()) {
      for (const Version& version : got->siblings) values.push_back(version.value);
    }
    return values;
  }

  // Overwrites each of `keys` keys through node `node` (its coordinator) with `value`, with the
  // context that node's replica returns, on every replica (W = all).
  void OverwriteThrough(size_t node, int keys, const std::string& value) {
    std::unique_ptr<Client> client = ClientOf(node);
    ASSERT_NE(client, nullptr);
    for (int i = 0; i < keys; ++i) {
      const std::string key = absl::StrCat("restored/", i);
      WriteOptions all;
      all.w = Quorum::All();
      absl::StatusOr<GetResult> got = client->Get(key);
      if (got.ok()) {
        all.context = got->context;
      } else {
        ASSERT_TRUE(absl::IsNotFound(got.status())) << got.status();
      }
      absl::StatusOr<WriteResult> put = client->Put(key, value, all);
      ASSERT_TRUE(put.ok()) << key << ": " << put.status();
    }
  }
};

// A data directory restored from a backup looks like a clean stop, but the node made writes since
// that it lacks and its peers hold. Its peers last saw a later history generation from it, so it
// takes a new actor epoch: its next writes get new dots instead of reusing those of the writes it
// lost, which the other replicas would take for versions they already hold and drop (Riak's
// KV679). Without the check, this test loses every write of the last round on n2.
TEST_F(RestoredDirectoryProcessTest, ADirectoryOlderThanTheNodesLastRunTakesANewEpoch) {
  constexpr int kRestoredKeys = 20;
  ASSERT_NO_FATAL_FAILURE(RestoreN1FromBeforeItsLastRun(kRestoredKeys));
  ASSERT_TRUE(cluster_->Restart(0).ok()) << cluster_->LogTails();
  const std::string logs = cluster_->Logs(0);
  EXPECT_TRUE(absl::StrContains(logs, "took a new actor epoch")) << logs;
  EXPECT_TRUE(absl::StrContains(logs, "older than the node's last run")) << logs;

  // n1 answers from the restored records (the versions written before the backup) and
  // overwrites them. Every replica must keep the new versions: n2 holds them beside the
  // versions n1 lost (siblings, as the new ones did not see those).
  OverwriteThrough(0, kRestoredKeys, "after-restore");
  for (int i = 0; i < kRestoredKeys; ++i) {
    EXPECT_THAT(ValuesOnN2(i), ::testing::IsSupersetOf({"after-backup", "after-restore"})) << i;
  }
  // And the catching-up state says that n1 may lack writes.
  const nlohmann::json status = KvctlJson(0, {"cluster", "status"}, 0);
  EXPECT_EQ(status.value("catching_up", false), true) << status.dump();
}

// The same restore while no peer can answer the start's check (both paused): the node starts on
// its old epoch, and learns the truth from the first gossip of a peer, which kept the generation
// of the node's earlier run. From then on it refuses writes (another node takes them), shows the
// conflict in `cluster status` and is catching up; its next start takes a new epoch and it
// writes again. No acknowledged write is lost: n2 keeps every value of the run the copy lacks.
TEST_F(RestoredDirectoryProcessTest, ARestoreTheStartCouldNotCheckIsFoundByGossipAndStopsWrites) {
  constexpr int kRestoredKeys = 10;
  ASSERT_NO_FATAL_FAILURE(RestoreN1FromBeforeItsLastRun(kRestoredKeys));

  const int metrics_port = testing::PickFreePort();
  cluster_->SetNodeFlags(0, {absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)});
  const absl::Status restarted = RestartN1WhileItsPeersArePaused();
  ASSERT_TRUE(restarted.ok()) << restarted << cluster_->LogTails();
  EXPECT_FALSE(absl::StrContains(cluster_->Logs(0), "took a new actor epoch")) << cluster_->Logs(0);

  nlohmann::json status;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    absl::SleepFor(absl::Milliseconds(200));
    status = KvctlJson(0, {"cluster", "status"}, 0);
  } while (status.value("history_conflict", "").empty() && absl::Now() < deadline);
  EXPECT_TRUE(absl::StrContains(status.value("history_conflict", ""),
                                "of an earlier run of n1; this run started from"))
      << status.dump();
  EXPECT_EQ(status.value("catching_up", false), true) << status.dump();
  const CommandResult text = Kvctl(0, {"cluster", "status"});
  EXPECT_TRUE(absl::StrContains(text.out, "data directory is older than its last run")) << text.out;
  const absl::StatusOr<std::string> metrics = testing::HttpGet(metrics_port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(testing::MetricSample(*metrics, "kv_history_conflict"), 1) << *metrics;
  EXPECT_EQ(testing::MetricSample(*metrics, "kv_catching_up"), 1) << *metrics;

  // A write through n1 alone is refused, and changes nothing.
  ClientOptions only_n1;
  only_n1.endpoints = {cluster_->endpoint(0)};
  only_n1.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> n1 = Client::Create(only_n1);
  ASSERT_TRUE(n1.ok()) << n1.status();
  const absl::StatusOr<WriteResult> refused = (*n1)->Put("restored/0", "refused");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "refuses writes until it restarts"))
      << refused.status();
  // With another endpoint as well, the client's retry goes there.
  ClientOptions n1_then_n2;
  n1_then_n2.endpoints = {cluster_->endpoint(0), cluster_->endpoint(1)};
  absl::StatusOr<std::unique_ptr<Client>> failover = Client::Create(n1_then_n2);
  ASSERT_TRUE(failover.ok()) << failover.status();
  for (int i = 0; i < 5; ++i) {
    const absl::StatusOr<WriteResult> taken = (*failover)->Put(absl::StrCat("elsewhere/", i), "v");
    ASSERT_TRUE(taken.ok()) << taken.status();
    EXPECT_FALSE(absl::StartsWith(taken->write_id, "n1#")) << taken->write_id;
  }

  for (int i = 0; i < kRestoredKeys; ++i) {
    EXPECT_THAT(ValuesOnN2(i), ::testing::ElementsAre("after-backup")) << i;
  }

  // The next start takes a new epoch, and n1 writes again. The peers are paused again, so that
  // only the conflict's record in n1's directory can tell that start.
  ASSERT_TRUE(cluster_->Stop(0).ok());
  cluster_->SetNodeFlags(0, {});
  const absl::Status restarted_again = RestartN1WhileItsPeersArePaused();
  ASSERT_TRUE(restarted_again.ok()) << restarted_again << cluster_->LogTails();
  EXPECT_TRUE(absl::StrContains(cluster_->Logs(0), "took a new actor epoch")) << cluster_->Logs(0);
  EXPECT_TRUE(absl::StrContains(cluster_->Logs(0), "the previous run learned"))
      << cluster_->Logs(0);
  status = KvctlJson(0, {"cluster", "status"}, 0);
  EXPECT_EQ(status.value("history_conflict", "?"), "") << status.dump();
  EXPECT_EQ(status.value("catching_up", false), true) << status.dump();
  OverwriteThrough(0, kRestoredKeys, "after-restart");
  for (int i = 0; i < kRestoredKeys; ++i) {
    EXPECT_THAT(ValuesOnN2(i), ::testing::IsSupersetOf({"after-backup", "after-restart"})) << i;
  }
}

// A peer answers a request for the keys of the segments that differ with whole segments up to a
// byte limit (so that a far-behind pair with many keys per segment gets answers that fit a
// message and a deadline), and the requester asks for the rest. With a limit of 64 bytes (a few
// keys per answer), the wiped replica's own repair pulls all 200 keys from its peers.
class PagedKeyListRepairProcessTest : public RepairProcessTest {
 protected:
  void SetUp() override {
    extra_flags_ = {"--anti_entropy_key_list_bytes=64"};
    RepairProcessTest::SetUp();
  }
};

TEST_F(PagedKeyListRepairProcessTest, AWipedReplicaPullsEveryKeyThroughPagedKeyLists) {
  const size_t victim = 2;
  WipeAfterFullWrites(victim);
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(KeysHeldBy(cluster_->node_id(victim)), 0);
  // The victim asks its peers for their keys (not the other way round): their answers are paged.
  const CommandResult repaired =
      Kvctl(victim, {"repair", "--peer=n1", "--wait", "--wait-timeout=60s"});
  EXPECT_EQ(repaired.exit_code, 0) << repaired.out << repaired.err;
  EXPECT_TRUE(absl::StrContains(repaired.out, "SUCCEEDED")) << repaired.out;
  EXPECT_EQ(KeysHeldBy(cluster_->node_id(victim)), kKeys);
}

// A repair slowed down by a small repair budget is cancelled while it runs: it ends FAILED
// (CANCELLED) at once, a second cancel answers the same, and the same repair asked for again is a
// new operation.
class SlowRepairProcessTest : public RepairProcessTest {
 protected:
  void SetUp() override {
    extra_flags_ = {"--anti_entropy_keys_per_second=20"};  // 200 keys: about 10 s
    RepairProcessTest::SetUp();
  }
};

TEST_F(SlowRepairProcessTest, ARunningRepairIsCancelled) {
  WipeAfterFullWrites(2);
  ASSERT_FALSE(HasFailure());
  const nlohmann::json started = KvctlJson(0, {"repair", "--peer=n3"}, 0);
  const std::string id = started.value("operation_id", "");
  ASSERT_FALSE(id.empty()) << started;
  EXPECT_FALSE(started.value("already_running", true)) << started;
  // The same repair asked for again while it runs is that one, and says so.
  const nlohmann::json same = KvctlJson(0, {"repair", "--peer=n3"}, 0);
  EXPECT_EQ(same.value("operation_id", ""), id) << same;
  EXPECT_TRUE(same.value("already_running", false)) << same;
  EXPECT_FALSE(same.value("deduplicated", true)) << same;
  const CommandResult same_text = Kvctl(0, {"repair", "--peer=n3"});
  EXPECT_TRUE(absl::StrContains(same_text.err, "already running; nothing new started"))
      << same_text.err;
  const nlohmann::json cancelled = KvctlJson(0, {"operation", "cancel", id}, 0)["operation"];
  EXPECT_EQ(cancelled.value("state", ""), "FAILED") << cancelled;
  EXPECT_EQ(cancelled["error"].value("code", ""), "CANCELLED") << cancelled;
  EXPECT_TRUE(absl::StrContains(cancelled["error"].value("message", ""), "cancelled by a caller"))
      << cancelled;
  const nlohmann::json again = KvctlJson(0, {"operation", "cancel", id}, 0);  // a retry
  EXPECT_EQ(again["operation"]["error"].value("code", ""), "CANCELLED") << again;
  EXPECT_FALSE(again.contains("error")) << again;
  EXPECT_EQ(KvctlJson(0, {"operation", "get", id}, 0).value("state", ""), "FAILED");
  const nlohmann::json restarted = KvctlJson(0, {"repair", "--peer=n3"}, 0);
  EXPECT_NE(restarted.value("operation_id", ""), id) << restarted;
  // Another node's id is answered with where to cancel it.
  const CommandResult foreign = Kvctl(1, {"operation", "cancel", id});
  EXPECT_EQ(foreign.exit_code, 1) << foreign.err;
  EXPECT_TRUE(absl::StrContains(foreign.err, "operation cancel " + id)) << foreign.err;
}

// A repair's start token is kept for a day by the wall clock, also across a restart: n1 starts
// with its wall clock two days behind, which then steps to the right time (an NTP correction
// after a start without a real-time clock). Its monotonic clock, which started from the wall
// clock's reading, stays two days behind for the rest of the run, so a token stamped on it
// would look two days old to the next run and be forgotten: a retry of the start after a restart
// would start a second repair.
class WallClockSteppedRepairProcessTest : public RepairProcessTest {
 protected:
  void SetUp() override {
    const std::string libfaketime = testing::LibfaketimePath();
    ASSERT_FALSE(libfaketime.empty()) << "libfaketimeMT.so.1 is missing: install Debian's "
                                         "faketime package (deploy/setup-deps.sh does)";
    n1_env_ = testing::FaketimeEnv(libfaketime);
    ASSERT_NO_FATAL_FAILURE(StepN1WallClock("-48h"));
    n1_env_["FAKETIME_TIMESTAMP_FILE"] = clock_offset_;
    n1_env_["FAKETIME_NO_CACHE"] = "1";
    // libfaketime keeps some of n1's gRPC threads polling (README, Limits), which on 2 cores
    // slows every process: no member is judged DOWN for that.
    extra_flags_ = {"--failure_timeout=20s"};
    RepairProcessTest::SetUp();
  }
  // Moves n1's wall clock to `offset` from the real one (libfaketime's "-48h" form), whole.
  void StepN1WallClock(const std::string& offset) {
    testing::ReplaceFile(clock_offset_, offset + "\n");
  }
  testing::TempDir clock_dir_;
  const std::string clock_offset_ = clock_dir_.Sub("offset");
};

TEST_F(WallClockSteppedRepairProcessTest, AStartTokenOutlivesARestartAfterAStepOfTheWallClock) {
  ASSERT_NO_FATAL_FAILURE(StepN1WallClock("+0"));
  const nlohmann::json first = KvctlJson(0, {"repair", "--peer=n2", "--token=after-the-step"}, 0);
  const std::string id = first.value("operation_id", "");
  ASSERT_FALSE(id.empty()) << first;
  EXPECT_FALSE(first.value("deduplicated", true)) << first;
  ASSERT_TRUE(cluster_->Stop(0).ok()) << cluster_->LogTails();
  ASSERT_TRUE(cluster_->Restart(0).ok()) << cluster_->LogTails();
  const nlohmann::json retried = KvctlJson(0, {"repair", "--peer=n2", "--token=after-the-step"}, 0);
  EXPECT_TRUE(retried.value("deduplicated", false)) << retried;
  EXPECT_EQ(retried.value("operation_id", ""), id) << retried;
}

// A node stopped while it answers an Admin.RunAntiEntropy call (a forced exchange, answered
// when it ends: here about 100 s, 200 keys at 2 a second) answers it UNAVAILABLE once its
// shutdown grace has passed and stops, rather than waiting for the exchange to end.
class VerySlowExchangeProcessTest : public RepairProcessTest {
 protected:
  void SetUp() override {
    extra_flags_ = {"--anti_entropy_keys_per_second=2", "--shutdown_grace=1s"};
    RepairProcessTest::SetUp();
  }
};

TEST_F(VerySlowExchangeProcessTest, AStopDuringAForcedExchangeAnswersItAndDoesNotWaitForIt) {
  WipeAfterFullWrites(2);
  ASSERT_FALSE(HasFailure());
  std::unique_ptr<v1::Admin::Stub> admin = v1::Admin::NewStub(
      grpc::CreateChannel(cluster_->endpoint(0), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  v1::RunAntiEntropyRequest request;
  request.set_peer_id(cluster_->node_id(2));
  v1::RunAntiEntropyResponse response;
  absl::Notification answered;
  grpc::Status status;
  admin->async()->RunAntiEntropy(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    answered.Notify();
  });
  // The exchange runs (a repair budget of 2 keys a second holds it for about 100 s).
  EXPECT_FALSE(answered.WaitForNotificationWithTimeout(absl::Seconds(2))) << status.error_message();
  const absl::Time stop_started = absl::Now();
  absl::StatusOr<int> stopped = cluster_->Stop(0, absl::Seconds(30));
  ASSERT_TRUE(stopped.ok()) << stopped.status() << cluster_->LogTails();
  EXPECT_EQ(*stopped, 0) << cluster_->LogTails();
  // Drain (0.5 s) and grace (1 s), then the answer; well before the exchange could end.
  EXPECT_LT(absl::Now() - stop_started, absl::Seconds(15)) << cluster_->LogTails();
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "stopping")) << status.error_message();
}

}  // namespace
}  // namespace kv

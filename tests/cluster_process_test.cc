// Clusters of 3 and 5 real kvnode processes on loopback (N=3, W=2, R=1), driven through the
// generated gRPC stubs and, for endpoint failover, the client library. Issue 3 item 9:
//   - new-key read-after-write (C3) for 1,000 keys through every node;
//   - an overwrite is visibly stale on the other replicas (C4), then converges (C2) and
//     DescribeWrite reports REPLICATED;
//   - kill -9 of one replica during writes, restart: every acknowledged write is on ALL of its
//     replicas within a bounded time (C1, C2);
//   - concurrent writes without context become siblings, a write with the merged context
//     resolves them on every replica (C5);
//   - a Put retried through another node with the same idempotency token gives one version (C6),
//     also when a client overwrote one copy before the other arrived;
//   - a node down during the whole write phase holds everything after it returns (hinted
//     handoff through the outbox);
//   - a client whose first endpoint is dead (or hung) still succeeds through the others;
//   - with 5 nodes, a write through a node that is not a replica of the key is forwarded, and
//     a forwarded W shortfall keeps its kv-write-stored mark so the retry is deduplicated.
// Every test ends by stopping all nodes with SIGTERM: each must exit cleanly (code 0) and log
// no sanitizer report, and none may have exited unless the test stopped it.
// Every wait is a poll with a deadline; every loop is bounded.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "replica.grpc.pb.h"
#include "tests/cluster_util.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAreArray;

// Bounds for waits that end as soon as their condition holds; generous, so that a slow
// sanitizer build on a busy machine does not fail them, while a real failure still ends.
constexpr absl::Duration kRpcTimeout = absl::Seconds(20);
constexpr absl::Duration kConvergeTimeout = absl::Seconds(30);
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);
// Failure messages list at most this many keys.
constexpr size_t kMaxReported = 10;

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = kRpcTimeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  return context;
}

// A channel that reconnects quickly to a node that was restarted. (Not
// GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also uses it as the connection attempt's timeout, and
// a short one makes calls fail with "connection attempt timed out before receiving SETTINGS
// frame" on a loaded machine.)
std::shared_ptr<grpc::Channel> Connect(const std::string& endpoint) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
}

v1::Quorum QuorumCount(uint32_t count) {
  v1::Quorum quorum;
  quorum.set_kind(v1::Quorum::COUNT);
  quorum.set_count(count);
  return quorum;
}

v1::Quorum QuorumAll() {
  v1::Quorum quorum;
  quorum.set_kind(v1::Quorum::ALL);
  return quorum;
}

std::string StatusText(const grpc::Status& status) {
  return absl::StrCat("code ", status.error_code(), ": ", status.error_message());
}

// The dot ("actor:counter") of a write id ("actor:counter/base64url(key)").
std::string DotOf(const std::string& write_id) { return write_id.substr(0, write_id.find('/')); }

// The node id of a dot: its actor is "<node_id>#<epoch>".
std::string NodeOfDot(const std::string& dot) { return dot.substr(0, dot.find('#')); }

// Polls `done` until it returns true or `timeout` passes; true if it did.
bool PollUntil(absl::Duration timeout, const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (done()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(kPollInterval);
  }
}

struct PutArgs {
  std::string context;
  std::string token;
  std::optional<v1::Quorum> w;
};

struct PutResult {
  grpc::Status status;
  v1::PutResponse response;
  bool write_stored = false;  // trailing metadata "kv-write-stored" (a W shortfall)
};

PutResult Put(v1::KV::Stub* kv, const std::string& key, const std::string& value,
              const PutArgs& args = {}) {
  v1::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_context(args.context);
  request.set_idempotency_token(args.token);
  if (args.w) *request.mutable_w() = *args.w;
  PutResult result;
  std::unique_ptr<grpc::ClientContext> context = Ctx();
  result.status = kv->Put(context.get(), request, &result.response);
  result.write_stored = context->GetServerTrailingMetadata().count("kv-write-stored") > 0;
  return result;
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

grpc::Status DescribeKey(v1::KV::Stub* kv, const std::string& key, v1::DescribeKeyResponse* out) {
  v1::DescribeKeyRequest request;
  request.set_key(key);
  return kv->DescribeKey(Ctx().get(), request, out);
}

grpc::Status DescribeWrite(v1::KV::Stub* kv, const std::string& write_id,
                           v1::DescribeWriteResponse* out) {
  v1::DescribeWriteRequest request;
  request.set_write_id(write_id);
  return kv->DescribeWrite(Ctx().get(), request, out);
}

std::vector<std::string> ReplicaIds(const v1::DescribeKeyResponse& described) {
  std::vector<std::string> ids;
  for (const v1::ReplicaView& view : described.replicas()) ids.push_back(view.node_id());
  return ids;
}

// Live (non-tombstone) values a replica holds, sorted.
std::vector<std::string> LiveValues(const v1::ReplicaView& view) {
  std::vector<std::string> values;
  for (const v1::Sibling& s : view.siblings()) {
    if (!s.tombstone()) values.push_back(s.value());
  }
  std::sort(values.begin(), values.end());
  return values;
}

bool HoldsVersion(const v1::ReplicaView& view, const std::string& dot, const std::string& value) {
  return std::any_of(view.siblings().begin(), view.siblings().end(), [&](const v1::Sibling& s) {
    return s.dot() == dot && !s.tombstone() && s.value() == value;
  });
}

std::string Show(const v1::DescribeKeyResponse& described) {
  std::string out = absl::StrCat("converged=", described.converged());
  for (const v1::ReplicaView& view : described.replicas()) {
    absl::StrAppend(&out, " [", view.node_id(), view.reachable() ? "" : " unreachable",
                    view.error().empty() ? "" : " error=" + view.error(),
                    view.has_record() ? "" : " no record", ":");
    for (const v1::Sibling& s : view.siblings()) {
      absl::StrAppend(&out, " ", s.dot(), s.tombstone() ? "=<tombstone>" : "=" + s.value());
    }
    absl::StrAppend(&out, "]");
  }
  return out;
}

// True when every replica answered and holds exactly the live values `expected` (any order).
bool AllReplicasHoldExactly(const v1::DescribeKeyResponse& described,
                            std::vector<std::string> expected) {
  std::sort(expected.begin(), expected.end());
  if (described.replicas().empty()) return false;
  for (const v1::ReplicaView& view : described.replicas()) {
    if (!view.reachable() || LiveValues(view) != expected) return false;
  }
  return true;
}

// Problems found by several threads; reported together, a few at a time.
class Failures {
 public:
  void Add(std::string message) {
    absl::MutexLock lock(&mu_);
    if (messages_.size() < kMaxReported) messages_.push_back(std::move(message));
    ++count_;
  }
  size_t count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }
  std::string Summary() {
    absl::MutexLock lock(&mu_);
    return absl::StrCat(count_, " failure(s); first ", messages_.size(), ":\n  ",
                        absl::StrJoin(messages_, "\n  "));
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mu_);
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

// Runs fn(thread_index) on `threads` threads and joins them.
void RunThreads(int threads, const std::function<void(int)>& fn) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(fn, t);
  for (std::thread& thread : pool) thread.join();
}

// An acknowledged write: the version every replica must end up holding.
struct Acked {
  std::string dot;
  std::string value;
};

class ClusterTest : public ::testing::Test {
 protected:
  void StartCluster(int nodes, std::vector<std::string> extra_flags = {},
                    std::map<size_t, std::vector<std::string>> node_flags = {}) {
    testing::Cluster::Options options;
    options.nodes = nodes;
    options.extra_flags = std::move(extra_flags);
    options.node_flags = std::move(node_flags);
    StartCluster(std::move(options));
  }
  void StartCluster(testing::Cluster::Options options) {
    absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster =
        testing::Cluster::Start(std::move(options));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    for (size_t i = 0; i < cluster_->size(); ++i) {
      std::shared_ptr<grpc::Channel> channel = Connect(cluster_->endpoint(i));
      channels_.push_back(channel);
      kv_.push_back(v1::KV::NewStub(channel));
      admin_.push_back(v1::Admin::NewStub(channel));
      replica_.push_back(internal::v1::Replica::NewStub(channel));
    }
  }

  // Every node must still be running unless the test stopped it, shut down cleanly on SIGTERM
  // (which also runs LeakSanitizer in sanitizer builds), and have logged no sanitizer report.
  void TearDown() override {
    if (cluster_ == nullptr) return;
    const absl::Status stopped = cluster_->StopAll();
    EXPECT_TRUE(stopped.ok()) << stopped;
    const std::string reports = cluster_->SanitizerReports();
    EXPECT_TRUE(reports.empty()) << reports;
    if (HasFailure()) std::fprintf(stderr, "Node logs:\n%s\n", cluster_->LogTails().c_str());
  }

  // Restarts node i (same port and data directory) and waits until this test's own channel
  // to it is connected again, so that the next call does not fail fast on the old connection.
  absl::Status Restart(size_t i) {
    if (absl::Status restarted = cluster_->Restart(i); !restarted.ok()) return restarted;
    if (!channels_.at(i)->WaitForConnected(std::chrono::system_clock::now() +
                                           absl::ToChronoMilliseconds(kRpcTimeout))) {
      return absl::DeadlineExceededError(
          absl::StrCat("no connection to restarted ", cluster_->node_id(i)));
    }
    return absl::OkStatus();
  }

  size_t size() const { return cluster_->size(); }
  v1::KV::Stub* kv(size_t i) { return kv_.at(i).get(); }

  std::vector<std::string> ReplicasOf(const std::string& key, size_t via = 0) {
    v1::DescribeKeyResponse described;
    const grpc::Status status = DescribeKey(kv(via), key, &described);
    EXPECT_TRUE(status.ok()) << StatusText(status);
    return ReplicaIds(described);
  }

  absl::StatusOr<v1::ClusterStatusResponse> ClusterStatus(size_t i) {
    v1::ClusterStatusResponse response;
    const grpc::Status status =
        admin_.at(i)->ClusterStatus(Ctx().get(), v1::ClusterStatusRequest(), &response);
    if (!status.ok()) return absl::UnavailableError(StatusText(status));
    return response;
  }

  std::string Actor(size_t i) {
    v1::NodeStatusResponse response;
    const grpc::Status status =
        admin_.at(i)->NodeStatus(Ctx().get(), v1::NodeStatusRequest(), &response);
    EXPECT_TRUE(status.ok()) << StatusText(status);
    return response.actor();
  }

  // Polls DescribeKey (through node `via`) until every replica of every key in `acked` holds
  // its acknowledged version, or kConvergeTimeout passes. Returns a description of the keys
  // still missing somewhere (empty on success).
  std::string AwaitOnAllReplicas(const std::map<std::string, Acked>& acked, size_t via) {
    std::map<std::string, Acked> pending = acked;
    std::map<std::string, std::string> last_seen;
    PollUntil(kConvergeTimeout, [&] {
      for (auto it = pending.begin(); it != pending.end();) {
        v1::DescribeKeyResponse described;
        const grpc::Status status = DescribeKey(kv(via), it->first, &described);
        bool everywhere = status.ok() && !described.replicas().empty();
        for (const v1::ReplicaView& view : described.replicas()) {
          everywhere = everywhere && view.reachable() &&
                       HoldsVersion(view, it->second.dot, it->second.value);
        }
        if (everywhere) {
          last_seen.erase(it->first);
          it = pending.erase(it);
        } else {
          last_seen[it->first] = status.ok() ? Show(described) : StatusText(status);
          ++it;
        }
      }
      return pending.empty();
    });
    if (pending.empty()) return "";
    std::string out = absl::StrCat(pending.size(), " of ", acked.size(),
                                   " acknowledged writes are not on all replicas after ",
                                   absl::FormatDuration(kConvergeTimeout), "; first ones:");
    size_t shown = 0;
    for (const auto& [key, want] : pending) {
      if (shown++ == kMaxReported) break;
      absl::StrAppend(&out, "\n  ", key, " wants ", want.dot, "=", want.value, ": ",
                      last_seen[key]);
    }
    return out;
  }

  std::unique_ptr<testing::Cluster> cluster_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::KV::Stub>> kv_;
  std::vector<std::unique_ptr<v1::Admin::Stub>> admin_;
  std::vector<std::unique_ptr<internal::v1::Replica::Stub>> replica_;
};

class ClusterSizeTest : public ClusterTest, public ::testing::WithParamInterface<int> {};

std::string SizeName(const ::testing::TestParamInfo<int>& info) {
  return absl::StrCat(info.param, "Nodes");
}

// C3: a Put through node i of a key that never existed is at once readable through every node
// (the node asked first may not have it yet; it must ask the other replicas before NOT_FOUND).
TEST_P(ClusterSizeTest, NewKeyIsReadableThroughEveryNodeRightAfterItsPut) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(GetParam()));
  constexpr int kKeys = 1000;
  constexpr int kThreads = 4;
  Failures failures;
  std::atomic<int> gets{0};
  RunThreads(kThreads, [&](int t) {
    for (int i = t; i < kKeys; i += kThreads) {
      const std::string key = absl::StrCat("raw/", i);
      const std::string value = absl::StrCat("value ", i);
      const size_t writer = static_cast<size_t>(i) % size();
      const PutResult put = Put(kv(writer), key, value);
      if (!put.status.ok()) {
        failures.Add(
            absl::StrCat("Put ", key, " through n", writer + 1, ": ", StatusText(put.status)));
        continue;
      }
      for (size_t j = 0; j < size(); ++j) {
        const size_t reader = (writer + j) % size();
        v1::GetResponse got;
        const grpc::Status status = Get(kv(reader), key, &got);
        ++gets;
        if (!status.ok() || Values(got) != std::vector<std::string>{value}) {
          failures.Add(absl::StrCat(key, " written through n", writer + 1, ", read through n",
                                    reader + 1, ": ", status.ok() ? "" : StatusText(status),
                                    " values [", absl::StrJoin(Values(got), ", "), "]"));
        }
      }
    }
  });
  EXPECT_EQ(failures.count(), 0u) << failures.Summary();
  EXPECT_EQ(gets.load(), kKeys * GetParam());
}

// C1 + C2: one replica is killed with SIGKILL while writers are writing through every node, and
// restarted while they go on. Every acknowledged write (through any node, before, during or
// after the crash) ends up on all N replicas of its key within a bounded time.
TEST_P(ClusterSizeTest, AfterKill9AndRestartEveryAcknowledgedWriteIsOnAllReplicas) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(GetParam()));
  const size_t victim = size() - 1;
  const std::string victim_actor = Actor(victim);
  constexpr int kWritersPerNode = 2;
  const int writers = static_cast<int>(size()) * kWritersPerNode;

  absl::Mutex mu;
  std::map<std::string, Acked> acked;  // guarded by mu
  std::atomic<int> acked_count{0};
  std::atomic<bool> stop{false};
  Failures live_failures;  // writes through nodes that were never killed must all succeed
  std::atomic<int> victim_failures{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      const size_t node = static_cast<size_t>(w) % size();
      for (int i = 0; !stop.load() && i < 1'000'000; ++i) {
        const std::string key = absl::StrCat("crash/w", w, "/", i);
        const std::string value = absl::StrCat("writer ", w, " op ", i);
        PutArgs args;
        args.token = absl::StrCat("crash-token-", w, "-", i);
        const PutResult put = Put(kv(node), key, value, args);
        if (put.status.ok()) {
          absl::MutexLock lock(&mu);
          acked[key] = Acked{DotOf(put.response.write_id()), value};
          ++acked_count;
        } else if (node == victim) {
          ++victim_failures;  // unknown outcome: nothing promised
          absl::SleepFor(absl::Milliseconds(20));
        } else {
          live_failures.Add(
              absl::StrCat(key, " through n", node + 1, ": ", StatusText(put.status)));
        }
      }
    });
  }
  auto wait_for_acks = [&](int target) {
    return PollUntil(kConvergeTimeout, [&] { return acked_count.load() >= target; });
  };
  constexpr int kPhaseWrites = 300;
  bool progressed = wait_for_acks(kPhaseWrites);
  const int before_kill = acked_count.load();
  cluster_->Kill(victim);         // kill -9 in the middle of the writes
  int coordinated_by_victim = 0;  // acknowledged before the kill, stamped by the victim
  {
    absl::MutexLock lock(&mu);
    for (const auto& [key, version] : acked) {
      coordinated_by_victim += NodeOfDot(version.dot) == cluster_->node_id(victim);
    }
  }
  progressed = progressed && wait_for_acks(before_kill + kPhaseWrites);
  const int while_down = acked_count.load() - before_kill;
  const absl::Status restarted = Restart(victim);
  const int after_restart = acked_count.load();
  progressed = progressed && restarted.ok() && wait_for_acks(after_restart + kPhaseWrites);
  stop = true;
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_TRUE(progressed) << "writers stalled; acknowledged " << acked_count.load();
  EXPECT_EQ(live_failures.count(), 0u)
      << "writes through live nodes failed with one of N=3 replicas down: "
      << live_failures.Summary();
  EXPECT_GT(victim_failures.load(), 0) << "no write through the killed node failed: was it down?";
  EXPECT_GE(while_down, kPhaseWrites);
  EXPECT_GT(coordinated_by_victim, 0) << "the victim coordinated no write before its crash";

  // Same data directory: the restarted node keeps its actor (no new epoch, no reused dots).
  EXPECT_EQ(Actor(victim), victim_actor);

  std::map<std::string, Acked> snapshot;
  {
    absl::MutexLock lock(&mu);
    snapshot = acked;
  }
  const absl::Time verify_start = absl::Now();
  const std::string missing = AwaitOnAllReplicas(snapshot, /*via=*/0);
  EXPECT_TRUE(missing.empty()) << missing;
  std::fprintf(stderr,
               "%zu acknowledged writes (%d coordinated by %s before its kill, %d while it was "
               "down), %d failed through it; all on every replica after %s\n",
               snapshot.size(), coordinated_by_victim, cluster_->node_id(victim).c_str(),
               while_down, victim_failures.load(),
               absl::FormatDuration(absl::Now() - verify_start).c_str());
}

// Hinted handoff: a node is stopped before the writes start and returns after they end. The
// other replicas' outboxes hold its share (visible in ClusterStatus) and deliver all of it once
// it is back, then drain to zero. Nothing reads those keys meanwhile, so read repair cannot be
// what delivers them.
TEST_P(ClusterSizeTest, NodeDownDuringTheWholeWritePhaseHoldsEverythingAfterItReturns) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(GetParam()));
  const size_t down = 1;
  const std::string down_id = cluster_->node_id(down);
  absl::StatusOr<int> stopped = cluster_->Stop(down);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, 0) << "kvnode did not shut down cleanly on SIGTERM";

  constexpr int kKeys = 500;
  constexpr int kThreads = 4;
  std::vector<size_t> live;
  for (size_t i = 0; i < size(); ++i) {
    if (i != down) live.push_back(i);
  }
  absl::Mutex mu;
  std::map<std::string, Acked> acked;  // guarded by mu
  Failures failures;
  RunThreads(kThreads, [&](int t) {
    for (int i = t; i < kKeys; i += kThreads) {
      const std::string key = absl::StrCat("handoff/", i);
      const std::string value = absl::StrCat("handoff value ", i);
      const size_t node = live[static_cast<size_t>(i) % live.size()];
      PutArgs args;
      args.w = QuorumCount(2);
      const PutResult put = Put(kv(node), key, value, args);
      if (!put.status.ok()) {
        failures.Add(absl::StrCat(key, " through n", node + 1, ": ", StatusText(put.status)));
        continue;
      }
      absl::MutexLock lock(&mu);
      acked[key] = Acked{DotOf(put.response.write_id()), value};
    }
  });
  ASSERT_EQ(failures.count(), 0u) << failures.Summary();

  // Which keys the stopped node is a replica of (DescribeKey names every replica, reachable or
  // not); with N=3 of 3 nodes, all of them.
  std::map<std::string, Acked> owed;
  for (const auto& [key, version] : acked) {
    const std::vector<std::string> replicas = ReplicasOf(key);
    if (std::find(replicas.begin(), replicas.end(), down_id) != replicas.end()) {
      owed[key] = version;
    }
  }
  if (GetParam() == 3) {
    EXPECT_EQ(owed.size(), acked.size());
  }
  ASSERT_GT(owed.size(), 0u);

  // The live nodes hold the stopped node's share in their outboxes.
  uint64_t queued = 0;
  for (size_t i : live) {
    absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(i);
    ASSERT_TRUE(status.ok()) << status.status();
    for (const v1::MemberStatus& member : status->members()) {
      if (member.node_id() != down_id) continue;
      queued += member.outbox_depth();
      if (member.outbox_depth() > 0) {
        EXPECT_FALSE(member.reachable()) << cluster_->node_id(i);
      }
    }
  }
  EXPECT_GE(queued, owed.size()) << "outbox entries waiting for " << down_id;

  const absl::Time back = absl::Now();
  ASSERT_EQ(Restart(down), absl::OkStatus());
  // DescribeKey through the returned node reads its own replica locally.
  const std::string missing = AwaitOnAllReplicas(owed, /*via=*/down);
  EXPECT_TRUE(missing.empty()) << missing;
  std::fprintf(stderr, "%s caught up on %zu keys in %s\n", down_id.c_str(), owed.size(),
               absl::FormatDuration(absl::Now() - back).c_str());

  // And the outboxes toward it drain to zero.
  std::string outboxes;
  const bool drained = PollUntil(kConvergeTimeout, [&] {
    outboxes.clear();
    bool empty = true;
    for (size_t i : live) {
      absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(i);
      if (!status.ok()) return false;
      for (const v1::MemberStatus& member : status->members()) {
        if (member.node_id() != down_id) continue;
        absl::StrAppend(&outboxes, " ", cluster_->node_id(i), "->", down_id, ":",
                        member.outbox_depth(), member.reachable() ? "" : " (unreachable)");
        empty = empty && member.outbox_depth() == 0 && member.reachable();
      }
    }
    return empty;
  });
  EXPECT_TRUE(drained) << "outboxes toward " << down_id << ":" << outboxes;
}

INSTANTIATE_TEST_SUITE_P(Sizes, ClusterSizeTest, ::testing::Values(3, 5), SizeName);

// C4 then C2: an overwrite acknowledged by one replica (W=1) is visibly stale on the others
// while replication is held back (--fault_replication_delay=1s), then converges, and
// DescribeWrite goes from PENDING to REPLICATED.
TEST_F(ClusterTest, OverwriteIsStaleOnOtherReplicasThenConverges) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--fault_replication_delay=1s"}));
  const std::string key = "stale/key";
  PutArgs all;
  all.w = QuorumAll();
  const PutResult first = Put(kv(0), key, "old", all);
  ASSERT_TRUE(first.status.ok()) << StatusText(first.status);

  const std::vector<std::string> replicas = ReplicasOf(key);
  ASSERT_EQ(replicas.size(), 3u);
  const size_t writer = *cluster_->IndexOf(replicas[0]);
  v1::GetResponse got;
  ASSERT_TRUE(Get(kv(writer), key, &got).ok());
  ASSERT_THAT(Values(got), ElementsAre("old"));

  PutArgs overwrite;
  overwrite.context = got.context();
  overwrite.w = QuorumCount(1);
  const absl::Time written_at = absl::Now();
  const PutResult second = Put(kv(writer), key, "new", overwrite);
  ASSERT_TRUE(second.status.ok()) << StatusText(second.status);
  const std::string write_id = second.response.write_id();

  // Within the 1 s delay: the writer holds only "new", the other replicas only "old".
  v1::DescribeKeyResponse described;
  ASSERT_TRUE(DescribeKey(kv(writer), key, &described).ok());
  v1::DescribeWriteResponse status;
  ASSERT_TRUE(DescribeWrite(kv(writer), write_id, &status).ok());
  const absl::Duration observed_after = absl::Now() - written_at;
  ASSERT_LT(observed_after, absl::Seconds(1)) << "too slow to observe the stale window";
  EXPECT_FALSE(described.converged()) << Show(described);
  for (const v1::ReplicaView& view : described.replicas()) {
    EXPECT_TRUE(view.reachable()) << Show(described);
    if (view.node_id() == replicas[0]) {
      EXPECT_THAT(LiveValues(view), ElementsAre("new")) << Show(described);
    } else {
      EXPECT_THAT(LiveValues(view), ElementsAre("old")) << Show(described);
    }
  }
  EXPECT_EQ(status.state(), v1::DescribeWriteResponse::PENDING);
  ASSERT_EQ(status.replicas_size(), 3);
  for (const v1::ReplicaWriteState& replica : status.replicas()) {
    EXPECT_EQ(replica.applied(), replica.node_id() == replicas[0]) << replica.node_id();
  }

  // Then it converges: every replica holds "new" alone, and the write is REPLICATED.
  const bool converged = PollUntil(kConvergeTimeout, [&] {
    return DescribeKey(kv(writer), key, &described).ok() && described.converged() &&
           AllReplicasHoldExactly(described, {"new"});
  });
  EXPECT_TRUE(converged) << Show(described);
  const bool replicated = PollUntil(kConvergeTimeout, [&] {
    return DescribeWrite(kv(writer), write_id, &status).ok() &&
           status.state() == v1::DescribeWriteResponse::REPLICATED;
  });
  EXPECT_TRUE(replicated) << status.DebugString();
  for (const v1::ReplicaWriteState& replica : status.replicas()) {
    EXPECT_TRUE(replica.applied()) << replica.node_id();
  }
  for (size_t i = 0; i < size(); ++i) {
    ASSERT_TRUE(Get(kv(i), key, &got).ok());
    EXPECT_THAT(Values(got), ElementsAre("new")) << "through n" << i + 1;
  }
}

// C3 also holds for a key that was deleted: a Put on it (the key has no live version) is
// readable through every node right after its acknowledgement, also through a replica that
// holds only the tombstone so far (--fault_replication_delay=1s holds the Put back from it).
TEST_F(ClusterTest, APutOnADeletedKeyIsReadableThroughEveryNodeAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--fault_replication_delay=1s"}));
  const std::string key = "deleted/then-put";
  PutArgs all;
  all.w = QuorumAll();
  ASSERT_TRUE(Put(kv(0), key, "old", all).status.ok());
  const std::vector<std::string> replicas = ReplicasOf(key);
  ASSERT_EQ(replicas.size(), 3u);
  const size_t writer = *cluster_->IndexOf(replicas[0]);
  v1::DeleteRequest del;
  del.set_key(key);
  *del.mutable_w() = QuorumAll();
  v1::DeleteResponse deleted;
  ASSERT_TRUE(kv(writer)->Delete(Ctx().get(), del, &deleted).ok());
  v1::GetResponse got;
  for (size_t i = 0; i < size(); ++i) {
    EXPECT_EQ(Get(kv(i), key, &got).error_code(), grpc::StatusCode::NOT_FOUND) << "via " << i;
  }

  PutArgs one;
  one.w = QuorumCount(1);
  const absl::Time written_at = absl::Now();
  ASSERT_TRUE(Put(kv(writer), key, "new", one).status.ok());
  // The other replicas hold only the tombstone (and a Get's read repair would change that, so
  // this is looked at first).
  v1::DescribeKeyResponse described;
  ASSERT_TRUE(DescribeKey(kv(writer), key, &described).ok());
  EXPECT_FALSE(described.converged()) << Show(described);
  const size_t stale = *cluster_->IndexOf(replicas[1]);
  const grpc::Status through_stale = Get(kv(stale), key, &got);
  ASSERT_LT(absl::Now() - written_at, absl::Seconds(1)) << "too slow to observe the stale window";
  ASSERT_TRUE(through_stale.ok()) << "via a replica holding the tombstone: "
                                  << StatusText(through_stale);
  EXPECT_THAT(Values(got), ElementsAre("new"));
  for (size_t i = 0; i < size(); ++i) {
    const grpc::Status status = Get(kv(i), key, &got);
    ASSERT_TRUE(status.ok()) << "via n" << i + 1 << ": " << StatusText(status);
    EXPECT_THAT(Values(got), ElementsAre("new")) << "via n" << i + 1;
  }
}

// Nodes of different clusters exchange nothing. n3 runs with another --cluster_name and the
// same --peers, as a node of another cluster whose ids and addresses collide with this one's:
// it refuses n1's records and reads, n1 and n2 refuse its own, and each side says why.
TEST_F(ClusterTest, ANodeOfAnotherClusterNeitherSendsNorReceivesRecords) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {}, {{2, {"--cluster_name=other"}}}));
  constexpr int kKeys = 10;
  for (int i = 0; i < kKeys; ++i) {  // W=2: n1 and n2
    const PutResult put = Put(kv(0), absl::StrCat("ours/", i), "v");
    ASSERT_TRUE(put.status.ok()) << i << ": " << StatusText(put.status);
  }
  // n1 tried to replicate to n3 and was refused, naming the clusters. It keeps the writes for
  // n3 (an unreachable member, not records it gave up on).
  v1::MemberStatus n3;
  const bool refused = PollUntil(kConvergeTimeout, [&] {
    absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(0);
    if (!status.ok()) return false;
    for (const v1::MemberStatus& member : status->members()) {
      if (member.node_id() == "n3") n3 = member;
    }
    return absl::StrContains(n3.last_error(), "belongs to cluster");
  });
  EXPECT_TRUE(refused) << "n1's last error for n3: " << n3.last_error();
  EXPECT_FALSE(n3.reachable()) << n3.last_error();
  EXPECT_EQ(n3.outbox_dropped(), 0u) << n3.last_error();
  EXPECT_GT(n3.outbox_depth(), 0u) << n3.last_error();
  v1::DescribeKeyResponse described;
  ASSERT_TRUE(DescribeKey(kv(0), "ours/0", &described).ok());
  EXPECT_FALSE(described.converged()) << Show(described);
  for (const v1::ReplicaView& view : described.replicas()) {
    if (view.node_id() != "n3") continue;
    EXPECT_FALSE(view.reachable()) << Show(described);
    EXPECT_TRUE(absl::StrContains(view.error(), "belongs to cluster")) << view.error();
  }
  // n3 holds none of the keys (its own view, through itself).
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(DescribeKey(kv(2), absl::StrCat("ours/", i), &described).ok());
    for (const v1::ReplicaView& view : described.replicas()) {
      if (view.node_id() == "n3") {
        EXPECT_FALSE(view.has_record()) << Show(described);
      }
    }
  }
  // A write through n3 reaches no second replica: W=2 fails, stored on n3 only.
  const PutResult theirs = Put(kv(2), "theirs", "x");
  EXPECT_EQ(theirs.status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(theirs.status);
  for (size_t i : {0, 1}) {
    ASSERT_TRUE(DescribeKey(kv(i), "theirs", &described).ok());
    for (const v1::ReplicaView& view : described.replicas()) {
      if (view.node_id() != "n3") {
        EXPECT_FALSE(view.has_record()) << Show(described);
      }
    }
  }
}

// A write forwarded to a replica that another cluster's node now serves (N=1: the key's only
// replica, n2, runs with another --cluster_name) fails UNAVAILABLE with a message that names the
// likely cause, not only the last replica's refusal.
TEST_F(ClusterTest, AWriteWhoseReplicasAreAnotherClustersSaysSo) {
  testing::Cluster::Options options;
  options.nodes = 2;
  options.replication_factor = 1;
  options.write_quorum = 1;
  options.node_flags[1] = {"--cluster_name=other"};
  ASSERT_NO_FATAL_FAILURE(StartCluster(std::move(options)));
  std::string key;
  for (int i = 0; i < 100 && key.empty(); ++i) {
    const std::string candidate = absl::StrCat("elsewhere/", i);
    if (ReplicasOf(candidate) == std::vector<std::string>{"n2"}) key = candidate;
  }
  ASSERT_FALSE(key.empty()) << "no key of n2 among 100";
  const PutResult put = Put(kv(0), key, "v");
  EXPECT_EQ(put.status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(put.status);
  EXPECT_THAT(put.status.error_message(),
              ::testing::HasSubstr("in this node's membership answered as a node of another"));
  EXPECT_THAT(put.status.error_message(), ::testing::HasSubstr("belongs to cluster"));
}

// C5: a write's context names just its version while siblings remain. A write chained with it
// through a replica that has not received that version yet still replaces it on every replica
// (the replica hands the write to the one that made the version), and keeps the sibling it
// did not see.
TEST_F(ClusterTest, AWriteChainedFromAWritesContextReplacesThatVersionEverywhere) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--fault_replication_delay=1s"}));
  const std::string key = "chain/key";
  const std::vector<std::string> replicas = ReplicasOf(key);
  ASSERT_EQ(replicas.size(), 3u);
  const size_t maker = *cluster_->IndexOf(replicas[0]);
  const size_t other = *cluster_->IndexOf(replicas[1]);
  PutArgs one;
  one.w = QuorumCount(1);
  const PutResult x = Put(kv(maker), key, "x", one);
  ASSERT_TRUE(x.status.ok()) << StatusText(x.status);
  const PutResult y = Put(kv(maker), key, "y", one);  // no context: a sibling of x
  ASSERT_TRUE(y.status.ok()) << StatusText(y.status);
  PutArgs chained = one;
  chained.context = y.response.context();
  const PutResult z = Put(kv(other), key, "z", chained);  // `other` holds neither yet
  ASSERT_TRUE(z.status.ok()) << StatusText(z.status);

  v1::DescribeKeyResponse described;
  const bool converged = PollUntil(kConvergeTimeout, [&] {
    return DescribeKey(kv(other), key, &described).ok() && described.converged() &&
           AllReplicasHoldExactly(described, {"x", "z"});
  });
  EXPECT_TRUE(converged) << Show(described);
}

// A context is bound to the key it was read from: a Put or a Delete of another key with it is
// refused (INVALID_ARGUMENT) through any node, and the other key's versions, which share actors
// and counters with the ones the context saw, all stay.
TEST_F(ClusterTest, AContextReadFromOneKeyIsRefusedOnAnother) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3));
  for (const std::string key : {"bound/k1", "bound/k2"}) {
    for (size_t i = 0; i < 2; ++i) {  // n1's and n2's first writes of the key: siblings
      const PutResult put = Put(kv(i), key, absl::StrCat(key, " from n", i + 1));
      ASSERT_TRUE(put.status.ok()) << StatusText(put.status);
    }
  }
  // Contexts are bound once every member is known to read them (gossip: format level 3); until
  // a member's entry has arrived, it counts as one of the oldest level.
  v1::GetResponse k1;
  ASSERT_TRUE(PollUntil(kConvergeTimeout, [&] {
    return Get(kv(0), "bound/k1", &k1).ok() && k1.context().size() > 1 && k1.context()[1] == 3;
  })) << "the context of bound/k1 is not of version 3";
  for (size_t i = 0; i < size(); ++i) {
    PutArgs args;
    args.context = k1.context();
    const PutResult put = Put(kv(i), "bound/k2", "replaces nothing", args);
    EXPECT_EQ(put.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << "through n" << i + 1 << ": " << StatusText(put.status);
    EXPECT_THAT(put.status.error_message(), ::testing::HasSubstr("another key"));
    v1::DeleteRequest request;
    request.set_key("bound/k2");
    request.set_context(k1.context());
    v1::DeleteResponse response;
    const grpc::Status deleted = kv(i)->Delete(Ctx().get(), request, &response);
    EXPECT_EQ(deleted.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << StatusText(deleted);
  }
  const std::vector<std::string> both = {"bound/k2 from n1", "bound/k2 from n2"};
  v1::DescribeKeyResponse described;
  EXPECT_TRUE(PollUntil(kConvergeTimeout, [&] {
    return DescribeKey(kv(2), "bound/k2", &described).ok() &&
           AllReplicasHoldExactly(described, both);
  })) << Show(described);
  // The key's own context resolves it.
  v1::GetResponse k2;
  ASSERT_TRUE(Get(kv(2), "bound/k2", &k2).ok());
  EXPECT_THAT(Values(k2), UnorderedElementsAreArray(both));
  PutArgs args;
  args.context = k2.context();
  EXPECT_TRUE(Put(kv(1), "bound/k2", "resolved", args).status.ok());
}

// C5: Puts without context through different nodes are concurrent: every replica keeps all of
// them as siblings. A Put with the context of a Get that saw them all replaces them all, on
// every replica.
TEST_F(ClusterTest, ConcurrentWritesBecomeSiblingsAndTheMergedContextResolvesThem) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3));
  constexpr int kKeys = 10;
  auto key_of = [](int k) { return absl::StrCat("siblings/", k); };
  std::vector<std::string> expected;
  for (size_t i = 0; i < size(); ++i) expected.push_back(absl::StrCat("from n", i + 1));

  // One writer per node, all keys, started together.
  std::atomic<int> ready{0};
  Failures failures;
  RunThreads(static_cast<int>(size()), [&](int t) {
    ++ready;
    while (ready.load() < static_cast<int>(size())) std::this_thread::yield();
    for (int k = 0; k < kKeys; ++k) {
      const PutResult put = Put(kv(static_cast<size_t>(t)), key_of(k), expected[t]);
      if (!put.status.ok()) failures.Add(absl::StrCat(key_of(k), ": ", StatusText(put.status)));
    }
  });
  ASSERT_EQ(failures.count(), 0u) << failures.Summary();

  for (int k = 0; k < kKeys; ++k) {
    v1::DescribeKeyResponse described;
    const bool siblings = PollUntil(kConvergeTimeout, [&] {
      return DescribeKey(kv(0), key_of(k), &described).ok() &&
             AllReplicasHoldExactly(described, expected);
    });
    EXPECT_TRUE(siblings) << key_of(k) << ": " << Show(described);
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      ASSERT_TRUE(Get(kv(i), key_of(k), &got).ok());
      EXPECT_THAT(Values(got), UnorderedElementsAreArray(expected))
          << key_of(k) << " through n" << i + 1;
    }
  }

  // Resolve each key: read through one node, write the merge with its context through another.
  for (int k = 0; k < kKeys; ++k) {
    const size_t reader = static_cast<size_t>(k) % size();
    v1::GetResponse got;
    ASSERT_TRUE(Get(kv(reader), key_of(k), &got).ok());
    ASSERT_EQ(got.siblings_size(), static_cast<int>(size()));
    PutArgs args;
    args.context = got.context();
    const PutResult merged = Put(kv((reader + 1) % size()), key_of(k), "merged", args);
    ASSERT_TRUE(merged.status.ok()) << StatusText(merged.status);
  }
  for (int k = 0; k < kKeys; ++k) {
    v1::DescribeKeyResponse described;
    const bool resolved = PollUntil(kConvergeTimeout, [&] {
      return DescribeKey(kv(0), key_of(k), &described).ok() &&
             AllReplicasHoldExactly(described, {"merged"});
    });
    EXPECT_TRUE(resolved) << key_of(k) << ": " << Show(described);
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      ASSERT_TRUE(Get(kv(i), key_of(k), &got).ok());
      EXPECT_THAT(Values(got), ElementsAre("merged")) << key_of(k) << " through n" << i + 1;
    }
  }
}

// C6 across nodes. Replication is held back 1 s, so a retry through another node arrives
// before the first attempt's version does: two copies of one logical write meet on every
// replica, and Get shows one version. A third attempt, after convergence, is deduplicated.
// When a client overwrites one copy before the other arrives, the late copy does not come back;
// a token reused with another value keeps both values.
// Then the W-shortfall case: the first attempt's UNAVAILABLE says the write is stored
// (trailing metadata kv-write-stored); the retry through another node creates no second
// visible version either.
TEST_F(ClusterTest, PutRetriedThroughAnotherNodeWithTheSameTokenGivesOneVersion) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--fault_replication_delay=1s"}));
  {
    const std::string key = "retry/raced";
    PutArgs args;
    args.token = "token-raced";
    args.w = QuorumCount(1);
    const PutResult first = Put(kv(0), key, "once", args);
    ASSERT_TRUE(first.status.ok()) << StatusText(first.status);
    EXPECT_FALSE(first.response.deduplicated());
    const PutResult retry = Put(kv(1), key, "once", args);
    ASSERT_TRUE(retry.status.ok()) << StatusText(retry.status);
    std::fprintf(stderr, "retry before replication: %s (first %s, retry %s)\n",
                 retry.response.deduplicated() ? "deduplicated" : "a second copy",
                 first.response.write_id().c_str(), retry.response.write_id().c_str());

    v1::DescribeKeyResponse described;
    const bool converged = PollUntil(kConvergeTimeout, [&] {
      return DescribeKey(kv(2), key, &described).ok() && described.converged() &&
             described.replicas_size() == 3 &&
             std::all_of(described.replicas().begin(), described.replicas().end(),
                         [&](const v1::ReplicaView& view) {
                           return HoldsVersion(view, DotOf(first.response.write_id()), "once") &&
                                  HoldsVersion(view, DotOf(retry.response.write_id()), "once");
                         });
    });
    EXPECT_TRUE(converged) << Show(described);
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      ASSERT_TRUE(Get(kv(i), key, &got).ok());
      EXPECT_THAT(Values(got), ElementsAre("once")) << "through n" << i + 1;
    }
    const PutResult third = Put(kv(2), key, "once", args);
    ASSERT_TRUE(third.status.ok()) << StatusText(third.status);
    EXPECT_TRUE(third.response.deduplicated());
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      ASSERT_TRUE(Get(kv(i), key, &got).ok());
      EXPECT_THAT(Values(got), ElementsAre("once"))
          << "after the third attempt, through n" << i + 1;
    }
  }
  {
    // Issue 3, item 4: the retry's copy is overwritten (with the context the retry returned,
    // which saw only that copy) before the first attempt's copy reaches its node. The late copy
    // is the same logical write, already overwritten: it must not come back as a sibling.
    const std::string key = "retry/overwritten";
    PutArgs args;
    args.token = "token-overwritten";
    args.w = QuorumCount(1);
    const PutResult first = Put(kv(0), key, "once", args);
    ASSERT_TRUE(first.status.ok()) << StatusText(first.status);
    const PutResult retry = Put(kv(1), key, "once", args);
    ASSERT_TRUE(retry.status.ok()) << StatusText(retry.status);
    PutArgs overwrite;
    overwrite.context = retry.response.context();
    overwrite.token = "token-overwrite";
    overwrite.w = QuorumCount(1);
    const PutResult second = Put(kv(1), key, "twice", overwrite);
    ASSERT_TRUE(second.status.ok()) << StatusText(second.status);
    std::fprintf(stderr, "retry before replication: %s; overwrite %s\n",
                 retry.response.deduplicated() ? "deduplicated" : "a second copy",
                 second.response.write_id().c_str());

    v1::DescribeKeyResponse described;
    const bool converged = PollUntil(kConvergeTimeout, [&] {
      return DescribeKey(kv(2), key, &described).ok() && described.converged() &&
             described.replicas_size() == 3 && AllReplicasHoldExactly(described, {"twice"});
    });
    EXPECT_TRUE(converged) << Show(described);
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      ASSERT_TRUE(Get(kv(i), key, &got).ok());
      EXPECT_THAT(Values(got), ElementsAre("twice")) << "through n" << i + 1;
    }
    // A third attempt through the node that has not coordinated the token creates nothing.
    args.w.reset();
    const PutResult third = Put(kv(2), key, "once", args);
    ASSERT_TRUE(third.status.ok()) << StatusText(third.status);
    EXPECT_TRUE(third.response.deduplicated());
    v1::GetResponse got;
    ASSERT_TRUE(Get(kv(2), key, &got).ok());
    EXPECT_THAT(Values(got), ElementsAre("twice")) << "after the third attempt";
  }
  {
    // The same token wrongly reused with another value through two nodes that cannot see each
    // other's write yet: both are kept and shown, neither hides the other.
    const std::string key = "retry/reused";
    PutArgs args;
    args.token = "token-reused";
    args.w = QuorumCount(1);
    const PutResult a = Put(kv(0), key, "a", args);
    ASSERT_TRUE(a.status.ok()) << StatusText(a.status);
    const PutResult b = Put(kv(1), key, "b", args);
    if (b.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      std::fprintf(stderr, "n2 saw the first write before the reuse (machine too slow): %s\n",
                   StatusText(b.status).c_str());
    } else {
      ASSERT_TRUE(b.status.ok()) << StatusText(b.status);
      v1::DescribeKeyResponse described;
      const bool converged = PollUntil(kConvergeTimeout, [&] {
        return DescribeKey(kv(2), key, &described).ok() && described.converged() &&
               described.replicas_size() == 3 && AllReplicasHoldExactly(described, {"a", "b"});
      });
      EXPECT_TRUE(converged) << Show(described);
      for (size_t i = 0; i < size(); ++i) {
        v1::GetResponse got;
        ASSERT_TRUE(Get(kv(i), key, &got).ok());
        EXPECT_THAT(Values(got), UnorderedElementsAreArray({"a", "b"})) << "through n" << i + 1;
      }
    }
  }
  {
    // W=ALL with one replica down: the coordinator stores the write but answers UNAVAILABLE.
    const std::string key = "retry/shortfall";
    const size_t down = 2;
    ASSERT_TRUE(cluster_->Stop(down).ok()) << cluster_->node_id(down);
    PutArgs args;
    args.token = "token-shortfall";
    args.w = QuorumAll();
    const PutResult first = Put(kv(0), key, "stored", args);
    EXPECT_EQ(first.status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(first.status);
    EXPECT_TRUE(first.write_stored)
        << "no kv-write-stored trailing metadata on a W shortfall: " << StatusText(first.status);
    // The client retries through another node with the same token (and its default W).
    args.w.reset();
    const PutResult retry = Put(kv(1), key, "stored", args);
    ASSERT_TRUE(retry.status.ok()) << StatusText(retry.status);
    ASSERT_EQ(Restart(down), absl::OkStatus());

    v1::DescribeKeyResponse described;
    const bool converged = PollUntil(kConvergeTimeout, [&] {
      return DescribeKey(kv(down), key, &described).ok() && described.converged() &&
             described.replicas_size() == 3 &&
             std::all_of(described.replicas().begin(), described.replicas().end(),
                         [](const v1::ReplicaView& view) { return view.has_record(); });
    });
    EXPECT_TRUE(converged) << Show(described);
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      ASSERT_TRUE(Get(kv(i), key, &got).ok());
      EXPECT_THAT(Values(got), ElementsAre("stored")) << "through n" << i + 1;
    }
  }
}

// A client whose first endpoint is dead (killed) or hung (SIGSTOP) succeeds through the others.
TEST_F(ClusterTest, ClientWhoseFirstEndpointIsDeadSucceedsThroughTheOthers) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3));
  auto exercise = [&](const std::vector<std::string>& endpoints, const std::string& prefix,
                      int keys) {
    ClientOptions options;
    options.endpoints = endpoints;
    options.call_deadline = absl::Seconds(15);
    options.attempt_timeout = absl::Milliseconds(500);  // a hung endpoint costs one attempt
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    for (int k = 0; k < keys; ++k) {
      const std::string key = absl::StrCat(prefix, k);
      absl::StatusOr<WriteResult> put = (*client)->Put(key, "value " + key);
      ASSERT_TRUE(put.ok()) << key << ": " << put.status();
      absl::StatusOr<GetResult> got = (*client)->Get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status();
      ASSERT_EQ(got->siblings.size(), 1u) << key;
      EXPECT_EQ(got->siblings[0].value, "value " + key);
    }
  };

  cluster_->Kill(0);
  const absl::Time dead_start = absl::Now();
  exercise({cluster_->endpoint(0), cluster_->endpoint(1), cluster_->endpoint(2)}, "dead/", 20);
  std::fprintf(stderr, "first endpoint dead: 20 Put+Get in %s\n",
               absl::FormatDuration(absl::Now() - dead_start).c_str());
  if (HasFatalFailure()) return;

  ASSERT_EQ(Restart(0), absl::OkStatus());
  ASSERT_TRUE(cluster_->Pause(1));
  const absl::Time hung_start = absl::Now();
  // A hung endpoint is not known to be down: every call that starts there costs one attempt.
  exercise({cluster_->endpoint(1), cluster_->endpoint(2), cluster_->endpoint(0)}, "hung/", 5);
  std::fprintf(stderr, "first endpoint hung: 5 Put+Get in %s\n",
               absl::FormatDuration(absl::Now() - hung_start).c_str());
  cluster_->Resume(1);
}

// Without an attempt timeout, a client's calls on the open connection to a node that hangs
// (SIGSTOP) are not held for their whole deadline: the channel's keepalive ping goes unanswered,
// the connection closes, and the calls are retried on the other endpoints (before, each call that
// started there waited out its deadline and failed).
TEST_F(ClusterTest, AClientFailsOverFromAHungNodeWithoutAnAttemptTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--failure_timeout=10m"}));
  ClientOptions options;
  options.endpoints = {cluster_->endpoint(1), cluster_->endpoint(2), cluster_->endpoint(0)};
  options.call_deadline = absl::Seconds(20);
  options.keepalive_time = absl::Seconds(1);
  options.keepalive_timeout = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int k = 0; k < 6; ++k) {  // connections to every endpoint are open
    ASSERT_TRUE((*client)->Put(absl::StrCat("warm/", k), "v").ok()) << k;
  }
  ASSERT_TRUE(cluster_->Pause(1));
  absl::Duration slowest;
  for (int k = 0; k < 6; ++k) {
    const std::string key = absl::StrCat("hung/", k);
    const absl::Time start = absl::Now();
    absl::StatusOr<WriteResult> put = (*client)->Put(key, "v");
    const absl::Duration took = absl::Now() - start;
    slowest = std::max(slowest, took);
    EXPECT_TRUE(put.ok()) << key << ": " << put.status();
  }
  cluster_->Resume(1);
  std::fprintf(stderr, "slowest Put with a hung endpoint: %s\n",
               absl::FormatDuration(slowest).c_str());
  // A ping a second, unanswered for two: well under the 20 s deadline, with room for a loaded
  // machine.
  EXPECT_LT(slowest, absl::Seconds(12));
}

// SIGTERM ends a node within its drain and grace even when writes are still waiting for W
// acknowledgements that the outbox will not get soon (both peers hung, a backlog ahead of them):
// once the grace is over, the waiting writes are answered UNAVAILABLE (their outbox entries stay
// on disk) instead of holding the shutdown until the peers answer.
TEST_F(ClusterTest, ShutdownDoesNotWaitForWritesThatWaitOnHungPeers) {
  // Hung peers are never DOWN here (so writes wait for them rather than failing at once).
  ASSERT_NO_FATAL_FAILURE(
      StartCluster(3, {"--shutdown_drain=0s", "--shutdown_grace=500ms", "--failure_timeout=10m"}));
  absl::Mutex mu;  // before the client: its callbacks use them until it is destroyed
  std::vector<absl::Status> results;
  ClientOptions options;
  options.endpoints = {cluster_->endpoint(0)};
  options.call_deadline = absl::Seconds(120);
  options.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(cluster_->Pause(1));
  ASSERT_TRUE(cluster_->Pause(2));
  // A backlog for the hung peers, acknowledged by n1 alone: each batch of it then waits for the
  // peers' replication timeout before the next one is tried.
  WriteOptions w1;
  w1.w = Quorum::Count(1);
  for (int k = 0; k < 1500; ++k) {
    absl::StatusOr<WriteResult> put = (*client)->Put(absl::StrCat("backlog/", k), "v", w1);
    ASSERT_TRUE(put.ok()) << put.status();
  }
  // Writes that need a peer's acknowledgement: queued behind the backlog.
  constexpr int kWaiting = 10;
  for (int k = 0; k < kWaiting; ++k) {
    (*client)->PutAsync(absl::StrCat("waiting/", k), "v", WriteOptions(),
                        [&](absl::StatusOr<WriteResult> put) {
                          absl::MutexLock lock(&mu);
                          results.push_back(put.status());
                        });
  }
  absl::SleepFor(absl::Milliseconds(500));
  const absl::Time stop_start = absl::Now();
  absl::StatusOr<int> stopped = cluster_->Stop(0, absl::Seconds(15));
  ASSERT_TRUE(stopped.ok()) << stopped.status() << " after "
                            << absl::FormatDuration(absl::Now() - stop_start);
  EXPECT_EQ(*stopped, 0);
  std::fprintf(stderr, "stopped with writes waiting on hung peers in %s\n",
               absl::FormatDuration(absl::Now() - stop_start).c_str());
  {
    absl::MutexLock lock(&mu);
    mu.AwaitWithTimeout(
        absl::Condition(
            +[](std::vector<absl::Status>* r) { return r->size() == kWaiting; }, &results),
        absl::Seconds(30));
    ASSERT_EQ(results.size(), static_cast<size_t>(kWaiting));
    for (const absl::Status& status : results) {
      EXPECT_FALSE(status.ok());  // none was acknowledged without its W
      EXPECT_NE(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
    }
  }
  cluster_->Resume(1);
  cluster_->Resume(2);
  // The waiting writes were stored on n1 and reach the peers after it restarts.
  ASSERT_EQ(Restart(0), absl::OkStatus());
}

// A replica that hangs (SIGSTOP) while gossip does not yet report it DOWN: DescribeKey and
// DescribeWrite still answer within the caller's deadline, with that replica as unreachable
// (before, the node waited for it and the whole call missed the deadline, so `kvctl put --wait`
// could say nothing about where a write was).
TEST_F(ClusterTest, DescribeAnswersWithinTheCallersDeadlineWhileAReplicaHangs) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--failure_timeout=10m"}));
  const std::string key = "describe/hung";
  // On every replica before n3 hangs (W=2 would leave one replica still receiving it).
  PutArgs all;
  all.w.emplace();
  all.w->set_kind(v1::Quorum::ALL);
  const PutResult put = Put(kv(0), key, "v", all);
  ASSERT_TRUE(put.status.ok()) << put.status.error_message();
  ASSERT_TRUE(cluster_->Pause(2));
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second with the replica long hung
    const absl::Time start = absl::Now();
    v1::DescribeKeyRequest request;
    request.set_key(key);
    v1::DescribeKeyResponse described;
    const grpc::Status status =
        kv(0)->DescribeKey(Ctx(absl::Milliseconds(1800)).get(), request, &described);
    ASSERT_TRUE(status.ok()) << status.error_message();
    // Answered (so within the deadline: gRPC would have ended the call at it).
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(1800));
    ASSERT_EQ(described.replicas_size(), 3);
    int unreachable = 0;
    for (const v1::ReplicaView& replica : described.replicas()) {
      if (replica.reachable()) {
        EXPECT_TRUE(replica.has_record()) << replica.node_id();
        continue;
      }
      ++unreachable;
      EXPECT_EQ(replica.node_id(), "n3");
      // Its deadline, or (about 5 s into the pause) the keepalive ping n1's channel sent it going
      // unanswered, which closes the connection under the calls in flight.
      const std::string error = absl::AsciiStrToLower(replica.error());
      EXPECT_TRUE(absl::StrContains(error, "deadline") || absl::StrContains(error, "keepalive"))
          << replica.error();
    }
    EXPECT_EQ(unreachable, 1);

    v1::DescribeWriteRequest write_request;
    write_request.set_write_id(put.response.write_id());
    v1::DescribeWriteResponse write_state;
    const grpc::Status write_status =
        kv(0)->DescribeWrite(Ctx(absl::Milliseconds(1800)).get(), write_request, &write_state);
    ASSERT_TRUE(write_status.ok()) << write_status.error_message();
    EXPECT_EQ(write_state.replicas_size(), 3);
  }
  // An id of the same actor that was never issued: n1, whose actor it names, knows that alone,
  // while n3 does not answer. Another node still cannot tell it from a write only n3 may hold.
  const std::string issued = put.response.write_id();  // "n1#EPOCH:COUNTER/KEY"
  const size_t colon = issued.find(':');
  const size_t slash = issued.find('/');
  ASSERT_TRUE(colon != std::string::npos && slash != std::string::npos) << issued;
  uint64_t counter = 0;
  ASSERT_TRUE(absl::SimpleAtoi(issued.substr(colon + 1, slash - colon - 1), &counter)) << issued;
  const std::string never_issued =
      absl::StrCat(issued.substr(0, colon + 1), counter + 1000, issued.substr(slash));
  v1::DescribeWriteRequest never_request;
  never_request.set_write_id(never_issued);
  v1::DescribeWriteResponse never_state;
  const grpc::Status by_maker =
      kv(0)->DescribeWrite(Ctx(absl::Milliseconds(1800)).get(), never_request, &never_state);
  EXPECT_EQ(by_maker.error_code(), grpc::StatusCode::NOT_FOUND) << by_maker.error_message();
  EXPECT_TRUE(absl::StrContains(by_maker.error_message(), "node n1, whose actor the id names"))
      << by_maker.error_message();
  const grpc::Status by_other =
      kv(1)->DescribeWrite(Ctx(absl::Milliseconds(1800)).get(), never_request, &never_state);
  ASSERT_TRUE(by_other.ok()) << by_other.error_message();
  EXPECT_EQ(never_state.state(), v1::DescribeWriteResponse::PENDING);
  cluster_->Resume(2);
  // With every replica answering, any node says so.
  EXPECT_EQ(kv(1)->DescribeWrite(Ctx().get(), never_request, &never_state).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// `kvctl put --wait` times its --wait-timeout on the monotonic clock: a step of the wall clock
// forward during the wait (libfaketime; kvctl alone sees it) does not end the wait early. A
// replica paused for the whole wait keeps the write PENDING. (Before, the deadline was a
// wall-clock time: the wait ended at the step, and a step back would have stretched it by the
// step.)
TEST_F(ClusterTest, KvctlPutWaitTimesItsTimeoutOnTheMonotonicClock) {
  const std::string libfaketime = testing::LibfaketimePath();
  ASSERT_FALSE(libfaketime.empty()) << "libfaketimeMT.so.1 is missing: install Debian's "
                                       "faketime package (deploy/setup-deps.sh does)";
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--failure_timeout=10m"}));
  testing::TempDir dir;
  const std::string offset = dir.Sub("offset");
  // libfaketime reads the file at every call: replaced whole, never seen half written.
  auto set_offset = [&](const std::string& value) { testing::ReplaceFile(offset, value + "\n"); };
  set_offset("+0");
  std::map<std::string, std::string> env = testing::FaketimeEnv(libfaketime);
  env["FAKETIME_TIMESTAMP_FILE"] = offset;
  env["FAKETIME_NO_CACHE"] = "1";
  ASSERT_TRUE(cluster_->Pause(2));
  // The step comes well after kvctl has started waiting (it starts in a fraction of a second,
  // also under AddressSanitizer) and well before its timeout.
  constexpr absl::Duration kWaitTimeout = absl::Seconds(6);
  std::thread step([&] {
    absl::SleepFor(absl::Seconds(2));
    set_offset("+1h");
  });
  const absl::Time start = absl::Now();
  const testing::CommandResult put = testing::RunCommand(
      {KVCTL_PATH, "--endpoints=" + cluster_->endpoint(0), "put", "wait/step", "v", "--wait",
       absl::StrCat("--wait-timeout=", absl::FormatDuration(kWaitTimeout))},
      "", absl::Seconds(60), env);
  const absl::Duration took = absl::Now() - start;
  step.join();
  cluster_->Resume(2);
  EXPECT_TRUE(absl::StrContains(put.err + put.out, "was not on every replica within 6s"))
      << put.exit_code << put.out << put.err;
  EXPECT_GE(took, kWaitTimeout) << put.out << put.err;
  EXPECT_LT(took, kWaitTimeout + absl::Seconds(20)) << put.out << put.err;
}

// A forwarded write that waits for its W acknowledgements longer than the forwarding call's
// default 5 s (here write_ack_timeout=6s, with replication held back 10 s) still comes back as
// the coordinator's "stored" W shortfall through the forwarding node, not as a timeout there:
// the forwarding call waits write_ack_timeout and its sweep and 2 s more.
TEST_F(ClusterTest, AForwardedWritesShortfallOutlastsTheDefaultForwardTimeout) {
  testing::Cluster::Options options;
  options.nodes = 3;
  options.replication_factor = 2;
  options.write_quorum = 2;
  options.extra_flags = {"--fault_replication_delay=10s", "--write_ack_timeout=6s"};
  ASSERT_NO_FATAL_FAILURE(StartCluster(std::move(options)));
  std::string key;
  size_t through = 0;
  for (int k = 0; key.empty(); ++k) {
    const std::string candidate = absl::StrCat("slow-forward/", k);
    const std::vector<std::string> replicas = ReplicasOf(candidate);
    ASSERT_EQ(replicas.size(), 2u);
    for (size_t i = 0; i < size(); ++i) {
      if (std::find(replicas.begin(), replicas.end(), cluster_->node_id(i)) == replicas.end()) {
        key = candidate;
        through = i;
      }
    }
  }
  PutArgs args;
  args.token = "slow-forward-token";
  const absl::Time start = absl::Now();
  const PutResult put = Put(kv(through), key, "v", args);
  EXPECT_EQ(put.status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(put.status);
  EXPECT_TRUE(put.write_stored) << StatusText(put.status);
  EXPECT_GE(absl::Now() - start, absl::Seconds(5)) << StatusText(put.status);
}

// With 5 nodes and N=3, a write through one of the two nodes that are not replicas of the key
// is forwarded to a replica, which coordinates it: its dot is a replica's, the forwarding node
// stores nothing, and the key is readable through every node.
TEST_F(ClusterTest, WriteThroughANonReplicaIsForwardedAndReadable) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(5));
  constexpr int kKeys = 50;
  uint64_t forwarded_before = 0;
  for (size_t i = 0; i < size(); ++i) {
    absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(i);
    ASSERT_TRUE(status.ok()) << status.status();
    forwarded_before += status->writes_forwarded();
  }
  for (int k = 0; k < kKeys; ++k) {
    const std::string key = absl::StrCat("forward/", k);
    const std::vector<std::string> replicas = ReplicasOf(key);
    ASSERT_EQ(replicas.size(), 3u) << key;
    std::vector<size_t> others;
    for (size_t i = 0; i < size(); ++i) {
      if (std::find(replicas.begin(), replicas.end(), cluster_->node_id(i)) == replicas.end()) {
        others.push_back(i);
      }
    }
    ASSERT_EQ(others.size(), 2u) << key;
    const size_t through = others[static_cast<size_t>(k) % others.size()];
    const std::string value = "forwarded " + key;
    PutArgs args;
    args.token = "forward-token-" + key;
    const PutResult put = Put(kv(through), key, value, args);
    ASSERT_TRUE(put.status.ok()) << key << " through n" << through + 1 << ": "
                                 << StatusText(put.status);
    const std::string coordinator = NodeOfDot(DotOf(put.response.write_id()));
    EXPECT_THAT(replicas, ::testing::Contains(coordinator))
        << key << " was coordinated by " << coordinator;
    for (size_t i = 0; i < size(); ++i) {
      v1::GetResponse got;
      const grpc::Status status = Get(kv(i), key, &got);
      ASSERT_TRUE(status.ok()) << key << " through n" << i + 1 << ": " << StatusText(status);
      EXPECT_THAT(Values(got), ElementsAre(value)) << key << " through n" << i + 1;
    }
    for (size_t i : others) {
      internal::v1::ReadRecordRequest request;
      request.set_key(key);
      internal::v1::ReadRecordResponse record;
      ASSERT_TRUE(replica_.at(i)->ReadRecord(Ctx().get(), request, &record).ok());
      EXPECT_FALSE(record.found()) << key << " is stored on non-replica n" << i + 1;
    }
  }
  uint64_t forwarded_after = 0;
  for (size_t i = 0; i < size(); ++i) {
    absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(i);
    ASSERT_TRUE(status.ok()) << status.status();
    forwarded_after += status->writes_forwarded();
  }
  EXPECT_GE(forwarded_after - forwarded_before, static_cast<uint64_t>(kKeys));

  // A forwarded write that falls short of W (W=ALL with a replica down) comes back UNAVAILABLE
  // marked kv-write-stored through the forwarding node; the retry with the same token through
  // the other non-replica is forwarded to the same coordinator, which deduplicates it.
  const std::string key = "forward/shortfall";
  const std::vector<std::string> replicas = ReplicasOf(key);
  ASSERT_EQ(replicas.size(), 3u);
  std::vector<size_t> others;
  for (size_t i = 0; i < size(); ++i) {
    if (std::find(replicas.begin(), replicas.end(), cluster_->node_id(i)) == replicas.end()) {
      others.push_back(i);
    }
  }
  ASSERT_EQ(others.size(), 2u);
  const size_t down = *cluster_->IndexOf(replicas[2]);
  ASSERT_TRUE(cluster_->Stop(down).ok()) << cluster_->node_id(down);
  PutArgs args;
  args.token = "forward-shortfall-token";
  args.w = QuorumAll();
  const PutResult first = Put(kv(others[0]), key, "stored", args);
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(first.status);
  EXPECT_TRUE(first.write_stored) << "no kv-write-stored trailing metadata through the "
                                  << "forwarding node: " << StatusText(first.status);
  args.w.reset();
  const PutResult retry = Put(kv(others[1]), key, "stored", args);
  ASSERT_TRUE(retry.status.ok()) << StatusText(retry.status);
  EXPECT_TRUE(retry.response.deduplicated());
  for (size_t i = 0; i < size(); ++i) {
    if (i == down) continue;
    v1::GetResponse got;
    const grpc::Status status = Get(kv(i), key, &got);
    ASSERT_TRUE(status.ok()) << "through n" << i + 1 << ": " << StatusText(status);
    EXPECT_THAT(Values(got), ElementsAre("stored")) << "through n" << i + 1;
  }
}

}  // namespace
}  // namespace kv

namespace kv {
namespace {

// Issue 4: a replica whose data directory is wiped while it is stopped gets everything back from
// Merkle anti-entropy alone: the writes were fully replicated before the wipe, so no outbox entry
// waits for it, and nothing reads the keys (no read repair).
TEST_F(ClusterTest, AntiEntropyRestoresAReplicaWhoseDataDirectoryWasWiped) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, {"--anti_entropy_interval=300ms"}));
  std::map<std::string, Acked> acked;
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("wiped/", i);
    const std::string value = absl::StrCat("v", i);
    PutResult put = Put(kv(i % 2), key, value, PutArgs{"", "", QuorumAll()});
    ASSERT_TRUE(put.status.ok()) << key << ": " << StatusText(put.status);
    acked[key] = Acked{DotOf(put.response.write_id()), value};
  }
  const size_t victim = 2;
  absl::StatusOr<int> stopped = cluster_->Stop(victim);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  std::error_code ec;
  std::filesystem::remove_all(cluster_->data_dir(victim), ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(Restart(victim).ok());
  const std::string missing = AwaitOnAllReplicas(acked, victim);
  EXPECT_TRUE(missing.empty()) << missing;

  // The repair is anti-entropy's: the victim's peers report repaired keys.
  uint64_t repaired = 0;
  for (size_t i = 0; i < size(); ++i) {
    absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(i);
    ASSERT_TRUE(status.ok()) << status.status();
    for (const v1::MemberStatus& member : status->members()) {
      repaired += member.anti_entropy_keys_repaired();
    }
  }
  EXPECT_GE(repaired, acked.size());
}

// Issue 4 (C8): a replica that was down while keys were deleted, and stayed down past the
// tombstone minimum age, comes back with the old live values. The tombstones are not purged while
// it cannot confirm them; once it is back it receives them, the purge then happens, and no
// deleted key comes back through any node, before or after the purge.
TEST_F(ClusterTest, ReplicaDownPastTheTombstoneMinimumAgeDoesNotBringDeletedKeysBack) {
  ASSERT_NO_FATAL_FAILURE(
      StartCluster(3, {"--anti_entropy_interval=300ms", "--tombstone_min_age=1s",
                       "--tombstone_confirm_delay=5s", "--tombstone_sweep_interval=200ms"}));
  constexpr int kKeys = 60;
  auto key_of = [](int i) { return absl::StrCat("gone/", i); };
  for (int i = 0; i < kKeys; ++i) {
    PutResult put = Put(kv(0), key_of(i), "old", PutArgs{"", "", QuorumAll()});
    ASSERT_TRUE(put.status.ok()) << key_of(i) << ": " << StatusText(put.status);
  }
  const size_t absent = 2;
  absl::StatusOr<int> stopped = cluster_->Stop(absent);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  for (int i = 0; i < kKeys; ++i) {
    v1::GetResponse got;
    ASSERT_TRUE(Get(kv(i % 2), key_of(i), &got).ok()) << key_of(i);
    v1::DeleteRequest request;
    request.set_key(key_of(i));
    request.set_context(got.context());  // replaces what it read: the key is deleted
    v1::DeleteResponse response;
    const grpc::Status status = kv(i % 2)->Delete(Ctx().get(), request, &response);
    ASSERT_TRUE(status.ok()) << key_of(i) << ": " << StatusText(status);
  }
  // Well past the minimum age, the confirm delay and several sweeps: nothing may be purged
  // while n3 is away.
  absl::SleepFor(absl::Seconds(9));
  auto purged = [&] {
    uint64_t total = 0;
    for (size_t i = 0; i < size(); ++i) {
      absl::StatusOr<v1::ClusterStatusResponse> status = ClusterStatus(i);
      if (status.ok()) total += status->tombstones_purged();
    }
    return total;
  };
  EXPECT_EQ(purged(), 0u) << "a tombstone was purged while a replica could not confirm it";

  ASSERT_TRUE(Restart(absent).ok());
  // Every node answers NOT_FOUND for every key, and no replica keeps a live value, once the
  // tombstones reached n3 (outbox and anti-entropy)...
  auto nothing_live = [&](std::string* why) {
    for (int i = 0; i < kKeys; ++i) {
      v1::DescribeKeyResponse described;
      const grpc::Status status = DescribeKey(kv(0), key_of(i), &described);
      if (!status.ok()) {
        *why = absl::StrCat(key_of(i), ": ", StatusText(status));
        return false;
      }
      for (const v1::ReplicaView& view : described.replicas()) {
        if (!view.reachable() || !LiveValues(view).empty()) {
          *why = absl::StrCat(key_of(i), ": ", Show(described));
          return false;
        }
      }
    }
    return true;
  };
  std::string why;
  EXPECT_TRUE(PollUntil(kConvergeTimeout, [&] { return nothing_live(&why); })) << why;
  auto all_not_found = [&] {
    for (size_t node = 0; node < size(); ++node) {
      for (int i = 0; i < kKeys; ++i) {
        v1::GetResponse got;
        const grpc::Status status = Get(kv(node), key_of(i), &got);
        EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND)
            << key_of(i) << " through n" << node + 1 << ": " << StatusText(status) << " "
            << absl::StrJoin(Values(got), ",");
      }
    }
  };
  all_not_found();
  // ...and after the tombstones are purged (every replica now confirms them), nothing comes back
  // either: a later anti-entropy round finds the replicas in agreement.
  EXPECT_TRUE(PollUntil(kConvergeTimeout, [&] { return purged() >= kKeys; }))
      << "purged " << purged() << " of " << kKeys;
  absl::SleepFor(absl::Seconds(1));  // a few more anti-entropy rounds
  EXPECT_TRUE(nothing_live(&why)) << why;
  all_not_found();
}

}  // namespace
}  // namespace kv

// C1 on one node: every acknowledged write survives kill -9 of kvnode, over several rounds of
// crash and restart on the same data directory. Writers keep running while the node is killed,
// so some writes are in flight (unacknowledged) at the crash: those may or may not survive, but
// every acknowledged one must, with its value.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "tests/test_util.h"

namespace kv {
namespace {

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return context;
}

// What the writers know about each key: the acknowledged value and context, and values of
// writes whose outcome is unknown because the node died under them.
struct KeyState {
  std::string acked_value;
  std::string acked_context;
  std::set<std::string> maybe_values;
};

class Oracle {
 public:
  void Ack(const std::string& key, const std::string& value, const std::string& context) {
    absl::MutexLock lock(&mu_);
    KeyState& state = keys_[key];
    state.acked_value = value;
    state.acked_context = context;
    state.maybe_values.clear();
    ++acked_;
  }
  void Unknown(const std::string& key, const std::string& value) {
    absl::MutexLock lock(&mu_);
    keys_[key].maybe_values.insert(value);
  }
  int acked() {
    absl::MutexLock lock(&mu_);
    return acked_;
  }
  std::map<std::string, KeyState> Snapshot() {
    absl::MutexLock lock(&mu_);
    return keys_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, KeyState> keys_ ABSL_GUARDED_BY(mu_);
  int acked_ ABSL_GUARDED_BY(mu_) = 0;
};

// Writes new keys of this round, and overwrites (with their context) keys of earlier rounds,
// until the node stops answering.
void WriteUntilFailure(v1::KV::Stub* kv, int round, int writer, int writers,
                       const std::map<std::string, KeyState>& earlier, Oracle* oracle) {
  auto earlier_it = earlier.begin();
  for (int i = 0; i < writer && earlier_it != earlier.end(); ++i) ++earlier_it;
  for (int i = 0;; ++i) {
    v1::PutRequest put;
    const bool overwrite = i % 4 == 3 && earlier_it != earlier.end();
    if (overwrite) {
      put.set_key(earlier_it->first);
      put.set_context(earlier_it->second.acked_context);
      for (int step = 0; step < writers && earlier_it != earlier.end(); ++step) ++earlier_it;
    } else {
      put.set_key(absl::StrCat("r", round, "/w", writer, "/", i));
    }
    put.set_value(absl::StrCat("round ", round, " writer ", writer, " op ", i));
    v1::PutResponse response;
    const grpc::Status status = kv->Put(Ctx().get(), put, &response);
    if (!status.ok()) {
      oracle->Unknown(put.key(), put.value());
      return;
    }
    oracle->Ack(put.key(), put.value(), response.context());
  }
}

// Checks every key the oracle knows; returns how many were checked.
int VerifyAll(v1::KV::Stub* kv, const std::map<std::string, KeyState>& keys) {
  int checked = 0;
  for (const auto& [key, state] : keys) {
    v1::GetRequest get;
    get.set_key(key);
    v1::GetResponse got;
    const grpc::Status status = kv->Get(Ctx().get(), get, &got);
    if (state.acked_value.empty()) continue;  // never acknowledged: nothing promised
    ++checked;
    EXPECT_TRUE(status.ok()) << key << ": " << status.error_message();
    if (!status.ok()) continue;
    // The acknowledged version, or a later write to the key whose ack was lost in the crash.
    bool found = false;
    for (const v1::Sibling& s : got.siblings()) {
      found = found || s.value() == state.acked_value || state.maybe_values.count(s.value()) > 0;
    }
    EXPECT_TRUE(found) << key << " lost its acknowledged value \"" << state.acked_value << "\"";
  }
  return checked;
}

// Parameters: sync_writes, and commit_on_executor (writes committed on the executor rather than
// on the gRPC thread that receives them).
class CrashRecoveryTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(CrashRecoveryTest, AcknowledgedWritesSurviveKill9) {
  const bool sync_writes = std::get<0>(GetParam());
  const bool commit_on_executor = std::get<1>(GetParam());
  const int writes_per_round = sync_writes ? 1000 : 3000;
  constexpr int kRounds = 3;
  constexpr int kWriters = 4;
  testing::TempDir dir;
  testing::NodeProcess::Options options;
  options.data_dir = dir.Sub("n1");
  if (sync_writes) options.extra_flags.push_back("--sync_writes");
  if (commit_on_executor) options.extra_flags.push_back("--commit_on_executor=true");
  absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();
  auto admin =
      v1::Admin::NewStub(grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials()));
  v1::NodeStatusResponse status;
  ASSERT_TRUE(admin->NodeStatus(Ctx().get(), v1::NodeStatusRequest(), &status).ok());
  const std::string actor = status.actor();

  Oracle oracle;
  for (int round = 0; round < kRounds; ++round) {
    auto kv =
        v1::KV::NewStub(grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials()));
    const std::map<std::string, KeyState> earlier = oracle.Snapshot();
    const int target = oracle.acked() + writes_per_round;
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back(
          [&, w] { WriteUntilFailure(kv.get(), round, w, kWriters, earlier, &oracle); });
    }
    while (oracle.acked() < target) absl::SleepFor(absl::Milliseconds(2));
    node->process().Kill();  // SIGKILL while the writers are still writing
    for (std::thread& t : writers) t.join();

    ASSERT_TRUE(node->KillAndRestart().ok()) << node->process().Stderr();
    kv = v1::KV::NewStub(grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials()));
    const int checked = VerifyAll(kv.get(), oracle.Snapshot());
    EXPECT_GE(checked, (round + 1) * writes_per_round * 3 / 4) << "round " << round;
    if (HasFailure()) break;
  }

  // Same data directory, same incarnation: the actor (node id and epoch) is kept.
  admin =
      v1::Admin::NewStub(grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(admin->NodeStatus(Ctx().get(), v1::NodeStatusRequest(), &status).ok());
  EXPECT_EQ(status.actor(), actor);
}

INSTANTIATE_TEST_SUITE_P(SyncWrites, CrashRecoveryTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& info) {
                           return std::string(std::get<0>(info.param) ? "Sync" : "NoSync") +
                                  (std::get<1>(info.param) ? "CommitOnExecutor" : "");
                         });

}  // namespace
}  // namespace kv

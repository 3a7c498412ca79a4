// A rolling upgrade with real kvnode processes on loopback: a member that says it reads only
// format level 1 (--fault_format_level=1, as a node built before format levels would appear to
// the others; storage/format_level.h) gets only what it reads, and once it is upgraded
// (restarted at the current level) the cluster goes back to the current formats:
//   - contexts handed to clients, through any node, carry no tokened versions;
//   - it reads the other replicas' records (R=ALL) in a form it reads;
//   - records replicated to it carry no replaced-write memory, while the other replicas keep it,
//     and it still converges on the same versions (it is down while the keys are written, so
//     that it receives only their final records: the node under test runs this build, and its
//     own merges would otherwise remember what the writes replaced);
//   - after its upgrade, contexts carry tokened versions again and its records get the memory.
// The stand-in runs this build but refuses, as an older node does, what it says it cannot read
// (version-2 contexts in writes, records with replaced writes merged or read from peers).
// Every wait is a poll with a deadline; every loop is bounded.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "replica.grpc.pb.h"
#include "storage/format_level.h"
#include "storage/record_codec.h"
#include "storage/version_vector.h"
#include "tests/cluster_util.h"

namespace kv {
namespace {

constexpr absl::Duration kWait = absl::Seconds(20);
constexpr absl::Duration kPoll = absl::Milliseconds(50);

class RollingUpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::Cluster::Options options;
    options.nodes = 3;
    options.extra_flags = {"--gossip_interval=100ms", "--shutdown_drain=0s"};
    options.node_flags[2] = {"--fault_format_level=1"};
    absl::StatusOr<std::unique_ptr<testing::Cluster>> cluster = testing::Cluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    for (size_t i = 0; i < cluster_->size(); ++i) {
      ClientOptions client_options;
      client_options.endpoints = {cluster_->endpoint(i)};
      client_options.call_deadline = absl::Seconds(10);
      absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(client_options);
      ASSERT_TRUE(client.ok()) << client.status();
      clients_.push_back(*std::move(client));
    }
  }

  void TearDown() override {
    if (cluster_ == nullptr) return;
    clients_.clear();
    const absl::Status stopped = cluster_->StopAll();
    EXPECT_TRUE(stopped.ok()) << stopped;
    const std::string reports = cluster_->SanitizerReports();
    EXPECT_TRUE(reports.empty()) << reports;
    if (HasFailure()) std::fprintf(stderr, "Node logs:\n%s\n", cluster_->LogTails().c_str());
  }

  // How many tokened versions an encoded context carries.
  static size_t Tokened(const std::string& context) {
    absl::StatusOr<CausalContext> decoded = CausalContext::Decode(context);
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return decoded.ok() ? decoded->tokened().size() : 0;
  }

  // Node i's own record of `key` (the replica service's local read).
  absl::StatusOr<SiblingSet> RecordOn(size_t i, const std::string& key) {
    auto stub = internal::v1::Replica::NewStub(
        grpc::CreateChannel(cluster_->endpoint(i), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    internal::v1::ReadRecordRequest request;
    request.set_key(key);
    request.set_reader_format_level(kFormatLevel);  // the record as stored
    internal::v1::ReadRecordResponse response;
    const grpc::Status status = stub->ReadRecord(&context, request, &response);
    if (!status.ok()) return absl::UnavailableError(status.error_message());
    if (!response.found()) return absl::NotFoundError(key);
    return DecodeSiblingSet(response.record());
  }

  // Writes `key` twice, the second time with the first's context (so that the first, which
  // carries the client's token, is replaced); returns the second write's context.
  std::string Overwrite(size_t via, const std::string& key) {
    absl::StatusOr<WriteResult> first = clients_[via]->Put(key, "first");
    EXPECT_TRUE(first.ok()) << first.status();
    if (!first.ok()) return "";
    WriteOptions options;
    options.context = first->context;
    absl::StatusOr<WriteResult> second = clients_[via]->Put(key, "second", options);
    EXPECT_TRUE(second.ok()) << second.status();
    return second.ok() ? second->context : "";
  }

  // Polls until node i holds the same versions of `key` as node 0; returns its record.
  absl::StatusOr<SiblingSet> ConvergedRecordOn(size_t i, const std::string& key) {
    const absl::Time deadline = absl::Now() + kWait;
    absl::Status last = absl::DeadlineExceededError("never read");
    while (absl::Now() < deadline) {
      absl::StatusOr<SiblingSet> reference = RecordOn(0, key);
      absl::StatusOr<SiblingSet> record = RecordOn(i, key);
      if (reference.ok() && record.ok() && reference->siblings() == record->siblings() &&
          reference->context() == record->context()) {
        return record;
      }
      last = record.ok() ? absl::DeadlineExceededError(absl::StrCat(
                               "n", i + 1, " holds ", record->ToString(), ", n1 holds ",
                               reference.ok() ? reference->ToString() : "nothing"))
                         : record.status();
      absl::SleepFor(kPoll);
    }
    return last;
  }

  // Polls until a fresh overwrite through every node returns a context with (or without)
  // tokened versions, i.e. until gossip has told every node every member's level.
  bool AwaitContextsWithTokened(bool want, const std::string& prefix) {
    const absl::Time deadline = absl::Now() + kWait;
    for (size_t via = 0; via < cluster_->size(); ++via) {
      for (int i = 0;; ++i) {
        if ((Tokened(Overwrite(via, absl::StrCat(prefix, via, "/", i))) > 0) == want) break;
        if (absl::Now() > deadline) return false;
        absl::SleepFor(kPoll);
      }
    }
    return true;
  }

  // Overwrites `keys` through node 0 while node 2 is stopped, so that node 2 receives only each
  // key's final record when it is back (the outbox sends the current record), then waits until
  // it holds the same versions as node 0; returns node 2's records.
  std::vector<SiblingSet> OverwriteWhileNode2IsDown(const std::vector<std::string>& keys) {
    std::vector<SiblingSet> records;
    EXPECT_TRUE(cluster_->Stop(2).ok());
    for (const std::string& key : keys) Overwrite(0, key);
    EXPECT_TRUE(cluster_->Restart(2).ok());
    for (const std::string& key : keys) {
      absl::StatusOr<SiblingSet> coordinator = RecordOn(0, key);
      EXPECT_TRUE(coordinator.ok()) << coordinator.status();
      if (coordinator.ok()) {
        EXPECT_FALSE(coordinator->replaced_writes().empty())
            << key << ": the coordinator remembers the replaced write: " << coordinator->ToString();
      }
      absl::StatusOr<SiblingSet> record = ConvergedRecordOn(2, key);
      EXPECT_TRUE(record.ok()) << record.status();
      if (record.ok()) records.push_back(*std::move(record));
    }
    return records;
  }

  std::unique_ptr<testing::Cluster> cluster_;
  std::vector<std::unique_ptr<Client>> clients_;
};

TEST_F(RollingUpgradeTest, AnOlderMemberGetsOnlyWhatItReadsUntilItIsUpgraded) {
  ASSERT_TRUE(AwaitContextsWithTokened(false, "probe-old/"))
      << "contexts still carry tokened versions with a level-1 member";
  for (int k = 0; k < 6; ++k) {
    const std::string key = absl::StrCat("contexts/", k);
    const size_t via = static_cast<size_t>(k) % cluster_->size();
    EXPECT_EQ(Tokened(Overwrite(via, key)), 0u) << key << " through n" << via + 1;
    for (size_t i = 0; i < cluster_->size(); ++i) {
      absl::StatusOr<GetResult> got = clients_[i]->Get(key);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(Tokened(got->context), 0u) << key << " read through n" << i + 1;
    }
  }
  for (const SiblingSet& record : OverwriteWhileNode2IsDown({"records/1", "records/2"})) {
    EXPECT_TRUE(record.replaced_writes().empty()) << "sent to n3 at level 1: " << record.ToString();
  }
  // n3 reads the other replicas' records (they remember replaced writes) in a form it reads; n1
  // reading every replica finds that n3 holds all it can, and repairs nothing.
  ReadOptions all;
  all.r = Quorum::All();
  absl::StatusOr<ClusterStatusResult> before = clients_[0]->ClusterStatus();
  ASSERT_TRUE(before.ok()) << before.status();
  for (const std::string key : {"records/1", "records/2"}) {
    for (size_t via : {2, 0}) {
      absl::StatusOr<GetResult> got = clients_[via]->Get(key, all);
      ASSERT_TRUE(got.ok()) << key << " read through n" << via + 1
                            << " from every replica: " << got.status();
      ASSERT_EQ(got->siblings.size(), 1u);
      EXPECT_EQ(got->siblings[0].value, "second");
    }
  }
  absl::StatusOr<ClusterStatusResult> after = clients_[0]->ClusterStatus();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->read_repairs, before->read_repairs);

  // The upgrade: n3 restarts at the current level.
  ASSERT_TRUE(cluster_->Stop(2).ok());
  cluster_->SetNodeFlags(2, {});
  ASSERT_TRUE(cluster_->Restart(2).ok());
  ASSERT_TRUE(AwaitContextsWithTokened(true, "probe-new/"))
      << "contexts carry no tokened versions after every member was upgraded";
  for (const SiblingSet& record : OverwriteWhileNode2IsDown({"records/3", "records/4"})) {
    EXPECT_FALSE(record.replaced_writes().empty())
        << "sent to n3 at level 2: " << record.ToString();
  }
}

}  // namespace
}  // namespace kv

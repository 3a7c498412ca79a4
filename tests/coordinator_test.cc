// Coordinator, on its own: a real LocalStore and ReplicationOutbox over a MemoryEngine, the
// deterministic executor and scheduler of tests/manual_scheduler.h, and a peer transport whose
// replication batches the test confirms or fails by hand. Covers W counting (acknowledged once W
// replicas hold a write, answered once, UNAVAILABLE marked stored when W cannot be reached), the
// recount against a placement installed while a write waits, forwarding from a non-replica, and
// the read rules (own replica first, widening before NOT_FOUND, UNAVAILABLE when too few
// replicas answered).
#include "node/coordinator.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/limits.h"
#include "node/placement.h"
#include "storage/memory_engine.h"
#include "storage/record_codec.h"
#include "tests/manual_scheduler.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr int kN = 3;

std::vector<Member> Members(int count) {
  std::vector<Member> members;
  for (int i = 1; i <= count; ++i) members.push_back(Member{absl::StrCat("n", i), "h:1", ""});
  return members;
}

// Replication batches wait for the test; reads and forwarded writes answer at once from what
// the test set.
class FakePeers : public testing::StubPeerTransport {
 public:
  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    merges_.push_back(Merge{peer.id, std::move(records), std::move(done)});
  }
  void ReadRecord(const Member& peer, std::string,
                  std::function<void(absl::StatusOr<std::string>)> done) override {
    reads.push_back(peer.id);
    if (on_read) on_read();
    if (held.count(peer.id) > 0) {  // answers only when the test releases it
      held_reads.push_back(std::move(done));
      return;
    }
    auto it = records.find(peer.id);
    done(it == records.end() ? absl::StatusOr<std::string>(absl::NotFoundError("no record"))
                             : it->second);
  }
  // ReadRecord, with the records of the peers in `catching_up` marked so.
  void ReadRecordForQuorum(const Member& peer, std::string key,
                           std::function<void(absl::StatusOr<QuorumRecord>)> done) override {
    ReadRecord(peer, std::move(key), MarkedRecord(catching_up.count(peer.id) > 0, std::move(done)));
  }
  void ForwardWrite(const Member& peer, WriteCommand, QuorumSpec,
                    std::function<void(absl::StatusOr<WriteReply>)> done) override {
    forwards.push_back(peer.id);
    auto it = forward_answers.find(peer.id);
    done(it == forward_answers.end()
             ? absl::StatusOr<WriteReply>(absl::UnavailableError(peer.id + " unreachable"))
             : it->second);
  }

  // Completes every batch waiting for `peer` with `status`; returns how many there were.
  int Answer(const std::string& peer, const absl::Status& status) {
    int answered = 0;
    std::vector<Merge> waiting = std::move(merges_);
    merges_.clear();
    for (Merge& m : waiting) {
      if (m.peer == peer) {
        m.done(status);
        ++answered;
      } else {
        merges_.push_back(std::move(m));
      }
    }
    return answered;
  }
  std::vector<std::string> MergedKeys(const std::string& peer) const {
    std::vector<std::string> keys;
    for (const Merge& m : merges_) {
      if (m.peer != peer) continue;
      for (const EncodedRecord& r : m.records) keys.push_back(r.key);
    }
    return keys;
  }

  std::map<std::string, absl::StatusOr<std::string>> records;  // ReadRecord answers by peer
  std::set<std::string> catching_up;  // peers whose quorum reads are marked catching up
  std::vector<std::string> reads;     // peers asked, in order
  std::function<void()> on_read;      // runs as a peer is read
  std::set<std::string> held;         // peers whose reads wait in held_reads
  std::vector<std::function<void(absl::StatusOr<std::string>)>> held_reads;
  std::map<std::string, absl::StatusOr<WriteReply>> forward_answers;
  std::vector<std::string> forwards;  // peers a write was forwarded to, in order

 private:
  struct Merge {
    std::string peer;
    std::vector<EncodedRecord> records;
    std::function<void(absl::Status)> done;
  };
  std::vector<Merge> merges_;
};

// Members the test declares DOWN.
class FakeLiveness : public MemberLiveness {
 public:
  bool IsDown(absl::string_view member_id) const override {
    return down.count(std::string(member_id)) > 0;
  }
  std::set<std::string> down;
};

// A MemoryEngine whose writes fail while fail_writes is set.
class FlakyEngine : public MemoryEngine {
 public:
  absl::Status Write(const WriteBatch& batch, const WriteOptions& options) override {
    if (fail_writes) return absl::InternalError("injected write failure");
    return MemoryEngine::Write(batch, options);
  }
  bool fail_writes = false;
};

// One node, `self`, of a cluster whose placement the test may change.
class CoordinatorTest : public ::testing::Test {
 protected:
  void Start(const std::string& self, int members, int default_w = 2) {
    holder_ = std::make_unique<PlacementHolder>(Placement::Fixed(
        std::make_shared<const HashRing>(HashRing::Build(Members(members)).value())));
    store_ = LocalStore::Open(&engine_, &clock_, rng_, self, {}).value();
    std::vector<Member> peers;
    for (const Member& m : Members(members)) {
      if (m.id != self) peers.push_back(m);
    }
    outbox_ = std::make_unique<ReplicationOutbox>(peers, &engine_, &peers_, &scheduler_, &executor_,
                                                  rng_, ReplicationOutbox::Options{});
    ASSERT_TRUE(outbox_->Recover().ok());
    ClusterOptions options;
    options.self_id = self;
    options.replication_factor = kN;
    options.default_w = default_w;
    coordinator_ =
        std::make_unique<Coordinator>(options, holder_.get(), store_.get(), outbox_.get(), &peers_,
                                      &executor_, &clock_, &liveness_);
  }
  void TearDown() override {
    if (outbox_ != nullptr) outbox_->Shutdown();
    executor_.Drain();
  }

  // Every answer a write got, in order (shared with its callback, which may outlive the test
  // body: the outbox reports to it when TearDown shuts down).
  using Answers = std::shared_ptr<std::vector<absl::StatusOr<WriteReply>>>;

  // Starts a write and runs what it scheduled.
  Answers Put(const std::string& key, const std::string& value, QuorumSpec w = {}) {
    auto answers = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
    coordinator_->Write(
        WriteCommand{key, false, value, "", absl::StrCat("token-", key)}, w,
        [answers](absl::StatusOr<WriteReply> reply) { answers->push_back(std::move(reply)); });
    executor_.Drain();
    return answers;
  }
  // Confirms `peer`'s replication batches, including those the outbox sends meanwhile (one
  // batch per peer is in flight at a time), until none waits.
  void ConfirmEverything(const std::string& peer) {
    while (peers_.Answer(peer, absl::OkStatus()) > 0) executor_.Drain();
  }
  absl::StatusOr<SiblingSet> Read(const std::string& key, QuorumSpec r = {}) {
    // Shared with the callback, which may outlive this call if the read is not answered here.
    auto result = std::make_shared<std::optional<absl::StatusOr<SiblingSet>>>();
    coordinator_->Read(key, r, [result](absl::StatusOr<SiblingSet> record) { *result = record; });
    executor_.Drain();
    EXPECT_TRUE(result->has_value()) << "the read was not answered";
    return result->value_or(absl::InternalError("no answer"));
  }
  // The first key "<prefix><i>" whose replicas (preference list of the current placement) do or
  // do not include `member`.
  std::string KeyWhere(const std::string& prefix, const std::string& member, bool replica) {
    for (int i = 0;; ++i) {
      std::string key = absl::StrCat(prefix, i);
      bool found = false;
      for (const Member* m : holder_->Get()->Replicas(key, kN)) found |= m->id == member;
      if (found == replica) return key;
    }
  }
  // The encoded record of `key` after one write coordinated by another node (actor "n2").
  std::string RecordWrittenElsewhere(const std::string& key) {
    MemoryEngine engine;
    std::unique_ptr<LocalStore> other = LocalStore::Open(&engine, &clock_, rng_, "n2", {}).value();
    EXPECT_TRUE(other->Write(WriteCommand{key, false, "v", "", ""}).ok());
    return EncodeSiblingSet(other->ReadRecord(key).value());
  }
  // The placement of n1 leaving a cluster of n1..n4 (layout version 2).
  static std::shared_ptr<const Placement> LeavingN1() {
    ClusterLayout layout;
    layout.version = 2;
    layout.members = Members(4);
    layout.next = {layout.members[1], layout.members[2], layout.members[3]};
    layout.change = "leave n1";
    return Placement::Create(layout).value();
  }
  static QuorumSpec Count(uint32_t w) { return QuorumSpec{QuorumSpec::Kind::kCount, w}; }

  ManualClock clock_;
  std::mt19937_64 rng_{11};
  testing::QueueExecutor executor_;
  testing::ManualScheduler scheduler_{&clock_, &executor_};
  FlakyEngine engine_;
  FakePeers peers_;
  FakeLiveness liveness_;
  std::unique_ptr<PlacementHolder> holder_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<ReplicationOutbox> outbox_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, WriteIsAcknowledgedOnceWReplicasHoldItAndAnsweredOnce) {
  Start("n1", 3);
  Answers answers = Put("k", "v");  // default W = 2: this replica and one peer
  EXPECT_THAT(*answers, IsEmpty()) << "acknowledged with only the coordinator holding the write";
  EXPECT_THAT(peers_.MergedKeys("n2"), ElementsAre("k"));
  EXPECT_THAT(peers_.MergedKeys("n3"), ElementsAre("k"));
  ASSERT_EQ(peers_.Answer("n3", absl::OkStatus()), 1);
  executor_.Drain();
  ASSERT_EQ(answers->size(), 1u);
  ASSERT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_FALSE((*answers)[0]->write_id.empty());
  ASSERT_EQ(peers_.Answer("n2", absl::OkStatus()), 1);
  executor_.Drain();
  EXPECT_EQ(answers->size(), 1u) << "a write must be answered exactly once";
  EXPECT_EQ(coordinator_->Stats().writes_coordinated, 1u);
}

// A write whose batch fails to commit leaves no outbox entry waiting for its key (which would keep
// the unowned-record cleaner from ever removing the key), and the next write goes out as usual.
TEST_F(CoordinatorTest, AWriteThatFailsToCommitLeavesNoOutboxEntryWaiting) {
  Start("n1", 3);
  engine_.fail_writes = true;
  Answers failed = Put("k", "v");
  engine_.fail_writes = false;
  ASSERT_EQ(failed->size(), 1u);
  // A failure of the node's storage is not the request's: UNAVAILABLE, which clients retry (on
  // another node), not the engine's INTERNAL, which they do not.
  EXPECT_TRUE(absl::IsUnavailable(failed->at(0).status())) << failed->at(0).status();
  EXPECT_THAT(std::string(failed->at(0).status().message()),
              ::testing::HasSubstr("could not write to its storage"));
  EXPECT_THAT(std::string(failed->at(0).status().message()),
              ::testing::HasSubstr("injected write failure"));
  EXPECT_FALSE(outbox_->MayHaveEntriesFor("k"));
  EXPECT_EQ(peers_.Answer("n2", absl::OkStatus()), 0);  // nothing was sent

  Answers ok = Put("k", "v");
  EXPECT_TRUE(outbox_->MayHaveEntriesFor("k"));
  ConfirmEverything("n2");
  ConfirmEverything("n3");
  ASSERT_FALSE(ok->empty());
  EXPECT_TRUE(ok->back().ok()) << ok->back().status();
  EXPECT_FALSE(outbox_->MayHaveEntriesFor("k"));
}

TEST_F(CoordinatorTest, WOfOneIsAcknowledgedAtOnceAndWOfAllWaitsForEveryReplica) {
  Start("n1", 3);
  Answers one = Put("a", "v", Count(1));
  ASSERT_EQ(one->size(), 1u);
  EXPECT_TRUE((*one)[0].ok()) << (*one)[0].status();

  Answers all = Put("b", "v", QuorumSpec{QuorumSpec::Kind::kAll, 0});
  ConfirmEverything("n2");
  EXPECT_THAT(*all, IsEmpty()) << "W=all acknowledged before n3 held the write";
  ConfirmEverything("n3");
  ASSERT_EQ(all->size(), 1u);
  EXPECT_TRUE((*all)[0].ok()) << (*all)[0].status();
}

TEST_F(CoordinatorTest, UnreachableWIsUnavailableMarkedStoredAndTheWriteStaysQueued) {
  Start("n1", 3);
  Answers answers = Put("k", "v");
  peers_.Answer("n2", absl::UnavailableError("n2 is down"));
  executor_.Drain();
  EXPECT_THAT(*answers, IsEmpty()) << "n3 may still confirm";
  peers_.Answer("n3", absl::DeadlineExceededError("n3 is slow"));
  executor_.Drain();
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsWriteStored((*answers)[0].status()));
  EXPECT_THAT((*answers)[0].status().message(), HasSubstr("durable on 1 replica(s) but W=2"));
  EXPECT_THAT((*answers)[0].status().message(), HasSubstr("n3 is slow"));
  // The write is this replica's, and its outbox keeps retrying the peers.
  EXPECT_TRUE(store_->ReadRecord("k").ok());
  scheduler_.Advance(absl::Seconds(5));
  EXPECT_THAT(peers_.MergedKeys("n2"), ElementsAre("k"));
  EXPECT_THAT(peers_.MergedKeys("n3"), ElementsAre("k"));
}

// The replication lag is sampled for every write once all its peers hold it, also when a
// first delivery failed and a retry went: leaving those out would hide the slowest writes.
TEST_F(CoordinatorTest, ReplicationLagCountsWritesWhoseFirstDeliveryFailed) {
  Start("n1", 3);
  Answers answers = Put("k", "v", Count(1));
  ASSERT_EQ(answers->size(), 1u);
  clock_.Advance(absl::Milliseconds(3));
  ASSERT_EQ(peers_.Answer("n2", absl::UnavailableError("n2 is down")), 1);
  ASSERT_EQ(peers_.Answer("n3", absl::OkStatus()), 1);
  executor_.Drain();
  EXPECT_THAT(coordinator_->Stats().recent_replication_lag_us, IsEmpty()) << "n2 lacks it";

  // n2 returns: the outbox's retry goes, and the write counts with the time it took.
  clock_.Advance(absl::Milliseconds(400));
  scheduler_.Advance(absl::Seconds(1));
  EXPECT_THAT(peers_.MergedKeys("n2"), ElementsAre("k"));
  ConfirmEverything("n2");
  std::vector<int64_t> lag = coordinator_->Stats().recent_replication_lag_us;
  ASSERT_EQ(lag.size(), 1u);
  EXPECT_GE(lag[0], 403'000);
  EXPECT_EQ(answers->size(), 1u);

  // A write confirmed by every peer the first time is sampled once.
  Answers second = Put("k2", "v", Count(1));
  ConfirmEverything("n2");
  ConfirmEverything("n3");
  EXPECT_EQ(coordinator_->Stats().recent_replication_lag_us.size(), 2u);
  // A retry of it (the same token), answered from the first attempt, is not a second sample.
  Answers retried = Put("k2", "v", Count(1));
  ASSERT_EQ(retried->size(), 1u);
  ASSERT_TRUE((*retried)[0].ok()) << (*retried)[0].status();
  EXPECT_TRUE((*retried)[0]->deduplicated);
  ConfirmEverything("n2");
  ConfirmEverything("n3");
  EXPECT_EQ(coordinator_->Stats().recent_replication_lag_us.size(), 2u);
}

// A write whose peers do not answer (hung, or their batches behind a long backlog) is answered
// as a W shortfall once ack_timeout has passed, rather than left waiting until the client's
// deadline; a late confirmation changes nothing, and writes answered in time are left alone.
TEST_F(CoordinatorTest, AWriteNotConfirmedWithinTheAckTimeoutIsAnsweredStored) {
  Start("n1", 3);
  coordinator_->SetAckTimer(&scheduler_);  // ClusterOptions::ack_timeout: 4 s by default
  Answers quick = Put("quick", "v");
  ASSERT_EQ(peers_.Answer("n2", absl::OkStatus()), 1);  // the batch holding "quick"
  executor_.Drain();
  ASSERT_EQ(quick->size(), 1u);
  EXPECT_TRUE(quick->at(0).ok()) << quick->at(0).status();

  Answers waiting = Put("waiting", "v");
  scheduler_.Advance(absl::Seconds(3));
  EXPECT_THAT(*waiting, IsEmpty()) << "answered before the ack timeout";
  scheduler_.Advance(absl::Seconds(2));
  ASSERT_EQ(waiting->size(), 1u);
  EXPECT_EQ(waiting->at(0).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsWriteStored(waiting->at(0).status()));
  EXPECT_THAT(waiting->at(0).status().message(), HasSubstr("within 4s"));
  // Confirmations after that are not a second answer.
  ConfirmEverything("n2");
  ConfirmEverything("n3");
  EXPECT_EQ(waiting->size(), 1u);
  EXPECT_EQ(quick->size(), 1u);
}

// A write that started before a membership change and is confirmed after it must also be held by
// W of the new owners: here n1 (the coordinator) leaves, so its own copy no longer counts.
TEST_F(CoordinatorTest, ConfirmationsAfterALayoutChangeAreCountedAgainstTheNewOwners) {
  Start("n1", 4);
  const std::string key = KeyWhere("k", "n4", /*replica=*/false);  // owners n1, n2, n3
  Answers answers = Put(key, "v");
  // n1 leaves: the key's new owners are n2, n3, n4, and the coordinator did not write to n4.
  ASSERT_TRUE(holder_->Set(LeavingN1()));
  peers_.Answer("n2", absl::OkStatus());
  executor_.Drain();
  EXPECT_THAT(*answers, IsEmpty())
      << "acknowledged with n1 and n2 only, but n1 is not one of the new owners";
  peers_.Answer("n3", absl::OkStatus());
  executor_.Drain();
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
}

TEST_F(CoordinatorTest, ANewOwnerTheWriteWasNotSentToMakesItUnavailableMarkedStored) {
  Start("n1", 4);
  const std::string key = KeyWhere("k", "n4", /*replica=*/false);
  Answers answers = Put(key, "v", QuorumSpec{QuorumSpec::Kind::kAll, 0});
  ASSERT_TRUE(holder_->Set(LeavingN1()));
  peers_.Answer("n2", absl::OkStatus());
  executor_.Drain();
  // W=all of the new owners needs n4, which no outbox entry of this write will reach.
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsWriteStored((*answers)[0].status()));
}

TEST_F(CoordinatorTest, NonReplicaForwardsToTheFirstReplicaThatAnswers) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  const std::vector<const Member*> replicas = holder_->Get()->Replicas(key, kN);
  WriteReply reply;
  reply.write_id = "forwarded";
  peers_.forward_answers[replicas[1]->id] = reply;  // the first replica is unreachable
  Answers answers = Put(key, "v");
  ASSERT_EQ(answers->size(), 1u);
  ASSERT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_EQ((*answers)[0]->write_id, "forwarded");
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[0]->id, replicas[1]->id));
  EXPECT_FALSE(store_->ReadRecord(key).ok()) << "a non-replica must not store the key";
  EXPECT_EQ(coordinator_->Stats().writes_forwarded, 1u);
}

// Replicas served by nodes of another cluster (node/cluster_name.h) are skipped like unreachable
// ones; when every replica is one, the client is told so (still UNAVAILABLE: this node's own
// name may be the wrong one, and the client's other endpoints may succeed).
TEST_F(CoordinatorTest, AWriteWhoseEveryReplicaIsAnotherClustersSaysSo) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  const std::vector<const Member*> replicas = holder_->Get()->Replicas(key, kN);
  for (const Member* m : replicas) {
    peers_.forward_answers[m->id] =
        MarkOtherCluster(absl::UnavailableError(m->id + " belongs to cluster \"other\""));
  }
  Answers answers = Put(key, "v");
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kUnavailable)
      << (*answers)[0].status();
  EXPECT_THAT(std::string((*answers)[0].status().message()),
              HasSubstr("replica(s) in this node's membership answered as a node of another"));
  EXPECT_EQ(peers_.forwards.size(), replicas.size());

  // One replica merely unreachable: a retry may reach it, so UNAVAILABLE.
  peers_.forwards.clear();
  peers_.forward_answers.erase(replicas[1]->id);
  answers = Put(key, "v");
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kUnavailable)
      << (*answers)[0].status();
  EXPECT_FALSE(IsOtherCluster((*answers)[0].status()));
  EXPECT_THAT(std::string((*answers)[0].status().message()),
              Not(HasSubstr("in this node's membership answered as a node of another")));
  EXPECT_EQ(peers_.forwards.size(), replicas.size());
}

// A write another node forwarded to this one, which is not a replica in its own layout (the two
// layouts differ), is not handed on again: the forwarding node tries its next replica.
TEST_F(CoordinatorTest, AForwardedWriteIsNotHandedOnAgain) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  WriteCommand command{key, false, "v", "", "token"};
  command.forwarded = true;
  auto answers = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
  coordinator_->Write(command, QuorumSpec{}, [answers](absl::StatusOr<WriteReply> reply) {
    answers->push_back(std::move(reply));
  });
  executor_.Drain();
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(IsWriteStored((*answers)[0].status()));
  EXPECT_THAT(std::string((*answers)[0].status().message()), HasSubstr("not a replica"));
  EXPECT_THAT(peers_.forwards, IsEmpty());
  EXPECT_FALSE(store_->ReadRecord(key).ok());
  EXPECT_EQ(coordinator_->Stats().writes_forwarded, 0u);
}

// A context that names single versions (what a write returns while siblings remain) goes to the
// replica that made them, which holds them or has replaced them; this replica might not have
// received them yet, and would then leave them as siblings once they arrive.
TEST_F(CoordinatorTest, AWriteNamingAnotherReplicasVersionsGoesToThatReplica) {
  Start("n1", 3);  // every member is a replica of every key
  auto context_naming = [](const std::vector<Dot>& dots) {
    CausalContext context;
    for (const Dot& dot : dots) context.AddDot(dot);
    return context.Encode();
  };
  auto put = [&](const std::string& key, const std::string& context) {
    auto answers = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
    coordinator_->Write(
        WriteCommand{key, false, "v", context, absl::StrCat("token-", key)}, QuorumSpec{},
        [answers](absl::StatusOr<WriteReply> reply) { answers->push_back(std::move(reply)); });
    executor_.Drain();
    return answers;
  };
  WriteReply from_n2;
  from_n2.write_id = "coordinated by n2";
  peers_.forward_answers["n2"] = from_n2;
  Answers answers = put("a", context_naming({Dot{"n2#0000000000aa", 2}}));
  ASSERT_EQ(answers->size(), 1u);
  ASSERT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_EQ((*answers)[0]->write_id, "coordinated by n2");
  EXPECT_THAT(peers_.forwards, ElementsAre("n2"));
  EXPECT_FALSE(store_->ReadRecord("a").ok());

  // A context that also names a version of this node's: coordinated here.
  peers_.forwards.clear();
  answers = put("b", context_naming({Dot{"n2#0000000000aa", 2}, Dot{store_->actor(), 7}}));
  ConfirmEverything("n2");
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_THAT(peers_.forwards, IsEmpty());
  EXPECT_TRUE(store_->ReadRecord("b").ok());

  // The maker cannot be reached: coordinated here after all.
  peers_.forward_answers.erase("n2");
  answers = put("c", context_naming({Dot{"n2#0000000000aa", 2}}));
  EXPECT_THAT(peers_.forwards, ElementsAre("n2"));
  ConfirmEverything("n2");
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_TRUE(store_->ReadRecord("c").ok());

  // A whole version vector, or a maker that is not a replica: coordinated here.
  peers_.forwards.clear();
  VersionVector vv;
  vv.Advance("n2#0000000000aa", 3);
  CausalContext vv_only(vv);
  answers = put("d", vv_only.Encode());
  answers = put("e", context_naming({Dot{"n9#0000000000aa", 2}}));
  ConfirmEverything("n2");
  EXPECT_THAT(peers_.forwards, IsEmpty());
  EXPECT_TRUE(store_->ReadRecord("d").ok());
  EXPECT_TRUE(store_->ReadRecord("e").ok());

  // A write another node forwarded here is coordinated here, whatever its context names.
  WriteCommand forwarded{"f", false, "v", context_naming({Dot{"n2#0000000000aa", 2}}), "token-f"};
  forwarded.forwarded = true;
  answers = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
  coordinator_->Write(forwarded, QuorumSpec{}, [answers](absl::StatusOr<WriteReply> reply) {
    answers->push_back(std::move(reply));
  });
  executor_.Drain();
  ConfirmEverything("n2");
  EXPECT_THAT(peers_.forwards, IsEmpty());
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
}

// A node that is not a replica forwards such a write to the replica that made the version first.
TEST_F(CoordinatorTest, ANonReplicaForwardsAWriteNamingAVersionToItsMakerFirst) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  const std::vector<const Member*> replicas = holder_->Get()->Replicas(key, kN);
  CausalContext context;
  context.AddDot(Dot{replicas[2]->id + "#0000000000aa", 4});
  WriteReply reply;
  reply.write_id = "forwarded";
  peers_.forward_answers[replicas[2]->id] = reply;
  auto answers = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
  coordinator_->Write(
      WriteCommand{key, false, "v", context.Encode(), "token"}, QuorumSpec{},
      [answers](absl::StatusOr<WriteReply> r) { answers->push_back(std::move(r)); });
  executor_.Drain();
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[2]->id));
}

// Only an unreachable replica is skipped: a replica's verdict (here a W shortfall, the write
// stored there) goes back to the client as it is, or a retry elsewhere would store it twice.
TEST_F(CoordinatorTest, ForwardedVerdictsOtherThanUnreachableAreReturnedAsTheyAre) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  const std::vector<const Member*> replicas = holder_->Get()->Replicas(key, kN);
  peers_.forward_answers[replicas[0]->id] =
      MarkWriteStored(absl::UnavailableError("W=2 not reached"));
  Answers answers = Put(key, "v");
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_TRUE(IsWriteStored((*answers)[0].status()));
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[0]->id));

  peers_.forwards.clear();
  peers_.forward_answers[replicas[0]->id] = absl::InvalidArgumentError("bad context");
  answers = Put(key, "v");
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[0]->id));
}

// A replica that sheds a first attempt of a write (RESOURCE_EXHAUSTED: its storage is behind,
// nothing applied, and no replica can hold the write under its token yet) is skipped like an
// unreachable one: the next replica coordinates it. A retry it sheds goes back as it is (another
// replica might not hold the stored attempt yet and would make a second copy), and so does a
// message over a size limit, which is not shed load.
TEST_F(CoordinatorTest, AReplicaThatShedsAForwardedFirstAttemptIsSkipped) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  const std::vector<const Member*> replicas = holder_->Get()->Replicas(key, kN);
  WriteReply reply;
  reply.write_id = "by the second replica";
  const absl::Status shed = absl::ResourceExhaustedError(
      "this node's storage is behind; nothing of this request was applied");
  peers_.forward_answers[replicas[0]->id] = shed;
  peers_.forward_answers[replicas[1]->id] = reply;
  auto write = [&](bool first_attempt) {
    peers_.forwards.clear();
    auto answers = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
    WriteCommand command{key, false, "v", "", "token-of-" + key};
    command.first_attempt = first_attempt;
    coordinator_->Write(std::move(command), {}, [answers](absl::StatusOr<WriteReply> r) {
      answers->push_back(std::move(r));
    });
    executor_.Drain();
    return answers;
  };
  Answers answers = write(/*first_attempt=*/true);
  ASSERT_EQ(answers->size(), 1u);
  ASSERT_TRUE((*answers)[0].ok()) << (*answers)[0].status();
  EXPECT_EQ((*answers)[0]->write_id, "by the second replica");
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[0]->id, replicas[1]->id));

  answers = write(/*first_attempt=*/false);
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[0]->id));

  // Every replica sheds the first attempt: RESOURCE_EXHAUSTED, so the client backs off here.
  for (const Member* m : replicas) peers_.forward_answers[m->id] = shed;
  answers = write(/*first_attempt=*/true);
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kResourceExhausted)
      << (*answers)[0].status();
  EXPECT_EQ(peers_.forwards.size(), replicas.size());

  peers_.forward_answers[replicas[0]->id] =
      absl::ResourceExhaustedError("Received message larger than max (5000000 vs. 4194304)");
  answers = write(/*first_attempt=*/true);
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(peers_.forwards, ElementsAre(replicas[0]->id));
}

// Bad input is the client's error on every node: a non-replica refuses it before forwarding, so
// unreachable replicas cannot turn it into a retryable UNAVAILABLE.
TEST_F(CoordinatorTest, NonReplicaRefusesAnOversizedWriteWithoutForwardingIt) {
  Start("n1", 5);
  const std::string key = KeyWhere("k", "n1", /*replica=*/false);
  const std::string too_big(Limits().max_value_bytes + 1, 'x');
  Answers answers = Put(key, too_big);
  ASSERT_EQ(answers->size(), 1u);
  EXPECT_EQ((*answers)[0].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains((*answers)[0].status().message(), "max_value_bytes"))
      << (*answers)[0].status();
  EXPECT_THAT(peers_.forwards, IsEmpty());

  // So is a write with a malformed context (the replicas are unreachable here: forwarded, it
  // would come back UNAVAILABLE, which the client retries).
  auto bad_context = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
  coordinator_->Write(WriteCommand{key, false, "v", "\xc7\x01garbage", "token-bad-context"}, {},
                      [bad_context](absl::StatusOr<WriteReply> reply) {
                        bad_context->push_back(std::move(reply));
                      });
  executor_.Drain();
  ASSERT_EQ(bad_context->size(), 1u);
  EXPECT_EQ((*bad_context)[0].status().code(), absl::StatusCode::kInvalidArgument)
      << (*bad_context)[0].status();
  EXPECT_THAT(peers_.forwards, IsEmpty());

  // And one with another key's context.
  VersionVector seen;
  seen.Advance("n2#1", 1);
  CausalContext other_key(seen);
  other_key.BindToKey(key + "-other");
  auto wrong_key = std::make_shared<std::vector<absl::StatusOr<WriteReply>>>();
  coordinator_->Write(
      WriteCommand{key, false, "v", other_key.Encode(), "token-other-key"}, {},
      [wrong_key](absl::StatusOr<WriteReply> reply) { wrong_key->push_back(std::move(reply)); });
  executor_.Drain();
  ASSERT_EQ(wrong_key->size(), 1u);
  EXPECT_EQ((*wrong_key)[0].status().code(), absl::StatusCode::kInvalidArgument)
      << (*wrong_key)[0].status();
  EXPECT_THAT(std::string((*wrong_key)[0].status().message()), HasSubstr("another key"));
  EXPECT_THAT(peers_.forwards, IsEmpty());
}

TEST_F(CoordinatorTest, ReadWithROfOneUsesTheOwnReplicaWhenItHoldsTheKey) {
  Start("n1", 3);
  ASSERT_TRUE(store_->Write(WriteCommand{"k", false, "v", "", ""}).ok());
  absl::StatusOr<SiblingSet> record = Read("k");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->siblings().size(), 1u);
  EXPECT_THAT(peers_.reads, IsEmpty());
}

// New-key read-after-write: the write reached n3 but neither this replica nor n2 yet.
TEST_F(CoordinatorTest, ReadOfAKeyTheOwnReplicaLacksAsksTheOthersBeforeNotFound) {
  Start("n1", 3);
  peers_.records["n3"] = RecordWrittenElsewhere("k");
  absl::StatusOr<SiblingSet> record = Read("k");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->siblings().size(), 1u);
  EXPECT_THAT(peers_.reads, ::testing::UnorderedElementsAre("n2", "n3"));

  peers_.records.clear();
  EXPECT_EQ(Read("missing").status().code(), absl::StatusCode::kNotFound);
}

// With W=2 of N=3, NOT_FOUND needs N - W + 1 = 2 empty answers: one empty replica and two
// unreachable ones could be missing an acknowledged write.
TEST_F(CoordinatorTest, TooFewEmptyAnswersAreUnavailableNotNotFound) {
  Start("n1", 3);
  peers_.records["n2"] = absl::UnavailableError("n2 unreachable");
  peers_.records["n3"] = absl::UnavailableError("n3 unreachable");
  absl::StatusOr<SiblingSet> record = Read("k");
  EXPECT_EQ(record.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(record.status().message(), HasSubstr("could not be asked"));

  peers_.records.erase("n3");  // n3 answers: it knows nothing of the key either
  EXPECT_EQ(Read("k").status().code(), absl::StatusCode::kNotFound);
}

// A Put on a deleted key: this replica holds only the tombstone, n3 already the new value. The
// read asks on rather than answer NOT_FOUND from the tombstone; and with the others unreachable,
// one tombstone is as inconclusive as one empty answer.
TEST_F(CoordinatorTest, AReplicaHoldingOnlyATombstoneAsksTheOthersBeforeNotFound) {
  Start("n1", 3);
  ASSERT_TRUE(store_->Write(WriteCommand{"k", false, "old", "", ""}).ok());
  ASSERT_TRUE(store_->Write(WriteCommand{"k", true, "", "", ""}).ok());
  SiblingSet from_memory;
  EXPECT_FALSE(coordinator_->TryReadFromMemory("k", QuorumSpec{}, &from_memory))
      << "a tombstone must not answer from memory";
  peers_.records["n3"] = RecordWrittenElsewhere("k");
  absl::StatusOr<SiblingSet> record = Read("k");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_FALSE(record->AllTombstones()) << record->ToString();
  EXPECT_THAT(peers_.reads, ::testing::UnorderedElementsAre("n2", "n3"));

  peers_.records["n2"] = absl::UnavailableError("n2 unreachable");
  peers_.records["n3"] = absl::UnavailableError("n3 unreachable");
  ASSERT_TRUE(store_->Write(WriteCommand{"d", false, "old", "", ""}).ok());
  ASSERT_TRUE(store_->Write(WriteCommand{"d", true, "", "", ""}).ok());
  record = Read("d");
  EXPECT_EQ(record.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(record.status().message(), HasSubstr("no live version"));
  peers_.records.erase("n3");  // n3 answers: it knows nothing of the key; that is conclusive
  record = Read("d");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_TRUE(record->AllTombstones());
}

// A replica catching up (it may have lost writes it acknowledged) that still holds a value which
// a delete replaced elsewhere: the merge holds no live version, and the catching-up replica's
// answer does not count toward ruling one out, since the Put it lost (acknowledged by it and an
// unreachable replica) may be newer than the delete. With W=2 of N=3 that takes 2 answers from
// replicas that kept their writes: UNAVAILABLE (retried), not NOT_FOUND.
TEST_F(CoordinatorTest, ACatchingUpReplicasStaleValueDoesNotRuleOutALiveVersion) {
  Start("n1", 3);
  ASSERT_TRUE(store_->Write(WriteCommand{"k", false, "v1", "", ""}).ok());
  SiblingSet deleted = store_->ReadRecord("k").value();
  Sibling tombstone;
  tombstone.tombstone = true;
  deleted.ApplyWrite("n2#1", CausalContext(deleted.context()), tombstone);
  ASSERT_TRUE(deleted.AllTombstones());
  const std::string deleted_record = EncodeSiblingSet(deleted);

  // This node is catching up: its own answer is marked.
  store_->MarkHistoryConflict("test: may have lost writes");
  ASSERT_TRUE(store_->catching_up());
  peers_.records["n2"] = deleted_record;
  peers_.records["n3"] = absl::UnavailableError("n3 unreachable");
  // With R=1 this replica answers alone, with its own (stale) value: never NOT_FOUND.
  absl::StatusOr<SiblingSet> read = Read("k");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->AllTombstones());
  // With R=2 it merges n2's tombstone: no live version, and only n2's answer rules one out.
  read = Read("k", Count(2));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kUnavailable) << read.status();
  EXPECT_THAT(read.status().message(), HasSubstr("catching up"));
  // n3 answers too, with the tombstone: two replicas that kept their writes rule a live version
  // out.
  peers_.records["n3"] = deleted_record;
  read = Read("k", Count(2));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->AllTombstones());
}

TEST_F(CoordinatorTest, APeerCatchingUpDoesNotCountTowardNotFoundWithItsStaleValue) {
  Start("n1", 3);
  // n2 catching up, holding the value this replica's tombstone replaced; n3 unreachable.
  ASSERT_TRUE(store_->Write(WriteCommand{"k", false, "v1", "", ""}).ok());
  peers_.records["n2"] = EncodeSiblingSet(store_->ReadRecord("k").value());
  ASSERT_TRUE(store_->Write(WriteCommand{"k", true, "", "", ""}).ok());  // replaces what it finds
  peers_.catching_up = {"n2"};
  peers_.records["n3"] = absl::UnavailableError("n3 unreachable");
  absl::StatusOr<SiblingSet> read = Read("k");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kUnavailable) << read.status();

  peers_.catching_up.clear();  // the same answers from a replica that kept its writes
  read = Read("k");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->AllTombstones());
}

// Whether a read has found a live version is decided on the answers merged, not on any one of
// them: a replica that missed a delete still holds the value the tombstone replaced, which is
// gone once merged with it. With W=1 (NOT_FOUND needs all 3 answers), this replica holds the
// tombstone, the first peer asked the value it replaced, and the other peer the key written
// again since: the read waits for that one and returns the new value, where it used to stop at
// the stale answer and, its merge holding no live version, answer UNAVAILABLE.
TEST_F(CoordinatorTest, AStaleLiveVersionReplacedByATombstoneDoesNotEndTheSearch) {
  Start("n1", 3, /*default_w=*/1);
  // Writes and deletes `key` here; the first peer asked holds the value the delete replaced, the
  // other one `other`: the key written again since (or, if !written_again, the tombstone).
  auto set_up = [&](const std::string& key, bool written_again) {
    ASSERT_TRUE(store_->Write(WriteCommand{key, false, "old", "", ""}).ok());
    const std::string stale = EncodeSiblingSet(store_->ReadRecord(key).value());
    ASSERT_TRUE(store_->Write(WriteCommand{key, true, "", "", ""}).ok());
    SiblingSet other = store_->ReadRecord(key).value();
    if (written_again) {
      other.Merge(DecodeSiblingSet(RecordWrittenElsewhere(key)).value(),
                  store_->options().idempotency_ttl);
      ASSERT_FALSE(other.AllTombstones());
    }
    std::vector<std::string> peers;  // in the order the read asks them
    for (const Member* m : holder_->Get()->Replicas(key, kN)) {
      if (m->id != "n1") peers.push_back(m->id);
    }
    ASSERT_EQ(peers.size(), 2u);
    peers_.records[peers[0]] = stale;
    peers_.records[peers[1]] = EncodeSiblingSet(other);
  };
  set_up("k", /*written_again=*/true);
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<SiblingSet> record = Read("k");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_FALSE(record->AllTombstones()) << record->ToString();
  EXPECT_EQ(peers_.reads.size(), 2u);

  // The other peer holds the tombstone too: every replica answered, so the key is deleted.
  set_up("d", /*written_again=*/false);
  ASSERT_FALSE(HasFailure());
  record = Read("d");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_TRUE(record->AllTombstones()) << record->ToString();
}

// A read that widened (no live version among the first answers) does not wait for a replica
// gossip judges DOWN once enough others answered to rule a live version out: N - W + 1 = 2 of
// N=3 here. Without enough of them it still waits, and its answer is then UNAVAILABLE.
TEST_F(CoordinatorTest, AWidenedReadDoesNotWaitForADownReplicaOnceConclusive) {
  Start("n1", 3);
  liveness_.down = {"n3"};
  peers_.held = {"n3"};
  absl::StatusOr<SiblingSet> record = Read("missing");
  EXPECT_EQ(record.status().code(), absl::StatusCode::kNotFound) << record.status();
  ASSERT_EQ(peers_.held_reads.size(), 1u);                 // n3 was asked, and never answered
  peers_.held_reads[0](absl::NotFoundError("no record"));  // late: changes nothing
  executor_.Drain();

  // With n2 failing too, one empty answer is not enough: the read waits for n3.
  peers_.held_reads.clear();
  peers_.records["n2"] = absl::UnavailableError("n2 unreachable");
  auto result = std::make_shared<std::optional<absl::StatusOr<SiblingSet>>>();
  coordinator_->Read("missing", {},
                     [result](absl::StatusOr<SiblingSet> answer) { *result = answer; });
  executor_.Drain();
  EXPECT_FALSE(result->has_value()) << "answered before the DOWN replica";
  ASSERT_EQ(peers_.held_reads.size(), 1u);
  peers_.held_reads[0](absl::UnavailableError("n3 timed out"));
  executor_.Drain();
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(result->value().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(CoordinatorTest, ReadRepairSendsTheMergedRecordToAStaleReplica) {
  Start("n1", 3);
  peers_.records["n2"] = RecordWrittenElsewhere("k");
  // R=2 with an empty own replica: n2's record comes back and n1 is repaired locally.
  absl::StatusOr<SiblingSet> record = Read("k", Count(2));
  ASSERT_TRUE(record.ok()) << record.status();
  executor_.Drain();
  EXPECT_TRUE(store_->ReadRecord("k").ok())
      << "the coordinator's own stale replica was not repaired";
  // n3 is asked only if it came before n2 in the key's preference list (then it answered empty
  // and is repaired too); n2, which held the record, never gets it back.
  const bool asked_n3 = std::count(peers_.reads.begin(), peers_.reads.end(), "n3") > 0;
  EXPECT_EQ(coordinator_->Stats().read_repairs, asked_n3 ? 2u : 1u);
  EXPECT_EQ(peers_.MergedKeys("n3"),
            asked_n3 ? std::vector<std::string>{"k"} : std::vector<std::string>{});
  EXPECT_THAT(peers_.MergedKeys("n2"), IsEmpty());
}

// A read whose answers took longer than read_repair_max_age to gather repairs nothing: the
// records it read could have been deleted and purged since, and a repair carrying them would
// bring the key back (the tombstone reaper allows about one call in flight). Anti-entropy
// repairs the stale replica instead.
TEST_F(CoordinatorTest, ASlowReadRepairsNothing) {
  Start("n1", 3);
  peers_.records["n2"] = RecordWrittenElsewhere("k");
  peers_.on_read = [this] { clock_.Advance(absl::Seconds(3)); };  // each answer takes 3 s
  absl::StatusOr<SiblingSet> record = Read("k", Count(2));
  ASSERT_TRUE(record.ok()) << record.status();
  executor_.Drain();
  EXPECT_EQ(coordinator_->Stats().read_repairs, 0u);
  EXPECT_TRUE(absl::IsNotFound(store_->ReadRecord("k").status()));
  EXPECT_THAT(peers_.MergedKeys("n3"), IsEmpty());

  // The same read answered at once repairs this node's stale replica.
  peers_.on_read = nullptr;
  record = Read("k", Count(2));
  ASSERT_TRUE(record.ok()) << record.status();
  executor_.Drain();
  EXPECT_GE(coordinator_->Stats().read_repairs, 1u);
  EXPECT_TRUE(store_->ReadRecord("k").ok());
}

}  // namespace
}  // namespace kv

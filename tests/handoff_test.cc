// The handoff of a join (n4 joins n1..n3, N=3): the pure pieces of node/handoff_plan.h, and
// HandoffSender on three sources over real LocalStores and MerkleIndexes on MemoryEngines,
// connected by an in-process transport that answers through a task queue (never inline), on a
// manual clock. The safety net is checked with keys the designated source lacks or holds stale.
#include "node/handoff.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/gossip_proto.h"
#include "node/handoff_plan.h"
#include "node/membership_change.h"
#include "node/merkle_index.h"
#include "storage/memory_engine.h"
#include "storage/record_codec.h"
#include "tests/manual_scheduler.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

constexpr size_t kN = 3;

using testing::ManualScheduler;
using testing::QueueExecutor;

// A MemoryEngine whose reads of chosen records fail a number of times first.
class FlakyReadEngine : public MemoryEngine {
 public:
  absl::StatusOr<std::string> Get(Column column, absl::string_view key) override {
    auto it = failing_reads.find(std::string(key));
    if (column == Column::kData && it != failing_reads.end() && it->second > 0) {
      --it->second;
      return absl::UnavailableError("injected read error");
    }
    return MemoryEngine::Get(column, key);
  }
  std::map<std::string, int> failing_reads;  // record key -> reads left to fail
};

struct TestNode {
  std::string id;
  std::unique_ptr<FlakyReadEngine> engine = std::make_unique<FlakyReadEngine>();
  std::unique_ptr<MerkleIndex> index;
  std::unique_ptr<LocalStore> store;
};

// What crossed the network.
struct Traffic {
  uint64_t records = 0;                             // full records merged on a peer
  uint64_t digests = 0;                             // (key, digest) pairs compared
  std::map<std::string, uint64_t> records_per_key;  // to n4
};

// Serves MergeRecords and CompareDigests from the target node, through the executor.
class LoopbackTransport : public testing::StubPeerTransport {
 public:
  LoopbackTransport(std::map<std::string, TestNode*>* nodes, QueueExecutor* executor,
                    Traffic* traffic, std::function<bool()> all_streamed)
      : nodes_(nodes), executor_(executor), traffic_(traffic), all_streamed_(all_streamed) {}

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    if (peer.id == down) {
      ++refused;
      executor_->Schedule([done = std::move(done)] { done(absl::UnavailableError("down")); });
      return;
    }
    size_t batch_bytes = 0;
    for (const EncodedRecord& r : records) batch_bytes += r.key.size() + r.record.size();
    if (max_batch_bytes > 0 && batch_bytes > max_batch_bytes) {
      ++refused;
      executor_->Schedule([done = std::move(done)] {
        done(absl::ResourceExhaustedError("Sent message larger than max"));
      });
      return;
    }
    executor_->Schedule([this, peer, records = std::move(records), done = std::move(done)] {
      for (const EncodedRecord& r : records) {
        if (refuse_records_over > 0 && r.record.size() > refuse_records_over) {
          // With a byte that is not UTF-8, as a peer's message naming a key may hold.
          return done(absl::FailedPreconditionError(
              absl::StrCat("the record of ", r.key, " is ", r.record.size(), " bytes \xff")));
        }
        ++traffic_->records;
        ++traffic_->records_per_key[r.key];
        absl::StatusOr<SiblingSet> set = DecodeSiblingSet(r.record);
        if (!set.ok()) return done(set.status());
        absl::Status merged = nodes_->at(peer.id)->store->MergeRecord(r.key, *set).status();
        if (!merged.ok()) return done(merged);
      }
      done(absl::OkStatus());
    });
  }
  void CompareDigests(const Member& peer, std::vector<KeyDigest> digests,
                      std::function<void(absl::StatusOr<std::vector<std::string>>)> done) override {
    // Phase 2 starts only once every source finished phase 1.
    EXPECT_TRUE(all_streamed_()) << "a digest comparison before phase 1 ended everywhere";
    executor_->Schedule([this, peer, digests = std::move(digests), done = std::move(done)] {
      traffic_->digests += digests.size();
      if (compare_unimplemented) return done(absl::UnimplementedError("an earlier version"));
      done(KeysNotMatching(*nodes_->at(peer.id)->index, digests));
    });
  }

  bool compare_unimplemented = false;
  std::string down;  // MergeRecords to this node fails UNAVAILABLE
  // MergeRecords of a batch holding a record larger than this fails FAILED_PRECONDITION from
  // that record on, as a peer refuses a record for good (0: no limit).
  size_t refuse_records_over = 0;
  // MergeRecords of a batch larger than this fails RESOURCE_EXHAUSTED (0: no limit).
  size_t max_batch_bytes = 0;
  int refused = 0;  // calls that failed so

 private:
  std::map<std::string, TestNode*>* const nodes_;
  QueueExecutor* const executor_;
  Traffic* const traffic_;
  const std::function<bool()> all_streamed_;
};

std::vector<Member> Members(int count) {
  std::vector<Member> members;
  for (int i = 1; i <= count; ++i) members.push_back(Member{absl::StrCat("n", i), "h:1", ""});
  return members;
}

ClusterLayout JoinLayout() {
  ClusterLayout layout;
  layout.version = 2;
  layout.members = Members(3);
  layout.next = Members(4);
  layout.change = "join n4";
  return layout;
}

class HandoffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    placement_ = Placement::Create(layout_).value();
    nodes_.resize(4);
    for (int i = 0; i < 4; ++i) {
      TestNode& node = nodes_[i];
      node.id = absl::StrCat("n", i + 1);
      by_id_[node.id] = &node;
      auto ring = std::make_shared<const HashRing>(layout_.IsOwner(node.id) ? placement_->current()
                                                                            : *placement_->next());
      node.index = std::make_unique<MerkleIndex>(node.id, ring, kN, node.engine.get());
      node.store = LocalStore::Open(node.engine.get(), &clock_, rng_, node.id, {}).value();
      node.store->SetObserver(node.index.get());
      ASSERT_TRUE(node.index->Build().ok());
    }
    transport_ = std::make_unique<LoopbackTransport>(&by_id_, &executor_, &traffic_,
                                                     [this] { return AllStreamed(); });
  }

  bool AllStreamed() {
    std::vector<MemberView> views;
    for (const auto& [id, progress] : progress_) {
      MemberView view;
      view.entry.member.id = id;
      view.entry.handoff = progress;
      views.push_back(view);
    }
    return AllSourcesStreamed(placement_->layout(), views);
  }

  // Starts a sender on n1..n3 and runs them until all are done (or a simulated minute passed).
  void RunHandoff() {
    StartSenders();
    for (int step = 0; step < 1200 && !AllDone(); ++step) {
      scheduler_.Advance(absl::Milliseconds(50));
    }
    EXPECT_TRUE(AllDone());
  }
  void StartSenders() {
    HandoffSender::Options options;
    options.replication_factor = kN;
    options.bytes_per_second = 0;
    options.batch_bytes = 2000;     // several batches
    options.digests_per_batch = 7;  // several comparisons
    options.keys_per_step = 13;     // many scan steps, each from where the last one stopped
    for (int i : sources_) {
      const std::string id = nodes_[i].id;
      senders_.push_back(std::make_unique<HandoffSender>(
          id, nodes_[i].engine.get(), transport_.get(), &scheduler_, &executor_, &clock_, rng_,
          options, [this, id](const HandoffProgress& p) { progress_[id] = p; },
          [this](const ClusterLayout& transition) {
            EXPECT_EQ(transition.version, layout_.version);
            return AllStreamed();
          }));
    }
    for (auto& sender : senders_) sender->OnPlacement(placement_);
  }
  // Starts a sender with `options` on n1..n3 (no check of the layout they are asked about).
  void StartSendersWith(const HandoffSender::Options& options) {
    for (int i : sources_) {
      const std::string id = nodes_[i].id;
      senders_.push_back(std::make_unique<HandoffSender>(
          id, nodes_[i].engine.get(), transport_.get(), &scheduler_, &executor_, &clock_, rng_,
          options, [this, id](const HandoffProgress& p) { progress_[id] = p; },
          [this](const ClusterLayout&) { return AllStreamed(); }));
    }
    for (auto& sender : senders_) sender->OnPlacement(placement_);
  }
  bool AllDone() {
    for (int i : sources_) {
      if (!progress_[nodes_[i].id].done) return false;
    }
    return true;
  }

  KeyHandoff Plan(const std::string& key) { return PlanKeyHandoff(*placement_, key, kN); }
  int IndexOf(const Member* m) { return std::stoi(m->id.substr(1)) - 1; }
  // The old owners of `key` other than its designated source.
  std::vector<int> Others(const std::string& key) {
    std::vector<int> others;
    for (const Member* m : placement_->current().PreferenceList(key, kN)) {
      if (m != Plan(key).source) others.push_back(IndexOf(m));
    }
    return others;
  }
  // The first `count` keys "<prefix><i>" that n4 gains.
  std::vector<std::string> GainedKeys(const std::string& prefix, int count) {
    std::vector<std::string> keys;
    for (int i = 0; keys.size() < static_cast<size_t>(count); ++i) {
      std::string key = absl::StrCat(prefix, i);
      if (!Plan(key).gainers.empty()) keys.push_back(key);
    }
    return keys;
  }

  void Put(int i, const std::string& key, const std::string& value) {
    ASSERT_TRUE(nodes_[i].store->Write(WriteCommand{key, false, value, "", ""}).ok());
  }
  void Replicate(int from, int to, const std::string& key) {
    SiblingSet record = nodes_[from].store->ReadRecord(key).value();
    ASSERT_TRUE(nodes_[to].store->MergeRecord(key, record).ok());
  }
  absl::StatusOr<std::string> Encoded(int i, const std::string& key) {
    return nodes_[i].engine->Get(Column::kData, key);
  }

  // The transition and the nodes that run a sender (set before SetUp): n1..n3 of a join of n4.
  ClusterLayout layout_ = JoinLayout();
  std::vector<int> sources_ = {0, 1, 2};
  ManualClock clock_;
  std::mt19937_64 rng_{7};
  QueueExecutor executor_;
  ManualScheduler scheduler_{&clock_, &executor_};
  std::shared_ptr<const Placement> placement_;
  std::vector<TestNode> nodes_;
  std::map<std::string, TestNode*> by_id_;
  Traffic traffic_;
  std::unique_ptr<LoopbackTransport> transport_;
  std::map<std::string, HandoffProgress> progress_;
  std::vector<std::unique_ptr<HandoffSender>> senders_;
};

TEST(HandoffPlanTest, DesignatedSourceIsTheFirstOldOwnerAndGainersAreNewOwnersOnly) {
  std::shared_ptr<const Placement> placement = Placement::Create(JoinLayout()).value();
  std::map<std::string, int> designated;
  int gained = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string key = absl::StrCat("key", i);
    const KeyHandoff plan = PlanKeyHandoff(*placement, key, kN);
    const std::vector<const Member*> was = placement->current().PreferenceList(key, kN);
    ASSERT_NE(plan.source, nullptr);
    EXPECT_EQ(plan.source->id, was.front()->id) << key;
    // The same choice from another node's copy of the same layout.
    std::shared_ptr<const Placement> other = Placement::Create(JoinLayout()).value();
    EXPECT_EQ(PlanKeyHandoff(*other, key, kN).source->id, plan.source->id);
    for (const Member* g : plan.gainers) EXPECT_EQ(g->id, "n4") << key;
    if (!plan.gainers.empty()) {
      ++gained;
      ++designated[plan.source->id];
    }
  }
  // n4 gains ~3/4 of the keys (N=3 of 4 members); every old member is a designated source.
  EXPECT_NEAR(gained / 2000.0, 0.75, 0.08);
  EXPECT_EQ(designated.size(), 3u);
  // Outside a transition nobody gains anything.
  ClusterLayout stable;
  stable.version = 1;
  stable.members = Members(3);
  EXPECT_TRUE(PlanKeyHandoff(*Placement::Create(stable).value(), "key1", kN).gainers.empty());
}

// Phase 2's targets: the gainers for an old owner that is not the designated source, and every
// new owner for the owner that loses the key; in a leave down to N members nobody gains a key,
// but the leaving node still compares everything it holds with the owners that stay.
TEST(HandoffPlanTest, ComparesWithGainersAndTheLoserWithEveryNewOwner) {
  auto ids = [](const std::vector<const Member*>& members) {
    std::vector<std::string> out;
    for (const Member* m : members) out.push_back(m->id);
    std::sort(out.begin(), out.end());
    return out;
  };
  std::shared_ptr<const Placement> join = Placement::Create(JoinLayout()).value();
  int losers_seen = 0;
  for (int i = 0; i < 300; ++i) {
    const KeyHandoff plan = PlanKeyHandoff(*join, absl::StrCat("key", i), kN);
    if (plan.gainers.empty()) {
      for (const Member* o : plan.old_owners) EXPECT_TRUE(plan.CompareWith(o->id).empty());
      continue;
    }
    for (const Member* o : plan.old_owners) {
      const bool loses = ids(plan.new_owners) != ids(plan.old_owners) &&
                         !absl::c_linear_search(ids(plan.new_owners), o->id);
      if (loses) {
        ++losers_seen;
        EXPECT_EQ(ids(plan.CompareWith(o->id)), ids(plan.new_owners));
      } else if (o == plan.source) {
        EXPECT_TRUE(plan.CompareWith(o->id).empty());
      } else {
        EXPECT_EQ(ids(plan.CompareWith(o->id)), std::vector<std::string>{"n4"});
      }
    }
  }
  EXPECT_GT(losers_seen, 100);

  ClusterLayout leave;
  leave.version = 2;
  leave.members = Members(3);
  leave.next = {leave.members[0], leave.members[1]};
  leave.change = "leave n3";
  std::shared_ptr<const Placement> shrink = Placement::Create(leave).value();
  const KeyHandoff plan = PlanKeyHandoff(*shrink, "key1", kN);
  EXPECT_TRUE(plan.gainers.empty());
  EXPECT_EQ(ids(plan.CompareWith("n3")), (std::vector<std::string>{"n1", "n2"}));
  EXPECT_TRUE(plan.CompareWith("n1").empty());
}

TEST(HandoffPlanTest, AllSourcesStreamedNeedsEverySourceOfThisVersion) {
  const ClusterLayout layout = JoinLayout();
  std::vector<MemberView> views(4);
  for (int i = 0; i < 4; ++i) views[i].entry.member.id = absl::StrCat("n", i + 1);
  EXPECT_FALSE(AllSourcesStreamed(layout, views));
  for (int i = 0; i < 3; ++i) {
    views[i].entry.handoff.layout_version = 2;
    views[i].entry.handoff.phase = HandoffPhase::kComparing;
  }
  EXPECT_TRUE(AllSourcesStreamed(layout, views));  // n4 is no source
  views[1].entry.handoff.phase = HandoffPhase::kStreaming;
  EXPECT_FALSE(AllSourcesStreamed(layout, views));
  // A member of an earlier version reports only done.
  views[1].entry.handoff.phase = HandoffPhase::kNone;
  views[1].entry.handoff.done = true;
  EXPECT_TRUE(AllSourcesStreamed(layout, views));
  // Progress of another transition does not count.
  views[2].entry.handoff.layout_version = 1;
  EXPECT_FALSE(AllSourcesStreamed(layout, views));
  views.erase(views.begin() + 2);  // unknown to gossip
  EXPECT_FALSE(AllSourcesStreamed(layout, views));
}

// A member down for good (ClusterLayout::down) hands off nothing: the next old owner of each of
// its keys is the designated source in its place, and nobody waits for its progress.
TEST(HandoffPlanTest, AMemberDownIsNoSourceAndNobodyWaitsForIt) {
  ClusterLayout stable;
  stable.version = 1;
  stable.members = Members(4);
  ClusterLayout remove = PlanRemoveDown(stable, "n2").value();
  std::shared_ptr<const Placement> placement = Placement::Create(remove).value();
  std::shared_ptr<const Placement> leave =
      Placement::Create(PlanLeave(stable, "n2").value()).value();
  int in_its_place = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string key = absl::StrCat("key", i);
    const KeyHandoff plan = PlanKeyHandoff(*placement, key, kN);
    ASSERT_NE(plan.source, nullptr);
    EXPECT_NE(plan.source->id, "n2") << key;
    const std::vector<const Member*> was = placement->current().PreferenceList(key, kN);
    if (was.front()->id == "n2") {
      ++in_its_place;
      EXPECT_EQ(plan.source->id, was[1]->id) << key;
      // The source streams in phase 1 and so does not compare with the gainers in phase 2.
      for (const Member* g : plan.gainers) {
        const std::vector<const Member*> with = plan.CompareWith(plan.source->id);
        EXPECT_TRUE(std::none_of(with.begin(), with.end(), [&](const Member* m) {
          return m->id == g->id;
        })) << key;
      }
    } else {
      EXPECT_EQ(plan.source->id, was.front()->id) << key;
    }
    // Gainers and owners are those of a plain leave.
    EXPECT_EQ(plan.gainers.size(), PlanKeyHandoff(*leave, key, kN).gainers.size()) << key;
    // With an old owner down, each other old owner reaches every other new owner: in phase 1
    // (the designated source, to the gainers) or by comparing in phase 2.
    EXPECT_EQ(plan.owner_down, was.front()->id == "n2" || was[1]->id == "n2" || was[2]->id == "n2");
    if (!plan.owner_down) continue;
    for (const Member* o : was) {
      if (o->id == "n2") continue;
      const std::vector<const Member*> with = plan.CompareWith(o->id);
      for (const Member* x : plan.new_owners) {
        if (x->id == o->id) continue;
        const bool streamed = o == plan.source && absl::c_linear_search(plan.gainers, x);
        const bool compared = absl::c_linear_search(with, x);
        EXPECT_TRUE(streamed != compared) << key << ": " << o->id << " -> " << x->id;
      }
    }
  }
  EXPECT_NEAR(in_its_place / 2000.0, 0.25, 0.06);

  std::vector<MemberView> views(4);
  for (int i = 0; i < 4; ++i) views[i].entry.member.id = absl::StrCat("n", i + 1);
  for (int i : {0, 2, 3}) {
    views[i].entry.handoff.layout_version = remove.version;
    views[i].entry.handoff.phase = HandoffPhase::kComparing;
  }
  EXPECT_TRUE(AllSourcesStreamed(remove, views));
  EXPECT_EQ(MembershipChanger::SourcesWaiting(remove, views),
            (std::vector<std::string>{"n1 (phase 2)", "n3 (phase 2)", "n4 (phase 2)"}));
  for (int i : {0, 2, 3}) views[i].entry.handoff.done = true;
  EXPECT_TRUE(MembershipChanger::SourcesWaiting(remove, views).empty());
  // A plain leave waits for the leaving member.
  EXPECT_FALSE(AllSourcesStreamed(leave->layout(), views));
  EXPECT_EQ(MembershipChanger::SourcesWaiting(leave->layout(), views),
            std::vector<std::string>{"n2 (phase 1)"});
}

// n1 is removed down for good from n1..n4 and runs no sender. A write that only n1 and one other
// old owner held (acknowledged with W=2, its copy for the third still in n1's outbox) reaches
// every new owner, the owners that keep the key included, from that other old owner.
class RemoveDownHandoffTest : public HandoffTest {
 protected:
  RemoveDownHandoffTest() {
    ClusterLayout stable;
    stable.version = 1;
    stable.members = Members(4);
    layout_ = PlanRemoveDown(stable, "n1").value();
    sources_ = {1, 2, 3};
  }
};

TEST_F(RemoveDownHandoffTest, WritesOnlyTheMemberDownAndOneOtherHeldReachEveryNewOwner) {
  std::vector<std::string> keys;
  int held_by_two = 0;
  int by_the_source = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("key", i);
    const KeyHandoff plan = Plan(key);
    std::vector<int> others;  // the old owners but n1
    for (const Member* m : plan.old_owners) {
      if (m->id != "n1") others.push_back(IndexOf(m));
    }
    if (others.size() == plan.old_owners.size()) {  // n1 is no owner: every owner has it
      Put(others[0], key, "v-" + key);
      for (size_t j = 1; j < others.size(); ++j) Replicate(others[0], others[j], key);
    } else {
      // Alternately the designated source and the other one holds it with n1.
      const int other = others[i % 2];
      Put(0, key, "v-" + key);
      Replicate(0, other, key);
      ++held_by_two;
      by_the_source += nodes_[other].id == plan.source->id ? 1 : 0;
    }
    keys.push_back(key);
  }
  ASSERT_GT(held_by_two, 100);
  ASSERT_GT(by_the_source, 20);
  ASSERT_LT(by_the_source, held_by_two - 20);
  RunHandoff();
  int missing = 0;
  for (const std::string& key : keys) {
    for (const Member* m : Plan(key).new_owners) {
      if (!Encoded(IndexOf(m), key).ok()) {
        ++missing;
        ADD_FAILURE() << key << " missing on " << m->id;
      }
    }
  }
  EXPECT_EQ(missing, 0);
}

// A source's progress, with why it waits, travels in gossip; the error is cut to its bound.
TEST(HandoffProgressTest, TravelsInGossipWithItsErrorCut) {
  GossipDigest digest;
  MemberEntry entry;
  entry.member = Member{"n1", "h:1", ""};
  entry.handoff.layout_version = 3;
  entry.handoff.phase = HandoffPhase::kComparing;
  entry.handoff.keys = 5;
  entry.handoff.last_error = std::string(kMaxHandoffErrorBytes + 50, 'e');
  digest.members.push_back(entry);
  google::protobuf::RepeatedPtrField<internal::v1::GossipMember> wire;
  DigestToProto(digest, &wire);
  GossipDigest back = DigestFromProto("n1", wire);
  ASSERT_EQ(back.members.size(), 1u);
  const HandoffProgress& p = back.members[0].handoff;
  EXPECT_EQ(p.layout_version, 3u);
  EXPECT_EQ(p.phase, HandoffPhase::kComparing);
  EXPECT_EQ(p.keys, 5u);
  EXPECT_EQ(p.last_error, std::string(kMaxHandoffErrorBytes, 'e'));
}

TEST_F(HandoffTest, KeysNotMatchingAnswersMissingAndDifferentKeysInOrder) {
  Put(0, "same", "v");
  Replicate(0, 3, "same");
  Put(0, "differs", "v1");
  Replicate(0, 3, "differs");
  Put(0, "differs", "v2");  // n4 holds the older record
  Put(0, "missing", "v");
  Put(3, "only-there", "v");
  std::vector<KeyDigest> digests;
  for (const std::string key : {"missing", "same", "differs"}) {
    digests.push_back(KeyDigest{key, MerkleTree::RecordDigest(Encoded(0, key).value())});
  }
  digests.push_back(KeyDigest{"only-there", 12345});  // some other record
  absl::StatusOr<std::vector<std::string>> keys = KeysNotMatching(*nodes_[3].index, digests);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"missing", "differs", "only-there"}));
}

TEST_F(HandoffTest, EachGainedKeyCrossesOnceAndOthersSendOnlyDigests) {
  std::vector<std::string> all;
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("key", i);
    Put(0, key, std::string(100, 'x'));
    Replicate(0, 1, key);
    Replicate(0, 2, key);
    all.push_back(key);
  }
  RunHandoff();
  uint64_t gained = 0;
  std::map<std::string, uint64_t> designated;
  for (const std::string& key : all) {
    const KeyHandoff plan = Plan(key);
    if (plan.gainers.empty()) {
      EXPECT_FALSE(Encoded(3, key).ok()) << key << " was sent to a member that does not gain it";
      continue;
    }
    ++gained;
    ++designated[plan.source->id];
    EXPECT_EQ(Encoded(3, key).value(), Encoded(0, key).value()) << key;
    EXPECT_EQ(traffic_.records_per_key[key], 1u) << key;
  }
  EXPECT_EQ(traffic_.records, gained);
  // Digests: from the two other old owners to n4, and from the owner n4 replaces to every new
  // owner; all of them match, so no record crosses twice.
  std::map<std::string, uint64_t> digests;
  uint64_t total_digests = 0;
  for (const std::string& key : all) {
    const KeyHandoff plan = Plan(key);
    for (int i = 0; i < 3; ++i) {
      const size_t targets = plan.CompareWith(nodes_[i].id).size();
      digests[nodes_[i].id] += targets;
      total_digests += targets;
    }
  }
  EXPECT_GE(total_digests, 2 * gained);
  EXPECT_EQ(traffic_.digests, total_digests);
  for (int i = 0; i < 3; ++i) {
    const HandoffProgress& p = progress_[nodes_[i].id];
    EXPECT_EQ(p.keys, designated[nodes_[i].id]) << nodes_[i].id;
    EXPECT_EQ(p.compared_keys, 0u);
    EXPECT_EQ(p.digests, digests[nodes_[i].id]) << nodes_[i].id;
    EXPECT_GT(p.bytes, 100 * p.keys);
  }
}

// The safety net: keys the designated source lacks, or holds in an older version than another
// old owner (W=2 of 3 without it, its outbox entry pending or dropped), still reach n4 with the
// newest record, through phase 2.
TEST_F(HandoffTest, KeysTheDesignatedSourceLacksOrHoldsStaleReachTheNewOwner) {
  const std::vector<std::string> missing = GainedKeys("missing", 20);
  for (const std::string& key : missing) {
    const std::vector<int> others = Others(key);
    Put(others[0], key, "acknowledged by the two others");
    Replicate(others[0], others[1], key);
  }
  const std::vector<std::string> stale = GainedKeys("stale", 20);
  for (const std::string& key : stale) {
    const int source = IndexOf(Plan(key).source);
    Put(source, key, "v1");
    for (int other : Others(key)) Replicate(source, other, key);
    Put(Others(key)[1], key, "v2 on one other owner only");  // W=1, or the rest was lost
  }
  RunHandoff();
  // Every new owner ends with the newest record: n4 through the comparisons with it, and an old
  // owner that stays but lacked the write (the designated source here) through the comparison
  // the owner n4 replaces makes with every new owner.
  for (const std::string& key : missing) {
    ASSERT_TRUE(Encoded(3, key).ok()) << key << " never reached n4";
    for (const Member* owner : Plan(key).new_owners) {
      EXPECT_EQ(Encoded(IndexOf(owner), key).value(), Encoded(Others(key)[0], key).value())
          << key << " on " << owner->id;
    }
  }
  for (const std::string& key : stale) {
    ASSERT_TRUE(Encoded(3, key).ok()) << key;
    EXPECT_EQ(Encoded(3, key).value(), Encoded(Others(key)[1], key).value())
        << key << ": n4 lacks the newest version";
  }
  uint64_t compared = 0;
  for (int i = 0; i < 3; ++i) compared += progress_[nodes_[i].id].compared_keys;
  // Each missing or stale key is sent at least once to n4, and at most to each new owner by each
  // of the two owners holding it.
  EXPECT_GE(compared, missing.size() + stale.size());
  EXPECT_LE(compared, 2 * kN * (missing.size() + stale.size()));
}

// A new owner of an earlier version cannot compare digests (UNIMPLEMENTED): phase 2 then sends
// every record, and the handoff still completes with everything on the new owner.
// A gainer that is down is retried with a capped, jittered exponential backoff (not once a
// second for as long as it is down), and gets everything once it is back.
TEST_F(HandoffTest, ADownGainerIsRetriedWithAGrowingJitteredBackoff) {
  const std::vector<std::string> keys = GainedKeys("key", 20);
  for (const std::string& key : keys) {
    Put(0, key, "v");
    Replicate(0, 1, key);
    Replicate(0, 2, key);
  }
  transport_->down = "n4";
  HandoffSender::Options options;
  options.replication_factor = kN;
  options.bytes_per_second = 0;
  options.retry = absl::Milliseconds(200);
  options.max_retry = absl::Seconds(3);
  StartSendersWith(options);
  // 60 simulated seconds down: a fixed 200 ms retry would make about 300 attempts per source.
  for (int step = 0; step < 1200; ++step) scheduler_.Advance(absl::Milliseconds(50));
  EXPECT_FALSE(AllDone());
  const int attempts = transport_->refused;
  std::fprintf(stderr, "attempts while down: %d\n", attempts);
  EXPECT_GE(attempts, 3 * 10);  // the ceiling reaches 3 s within a few attempts, then stays
  EXPECT_LE(attempts, 3 * 80);
  transport_->down.clear();
  for (int step = 0; step < 1200 && !AllDone(); ++step) {
    scheduler_.Advance(absl::Milliseconds(50));
  }
  EXPECT_TRUE(AllDone());
  for (const std::string& key : keys) EXPECT_EQ(Encoded(3, key).value(), Encoded(0, key).value());
}

// A job that a newer layout ends (the change was replaced, or completed by another node) stops
// retrying: the error it published must not stay in the node's gossip entry, and none of its
// steps still under way may publish again.
TEST_F(HandoffTest, AJobEndedByANewerLayoutLeavesNoErrorBehind) {
  const std::vector<std::string> keys = GainedKeys("key", 20);
  for (const std::string& key : keys) Put(0, key, "v");
  transport_->down = "n4";
  HandoffSender::Options options;
  options.replication_factor = kN;
  options.bytes_per_second = 0;
  options.retry = absl::Milliseconds(200);
  StartSendersWith(options);
  for (int step = 0; step < 40; ++step) scheduler_.Advance(absl::Milliseconds(50));
  int waiting = 0;
  for (int i = 0; i < 3; ++i) waiting += progress_[nodes_[i].id].last_error.empty() ? 0 : 1;
  ASSERT_GT(waiting, 0) << "no source reported the down gainer";

  std::shared_ptr<const Placement> completed =
      Placement::Create(CompleteTransition(placement_->layout())).value();
  for (auto& sender : senders_) sender->OnPlacement(completed);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(progress_[nodes_[i].id].last_error, "") << nodes_[i].id;
  }
  // The ended jobs' retries, still scheduled, publish nothing.
  for (int step = 0; step < 200; ++step) scheduler_.Advance(absl::Milliseconds(50));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(progress_[nodes_[i].id].last_error, "") << nodes_[i].id;
    EXPECT_EQ(progress_[nodes_[i].id].layout_version, placement_->layout().version);
  }
}

// A record that cannot be read when a new owner asks for it is read again later; the records
// read before it in the same batch are sent, not dropped. Each key here has one old owner only
// (acknowledged with W=1, the rest lost), so nothing else would bring a dropped one.
TEST_F(HandoffTest, ARecordThatCannotBeReadIsRetriedWithoutDroppingTheOnesReadBefore) {
  const std::vector<std::string> missing = GainedKeys("missing", 20);
  for (const std::string& key : missing) Put(Others(key)[0], key, "on one old owner only");
  for (TestNode& node : nodes_) node.engine->failing_reads[missing[10]] = 2;
  RunHandoff();
  for (const std::string& key : missing) {
    EXPECT_EQ(Encoded(3, key).value_or("(none)"), Encoded(Others(key)[0], key).value()) << key;
  }
  EXPECT_EQ(nodes_[Others(missing[10])[0]].engine->failing_reads[missing[10]], 0);
}

// A record the gainer refuses for good holds the change up (completing without it could lose
// it), and the sources say why; once a write with the key's context resolves its siblings and
// the smaller record reaches the old owners, the retries send it and the handoff completes.
TEST_F(HandoffTest, ARefusedRecordHoldsTheChangeUpSaysWhyAndGoesThroughOnceResolved) {
  const std::vector<std::string> keys = GainedKeys("key", 12);
  const std::string big = keys[5];
  for (const std::string& key : keys) Put(0, key, "v");
  // Two blind writes more: three siblings, one of them large.
  Put(0, big, std::string(3000, 'x'));
  Put(0, big, "w");
  ASSERT_EQ(nodes_[0].store->ReadRecord(big)->siblings().size(), 3u);
  for (const std::string& key : keys) {
    Replicate(0, 1, key);
    Replicate(0, 2, key);
  }
  transport_->refuse_records_over = 2000;
  StartSenders();
  for (int step = 0; step < 600; ++step) scheduler_.Advance(absl::Milliseconds(50));
  EXPECT_FALSE(AllDone());
  const std::string source = Plan(big).source->id;
  EXPECT_FALSE(progress_[source].done);
  EXPECT_NE(progress_[source].last_error.find("sending records to n4: FAILED_PRECONDITION"),
            std::string::npos)
      << progress_[source].last_error;
  EXPECT_NE(progress_[source].last_error.find(big), std::string::npos)
      << progress_[source].last_error;
  // Escaped: gossip carries it in a UTF-8 string field.
  EXPECT_NE(progress_[source].last_error.find("bytes \\xff"), std::string::npos)
      << progress_[source].last_error;
  GossipDigest digest;
  digest.members.emplace_back();
  digest.members[0].member = Member{source, "h:1", ""};
  digest.members[0].handoff = progress_[source];
  internal::v1::GossipRequest request;
  DigestToProto(digest, request.mutable_members());
  internal::v1::GossipRequest parsed;
  EXPECT_TRUE(parsed.ParseFromString(request.SerializeAsString()));

  // The user resolves the siblings: a read, then a write with its context.
  const std::string context = nodes_[0].store->ReadRecord(big)->ClientContext().Encode();
  ASSERT_TRUE(nodes_[0].store->Write(WriteCommand{big, false, "resolved", context, ""}).ok());
  Replicate(0, 1, big);
  Replicate(0, 2, big);
  ASSERT_EQ(nodes_[1].store->ReadRecord(big)->siblings().size(), 1u);
  for (int step = 0; step < 1200 && !AllDone(); ++step) {
    scheduler_.Advance(absl::Milliseconds(50));
  }
  EXPECT_TRUE(AllDone());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(progress_[nodes_[i].id].last_error, "") << i;
  for (const std::string& key : keys) EXPECT_EQ(Encoded(3, key).value(), Encoded(0, key).value());
}

// Records that grew while their gainer was down are sent as first read: a retried batch never
// outgrows a message (the newer records go in phase 2, in batches of the usual size).
TEST_F(HandoffTest, RecordsThatGrewWhileTheGainerWasDownDoNotOutgrowTheRetriedBatch) {
  const std::vector<std::string> keys = GainedKeys("key", 40);
  for (const std::string& key : keys) {
    Put(0, key, "v");
    Replicate(0, 1, key);
    Replicate(0, 2, key);
  }
  transport_->down = "n4";
  transport_->max_batch_bytes = 6000;  // the senders' batches are of about 2,000 bytes
  StartSenders();
  for (int step = 0; step < 100; ++step) scheduler_.Advance(absl::Milliseconds(50));
  for (const std::string& key : keys) {
    const std::string context = nodes_[0].store->ReadRecord(key)->ClientContext().Encode();
    ASSERT_TRUE(
        nodes_[0].store->Write(WriteCommand{key, false, std::string(900, 'y'), context, ""}).ok());
    Replicate(0, 1, key);
    Replicate(0, 2, key);
  }
  transport_->down.clear();
  for (int step = 0; step < 2400 && !AllDone(); ++step) {
    scheduler_.Advance(absl::Milliseconds(50));
  }
  EXPECT_TRUE(AllDone());
  for (const std::string& key : keys) EXPECT_EQ(Encoded(3, key).value(), Encoded(0, key).value());
}

// A record purged (its tombstone) while its gainer was down is not sent from the copy read
// before: that copy may be the value the purged tombstone deleted.
TEST_F(HandoffTest, ARecordPurgedWhileTheGainerWasDownIsNotSentAgain) {
  const std::vector<std::string> keys = GainedKeys("key", 10);
  for (const std::string& key : keys) {
    Put(0, key, "v");
    Replicate(0, 1, key);
    Replicate(0, 2, key);
  }
  transport_->down = "n4";
  StartSenders();
  for (int step = 0; step < 100; ++step) scheduler_.Advance(absl::Milliseconds(50));
  const std::string purged = keys[4];
  for (int i = 0; i < 3; ++i) {
    WriteBatch batch;
    batch.Delete(Column::kData, purged);
    ASSERT_TRUE(nodes_[i].engine->Write(batch, WriteOptions{}).ok());
  }
  transport_->down.clear();
  for (int step = 0; step < 2400 && !AllDone(); ++step) {
    scheduler_.Advance(absl::Milliseconds(50));
  }
  EXPECT_TRUE(AllDone());
  EXPECT_TRUE(absl::IsNotFound(Encoded(3, purged).status())) << Encoded(3, purged).value_or("");
  for (const std::string& key : keys) {
    if (key != purged) {
      EXPECT_EQ(Encoded(3, key).value(), Encoded(0, key).value());
    }
  }
}

TEST_F(HandoffTest, GainerThatCannotCompareGetsEveryRecord) {
  transport_->compare_unimplemented = true;
  const std::vector<std::string> keys = GainedKeys("key", 30);
  for (const std::string& key : keys) {
    Put(0, key, "v");
    Replicate(0, 1, key);
    Replicate(0, 2, key);
  }
  RunHandoff();
  for (const std::string& key : keys) {
    EXPECT_EQ(Encoded(3, key).value(), Encoded(0, key).value()) << key;
    // Phase 1 once, then a record instead of each comparison.
    uint64_t expected = 1;
    for (int i = 0; i < 3; ++i) expected += Plan(key).CompareWith(nodes_[i].id).size();
    EXPECT_EQ(traffic_.records_per_key[key], expected) << key;
  }
}

}  // namespace
}  // namespace kv

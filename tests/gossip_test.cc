// Gossip membership and failure detection on a manual clock and an in-memory network:
// convergence, detection of a silent member within the timeout, recovery after it speaks again
// (paused, or restarted with a new incarnation), and learning members from a seed.
#include "node/gossip.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "node/forwarding_peer_transport.h"
#include "node/gossip_proto.h"
#include "node/history_check.h"
#include "node/layout_reservations.h"
#include "node/membership_change.h"
#include "node/operation_journal.h"
#include "node/operations.h"
#include "storage/memory_engine.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

// Runs timers on a ManualClock, in due order (FIFO among equal times), on the test's thread.
class ManualScheduler : public Scheduler {
 public:
  explicit ManualScheduler(ManualClock* clock) : clock_(clock) {}
  void RunAfter(absl::Duration delay, std::function<void()> fn) override {
    timers_.emplace(std::make_pair(clock_->Now() + delay, seq_++), std::move(fn));
  }
  // Moves time forward by `d` in 1 ms steps, running what comes due.
  void Advance(absl::Duration d) {
    const absl::Time end = clock_->Now() + d;
    while (clock_->Now() < end) {
      clock_->Advance(absl::Milliseconds(1));
      while (!timers_.empty() && timers_.begin()->first.first <= clock_->Now()) {
        std::function<void()> fn = std::move(timers_.begin()->second);
        timers_.erase(timers_.begin());
        fn();
      }
    }
  }

 private:
  ManualClock* const clock_;
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> timers_;
  uint64_t seq_ = 0;
};

// Delivers exchanges after 1 ms each way; nodes that are "cut off" neither send nor answer.
class FakeNetwork {
 public:
  explicit FakeNetwork(ManualScheduler* scheduler) : scheduler_(scheduler) {}

  class Endpoint : public GossipTransport {
   public:
    Endpoint(FakeNetwork* net, std::string address) : net_(net), address_(std::move(address)) {}
    void Gossip(const std::string& address, GossipDigest digest,
                std::function<void(absl::StatusOr<GossipDigest>)> done) override {
      ++net_->exchanges;
      net_->scheduler_->RunAfter(absl::Milliseconds(1), [this, address, digest = std::move(digest),
                                                         done = std::move(done)]() mutable {
        auto it = net_->servers_.find(address);
        if (it == net_->servers_.end() || net_->cut_.count(address) > 0 ||
            net_->cut_.count(address_) > 0) {
          done(absl::UnavailableError("unreachable"));
          return;
        }
        GossipDigest reply = it->second->HandleGossip(digest);
        net_->scheduler_->RunAfter(absl::Milliseconds(1),
                                   [reply = std::move(reply), done = std::move(done)]() mutable {
                                     done(std::move(reply));
                                   });
      });
    }

   private:
    FakeNetwork* const net_;
    const std::string address_;
  };

  void Serve(const std::string& address, Gossiper* gossiper) { servers_[address] = gossiper; }
  void Cut(const std::string& address) { cut_.insert(address); }
  void Heal(const std::string& address) { cut_.erase(address); }
  uint64_t exchanges = 0;

 private:
  ManualScheduler* const scheduler_;
  std::map<std::string, Gossiper*> servers_;
  std::set<std::string> cut_;
};

// `entry` (of member "n1") as another node reads it from a gossip message.
MemberEntry ThroughMessages(MemberEntry entry) {
  entry.member = Member{"n1", "h:1", ""};
  GossipDigest digest;
  digest.members.push_back(std::move(entry));
  internal::v1::GossipRequest request;
  DigestToProto(digest, request.mutable_members());
  return DigestFromProto("n2", request.members()).members.at(0);
}

class GossipTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSeed = 20240611;
  const absl::Duration kInterval = absl::Milliseconds(100);
  const absl::Duration kTimeout = absl::Seconds(1);

  void SetUp() override { std::cout << "seed " << kSeed << "\n"; }

  std::vector<Member> MakeMembers(int n) {
    std::vector<Member> members;
    for (int i = 0; i < n; ++i) {
      members.push_back(Member{absl::StrCat("n", i + 1), absl::StrCat("10.0.0.", i + 1, ":7700"),
                               absl::StrCat("z", i % 3)});
    }
    return members;
  }

  // Builds (or rebuilds, as a restart) node `i` and starts it.
  Gossiper* StartNode(size_t i, const std::vector<Member>& ring, Gossiper::Options options = {}) {
    if (nodes_.size() <= i) nodes_.resize(i + 1);
    Node& node = nodes_[i];
    const Member& self = all_[i];
    if (node.gossiper) node.gossiper->Shutdown();
    node.rng = std::make_unique<std::mt19937_64>(kSeed + i + 1000 * restarts_++);
    node.endpoint = std::make_unique<FakeNetwork::Endpoint>(&net_, self.address);
    options.interval = kInterval;
    options.failure_timeout = kTimeout;
    auto gossiper = std::make_unique<Gossiper>(self, ring, node.endpoint.get(), &scheduler_,
                                               &clock_, *node.rng, options);
    gossiper->SetListener([this, id = self.id](const std::string& member, Liveness, Liveness to) {
      events_.push_back(absl::StrCat(id, ":", member, "=", LivenessName(to)));
    });
    gossiper->SetHistoryListener([this, id = self.id](const std::string& conflict) {
      history_heard_.push_back(absl::StrCat(id, ": ", conflict));
    });
    // The old incarnation stays alive (timers may still point at it) but no longer serves.
    if (node.gossiper) retired_.push_back(std::move(node.gossiper));
    node.gossiper = std::move(gossiper);
    net_.Serve(self.address, node.gossiper.get());
    node.gossiper->Start();
    return node.gossiper.get();
  }

  void StartAll(int n) {
    all_ = MakeMembers(n);
    for (int i = 0; i < n; ++i) StartNode(i, all_);
  }

  // True if every running node other than those in `except` sees `member` as `want`.
  bool AllSee(const std::string& member, Liveness want, std::set<size_t> except = {}) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (except.count(i) > 0 || all_[i].id == member) continue;
      if (nodes_[i].gossiper->LivenessOf(member) != want) return false;
    }
    return true;
  }

  // True if every node but n1 (node 0) holds an entry of n1 for which `holds` is true.
  bool OthersSeeN1(const std::function<bool(const MemberEntry&)>& holds) {
    for (size_t i = 1; i < nodes_.size(); ++i) {
      for (const MemberView& view : nodes_[i].gossiper->Members()) {
        if (view.entry.member.id == "n1" && !holds(view.entry)) return false;
      }
    }
    return true;
  }

  // Node `i`'s whole table, as it would push it in an exchange.
  GossipDigest TableOf(size_t i) {
    GossipDigest digest;
    digest.from_id = all_[i].id;
    for (const MemberView& view : nodes_[i].gossiper->Members()) {
      digest.members.push_back(view.entry);
    }
    return digest;
  }

  // Advances in interval steps until `done` holds; returns the simulated time it took, or
  // InfiniteDuration after `limit`.
  absl::Duration AdvanceUntil(const std::function<bool()>& done, absl::Duration limit) {
    const absl::Time start = clock_.Now();
    while (clock_.Now() - start <= limit) {
      if (done()) return clock_.Now() - start;
      scheduler_.Advance(absl::Milliseconds(10));
    }
    return absl::InfiniteDuration();
  }

  struct Node {
    std::unique_ptr<std::mt19937_64> rng;
    std::unique_ptr<FakeNetwork::Endpoint> endpoint;
    std::unique_ptr<Gossiper> gossiper;
  };

  ManualClock clock_;
  ManualScheduler scheduler_{&clock_};
  FakeNetwork net_{&scheduler_};
  std::vector<Member> all_;
  std::vector<Node> nodes_;
  std::vector<std::unique_ptr<Gossiper>> retired_;
  std::vector<std::string> events_;
  std::vector<std::string> history_heard_;  // by the history listeners: "<node>: <conflict>"
  int restarts_ = 0;
};

TEST_F(GossipTest, EveryNodeSeesEveryOtherUpWithinAFewRounds) {
  StartAll(8);
  const absl::Duration took = AdvanceUntil(
      [&] {
        for (const Member& m : all_) {
          if (!AllSee(m.id, Liveness::kUp)) return false;
        }
        return true;
      },
      absl::Seconds(3));
  ASSERT_NE(took, absl::InfiniteDuration()) << "gossip did not converge";
  // Epidemic spread: far fewer rounds than members squared.
  EXPECT_LE(took, 10 * kInterval);
  std::cout << "8 nodes all UP everywhere after " << absl::FormatDuration(took) << "\n";
  // Stays converged: no false DOWN over many timeouts.
  scheduler_.Advance(absl::Seconds(10));
  for (const Member& m : all_) EXPECT_TRUE(AllSee(m.id, Liveness::kUp)) << m.id;
  for (const std::string& e : events_) EXPECT_EQ(e.find("DOWN"), std::string::npos) << e;
}

TEST_F(GossipTest, SilentMemberIsDownWithinTheTimeoutAndUpWhenItSpeaksAgain) {
  StartAll(5);
  ASSERT_NE(AdvanceUntil([&] { return AllSee("n3", Liveness::kUp); }, absl::Seconds(3)),
            absl::InfiniteDuration());
  net_.Cut(all_[2].address);  // like SIGSTOP: it neither sends nor answers
  const absl::Duration down =
      AdvanceUntil([&] { return AllSee("n3", Liveness::kDown, {2}); }, absl::Seconds(5));
  ASSERT_NE(down, absl::InfiniteDuration());
  // The timeout runs from the last advance each node saw, a few rounds before the cut at most.
  EXPECT_GE(down, kTimeout - 5 * kInterval);
  EXPECT_LE(down, kTimeout + 2 * kInterval);
  EXPECT_TRUE(nodes_[0].gossiper->IsDown("n3"));
  EXPECT_FALSE(nodes_[0].gossiper->IsDown("n2"));
  for (const Member& m : all_) {
    if (m.id != "n3") {
      EXPECT_TRUE(AllSee(m.id, Liveness::kUp, {2})) << m.id;
    }
  }
  net_.Heal(all_[2].address);
  const absl::Duration up =
      AdvanceUntil([&] { return AllSee("n3", Liveness::kUp); }, absl::Seconds(3));
  ASSERT_NE(up, absl::InfiniteDuration());
  EXPECT_LE(up, 10 * kInterval);
  std::cout << "DOWN after " << absl::FormatDuration(down) << ", UP again after "
            << absl::FormatDuration(up) << "\n";
  EXPECT_NE(std::find(events_.begin(), events_.end(), "n1:n3=DOWN"), events_.end());
  std::string last_about_n3;
  for (const std::string& e : events_) {
    if (e.find(":n3=") != std::string::npos) last_about_n3 = e;
  }
  EXPECT_NE(last_about_n3.find("=UP"), std::string::npos) << last_about_n3;
}

TEST_F(GossipTest, RestartedMemberWithNewIncarnationIsUpAgain) {
  StartAll(4);
  ASSERT_NE(AdvanceUntil([&] { return AllSee("n2", Liveness::kUp); }, absl::Seconds(3)),
            absl::InfiniteDuration());
  scheduler_.Advance(absl::Seconds(1));  // ten heartbeats more, so that a restart's are fewer
  net_.Cut(all_[1].address);
  ASSERT_NE(AdvanceUntil([&] { return AllSee("n2", Liveness::kDown, {1}); }, absl::Seconds(5)),
            absl::InfiniteDuration());
  const uint64_t old_heartbeat = nodes_[0].gossiper->Members()[1].entry.heartbeat;
  // A restart: its heartbeat starts over from 0, under a newer incarnation (later clock).
  net_.Heal(all_[1].address);
  StartNode(1, all_);
  ASSERT_NE(AdvanceUntil([&] { return AllSee("n2", Liveness::kUp); }, absl::Seconds(3)),
            absl::InfiniteDuration());
  const MemberView seen = nodes_[0].gossiper->Members()[1];
  EXPECT_EQ(seen.entry.member.id, "n2");
  EXPECT_LT(seen.entry.heartbeat, old_heartbeat);
  EXPECT_EQ(seen.entry.incarnation, nodes_[1].gossiper->Members()[1].entry.incarnation);
}

TEST_F(GossipTest, NewerIncarnationOfItselfIsRefuted) {
  all_ = MakeMembers(2);
  Gossiper::Options options;
  options.incarnation = 5;
  Gossiper* g = StartNode(0, all_, options);
  GossipDigest claim;
  MemberEntry me;
  me.member = all_[0];
  me.incarnation = 9;
  me.heartbeat = 100;
  claim.members.push_back(me);
  GossipDigest answer = g->HandleGossip(claim);
  ASSERT_EQ(answer.members.size(), 2u);
  EXPECT_EQ(answer.members[0].member.id, "n1");
  EXPECT_EQ(answer.members[0].incarnation, 10u);
}

TEST_F(GossipTest, NodeKnowingOnlyASeedLearnsEveryMember) {
  all_ = MakeMembers(4);
  std::vector<Member> ring(all_.begin(), all_.begin() + 3);
  for (size_t i = 0; i < 3; ++i) StartNode(i, ring);
  // n4 knows only itself and a seed address; the others do not list it. As kvnode does, it
  // starts from the layout the seeds gave it, which does not hold it yet.
  Gossiper::Options options;
  options.seeds = {all_[0].address};
  options.layout.version = 1;
  options.layout.members = ring;
  Gossiper* newcomer = StartNode(3, {all_[3]}, options);
  ASSERT_NE(AdvanceUntil(
                [&] {
                  for (size_t i = 0; i < 3; ++i) {
                    if (newcomer->LivenessOf(all_[i].id) != Liveness::kUp) return false;
                  }
                  return AllSee("n4", Liveness::kUp, {3});
                },
                absl::Seconds(3)),
            absl::InfiniteDuration());
  std::vector<MemberView> views = newcomer->Members();
  ASSERT_EQ(views.size(), 4u);
  for (const MemberView& v : views) {
    // Learned members keep their address and zone; the ring is the layout's (gossip puts
    // nobody on it: n4 is not, until a join).
    const size_t i = static_cast<size_t>(v.entry.member.id[1] - '1');
    EXPECT_EQ(v.entry.member, all_[i]);
    EXPECT_EQ(v.entry.ring_status,
              v.entry.member.id == "n4" ? RingStatus::kNone : RingStatus::kNormal);
  }
  for (const MemberView& v : nodes_[0].gossiper->Members()) {
    EXPECT_EQ(v.entry.ring_status,
              v.entry.member.id == "n4" ? RingStatus::kNone : RingStatus::kNormal);
  }
}

// Members that left the cluster (entries outside the layout that no longer answer) are not
// gossiped with as often as the members: each round's one exchange goes to a member of the
// layout, or to a node outside it that is UP, save one round in 16, so that heartbeats keep
// spreading in time and no live member is judged DOWN.
// A node of another cluster met through a reused address (here: n4 alone in its own layout,
// with n1's address among its seeds) is ignored both ways: no layout conflict, no member
// learned, no layout adopted, even a newer one.
TEST_F(GossipTest, ANodeOfAnotherClusterIsIgnored) {
  all_ = MakeMembers(4);
  std::vector<Member> ring(all_.begin(), all_.begin() + 3);
  for (size_t i = 0; i < 3; ++i) StartNode(i, ring);
  Gossiper::Options stranger_options;
  stranger_options.seeds = {all_[0].address};  // so that the two meet
  stranger_options.layout.version = 5;         // newer than the cluster's
  stranger_options.layout.members = {all_[3]};
  Gossiper* stranger = StartNode(3, {all_[3]}, stranger_options);
  // Long enough for many exchanges both ways (a seed is gossiped with every few rounds).
  EXPECT_EQ(AdvanceUntil([] { return false; }, 50 * kInterval), absl::InfiniteDuration());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(nodes_[i].gossiper->Layout().version, 1u) << all_[i].id;
    EXPECT_EQ(nodes_[i].gossiper->LayoutConflict(), "") << all_[i].id;
    EXPECT_EQ(nodes_[i].gossiper->LivenessOf("n4"), Liveness::kUnknown) << all_[i].id;
  }
  EXPECT_EQ(stranger->Layout().version, 5u);
  EXPECT_EQ(stranger->LayoutConflict(), "");
  EXPECT_EQ(stranger->LivenessOf("n1"), Liveness::kUnknown);
}

// The same with a stranger that took a member's id (default ids repeat across clusters): its
// layout does not hold the member it gossips with, and is not adopted; the member keeps the
// address its layout gives that id.
TEST_F(GossipTest, ANodeOfAnotherClusterWithAMembersIdIsIgnored) {
  all_ = MakeMembers(4);
  std::vector<Member> ring(all_.begin(), all_.begin() + 3);
  for (size_t i = 0; i < 3; ++i) StartNode(i, ring);
  all_[3].id = "n2";
  Gossiper::Options stranger_options;
  stranger_options.seeds = {all_[0].address};
  stranger_options.layout.version = 5;
  stranger_options.layout.members = {all_[3]};
  Gossiper* stranger = StartNode(3, {all_[3]}, stranger_options);
  EXPECT_EQ(AdvanceUntil([] { return false; }, 50 * kInterval), absl::InfiniteDuration());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(nodes_[i].gossiper->Layout().version, 1u) << all_[i].id;
    for (const MemberView& v : nodes_[i].gossiper->Members()) {
      if (v.entry.member.id == "n2") {
        EXPECT_EQ(v.entry.member.address, ring[1].address);
      }
    }
  }
  EXPECT_EQ(stranger->Layout().version, 5u);
}

// Members whose --peers lists write each other's addresses differently (names on one node,
// addresses on the others, as during a rolling change of the list) hold each other by id: they
// are one cluster and hear each other (the layouts differ, which shows as a layout conflict).
TEST_F(GossipTest, MembersListedAtOtherAddressesStillHearEachOther) {
  all_ = MakeMembers(3);
  std::vector<Member> named = all_;
  for (Member& m : named) m.address = absl::StrCat(m.id, ".kv.example:7700");
  const std::vector<Member> ring_of_n1 = {all_[0], named[1], named[2]};
  const std::vector<Member> ring_of_others = {named[0], all_[1], all_[2]};
  StartNode(0, ring_of_n1);
  StartNode(1, ring_of_others);
  StartNode(2, ring_of_others);
  for (size_t i = 0; i < 3; ++i) net_.Serve(named[i].address, nodes_[i].gossiper.get());
  ASSERT_NE(AdvanceUntil(
                [&] {
                  return AllSee("n1", Liveness::kUp, {0}) && AllSee("n2", Liveness::kUp, {1}) &&
                         AllSee("n3", Liveness::kUp, {2});
                },
                absl::Seconds(3)),
            absl::InfiniteDuration());
}

// A digest holding the entries of `count` nodes outside the layout, "gone1".."goneN", each at
// version (1, 1), as a node that heard of them gossips them.
GossipDigest DepartedNodes(int count) {
  GossipDigest departed;
  departed.from_id = "gone";
  for (int i = 1; i <= count; ++i) {
    MemberEntry entry;
    entry.member = Member{absl::StrCat("gone", i), absl::StrCat("10.0.9.", i, ":7700"), ""};
    entry.incarnation = 1;
    entry.heartbeat = 1;
    departed.members.push_back(entry);
  }
  return departed;
}

TEST_F(GossipTest, MembersThatLeftDoNotCrowdOutTheLiveOnes) {
  StartAll(3);
  const GossipDigest departed = DepartedNodes(6);
  for (Node& node : nodes_) node.gossiper->HandleGossip(departed);
  scheduler_.Advance(absl::Seconds(120));
  for (const std::string& e : events_) {
    if (e.find("=DOWN") != std::string::npos && e.find(":gone") == std::string::npos) {
      ADD_FAILURE() << "a live member was judged DOWN: " << e;
    }
  }
  EXPECT_TRUE(AllSee("gone1", Liveness::kDown));
}

// True if `gossiper` lists `id`.
bool Lists(const Gossiper& gossiper, absl::string_view id) {
  for (const MemberView& view : gossiper.Members()) {
    if (view.entry.member.id == id) return true;
  }
  return false;
}

// Entries of nodes outside the layout that stay silent are forgotten by every node after
// forget_after; a node that heard of them later and still holds them cannot gossip them back.
TEST_F(GossipTest, NodesOutsideTheLayoutThatStaySilentAreForgotten) {
  all_ = MakeMembers(3);
  Gossiper::Options options;
  options.forget_after = absl::Seconds(20);
  for (int i = 0; i < 3; ++i) StartNode(i, all_, options);
  const GossipDigest departed = DepartedNodes(2);
  // n1 and n2 hear of the departed nodes now, n3 (cut off meanwhile) only 10 s later: it holds
  // them for 10 s after the others have forgotten them.
  net_.Cut(all_[2].address);
  for (int i = 0; i < 2; ++i) nodes_[i].gossiper->HandleGossip(departed);
  scheduler_.Advance(absl::Seconds(10));
  nodes_[2].gossiper->HandleGossip(departed);
  scheduler_.Advance(absl::Seconds(9));
  for (Node& node : nodes_) {
    EXPECT_TRUE(Lists(*node.gossiper, "gone1"));
    EXPECT_EQ(node.gossiper->LivenessOf("gone1"), Liveness::kDown);
  }
  scheduler_.Advance(absl::Seconds(2));
  EXPECT_FALSE(Lists(*nodes_[0].gossiper, "gone1"));
  EXPECT_FALSE(Lists(*nodes_[1].gossiper, "gone2"));
  EXPECT_EQ(nodes_[0].gossiper->LivenessOf("gone1"), Liveness::kDown);  // while in quarantine
  // Members of the layout are never forgotten, however long they are silent: n3 is still listed.
  EXPECT_TRUE(Lists(*nodes_[0].gossiper, "n3"));
  EXPECT_EQ(nodes_[0].gossiper->LivenessOf("n3"), Liveness::kDown);
  // n3 still holds the departed entries; healed, it gossips them to n1 and n2, which keep them
  // out until n3 forgets them too.
  ASSERT_TRUE(Lists(*nodes_[2].gossiper, "gone1"));
  net_.Heal(all_[2].address);
  for (int i = 0; i < 2; ++i) nodes_[i].gossiper->HandleGossip(TableOf(2));
  scheduler_.Advance(absl::Seconds(5));
  ASSERT_TRUE(Lists(*nodes_[2].gossiper, "gone1"));
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(Lists(*nodes_[i].gossiper, "gone1")) << all_[i].id;
    EXPECT_FALSE(Lists(*nodes_[i].gossiper, "gone2")) << all_[i].id;
  }
  scheduler_.Advance(absl::Seconds(5));
  for (Node& node : nodes_) {
    EXPECT_FALSE(Lists(*node.gossiper, "gone1"));
    EXPECT_FALSE(Lists(*node.gossiper, "gone2"));
  }
  EXPECT_TRUE(AllSee("n3", Liveness::kUp));
  // n1 judged gone1 DOWN once: it never watched it again after forgetting it.
  EXPECT_EQ(std::count(events_.begin(), events_.end(), "n1:gone1=DOWN"), 1);
}

// A forgotten node that the cluster then joins again: a layout naming it (here in the same
// message as its newer entry, which a node applies after the layout) ends its quarantine, so
// its heartbeat makes it UP rather than DOWN until the quarantine would have run out.
TEST_F(GossipTest, ALayoutThatNamesAForgottenNodeEndsItsQuarantine) {
  all_ = MakeMembers(3);
  Gossiper::Options options;
  options.forget_after = absl::Seconds(10);
  for (int i = 0; i < 3; ++i) StartNode(i, all_, options);
  Gossiper& n1 = *nodes_[0].gossiper;
  MemberEntry entry;
  entry.member = Member{"j1", "10.0.8.1:7700", ""};
  entry.incarnation = 5;
  entry.heartbeat = 3;
  GossipDigest relayed;
  relayed.from_id = "n2";
  relayed.members.push_back(entry);
  n1.HandleGossip(relayed);
  scheduler_.Advance(absl::Seconds(11));
  ASSERT_EQ(n1.LivenessOf("j1"), Liveness::kDown);  // forgotten: in quarantine

  GossipDigest join = TableOf(1);
  join.layout = n1.Layout();
  join.layout.version += 1;
  join.layout.next = all_;
  join.layout.next.push_back(entry.member);
  join.layout.change = "join j1";
  entry.incarnation = 6;  // it came back
  join.members.push_back(entry);
  n1.HandleGossip(join);
  EXPECT_NE(n1.LivenessOf("j1"), Liveness::kDown);
  GossipDigest own;  // and its own heartbeat goes on
  own.from_id = "j1";
  entry.heartbeat = 10;
  own.members.push_back(entry);
  n1.HandleGossip(own);
  EXPECT_EQ(n1.LivenessOf("j1"), Liveness::kUp);
}

// A forgotten node that comes back (a newer entry: a restart, or its process resumed; or any
// entry it sends itself) is known again. A relayed copy of the forgotten version is not news and
// restarts the quarantine; once a quarantine ends, the same version is taken again (and forgotten
// again).
TEST_F(GossipTest, AForgottenNodeThatComesBackIsKnownAgain) {
  all_ = MakeMembers(3);
  Gossiper::Options options;
  options.forget_after = absl::Seconds(10);
  for (int i = 0; i < 3; ++i) StartNode(i, all_, options);
  Gossiper& n1 = *nodes_[0].gossiper;
  MemberEntry entry;
  entry.member = Member{"j1", "10.0.8.1:7700", ""};
  entry.incarnation = 5;
  entry.heartbeat = 3;
  GossipDigest relayed;  // j1's entry as a node that did not forget it passes it on
  relayed.from_id = "x9";
  relayed.members.push_back(entry);
  n1.HandleGossip(relayed);
  scheduler_.Advance(absl::Seconds(11));
  ASSERT_FALSE(Lists(n1, "j1"));
  EXPECT_EQ(n1.LivenessOf("j1"), Liveness::kDown);  // forgotten, and DOWN while in quarantine
  scheduler_.Advance(absl::Seconds(8));
  n1.HandleGossip(relayed);  // the same version: not news, and the quarantine starts again
  EXPECT_FALSE(Lists(n1, "j1"));
  scheduler_.Advance(absl::Seconds(8));  // 16 s after it was forgotten, 8 s after the relay
  n1.HandleGossip(relayed);
  EXPECT_FALSE(Lists(n1, "j1"));
  relayed.members[0].heartbeat = 4;  // resumed: a newer version, even relayed
  n1.HandleGossip(relayed);
  EXPECT_TRUE(Lists(n1, "j1"));
  EXPECT_EQ(n1.LivenessOf("j1"), Liveness::kUp);
  scheduler_.Advance(absl::Seconds(11));  // silent again: forgotten again, by every node
  for (Node& node : nodes_) EXPECT_FALSE(Lists(*node.gossiper, "j1"));
  // Its own entry is taken whatever its version (a clock that went back across a restart).
  GossipDigest own;
  own.from_id = "j1";
  own.members.push_back(entry);
  own.members[0].incarnation = 2;
  n1.HandleGossip(own);
  EXPECT_TRUE(Lists(n1, "j1"));
  EXPECT_EQ(n1.LivenessOf("j1"), Liveness::kUp);
  scheduler_.Advance(absl::Seconds(11));
  ASSERT_FALSE(Lists(n1, "j1"));
  // After a quarantine with no copy gossiped (another forget_after), the same version is taken
  // again, watched, and forgotten again once silent for forget_after.
  scheduler_.Advance(absl::Seconds(11));
  EXPECT_EQ(n1.LivenessOf("j1"), Liveness::kUnknown);
  n1.HandleGossip(own);
  EXPECT_TRUE(Lists(n1, "j1"));
  scheduler_.Advance(absl::Seconds(11));
  EXPECT_FALSE(Lists(n1, "j1"));
  // With forget_after infinite, nothing is forgotten.
  options.forget_after = absl::InfiniteDuration();
  StartNode(1, all_, options);
  nodes_[1].gossiper->HandleGossip(relayed);
  scheduler_.Advance(absl::Seconds(60));
  EXPECT_TRUE(Lists(*nodes_[1].gossiper, "j1"));
}

// A member removed from the layout (cluster remove of a member down for good) that has been
// silent for forget_after is forgotten at the next round, and stays DOWN to LivenessOf; a next
// owner of a transition is never forgotten, however long it is silent.
TEST_F(GossipTest, ARemovedMemberIsForgottenAndANextOwnerIsNot) {
  all_ = MakeMembers(4);
  Gossiper::Options options;
  options.forget_after = absl::Seconds(10);
  std::vector<Member> three(all_.begin(), all_.begin() + 3);
  for (int i = 0; i < 3; ++i) StartNode(i, three, options);
  Gossiper& n1 = *nodes_[0].gossiper;
  net_.Cut(all_[2].address);            // n3 dies
  ClusterLayout joining = n1.Layout();  // n4 joins meanwhile, and is silent too
  joining.version += 1;
  joining.next = all_;
  joining.change = "join n4";
  ASSERT_TRUE(n1.ProposeLayout(joining).ok());
  scheduler_.Advance(absl::Seconds(30));
  EXPECT_TRUE(Lists(n1, "n3"));
  EXPECT_TRUE(Lists(n1, "n4"));  // a next owner
  EXPECT_EQ(n1.LivenessOf("n4"), Liveness::kDown);
  ClusterLayout removed;
  removed.version = joining.version + 1;
  removed.members = {all_[0], all_[1], all_[3]};
  removed.change = "remove n3";
  ASSERT_TRUE(n1.ProposeLayout(removed).ok());
  scheduler_.Advance(kInterval + absl::Milliseconds(10));
  EXPECT_FALSE(Lists(n1, "n3"));
  EXPECT_EQ(n1.LivenessOf("n3"), Liveness::kDown);
  EXPECT_TRUE(Lists(n1, "n4"));
}

// A node that restarts (a newer incarnation) on another address is known by that address: a join
// is planned with it.
TEST_F(GossipTest, ARestartOnAnotherAddressIsLearned) {
  StartAll(3);
  scheduler_.Advance(absl::Seconds(1));
  GossipDigest joiner;
  joiner.from_id = "j1";
  MemberEntry entry;
  entry.member = Member{"j1", "10.0.8.1:7700", "z1"};
  entry.incarnation = 5;
  entry.heartbeat = 3;
  joiner.members.push_back(entry);
  nodes_[0].gossiper->HandleGossip(joiner);
  entry.member = Member{"j1", "10.0.8.1:7701", "z2"};  // restarted on another port
  entry.incarnation = 6;
  entry.heartbeat = 1;
  joiner.members = {entry};
  nodes_[0].gossiper->HandleGossip(joiner);
  std::string address;
  std::string zone;
  for (const MemberView& view : nodes_[0].gossiper->Members()) {
    if (view.entry.member.id == "j1") {
      address = view.entry.member.address;
      zone = view.entry.member.zone;
    }
  }
  EXPECT_EQ(address, "10.0.8.1:7701");
  EXPECT_EQ(zone, "z2");
}

TEST_F(GossipTest, OneExchangePerNodePerInterval) {
  StartAll(6);
  scheduler_.Advance(absl::Seconds(10));
  // 6 nodes, 100 rounds each (plus the first at start).
  EXPECT_GE(net_.exchanges, 6u * 100);
  EXPECT_LE(net_.exchanges, 6u * 102);
}

// A handoff milestone (phase change, done) reaches every member within one exchange's delay, not
// after epidemic rounds; progress within a phase waits for the next round.
TEST_F(GossipTest, HandoffMilestoneIsPushedToEveryMemberAtOnce) {
  StartAll(8);
  scheduler_.Advance(absl::Milliseconds(5));  // the first rounds are over; the next is 100ms away
  auto progress_seen = [this](uint64_t keys, HandoffPhase phase) {
    for (size_t i = 1; i < nodes_.size(); ++i) {
      for (const MemberView& view : nodes_[i].gossiper->Members()) {
        const HandoffProgress& p = view.entry.handoff;
        if (view.entry.member.id == "n1" &&
            (p.layout_version != 2 || p.keys != keys || p.phase != phase)) {
          return false;
        }
      }
    }
    return true;
  };
  HandoffProgress progress;
  progress.layout_version = 2;
  progress.phase = HandoffPhase::kStreaming;
  nodes_[0].gossiper->SetHandoffProgress(progress);
  EXPECT_LE(
      AdvanceUntil([&] { return progress_seen(0, HandoffPhase::kStreaming); }, absl::Seconds(1)),
      absl::Milliseconds(10));
  progress.keys = 7;  // not a milestone
  nodes_[0].gossiper->SetHandoffProgress(progress);
  scheduler_.Advance(absl::Milliseconds(10));
  EXPECT_FALSE(progress_seen(7, HandoffPhase::kStreaming));
  progress.phase = HandoffPhase::kComparing;
  nodes_[0].gossiper->SetHandoffProgress(progress);
  EXPECT_LE(
      AdvanceUntil([&] { return progress_seen(7, HandoffPhase::kComparing); }, absl::Seconds(1)),
      absl::Milliseconds(10));
}

// A member's word that its clean-up pass kept nothing (which the owners' tombstone reapers wait
// for) is pushed to every member at once.
TEST_F(GossipTest, ACleanUpPassThatKeptNothingIsPushedToEveryMemberAtOnce) {
  StartAll(4);
  scheduler_.Advance(absl::Milliseconds(5));
  auto seen = [this](uint64_t version) {
    return OthersSeeN1([&](const MemberEntry& e) { return e.clean_layout_version == version; });
  };
  EXPECT_TRUE(seen(0));
  nodes_[0].gossiper->SetCleanLayoutVersion(3);
  EXPECT_LE(AdvanceUntil([&] { return seen(3); }, absl::Seconds(1)), absl::Milliseconds(10));
  // The field travels in the gossip messages.
  MemberEntry entry;
  entry.clean_layout_version = 7;
  EXPECT_EQ(ThroughMessages(entry).clean_layout_version, 7u);
}

// A member's history generation (node/local_store.h) reaches the others with its heartbeats and
// never goes back within a run; a restart (a new incarnation) says it anew.
TEST_F(GossipTest, AGenerationTravelsAndNeverGoesBack) {
  all_ = MakeMembers(3);
  Gossiper::Options first;
  first.generation = 5;
  StartNode(0, all_, first);
  StartNode(1, all_);
  StartNode(2, all_);
  auto seen = [this](uint64_t generation) {
    return OthersSeeN1([&](const MemberEntry& e) { return e.generation == generation; });
  };
  ASSERT_NE(AdvanceUntil([&] { return seen(5); }, absl::Seconds(3)), absl::InfiniteDuration());
  nodes_[0].gossiper->SetGeneration(6);
  ASSERT_NE(AdvanceUntil([&] { return seen(6); }, absl::Seconds(3)), absl::InfiniteDuration());
  nodes_[0].gossiper->SetGeneration(4);  // never back
  scheduler_.Advance(10 * kInterval);
  EXPECT_TRUE(seen(6));

  // Before n1 gossips again after a restart, the others still hold its last run's generation,
  // which an exchange with an empty table reads without teaching them anything.
  class Direct : public GossipTransport {
   public:
    explicit Direct(std::map<std::string, Gossiper*> servers) : servers_(std::move(servers)) {}
    void Gossip(const std::string& address, GossipDigest digest,
                std::function<void(absl::StatusOr<GossipDigest>)> done) override {
      auto it = servers_.find(address);
      if (it == servers_.end()) return done(absl::UnavailableError("unreachable"));
      done(it->second->HandleGossip(digest));
    }

   private:
    std::map<std::string, Gossiper*> servers_;
  };
  Direct direct(
      {{all_[1].address, nodes_[1].gossiper.get()}, {all_[2].address, nodes_[2].gossiper.get()}});
  const PeerGenerations peers =
      AskPeerGenerations(&direct, "n1", {all_[0].address},
                         {all_[1].address, all_[2].address, "10.9.9.9:1"}, absl::Seconds(1));
  EXPECT_EQ(peers.highest, 6u);
  EXPECT_EQ(peers.asked, 3u);
  EXPECT_EQ(peers.answered, 2u);
  EXPECT_TRUE(seen(6));  // the exchanges changed nothing
  // An entry of "n1" at another address is another node of that id (another cluster's).
  EXPECT_EQ(
      AskPeerGenerations(&direct, "n1", {"10.8.8.8:7700"}, {all_[1].address}, absl::Seconds(1))
          .highest,
      0u);

  // An older node relaying n1's entry drops the field (0, with a later heartbeat): the others
  // keep what n1 said.
  {
    GossipDigest relayed;
    relayed.from_id = "n3";
    for (const MemberView& view : nodes_[1].gossiper->Members()) {
      if (view.entry.member.id != "n1") continue;
      MemberEntry entry = view.entry;
      entry.heartbeat += 1000;
      entry.generation = 0;
      relayed.members.push_back(entry);
    }
    ASSERT_EQ(relayed.members.size(), 1u);
    nodes_[1].gossiper->HandleGossip(relayed);
    EXPECT_TRUE(seen(6));
  }

  // A restart with a lower generation (an empty directory's with a new epoch, say) replaces it
  // in the others' tables, which keep the earlier run's apart (earlier_generation): the new run
  // learns what an earlier one reached, and with a new epoch that is nothing to report.
  Gossiper::Options restarted;
  restarted.generation = 2;
  restarted.new_epoch = true;
  clock_.Advance(absl::Seconds(1));  // a later incarnation
  Gossiper* n1 = StartNode(0, all_, restarted);
  ASSERT_NE(AdvanceUntil(
                [&] {
                  return OthersSeeN1([](const MemberEntry& e) {
                    return e.generation == 2 && e.earlier_generation == 6;
                  });
                },
                absl::Seconds(3)),
            absl::InfiniteDuration());
  scheduler_.Advance(3 * kInterval);
  EXPECT_EQ(n1->SelfGenerationSeen(), 6u);
  EXPECT_EQ(n1->HistoryConflict(), "");
  // The next start's check counts the earlier runs' generation too.
  EXPECT_EQ(
      AskPeerGenerations(&direct, "n1", {all_[0].address}, {all_[1].address}, absl::Seconds(1))
          .highest,
      6u);

  // The fields travel in the gossip messages.
  MemberEntry entry;
  entry.generation = 9;
  entry.earlier_generation = 12;
  entry.earlier_incarnation = 13;
  const MemberEntry through = ThroughMessages(entry);
  EXPECT_EQ(through.generation, 9u);
  EXPECT_EQ(through.earlier_generation, 12u);
  EXPECT_EQ(through.earlier_incarnation, 13u);
}

// A node whose start found no peer to ask learns later, from a peer that still holds an entry of
// its earlier run, that this run began from an older generation: it says so (HistoryConflict, and
// an error in the log), unless it took a new epoch at this start (its dots cannot collide).
TEST_F(GossipTest, AnEarlierRunsLaterGenerationIsReportedUnlessTheEpochIsNew) {
  all_ = MakeMembers(2);
  Gossiper::Options earlier;
  earlier.generation = 10;
  StartNode(0, all_, earlier);
  StartNode(1, all_);
  scheduler_.Advance(10 * kInterval);
  const GossipDigest held = TableOf(1);  // n2's table, holding n1's entry of the earlier run
  ASSERT_EQ(held.members.size(), 2u);

  for (const bool new_epoch : {false, true}) {
    Gossiper::Options restored;
    restored.generation = 3;  // the directory's, plus one
    restored.new_epoch = new_epoch;
    clock_.Advance(absl::Seconds(1));  // a later incarnation
    Gossiper* n1 = StartNode(0, all_, restored);
    EXPECT_EQ(n1->HistoryConflict(), "");
    n1->HandleGossip(held);  // n2 pushes before n1's new entry reached it
    if (new_epoch) {
      EXPECT_EQ(n1->HistoryConflict(), "");
    } else {
      EXPECT_TRUE(absl::StartsWith(n1->HistoryConflict(),
                                   "n2 holds history generation 10 of an earlier run of n1; "
                                   "this run started from 3"))
          << n1->HistoryConflict();
    }
  }
  // The listener heard the first run's conflict, once.
  ASSERT_EQ(history_heard_.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(history_heard_[0], "n1: n2 holds history generation 10"))
      << history_heard_[0];
}

// A restarted member's entry does not take its generation back: the others keep the highest they
// heard of it, across its runs. So a run that started below an earlier run's generation (its
// start found no peer to ask) learns it even when its own new entry reaches the others first.
TEST_F(GossipTest, ARunBelowAnEarlierRunsGenerationLearnsItWhicheverSideGossipsFirst) {
  all_ = MakeMembers(2);
  Gossiper::Options earlier;
  earlier.generation = 10;
  StartNode(0, all_, earlier);
  StartNode(1, all_);
  auto others_hold = [this](uint64_t generation) {
    return OthersSeeN1([&](const MemberEntry& e) { return e.generation == generation; });
  };
  ASSERT_NE(AdvanceUntil([&] { return others_hold(10); }, absl::Seconds(3)),
            absl::InfiniteDuration());

  Gossiper::Options restored;
  restored.generation = 3;
  clock_.Advance(absl::Seconds(1));  // a later incarnation
  Gossiper* n1 = StartNode(0, all_, restored);
  nodes_[1].gossiper->HandleGossip(TableOf(0));  // n1's table, pushed before n2 gossips
  // n2 took the new run's entry, and kept the earlier run's generation beside it.
  EXPECT_TRUE(OthersSeeN1(
      [](const MemberEntry& e) { return e.generation == 3 && e.earlier_generation == 10; }));
  EXPECT_EQ(n1->HistoryConflict(), "");
  EXPECT_EQ(n1->SelfGenerationSeen(), 0u);

  scheduler_.Advance(10 * kInterval);
  EXPECT_TRUE(absl::StartsWith(n1->HistoryConflict(),
                               "n2 holds history generation 10 of an earlier run of n1; this run "
                               "started from 3"))
      << n1->HistoryConflict();
  EXPECT_EQ(n1->SelfGenerationSeen(), 0u);  // not to move past: the next start must see it
  EXPECT_EQ(history_heard_.size(), 1u);     // once, however many rounds showed it
}

// A clean restart on a machine whose clock went back: the new run's incarnation is below the
// earlier run's, so a node that learned the new run first and the earlier run's entry next keeps
// the new run's generation as the "earlier" one. That value is of the node's own run (its
// incarnation says so), not a conflict.
TEST_F(GossipTest, AClockThatWentBackAcrossACleanRestartIsNoHistoryConflict) {
  all_ = MakeMembers(3);
  Gossiper::Options run_a;
  run_a.incarnation = 1000;
  run_a.generation = 100;
  StartNode(0, all_, run_a);
  StartNode(1, all_);
  ASSERT_NE(
      AdvanceUntil(
          [&] { return OthersSeeN1([](const MemberEntry& e) { return e.generation == 100; }); },
          absl::Seconds(3)),
      absl::InfiniteDuration());

  Gossiper::Options run_b;  // the same directory after a clean stop, the clock behind
  run_b.incarnation = 900;
  run_b.generation = 101;
  Gossiper* n1 = StartNode(0, all_, run_b);
  StartNode(2, all_);  // n3 never saw run A
  nodes_[2].gossiper->HandleGossip(TableOf(0));
  nodes_[2].gossiper->HandleGossip(TableOf(1));  // run A's entry, whose incarnation is higher
  bool n3_kept_run_b = false;
  for (const MemberView& view : nodes_[2].gossiper->Members()) {
    if (view.entry.member.id != "n1") continue;
    n3_kept_run_b = view.entry.earlier_generation == 101 && view.entry.earlier_incarnation == 900;
  }
  EXPECT_TRUE(n3_kept_run_b);

  scheduler_.Advance(20 * kInterval);
  EXPECT_EQ(n1->HistoryConflict(), "");
  EXPECT_TRUE(history_heard_.empty());
}

// An entry of this node's id at another address is another node's (another cluster's with the
// same id, say): its generation is no conflict, as it does not count at start either.
TEST_F(GossipTest, AnotherAddressesEntryOfThisIdIsNoHistoryConflict) {
  all_ = MakeMembers(2);
  Gossiper::Options run;
  run.generation = 5;
  Gossiper* n1 = StartNode(0, all_, run);
  StartNode(1, all_);
  scheduler_.Advance(5 * kInterval);
  GossipDigest from_n2 = TableOf(1);
  for (MemberEntry& entry : from_n2.members) {
    if (entry.member.id != "n1") continue;
    entry.member.address = "10.9.9.9:7700";
    entry.incarnation = 1;  // another run, as far as n1 can tell
    entry.generation = 50;
    entry.earlier_generation = 60;
    entry.earlier_incarnation = 2;
  }
  n1->HandleGossip(from_n2);
  EXPECT_EQ(n1->HistoryConflict(), "");
  EXPECT_EQ(n1->SelfGenerationSeen(), 0u);
}

// The start's generation is one above what the directory held, and an earlier run that reached
// it is enough: a copy made before the earlier run's first advance (the run gossiped only its
// start's generation) is older than that run too. A later run of the directory the earlier run
// left (it started above all of that run's generations) reports nothing.
TEST_F(GossipTest, AnEarlierRunThatReachedThisRunsStartGenerationIsAConflict) {
  all_ = MakeMembers(2);
  Gossiper::Options earlier;
  earlier.generation = 4;  // a start on a directory that held 3
  StartNode(0, all_, earlier);
  StartNode(1, all_);
  scheduler_.Advance(10 * kInterval);

  Gossiper::Options later;  // the same directory, after the earlier run's clean stop
  later.generation = 5;
  clock_.Advance(absl::Seconds(1));
  Gossiper* n1 = StartNode(0, all_, later);
  scheduler_.Advance(10 * kInterval);
  EXPECT_EQ(n1->HistoryConflict(), "");
  EXPECT_EQ(n1->SelfGenerationSeen(), 0u);  // kept its epoch: nothing to move past

  Gossiper::Options copy;  // a copy of the directory made before the earlier run: it held 3
  copy.generation = 4;
  clock_.Advance(absl::Seconds(1));
  n1 = StartNode(0, all_, copy);
  scheduler_.Advance(10 * kInterval);
  EXPECT_TRUE(absl::StartsWith(n1->HistoryConflict(),
                               "n2 holds history generation 5 of an earlier run of n1; this run "
                               "started from 4"))
      << n1->HistoryConflict();
}

// AskPeerGenerations waits at most its timeout for a peer that never answers.
TEST(AskPeerGenerationsTest, APeerThatNeverAnswersCostsTheTimeoutOnly) {
  class Silent : public GossipTransport {
   public:
    void Gossip(const std::string&, GossipDigest,
                std::function<void(absl::StatusOr<GossipDigest>)> done) override {
      kept_.push_back(std::move(done));  // answered after the call returned
    }
    void AnswerAll() {
      GossipDigest digest;
      digest.members.push_back(MemberEntry{});
      digest.members[0].member = Member{"n1", "h:1", ""};
      digest.members[0].generation = 3;
      for (auto& done : kept_) done(digest);
      kept_.clear();
    }

   private:
    std::vector<std::function<void(absl::StatusOr<GossipDigest>)>> kept_;
  };
  Silent silent;
  const PeerGenerations peers =
      AskPeerGenerations(&silent, "n1", {"h:1"}, {"h:2"}, absl::Milliseconds(50));
  EXPECT_EQ(peers.asked, 1u);
  EXPECT_EQ(peers.answered, 0u);
  EXPECT_EQ(peers.highest, 0u);
  silent.AnswerAll();  // late: ignored, and safe
}

// A member's level reaches the others with its heartbeats: an older node lowers the cluster's
// level, and its upgrade (a restart at the current level) raises it again.
TEST_F(GossipTest, FormatLevelsFollowWhatMembersSay) {
  all_ = MakeMembers(3);
  StartNode(0, all_);
  StartNode(1, all_);
  Gossiper::Options old;
  old.format_level = kLegacyFormatLevel;
  StartNode(2, all_, old);
  Gossiper& n1 = *nodes_[0].gossiper;
  // Not heard from yet: it may be a node built before levels.
  EXPECT_EQ(n1.MemberFormatLevel("n2"), kLegacyFormatLevel);
  EXPECT_EQ(n1.ClusterFormatLevel(), kLegacyFormatLevel);
  EXPECT_EQ(n1.MemberFormatLevel("n1"), kFormatLevel);
  EXPECT_EQ(n1.MemberFormatLevel("never-heard-of"), kLegacyFormatLevel);
  auto all_see = [&](uint32_t level) {
    for (size_t i = 0; i < 2; ++i) {
      if (nodes_[i].gossiper->ClusterFormatLevel() != level) return false;
      if (nodes_[i].gossiper->MemberFormatLevel("n3") != level) return false;
      if (nodes_[i].gossiper->MemberFormatLevel(all_[1 - i].id) != kFormatLevel) return false;
    }
    return true;
  };
  EXPECT_NE(AdvanceUntil([&] { return all_see(kLegacyFormatLevel); }, absl::Seconds(2)),
            absl::InfiniteDuration());
  EXPECT_EQ(n1.MemberFormatLevel("n2"), kFormatLevel);
  EXPECT_EQ(n1.MemberFormatLevel("n1"), kFormatLevel);
  EXPECT_EQ(nodes_[2].gossiper->ClusterFormatLevel(), kLegacyFormatLevel);  // itself counts

  StartNode(2, all_);  // upgraded: a newer incarnation (the clock moved on) at the current level
  EXPECT_NE(AdvanceUntil([&] { return all_see(kFormatLevel); }, absl::Seconds(2)),
            absl::InfiniteDuration());
}

// An entry that does not say its level is from a node built before levels were gossiped, and so
// may be a member not heard from yet. Only members of the layout count for the cluster's level.
TEST_F(GossipTest, MemberThatDoesNotSayItsLevelIsLegacy) {
  all_ = MakeMembers(2);
  Gossiper* g = StartNode(0, all_);
  EXPECT_EQ(g->MemberFormatLevel("n2"), kLegacyFormatLevel);  // not heard from yet
  EXPECT_EQ(g->ClusterFormatLevel(), kLegacyFormatLevel);

  MemberEntry n2;
  n2.member = all_[1];
  n2.incarnation = 3;
  n2.heartbeat = 1;
  n2.format_level = kFormatLevel;
  GossipDigest digest;
  digest.members = {n2};
  g->HandleGossip(digest);
  EXPECT_EQ(g->MemberFormatLevel("n2"), kFormatLevel);
  EXPECT_EQ(g->ClusterFormatLevel(), kFormatLevel);

  MemberEntry outsider;
  outsider.member = Member{"n9", "10.0.0.9:7700", "z0"};
  outsider.incarnation = 3;
  outsider.heartbeat = 1;
  digest.members = {outsider};
  g->HandleGossip(digest);
  EXPECT_EQ(g->MemberFormatLevel("n9"), kLegacyFormatLevel);
  EXPECT_EQ(g->ClusterFormatLevel(), kFormatLevel);

  n2.incarnation = 4;  // restarted as a node that does not say its level
  n2.format_level = 0;
  digest.members = {n2};
  g->HandleGossip(digest);
  EXPECT_EQ(g->MemberFormatLevel("n2"), kLegacyFormatLevel);
  EXPECT_EQ(g->ClusterFormatLevel(), kLegacyFormatLevel);

  n2.heartbeat = 2;
  n2.format_level = kFormatLevel;
  digest.members = {n2};
  g->HandleGossip(digest);
  EXPECT_EQ(g->ClusterFormatLevel(), kFormatLevel);
}

// A node outside the layout says whether its data directory holds records. A join is planned only
// on an entry the joiner made while up under the planner's layout version, and only if it holds
// none: its versions of keys deleted and purged meanwhile could come back (C8).
TEST_F(GossipTest, AJoinIsPlannedOnlyOnAFreshEntryOfANodeWithoutRecords) {
  all_ = MakeMembers(4);
  const std::vector<Member> ring(all_.begin(), all_.begin() + 3);
  for (size_t i = 0; i < 3; ++i) StartNode(i, ring);
  bool joiner_holds_records = true;
  int asked = 0;
  Gossiper::Options joiner;
  joiner.seeds = {all_[0].address};
  joiner.holds_records = [&] {
    ++asked;
    return joiner_holds_records;
  };
  StartNode(3, ring, joiner);
  OperationRegistry operations("n1", "1", &clock_, {});
  MembershipChanger changer(nodes_[0].gossiper.get(), &operations, &scheduler_, &clock_, {});
  auto plan_says = [&](absl::string_view text) {
    absl::Status planned = changer.MakePlan(MembershipChanger::Action::kJoin, "n4").status();
    return text.empty() ? planned.ok() : absl::StrContains(planned.message(), text);
  };
  EXPECT_NE(AdvanceUntil([&] { return plan_says("holds records from before"); }, absl::Seconds(3)),
            absl::InfiniteDuration());
  EXPECT_GT(asked, 0);

  // Emptied: the next asking (at most every 10 s) says so, and the join can be planned.
  joiner_holds_records = false;
  EXPECT_NE(AdvanceUntil([&] { return plan_says(""); }, absl::Seconds(12)),
            absl::InfiniteDuration());

  // Members are never asked.
  const int asked_by_joiner = asked;
  joiner.holds_records = [&] {
    ADD_FAILURE() << "a member was asked whether it holds records";
    return true;
  };
  Gossiper::Options member;
  member.holds_records = joiner.holds_records;
  StartNode(1, ring, member);
  scheduler_.Advance(absl::Seconds(11));
  EXPECT_GT(asked, asked_by_joiner);  // the joiner still is, every 10 s

  // Down: its last entry may be stale (say, from before it left, or from before a restart).
  nodes_[3].gossiper->Shutdown();
  EXPECT_NE(AdvanceUntil([&] { return plan_says("is not up"); }, absl::Seconds(3)),
            absl::InfiniteDuration());

  // An entry made under another layout version says nothing about this one.
  MemberEntry stale;
  stale.member = Member{"n9", "10.0.0.9:7700", "z0"};
  stale.incarnation = 5;
  stale.layout_version = 7;
  for (uint64_t heartbeat : {1, 2}) {
    stale.heartbeat = heartbeat;
    GossipDigest digest;
    digest.members = {stale};
    nodes_[0].gossiper->HandleGossip(digest);
  }
  absl::Status planned = changer.MakePlan(MembershipChanger::Action::kJoin, "n9").status();
  EXPECT_TRUE(absl::StrContains(planned.message(), "has not yet gossiped under layout version 1"))
      << planned;
  changer.Shutdown();
}

// The members' layout reservations as a transport: each peer answers from its own
// LayoutReservations against its gossiper's layout, or never (unreachable).
class ReservingTransport : public testing::StubPeerTransport {
 public:
  explicit ReservingTransport(const Clock* clock) {
    for (const char* id : {"n1", "n2", "n3", "n4", "n5"}) {
      reservations[id] = std::make_unique<LayoutReservations>(clock, LayoutReservations::Options());
    }
  }
  void ReserveLayout(const Member& peer, uint64_t version, LayoutBallot ballot, std::string change,
                     std::function<void(LayoutPromise)> done) override {
    ++asked;
    if (unreachable.count(peer.id) > 0) return;  // never answers
    done(reservations[peer.id]->Reserve(ballot, version, change, layouts.at(peer.id)()));
  }
  void AcceptLayout(const Member& peer, LayoutBallot ballot, ClusterLayout layout,
                    std::function<void(absl::Status)> done) override {
    ++accepts;
    if (unreachable.count(peer.id) > 0 || silent_accepts.count(peer.id) > 0) return;
    done(reservations[peer.id]->Accept(ballot, layout, layouts.at(peer.id)()));
  }

  void ReleaseLayout(const Member& peer, uint64_t version, LayoutBallot ballot) override {
    if (unreachable.count(peer.id) > 0) return;
    reservations[peer.id]->Release(ballot, version);
  }

  std::map<std::string, std::unique_ptr<LayoutReservations>> reservations;
  std::map<std::string, std::function<ClusterLayout()>> layouts;  // each peer's layout
  std::set<std::string> unreachable;
  std::set<std::string> silent_accepts;  // answer Reserve, never Accept
  // Read by tests while a commit runs on another thread.
  std::atomic<int> asked{0};
  std::atomic<int> accepts{0};
};

// n1..n4 are members and n5 waits to join; n1 commits through changer_, asking the others
// through a ReservingTransport.
class LayoutAgreementTest : public GossipTest {
 protected:
  void SetUp() override {
    GossipTest::SetUp();
    all_ = MakeMembers(5);
    const std::vector<Member> ring(all_.begin(), all_.begin() + 4);
    for (size_t i = 0; i < 4; ++i) StartNode(i, ring);
    Gossiper::Options joiner;
    joiner.seeds = {all_[0].address};
    joiner.holds_records = [] { return false; };
    StartNode(4, ring, joiner);
    MembershipChanger::Options options;
    options.reserve_timeout = absl::Milliseconds(100);
    changer_ = std::make_unique<MembershipChanger>(nodes_[0].gossiper.get(), &operations_,
                                                   &scheduler_, &clock_, options);
    // n5 too: during the join's transition it is asked as well (LayoutQuorum).
    for (size_t i = 0; i < 5; ++i) {
      transport_.layouts[all_[i].id] = [this, i] { return nodes_[i].gossiper->Layout(); };
    }
    changer_->SetReservations("n1", transport_.reservations["n1"].get(), &transport_);
    ASSERT_NE(AdvanceUntil(
                  [&] { return changer_->MakePlan(MembershipChanger::Action::kJoin, "n5").ok(); },
                  absl::Seconds(5)),
              absl::InfiniteDuration());
  }
  void TearDown() override {
    if (changer_ != nullptr) changer_->Shutdown();
  }

  absl::Status CommitJoin() {
    return changer_->Commit(MembershipChanger::Action::kJoin, "n5", 0).status();
  }
  // Whether n2..n4 hold layout `version` within 5 simulated seconds (gossip brings it).
  bool MembersHold(uint64_t version) {
    return AdvanceUntil(
               [&] {
                 for (size_t i = 1; i < 4; ++i) {
                   if (nodes_[i].gossiper->Layout().version != version) return false;
                 }
                 return true;
               },
               absl::Seconds(5)) != absl::InfiniteDuration();
  }

  // Sources n1..n4 say in gossip that they have handed off transition `version`'s keys.
  void EverySourceDone(uint64_t version) {
    for (size_t i = 0; i < 4; ++i) {
      HandoffProgress done;
      done.layout_version = version;
      done.phase = HandoffPhase::kComparing;
      done.done = true;
      nodes_[i].gossiper->SetHandoffProgress(done);
    }
  }

  OperationRegistry operations_{"n1", "1", &clock_, {}};
  ReservingTransport transport_{&clock_};
  std::unique_ptr<MembershipChanger> changer_;
};

// A member is removed down for good only once this node's failure detector has it DOWN, never
// this node, and only while every node it hears from says it honours the mark (an older node
// would drop it and wait for the member's handoff for good).
TEST_F(LayoutAgreementTest, ARemoveNeedsTheMemberDownAndEveryOtherMemberToKnowTheMark) {
  auto plan = [&](const std::string& id) {
    return changer_->MakePlan(MembershipChanger::Action::kRemoveDown, id).status();
  };
  absl::Status refused = plan("n4");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "node n4 is UP here")) << refused;
  refused = plan("n1");
  EXPECT_TRUE(absl::StrContains(refused.message(), "node n1 is this node")) << refused;
  net_.Cut(all_[3].address);
  ASSERT_NE(AdvanceUntil([&] { return plan("n4").ok(); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  absl::StatusOr<MembershipChanger::Plan> planned =
      changer_->MakePlan(MembershipChanger::Action::kRemoveDown, "n4");
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_EQ(planned->transition.down, std::vector<std::string>{"n4"});

  // n2 as an older node gossips it: no knows_members_down.
  GossipDigest digest;
  digest.from_id = "n2";
  for (const MemberView& view : nodes_[0].gossiper->Members()) {
    if (view.entry.member.id == "n2") digest.members.push_back(view.entry);
  }
  ASSERT_EQ(digest.members.size(), 1u);
  EXPECT_TRUE(digest.members[0].knows_members_down);
  digest.members[0].heartbeat += 1000;
  digest.members[0].knows_members_down = false;
  nodes_[0].gossiper->HandleGossip(digest);
  refused = plan("n4");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "node n2 runs a version")) << refused;
  // So does a node outside the layout (n5 waits to join), which would gossip the layout too.
  digest.members[0].heartbeat += 1;
  digest.members[0].knows_members_down = true;
  for (const MemberView& view : nodes_[0].gossiper->Members()) {
    if (view.entry.member.id == "n5") {
      digest.members.push_back(view.entry);
      digest.members.back().heartbeat += 1000;
      digest.members.back().knows_members_down = false;
    }
  }
  ASSERT_EQ(digest.members.size(), 2u);
  nodes_[0].gossiper->HandleGossip(digest);
  refused = plan("n4");
  EXPECT_TRUE(absl::StrContains(refused.message(), "node n5 runs a version")) << refused;
  digest.members[1].heartbeat += 1;
  digest.members[1].knows_members_down = true;
  nodes_[0].gossiper->HandleGossip(digest);
  EXPECT_TRUE(plan("n4").ok()) << plan("n4");
  digest.members.pop_back();

  // The mark's field travels in gossip, and so does the one that says completions are agreed on.
  GossipDigest honouring = digest;
  honouring.members[0].knows_members_down = true;
  honouring.members[0].agrees_completions = true;
  internal::v1::GossipRequest request;
  DigestToProto(honouring, request.mutable_members());
  EXPECT_TRUE(DigestFromProto("n2", request.members()).members[0].knows_members_down);
  EXPECT_TRUE(DigestFromProto("n2", request.members()).members[0].agrees_completions);
  honouring.members[0].agrees_completions = false;
  request.Clear();
  DigestToProto(honouring, request.mutable_members());
  EXPECT_FALSE(DigestFromProto("n2", request.members()).members[0].agrees_completions);
}

// A member that dies while a change runs would hold it up for good. Its remove commits the
// running transition without it at the version of the transition's completion: the members agree
// on one of the two (the completion is agreed on too). The running change's operation ends,
// naming the layout that replaced it.
TEST_F(LayoutAgreementTest, ARemoveDuringAChangeTakesTheVersionOfItsCompletion) {
  auto commit_join = changer_->Commit(MembershipChanger::Action::kJoin, "n5", 0);
  ASSERT_TRUE(commit_join.ok()) << commit_join.status();
  const ClusterLayout join = nodes_[0].gossiper->Layout();
  ASSERT_TRUE(join.in_transition());
  ASSERT_TRUE(MembersHold(join.version));

  // On a transition, a member takes the next version only as its completion or a removal.
  LayoutReservations member(&clock_, LayoutReservations::Options());
  ASSERT_TRUE(member.Reserve({1, "rival"}, join.version + 1, "leave n3", join).status.ok());
  ClusterLayout other = PlanLeave(CompleteTransition(join), "n3").value();
  other.version = join.version + 1;
  absl::Status under_way = member.Accept({1, "rival"}, other, join);
  EXPECT_TRUE(absl::IsFailedPrecondition(under_way)) << under_way;
  EXPECT_TRUE(absl::StrContains(under_way.message(), "under way")) << under_way;
  EXPECT_TRUE(member.Accept({1, "rival"}, PlanRemoveDown(join, "n4").value(), join).ok());
  LayoutReservations completing(&clock_, LayoutReservations::Options());
  EXPECT_TRUE(completing.Accept({1, "rival"}, CompleteTransition(join), join).ok());

  // n4 dies: the join waits for its handoff for good.
  net_.Cut(all_[3].address);
  transport_.unreachable = {"n4"};
  auto plan = [&] { return changer_->MakePlan(MembershipChanger::Action::kRemoveDown, "n4"); };
  ASSERT_NE(AdvanceUntil([&] { return plan().ok(); }, absl::Seconds(10)), absl::InfiniteDuration());
  absl::StatusOr<MembershipChanger::Plan> planned = plan();
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_EQ(planned->transition.version, join.version + 1);

  // A node heard from that completes changes unagreed (an older one) would race the remove.
  GossipDigest digest;
  digest.from_id = "n2";
  for (const MemberView& view : nodes_[0].gossiper->Members()) {
    if (view.entry.member.id == "n3") digest.members.push_back(view.entry);
  }
  ASSERT_EQ(digest.members.size(), 1u);
  EXPECT_TRUE(digest.members[0].agrees_completions);
  digest.members[0].heartbeat += 1000;
  digest.members[0].agrees_completions = false;
  nodes_[0].gossiper->HandleGossip(digest);
  absl::Status older = plan().status();
  EXPECT_TRUE(absl::IsFailedPrecondition(older)) << older;
  EXPECT_TRUE(absl::StrContains(older.message(), "node n3 runs a version that completes")) << older;
  digest.members[0].heartbeat += 1;
  digest.members[0].agrees_completions = true;
  nodes_[0].gossiper->HandleGossip(digest);
  ASSERT_TRUE(plan().ok()) << plan().status();
  // So would one that is down now, the member removed included: a node completing the change
  // asks it too, and would install the completion unagreed.
  GossipDigest down;
  down.from_id = "n2";
  for (const MemberView& view : nodes_[0].gossiper->Members()) {
    if (view.entry.member.id == "n4") down.members.push_back(view.entry);
  }
  ASSERT_EQ(down.members.size(), 1u);
  down.members[0].heartbeat += 1000;
  down.members[0].agrees_completions = false;
  nodes_[0].gossiper->HandleGossip(down);  // n4 heard from once more, then DOWN again
  auto n4_down = [&] {
    for (const MemberView& view : nodes_[0].gossiper->Members()) {
      if (view.entry.member.id == "n4") return view.liveness == Liveness::kDown;
    }
    return false;
  };
  ASSERT_NE(AdvanceUntil(n4_down, absl::Seconds(10)), absl::InfiniteDuration());
  absl::Status down_older = plan().status();
  EXPECT_TRUE(absl::IsFailedPrecondition(down_older)) << down_older;
  EXPECT_TRUE(absl::StrContains(down_older.message(), "completes a change without agreeing"))
      << down_older;
  down.members[0].heartbeat += 1;
  down.members[0].agrees_completions = true;
  nodes_[0].gossiper->HandleGossip(down);
  ASSERT_NE(AdvanceUntil([&] { return plan().ok(); }, absl::Seconds(10)), absl::InfiniteDuration());

  auto removed = changer_->Commit(MembershipChanger::Action::kRemoveDown, "n4", join.version);
  ASSERT_TRUE(removed.ok()) << removed.status();
  const ClusterLayout now = nodes_[0].gossiper->Layout();
  EXPECT_EQ(now.version, join.version + 1);
  EXPECT_EQ(now.members, join.members);
  EXPECT_EQ(now.down, std::vector<std::string>{"n4"});
  EXPECT_EQ(now.next.size(), 4u);
  for (const Member& m : now.next) EXPECT_NE(m.id, "n4");
  EXPECT_EQ(now.change, "join n5; remove n4 (down)");
  // The join's operation ends, naming what replaced it; the remove's runs (3 sources).
  ASSERT_NE(AdvanceUntil(
                [&] {
                  absl::StatusOr<OperationInfo> op = operations_.Get(commit_join->second);
                  return op.ok() && op->state != OperationState::kRunning;
                },
                absl::Seconds(5)),
            absl::InfiniteDuration());
  absl::StatusOr<OperationInfo> join_op = operations_.Get(commit_join->second);
  ASSERT_TRUE(join_op.ok());
  EXPECT_EQ(join_op->state, OperationState::kFailed);
  EXPECT_TRUE(absl::StrContains(join_op->error.message(), "replaced the transition"))
      << join_op->error;
  absl::StatusOr<OperationInfo> remove_op = operations_.Get(removed->second);
  ASSERT_TRUE(remove_op.ok());
  EXPECT_EQ(remove_op->state, OperationState::kRunning);
  EXPECT_EQ(remove_op->total, 3u);

  // Once every source that hands off has finished, the change completes by itself: no remove.
  for (size_t i = 1; i < 3; ++i) {
    HandoffProgress done;
    done.layout_version = now.version;
    done.phase = HandoffPhase::kComparing;
    done.done = true;
    nodes_[i].gossiper->SetHandoffProgress(done);
    if (i == 1) nodes_[0].gossiper->SetHandoffProgress(done);
  }
  ASSERT_NE(AdvanceUntil(
                [&] {
                  absl::Status s =
                      changer_->MakePlan(MembershipChanger::Action::kRemoveDown, "n3").status();
                  return absl::StrContains(s.message(),
                                           "has finished its handoff, so it completes once");
                },
                absl::Seconds(5)),
            absl::InfiniteDuration());
}

// A member whose own handoff is done may still hold the change up: the other sources stream and
// compare to it as a new owner. Its remove is refused only once every source has finished.
TEST_F(LayoutAgreementTest, ADoneSourceThatOthersStillSendToCanBeRemoved) {
  ASSERT_TRUE(changer_->Commit(MembershipChanger::Action::kLeave, "n4", 0).ok());
  const ClusterLayout leave = nodes_[0].gossiper->Layout();
  ASSERT_TRUE(MembersHold(leave.version));
  HandoffProgress done;
  done.layout_version = leave.version;
  done.phase = HandoffPhase::kComparing;
  done.done = true;
  nodes_[2].gossiper->SetHandoffProgress(done);  // n3 is done, then dies; n1, n2, n4 are not
  ASSERT_NE(AdvanceUntil(
                [&] {
                  for (const MemberView& view : nodes_[0].gossiper->Members()) {
                    if (view.entry.member.id == "n3") return view.entry.handoff.done;
                  }
                  return false;
                },
                absl::Seconds(5)),
            absl::InfiniteDuration());
  net_.Cut(all_[2].address);
  auto plan = [&] { return changer_->MakePlan(MembershipChanger::Action::kRemoveDown, "n3"); };
  ASSERT_NE(AdvanceUntil([&] { return plan().ok(); }, absl::Seconds(10)), absl::InfiniteDuration())
      << plan().status();
  EXPECT_EQ(plan()->transition.down, std::vector<std::string>{"n3"});
  EXPECT_EQ(plan()->transition.version, leave.version + 1);
}

// A change that runs past Options::timeout stays RUNNING, saying it is overdue: its transition
// stays in place and may still complete, which then ends the operation SUCCEEDED (it used to end
// FAILED at the timeout, and a later completion could not change that).
TEST_F(LayoutAgreementTest, AnOverdueChangeStaysRunningAndSucceedsWhenItCompletes) {
  changer_->Shutdown();
  MembershipChanger::Options options;
  options.reserve_timeout = absl::Milliseconds(100);
  options.timeout = absl::Seconds(2);
  changer_ = std::make_unique<MembershipChanger>(nodes_[0].gossiper.get(), &operations_,
                                                 &scheduler_, &clock_, options);
  changer_->SetReservations("n1", transport_.reservations["n1"].get(), &transport_);
  auto committed = changer_->Commit(MembershipChanger::Action::kJoin, "n5", 0);
  ASSERT_TRUE(committed.ok()) << committed.status();
  const std::string id = committed->second;
  const ClusterLayout join = nodes_[0].gossiper->Layout();
  ASSERT_TRUE(MembersHold(join.version));
  AdvanceUntil([] { return false; }, absl::Seconds(5));  // past the timeout, nobody handed off
  absl::StatusOr<OperationInfo> op = operations_.Get(id);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->state, OperationState::kRunning) << op->error;
  EXPECT_TRUE(absl::StrContains(op->message, "overdue")) << op->message;
  EXPECT_TRUE(absl::StrContains(op->message, "waiting for the handoff of")) << op->message;

  EverySourceDone(join.version);
  ASSERT_NE(AdvanceUntil([&] { return operations_.Get(id)->state != OperationState::kRunning; },
                         absl::Seconds(30)),
            absl::InfiniteDuration());
  op = operations_.Get(id);
  EXPECT_EQ(op->state, OperationState::kSucceeded) << op->error;
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, join.version + 1);
}

// A node that stops during its change leaves the operation RUNNING in its registry's journal
// (Suspend); the next run resumes it under the same id, and it ends SUCCEEDED once the sources
// are done and the completion is in place. Interrupted operations whose checkpoint names no
// transition here end FAILED, saying why.
TEST_F(LayoutAgreementTest, AChangeGoesOnUnderItsIdAfterItsNodeRestarts) {
  MemoryEngine disk;  // n1's data directory, across the restart
  EngineOperationJournal journal(&disk);
  auto run = std::make_unique<OperationRegistry>("n1", "a", &clock_, OperationRegistry::Options());
  ASSERT_TRUE(run->Load(&journal).ok());
  MembershipChanger::Options options;
  options.reserve_timeout = absl::Milliseconds(100);
  auto changer = std::make_unique<MembershipChanger>(nodes_[0].gossiper.get(), run.get(),
                                                     &scheduler_, &clock_, options);
  changer->SetReservations("n1", transport_.reservations["n1"].get(), &transport_);
  auto committed = changer->Commit(MembershipChanger::Action::kJoin, "n5", 0);
  ASSERT_TRUE(committed.ok()) << committed.status();
  const std::string id = committed->second;
  const ClusterLayout join = nodes_[0].gossiper->Layout();
  ASSERT_TRUE(MembersHold(join.version));
  // Two more operations the earlier run left: one of a layout the join replaced, one whose
  // checkpoint is not a layout version.
  const std::string replaced = run->Start("leave", "leave n4", 4, "sources", "1");
  const std::string unreadable = run->Start("leave", "leave n4", 4, "sources", "x");
  changer->Shutdown();
  absl::StatusOr<OperationInfo> op = run->Get(id);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->state, OperationState::kRunning);
  EXPECT_TRUE(absl::StrContains(op->message, "goes on when it restarts")) << op->message;
  changer.reset();
  run.reset();

  run = std::make_unique<OperationRegistry>("n1", "b", &clock_, OperationRegistry::Options());
  ASSERT_TRUE(run->Load(&journal).ok());
  changer = std::make_unique<MembershipChanger>(nodes_[0].gossiper.get(), run.get(), &scheduler_,
                                                &clock_, options);
  changer->SetReservations("n1", transport_.reservations["n1"].get(), &transport_);
  changer->Resume(run->TakeInterrupted({"join", "leave", "remove"}));
  run->FailInterrupted(absl::AbortedError("not resumed"));  // none left
  AdvanceUntil([] { return false; }, absl::Seconds(1));
  EXPECT_EQ(run->Get(id)->state, OperationState::kRunning);
  EXPECT_EQ(run->Get(replaced)->state, OperationState::kFailed);
  EXPECT_TRUE(absl::StrContains(run->Get(replaced)->error.message(),
                                "replaced the transition at version 1"))
      << run->Get(replaced)->error;
  EXPECT_EQ(run->Get(unreadable)->error.code(), absl::StatusCode::kDataLoss);

  EverySourceDone(join.version);
  ASSERT_NE(AdvanceUntil([&] { return run->Get(id)->state != OperationState::kRunning; },
                         absl::Seconds(30)),
            absl::InfiniteDuration());
  op = run->Get(id);
  EXPECT_EQ(op->state, OperationState::kSucceeded) << op->error;
  EXPECT_EQ(op->done, op->total);
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, join.version + 1);
  EXPECT_FALSE(nodes_[0].gossiper->Layout().in_transition());

  // A job that finds the layout more than one version past its transition cannot tell how that
  // ended.
  const std::string stale = run->Start("join", "join n5", 4, "sources", "1");
  changer->Resume({*run->Get(stale)});
  AdvanceUntil([] { return false; }, absl::Seconds(1));
  EXPECT_EQ(run->Get(stale)->error.code(), absl::StatusCode::kUnknown) << run->Get(stale)->error;
  // One whose checkpoint names the stable layout this node holds names no transition.
  const std::string stable =
      run->Start("join", "join n5", 4, "sources", absl::StrCat(join.version + 1));
  changer->Resume({*run->Get(stable)});
  AdvanceUntil([] { return false; }, absl::Seconds(1));
  EXPECT_EQ(run->Get(stable)->error.code(), absl::StatusCode::kDataLoss) << run->Get(stable)->error;
  changer->Shutdown();
}

// The completion of a transition and a remove during it take the same version: once a majority
// accepted the completion (its proposer stopped before installing it, say), a remove's
// agreement finds it and installs it instead, as for any change. Gossip never carries two layouts
// of the version.
TEST_F(LayoutAgreementTest, ACompletionAMajorityAcceptedWinsOverARemove) {
  ASSERT_TRUE(changer_->Commit(MembershipChanger::Action::kJoin, "n5", 0).ok());
  const ClusterLayout join = nodes_[0].gossiper->Layout();
  ASSERT_TRUE(MembersHold(join.version));
  // A rival proposer got the completion accepted by n2 and n3, then stopped.
  for (const char* id : {"n2", "n3"}) {
    LayoutReservations& member = *transport_.reservations[id];
    ASSERT_TRUE(member.Reserve({1, "rival"}, join.version + 1, "complete", join).status.ok());
    ASSERT_TRUE(member.Accept({1, "rival"}, CompleteTransition(join), join).ok());
  }
  clock_.Advance(LayoutReservations::Options().lease);  // its leases lapse
  net_.Cut(all_[3].address);
  transport_.unreachable = {"n4"};
  ASSERT_NE(
      AdvanceUntil(
          [&] { return changer_->MakePlan(MembershipChanger::Action::kRemoveDown, "n4").ok(); },
          absl::Seconds(10)),
      absl::InfiniteDuration());
  auto removed = changer_->Commit(MembershipChanger::Action::kRemoveDown, "n4", join.version);
  ASSERT_FALSE(removed.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(removed.status())) << removed.status();
  EXPECT_TRUE(absl::StrContains(removed.status().message(), "installed it instead"))
      << removed.status();
  const ClusterLayout now = nodes_[0].gossiper->Layout();
  EXPECT_EQ(now.version, join.version + 1);
  EXPECT_FALSE(now.in_transition());
  EXPECT_TRUE(SameLayout(now, CompleteTransition(join))) << DescribeLayout(now);
}

// Two commits at once on two nodes must not both install a layout version (gossip keeps the first
// layout of a version a node sees: the cluster would split for good). A commit proposes only with
// the version reserved by a majority of the current members.
TEST_F(LayoutAgreementTest, ACommitNeedsItsLayoutVersionReservedByAMajority) {
  ReservingTransport& transport = transport_;
  const uint64_t before = nodes_[0].gossiper->Layout().version;
  auto rival_reserves = [&](const char* member, uint64_t version, uint64_t current,
                            bool in_transition) {
    ClusterLayout layout = nodes_[0].gossiper->Layout();
    layout.version = current;
    layout.next = in_transition ? layout.members : std::vector<Member>();
    layout.change = in_transition ? "join n5" : "";
    return transport.reservations[member]
        ->Reserve({1, "rival"}, version, "leave n2", layout)
        .status;
  };

  // Another commit holds the next version on n3 and n4: n1 and n2 are half of the members, not a
  // majority. Refused, nothing proposed.
  for (const char* id : {"n3", "n4"})
    ASSERT_TRUE(rival_reserves(id, before + 1, before, false).ok());
  auto commit = [&] { return CommitJoin(); };
  absl::Status refused = commit();
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "reserved by 2 of 4 members")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "reserved by rival for \"leave n2\""))
      << refused;
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, before);

  // Members that do not answer grant nothing: UNAVAILABLE, and a retry may succeed.
  clock_.Advance(LayoutReservations::Options().lease);  // the rival's reservations lapse
  transport.unreachable = {"n3", "n4"};
  absl::Status unavailable = commit();
  EXPECT_TRUE(absl::IsUnavailable(unavailable)) << unavailable;
  EXPECT_TRUE(absl::StrContains(unavailable.message(), "n3: no answer yet")) << unavailable;
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, before);

  // A majority is enough: n1 (itself), n2 and n3 grant, n4 does not answer.
  transport.unreachable = {"n4"};
  absl::Status committed = commit();
  EXPECT_TRUE(committed.ok()) << committed;
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, before + 1);
  // n3 promised the version to n1: the rival cannot get it there.
  absl::Status taken = rival_reserves("n3", before + 1, before, false);
  EXPECT_TRUE(absl::IsFailedPrecondition(taken)) << taken;

  // Only the version after a member's own can be reserved there: a member ahead of the
  // proposer refuses, one behind it answers UNAVAILABLE (gossip brings it the layout).
  absl::Status ahead = rival_reserves("n2", before + 1, before + 1, false);
  EXPECT_TRUE(absl::IsFailedPrecondition(ahead)) << ahead;
  EXPECT_TRUE(absl::StrContains(ahead.message(), "cannot be reserved here")) << ahead;
  absl::Status behind = rival_reserves("n2", before + 3, before + 1, false);
  EXPECT_TRUE(absl::IsUnavailable(behind)) << behind;
}

// A commit that got its layout accepted by a majority and stopped before installing it (or
// whose installed layout never left it) leaves that layout chosen: a later commit of the version
// must install that one, not its own, or the cluster could split into two layouts of it.
TEST_F(LayoutAgreementTest, ACommitInstallsTheLayoutAMajorityAcceptedBeforeIt) {
  const ClusterLayout current = nodes_[0].gossiper->Layout();
  absl::StatusOr<ClusterLayout> rivals = PlanLeave(current, "n2");
  ASSERT_TRUE(rivals.ok()) << rivals.status();
  for (const char* id : {"n2", "n3", "n4"}) {
    LayoutReservations& member = *transport_.reservations[id];
    ASSERT_TRUE(member.Reserve({1, "rival"}, current.version + 1, "leave n2", current).status.ok());
    ASSERT_TRUE(member.Accept({1, "rival"}, *rivals, current).ok());
  }
  // The rival stopped here. Its promises lapse, and n1's commit of another change finds its
  // layout among the promises: n1 installs it and says so.
  clock_.Advance(LayoutReservations::Options().lease);
  const absl::Status finished = CommitJoin();
  EXPECT_TRUE(absl::IsFailedPrecondition(finished)) << finished;
  EXPECT_TRUE(absl::StrContains(finished.message(), "from an earlier commit by rival")) << finished;
  EXPECT_TRUE(absl::StrContains(finished.message(), "instead of \"join n5\"")) << finished;
  EXPECT_TRUE(SameLayout(nodes_[0].gossiper->Layout(), *rivals))
      << DescribeLayout(nodes_[0].gossiper->Layout());
  // Gossip spreads it: every member ends on the rival's layout, and none reports a conflict.
  EXPECT_NE(AdvanceUntil(
                [&] {
                  for (size_t i = 0; i < 4; ++i) {
                    if (!SameLayout(nodes_[i].gossiper->Layout(), *rivals)) return false;
                  }
                  return true;
                },
                absl::Seconds(10)),
            absl::InfiniteDuration());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(nodes_[i].gossiper->LayoutConflict(), "") << i;
}

// A proposer got its layout accepted by n1 and n2 (a minority) and stopped: nobody commits
// anything, yet the layout may be chosen, so it must not hang there. n1's watch finishes it once
// the proposer's lease is over: it agrees on the version again and installs the layout.
TEST_F(LayoutAgreementTest, AnAcceptedLayoutNobodyInstalledIsFinishedByTheWatch) {
  const ClusterLayout current = nodes_[0].gossiper->Layout();
  absl::StatusOr<ClusterLayout> rivals = PlanLeave(current, "n4");
  ASSERT_TRUE(rivals.ok()) << rivals.status();
  for (const char* id : {"n1", "n2"}) {
    LayoutReservations* member = transport_.reservations[id].get();
    ASSERT_TRUE(
        member->Reserve({1, "rival"}, current.version + 1, "leave n4", current).status.ok());
    ASSERT_TRUE(member->Accept({1, "rival"}, *rivals, current).ok());
  }
  changer_->StartWatching();
  const absl::Duration took = AdvanceUntil(
      [&] {
        for (size_t i = 0; i < 4; ++i) {
          if (!SameLayout(nodes_[i].gossiper->Layout(), *rivals)) return false;
        }
        return true;
      },
      absl::Seconds(30));
  ASSERT_NE(took, absl::InfiniteDuration()) << DescribeLayout(nodes_[0].gossiper->Layout());
  // Not before the rival's promises lapsed (they keep other proposers out meanwhile).
  EXPECT_GE(took, LayoutReservations::Options().lease - absl::Seconds(1));
}

// The same during a transition: a remove during it that a majority accepted and nobody installed
// is finished by the watch of a member that accepted it.
TEST_F(LayoutAgreementTest, AnAcceptedRemoveDuringAChangeIsFinishedByTheWatch) {
  ASSERT_TRUE(changer_->Commit(MembershipChanger::Action::kJoin, "n5", 0).ok());
  const ClusterLayout join = nodes_[0].gossiper->Layout();
  ASSERT_TRUE(MembersHold(join.version));
  const ClusterLayout removal = PlanRemoveDown(join, "n4").value();
  for (const char* id : {"n1", "n2"}) {
    LayoutReservations* member = transport_.reservations[id].get();
    ASSERT_TRUE(member->Reserve({1, "rival"}, removal.version, removal.change, join).status.ok());
    ASSERT_TRUE(member->Accept({1, "rival"}, removal, join).ok());
  }
  net_.Cut(all_[3].address);  // n4 is down: n1..n3 make the majority without it
  transport_.unreachable = {"n4"};
  changer_->StartWatching();
  const absl::Duration took = AdvanceUntil(
      [&] {
        for (size_t i = 0; i < 3; ++i) {
          if (!SameLayout(nodes_[i].gossiper->Layout(), removal)) return false;
        }
        return true;
      },
      absl::Seconds(30));
  ASSERT_NE(took, absl::InfiniteDuration()) << DescribeLayout(nodes_[0].gossiper->Layout());
}

// A failed commit releases the leases its promises took, in phase 1 or phase 2: another node's
// commit goes through at once instead of being refused, with the failed change named, until they
// lapse. Through a ForwardingPeerTransport, as kvnode's decorated transport passes the release on.
TEST_F(LayoutAgreementTest, AFailedCommitReleasesItsLeases) {
  ForwardingPeerTransport forwarding(&transport_);
  changer_->SetReservations("n1", transport_.reservations["n1"].get(), &forwarding);
  auto rival_promised = [&](const char* id, uint64_t round) {
    return transport_.reservations[id]->Reserve({round, "rival"},
                                                nodes_[0].gossiper->Layout().version + 1,
                                                "leave n4", nodes_[0].gossiper->Layout());
  };

  transport_.unreachable = {"n3", "n4"};  // phase 1: n1 and n2 grant, no majority
  const absl::Status reserved = CommitJoin();
  ASSERT_TRUE(absl::IsUnavailable(reserved)) << reserved;
  for (const char* id : {"n1", "n2"}) {
    const LayoutPromise rival = rival_promised(id, kMaxLayoutRound - 1);
    EXPECT_TRUE(rival.status.ok()) << id << ": " << rival.status;
  }

  // Phase 2: every member promises (the rival's promises lapse first), n1 and n2 accept, n3 and n4
  // do not answer: no majority. The leases of the promises that granted phase 1 go too.
  clock_.Advance(LayoutReservations::Options().lease);
  transport_.unreachable.clear();
  transport_.silent_accepts = {"n3", "n4"};
  const absl::Status accepted = CommitJoin();
  ASSERT_TRUE(absl::IsUnavailable(accepted)) << accepted;
  ASSERT_TRUE(absl::StrContains(accepted.message(), "was accepted by 2 of 4")) << accepted;
  for (const char* id : {"n2", "n3"}) {
    const LayoutPromise rival = rival_promised(id, kMaxLayoutRound);
    EXPECT_TRUE(rival.status.ok()) << id << ": " << rival.status;
    // n2 hands the rival the layout it accepted (the promise and the accept stay).
    if (std::string(id) == "n2") {
      EXPECT_TRUE(rival.accepted.has_value());
    }
  }
}

// A commit waits for the members' answers for up to reserve_timeout, twice in phase 1 and once in
// phase 2. Shutdown ends the wait at once, so a commit (or the watch's recovery) never holds up
// the node's shutdown that long.
class ShutdownDuringCommitTest : public LayoutAgreementTest {
 protected:
  // Commits the join of n5 on another thread through `changer_` made with a long reserve
  // timeout; once `counter` (the transport's asks or accepts) grew by 3 (n2, n3 and n4 were
  // asked, and the commit waits for answers that never come), shuts the changer down and
  // returns the commit's status. Fails the test if the commit still waits 30 s later.
  absl::Status CommitUntilShutdown(const std::atomic<int>& counter) {
    MembershipChanger::Options options;
    options.reserve_timeout = absl::Seconds(90);
    changer_ = std::make_unique<MembershipChanger>(nodes_[0].gossiper.get(), &operations_,
                                                   &scheduler_, &clock_, options);
    changer_->SetReservations("n1", transport_.reservations["n1"].get(), &transport_);
    const int before = counter;
    absl::Status status;
    absl::Notification done;
    std::thread commit([&] {
      status = CommitJoin();
      done.Notify();
    });
    while (counter < before + 3) absl::SleepFor(absl::Milliseconds(1));
    changer_->Shutdown();
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)))
        << "the commit still waits for the members' answers after Shutdown";
    commit.join();
    return status;
  }
};

TEST_F(ShutdownDuringCommitTest, PromisesNotAnswered) {
  transport_.unreachable = {"n2", "n3", "n4"};
  const uint64_t before = nodes_[0].gossiper->Layout().version;
  const absl::Status status = CommitUntilShutdown(transport_.asked);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "shutting down; nothing changed")) << status;
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, before);
  // Nobody is asked after Shutdown (a promise would lease the version to a stopped node).
  const int asked_at_shutdown = transport_.asked;
  EXPECT_TRUE(absl::IsUnavailable(CommitJoin()));
  EXPECT_EQ(transport_.asked, asked_at_shutdown);
}

// In phase 2 the commit must not claim that nothing changed: the members that accepted the layout
// may still install it.
TEST_F(ShutdownDuringCommitTest, AcceptsNotAnswered) {
  transport_.silent_accepts = {"n2", "n3", "n4"};
  const absl::Status status = CommitUntilShutdown(transport_.accepts);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "was being accepted")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "nothing changed")) << status;
}

// n1 and n2 both accepted a layout nobody installed, and both tried to finish it at the same
// moment: each holds its own promise, n4 does not answer, so neither reached a majority. Their
// watches retry after a lease plus a delay fixed per node, so one of them wins the next time
// instead of both renewing their own promise forever.
TEST_F(LayoutAgreementTest, TwoMembersFinishingTheSameLayoutDoNotLockEachOtherOut) {
  const ClusterLayout current = nodes_[0].gossiper->Layout();
  absl::StatusOr<ClusterLayout> rivals = PlanLeave(current, "n4");
  ASSERT_TRUE(rivals.ok()) << rivals.status();
  for (const char* id : {"n1", "n2"}) {
    LayoutReservations& member = *transport_.reservations[id];
    ASSERT_TRUE(member.Reserve({1, "rival"}, current.version + 1, "leave n4", current).status.ok());
    ASSERT_TRUE(member.Accept({1, "rival"}, *rivals, current).ok());
  }
  clock_.Advance(LayoutReservations::Options().lease);
  const uint64_t round = static_cast<uint64_t>(absl::ToUnixMicros(clock_.Now()));
  for (const char* id : {"n1", "n2"}) {  // the attempts that met each other
    LayoutReservations& member = *transport_.reservations[id];
    ASSERT_TRUE(member.Reserve({round, id}, current.version + 1, "leave n4", current).status.ok());
  }
  transport_.unreachable = {"n4"};
  OperationRegistry operations("n2", "1", &clock_, {});
  MembershipChanger::Options options;
  options.reserve_timeout = absl::Milliseconds(100);
  MembershipChanger second(nodes_[1].gossiper.get(), &operations, &scheduler_, &clock_, options);
  second.SetReservations("n2", transport_.reservations["n2"].get(), &transport_);
  changer_->StartWatching();
  second.StartWatching();
  const absl::Duration took = AdvanceUntil(
      [&] {
        for (size_t i = 0; i < 4; ++i) {
          if (!SameLayout(nodes_[i].gossiper->Layout(), *rivals)) return false;
        }
        return true;
      },
      absl::Minutes(2));
  second.Shutdown();
  EXPECT_NE(took, absl::InfiniteDuration()) << DescribeLayout(nodes_[0].gossiper->Layout());
}

// Members may hold different accepted layouts (a proposer whose phase 2 reached a minority, then
// a later ballot's): the commit finishes the one of the highest ballot, which is the only one a
// majority can have accepted.
TEST_F(LayoutAgreementTest, TheAcceptedLayoutOfTheHighestBallotIsTheOneInstalled) {
  const ClusterLayout current = nodes_[0].gossiper->Layout();
  absl::StatusOr<ClusterLayout> first = PlanLeave(current, "n2");
  absl::StatusOr<ClusterLayout> second = PlanLeave(current, "n3");
  ASSERT_TRUE(first.ok() && second.ok());
  auto promise_and_accept = [&](const char* id, const LayoutBallot& ballot,
                                const ClusterLayout& layout) {
    LayoutReservations& member = *transport_.reservations[id];
    ASSERT_TRUE(member.Reserve(ballot, current.version + 1, layout.change, current).status.ok());
    ASSERT_TRUE(member.Accept(ballot, layout, current).ok());
  };
  promise_and_accept("n2", {1, "early"}, *first);
  clock_.Advance(LayoutReservations::Options().lease);
  promise_and_accept("n3", {2, "late"}, *second);
  promise_and_accept("n4", {2, "late"}, *second);
  clock_.Advance(LayoutReservations::Options().lease);
  const absl::Status finished = CommitJoin();
  EXPECT_TRUE(absl::StrContains(finished.message(), "from an earlier commit by late")) << finished;
  EXPECT_TRUE(SameLayout(nodes_[0].gossiper->Layout(), *second))
      << DescribeLayout(nodes_[0].gossiper->Layout());
}

// A member that promised a higher round (another proposer's clock runs ahead) refuses the
// commit's first ballot, and tells it the round to beat: the commit retries once above it.
TEST_F(LayoutAgreementTest, ACommitRetriesAboveARoundPromisedElsewhere) {
  const ClusterLayout current = nodes_[0].gossiper->Layout();
  const uint64_t ahead = absl::ToUnixMicros(clock_.Now()) + 3'600'000'000;  // an hour ahead
  for (const char* id : {"n2", "n3", "n4"}) {
    ASSERT_TRUE(transport_.reservations[id]
                    ->Reserve({ahead, "rival"}, current.version + 1, "leave n2", current)
                    .status.ok());
  }
  clock_.Advance(LayoutReservations::Options().lease);
  const absl::Status committed = CommitJoin();
  EXPECT_TRUE(committed.ok()) << committed;
  EXPECT_EQ(transport_.asked, 6) << "one retry of phase 1 on the three other members";
  EXPECT_EQ(nodes_[0].gossiper->Layout().version, current.version + 1);
  EXPECT_EQ(nodes_[0].gossiper->Layout().change, "join n5");
}

// Answers layout agreement calls from the members' acceptors on other threads, after up to 2 ms,
// and loses some requests (not applied) and some answers (applied, never answered).
class RacingTransport : public testing::StubPeerTransport {
 public:
  RacingTransport(std::map<std::string, LayoutReservations*> acceptors,
                  std::map<std::string, Gossiper*> gossipers, uint64_t seed)
      : acceptors_(std::move(acceptors)), gossipers_(std::move(gossipers)), rng_(seed) {}
  ~RacingTransport() override { Join(); }

  void ReserveLayout(const Member& peer, uint64_t version, LayoutBallot ballot, std::string change,
                     std::function<void(LayoutPromise)> done) override {
    LayoutReservations* acceptor = acceptors_.at(peer.id);
    Gossiper* gossiper = gossipers_.at(peer.id);
    Send([=, done = std::move(done)](bool answer) {
      LayoutPromise promise = acceptor->Reserve(ballot, version, change, gossiper->Layout());
      if (answer) done(std::move(promise));
    });
  }
  void AcceptLayout(const Member& peer, LayoutBallot ballot, ClusterLayout layout,
                    std::function<void(absl::Status)> done) override {
    LayoutReservations* acceptor = acceptors_.at(peer.id);
    Gossiper* gossiper = gossipers_.at(peer.id);
    Send([=, done = std::move(done)](bool answer) {
      absl::Status accepted = acceptor->Accept(ballot, layout, gossiper->Layout());
      if (answer) done(std::move(accepted));
    });
  }
  // Waits for every delivery.
  void Join() {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) thread.join();
  }

 private:
  void Send(std::function<void(bool)> deliver) {
    absl::MutexLock lock(&mu_);
    const int fate = std::uniform_int_distribution<int>(0, 9)(rng_);
    if (fate == 0) return;  // the request is lost
    const absl::Duration delay =
        absl::Microseconds(std::uniform_int_distribution<int>(0, 2000)(rng_));
    threads_.emplace_back([deliver = std::move(deliver), delay, answer = fate != 1] {
      absl::SleepFor(delay);
      deliver(answer);
    });
  }

  const std::map<std::string, LayoutReservations*> acceptors_;
  const std::map<std::string, Gossiper*> gossipers_;
  absl::Mutex mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// Three nodes commit three different changes of the same version at once, over and over, with
// answers delayed, lost and reordered and no lease to keep proposers apart (ballots alone order
// them): every node that installs the version installs the same layout.
TEST_F(GossipTest, ConcurrentCommitsWithLostAnswersInstallOneLayoutPerVersion) {
  all_ = MakeMembers(4);
  const std::vector<std::pair<std::string, std::string>> changes = {
      {"n1", "n4"}, {"n2", "n3"}, {"n3", "n2"}};  // proposer, leaving node
  int installed_runs = 0;
  int commits_ok = 0;
  int finished_others = 0;
  for (int run = 0; run < 60; ++run) {
    for (size_t i = 0; i < 4; ++i) StartNode(i, all_);
    const uint64_t before = nodes_[0].gossiper->Layout().version;
    LayoutReservations::Options no_lease;
    no_lease.lease = absl::ZeroDuration();
    std::vector<std::unique_ptr<LayoutReservations>> acceptors;
    std::map<std::string, LayoutReservations*> acceptor_of;
    std::map<std::string, Gossiper*> gossiper_of;
    for (size_t i = 0; i < 4; ++i) {
      acceptors.push_back(std::make_unique<LayoutReservations>(&clock_, no_lease));
      acceptor_of[all_[i].id] = acceptors.back().get();
      gossiper_of[all_[i].id] = nodes_[i].gossiper.get();
    }
    RacingTransport transport(acceptor_of, gossiper_of, kSeed + run);
    struct Proposer {
      std::unique_ptr<ManualScheduler> scheduler;
      std::unique_ptr<OperationRegistry> operations;
      std::unique_ptr<MembershipChanger> changer;
    };
    std::vector<Proposer> proposers(changes.size());
    MembershipChanger::Options options;
    options.reserve_timeout = absl::Milliseconds(10);
    for (size_t p = 0; p < changes.size(); ++p) {
      Proposer& proposer = proposers[p];
      proposer.scheduler = std::make_unique<ManualScheduler>(&clock_);
      proposer.operations = std::make_unique<OperationRegistry>(changes[p].first, "1", &clock_,
                                                                OperationRegistry::Options());
      proposer.changer = std::make_unique<MembershipChanger>(
          gossiper_of[changes[p].first], proposer.operations.get(), proposer.scheduler.get(),
          &clock_, options);
      proposer.changer->SetReservations(changes[p].first, acceptor_of[changes[p].first],
                                        &transport);
    }
    std::vector<std::thread> threads;
    std::vector<std::string> outcomes(changes.size());
    for (size_t p = 0; p < changes.size(); ++p) {
      threads.emplace_back([&, p] {
        for (int attempt = 0; attempt < 3; ++attempt) {
          const absl::Status status =
              proposers[p]
                  .changer->Commit(MembershipChanger::Action::kLeave, changes[p].second, 0)
                  .status();
          outcomes[p] = status.ToString();
          if (!absl::IsUnavailable(status)) break;
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    transport.Join();
    for (Proposer& proposer : proposers) proposer.changer->Shutdown();

    std::optional<ClusterLayout> installed;
    std::string layouts;
    for (size_t i = 0; i < 4; ++i) {
      const ClusterLayout layout = nodes_[i].gossiper->Layout();
      absl::StrAppend(&layouts, all_[i].id, ": ", DescribeLayout(layout), "\n");
      if (layout.version == before) continue;
      ASSERT_EQ(layout.version, before + 1) << layouts;
      if (!installed.has_value()) installed = layout;
      EXPECT_TRUE(SameLayout(layout, *installed)) << "run " << run << "\n" << layouts;
    }
    for (const std::string& outcome : outcomes) {
      commits_ok += outcome == "OK" ? 1 : 0;
      finished_others += absl::StrContains(outcome, "from an earlier commit") ? 1 : 0;
    }
    installed_runs += installed.has_value() ? 1 : 0;
    if (HasFailure()) {
      for (const std::string& outcome : outcomes) std::cout << outcome << "\n";
      break;
    }
  }
  std::cout << installed_runs << " of 60 runs installed a layout; " << commits_ok
            << " commits succeeded, " << finished_others
            << " installed another commit's accepted layout\n";
  EXPECT_GT(installed_runs, 0) << "no run got any layout agreed: the test shows nothing";
}

// A member's stored promise (kvnode's meta column) reads back as it was; damaged bytes or an
// accepted layout that could not be used are DATA_LOSS, not a silently forgotten promise.
TEST(LayoutAcceptorStateTest, EncodesAndDecodes) {
  LayoutAcceptorState state;
  state.version = 7;
  state.promised = {123, "n2"};
  ClusterLayout accepted;
  accepted.version = 7;
  accepted.members = {Member{"n1", "10.0.0.1:7700", ""}, Member{"n2", "10.0.0.2:7700", "z"}};
  accepted.next = {accepted.members[0]};
  accepted.change = "leave n2";
  state.accepted = accepted;
  state.accepted_ballot = {120, "n1"};
  absl::StatusOr<LayoutAcceptorState> back = DecodeAcceptorState(EncodeAcceptorState(state));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version, 7u);
  EXPECT_EQ(back->promised, state.promised);
  ASSERT_TRUE(back->accepted.has_value());
  EXPECT_TRUE(SameLayout(*back->accepted, accepted));
  EXPECT_EQ(back->accepted_ballot, state.accepted_ballot);

  LayoutAcceptorState promised_only;
  promised_only.version = 3;
  promised_only.promised = {1, "n1"};
  back = DecodeAcceptorState(EncodeAcceptorState(promised_only));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->accepted.has_value());

  EXPECT_TRUE(absl::IsDataLoss(DecodeAcceptorState("\xff\xff\xff").status()));
  accepted.members.push_back(accepted.members[0]);  // a repeated member
  state.accepted = accepted;
  EXPECT_TRUE(absl::IsDataLoss(DecodeAcceptorState(EncodeAcceptorState(state)).status()));
}

// Gossip never adopts a layout of the version it holds, so two layouts of one version (a split
// that layout reservations do not rule out everywhere) would stay unnoticed. A node that hears
// of one reports it, and forgets it once a newer layout arrives.
TEST_F(GossipTest, AnotherLayoutOfTheSameVersionIsReportedAsAConflict) {
  StartAll(3);
  scheduler_.Advance(absl::Seconds(3));  // ordinary rounds: every node gossips the same layout
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(nodes_[i].gossiper->LayoutConflict(), "") << i;

  const ClusterLayout ours = nodes_[0].gossiper->Layout();
  GossipDigest digest;
  digest.from_id = "n2";
  digest.layout = ours;
  digest.layout.next = {ours.members[0], ours.members[1]};
  digest.layout.change = "leave n3";
  nodes_[0].gossiper->HandleGossip(digest);
  const std::string conflict = nodes_[0].gossiper->LayoutConflict();
  EXPECT_TRUE(absl::StrContains(
      conflict, absl::StrCat("n2 gossips layout version ", ours.version,
                             ": owners n1,n2,n3 -> n1,n2 (leave n3), this node holds version ",
                             ours.version, ": owners n1,n2,n3")))
      << conflict;
  EXPECT_EQ(nodes_[0].gossiper->Layout().next.size(), 0u) << "the other layout was adopted";
  // The same members in another order (each node's --peers listing itself first) are the same
  // layout, not a conflict.
  ASSERT_TRUE(nodes_[1].gossiper->LayoutConflict().empty());
  GossipDigest reordered;
  reordered.from_id = "n3";
  reordered.layout = ours;
  std::reverse(reordered.layout.members.begin(), reordered.layout.members.end());
  nodes_[1].gossiper->HandleGossip(reordered);
  EXPECT_EQ(nodes_[1].gossiper->LayoutConflict(), "");

  ClusterLayout newer = ours;
  newer.version = ours.version + 2;
  ASSERT_TRUE(nodes_[0].gossiper->ProposeLayout(newer).ok());
  EXPECT_EQ(nodes_[0].gossiper->LayoutConflict(), "");
}

// Members gossip the settings every member must share; one that runs with other values is
// reported by the others, naming the setting and both values, and not when they agree.
TEST_F(GossipTest, AMemberWithOtherSettingsIsReported) {
  all_ = MakeMembers(3);
  const std::string shared = "replication_factor=3,max_value_bytes=1048576,idempotency_ttl=24h";
  for (int i = 0; i < 3; ++i) {
    Gossiper::Options options;
    options.settings =
        i == 2 ? "replication_factor=3,max_value_bytes=100,idempotency_ttl=24h" : shared;
    StartNode(i, all_, options);
  }
  scheduler_.Advance(absl::Seconds(3));
  EXPECT_EQ(nodes_[0].gossiper->SettingsConflict(),
            "n3 runs with max_value_bytes=100 (this node: max_value_bytes=1048576)");
  EXPECT_EQ(nodes_[1].gossiper->SettingsConflict(),
            "n3 runs with max_value_bytes=100 (this node: max_value_bytes=1048576)");
  const std::string seen_by_n3 = nodes_[2].gossiper->SettingsConflict();
  EXPECT_TRUE(absl::StrContains(
      seen_by_n3, "n1 runs with max_value_bytes=1048576 (this node: max_value_bytes=100)"))
      << seen_by_n3;
  EXPECT_TRUE(absl::StrContains(seen_by_n3, "n2 runs with")) << seen_by_n3;

  // n3 restarts with the shared values: the report goes once its new entry has spread.
  Gossiper::Options fixed;
  fixed.settings = shared;
  StartNode(2, all_, fixed);
  scheduler_.Advance(absl::Seconds(3));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(nodes_[i].gossiper->SettingsConflict(), "") << i;

  // A node outside the layout (waiting to be joined) is reported while it is up, and a relay
  // that drops the field (an older node) does not clear what it said.
  all_ = MakeMembers(4);
  const std::vector<Member> ring(all_.begin(), all_.begin() + 3);
  Gossiper::Options joiner;
  joiner.settings = "replication_factor=3,max_value_bytes=1048576,idempotency_ttl=1h";
  StartNode(3, ring, joiner);
  scheduler_.Advance(absl::Seconds(3));
  EXPECT_EQ(nodes_[0].gossiper->SettingsConflict(),
            "n4 (not a member) runs with idempotency_ttl=1h (this node: idempotency_ttl=24h)");
  GossipDigest relayed;
  relayed.from_id = "n2";
  relayed.layout = nodes_[0].gossiper->Layout();
  for (const MemberView& view : nodes_[1].gossiper->Members()) {
    MemberEntry entry = view.entry;
    entry.settings.clear();
    ++entry.heartbeat;
    relayed.members.push_back(entry);
  }
  nodes_[0].gossiper->HandleGossip(relayed);
  EXPECT_EQ(nodes_[0].gossiper->SettingsConflict(),
            "n4 (not a member) runs with idempotency_ttl=1h (this node: idempotency_ttl=24h)");
  nodes_[3].gossiper->Shutdown();
  net_.Cut(all_[3].address);
  scheduler_.Advance(absl::Seconds(3));  // n4 is DOWN: no longer reported
  EXPECT_EQ(nodes_[0].gossiper->SettingsConflict(), "");
}

// A faulty or corrupted peer's layout must not be adopted: one with a repeated member, or one at
// a version no later layout could pass, would hold every node that took it off the cluster's
// real layouts. The rest of the digest is still taken, and a valid newer layout still is later.
TEST_F(GossipTest, LayoutsThatCannotBeUsedAreIgnored) {
  StartAll(3);
  Gossiper* g = nodes_[0].gossiper.get();
  std::vector<uint64_t> notified;
  g->SetLayoutListener([&](const ClusterLayout& layout) { notified.push_back(layout.version); });
  ClusterLayout good;
  good.version = 3;
  good.members = all_;

  auto send = [&](const ClusterLayout& layout) {
    GossipDigest digest;
    digest.from_id = "n2";
    digest.layout = layout;
    MemberEntry entry;
    entry.member = all_[1];
    entry.incarnation = 7;
    entry.heartbeat = 100 + notified.size() + layout.version;
    digest.members = {entry};
    return g->HandleGossip(digest);
  };
  ClusterLayout repeated = good;
  repeated.members.push_back(all_[0]);
  ClusterLayout too_new = good;
  too_new.version = kMaxLayoutVersion + 1;
  ClusterLayout bad_member = good;
  bad_member.next = {Member{"n 4", "10.0.0.4:7700", ""}};
  ClusterLayout bad_address = good;
  bad_address.members[2].address = "10.0.0.3";
  ClusterLayout long_change = good;
  long_change.change = std::string(kMaxLayoutChangeBytes + 1, 'x');
  // Members down: only during a transition, only members that do not stay, sorted, not all.
  ClusterLayout down_stable = good;
  down_stable.down = {"n3"};
  ClusterLayout remove = good;
  remove.next = {all_[0], all_[1]};
  remove.change = "remove n3 (down)";
  ClusterLayout down_stays = remove;
  down_stays.down = {"n2"};
  ClusterLayout down_stranger = remove;
  down_stranger.down = {"n3", "n9"};
  ClusterLayout down_twice = remove;
  down_twice.down = {"n3", "n3"};
  ClusterLayout all_down = remove;
  all_down.next = {Member{"n4", "10.0.0.4:7700", ""}};
  all_down.down = {"n1", "n2", "n3"};
  for (const ClusterLayout* bad :
       {&repeated, &too_new, &bad_member, &bad_address, &long_change, &down_stable, &down_stays,
        &down_stranger, &down_twice, &all_down}) {
    GossipDigest answer = send(*bad);
    EXPECT_EQ(answer.layout.version, 1u);
    EXPECT_EQ(g->Layout().version, 1u);
    EXPECT_TRUE(absl::IsInvalidArgument(CheckLayout(*bad)));
    // Stored, it fails the start rather than being used.
    EXPECT_TRUE(absl::IsDataLoss(DecodeLayout(EncodeLayout(*bad)).status()));
  }
  EXPECT_TRUE(notified.empty());
  // The entries that came with them were taken.
  for (const MemberView& view : g->Members()) {
    if (view.entry.member.id == "n2") {
      EXPECT_EQ(view.entry.incarnation, 7u);
    }
  }
  send(good);
  EXPECT_EQ(g->Layout().version, 3u);
  EXPECT_TRUE(DecodeLayout(EncodeLayout(good)).ok());
  // A remove's members down travel and are stored with the layout.
  remove.down = {"n3"};
  ASSERT_TRUE(CheckLayout(remove).ok()) << CheckLayout(remove);
  absl::StatusOr<ClusterLayout> decoded = DecodeLayout(EncodeLayout(remove));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(SameLayout(*decoded, remove)) << DescribeLayout(*decoded);
  decoded->down.clear();
  EXPECT_FALSE(SameLayout(*decoded, remove));
  EXPECT_EQ(notified, std::vector<uint64_t>({3}));

  // Proposed locally, such a layout is refused.
  too_new.members = all_;
  absl::Status proposed = g->ProposeLayout(too_new);
  EXPECT_TRUE(absl::IsInvalidArgument(proposed)) << proposed;
  EXPECT_EQ(g->Layout().version, 3u);
}

// An entry no member could make (a malformed member, or an incarnation or heartbeat near 2^64) is
// ignored: taken, it could never be superseded, and one claiming this node would overflow the
// incarnation it takes to refute it.
TEST_F(GossipTest, EntriesThatCannotBeRightAreIgnored) {
  all_ = MakeMembers(2);
  Gossiper::Options options;
  options.incarnation = 5;
  Gossiper* g = StartNode(0, all_, options);
  auto entry_of = [&](Member m, uint64_t incarnation, uint64_t heartbeat) {
    MemberEntry entry;
    entry.member = std::move(m);
    entry.incarnation = incarnation;
    entry.heartbeat = heartbeat;
    return entry;
  };
  GossipDigest digest;
  digest.from_id = "n2";
  digest.members = {
      entry_of(all_[0], UINT64_MAX, 1),              // this node, unrefutable
      entry_of(all_[1], kMaxIncarnation + 1, 1),     // never superseded
      entry_of(all_[1], 6, UINT64_MAX),              // the same
      entry_of(Member{"n3", "10.0.0.3", ""}, 6, 1),  // no port
      entry_of(Member{std::string("n\0x", 3), "10.0.0.4:7700", ""}, 6, 1),  // not an id
      entry_of(all_[1], 7, 1),                                              // oversized settings
  };
  digest.members.back().settings = std::string(kMaxMemberSettingsBytes + 1, 's');
  GossipDigest answer = g->HandleGossip(digest);
  ASSERT_EQ(answer.members.size(), 2u);
  EXPECT_EQ(answer.members[0].member.id, "n1");
  EXPECT_EQ(answer.members[0].incarnation, 5u);
  EXPECT_EQ(answer.members[1].member.id, "n2");
  EXPECT_LT(answer.members[1].incarnation, kMaxIncarnation);
  EXPECT_LT(answer.members[1].heartbeat, kMaxHeartbeat);
  EXPECT_LT(answer.members[1].incarnation, 7u);
  EXPECT_TRUE(answer.members[1].settings.empty());

  // A layout with a member without an id is refused, not read without that member.
  internal::v1::ClusterLayout layout;
  LayoutToProto(g->Layout(), &layout);
  layout.set_version(layout.version() + 1);
  layout.add_members();  // no id
  EXPECT_FALSE(CheckLayout(LayoutFromProto(layout)).ok());

  // Within the bounds, entries are taken as always.
  digest.members = {entry_of(all_[0], 9, 1), entry_of(all_[1], kMaxIncarnation, 2)};
  answer = g->HandleGossip(digest);
  ASSERT_EQ(answer.members.size(), 2u);
  EXPECT_EQ(answer.members[0].incarnation, 10u);
  EXPECT_EQ(answer.members[1].incarnation, kMaxIncarnation);
}

}  // namespace
}  // namespace kv

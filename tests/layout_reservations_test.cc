// LayoutReservations: a member's promises and accepts of the next layout version (Paxos phases 1
// and 2, with a lease so that a second proposer is refused while the first one commits).

#include "node/layout_reservations.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kv {
namespace {

class LayoutReservationsTest : public ::testing::Test {
 protected:
  LayoutReservationsTest() : clock_(absl::FromUnixSeconds(1'000'000)), member_(&clock_, {}) {
    for (const char* id : {"n1", "n2", "n3"}) {
      current_.members.push_back(Member{id, absl::StrCat("10.0.0.", id + 1, ":7700"), ""});
    }
    current_.version = 4;
  }

  // The transition of version 5 that removes `leaving`.
  ClusterLayout Leave(const std::string& leaving) const {
    ClusterLayout layout = current_;
    layout.version = 5;
    for (const Member& member : current_.members) {
      if (member.id != leaving) layout.next.push_back(member);
    }
    layout.change = "leave " + leaving;
    return layout;
  }

  LayoutPromise Reserve(uint64_t round, const std::string& proposer) {
    return member_.Reserve({round, proposer}, 5, "change of " + proposer, current_);
  }

  ManualClock clock_;
  LayoutReservations member_;
  ClusterLayout current_;
};

// A proposer whose commit failed releases its lease: another proposer is promised the version at
// once, not after the lease. The promise stays (a lower ballot is still refused), and only the
// holder's own ballot of that version releases it.
TEST_F(LayoutReservationsTest, ReleaseEndsTheLeaseButNotThePromise) {
  ASSERT_TRUE(Reserve(10, "a").status.ok());
  member_.Release({9, "a"}, 5);   // not a's promise
  member_.Release({10, "b"}, 5);  // nor this
  member_.Release({10, "a"}, 6);  // another version
  const LayoutPromise held = Reserve(20, "b");
  EXPECT_TRUE(absl::IsFailedPrecondition(held.status)) << held.status;

  member_.Release({10, "a"}, 5);
  const LayoutPromise lower = Reserve(5, "c");
  EXPECT_TRUE(absl::IsAborted(lower.status)) << lower.status;
  EXPECT_EQ(lower.promised_round, 10u);
  const LayoutPromise promised = Reserve(20, "b");
  EXPECT_TRUE(promised.status.ok()) << promised.status;
  EXPECT_EQ(member_.State().promised, (LayoutBallot{20, "b"}));
}

TEST_F(LayoutReservationsTest, AcceptedLayoutIsHandedToEveryLaterProposer) {
  ASSERT_TRUE(Reserve(10, "a").status.ok());
  const LayoutPromise first = Reserve(10, "a");  // a retried commit renews its own promise
  ASSERT_TRUE(first.status.ok()) << first.status;
  EXPECT_FALSE(first.accepted.has_value());
  ASSERT_TRUE(member_.Accept({10, "a"}, Leave("n3"), current_).ok());

  // While a's lease runs, b is refused and told who holds the version.
  const LayoutPromise held = Reserve(20, "b");
  EXPECT_TRUE(absl::IsFailedPrecondition(held.status)) << held.status;
  EXPECT_TRUE(absl::StrContains(held.status.message(), "reserved by a for \"change of a\""))
      << held.status;

  // Once it lapses, b's higher ballot is promised, and b learns what a got accepted.
  clock_.Advance(member_.options().lease);
  const LayoutPromise promised = Reserve(20, "b");
  ASSERT_TRUE(promised.status.ok()) << promised.status;
  ASSERT_TRUE(promised.accepted.has_value());
  EXPECT_TRUE(SameLayout(*promised.accepted, Leave("n3")));
  EXPECT_EQ(promised.accepted_ballot, (LayoutBallot{10, "a"}));

  // a's late accept no longer counts: a higher ballot was promised since.
  const absl::Status late = member_.Accept({10, "a"}, Leave("n2"), current_);
  EXPECT_TRUE(absl::IsAborted(late)) << late;
  ASSERT_TRUE(member_.Accept({20, "b"}, Leave("n3"), current_).ok());
  clock_.Advance(member_.options().lease);
  const LayoutPromise third = Reserve(30, "c");
  ASSERT_TRUE(third.status.ok()) << third.status;
  EXPECT_EQ(third.accepted_ballot, (LayoutBallot{20, "b"}));
}

// A change planned from the same members in another order (a proposer given its --peers in
// another order) starts from this member's layout: the ring is the same.
TEST_F(LayoutReservationsTest, AChangeFromTheSameMembersInAnotherOrderIsAccepted) {
  ClusterLayout reordered = current_;
  std::reverse(reordered.members.begin(), reordered.members.end());
  ClusterLayout join = reordered;
  join.version = 5;
  join.next = reordered.members;
  join.next.push_back(Member{"n9", "10.0.0.9:7700", ""});
  join.change = "join n9";
  EXPECT_TRUE(member_.Reserve({10, "a"}, 5, "join n9", current_).status.ok());
  const absl::Status accepted = member_.Accept({10, "a"}, join, current_);
  EXPECT_TRUE(accepted.ok()) << accepted;
  EXPECT_TRUE(SameLayout(current_, reordered));
  ClusterLayout other = current_;
  other.members.back().address = "10.0.0.99:7700";
  EXPECT_FALSE(SameLayout(current_, other));
}

// A round no proposer could beat (only a forged or corrupt request carries one) is refused, and
// nothing is promised or accepted under it.
TEST_F(LayoutReservationsTest, ARoundAboveTheBoundIsRefused) {
  EXPECT_TRUE(absl::IsInvalidArgument(Reserve(kMaxLayoutRound + 1, "forger").status));
  EXPECT_TRUE(
      absl::IsInvalidArgument(member_.Accept({UINT64_MAX, "forger"}, Leave("n3"), current_)));
  EXPECT_TRUE(Reserve(kMaxLayoutRound, "a").status.ok());
  // The proposer is a node id: stored (synced) with the promise and named in refusals.
  EXPECT_TRUE(absl::IsInvalidArgument(Reserve(kMaxLayoutRound, std::string(1 << 20, 'p')).status));
}

TEST_F(LayoutReservationsTest, ALowerBallotIsToldTheRoundToBeat) {
  ASSERT_TRUE(Reserve(50, "b").status.ok());
  clock_.Advance(member_.options().lease);
  const LayoutPromise lower = Reserve(40, "a");
  EXPECT_TRUE(absl::IsAborted(lower.status)) << lower.status;
  EXPECT_EQ(lower.promised_round, 50u);
  EXPECT_FALSE(lower.accepted.has_value());
  // Equal rounds are ordered by proposer id.
  EXPECT_TRUE(absl::IsAborted(Reserve(50, "a").status));
  EXPECT_TRUE(Reserve(50, "c").status.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(Reserve(51, "a").status)) << "c's lease runs";
}

TEST_F(LayoutReservationsTest, OnlyTheVersionAfterTheMembersLayoutIsTaken) {
  auto reserve = [&](uint64_t version, const ClusterLayout& current) {
    return member_.Reserve({1, "a"}, version, "join n4", current).status;
  };
  EXPECT_TRUE(absl::IsUnavailable(reserve(7, current_)));  // behind: gossip brings it
  const absl::Status ahead = reserve(4, current_);
  EXPECT_TRUE(absl::IsFailedPrecondition(ahead)) << ahead;
  EXPECT_TRUE(absl::StrContains(ahead.message(), "cannot be reserved here")) << ahead;
  // During a transition the next version is reserved too (its completion and a removal of a
  // member down compete for it), but only those two are accepted.
  ClusterLayout transition = Leave("n3");
  transition.version = 4;
  EXPECT_TRUE(reserve(5, transition).ok());
  const absl::Status during = member_.Accept({1, "a"}, Leave("n2"), transition);
  EXPECT_TRUE(absl::IsFailedPrecondition(during)) << during;
  EXPECT_TRUE(absl::StrContains(during.message(), "under way")) << during;
  EXPECT_TRUE(absl::IsInvalidArgument(member_.Reserve({0, "a"}, 5, "", current_).status));
  EXPECT_TRUE(absl::IsInvalidArgument(member_.Reserve({1, ""}, 5, "", current_).status));

  // A member that holds the layout already (gossip brought it) accepts it again, not another.
  const ClusterLayout installed = Leave("n3");
  EXPECT_TRUE(member_.Accept({1, "a"}, Leave("n3"), installed).ok());
  const absl::Status other = member_.Accept({1, "a"}, Leave("n2"), installed);
  EXPECT_TRUE(absl::IsFailedPrecondition(other)) << other;
  EXPECT_TRUE(absl::StrContains(other.message(), "holds another layout of version 5")) << other;
}

// A proposer needs more than half of the votes of its layout's members. On a transition a member
// that stays has two, one joining or leaving one, one named down none: every proposer of the
// next version starts from that same transition, so their majorities still overlap, and small
// changes can go on without a member that died.
TEST_F(LayoutReservationsTest, AQuorumIsMoreThanHalfOfTheMembersVotes) {
  const LayoutQuorum stable(current_);
  ASSERT_EQ(stable.asked().size(), 3u);
  EXPECT_TRUE(stable.Granted({true, false, true}));
  EXPECT_FALSE(stable.Granted({true, false, false}));
  EXPECT_TRUE(stable.Lost({true, true, false}));
  EXPECT_FALSE(stable.Lost({true, false, false}));
  EXPECT_EQ(stable.Describe({true, false, true}), "2 of 3 members");

  const Member n4{"n4", "10.0.0.4:7700", ""};
  // n3 is being removed down for good (from n1..n4): n1, n2 and n4 are asked, 2 of them suffice.
  ClusterLayout remove = current_;
  remove.members.push_back(n4);
  remove.version = 5;
  remove.next = {remove.members[0], remove.members[1], remove.members[3]};
  remove.down = {"n3"};
  const LayoutQuorum without_down(remove);
  ASSERT_EQ(without_down.asked().size(), 3u);
  EXPECT_EQ(without_down.asked()[2].id, "n4");
  EXPECT_TRUE(without_down.Granted({true, false, true}));
  EXPECT_FALSE(without_down.Granted({true, false, false}));
  EXPECT_EQ(without_down.Describe({true, false, true}),
            "2 of 3 members (4 of 6 votes: a member that stays has two, one joining or leaving "
            "one, n3 down: none)");

  // n3 joins n1 and n2 (asked last): one old member and the joiner suffice (3 of 5 votes), the
  // joiner alone or one old member alone do not.
  ClusterLayout join;
  join.version = 5;
  join.members = {current_.members[0], current_.members[1]};
  join.next = current_.members;
  const LayoutQuorum joining(join);
  ASSERT_EQ(joining.asked().size(), 3u);
  EXPECT_EQ(joining.asked()[2].id, "n3");
  EXPECT_TRUE(joining.Granted({true, false, true}));
  EXPECT_FALSE(joining.Granted({false, false, true}));
  EXPECT_FALSE(joining.Granted({true, false, false}));
  // n2 leaves n1: n1 alone suffices (2 of 3 votes); so does it when n2 joins n1 alone.
  ClusterLayout leave = join;
  leave.next = {current_.members[0]};
  EXPECT_TRUE(LayoutQuorum(leave).Granted({true, false}));
  EXPECT_FALSE(LayoutQuorum(leave).Granted({false, true}));
  ClusterLayout second;
  second.version = 5;
  second.members = {current_.members[0]};
  second.next = {current_.members[0], current_.members[1]};
  EXPECT_TRUE(LayoutQuorum(second).Granted({true, false}));
  EXPECT_FALSE(LayoutQuorum(second).Granted({false, true}));
}

// A member's promises only go forward: a request checked against an older layout than the one
// promised here already (a restart before the newer layout was stored, a stalled request) is
// refused, and the accepted layout is kept.
TEST_F(LayoutReservationsTest, APromiseIsNeverTakenBackForAnEarlierVersion) {
  ASSERT_TRUE(Reserve(10, "a").status.ok());
  ASSERT_TRUE(member_.Accept({10, "a"}, Leave("n3"), current_).ok());
  ClusterLayout older = current_;
  older.version = 3;
  const LayoutPromise back = member_.Reserve({20, "b"}, 4, "join n9", older);
  EXPECT_TRUE(absl::IsFailedPrecondition(back.status)) << back.status;
  EXPECT_TRUE(absl::StrContains(back.status.message(), "promised layout version 5 already"))
      << back.status;
  ClusterLayout fours = Leave("n3");
  fours.version = 4;
  EXPECT_TRUE(absl::IsFailedPrecondition(member_.Accept({20, "b"}, fours, older)));
  EXPECT_EQ(member_.State().version, 5u);
  clock_.Advance(member_.options().lease);
  const LayoutPromise later = Reserve(30, "c");
  ASSERT_TRUE(later.accepted.has_value());
  EXPECT_TRUE(SameLayout(*later.accepted, Leave("n3")));
}

// A new version forgets the promise and the accepted layout of the one before.
TEST_F(LayoutReservationsTest, ANewVersionStartsAfresh) {
  ASSERT_TRUE(Reserve(10, "a").status.ok());
  ASSERT_TRUE(member_.Accept({10, "a"}, Leave("n3"), current_).ok());
  ClusterLayout completed = current_;
  completed.version = 6;
  const LayoutPromise next = member_.Reserve({1, "b"}, 7, "join n9", completed);
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_FALSE(next.accepted.has_value());
}

// With persist set, a promise or accept is stored before it is answered, and a member restored
// from the stored state keeps its word; a state that cannot be stored is not taken.
TEST_F(LayoutReservationsTest, PromisesAreStoredBeforeTheyAreAnsweredAndSurviveARestart) {
  std::vector<LayoutAcceptorState> stored;
  absl::Status store_error;
  LayoutReservations::Options options;
  options.persist = [&](const LayoutAcceptorState& state) {
    if (!store_error.ok()) return store_error;
    stored.push_back(state);
    return absl::OkStatus();
  };
  LayoutReservations member(&clock_, options);
  ASSERT_TRUE(member.Reserve({10, "a"}, 5, "leave n3", current_).status.ok());
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored.back().version, 5u);
  EXPECT_EQ(stored.back().promised, (LayoutBallot{10, "a"}));
  EXPECT_FALSE(stored.back().accepted.has_value());
  ASSERT_TRUE(member.Reserve({10, "a"}, 5, "leave n3", current_).status.ok());
  EXPECT_EQ(stored.size(), 1u) << "a renewal changes nothing to store";
  ASSERT_TRUE(member.Accept({10, "a"}, Leave("n3"), current_).ok());
  ASSERT_EQ(stored.size(), 2u);
  ASSERT_TRUE(stored.back().accepted.has_value());
  EXPECT_TRUE(SameLayout(*stored.back().accepted, Leave("n3")));

  // The storage fails: b's higher ballot is not promised, and nothing changed.
  clock_.Advance(member.options().lease);
  store_error = absl::ResourceExhaustedError("disk full");
  const LayoutPromise unstored = member.Reserve({20, "b"}, 5, "leave n2", current_);
  EXPECT_TRUE(absl::IsUnavailable(unstored.status)) << unstored.status;
  EXPECT_TRUE(absl::StrContains(unstored.status.message(), "disk full")) << unstored.status;
  EXPECT_EQ(member.State().promised, (LayoutBallot{10, "a"}));
  EXPECT_TRUE(absl::IsUnavailable(member.Accept({20, "b"}, Leave("n2"), current_)));
  EXPECT_TRUE(SameLayout(*member.State().accepted, Leave("n3")));

  // A restart: the stored state comes back, without a lease. A lower ballot is refused, and a
  // higher one learns the accepted layout.
  LayoutReservations restarted(&clock_, {});
  restarted.Restore(stored.back());
  EXPECT_TRUE(absl::IsAborted(restarted.Reserve({9, "z"}, 5, "join n9", current_).status));
  const LayoutPromise later = restarted.Reserve({11, "b"}, 5, "leave n2", current_);
  ASSERT_TRUE(later.status.ok()) << later.status;
  ASSERT_TRUE(later.accepted.has_value());
  EXPECT_TRUE(SameLayout(*later.accepted, Leave("n3")));
}

}  // namespace
}  // namespace kv

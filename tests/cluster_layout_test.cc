// Staged membership changes: the plan (balance, how much moves) and the transition placement.
#include "node/cluster_layout.h"

#include <algorithm>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/peer_transport.h"
#include "node/placement.h"

namespace kv {
namespace {

std::vector<Member> Members(int count) {
  std::vector<Member> members;
  for (int i = 1; i <= count; ++i) {
    members.push_back(Member{absl::StrCat("n", i), absl::StrCat("127.0.0.1:", 7699 + i), ""});
  }
  return members;
}

std::vector<std::string> Ids(const std::vector<Member>& members) {
  std::vector<std::string> ids;
  for (const Member& m : members) ids.push_back(m.id);
  return ids;
}

ClusterLayout Stable(int count) {
  ClusterLayout layout;
  layout.version = 1;
  layout.members = Members(count);
  return layout;
}

TEST(ClusterLayoutTest, JoiningAFourthNodeBalancesAndMovesAQuarter) {
  absl::StatusOr<ClusterLayout> transition = PlanJoin(Stable(3), Members(4)[3]);
  ASSERT_TRUE(transition.ok()) << transition.status();
  EXPECT_EQ(transition->version, 2u);
  EXPECT_EQ(transition->members.size(), 3u);
  EXPECT_EQ(transition->next.size(), 4u);
  absl::StatusOr<MovementPlan> plan = PlanMovement(transition->members, transition->next, 3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // N=3 of 3 -> 4 members: the new node takes 1/4 of all replica data; nobody else gains.
  EXPECT_NEAR(plan->moved_fraction, 0.25, 0.03);
  for (const OwnershipMove& move : plan->moves) EXPECT_EQ(move.to, "n4");
  for (const MemberShare& share : plan->shares) {
    EXPECT_NEAR(share.primary_after, 0.25, 0.05) << share.id;
    EXPECT_NEAR(share.replica_after, 0.75, 0.05) << share.id;
  }
  // Each old member gives up about a third of the moved data.
  for (const OwnershipMove& move : plan->moves) EXPECT_NEAR(move.fraction, 0.25 / 3, 0.03);

  // Counted over real keys: about a quarter of the (key, replica) slots change.
  absl::StatusOr<HashRing> before = HashRing::Build(transition->members);
  absl::StatusOr<HashRing> after = HashRing::Build(transition->next);
  int moved = 0;
  const int keys = 20000;
  for (int i = 0; i < keys; ++i) {
    const std::string key = absl::StrCat("key-", i);
    for (const Member* m : after->PreferenceList(key, 3)) {
      if (!before->IsReplica(key, 3, m->id)) ++moved;
    }
  }
  EXPECT_NEAR(static_cast<double>(moved) / (3.0 * keys), 0.25, 0.03);
}

TEST(ClusterLayoutTest, LeavingMovesOnlyTheLeaversShare) {
  absl::StatusOr<ClusterLayout> transition = PlanLeave(Stable(4), "n2");
  ASSERT_TRUE(transition.ok()) << transition.status();
  absl::StatusOr<MovementPlan> plan = PlanMovement(transition->members, transition->next, 3);
  ASSERT_TRUE(plan.ok());
  EXPECT_NEAR(plan->moved_fraction, 0.25, 0.03);
  for (const OwnershipMove& move : plan->moves) EXPECT_EQ(move.from, "n2");
  ClusterLayout done = CompleteTransition(*transition);
  EXPECT_EQ(done.version, 3u);
  EXPECT_FALSE(done.in_transition());
  EXPECT_FALSE(done.Contains("n2"));
}

TEST(ClusterLayoutTest, OneChangeAtATime) {
  absl::StatusOr<ClusterLayout> transition = PlanJoin(Stable(3), Members(4)[3]);
  ASSERT_TRUE(transition.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanLeave(*transition, "n1").status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanJoin(Stable(3), Members(3)[0]).status()));
  EXPECT_TRUE(absl::IsNotFound(PlanLeave(Stable(3), "n9").status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanLeave(Stable(1), "n1").status()));
}

TEST(ClusterLayoutTest, RemovingAMemberDownForGoodIsALeaveThatNamesItDown) {
  absl::StatusOr<ClusterLayout> transition = PlanRemoveDown(Stable(4), "n2");
  ASSERT_TRUE(transition.ok()) << transition.status();
  absl::StatusOr<ClusterLayout> leave = PlanLeave(Stable(4), "n2");
  ASSERT_TRUE(leave.ok());
  EXPECT_EQ(transition->members, leave->members);
  EXPECT_EQ(transition->next, leave->next);
  EXPECT_EQ(transition->down, std::vector<std::string>{"n2"});
  EXPECT_EQ(transition->change, "remove n2 (down)");
  EXPECT_TRUE(transition->NamesDown("n2"));
  EXPECT_FALSE(transition->NamesDown("n1"));
  EXPECT_TRUE(CheckLayout(*transition).ok()) << CheckLayout(*transition);
  EXPECT_FALSE(SameLayout(*transition, *leave));
  EXPECT_NE(DescribeLayout(*transition).find("[down: n2]"), std::string::npos);
  // The completed layout names nobody down.
  const ClusterLayout done = CompleteTransition(*transition);
  EXPECT_TRUE(done.down.empty());
  EXPECT_FALSE(done.Contains("n2"));
  EXPECT_TRUE(CheckLayout(done).ok());
  // The same preconditions as a leave.
  EXPECT_TRUE(absl::IsNotFound(PlanRemoveDown(Stable(3), "n9").status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanRemoveDown(Stable(1), "n1").status()));
}

// A member that dies while a change runs would hold it up for good: the remove replaces the
// running transition by one without it, at the version of the running one's completion (the
// members agree on one of the two).
TEST(ClusterLayoutTest, ARemoveDuringAChangeReplacesItsTransitionAtItsCompletionsVersion) {
  const ClusterLayout join = PlanJoin(Stable(3), Members(4)[3]).value();

  // A current owner that stays (a source of the join): out of the next owners, named down.
  absl::StatusOr<ClusterLayout> source = PlanRemoveDown(join, "n2");
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->version, join.version + 1);
  EXPECT_EQ(source->members, join.members);
  EXPECT_EQ(Ids(source->next), (std::vector<std::string>{"n1", "n3", "n4"}));
  EXPECT_EQ(source->down, std::vector<std::string>{"n2"});
  EXPECT_EQ(source->change, "join n4; remove n2 (down)");
  EXPECT_TRUE(CheckLayout(*source).ok()) << CheckLayout(*source);
  EXPECT_TRUE(IsRemovalDuring(join, *source));
  EXPECT_FALSE(IsRemovalDuring(join, CompleteTransition(join)));
  EXPECT_FALSE(IsRemovalDuring(*source, join));
  ClusterLayout nothing_removed = join;
  nothing_removed.version += 1;
  EXPECT_FALSE(IsRemovalDuring(join, nothing_removed));

  // A second one on top keeps the first mark.
  absl::StatusOr<ClusterLayout> two = PlanRemoveDown(*source, "n3");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->version, join.version + 2);
  EXPECT_EQ(two->down, (std::vector<std::string>{"n2", "n3"}));
  EXPECT_TRUE(IsRemovalDuring(*source, *two));
  EXPECT_FALSE(IsRemovalDuring(join, *two));  // not the version after the join
  // ... but not a third: nobody would be left to hand off.
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanRemoveDown(*two, "n1").status()));
  // Nor the same member twice, nor one in neither list.
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanRemoveDown(*source, "n2").status()));
  EXPECT_TRUE(absl::IsNotFound(PlanRemoveDown(join, "n9").status()));

  // The joiner: it hands off nothing, so it leaves the next owners only; a transition that
  // moves nothing is left, which completes with the old owners.
  absl::StatusOr<ClusterLayout> joiner = PlanRemoveDown(join, "n4");
  ASSERT_TRUE(joiner.ok()) << joiner.status();
  EXPECT_TRUE(joiner->down.empty());
  EXPECT_EQ(joiner->next, join.members);
  EXPECT_TRUE(CheckLayout(*joiner).ok()) << CheckLayout(*joiner);
  EXPECT_EQ(CompleteTransition(*joiner).members, join.members);

  // The member leaving, during its own leave: named down, the next owners unchanged.
  const ClusterLayout leave = PlanLeave(Stable(4), "n4").value();
  absl::StatusOr<ClusterLayout> leaver = PlanRemoveDown(leave, "n4");
  ASSERT_TRUE(leaver.ok()) << leaver.status();
  EXPECT_EQ(leaver->next, leave.next);
  EXPECT_EQ(leaver->down, std::vector<std::string>{"n4"});
  EXPECT_EQ(leaver->change, "leave n4; remove n4 (down)");

  // The last next owner cannot go.
  const ClusterLayout to_one = PlanLeave(Stable(2), "n2").value();
  EXPECT_TRUE(absl::IsFailedPrecondition(PlanRemoveDown(to_one, "n1").status()));
}

TEST(PlacementTest, TransitionUsesOldAndNewOwners) {
  absl::StatusOr<ClusterLayout> transition = PlanJoin(Stable(3), Members(4)[3]);
  ASSERT_TRUE(transition.ok());
  absl::StatusOr<std::shared_ptr<const Placement>> placement = Placement::Create(*transition);
  ASSERT_TRUE(placement.ok());
  absl::StatusOr<HashRing> after = HashRing::Build(transition->next);
  int widened = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = absl::StrCat("key-", i);
    std::vector<const Member*> replicas = (*placement)->Replicas(key, 3);
    // Old owners first (all three), then the new owner if it gains the key.
    ASSERT_GE(replicas.size(), 3u);
    for (size_t r = 0; r < 3; ++r) EXPECT_NE(replicas[r]->id, "n4");
    for (const Member* m : after->PreferenceList(key, 3)) {
      EXPECT_TRUE(std::any_of(replicas.begin(), replicas.end(),
                              [&](const Member* x) { return x->id == m->id; }));
    }
    if (replicas.size() == 4) ++widened;
  }
  EXPECT_NEAR(widened / 1000.0, 0.75, 0.08);
  PlacementHolder holder(*placement);
  EXPECT_FALSE(holder.Set(*placement));  // same version: kept
  absl::StatusOr<std::shared_ptr<const Placement>> done =
      Placement::Create(CompleteTransition(*transition));
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(holder.Set(*done));
  EXPECT_EQ(holder.Get()->Replicas("k", 3).size(), 3u);

  // A member refuses a key it does not replicate, saying its layout version (a sender with a
  // newer layout then knows the member may only be behind).
  bool refused_one = false;
  for (int i = 0; i < 1000 && !refused_one; ++i) {
    const std::string key = absl::StrCat("key-", i);
    std::vector<const Member*> replicas = (*done)->Replicas(key, 3);
    const std::string outsider =
        std::any_of(replicas.begin(), replicas.end(), [](const Member* m) { return m->id == "n1"; })
            ? ""
            : "n1";
    if (outsider.empty()) {
      EXPECT_TRUE((*done)->CheckMayHold("n1", key, 3).ok());
      continue;
    }
    absl::Status refused = (*done)->CheckMayHold(outsider, key, 3);
    EXPECT_TRUE(IsNotAReplica(refused)) << refused;
    EXPECT_EQ(NotAReplicaLayoutVersion(refused), CompleteTransition(*transition).version);
    refused_one = true;
  }
  EXPECT_TRUE(refused_one) << "n1 replicates all of 1000 keys of 4 members";
}

}  // namespace
}  // namespace kv

// The deterministic simulation (tests/sim/): the real node core of 3-5 nodes in one thread, on
// simulated time and a simulated network, with faults injected from a seed, checked at the end
// against the product's contract. See tests/sim/sim_run.h for the phases of a run.
//
// CI runs a fixed set of seeds. To replay one seed (with every operation and fault logged):
//     KV_SIM_SEED=1234 KV_SIM_NODES=5 KV_SIM_VERBOSE=1 ./simulation_test
// To explore more seeds: KV_SIM_SEEDS=500 (seeds 1..500), optionally KV_SIM_FIRST_SEED=1000.
// Membership changes (a join or a leave during the run) have their own tests and seed lists;
// KV_SIM_CHANGE=join, leave, remove, join-remove or leave-remove selects them (with KV_SIM_NODES=4:
// 3->4 or 4->3; 5: 4->5 or 5->4), e.g. KV_SIM_CHANGE=join KV_SIM_NODES=4 KV_SIM_SEEDS=500. The
// stricter token checker (Checkers::CheckTokenResurrection) runs unless KV_SIM_STRICT_TOKENS=0.
// KV_SIM_SYNC=0 runs without synced writes (kvnode's default: a crash loses what the machine had
// not written back); CI runs the UnsyncedWrites* tests that way. Not with remove changes.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/sim/sim_run.h"

namespace kv::sim {
namespace {

constexpr uint64_t kCiSeeds = 32;

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  uint64_t value = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &value)) return fallback;
  return value;
}

std::vector<uint64_t> SeedsToRun() {
  if (std::getenv("KV_SIM_SEED") != nullptr) return {EnvNumber("KV_SIM_SEED", 1)};
  const uint64_t count = EnvNumber("KV_SIM_SEEDS", kCiSeeds);
  const uint64_t first = EnvNumber("KV_SIM_FIRST_SEED", 1);
  std::vector<uint64_t> seeds;
  for (uint64_t i = 0; i < count; ++i) seeds.push_back(first + i);
  return seeds;
}

// True unless KV_SIM_NODES names another cluster size.
bool WantNodes(int num_nodes) {
  return EnvNumber("KV_SIM_NODES", static_cast<uint64_t>(num_nodes)) ==
         static_cast<uint64_t>(num_nodes);
}

// The KV_SIM_CHANGE asked for ("" if none).
std::string ChangeAsked() {
  const char* text = std::getenv("KV_SIM_CHANGE");
  return text == nullptr ? "" : text;
}

bool SeedsAsked() {
  return std::getenv("KV_SIM_SEED") != nullptr || std::getenv("KV_SIM_SEEDS") != nullptr;
}

// False when KV_SIM_SYNC=0: the runs of every test that honours it go without synced writes.
bool SyncWrites() {
  const char* text = std::getenv("KV_SIM_SYNC");
  return text == nullptr || std::string(text) != "0";
}

bool StrictTokens() {
  const char* text = std::getenv("KV_SIM_STRICT_TOKENS");
  return text == nullptr || std::string(text) != "0";
}

// Runs each seed; returns how many crashed a member of the change on purpose while its handoff
// ran (MembershipStats::handoff_crashes; random crashes elsewhere do not count).
int RunSeeds(int num_nodes, MembershipChange change = MembershipChange::kNone,
             const std::vector<uint64_t>& seeds = SeedsToRun(), bool purge_tombstones = true,
             bool sync_writes = SyncWrites()) {
  int crashed_during_handoff = 0;
  for (uint64_t seed : seeds) {
    SimOptions options;
    options.seed = seed;
    options.sync_writes = sync_writes;
    options.num_nodes = num_nodes;
    options.change = change;
    options.purge_tombstones = purge_tombstones;
    options.verbose = std::getenv("KV_SIM_VERBOSE") != nullptr;
    options.check_token_resurrection = StrictTokens();
    const SimResult result = RunSimulation(options);
    std::cout << result.Summary() << std::endl;
    for (const std::string& failure : result.failures) ADD_FAILURE() << failure;
    crashed_during_handoff += result.membership.handoff_crashes > 0 ? 1 : 0;
  }
  return crashed_during_handoff;
}

// True unless KV_SIM_CHANGE asks for a membership change.
bool WantNoChange() { return ChangeAsked().empty() || ChangeAsked() == "none"; }

TEST(SimulationTest, ThreeNodes) {
  if (!WantNoChange()) GTEST_SKIP() << "KV_SIM_CHANGE asks for a membership change";
  if (!SyncWrites()) GTEST_SKIP() << "KV_SIM_SYNC=0: UnsyncedWritesThreeNodes runs the seeds";
  if (!WantNodes(3)) GTEST_SKIP() << "KV_SIM_NODES asks for another cluster size";
  RunSeeds(3);
}

TEST(SimulationTest, FourNodes) {
  // Only on request (KV_SIM_NODES=4): CI covers 3 and 5.
  if (std::getenv("KV_SIM_NODES") == nullptr || !WantNodes(4) || !WantNoChange()) GTEST_SKIP();
  RunSeeds(4);
}

TEST(SimulationTest, FiveNodes) {
  if (!WantNoChange()) GTEST_SKIP() << "KV_SIM_CHANGE asks for a membership change";
  if (!SyncWrites()) GTEST_SKIP() << "KV_SIM_SYNC=0: UnsyncedWritesFiveNodes runs the seeds";
  if (!WantNodes(5)) GTEST_SKIP() << "KV_SIM_NODES asks for another cluster size";
  RunSeeds(5);
}

// Membership changes. CI runs seeds 1..kCiChangeSeeds per change; some of them crash a node (an
// old owner or a gainer) while the handoff runs (the summary line says how many crashes fell in
// it), which the test checks.
//
// Regression seeds: FormerMembershipFailures.
constexpr uint64_t kCiChangeSeeds = 16;

void RunChange(int num_nodes, MembershipChange change, bool purge_tombstones = true) {
  if (!WantNodes(num_nodes)) GTEST_SKIP() << "KV_SIM_NODES asks for another cluster size";
  const std::string asked = ChangeAsked();
  if (asked.empty() ? SeedsAsked() : asked != MembershipChangeName(change)) {
    GTEST_SKIP() << "KV_SIM_CHANGE asks for another change";
  }
  if (!asked.empty()) {
    RunSeeds(num_nodes, change, SeedsToRun(), purge_tombstones);
    return;
  }
  std::vector<uint64_t> seeds;
  for (uint64_t seed = 1; seed <= kCiChangeSeeds; ++seed) seeds.push_back(seed);
  EXPECT_GT(RunSeeds(num_nodes, change, seeds, purge_tombstones), 0)
      << "no seed crashed a node during the handoff";
}

// With N=3: a join into a cluster smaller than N (every member gains keys, nobody loses any) and a
// leave down to N members or fewer (nobody gains a key; the leaving node's copies must reach
// the owners that stay).
TEST(SimulationTest, JoinTwoToThree) { RunChange(3, MembershipChange::kJoin); }

TEST(SimulationTest, LeaveThreeToTwo) { RunChange(3, MembershipChange::kLeave); }

TEST(SimulationTest, JoinThreeToFour) { RunChange(4, MembershipChange::kJoin); }

TEST(SimulationTest, LeaveFourToThree) { RunChange(4, MembershipChange::kLeave); }

TEST(SimulationTest, JoinFourToFive) { RunChange(5, MembershipChange::kJoin); }

TEST(SimulationTest, LeaveFiveToFour) { RunChange(5, MembershipChange::kLeave); }

// A member down for good is removed (kvctl cluster remove): down to N members (nobody gains a key;
// the owners that stay must get from each other what only they and the member down held), and
// down to more than N.
TEST(SimulationTest, RemoveDownThreeToTwo) { RunChange(3, MembershipChange::kRemoveDown); }

TEST(SimulationTest, RemoveDownFourToThree) { RunChange(4, MembershipChange::kRemoveDown); }

TEST(SimulationTest, RemoveDownFiveToFour) { RunChange(5, MembershipChange::kRemoveDown); }

// Seeds of a remove from 3 to 2 members that lost acknowledged writes while the owners that stay
// compared only with gainers (there are none in a 3-to-2 change): a write only the member down
// and one other owner held never reached the third (13 of seeds 1..400). They pass since every
// other old owner compares with every new owner when one is down (KeyHandoff::CompareWith).
// Seeds 1..400 of removes from 3, 4 and 5 members all pass (the run that removes a member loses
// no other disk: FaultInjector::NoWipes).
// A member taking part in a join or a leave goes down for good during the handoff and is
// removed then: the change goes on without it (PlanRemoveDown on the transition).
TEST(SimulationTest, JoinThenRemoveDuringItThreeNodes) {
  RunChange(3, MembershipChange::kJoinThenRemove);
}

// 3 -> 1 member: its reaper purges alone, which the checkers do not see (SimOptions::
// purge_tombstones), so purging is off in these runs.
TEST(SimulationTest, LeaveThenRemoveDuringItThreeNodes) {
  RunChange(3, MembershipChange::kLeaveThenRemove, /*purge_tombstones=*/false);
}

TEST(SimulationTest, JoinThenRemoveDuringItFourNodes) {
  RunChange(4, MembershipChange::kJoinThenRemove);
}

TEST(SimulationTest, LeaveThenRemoveDuringItFourNodes) {
  RunChange(4, MembershipChange::kLeaveThenRemove);
}

TEST(SimulationTest, JoinThenRemoveDuringItFiveNodes) {
  RunChange(5, MembershipChange::kJoinThenRemove);
}

TEST(SimulationTest, LeaveThenRemoveDuringItFiveNodes) {
  RunChange(5, MembershipChange::kLeaveThenRemove);
}

TEST(SimulationTest, FormerRemoveDownFailures) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  RunSeeds(3, MembershipChange::kRemoveDown, {25, 59, 147, 149, 178});
}

// Seeds that failed while a coordinator counted W across old and new owners together during a
// transition (any W replicas of the union), found among seeds 1..1000 of each change: writes
// acknowledged by, e.g., the leaving node and one other replica, or by the owner that loses the
// key and its coordinator, were then lost or answered NOT_FOUND (C1, C3, C8). Coordinator::Write
// now requires W of the old owners and W of the new ones; every seed below passes with it and
// fails without it (checked with the coordinator of 92fcc4c on this tree). 50 of the 6,000
// seeds failed without it; 2 failed with it, only the strict token checker, and 1 of them still
// did until replicas kept what that memory cuts (FormerReplacedWriteBoundFailures).
TEST(SimulationTest, FormerMembershipFailures) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  RunSeeds(3, MembershipChange::kJoin, {69, 179, 382});
  RunSeeds(3, MembershipChange::kLeave, {14, 299, 331, 656, 737, 949});
  RunSeeds(4, MembershipChange::kJoin, {637, 875, 922, 977});
  RunSeeds(4, MembershipChange::kLeave, {489});
  RunSeeds(5, MembershipChange::kJoin, {281, 714, 940});
  RunSeeds(5, MembershipChange::kLeave, {262});
}

// Seeds that failed the strict token checker (Checkers::CheckTokenResurrection) before causal
// contexts carried the tokened versions they cover: retry copies of one write, made through
// several nodes while W could not be reached, and one of them survived after a client overwrote
// another through a node that had never held the copy it read (seed 358: the only node that held
// it was wiped), so nothing there knew that the surviving copy was the same write. Found among
// seeds 1..1000 of each of the six changes and of 3, 4 and 5 nodes without one (9,000 runs);
// with the change, 1 of those 9,000 runs fails (below). Seed 1894080 (leave then remove, 4
// nodes) failed while a read's context named only the record's live tokened siblings: the client
// read an overwrite on the only replica that remembered the copy it had replaced, and wrote
// through a node that had never held the key; that replica was then removed while down, so
// nothing recognised the copy's retry. Reads now carry the replaced writes too.
TEST(SimulationTest, FormerTokenCheckerFailures) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  RunSeeds(3, MembershipChange::kJoin, {322});
  RunSeeds(5, MembershipChange::kLeave, {949});
  RunSeeds(4, MembershipChange::kNone, {99, 405, 478, 733, 902});
  RunSeeds(5, MembershipChange::kNone, {358});
  RunSeeds(4, MembershipChange::kLeaveThenRemove, {1894080});
  // The checker's own false alarm (leave, 4 nodes): the "overwrite" of a retry's first copy was
  // never acknowledged and was lost with the only disk that held it (n2's, wiped with the copy
  // itself), so the retry's other copies are the write's live version, as they should be. The
  // checker now counts only overwrites that took effect (Checkers::SomeLastingWriteSaw).
  RunSeeds(4, MembershipChange::kLeave, {1906097});
}

// A seed that failed the strict token checker while a record's bounded memory of replaced
// writes was all a replica knew of them: the key took more than kMaxReplacedWrites tokened
// overwrites before a retry copy of an early one arrived. Replicas now keep what the memory
// cuts as forgotten writes (node/idempotency_record.h) for the retry window.
TEST(SimulationTest, FormerReplacedWriteBoundFailures) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  RunSeeds(5, MembershipChange::kLeave, {420});
}

// A seed found among seeds 1001..3000 of each change: a write coordinated just before its
// coordinator installed a leave's transition was acknowledged by the old owners' W (itself and
// the leaving node, whose confirmation came after the transition began and after its handoff
// had scanned), so that once the leave completed the only member holding it was the coordinator,
// partitioned from the reader's node: a Get of the new key answered NOT_FOUND (C3). The
// coordinator now counts acknowledgements against the placement it holds when it answers, so
// such a write also needs W of the new owners. Passes with that, fails without it.
TEST(SimulationTest, FormerStaleQuorumFailures) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  RunSeeds(3, MembershipChange::kLeave, {2551});
}

// Without synced writes (kvnode's default): a crash loses what its machine had not written back,
// and the node restarts under a new actor epoch (LocalStore, "Actor epochs").
TEST(SimulationTest, UnsyncedWritesThreeNodes) {
  if (!WantNoChange() || !WantNodes(3) || (SeedsAsked() && SyncWrites())) GTEST_SKIP();
  RunSeeds(3, MembershipChange::kNone, SeedsToRun(), true, /*sync_writes=*/false);
}

TEST(SimulationTest, UnsyncedWritesFiveNodes) {
  if (!WantNoChange() || !WantNodes(5) || (SeedsAsked() && SyncWrites())) GTEST_SKIP();
  RunSeeds(5, MembershipChange::kNone, SeedsToRun(), true, /*sync_writes=*/false);
}

// A join and a leave without synced writes (catching up waits for the change to complete).
// Seeds 1..500 of each, with 3, 4 and 5 nodes, pass.
TEST(SimulationTest, UnsyncedWritesDuringAJoinAndALeave) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  std::vector<uint64_t> seeds;
  for (uint64_t seed = 1; seed <= kCiChangeSeeds; ++seed) seeds.push_back(seed);
  RunSeeds(4, MembershipChange::kJoin, seeds, true, /*sync_writes=*/false);
  RunSeeds(4, MembershipChange::kLeave, seeds, true, /*sync_writes=*/false);
}

// Seeds without synced writes that answered NOT_FOUND for an acknowledged new key before a
// replica restarted after a machine crash caught up (LocalStore, "Catching up"): e.g. seed 2173,
// whose Put n1 coordinated and lost in a crash 7 ms after acknowledging it; a Get through n2,
// cut off from n3 (the other copy), counted n1's empty answer. 14 of seeds 1001..6000 with 3
// nodes and 3 of 1..2000 with 5 failed so; every seed below fails without catching up.
TEST(SimulationTest, FormerUnsyncedReadAfterWriteFailures) {
  if (SeedsAsked() || !ChangeAsked().empty()) GTEST_SKIP() << "KV_SIM_SEED(S) or KV_SIM_CHANGE set";
  RunSeeds(3, MembershipChange::kNone, {2173, 2351, 2382, 2438, 2456}, true, /*sync_writes=*/false);
  RunSeeds(5, MembershipChange::kNone, {649, 1035, 1157}, true, /*sync_writes=*/false);
}

TEST(SimulationTest, SameSeedReplaysTheSameRun) {
  const std::pair<int, MembershipChange> runs[] = {{3, MembershipChange::kNone},
                                                   {5, MembershipChange::kNone},
                                                   {4, MembershipChange::kJoin},
                                                   {5, MembershipChange::kLeave}};
  for (const auto& [num_nodes, change] : runs) {
    SimOptions options;
    options.seed = 42;
    options.num_nodes = num_nodes;
    options.change = change;
    const SimResult first = RunSimulation(options);
    const SimResult second = RunSimulation(options);
    EXPECT_GT(first.events, 1000u) << first.Summary();
    EXPECT_EQ(first.trace_hash, second.trace_hash) << options.ReplayHint();
    EXPECT_EQ(first.state_hash, second.state_hash) << options.ReplayHint();
    EXPECT_EQ(first.Summary(), second.Summary());
    EXPECT_EQ(first.failures, second.failures);

    options.seed = 43;
    const SimResult other = RunSimulation(options);
    EXPECT_NE(first.trace_hash, other.trace_hash) << "seeds 42 and 43 ran the same trace";
  }
}

// Each checker fails when its property is broken (a checker that cannot fail proves nothing).
void ExpectReported(Sabotage sabotage, const std::string& what, SimOptions options = {}) {
  if (options.change == MembershipChange::kNone && options.sync_writes) options.seed = 5;
  options.sabotage = sabotage;
  const SimResult result = RunSimulation(options);
  bool reported = false;
  for (const std::string& failure : result.failures) {
    reported |=
        failure.find(what) != std::string::npos &&
        failure.find(absl::StrCat("seed ", options.seed, ", key \"")) != std::string::npos &&
        failure.find(options.ReplayHint()) != std::string::npos;
  }
  EXPECT_TRUE(reported) << "no failure says \"" << what << "\": " << result.Summary();
}

TEST(SimulationTest, CheckersReportALostAcknowledgedWrite) {
  ExpectReported(Sabotage::kDropAcknowledgedWrite, "acknowledged write lost");
}

TEST(SimulationTest, CheckersReportALostAcknowledgedWriteOnASharedKey) {
  // A key that clients also deleted without a context, and read and overwrote: neither the
  // Deletes nor contexts that merely cover the dot excuse a version no write saw.
  ExpectReported(Sabotage::kDropAcknowledgedWriteOnSharedKey, "acknowledged write lost");
}

TEST(SimulationTest, CheckersReportDivergedReplicas) {
  ExpectReported(Sabotage::kDivergeOneReplica, "replicas diverged");
}

TEST(SimulationTest, CheckersReportATokenAppliedTwice) {
  ExpectReported(Sabotage::kDuplicateToken, "applied twice");
}

TEST(SimulationTest, CheckersReportADeletedValueResurrected) {
  ExpectReported(Sabotage::kResurrectDeletedValue, "deleted key resurrected");
}

TEST(SimulationTest, CheckersReportARetryCopyBackAfterAnOverwrite) {
  ExpectReported(Sabotage::kResurrectRetryCopy, "overwrote it, yet its version");
}

TEST(SimulationTest, CheckersReportANewKeyNotFoundAfterItsPut) {
  ExpectReported(Sabotage::kFakeNotFound, "read-after-write violated");
}

// A node that kept its actor epoch after a crash lost its unsynced writes gives their dots to new
// writes: two versions share a dot, and merging keeps one of them. The seed is one whose run
// reuses a lost dot for another write of the same key (about 1 in 1,000 runs do; the trace
// changes with the node's code, so a change may need another seed: seeds 1..3000 with the
// sabotage, KV_SIM_SYNC=0, find them).
TEST(SimulationTest, CheckersReportAnEpochKeptAfterLostWrites) {
  SimOptions options;
  options.seed = 1547;
  options.sync_writes = false;
  const SimResult control = RunSimulation(options);
  EXPECT_TRUE(control.ok()) << control.Summary() << "\n" << absl::StrJoin(control.failures, "\n");
  EXPECT_GT(control.crashes, 0u) << control.Summary();
  ExpectReported(Sabotage::kKeepEpochAfterLostWrites, "acknowledged write lost", options);
}

// A joining node that never received some keys of the handoff holds nothing where the other new
// owners hold the key: the checkers judge replicas by the final layout, so they see it. Without
// anti-entropy (which would repair it), in a run that passes without the sabotage and crashes a
// node during the handoff.
TEST(SimulationTest, CheckersReportAKeyTheJoiningNodeNeverReceived) {
  SimOptions options;
  // One whose control run passes and crashes a member during the handoff (the trace changes
  // with the node's code; seeds 1-22 do not crash one on purpose in this configuration).
  options.seed = 23;
  options.num_nodes = 4;
  options.change = MembershipChange::kJoin;
  options.anti_entropy = false;
  const SimResult control = RunSimulation(options);
  EXPECT_TRUE(control.ok()) << control.Summary() << "\n" << absl::StrJoin(control.failures, "\n");
  EXPECT_GT(control.membership.handoff_crashes, 0u) << control.Summary();
  ExpectReported(Sabotage::kDropHandoffKeys, "n4 holds <none>", options);
}

}  // namespace
}  // namespace kv::sim

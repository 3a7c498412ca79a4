// The deterministic simulation (tests/sim/): the real node core of 3-5 nodes in one thread, on
// simulated time and a simulated network, with faults injected from a seed, checked at the end
// against the product's contract. See tests/sim/sim_run.h for the phases of a run.
//
// CI runs a fixed set of seeds. To replay one seed (with every operation and fault logged):
//     KV_SIM_SEED=1234 KV_SIM_NODES=5 KV_SIM_VERBOSE=1 ./simulation_test
// To explore more seeds: KV_SIM_SEEDS=500 (seeds 1..500), optionally KV_SIM_FIRST_SEED=1000.
// Membership changes (a join or a leave during the run) have their own tests and seed lists;
// KV_SIM_CHANGE=join or leave selects them (with KV_SIM_NODES=4: 3->4 or 4->3; 5: 4->5 or 5->4),
// e.g. KV_SIM_CHANGE=join KV_SIM_NODES=4 KV_SIM_SEEDS=500.
// The stricter token checker (Checkers::CheckTokenResurrection) runs unless KV_SIM_STRICT_TOKENS=0.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

bool StrictTokens() {
  const char* text = std::getenv("KV_SIM_STRICT_TOKENS");
  return text == nullptr || std::string(text) != "0";
}

void RunSeeds(int num_nodes, MembershipChange change = MembershipChange::kNone,
              const std::vector<uint64_t>& seeds = SeedsToRun()) {
  for (uint64_t seed : seeds) {
    SimOptions options;
    options.seed = seed;
    options.num_nodes = num_nodes;
    options.change = change;
    options.verbose = std::getenv("KV_SIM_VERBOSE") != nullptr;
    options.check_token_resurrection = StrictTokens();
    const SimResult result = RunSimulation(options);
    std::cout << result.Summary() << std::endl;
    for (const std::string& failure : result.failures) ADD_FAILURE() << failure;
  }
}

// True unless KV_SIM_CHANGE asks for a membership change.
bool WantNoChange() { return ChangeAsked().empty() || ChangeAsked() == "none"; }

TEST(SimulationTest, ThreeNodes) {
  if (!WantNoChange()) GTEST_SKIP() << "KV_SIM_CHANGE asks for a membership change";
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
  if (!WantNodes(5)) GTEST_SKIP() << "KV_SIM_NODES asks for another cluster size";
  RunSeeds(5);
}

// Membership changes. CI runs a fixed list of seeds per change; each list holds seeds whose run
// crashed a node during the handoff (the summary line says how many crashes fell in it).
void RunChange(int num_nodes, MembershipChange change, const std::vector<uint64_t>& ci_seeds) {
  if (!WantNodes(num_nodes)) GTEST_SKIP() << "KV_SIM_NODES asks for another cluster size";
  const std::string asked = ChangeAsked();
  if (asked.empty() ? SeedsAsked() : asked != MembershipChangeName(change)) {
    GTEST_SKIP() << "KV_SIM_CHANGE asks for another change";
  }
  RunSeeds(num_nodes, change, asked.empty() ? ci_seeds : SeedsToRun());
}

TEST(SimulationTest, JoinThreeToFour) {
  RunChange(4, MembershipChange::kJoin, {1, 2, 3, 4, 5, 6, 7, 8});
}

TEST(SimulationTest, LeaveFourToThree) {
  RunChange(4, MembershipChange::kLeave, {1, 2, 3, 4, 5, 6, 7, 8});
}

TEST(SimulationTest, JoinFourToFive) {
  RunChange(5, MembershipChange::kJoin, {1, 2, 3, 4, 5, 6, 7, 8});
}

TEST(SimulationTest, LeaveFiveToFour) {
  RunChange(5, MembershipChange::kLeave, {1, 2, 3, 4, 5, 6, 7, 8});
}

TEST(SimulationTest, SameSeedReplaysTheSameRun) {
  for (int num_nodes : {3, 5}) {
    SimOptions options;
    options.seed = 42;
    options.num_nodes = num_nodes;
    const SimResult first = RunSimulation(options);
    const SimResult second = RunSimulation(options);
    EXPECT_GT(first.events, 1000u) << first.Summary();
    EXPECT_EQ(first.trace_hash, second.trace_hash) << "seed 42, " << num_nodes << " nodes";
    EXPECT_EQ(first.state_hash, second.state_hash) << "seed 42, " << num_nodes << " nodes";
    EXPECT_EQ(first.Summary(), second.Summary());
    EXPECT_EQ(first.failures, second.failures);

    options.seed = 43;
    const SimResult other = RunSimulation(options);
    EXPECT_NE(first.trace_hash, other.trace_hash) << "seeds 42 and 43 ran the same trace";
  }
}

// Each checker fails when its property is broken (a checker that cannot fail proves nothing).
void ExpectReported(Sabotage sabotage, const std::string& what) {
  SimOptions options;
  options.seed = 5;
  options.num_nodes = 3;
  options.sabotage = sabotage;
  const SimResult result = RunSimulation(options);
  bool reported = false;
  for (const std::string& failure : result.failures) {
    reported |= failure.find(what) != std::string::npos &&
                failure.find("seed 5, key \"") != std::string::npos &&
                failure.find("KV_SIM_SEED=5 KV_SIM_NODES=3") != std::string::npos;
  }
  EXPECT_TRUE(reported) << "no failure says \"" << what << "\": " << result.Summary();
}

TEST(SimulationTest, CheckersReportALostAcknowledgedWrite) {
  ExpectReported(Sabotage::kDropAcknowledgedWrite, "acknowledged write lost");
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

}  // namespace
}  // namespace kv::sim

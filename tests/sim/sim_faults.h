// FaultInjector: the seeded fault schedule of one simulation run.
//
// At Start it draws the run's network fault levels (request and response loss, duplication,
// delays and their slow tail, which also reorder messages) and then, at random intervals until
// the end of the fault phase, injects one fault at a time: a partition between two nodes, a node
// cut off from every other node, a client cut off from a node, the healing of a partition, or a
// machine crash of a node (unsynced writes lost) followed by its restart after a random downtime;
// once per run at most, the crashed node's disk is lost (wiped) before it restarts, so that only
// anti-entropy can restore its replicas.
// HealAll ends the fault phase: every partition heals, every node is restarted and the network
// turns reliable and fast. Single-threaded.
#ifndef KV_TESTS_SIM_SIM_FAULTS_H_
#define KV_TESTS_SIM_SIM_FAULTS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_loop.h"
#include "tests/sim/sim_network.h"

namespace kv::sim {

struct FaultStats {
  uint64_t partitions = 0;
  uint64_t crashes = 0;
  uint64_t restarts = 0;
  uint64_t wipes = 0;  // disks lost while their node was down (at most one per run)
};

class FaultInjector {
 public:
  // Clients are endpoints first_client..first_client+num_clients-1 of `network`.
  FaultInjector(SimLoop* loop, SimNetwork* network, SimCluster* cluster, int first_client,
                int num_clients);

  // No disk is wiped in this run (a run that loses a member's disk otherwise: a member removed
  // down for good). Call before Start. Runs without it draw exactly what they drew before.
  void NoWipes() { wipes_allowed_ = false; }
  // Draws the fault levels and injects faults until `until`.
  void Start(absl::Time until);
  // Heals every partition, restarts every node that is down, calms the network.
  absl::Status HealAll();

  const FaultStats& stats() const { return stats_; }
  // The fault levels drawn by Start, for the run summary.
  const std::string& Describe() const { return drawn_; }

 private:
  void Tick();
  void CrashOne();
  void RestartLater(int node);

  SimLoop* const loop_;
  SimNetwork* const network_;
  SimCluster* const cluster_;
  const int first_client_;
  const int num_clients_;
  absl::Time until_;
  bool healed_ = false;
  bool wiped_ = false;
  bool wipes_allowed_ = true;
  FaultStats stats_;
  absl::Status restart_error_;
  std::string drawn_;  // Describe()
};

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_FAULTS_H_

// RunSimulation: one deterministic simulation run, a pure function of its options.
//
//   1. Start a cluster of 3-5 nodes (real node core, simulated everything else) and clients.
//   2. Fault phase: the workload runs while the FaultInjector loses, duplicates, delays and
//      reorders messages, partitions endpoints and crashes and restarts nodes. With a membership
//      change, the MembershipDriver (sim_membership.h) joins a node or makes one leave meanwhile.
//   3. Heal: faults end, every node that is down is restarted, the workload stops starting
//      operations. With a membership change: run until it completed. Nodes that lived through
//      the change keep running: their Merkle trees and tombstone purging follow the final ring
//      (README, join and leave), so the purge phase below checks purging after a change too.
//   4. Drain: run until quiescent (clients idle, nothing on the wire, every outbox empty, every
//      pair of nodes with equal Merkle roots), within a bounded simulated time. Then let time
//      pass for the tombstone reapers, and drain again.
//   5. Check: sim_checkers.h against the history and every replica's final record, and that no
//      member holds a record of a key it does not own (the cleaners removed them).
//
// The result carries a trace hash (every event run: time, kind, endpoint, key) and a hash of
// every engine's final contents, which must be identical for identical options.
#ifndef KV_TESTS_SIM_SIM_RUN_H_
#define KV_TESTS_SIM_SIM_RUN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/sim/sim_membership.h"
#include "tests/sim/sim_sabotage.h"

namespace kv::sim {

struct SimOptions {
  uint64_t seed = 1;
  // Simulated nodes. With a join, the last one starts outside the layout (3->4 is num_nodes 4).
  int num_nodes = 3;
  MembershipChange change = MembershipChange::kNone;
  absl::Duration fault_phase = absl::Seconds(12);
  absl::Duration drain_limit = absl::Seconds(60);
  // After the first drain: time for the tombstone reapers, then a second drain (0: none).
  absl::Duration purge_phase = absl::Seconds(12);
  // Tombstone reapers run (ClusterConfig::purge_tombstones). The checkers learn of a purge
  // from the peers it asks (SimCluster::ServePurgeRecord): a cluster left with one member purges
  // alone, unseen, and its purged deletes would look lost.
  bool purge_tombstones = true;
  bool verbose = false;  // log every operation and fault to stderr
  // Also fail a run when a retried write comes back after a version of it was overwritten
  // (Checkers::CheckTokenResurrection). The core prevents it while a record remembers the
  // overwritten version (storage/sibling_set.h, "Retried writes").
  bool check_token_resurrection = true;
  // Merkle anti-entropy and tombstone purge. Off, only the outbox, read repair and the handoff
  // move data (a run whose fault schedule wipes a disk then cannot converge).
  bool anti_entropy = true;
  // Off: nodes run without synced writes, as kvnode does by default, and a crash loses what the
  // machine had not written back (ClusterConfig::sync_writes). Such runs wipe no disk, and a
  // member removed for good must have lost nothing (so no remove changes).
  bool sync_writes = true;
  // For the checkers' own tests: damage done after the run, before the checkers (or, for
  // kDropHandoffKeys, during it: pair it with anti_entropy off, which would repair the damage).
  Sabotage sabotage = Sabotage::kNone;

  // The environment that replays this run with simulation_test, e.g. "KV_SIM_SEED=5
  // KV_SIM_NODES=3" (and " KV_SIM_CHANGE=join" with a change, " KV_SIM_SYNC=0" without synced
  // writes).
  std::string ReplayHint() const;
};

struct SimResult {
  uint64_t seed = 0;
  int num_nodes = 0;
  uint64_t trace_hash = 0;
  uint64_t state_hash = 0;
  std::vector<std::string> failures;  // each names the seed and the key
  // Statistics, for the summary.
  uint64_t events = 0;
  absl::Duration simulated;
  size_t writes = 0, writes_acked = 0, writes_deduplicated = 0, writes_gave_up = 0;
  size_t reads = 0, reads_found = 0, reads_not_found = 0, reads_gave_up = 0;
  uint64_t crashes = 0, partitions = 0;
  uint64_t messages = 0, messages_lost = 0, messages_duplicated = 0;
  uint64_t keys_repaired = 0, purged = 0;  // by anti-entropy; tombstones purged
  std::string faults;                      // the fault levels drawn
  MembershipStats membership;
  uint64_t cleaned = 0;         // records of keys no longer owned removed by the cleaners
  uint64_t outbox_dropped = 0;  // outbox entries dropped for members that left

  bool ok() const { return failures.empty(); }
  std::string Summary() const;
};

SimResult RunSimulation(const SimOptions& options);

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_RUN_H_

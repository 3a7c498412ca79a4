// Sabotage: deliberate damage done after a simulation run and before its checkers, so that the
// checkers' own tests can show that each of them fails when its property is broken (a checker
// that cannot fail proves nothing).
#ifndef KV_TESTS_SIM_SIM_SABOTAGE_H_
#define KV_TESTS_SIM_SIM_SABOTAGE_H_

namespace kv::sim {

class SimCluster;
struct History;

enum class Sabotage {
  kNone,
  // Removes an acknowledged version from every replica, keeping the context that covers it (what
  // a merge that wrongly drops a sibling would leave): "acknowledged write lost".
  kDropAcknowledgedWrite,
  // The same for a version still a sibling on a key that other clients overwrote and deleted
  // without a context (a shared key): the checker must not take the Deletes, or the contexts
  // that cover the dot, for writes that saw the version.
  kDropAcknowledgedWriteOnSharedKey,
  // Removes it from one replica only: "replicas diverged".
  kDivergeOneReplica,
  // Adds a second version carrying the same token to every replica: "applied twice".
  kDuplicateToken,
  // Rewrites a successful Get of an acknowledged new key as NOT_FOUND in the history:
  // "read-after-write violated".
  kFakeNotFound,
  // Brings back, on every replica, a Put's version that an acknowledged Delete replaced (what
  // a tombstone purged too early would allow): "deleted key resurrected".
  kResurrectDeletedValue,
  // Adds, on every replica, a copy (another coordinator's dot, the same token and value) of a
  // Put's version that a client saw and overwrote, as a retry copy that arrived after the
  // overwrite and was not replaced would leave: "overwrote it, yet its version".
  kResurrectRetryCopy,
  // During the run, not after it (a run with a membership change): every node's handoff stream
  // silently drops the records of every other key (answering as if the gainer stored them). With
  // anti-entropy off (which would repair them), a gainer never receives those keys unless a
  // later write brings them: "replicas diverged" under the final layout.
  kDropHandoffKeys,
  // During the run (one without synced writes): a crash keeps the node's boot id, so its store
  // keeps its actor epoch after losing writes and gives their dots to new writes. Two versions
  // then share a dot and merging keeps one: "acknowledged write lost" (or replicas diverged).
  kKeepEpochAfterLostWrites,
};

// Applies `sabotage` to the quiescent cluster and its history. Every node must be up.
// (kDropHandoffKeys and kKeepEpochAfterLostWrites are applied by RunSimulation through
// ClusterConfig; nothing is done here.)
void ApplySabotage(Sabotage sabotage, SimCluster* cluster, History* history);

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_SABOTAGE_H_

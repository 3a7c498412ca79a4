// End-of-run checkers of the deterministic simulation: the product's contract (PRODUCT.md C2,
// C3, C5, C6) checked against the History of what clients did and the final state of every
// replica, once faults have healed and the cluster is quiescent.
//
// Each failure is one line that names the seed and the key, so that it can be replayed.
#ifndef KV_TESTS_SIM_SIM_CHECKERS_H_
#define KV_TESTS_SIM_SIM_CHECKERS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "storage/sibling_set.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_history.h"

namespace kv::sim {

// Every replica's record of one key (nullopt: the replica knows nothing of it), in preference
// order, read directly from each node's LocalStore. The replicas are those of the cluster's final
// layout (after a membership change, the new owners; old owners that lost the key do not count).
struct KeyState {
  std::vector<int> replicas;
  std::vector<std::optional<SiblingSet>> records;
  std::vector<std::string> errors;  // replicas whose record could not be read
};
using FinalState = std::map<std::string, KeyState>;

// Reads every key the history mentions from every replica. Every node must be up.
FinalState CollectFinalState(SimCluster* cluster, const History& history);

class Checkers {
 public:
  // `replay` is the environment that replays the run (SimOptions::ReplayHint), for the messages.
  Checkers(uint64_t seed, std::string replay, const History& history, const FinalState& state,
           SimCluster* cluster);

  // 1. Convergence (C2): every replica of every key holds the same record.
  void CheckConvergence();
  // 2. No acknowledged write lost (C1, C5): each acknowledged write's version is still a sibling,
  //    or it was replaced by a write whose client had seen it (SomeWriteSaw; the final context
  //    covers it), or it was merged away by token deduplication in favour of another version of
  //    the same logical write. A version that a purged tombstone record covered counts as
  //    replaced only if a write saw it too.
  void CheckNoAcknowledgedWriteLost();
  // 3. Read-after-write of a Put of a key with no live version (C3; a new key, or one deleted
  //    before): no Get issued after a Put of the key was acknowledged returned NOT_FOUND, unless
  //    a Delete that may cover the Put had been issued by the time it answered (one issued after
  //    the Put, or one without a context still under way when the Put was issued), or, in a run
  //    that wiped a disk, the Put was acknowledged before and the Get answered after the wipe,
  //    for a key the wiped node replicates (any key once the membership changed) (C3 assumes an
  //    acknowledging replica stays reachable, which a lost disk breaks).
  void CheckReadAfterWrite();
  // 4. No token applied twice (C6), judged on the final records only: no coordinator (dot actor)
  //    holds two versions of one token, and no read would show two live versions of one token.
  //    Copies coordinated by two nodes (a retry through another node during a partition) may both
  //    be stored, as tombstones but one: Merge is a join. (A token applied twice by one node whose
  //    copies were both overwritten later is not seen; CheckTokenResurrection covers retries that
  //    bring an overwritten value back.)
  void CheckTokens();
  // 4b. Stricter: a version of a logical write never survives once another version of the same
  //     write (the same token, coordinated elsewhere during a partition) was replaced by a write
  //     whose client had seen it: an overwritten value must not come back through a retry. The
  //     overwrite counts once it took effect (SomeLastingWriteSaw): one never acknowledged and
  //     lost with the only disk that held it replaced nothing, and the write's retry copies are
  //     then its live version.
  void CheckTokenResurrection();
  // 5. No operation failed with a non-retryable error (this workload never sends bad input, so
  //    INVALID_ARGUMENT, e.g. "token reused with different parameters", is a bug).
  void CheckNoUnexpectedErrors();
  // Every stored record satisfies the SiblingSet invariants.
  void CheckInvariants();
  // 6. No deleted key resurrected (C8): no live sibling of a final record is a version that an
  //    acknowledged Delete replaced (its reply context covers the version's dot) or that a purged
  //    tombstone record covered. Merging never revives a replaced version; a tombstone purged too
  //    early, or a dot reused after a purge, would.
  void CheckNoDeletedKeyResurrected();

  // All of the above; CheckTokenResurrection only with `strict_tokens`.
  void RunAll(bool strict_tokens);
  const std::vector<std::string>& failures() const { return failures_; }

 private:
  void Fail(const std::string& key, const std::string& what);
  // The record the checkers judge a key by: the first replica's (they are all equal once
  // convergence holds); nullopt if no replica knows the key.
  std::optional<SiblingSet> Final(const std::string& key) const;
  // True if some write of `key` may have replaced the version `dot` because its client had seen
  // it: one issued with the context of a Get that returned `dot` as a sibling (whatever the
  // write's outcome: an unanswered write may have been applied); an acknowledged Delete without
  // context, answered on its first attempt, whose reply context covers `dot`; or a Delete without
  // context whose outcome is unknown or that was retried (it replaced whatever its coordinators
  // held, which the checkers cannot tell); and, when `dot` is a version of `version_of`, a
  // write retried after an attempt that may have stored it, an acknowledged Delete without
  // context answered after that write was issued (it may have replaced a copy the history never
  // saw). A context that merely covers `dot` does not count: a replica that dropped a sibling
  // but kept its dot would hand such contexts out.
  bool SomeWriteSaw(const std::string& key, const Dot& dot,
                    const WriteOp* version_of = nullptr) const;
  // Whether `op` is such a write (above).
  static bool Saw(const WriteOp& op, const Dot& dot, const WriteOp* version_of);
  // As SomeWriteSaw, counting only writes that took effect: acknowledged, or with a version of
  // their token that the final record's context covers. A write never acknowledged whose every
  // copy was lost (the only replica holding it lost its disk) replaced nothing.
  bool SomeLastingWriteSaw(const std::string& key, const Dot& dot,
                           const SiblingSet& final_record) const;
  // The acknowledged Delete of `key` that replaced `dot` (its reply context covers it), if any.
  const WriteOp* DeleteThatReplaced(const std::string& key, const Dot& dot) const;
  // True if a purged tombstone-only record of `key` covered `dot` (so it had been replaced).
  bool PurgedOver(const std::string& key, const Dot& dot) const;

  const uint64_t seed_;
  const std::string replay_;
  const History& history_;
  const FinalState& state_;
  SimCluster* const cluster_;
  std::map<std::string, std::vector<const WriteOp*>> writes_by_key_;
  // Every dot known to carry each token: from acknowledgements, Get answers and final records.
  std::map<std::string, std::vector<Dot>> dots_by_token_;
  std::vector<std::string> failures_;
};

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_CHECKERS_H_

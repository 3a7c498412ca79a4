// OperationRegistry: the long-running admin jobs of one node (repair now; join, leave and others
// later), so that the admin call that starts one returns an operation id at once and the caller
// polls its state (PRODUCT.md technique 1).
//
// Operation ids name the node that runs the job and the run of that node:
//   "<node_id>:<incarnation>-<sequence>", e.g. "n1:66a1b2c3-7"
// where the incarnation is fixed per process (kvnode uses its start time in hexadecimal) and the
// sequence counts from 1. A node id never contains ':', so every id says which node owns it, and
// an id from before a restart is recognised as such (operations are kept in memory only).
//
// State: RUNNING until Finish, then SUCCEEDED (OK status) or FAILED (with the error). Progress is
// generic: `done` of `total` `unit`s (total 0: unknown), named counters, and a one-line message
// that the job updates as it goes.
//
// Retention: running operations are always kept. Finished ones are kept for Options::retention
// after they ended and at most Options::max_finished of them (the oldest-ended go first); older
// ones answer NOT_FOUND like unknown ids. Pruning happens on every call; it reads time only
// through the injected Clock.
//
// Errors of Get: INVALID_ARGUMENT for a malformed id; NOT_FOUND (saying why) for an id of another
// node, of an earlier run of this node, or an unknown or expired one.
//
// Thread-safe.
#ifndef KV_NODE_OPERATIONS_H_
#define KV_NODE_OPERATIONS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"

namespace kv {

enum class OperationState { kRunning, kSucceeded, kFailed };

// "RUNNING", "SUCCEEDED", "FAILED".
absl::string_view OperationStateName(OperationState state);

struct OperationInfo {
  std::string id;
  std::string kind;         // what the job is, e.g. "repair"
  std::string description;  // what it does, in a sentence fragment
  OperationState state = OperationState::kRunning;
  absl::Status error;  // set when FAILED
  absl::Time started = absl::InfinitePast();
  absl::Time ended = absl::InfinitePast();  // InfinitePast while running
  uint64_t done = 0;
  uint64_t total = 0;                        // 0: unknown
  std::string unit;                          // what done/total count, e.g. "peers"
  std::string message;                       // the latest progress note
  std::map<std::string, uint64_t> counters;  // named figures, e.g. "keys_repaired"
};

// The parts of a well-formed operation id.
struct OperationIdParts {
  std::string node_id;
  std::string incarnation;
  uint64_t sequence = 0;
};

// INVALID_ARGUMENT naming the expected form if `id` is not "<node_id>:<incarnation>-<sequence>".
absl::StatusOr<OperationIdParts> ParseOperationId(absl::string_view id);

class OperationRegistry {
 public:
  struct Options {
    size_t max_finished = 100;
    absl::Duration retention = absl::Hours(1);
  };

  // `node_id` and `incarnation` (lowercase letters and digits) prefix every id. `clock` must
  // outlive the registry.
  OperationRegistry(std::string node_id, std::string incarnation, const Clock* clock,
                    Options options);

  // Registers a RUNNING operation and returns its id.
  std::string Start(std::string kind, std::string description, uint64_t total, std::string unit);
  // Applies `update` to a running operation's progress fields (done, total, unit, message,
  // counters; changes to id, kind, state, error and times are ignored). NOT_FOUND if unknown,
  // FAILED_PRECONDITION if it already finished.
  absl::Status Update(absl::string_view id, const std::function<void(OperationInfo&)>& update);
  // Ends a running operation: SUCCEEDED for OK, else FAILED with `result`. NOT_FOUND if unknown,
  // FAILED_PRECONDITION if it already finished.
  absl::Status Finish(absl::string_view id, absl::Status result);

  absl::StatusOr<OperationInfo> Get(absl::string_view id);
  // Every kept operation, newest first.
  std::vector<OperationInfo> List();

  const std::string& node_id() const { return node_id_; }

 private:
  void Prune() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The running operation `id` names: NOT_FOUND if none (malformed, another node's or run's, or
  // pruned), FAILED_PRECONDITION if it has finished.
  absl::StatusOr<OperationInfo*> FindRunning(absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string node_id_;
  const std::string incarnation_;
  const Clock* const clock_;
  const Options options_;

  absl::Mutex mu_;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, OperationInfo> operations_ ABSL_GUARDED_BY(mu_);  // by sequence
  std::deque<uint64_t> finished_ ABSL_GUARDED_BY(mu_);  // sequences, in the order they ended
};

}  // namespace kv

#endif  // KV_NODE_OPERATIONS_H_

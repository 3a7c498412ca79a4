// OperationRegistry: the long-running admin jobs of one node (repair, join, leave, remove), so
// that the admin call that starts one returns an operation id at once and the caller polls its
// state (PRODUCT.md technique 1).
//
// Operation ids name the node that runs the job and the run of that node:
//   "<node_id>:<incarnation>-<sequence>", e.g. "n1:66a1b2c3-7"
// where the incarnation is fixed per process (kvnode: its start time in milliseconds, hexadecimal,
// e.g. "19ab3c4d5e6") and the sequence counts from 1 (skipping ids still kept from an earlier run
// with the same incarnation). A node id never contains ':', so every id says which node owns it.
//
// State: RUNNING until Finish, then SUCCEEDED (OK status) or FAILED (with the error). Progress is
// generic: `done` of `total` `unit`s (total 0: unknown), named counters, and a one-line message
// that the job updates as it goes.
//
// Durability (Load): with a journal (kvnode: node/operation_journal.h, the engine's meta column),
// every change of an operation is written to it before the call that made it returns, and Load
// reads them back after a restart, so an id stays valid across restarts (also a kill: the
// write-ahead log keeps the writes). An operation that was RUNNING when the node stopped is
// *interrupted*: it stays RUNNING until its owner resumes it (TakeInterrupted: the same id goes
// on, from the checkpoint its owner gave to Start) or it is failed (FailInterrupted). A failed
// write is logged and the operation goes on in memory. Without Load, operations are kept in
// memory only.
//
// Retention: running operations are always kept. Finished ones are kept for Options::retention
// after they ended and at most Options::max_finished of them (the oldest-ended go first), across
// restarts; older ones answer NOT_FOUND like unknown ids. Pruning happens on every call; it reads
// time only through the injected Clock.
//
// Errors of Get: INVALID_ARGUMENT for a malformed id; NOT_FOUND (saying why) for an id of another
// node, or an unknown or expired one.
//
// Thread-safe.
#ifndef KV_NODE_OPERATIONS_H_
#define KV_NODE_OPERATIONS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
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
  // Opaque to the registry and never shown: what the operation's owner needs to resume it after
  // a restart (membership changes: their transition's layout version; repairs: the peers asked
  // and those done). Set by Start, and by the owner's Update.
  std::string checkpoint;
};

// The parts of a well-formed operation id.
struct OperationIdParts {
  std::string node_id;
  std::string incarnation;
  uint64_t sequence = 0;
};

// INVALID_ARGUMENT naming the expected form if `id` is not "<node_id>:<incarnation>-<sequence>".
absl::StatusOr<OperationIdParts> ParseOperationId(absl::string_view id);

// Where a registry keeps its operations across restarts. Called with the registry's lock held, so
// one operation's writes arrive in the order its changes were made.
class OperationJournal {
 public:
  virtual ~OperationJournal() = default;
  // Every stored operation; records that do not parse are logged and deleted. Not OK if the
  // store cannot be read.
  virtual absl::StatusOr<std::vector<OperationInfo>> LoadAll() = 0;
  virtual absl::Status Save(const OperationInfo& op) = 0;
  virtual absl::Status Erase(absl::string_view id) = 0;
};

class OperationRegistry {
 public:
  struct Options {
    // Repairs started often (a script every few seconds) must not push a membership change's
    // result out within the hour: about 1 KB each.
    size_t max_finished = 1000;
    absl::Duration retention = absl::Hours(1);
  };

  // `node_id` and `incarnation` prefix every id; the incarnation is 1-16 lowercase hex digits (as
  // ParseOperationId reads it). `clock` must
  // outlive the registry.
  OperationRegistry(std::string node_id, std::string incarnation, const Clock* clock,
                    Options options);

  // Reads the operations `journal` keeps (see Durability in the header comment) and writes every
  // later change to it; `journal` must outlive the registry. Call once, before Start. Records of
  // another node id (a data directory used under another --node_id) are deleted. Not OK (and
  // nothing loaded) if the journal cannot be read.
  absl::Status Load(OperationJournal* journal);
  // Whether Load was called: operations outlive a restart.
  bool durable() const;

  // Registers a RUNNING operation and returns its id. `checkpoint`: see OperationInfo.
  std::string Start(std::string kind, std::string description, uint64_t total, std::string unit,
                    std::string checkpoint = "");
  // Applies `update` to a running operation's progress fields (done, total, unit, message,
  // counters) and checkpoint; changes to id, kind, state, error and times are ignored. NOT_FOUND if
  // unknown, FAILED_PRECONDITION if it already finished.
  absl::Status Update(absl::string_view id, const std::function<void(OperationInfo&)>& update);
  // Ends a running operation: SUCCEEDED for OK, else FAILED with `result`. NOT_FOUND if unknown,
  // FAILED_PRECONDITION if it already finished.
  absl::Status Finish(absl::string_view id, absl::Status result);

  // The interrupted operations (RUNNING when an earlier run stopped) of the given kinds, oldest
  // first; their owner now runs them on: Update and Finish them by id as usual.
  std::vector<OperationInfo> TakeInterrupted(const std::vector<std::string>& kinds);
  // Ends every interrupted operation not taken FAILED with `why`.
  void FailInterrupted(const absl::Status& why);

  absl::StatusOr<OperationInfo> Get(absl::string_view id);
  // Every kept operation, newest first.
  std::vector<OperationInfo> List();

  const std::string& node_id() const { return node_id_; }

 private:
  // Drops the expired finished operations from memory; their journal records go at the next
  // EraseExpired (a call that writes anyway: Get and List never write).
  void Prune() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseExpired() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The running operation `id` names: NOT_FOUND if none (malformed, another node's, or pruned),
  // FAILED_PRECONDITION if it has finished.
  absl::StatusOr<OperationInfo*> FindRunning(absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds `op` in the next slot (the newest).
  OperationInfo& Add(OperationInfo op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndRunning(OperationInfo& op, absl::Status result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `op` to, or erases it from, the journal (if any); a failure is logged.
  void Save(const OperationInfo& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Erase(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string node_id_;
  const std::string incarnation_;
  const Clock* const clock_;
  const Options options_;

  mutable absl::Mutex mu_;
  OperationJournal* journal_ ABSL_GUARDED_BY(mu_) = nullptr;  // see Load
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_slot_ ABSL_GUARDED_BY(mu_) = 1;
  // By slot: in the order they were started (loaded ones first, by start time).
  std::map<uint64_t, OperationInfo> operations_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> slots_ ABSL_GUARDED_BY(mu_);  // id -> slot
  std::deque<uint64_t> finished_ ABSL_GUARDED_BY(mu_);     // slots, in the order they ended
  std::set<uint64_t> interrupted_ ABSL_GUARDED_BY(mu_);    // slots; see TakeInterrupted
  std::vector<std::string> expired_ ABSL_GUARDED_BY(mu_);  // ids; see Prune
};

}  // namespace kv

#endif  // KV_NODE_OPERATIONS_H_

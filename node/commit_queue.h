// CommitQueue: runs a store's mutations one at a time, in submission order, and commits them in
// groups: one Engine::Write (one write-ahead-log append; one fsync with WriteOptions::sync) for
// many mutations.
//
// A mutation is a read-modify-write. Prepare reads through a WriteGroup, which sees the engine
// plus the effects of the mutations prepared before it in the same group, and adds its changes to
// the group; once the group's batch has been written, Complete receives the outcome. Mutations
// therefore behave exactly as if each had been written alone, one after another, and none
// completes OK before its changes are in the write-ahead log. A failed group write fails every
// mutation in it and changes nothing (the batch is atomic).
//
// No thread waits for another one to commit. A thread that submits while nobody is committing
// commits: its own mutation and whatever others queue meanwhile, group after group, until the
// queue is empty. A thread that submits while another one commits returns at once; its mutation
// completes on the committing thread. A single-threaded caller (the simulation) thus commits
// inline and deterministically. Run() is the blocking form, for callers that want the outcome on
// their own thread.
//
// Thread-safe. Prepare runs with no lock held but must not call into the queue. Complete runs on
// the committing thread between groups, with no lock held: it may Submit (the mutation joins a
// later group) or Run (committed at once, on that thread), but must not block on anything that
// waits for this queue.
#ifndef KV_NODE_COMMIT_QUEUE_H_
#define KV_NODE_COMMIT_QUEUE_H_

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/engine.h"

namespace kv {

// The changes of the mutations of one group, and reads that see them. Used by one thread.
class WriteGroup {
 public:
  explicit WriteGroup(Engine* engine) : engine_(engine) {}
  WriteGroup(const WriteGroup&) = delete;
  WriteGroup& operator=(const WriteGroup&) = delete;

  // The value of `key` with the group's changes applied; NOT_FOUND if absent.
  absl::StatusOr<std::string> Get(Column column, absl::string_view key);
  void Put(Column column, absl::string_view key, absl::string_view value);
  void Delete(Column column, absl::string_view key);
  // Changes added to the batch directly are written with the group but not seen by Get: for
  // entries under keys that nothing in the group reads (replication outbox entries).
  WriteBatch* batch() { return &batch_; }

 private:
  Engine* const engine_;
  WriteBatch batch_;
  // Per column: key -> index in batch_.ops() of the group's latest change to it.
  std::map<std::string, size_t, std::less<>> latest_[kNumColumns];
};

class CommitQueue {
 public:
  class Mutation {
   public:
    virtual ~Mutation() = default;
    // Reads through `group` and adds this mutation's changes to it. On failure it must have
    // added nothing; the status goes to Complete.
    virtual absl::Status Prepare(WriteGroup& group) = 0;
    // Prepare's error, or else the status of the group's write. Called exactly once.
    virtual void Complete(absl::Status status) = 0;
  };

  // At most this many mutations, or about this many bytes, per group (so per engine write).
  static constexpr size_t kMaxGroupMutations = 256;
  static constexpr size_t kMaxGroupBytes = 4 << 20;

  CommitQueue(Engine* engine, WriteOptions options) : engine_(engine), options_(options) {}
  CommitQueue(const CommitQueue&) = delete;
  CommitQueue& operator=(const CommitQueue&) = delete;

  // Queues `mutation`; commits on this thread if no other thread is committing.
  void Submit(std::unique_ptr<Mutation> mutation);
  // Submits `mutation` (not owned) and waits until it has completed; returns the status given to
  // Complete.
  absl::Status Run(Mutation& mutation);

 private:
  // Commits queued mutations until the queue is empty, then stops committing.
  void CommitQueued();
  // Prepares mutations[begin, ...) into one group, writes it and completes them; returns the end
  // of the group.
  size_t CommitGroup(std::vector<std::unique_ptr<Mutation>>& mutations, size_t begin);

  Engine* const engine_;
  const WriteOptions options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Mutation>> queue_ ABSL_GUARDED_BY(mu_);
  bool committing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kv

#endif  // KV_NODE_COMMIT_QUEUE_H_

// CommitQueue: runs a store's mutations one at a time, in submission order, and commits them in
// groups: one Engine::Write (one write-ahead-log append; one fsync with WriteOptions::sync) for
// many mutations.
//
// A mutation is a read-modify-write. Prepare reads through a WriteGroup, which sees the engine
// plus the effects of the mutations prepared before it in the same group, and adds its changes to
// the group; once the group's batch has been written, Complete receives the outcome. Mutations
// therefore behave exactly as if each had been written alone, one after another, and none
// completes OK before its changes are in the write-ahead log. A failed group write fails every
// mutation in it and changes nothing now (the batch is atomic); but a write whose log append
// succeeded and whose fsync failed (WriteOptions::sync) may still be replayed, whole, when the
// database is next opened, so a write reported failed can appear after a restart (as one whose
// answer was lost can: a retry with the same idempotency token is deduplicated).
//
// Submit never waits for another thread. Without an executor, a thread that submits while
// nobody is committing commits: its own mutation and whatever others queue meanwhile, group after
// group, until the queue is empty; a thread that submits while another one commits returns at
// once, and its mutation completes on the committing thread. A single-threaded caller (the
// simulation) thus commits inline and deterministically. With an executor, Submit never commits
// on the calling thread: when nobody is committing it schedules the committing on the executor,
// so Submit does no storage work and may be called where blocking is not allowed (a gRPC
// handler). Under load one committing task stays busy and Submit wakes nobody; the Complete
// callbacks of each written group are handed, in submission order, to one completing task on the
// executor, so that answering a group overlaps with committing the next. Run() is the blocking
// form, for callers that want the outcome on their own thread (which may then commit); it returns
// as soon as its mutation is written.
//
// Thread-safe. Prepare runs with no lock held but must not call into the queue. Complete runs
// with no lock held, on the committing thread between groups (no executor) or on the completing
// task (executor); Complete callbacks of submitted mutations run one at a time, in submission
// order. Complete may Submit or Run, but must not block on anything that waits for this queue. A
// queue with an executor must not be destroyed before the executor has run the work scheduled on
// it.
#ifndef KV_NODE_COMMIT_QUEUE_H_
#define KV_NODE_COMMIT_QUEUE_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "node/executor.h"
#include "storage/engine.h"

namespace kv {

// The changes of the mutations of one group, and reads that see them. Used by one thread.
//
// Only the latest change to each key is written (a key changed by several mutations of a group
// costs one memtable insert), in key order (so the batch does not depend on hash order).
class WriteGroup {
 public:
  explicit WriteGroup(Engine* engine) : engine_(engine) {}
  WriteGroup(const WriteGroup&) = delete;
  WriteGroup& operator=(const WriteGroup&) = delete;

  // The value of `key` with the group's changes applied; NOT_FOUND if absent.
  absl::StatusOr<std::string> Get(Column column, absl::string_view key);
  void Put(Column column, absl::string_view key, absl::string_view value);
  void Delete(Column column, absl::string_view key);
  // Changes added to this batch are written with the group, before the changes made with Put and
  // Delete, but Get does not see them: for entries under keys that nothing in the group reads
  // or changes otherwise (replication outbox entries).
  WriteBatch* batch() { return &appended_; }

  // The group is written with WriteOptions::sync whatever the queue's options say (a change that
  // must be durable before it is answered, also on a node that does not sync its writes). Since
  // the write-ahead log is appended in order, every group written before is durable then too.
  void RequireSync() { sync_ = true; }
  bool sync_required() const { return sync_; }

  bool empty() const;
  size_t ApproximateBytes() const { return appended_.ApproximateBytes() + changed_bytes_; }
  // Everything to write: the appended changes, then the latest change of each key in key order.
  WriteBatch TakeBatch();

 private:
  struct Change {
    bool is_delete = false;
    std::string value;
  };

  Engine* const engine_;
  WriteBatch appended_;
  // Per column: key -> the group's latest change to it.
  std::map<std::string, Change, std::less<>> changes_[kNumColumns];
  size_t changed_bytes_ = 0;  // keys and values passed to Put and Delete (superseded ones too)
  bool sync_ = false;
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
    // About how much memory the mutation holds while it waits (its key and value): counted in
    // queued_bytes() from Submit until its group is written and completed.
    virtual size_t QueuedBytes() const { return 0; }
    // True: the mutation is the first of its group, so its Prepare runs at a cut: every mutation
    // prepared before it has been written (or has failed), and none after it has been prepared.
    // Submitted from another thread than the committing one, that includes every mutation
    // queued before it; from a Complete callback on the committing thread (Run), mutations
    // still queued behind the completing one are prepared after it. Mutations queued after it
    // may join its group.
    virtual bool StartsGroup() const { return false; }
  };

  // At most this many mutations, or about this many bytes, per group (so per engine write).
  static constexpr size_t kMaxGroupMutations = 256;
  static constexpr size_t kMaxGroupBytes = 4 << 20;

  // `executor` (may be null: commit on submitting threads) runs the committing for Submit.
  CommitQueue(Engine* engine, WriteOptions options, Executor* executor)
      : engine_(engine), options_(options), executor_(executor) {}
  // Called with the error of every failed group write, on the committing thread before the
  // group's mutations complete. Set before the first mutation; must not call into the queue.
  void SetWriteFailureHook(std::function<void(const absl::Status&)> hook) {
    write_failed_ = std::move(hook);
  }
  CommitQueue(const CommitQueue&) = delete;
  CommitQueue& operator=(const CommitQueue&) = delete;

  // Queues `mutation`. If nobody is committing, commits on this thread (no executor) or
  // schedules the committing on the executor.
  void Submit(std::unique_ptr<Mutation> mutation);
  // Submits `mutation` (not owned) and waits until it has completed; returns the status given to
  // Complete. Its Complete runs on the committing thread, possibly before the callbacks of
  // mutations submitted earlier.
  absl::Status Run(Mutation& mutation);
  // Run for several mutations (not owned), queued together so that they share groups; waits
  // until all have completed and returns the first non-OK status among them, in order.
  absl::Status RunAll(absl::Span<Mutation* const> mutations);
  // The QueuedBytes of the mutations submitted and not yet completed: what a stalled engine
  // makes pile up (LocalStore::AdmitWrites refuses new writes past a bound).
  size_t queued_bytes() const { return queued_bytes_.load(std::memory_order_relaxed); }

  // While a Hold lives, Submit on its thread only queues: the committing that one of those
  // Submits would have started (on this thread, or scheduled on the executor) starts when the
  // Hold ends, so that mutations submitted in a loop share a group instead of the first one
  // committing alone. Meanwhile the queue counts as claimed: without an executor, other threads'
  // Submits leave their mutations to the Hold and their Run/RunAll wait for it to end, so nothing
  // done under a Hold may wait for another thread that might call Run. Run and RunAll inside a
  // Hold commit at once, the held mutations with theirs. Holds do not nest.
  class Hold {
   public:
    explicit Hold(CommitQueue* queue);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    friend class CommitQueue;
    CommitQueue* const queue_;
  };

 private:
  enum class State { kIdle, kScheduled, kCommitting };
  struct Queued {
    std::unique_ptr<Mutation> mutation;
    bool waited = false;  // from Run(): completed by the committing thread itself
    size_t bytes = 0;     // mutation->QueuedBytes(), as counted in queued_bytes_
  };
  struct Completion {
    std::unique_ptr<Mutation> mutation;
    absl::Status status;
  };

  // The task Submit schedules on the executor.
  void CommitScheduled();
  // The task that runs the Complete callbacks of written groups (executor only).
  void CompleteQueued();
  // Commits queued mutations until the queue is empty, then stops committing. The caller has
  // set state_ to kCommitting.
  void CommitQueued();
  // Prepares mutations[begin, ...) into one group, writes it and completes them; returns the end
  // of the group.
  size_t CommitGroup(std::vector<Queued>& mutations, size_t begin);

  // Starts committing what is queued, on this thread or on the executor, after Submit or a
  // Hold claimed the queue (state_ set to kCommitting or kScheduled).
  void StartCommitting();

  Engine* const engine_;
  const WriteOptions options_;
  Executor* const executor_;
  std::function<void(const absl::Status&)> write_failed_;  // may be empty
  std::atomic<size_t> queued_bytes_{0};
  absl::Mutex mu_;
  std::vector<Queued> queue_ ABSL_GUARDED_BY(mu_);
  // kScheduled: a CommitScheduled task is pending on the executor; a Run() caller may take over
  // (kCommitting) before it starts, and the task then finds nothing to do.
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  // Written mutations whose Complete has yet to run, in submission order (executor only).
  std::vector<Completion> completions_ ABSL_GUARDED_BY(mu_);
  bool completing_ ABSL_GUARDED_BY(mu_) = false;  // a CompleteQueued task is pending or running
  // The Hold whose Submit claimed the idle queue (set state_), to start committing when it ends;
  // null once anyone else starts committing.
  Hold* claimant_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace kv

#endif  // KV_NODE_COMMIT_QUEUE_H_

#include "node/commit_queue.h"

#include <cassert>
#include <utility>

#include "absl/synchronization/notification.h"

namespace kv {
namespace {

// The queue this thread is committing for, if any: Run() from a Complete callback commits at
// once instead of waiting for the thread that would never get to it.
thread_local const CommitQueue* committing_here = nullptr;
// The Hold alive on this thread, if any.
thread_local CommitQueue::Hold* held_here = nullptr;

class ScopedCommitting {
 public:
  explicit ScopedCommitting(const CommitQueue* queue) : previous_(committing_here) {
    committing_here = queue;
  }
  ~ScopedCommitting() { committing_here = previous_; }
  ScopedCommitting(const ScopedCommitting&) = delete;
  ScopedCommitting& operator=(const ScopedCommitting&) = delete;

 private:
  const CommitQueue* const previous_;
};

// Runs a caller's mutation (not owned) and tells the waiting caller when it is complete.
class WaitedMutation : public CommitQueue::Mutation {
 public:
  WaitedMutation(CommitQueue::Mutation* inner, absl::Status* status, absl::Notification* done)
      : inner_(inner), status_(status), done_(done) {}
  absl::Status Prepare(WriteGroup& group) override { return inner_->Prepare(group); }
  bool StartsGroup() const override { return inner_->StartsGroup(); }
  void Complete(absl::Status status) override {
    *status_ = status;
    inner_->Complete(std::move(status));
    done_->Notify();  // last: the caller may return and destroy everything it points to
  }

 private:
  CommitQueue::Mutation* const inner_;
  absl::Status* const status_;
  absl::Notification* const done_;
};

size_t Index(Column column) { return static_cast<size_t>(column); }

}  // namespace

absl::StatusOr<std::string> WriteGroup::Get(Column column, absl::string_view key) {
  const auto& changes = changes_[Index(column)];
  auto it = changes.find(key);
  if (it == changes.end()) {
    absl::StatusOr<std::string> value = engine_->Get(column, key);
    if (!value.ok()) return MarkStorageFailure(value.status());  // NOT_FOUND stays unmarked
    return value;
  }
  if (it->second.is_delete) {
    return KeyNotFound(column);
  }
  return it->second.value;
}

void WriteGroup::Put(Column column, absl::string_view key, absl::string_view value) {
  auto& changes = changes_[Index(column)];
  auto it = changes.find(key);
  if (it == changes.end()) it = changes.emplace(std::string(key), Change()).first;
  it->second.is_delete = false;
  it->second.value.assign(value.data(), value.size());
  changed_bytes_ += key.size() + value.size();
}

void WriteGroup::Delete(Column column, absl::string_view key) {
  auto& changes = changes_[Index(column)];
  auto it = changes.find(key);
  if (it == changes.end()) it = changes.emplace(std::string(key), Change()).first;
  it->second.is_delete = true;
  it->second.value.clear();
  changed_bytes_ += key.size();
}

bool WriteGroup::empty() const {
  if (!appended_.empty()) return false;
  for (const auto& changes : changes_) {
    if (!changes.empty()) return false;
  }
  return true;
}

WriteBatch WriteGroup::TakeBatch() {
  WriteBatch batch = std::move(appended_);
  appended_.Clear();
  for (size_t i = 0; i < kNumColumns; ++i) {
    auto& changes = changes_[i];
    while (!changes.empty()) {
      auto node = changes.extract(changes.begin());
      Change& change = node.mapped();
      batch.Append(
          WriteBatch::Op{change.is_delete ? WriteBatch::OpType::kDelete : WriteBatch::OpType::kPut,
                         static_cast<Column>(i), std::move(node.key()), std::move(change.value)});
    }
  }
  changed_bytes_ = 0;
  return batch;
}

void CommitQueue::Submit(std::unique_ptr<Mutation> mutation) {
  Hold* const hold = (held_here != nullptr && held_here->queue_ == this) ? held_here : nullptr;
  const size_t bytes = mutation->QueuedBytes();
  queued_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(Queued{std::move(mutation), /*waited=*/false, bytes});
    if (state_ != State::kIdle) return;  // the committing thread will take it
    state_ = executor_ == nullptr ? State::kCommitting : State::kScheduled;
    if (hold != nullptr) {
      claimant_ = hold;  // the queue is claimed: committing starts when the hold ends
      return;
    }
  }
  StartCommitting();
}

void CommitQueue::StartCommitting() {
  if (executor_ == nullptr) {
    CommitQueued();
  } else {
    executor_->Schedule([this] { CommitScheduled(); });
  }
}

CommitQueue::Hold::Hold(CommitQueue* queue) : queue_(queue) {
  assert(held_here == nullptr);
  held_here = this;
}

CommitQueue::Hold::~Hold() {
  held_here = nullptr;
  bool claimed;
  {
    absl::MutexLock lock(&queue_->mu_);
    claimed = queue_->claimant_ == this;
    if (claimed) queue_->claimant_ = nullptr;
  }
  if (claimed) queue_->StartCommitting();
}

void CommitQueue::CommitScheduled() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kCommitting) return;  // a Run() caller took over and will drain
    claimant_ = nullptr;
    if (queue_.empty()) {
      state_ = State::kIdle;
      return;
    }
    state_ = State::kCommitting;
  }
  CommitQueued();
}

absl::Status CommitQueue::Run(Mutation& mutation) {
  Mutation* one[] = {&mutation};
  return RunAll(one);
}

absl::Status CommitQueue::RunAll(absl::Span<Mutation* const> mutations) {
  if (mutations.empty()) return absl::OkStatus();
  std::vector<absl::Status> statuses(mutations.size());
  std::vector<absl::Notification> done(mutations.size());
  std::vector<Queued> waited;
  waited.reserve(mutations.size());
  for (size_t i = 0; i < mutations.size(); ++i) {
    waited.push_back(Queued{std::make_unique<WaitedMutation>(mutations[i], &statuses[i], &done[i]),
                            /*waited=*/true});
  }
  if (committing_here == this) {
    // Called from a Complete callback on the committing thread: between groups, so commit now.
    for (size_t next = 0; next < waited.size();) next = CommitGroup(waited, next);
  } else {
    bool commit_here = false;
    {
      absl::MutexLock lock(&mu_);
      for (Queued& q : waited) queue_.push_back(std::move(q));
      // Commit here rather than wait for a scheduled task that may sit behind this very thread
      // in the executor's queue, or for this thread's own Hold to end.
      Hold* const hold = held_here != nullptr && held_here->queue_ == this ? held_here : nullptr;
      if (state_ != State::kCommitting || (hold != nullptr && claimant_ == hold)) {
        state_ = State::kCommitting;
        claimant_ = nullptr;  // whoever claimed the queue, this thread commits it now
        commit_here = true;
      }
    }
    if (commit_here) CommitQueued();
  }
  absl::Status first_error;
  for (size_t i = 0; i < mutations.size(); ++i) {
    done[i].WaitForNotification();
    if (first_error.ok()) first_error = statuses[i];
  }
  return first_error;
}

void CommitQueue::CommitQueued() {
  ScopedCommitting committing(this);
  std::vector<Queued> taken;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) {
        state_ = State::kIdle;
        return;
      }
      taken.swap(queue_);
    }
    for (size_t next = 0; next < taken.size();) next = CommitGroup(taken, next);
    taken.clear();  // keeps its capacity for the next swap
  }
}

size_t CommitQueue::CommitGroup(std::vector<Queued>& mutations, size_t begin) {
  WriteGroup group(engine_);
  std::vector<absl::Status> prepared;
  size_t end = begin;
  while (end < mutations.size() && end - begin < kMaxGroupMutations &&
         group.ApproximateBytes() < kMaxGroupBytes) {
    if (end > begin && mutations[end].mutation->StartsGroup()) break;
    prepared.push_back(mutations[end].mutation->Prepare(group));
    ++end;
  }
  WriteOptions options = options_;
  if (group.sync_required()) options.sync = true;
  absl::Status written =
      group.empty() ? absl::OkStatus() : engine_->Write(group.TakeBatch(), options);
  if (!written.ok()) {
    written = MarkStorageFailure(std::move(written));
    if (write_failed_) write_failed_(written);
  }

  std::vector<Completion> handed_off;
  size_t bytes = 0;
  for (size_t i = begin; i < end; ++i) {
    bytes += mutations[i].bytes;
    absl::Status& status = prepared[i - begin];
    Completion completion{std::move(mutations[i].mutation),
                          status.ok() ? written : std::move(status)};
    if (executor_ == nullptr || mutations[i].waited) {
      completion.mutation->Complete(std::move(completion.status));
    } else {
      handed_off.push_back(std::move(completion));
    }
  }
  queued_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
  if (handed_off.empty()) return end;
  bool schedule = false;
  {
    absl::MutexLock lock(&mu_);
    if (completions_.empty()) {
      completions_.swap(handed_off);
    } else {
      for (Completion& c : handed_off) completions_.push_back(std::move(c));
    }
    schedule = !completing_;
    completing_ = true;
  }
  if (schedule) executor_->Schedule([this] { CompleteQueued(); });
  return end;
}

void CommitQueue::CompleteQueued() {
  std::vector<Completion> taken;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (completions_.empty()) {
        completing_ = false;
        return;
      }
      taken.swap(completions_);
    }
    for (Completion& completion : taken) {
      completion.mutation->Complete(std::move(completion.status));
      completion.mutation.reset();
    }
    taken.clear();
  }
}

}  // namespace kv

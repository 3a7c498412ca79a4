#include "node/commit_queue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace kv {
namespace {

// The queue this thread is committing for, if any: Run() from a Complete callback commits at
// once instead of waiting for the thread that would never get to it.
thread_local const CommitQueue* committing_here = nullptr;

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
  const auto& latest = latest_[Index(column)];
  auto it = latest.find(key);
  if (it == latest.end()) return engine_->Get(column, key);
  const WriteBatch::Op& op = batch_.ops()[it->second];
  if (op.type == WriteBatch::OpType::kDelete) {
    return absl::NotFoundError(absl::StrCat("no key in column ", ColumnName(column)));
  }
  return op.value;
}

void WriteGroup::Put(Column column, absl::string_view key, absl::string_view value) {
  latest_[Index(column)].insert_or_assign(std::string(key), batch_.ops().size());
  batch_.Put(column, key, value);
}

void WriteGroup::Delete(Column column, absl::string_view key) {
  latest_[Index(column)].insert_or_assign(std::string(key), batch_.ops().size());
  batch_.Delete(column, key);
}

void CommitQueue::Submit(std::unique_ptr<Mutation> mutation) {
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(mutation));
    if (committing_) return;  // the committing thread will take it
    committing_ = true;
  }
  CommitQueued();
}

absl::Status CommitQueue::Run(Mutation& mutation) {
  absl::Status status;
  absl::Notification done;
  auto waited = std::make_unique<WaitedMutation>(&mutation, &status, &done);
  if (committing_here == this) {
    // Called from a Complete callback of this queue: between groups, so commit it now.
    std::vector<std::unique_ptr<Mutation>> alone;
    alone.push_back(std::move(waited));
    CommitGroup(alone, 0);
  } else {
    Submit(std::move(waited));
  }
  done.WaitForNotification();
  return status;
}

void CommitQueue::CommitQueued() {
  ScopedCommitting committing(this);
  std::vector<std::unique_ptr<Mutation>> taken;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) {
        committing_ = false;
        return;
      }
      taken.swap(queue_);
    }
    for (size_t next = 0; next < taken.size();) next = CommitGroup(taken, next);
    taken.clear();  // keeps its capacity for the next swap
  }
}

size_t CommitQueue::CommitGroup(std::vector<std::unique_ptr<Mutation>>& mutations, size_t begin) {
  WriteGroup group(engine_);
  std::vector<absl::Status> prepared;
  size_t end = begin;
  while (end < mutations.size() && end - begin < kMaxGroupMutations &&
         group.batch()->ApproximateBytes() < kMaxGroupBytes) {
    prepared.push_back(mutations[end]->Prepare(group));
    ++end;
  }
  const absl::Status written =
      group.batch()->empty() ? absl::OkStatus() : engine_->Write(*group.batch(), options_);
  for (size_t i = begin; i < end; ++i) {
    absl::Status& status = prepared[i - begin];
    mutations[i]->Complete(status.ok() ? written : std::move(status));
    mutations[i].reset();
  }
  return end;
}

}  // namespace kv

#include "node/unowned_record_cleaner.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "node/log.h"
#include "node/merkle_tree.h"
#include "storage/record_codec.h"

namespace kv {

// One pass over the data column for one layout. Its fields are used by one step at a time (the
// steps are chained), so they need no lock.
struct UnownedRecordCleaner::Pass {
  struct Waiting {
    std::string key;
    uint64_t digest = 0;
    absl::Time due;
  };

  std::shared_ptr<const Placement> placement;
  uint64_t version = 0;
  absl::Time started;
  std::string cursor;  // the last key read; empty before the first step
  bool exhausted = false;
  size_t last_read = 0;  // records read by the last step (for the rate limit)
  std::deque<Waiting> waiting;
  // This pass's counts, for its log line.
  uint64_t scanned = 0;
  uint64_t removed = 0;
  uint64_t kept = 0;  // pending outbox entries, changed records or read errors
};

UnownedRecordCleaner::UnownedRecordCleaner(std::string self_id, const PlacementHolder* placement,
                                           LocalStore* store, Engine* engine, Scheduler* scheduler,
                                           Executor* executor, const Clock* clock, Options options,
                                           PendingCheck may_have_entries)
    : self_id_(std::move(self_id)),
      placement_(placement),
      store_(store),
      engine_(engine),
      scheduler_(scheduler),
      executor_(executor),
      clock_(clock),
      options_(options),
      may_have_entries_(std::move(may_have_entries)) {}

UnownedRecordCleaner::~UnownedRecordCleaner() { Shutdown(); }

void UnownedRecordCleaner::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    pass_.reset();
    stats_.running = false;
  }
  guard_.Close();
}

UnownedRecordCleanerStats UnownedRecordCleaner::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void UnownedRecordCleaner::OnPlacement(std::shared_ptr<const Placement> placement) {
  const ClusterLayout& layout = placement->layout();
  auto pass = std::make_shared<Pass>();
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || layout.version <= newest_version_) return;
    newest_version_ = layout.version;
    pass_.reset();  // a newer layout ends the pass of an older one
    stats_.running = false;
    if (layout.in_transition() || !layout.IsOwner(self_id_)) return;
    stats_.layout_version = layout.version;
    stats_.running = true;
    pass->placement = placement;
    pass->version = layout.version;
    pass->started = clock_->Now();
    pass_ = pass;
  }
  LogInfo("removing, in the background, the records of keys this node no longer owns",
          {{"layout_version", absl::StrCat(layout.version)},
           {"keys_per_second", absl::StrCat(options_.keys_per_second)}});
  executor_->Schedule(guard_.Wrap([this, pass] { Step(pass); }));
}

bool UnownedRecordCleaner::Current(const PassPtr& pass) {
  absl::MutexLock lock(&mu_);
  return !shutdown_ && pass_ == pass;
}

void UnownedRecordCleaner::Step(PassPtr pass) {
  if (!Current(pass)) return;
  const bool can_scan = !pass->exhausted && pass->waiting.size() < options_.max_waiting;
  if (can_scan && !Scan(*pass)) {
    // The scan starts again after the retry delay; what waits now is removed (or kept) first.
    pass->cursor.clear();
    ++pass->kept;
    RemoveDue(*pass);
    scheduler_->RunAfter(options_.retry, guard_.Wrap([this, pass] { Step(pass); }));
    return;
  }
  RemoveDue(*pass);
  if (!Current(pass)) return;
  if (pass->exhausted && pass->waiting.empty()) {
    EndPass(pass);
    return;
  }
  absl::Duration delay = absl::ZeroDuration();
  if (!pass->exhausted && pass->waiting.size() < options_.max_waiting) {
    if (options_.keys_per_second > 0) {
      delay = absl::Seconds(1) * static_cast<double>(pass->last_read) /
              static_cast<double>(options_.keys_per_second);
    }
  } else {
    delay = std::max(absl::ZeroDuration(), pass->waiting.front().due - clock_->Now());
  }
  scheduler_->RunAfter(delay, guard_.Wrap([this, pass] { Step(pass); }));
}

bool UnownedRecordCleaner::Scan(Pass& pass) {
  const HashRing& ring = pass.placement->current();
  const absl::Time due = clock_->Now() + options_.confirm_delay;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kData);
  if (pass.cursor.empty()) {
    it->SeekToFirst();
  } else {
    it->Seek(pass.cursor);
    if (it->Valid() && it->key() == pass.cursor) it->Next();
  }
  size_t read = 0;
  while (it->Valid() && read < std::max<size_t>(options_.keys_per_step, 1) &&
         pass.waiting.size() < options_.max_waiting) {
    const absl::string_view key = it->key();
    if (!ring.IsReplica(key, options_.replication_factor, self_id_)) {
      pass.waiting.push_back(
          Pass::Waiting{std::string(key), MerkleTree::RecordDigest(it->value()), due});
    }
    pass.cursor = std::string(key);
    ++read;
    it->Next();
  }
  pass.last_read = read;
  pass.scanned += read;
  const absl::Status status = it->status();
  {
    absl::MutexLock lock(&mu_);
    stats_.scanned += read;
    if (!status.ok())
      stats_.last_error = absl::StrCat("scanning the data column: ", status.message());
  }
  if (!status.ok()) {
    LogWarn("removing records this node no longer owns: the scan failed; starting it again",
            {{"error", std::string(status.message())}});
    return false;
  }
  pass.exhausted = !it->Valid();
  return true;
}

void UnownedRecordCleaner::RemoveDue(Pass& pass) {
  const absl::Time now = clock_->Now();
  while (!pass.waiting.empty() && pass.waiting.front().due <= now) {
    Pass::Waiting next = std::move(pass.waiting.front());
    pass.waiting.pop_front();
    Remove(pass, next.key, next.digest);
  }
}

void UnownedRecordCleaner::Remove(Pass& pass, const std::string& key, uint64_t digest) {
  enum class Outcome { kRemoved, kGone, kPending, kChanged, kNewerLayout, kError, kUnreadable };
  Outcome outcome = Outcome::kChanged;
  absl::Status error;
  absl::StatusOr<std::string> encoded = engine_->Get(Column::kData, key);
  if (absl::IsNotFound(encoded.status())) {
    outcome = Outcome::kGone;
  } else if (!encoded.ok()) {
    outcome = Outcome::kError;
    error = encoded.status();
  } else if (MerkleTree::RecordDigest(*encoded) == digest) {
    absl::StatusOr<SiblingSet> record = DecodeSiblingSet(*encoded);
    if (!record.ok()) {
      // Corrupt: left where it is, and not counted as kept (which would hold up the report, and
      // with it tombstone purging on every node, for good). It cannot come back as a value: the
      // outbox and anti-entropy give up on a record they cannot decode, and a handoff waits.
      outcome = Outcome::kUnreadable;
      error = record.status();
    } else {
      bool newer_layout = false;
      bool pending = false;
      // Inside the purge's commit: no write of the key (and so no new outbox entry for it) and no
      // merge can interleave with these checks.
      absl::Status purged =
          store_->PurgeIfUnchanged(key, *record, [&](absl::string_view k) -> absl::Status {
            if (placement_->Get()->layout().version != pass.version) {
              newer_layout = true;
              return absl::AbortedError("a newer cluster layout arrived");
            }
            if (may_have_entries_ && may_have_entries_(k)) {
              pending = true;
              return absl::FailedPreconditionError("outbox entries for the key may be unsent");
            }
            return absl::OkStatus();
          });
      if (purged.ok()) {
        outcome = Outcome::kRemoved;
      } else if (newer_layout) {
        outcome = Outcome::kNewerLayout;
      } else if (pending) {
        outcome = Outcome::kPending;
      } else if (!absl::IsFailedPrecondition(purged)) {
        outcome = Outcome::kError;
        error = purged;
      }
    }
  }
  if (outcome == Outcome::kRemoved) ++pass.removed;
  if (outcome == Outcome::kPending || outcome == Outcome::kChanged || outcome == Outcome::kError) {
    ++pass.kept;
  }
  absl::MutexLock lock(&mu_);
  switch (outcome) {
    case Outcome::kRemoved:
      ++stats_.removed;
      break;
    case Outcome::kPending:
      ++stats_.kept_pending;
      break;
    case Outcome::kChanged:
      ++stats_.kept_changed;
      break;
    case Outcome::kError:
      ++stats_.kept_changed;
      stats_.last_error = absl::StrCat("removing a record: ", error.ToString());
      break;
    case Outcome::kUnreadable:
      ++stats_.unreadable;
      stats_.last_error = absl::StrCat("left a record it cannot read: ", error.ToString());
      break;
    case Outcome::kGone:
      break;
    case Outcome::kNewerLayout:
      if (pass_ != nullptr && pass_->version == pass.version) {
        pass_.reset();  // OnPlacement of the newer layout follows
        stats_.running = false;
      }
      break;
  }
}

void UnownedRecordCleaner::SetCleanListener(std::function<void(uint64_t)> listener) {
  clean_listener_ = std::move(listener);
}

bool StraysCleared(const ClusterLayout& layout, const std::vector<MemberView>& members) {
  if (layout.in_transition()) return false;
  if (layout.version <= 1) return true;
  for (const Member& owner : layout.members) {
    auto it = std::find_if(members.begin(), members.end(), [&](const MemberView& view) {
      return view.entry.member.id == owner.id;
    });
    if (it == members.end() || it->entry.clean_layout_version < layout.version) return false;
  }
  return true;
}

void UnownedRecordCleaner::EndPass(PassPtr pass) {
  const bool again = pass->kept > 0;
  LogInfo(again ? "pass removing records this node no longer owns ended; some were kept (outbox "
                  "entries still pending, or changed) and are tried again later"
                : "pass removing records this node no longer owns ended",
          {{"layout_version", absl::StrCat(pass->version)},
           {"scanned", absl::StrCat(pass->scanned)},
           {"removed", absl::StrCat(pass->removed)},
           {"kept", absl::StrCat(pass->kept)},
           {"took", absl::FormatDuration(clock_->Now() - pass->started)}});
  auto next = std::make_shared<Pass>();
  bool report_clean = false;
  absl::Cleanup tell = [&] {
    if (report_clean && clean_listener_) clean_listener_(pass->version);
  };
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || pass_ != pass) return;
    report_clean = !again && newest_version_ == pass->version;
    ++stats_.passes;
    stats_.running = again || options_.interval > absl::ZeroDuration();
    if (!again && options_.interval <= absl::ZeroDuration()) {
      pass_.reset();
      return;
    }
    next->placement = pass->placement;
    next->version = pass->version;
    pass_ = next;
  }
  const absl::Duration wait = again ? options_.retry : options_.interval;
  next->started = clock_->Now() + wait;
  scheduler_->RunAfter(wait, guard_.Wrap([this, next] { Step(next); }));
}

}  // namespace kv

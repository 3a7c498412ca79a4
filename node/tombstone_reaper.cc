#include "node/tombstone_reaper.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/log.h"
#include "storage/record_codec.h"

namespace kv {

struct TombstoneReaper::Sweep {
  std::vector<Candidate> candidates;
  size_t next = 0;  // the candidate being processed is candidates[next - 1]
  std::function<void()> done;
  uint64_t generation = 0;      // TombstoneReaper::generation_ when the sweep started
  uint64_t layout_version = 0;  // the layout whose ring the sweep reads and purges on
  const Candidate& current() const { return candidates[next - 1]; }
};

namespace {

// Collects `n` results of parallel calls and hands them over, in call order, after the last one.
template <typename Result>
class Gather {
 public:
  using Done = std::function<void(std::vector<Result>)>;
  static std::shared_ptr<Gather> Make(size_t n, Done done) {
    auto gather = std::shared_ptr<Gather>(new Gather(n, std::move(done)));
    if (n == 0) gather->done_(std::move(gather->results_));
    return gather;
  }
  void Set(size_t i, Result result) {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      results_[i] = std::move(result);
      last = --outstanding_ == 0;
    }
    if (last) done_(std::move(results_));
  }

 private:
  Gather(size_t n, Done done)
      : done_(std::move(done)),
        results_(n, Result(absl::UnknownError("no answer"))),
        outstanding_(n) {}
  Done done_;
  absl::Mutex mu_;
  std::vector<Result> results_;
  size_t outstanding_;
};

}  // namespace

TombstoneReaper::TombstoneReaper(MerkleIndex* index, LocalStore* store, Engine* engine,
                                 PeerTransport* transport, Scheduler* scheduler, Executor* executor,
                                 const Clock* wall_clock, const Clock* steady_clock,
                                 Options options)
    : index_(index),
      store_(store),
      engine_(engine),
      transport_(transport),
      scheduler_(scheduler),
      executor_(executor),
      wall_clock_(wall_clock),
      steady_clock_(steady_clock),
      options_(options) {}

TombstoneReaper::~TombstoneReaper() { Shutdown(); }

void TombstoneReaper::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || shutdown_) return;
    started_ = true;
  }
  scheduler_->RunAfter(options_.sweep_interval, guard_.Wrap([this] { Tick(); }));
}

void TombstoneReaper::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
  }
  guard_.Close();
}

void TombstoneReaper::OnLayout(uint64_t version, bool in_transition) {
  absl::MutexLock lock(&mu_);
  if (version <= layout_version_) return;
  layout_version_ = version;
  layout_in_transition_ = in_transition;
  paused_ = true;
  ++generation_;
  confirmed_.clear();
}

bool TombstoneReaper::ResumeOnRing(uint64_t version) {
  absl::MutexLock lock(&mu_);
  if (version == layout_version_ && !layout_in_transition_) paused_ = false;
  return !paused_;
}

void TombstoneReaper::Tick() {
  SweepNow(guard_.Wrap(
      [this] { scheduler_->RunAfter(options_.sweep_interval, guard_.Wrap([this] { Tick(); })); }));
}

void TombstoneReaper::SetCleanupCheck(std::function<bool(uint64_t)> cleared) {
  cleanup_check_ = std::move(cleared);
}

void TombstoneReaper::SweepNow(std::function<void()> done) {
  auto sweep = std::make_shared<Sweep>();
  uint64_t version = 0;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || sweeping_ || paused_) {
      if (done) done();
      return;
    }
    version = layout_version_;
  }
  const bool cleared = !cleanup_check_ || cleanup_check_(version);
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || sweeping_ || paused_ || layout_version_ != version || !cleared) {
      if (!cleared && !shutdown_ && !stats_.waiting_for_cleanup) {
        stats_.waiting_for_cleanup = true;
        LogInfo(
            "tombstone purging waits until every owner has removed its stray copies of keys "
            "it no longer owns (its clean-up pass on this ring kept nothing)",
            {{"layout_version", absl::StrCat(version)}});
      }
      if (done) done();
      return;
    }
    if (stats_.waiting_for_cleanup) {
      stats_.waiting_for_cleanup = false;
      LogInfo("tombstone purging goes on: every owner has cleaned up its stray copies",
              {{"layout_version", absl::StrCat(version)}});
    }
    sweeping_ = true;
    sweep->generation = generation_;
    sweep->layout_version = layout_version_;
  }
  sweep->done = std::move(done);
  executor_->Schedule(guard_.Wrap([this, sweep] {
    sweep->candidates = Scan();
    ProcessNext(sweep);
  }));
}

std::vector<TombstoneReaper::Candidate> TombstoneReaper::Scan() {
  std::string cursor;
  {
    absl::MutexLock lock(&mu_);
    cursor = cursor_;
  }
  const int64_t horizon = absl::ToUnixMicros(wall_clock_->Now() - options_.min_age);
  std::vector<Candidate> candidates;
  std::unique_ptr<Iterator> it = engine_->NewIterator(Column::kData);
  size_t scanned = 0;
  for (it->Seek(cursor); it->Valid() && scanned < options_.keys_per_sweep; it->Next()) {
    ++scanned;
    absl::string_view key = it->key();
    if (!index_->IsPrimary(key)) continue;
    absl::StatusOr<SiblingSet> record = DecodeSiblingSet(it->value());
    if (!record.ok()) {
      CountError(record.status());
      continue;
    }
    if (!record->AllTombstones()) continue;
    int64_t newest = 0;
    for (const Sibling& s : record->siblings()) newest = std::max(newest, s.timestamp_micros);
    if (newest >= horizon) continue;
    candidates.push_back(Candidate{std::string(key), *std::move(record), std::string(it->value())});
  }
  std::string next = it->Valid() ? std::string(it->key()) : std::string();
  if (!it->status().ok()) CountError(it->status());
  absl::MutexLock lock(&mu_);
  // A first confirmation of a key this scan passed without choosing it (written again, purged,
  // no longer this node's to purge) can never be followed by a second: forget it, or the pending
  // confirmations would fill up with such keys and no tombstone would be confirmed again.
  if (it->status().ok()) {
    auto end = next.empty() ? confirmed_.end() : confirmed_.lower_bound(next);
    size_t chosen = 0;
    for (auto pending = confirmed_.lower_bound(cursor); pending != end;) {
      while (chosen < candidates.size() && candidates[chosen].key < pending->first) ++chosen;
      if (chosen < candidates.size() && candidates[chosen].key == pending->first) {
        ++pending;
      } else {
        pending = confirmed_.erase(pending);
      }
    }
  }
  cursor_ = std::move(next);
  stats_.candidates += candidates.size();
  return candidates;
}

void TombstoneReaper::ProcessNext(std::shared_ptr<Sweep> sweep) {
  bool finished = false;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    // Done, or a newer layout paused purging: the rest was chosen on another ring.
    finished = sweep->next == sweep->candidates.size() || sweep->generation != generation_;
    if (finished) {
      sweeping_ = false;
      ++stats_.sweeps;
    }
  }
  if (finished) {
    if (sweep->done) sweep->done();
    return;
  }
  ++sweep->next;
  const Candidate& c = sweep->current();
  std::vector<Member> others;
  for (Member& m : index_->Replicas(c.key)) {
    if (m.id != index_->self_id()) others.push_back(std::move(m));
  }
  auto gather = Gather<absl::StatusOr<std::string>>::Make(
      others.size(),
      guard_.Wrap([this, sweep, others](std::vector<absl::StatusOr<std::string>> records) {
        OnReplicasRead(sweep, others, std::move(records));
      }));
  for (size_t i = 0; i < others.size(); ++i) {
    transport_->ReadRecord(others[i], c.key,
                           guard_.Wrap([gather, i](absl::StatusOr<std::string> record) {
                             gather->Set(i, std::move(record));
                           }));
  }
}

void TombstoneReaper::OnReplicasRead(std::shared_ptr<Sweep> sweep, std::vector<Member> others,
                                     std::vector<absl::StatusOr<std::string>> records) {
  const Candidate& c = sweep->current();
  const bool all_equal = std::all_of(records.begin(), records.end(),
                                     [&](const auto& r) { return r.ok() && *r == c.encoded; });
  bool purge = false;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = steady_clock_->Now();
    auto it = confirmed_.find(c.key);
    if (sweep->generation != generation_) {
      // Read on the ring of an older layout: confirms nothing (ProcessNext ends the sweep).
    } else if (!all_equal) {
      if (it != confirmed_.end()) confirmed_.erase(it);
    } else if (it != confirmed_.end() && it->second.first == c.encoded) {
      if (now - it->second.second >= options_.confirm_delay) {
        ++stats_.confirmations;
        confirmed_.erase(it);
        purge = true;
      }
    } else {
      ++stats_.confirmations;
      if (it != confirmed_.end()) {
        it->second = {c.encoded, now};
      } else if (confirmed_.size() < options_.max_pending_confirmations) {
        confirmed_.emplace(c.key, std::make_pair(c.encoded, now));
      }
    }
  }
  if (!purge) return ProcessNext(sweep);
  auto gather = Gather<absl::Status>::Make(
      others.size(), guard_.Wrap([this, sweep](std::vector<absl::Status> results) {
        OnPeersPurged(sweep, std::move(results));
      }));
  for (size_t i = 0; i < others.size(); ++i) {
    transport_->PurgeRecord(
        others[i], c.key, c.encoded, sweep->layout_version,
        guard_.Wrap([gather, i](absl::Status status) { gather->Set(i, std::move(status)); }));
  }
}

void TombstoneReaper::OnPeersPurged(std::shared_ptr<Sweep> sweep,
                                    std::vector<absl::Status> results) {
  const Candidate& c = sweep->current();
  const bool all_gone = std::all_of(results.begin(), results.end(), [](const absl::Status& s) {
    return s.ok() || absl::IsNotFound(s);
  });
  bool current = false;
  {
    absl::MutexLock lock(&mu_);
    current = sweep->generation == generation_;
  }
  // After a newer layout this copy stays: the peers that purged get the tombstone back from it
  // by anti-entropy if they still own the key, and it absorbs a stale copy a new owner may hold.
  absl::Status own = absl::FailedPreconditionError(current ? "a replica did not purge"
                                                           : "a newer layout paused purging");
  if (all_gone && current) {
    // Checked again inside the purge's commit, as the replicas do (ReplicaService::PurgeRecord).
    own = store_->PurgeIfUnchanged(c.key, c.record, [this, sweep](absl::string_view) {
      absl::MutexLock lock(&mu_);
      return sweep->generation == generation_
                 ? absl::OkStatus()
                 : absl::FailedPreconditionError("a newer layout paused purging");
    });
  }
  {
    absl::MutexLock lock(&mu_);
    if (own.ok() || absl::IsNotFound(own)) {
      ++stats_.purged;
    } else {
      ++stats_.not_purged;
    }
  }
  ProcessNext(sweep);
}

void TombstoneReaper::CountError(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  stats_.last_error = status.ToString();
}

TombstoneReaperStats TombstoneReaper::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace kv

#include "node/handoff.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/log.h"

namespace kv {

struct HandoffSender::Job {
  std::shared_ptr<const Placement> placement;
  uint64_t version = 0;
  std::unique_ptr<Iterator> it;  // used by one step at a time
  absl::Time started;
  // The batch being sent: gainer id -> records; kept until every gainer acknowledged it.
  std::map<std::string, std::vector<EncodedRecord>> pending;
  uint64_t pending_keys = 0;
  uint64_t pending_bytes = 0;
  bool exhausted = false;
  uint64_t keys = 0;
  uint64_t bytes = 0;
  // Send bookkeeping for the batch in flight.
  std::atomic<int> outstanding{0};
  std::atomic<bool> failed{false};
};

HandoffSender::HandoffSender(std::string self_id, Engine* engine, PeerTransport* transport,
                             Scheduler* scheduler, Executor* executor, const Clock* clock,
                             Options options, ProgressCallback progress)
    : self_id_(std::move(self_id)),
      engine_(engine),
      transport_(transport),
      scheduler_(scheduler),
      executor_(executor),
      clock_(clock),
      options_(options),
      progress_(std::move(progress)) {}

HandoffSender::~HandoffSender() { Shutdown(); }

void HandoffSender::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    job_.reset();
  }
  guard_.Close();
}

void HandoffSender::OnPlacement(std::shared_ptr<const Placement> placement) {
  const ClusterLayout& layout = placement->layout();
  JobPtr job;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ || layout.version <= started_version_) return;
    job_.reset();  // a newer layout ends the old job
    if (!layout.in_transition() || !layout.IsOwner(self_id_)) return;
    started_version_ = layout.version;
    job = std::make_shared<Job>();
    job->placement = placement;
    job->version = layout.version;
    job->started = clock_->Now();
    job_ = job;
  }
  LogInfo("handoff starting: streaming the keys new owners gain",
          {{"layout_version", absl::StrCat(layout.version)}, {"change", layout.change}});
  executor_->Schedule(guard_.Wrap([this, job] {
    job->it = engine_->NewIterator(Column::kData);
    job->it->SeekToFirst();
    Step(job);
  }));
}

bool HandoffSender::Current(const JobPtr& job) {
  absl::MutexLock lock(&mu_);
  return !shutdown_ && job_ == job;
}

void HandoffSender::Step(JobPtr job) {
  if (!Current(job)) return;
  const Placement& placement = *job->placement;
  const size_t n = options_.replication_factor;
  size_t size = 0;
  Iterator* it = job->it.get();
  while (it->Valid() && size < options_.batch_bytes) {
    const absl::string_view key = it->key();
    std::vector<const Member*> was = placement.current().PreferenceList(key, n);
    for (const Member* m : placement.next()->PreferenceList(key, n)) {
      if (std::any_of(was.begin(), was.end(), [&](const Member* w) { return w->id == m->id; })) {
        continue;
      }
      job->pending[m->id].push_back(EncodedRecord{std::string(key), std::string(it->value())});
      ++job->pending_keys;
      job->pending_bytes += key.size() + it->value().size();
      size += key.size() + it->value().size();
    }
    it->Next();
  }
  if (absl::Status s = it->status(); !s.ok()) {
    LogWarn("handoff scan failed; starting the scan again", {{"error", std::string(s.message())}});
    job->pending.clear();
    job->pending_keys = job->pending_bytes = 0;
    scheduler_->RunAfter(options_.retry, guard_.Wrap([this, job] {
      job->it = engine_->NewIterator(Column::kData);
      job->it->SeekToFirst();
      Step(job);
    }));
    return;
  }
  job->exhausted = !it->Valid();
  Send(job);
}

void HandoffSender::Send(JobPtr job) {
  if (!Current(job)) return;
  if (job->pending.empty()) {
    OnSent(job, true);
    return;
  }
  // Copied first: the last acknowledgement may run OnSent (which clears `pending`) before this
  // loop ends.
  std::vector<std::pair<const Member*, std::vector<EncodedRecord>>> sends;
  for (const auto& [gainer, records] : job->pending) {
    sends.emplace_back(job->placement->next()->Find(gainer), records);
  }
  job->failed = false;
  job->outstanding = static_cast<int>(sends.size());
  for (auto& [member, records] : sends) {
    transport_->MergeRecords(
        *member, std::move(records), guard_.Wrap([this, job](absl::Status status) {
          if (!status.ok()) job->failed = true;
          if (--job->outstanding == 0) {
            executor_->Schedule(guard_.Wrap([this, job] { OnSent(job, !job->failed); }));
          }
        }));
  }
}

void HandoffSender::OnSent(JobPtr job, bool ok) {
  if (!Current(job)) return;
  if (!ok) {
    scheduler_->RunAfter(options_.retry, guard_.Wrap([this, job] { Send(job); }));
    return;
  }
  job->keys += job->pending_keys;
  job->bytes += job->pending_bytes;
  job->pending.clear();
  job->pending_keys = job->pending_bytes = 0;
  progress_(job->version, job->keys, job->bytes, job->exhausted);
  if (job->exhausted) {
    const absl::Duration took = clock_->Now() - job->started;
    LogInfo("handoff done",
            {{"layout_version", absl::StrCat(job->version)},
             {"keys", absl::StrCat(job->keys)},
             {"bytes", absl::StrCat(job->bytes)},
             {"took", absl::FormatDuration(took)},
             {"mb_per_s", absl::StrCat(static_cast<double>(job->bytes) / 1e6 /
                                       std::max(1e-6, absl::ToDoubleSeconds(took)))}});
    return;
  }
  // Throughput limit: the next batch waits until the average is back under the budget.
  absl::Duration wait = absl::ZeroDuration();
  if (options_.bytes_per_second > 0) {
    const absl::Duration due = absl::Seconds(static_cast<double>(job->bytes) /
                                             static_cast<double>(options_.bytes_per_second));
    wait = std::max(absl::ZeroDuration(), due - (clock_->Now() - job->started));
  }
  if (wait == absl::ZeroDuration()) {
    executor_->Schedule(guard_.Wrap([this, job] { Step(job); }));
  } else {
    scheduler_->RunAfter(wait, guard_.Wrap([this, job] { Step(job); }));
  }
}

}  // namespace kv

#include "node/handoff.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node/handoff_plan.h"
#include "node/log.h"
#include "node/merkle_index.h"

namespace kv {

struct HandoffSender::Job {
  std::shared_ptr<const Placement> placement;
  absl::Time started;
  // Counters of acknowledged batches, the phase, done: what Publish reports.
  HandoffProgress progress;
  // Where the current phase's scan goes on: each step reads from a fresh iterator (so that none
  // pins replaced files for a whole phase), from the first key not read yet.
  std::string cursor;
  bool exhausted = false;  // the current phase's scan reached the end
  // Full records being sent, by gainer id; kept until every gainer acknowledged them.
  std::map<std::string, std::vector<EncodedRecord>> pending;
  uint64_t pending_keys = 0;
  uint64_t pending_bytes = 0;
  // Phase 2: the (key, digest) pairs being compared, by gainer id, and the keys the gainers
  // asked for that are not sent yet.
  std::map<std::string, std::vector<KeyDigest>> digests;
  uint64_t digest_count = 0;
  uint64_t digest_bytes = 0;    // keys + digests of `digests`: a batch stays under batch_bytes
  uint64_t compared_bytes = 0;  // keys + digests of the batches compared so far (rate limit)
  std::map<std::string, std::deque<std::string>> wanted;
  // Bookkeeping of the calls in flight.
  std::atomic<int> outstanding{0};
  std::atomic<bool> failed{false};
  absl::Mutex answers_mu;
  std::map<std::string, std::vector<std::string>> answers ABSL_GUARDED_BY(answers_mu);
  // Gainers that acknowledged the records of `pending`: a retry after a failure skips them.
  std::set<std::string> acked ABSL_GUARDED_BY(answers_mu);
  // The failures of the current batch's calls, by gainer id (Failed reports the first: the same
  // text from retry to retry).
  std::map<std::string, std::string> call_errors ABSL_GUARDED_BY(answers_mu);
  // The last error logged (Failed logs an error only when its text changes).
  std::string logged_error;
  // The next retry's backoff ceiling (zero: Options::retry); under the sender's rng_mu_.
  absl::Duration retry_ceiling;
};

HandoffSender::HandoffSender(std::string self_id, Engine* engine, PeerTransport* transport,
                             Scheduler* scheduler, Executor* executor, const Clock* clock,
                             absl::BitGenRef rng, Options options, ProgressCallback progress,
                             StreamedCallback all_streamed)
    : self_id_(std::move(self_id)),
      engine_(engine),
      transport_(transport),
      scheduler_(scheduler),
      executor_(executor),
      clock_(clock),
      options_(options),
      progress_(std::move(progress)),
      all_streamed_(std::move(all_streamed)),
      rng_(rng) {}

void HandoffSender::RetryLater(const JobPtr& job, std::function<void()> step) {
  absl::Duration delay;
  {
    absl::MutexLock lock(&rng_mu_);
    const absl::Duration ceiling =
        job->retry_ceiling > absl::ZeroDuration() ? job->retry_ceiling : options_.retry;
    job->retry_ceiling = std::min(ceiling * 2, std::max(options_.max_retry, options_.retry));
    const int64_t ceiling_ns = std::max<int64_t>(absl::ToInt64Nanoseconds(ceiling), 0);
    delay =
        absl::Nanoseconds(absl::Uniform<int64_t>(absl::IntervalClosedClosed, rng_, 0, ceiling_ns));
  }
  scheduler_->RunAfter(delay, guard_.Wrap(std::move(step)));
}

void HandoffSender::ResetBackoff(Job& job) {
  absl::MutexLock lock(&rng_mu_);
  job.retry_ceiling = absl::ZeroDuration();
}

void HandoffSender::Failed(const JobPtr& job, std::string error, std::function<void()> step) {
  // Printable ASCII (keys and peers' messages may hold any bytes; gossip and operation messages
  // are UTF-8 strings), cut to what gossip carries.
  error = PrintableAscii(error);
  if (error.size() > kMaxHandoffErrorBytes) error.resize(kMaxHandoffErrorBytes);
  if (error != job->logged_error) {
    LogWarn("handoff call failed; retrying with backoff until it succeeds",
            {{"layout_version", absl::StrCat(job->progress.layout_version)}, {"error", error}});
    job->logged_error = error;
  }
  job->progress.last_error = std::move(error);
  Publish(*job);
  RetryLater(job, std::move(step));
}

std::string HandoffSender::FirstCallError(Job& job) {
  absl::MutexLock lock(&job.answers_mu);
  return job.call_errors.empty() ? std::string() : job.call_errors.begin()->second;
}

void HandoffSender::Succeeded(Job& job) {
  ResetBackoff(job);
  job.logged_error.clear();
  if (job.progress.last_error.empty()) return;
  job.progress.last_error.clear();
  Publish(job);
}

void HandoffSender::RefreshPending(Job& job) {
  absl::MutexLock lock(&job.answers_mu);
  for (auto& [gainer, records] : job.pending) {
    if (job.acked.count(gainer) > 0) continue;
    for (auto r = records.begin(); r != records.end();) {
      absl::StatusOr<std::string> stored = engine_->Get(Column::kData, r->key);
      if (absl::IsNotFound(stored.status())) {
        // Only a tombstone purge removes a record during a transition: what was read before
        // (perhaps a value deleted since) must not reach the new owner.
        job.pending_bytes -= r->key.size() + r->record.size();
        --job.pending_keys;
        r = records.erase(r);
        continue;
      }
      // A larger record (merged with more since) keeps the copy read before, so that the batch
      // stays within what a message carries; phase 2 sends the newer one.
      if (stored.ok() && stored->size() <= r->record.size()) {
        job.pending_bytes = job.pending_bytes - r->record.size() + stored->size();
        r->record = *std::move(stored);
      }
      ++r;
    }
    if (records.empty()) job.acked.insert(gainer);  // nothing left for it
  }
}

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
    if (shutdown_ || layout.version <= started_version_ || layout.version <= latest_version_) {
      return;
    }
    latest_version_ = layout.version;
    job_.reset();  // a newer layout ends the old job
  }
  {
    // The ended job no longer retries: the error it published must not stay in this node's
    // gossip entry. No publication of the ended job can follow (Publish checks under
    // publish_mu_ that its job is still current).
    absl::MutexLock serial(&publish_mu_);
    if (!published_.last_error.empty() && published_.layout_version < layout.version) {
      published_.last_error.clear();
      if (progress_) progress_(published_);
    }
  }
  {
    absl::MutexLock lock(&mu_);
    // A newer layout may have come meanwhile: it decides.
    if (shutdown_ || layout.version != latest_version_) return;
    if (!layout.in_transition() || !layout.IsOwner(self_id_)) return;
    started_version_ = layout.version;
    job = std::make_shared<Job>();
    job->placement = placement;
    job->started = clock_->Now();
    job->progress.layout_version = layout.version;
    job->progress.phase = HandoffPhase::kStreaming;
    job_ = job;
  }
  LogInfo("handoff starting: phase 1 streams the gained keys this node is the designated source of",
          {{"layout_version", absl::StrCat(layout.version)}, {"change", layout.change}});
  Publish(*job);
  executor_->Schedule(guard_.Wrap([this, job] { StartScan(job); }));
}

bool HandoffSender::Current(const JobPtr& job) {
  absl::MutexLock lock(&mu_);
  return !shutdown_ && job_ == job;
}

void HandoffSender::Publish(const Job& job) {
  absl::MutexLock serial(&publish_mu_);
  {
    // A job a newer layout ended may still be finishing a step: its progress is no longer this
    // node's to publish (OnPlacement had the last word on it).
    absl::MutexLock lock(&mu_);
    if (job_.get() != &job) return;
  }
  if (progress_) progress_(job.progress);
  published_ = job.progress;
}

void HandoffSender::StartScan(JobPtr job) {
  if (!Current(job)) return;
  job->cursor.clear();
  job->exhausted = false;
  Scan(job);
}

void HandoffSender::Scan(JobPtr job) {
  if (!Current(job)) return;
  const bool streaming = job->progress.phase == HandoffPhase::kStreaming;
  const size_t n = options_.replication_factor;
  size_t size = 0;
  // Phase 2 reads only keys and digests: the merkle column has both (MerkleIndex), in small
  // values, committed with every record change.
  std::unique_ptr<Iterator> iterator =
      engine_->NewIterator(streaming ? Column::kData : Column::kMerkle);
  Iterator* it = iterator.get();
  it->Seek(job->cursor);
  // At most keys_per_step keys per step, also when few of them go anywhere: a step holds an
  // executor thread, and a newer layout or Shutdown waits for it.
  size_t read = 0;
  while (it->Valid() && read < std::max<size_t>(options_.keys_per_step, 1) &&
         (streaming ? size < options_.batch_bytes
                    : job->digest_count < options_.digests_per_batch &&
                          job->digest_bytes < options_.batch_bytes)) {
    ++read;
    absl::string_view key = it->key();
    uint64_t digest = 0;
    // A malformed index entry keeps digest 0: the gainer then asks for the record (over-sending
    // is harmless).
    if (!streaming && !MerkleIndex::DecodeEntry(it->key(), it->value(), &key, &digest)) {
      LogWarn("malformed Merkle index entry; its record will be sent whole",
              {{"index_key_bytes", absl::StrCat(it->key().size())}});
      if (it->key().size() < 3) {
        it->Next();
        continue;
      }
      key = it->key().substr(2);
    }
    const KeyHandoff plan = PlanKeyHandoff(*job->placement, key, n);
    const bool designated = plan.source != nullptr && plan.source->id == self_id_;
    const std::vector<const Member*> targets =
        streaming ? (designated ? plan.gainers : std::vector<const Member*>())
                  : plan.CompareWith(self_id_);
    for (const Member* gainer : targets) {
      if (streaming) {
        job->pending[gainer->id].push_back(
            EncodedRecord{std::string(key), std::string(it->value())});
        ++job->pending_keys;
        job->pending_bytes += key.size() + it->value().size();
        size += key.size() + it->value().size();
      } else {
        job->digests[gainer->id].push_back(KeyDigest{std::string(key), digest});
        ++job->digest_count;
        job->digest_bytes += key.size() + sizeof(uint64_t);
      }
    }
    it->Next();
  }
  if (absl::Status s = it->status(); !s.ok()) {
    job->pending.clear();
    job->pending_keys = job->pending_bytes = 0;
    job->digests.clear();
    job->digest_count = 0;
    job->digest_bytes = 0;
    Failed(job,
           absl::StrCat("scanning this node's ", streaming ? "records" : "Merkle index", ": ",
                        s.ToString()),
           [this, job] { StartScan(job); });
    return;
  }
  job->exhausted = !it->Valid();
  if (!job->exhausted) job->cursor = std::string(it->key());
  if (streaming) {
    SendRecords(job);
  } else {
    Compare(job);
  }
}

void HandoffSender::SendRecords(JobPtr job) {
  if (!Current(job)) return;
  if (job->pending.empty()) {
    OnRecordsSent(job, true);
    return;
  }
  // Copied first: the last acknowledgement may run OnRecordsSent (which clears `pending`) before
  // this loop ends, and a failed batch is sent again from `pending`.
  std::vector<std::pair<const Member*, std::vector<EncodedRecord>>> sends;
  {
    absl::MutexLock lock(&job->answers_mu);
    for (const auto& [gainer, records] : job->pending) {
      if (job->acked.count(gainer) == 0) {
        sends.emplace_back(job->placement->next()->Find(gainer), records);
      }
    }
  }
  if (sends.empty()) {  // what a retry had left to send is gone (RefreshPending)
    OnRecordsSent(job, true);
    return;
  }
  job->failed = false;
  {
    absl::MutexLock lock(&job->answers_mu);
    job->call_errors.clear();
  }
  job->outstanding = static_cast<int>(sends.size());
  for (auto& [member, records] : sends) {
    transport_->MergeRecords(
        *member, std::move(records), guard_.Wrap([this, job, id = member->id](absl::Status status) {
          {
            absl::MutexLock lock(&job->answers_mu);
            if (status.ok()) {
              job->acked.insert(id);
            } else {
              job->call_errors[id] =
                  absl::StrCat("sending records to ", id, ": ", status.ToString());
            }
          }
          if (!status.ok()) job->failed = true;
          if (--job->outstanding == 0) {
            executor_->Schedule(guard_.Wrap([this, job] { OnRecordsSent(job, !job->failed); }));
          }
        }));
  }
}

void HandoffSender::OnRecordsSent(JobPtr job, bool ok) {
  if (!Current(job)) return;
  if (!ok) {
    Failed(job, FirstCallError(*job), [this, job] {
      if (!Current(job)) return;
      RefreshPending(*job);
      SendRecords(job);
    });
    return;
  }
  Succeeded(*job);
  HandoffProgress& p = job->progress;
  p.keys += job->pending_keys;
  p.bytes += job->pending_bytes;
  if (p.phase == HandoffPhase::kComparing) {
    p.compared_keys += job->pending_keys;
    p.compared_bytes += job->pending_bytes;
  }
  const bool sent = !job->pending.empty();
  {
    absl::MutexLock lock(&job->answers_mu);
    job->acked.clear();
  }
  job->pending.clear();
  job->pending_keys = job->pending_bytes = 0;
  if (sent) Publish(*job);
  Next(job);
}

void HandoffSender::Compare(JobPtr job) {
  if (!Current(job)) return;
  if (job->digests.empty()) {
    OnCompared(job, true);
    return;
  }
  // A retry after a failure asks only the gainers that have not answered this batch yet.
  std::vector<std::pair<const Member*, std::vector<KeyDigest>>> asks;
  {
    absl::MutexLock lock(&job->answers_mu);
    for (const auto& [gainer, digests] : job->digests) {
      if (job->answers.count(gainer) == 0) {
        asks.emplace_back(job->placement->next()->Find(gainer), digests);
      }
    }
  }
  job->failed = false;
  {
    absl::MutexLock lock(&job->answers_mu);
    job->call_errors.clear();
  }
  job->outstanding = static_cast<int>(asks.size());
  for (auto& [member, digests] : asks) {
    // An earlier version of the gainer cannot compare: it gets every record of the batch.
    std::vector<std::string> all;
    all.reserve(digests.size());
    for (const KeyDigest& d : digests) all.push_back(d.key);
    transport_->CompareDigests(
        *member, std::move(digests),
        guard_.Wrap([this, job, id = member->id,
                     all = std::move(all)](absl::StatusOr<std::vector<std::string>> keys) mutable {
          const bool answered = keys.ok() || absl::IsUnimplemented(keys.status());
          {
            absl::MutexLock lock(&job->answers_mu);
            if (answered) {
              job->answers[id] = keys.ok() ? *std::move(keys) : std::move(all);
            } else {
              job->call_errors[id] =
                  absl::StrCat("comparing digests with ", id, ": ", keys.status().ToString());
            }
          }
          if (!answered) job->failed = true;
          if (--job->outstanding == 0) {
            executor_->Schedule(guard_.Wrap([this, job] { OnCompared(job, !job->failed); }));
          }
        }));
  }
}

void HandoffSender::OnCompared(JobPtr job, bool ok) {
  if (!Current(job)) return;
  if (!ok) {
    Failed(job, FirstCallError(*job), [this, job] { Compare(job); });
    return;
  }
  Succeeded(*job);
  job->progress.digests += job->digest_count;
  job->compared_bytes += job->digest_bytes;
  job->digests.clear();
  job->digest_count = 0;
  job->digest_bytes = 0;
  {
    absl::MutexLock lock(&job->answers_mu);
    for (auto& [gainer, keys] : job->answers) {
      if (keys.empty()) continue;
      std::deque<std::string>& wanted = job->wanted[gainer];
      for (std::string& key : keys) wanted.push_back(std::move(key));
    }
    job->answers.clear();
  }
  Next(job);
}

absl::Status HandoffSender::FillFromWanted(Job& job) {
  size_t size = 0;
  for (auto it = job.wanted.begin(); it != job.wanted.end() && size < options_.batch_bytes;) {
    std::deque<std::string>& keys = it->second;
    while (!keys.empty() && size < options_.batch_bytes) {
      absl::StatusOr<std::string> record = engine_->Get(Column::kData, keys.front());
      if (!record.ok() && !absl::IsNotFound(record.status())) {
        // The records read so far are sent first; this key stays first in line.
        if (job.pending_keys > 0) return absl::OkStatus();
        return absl::Status(
            record.status().code(),
            absl::StrCat("reading the record of key \"", absl::CHexEscape(keys.front()),
                         "\" that a new owner lacks: ", record.status().message()));
      }
      if (record.ok()) {
        const size_t bytes = keys.front().size() + record->size();
        job.pending[it->first].push_back(EncodedRecord{keys.front(), *std::move(record)});
        ++job.pending_keys;
        job.pending_bytes += bytes;
        size += bytes;
      }
      keys.pop_front();
    }
    it = keys.empty() ? job.wanted.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

void HandoffSender::Next(JobPtr job) {
  HandoffProgress& p = job->progress;
  if (!job->wanted.empty()) {
    Throttled(job, [this, job] {
      if (!Current(job)) return;
      if (absl::Status filled = FillFromWanted(*job); filled.ok()) {
        SendRecords(job);
      } else {
        job->pending.clear();
        job->pending_keys = job->pending_bytes = 0;
        Failed(job, filled.ToString(), [this, job] { Next(job); });
      }
    });
    return;
  }
  if (!job->exhausted) {
    Throttled(job, [this, job] { Scan(job); });
    return;
  }
  const absl::Duration took = clock_->Now() - job->started;
  const double mb_per_s =
      static_cast<double>(p.bytes) / 1e6 / std::max(1e-6, absl::ToDoubleSeconds(took));
  if (p.phase == HandoffPhase::kStreaming) {
    p.phase = HandoffPhase::kComparing;
    LogInfo("handoff phase 1 done; phase 2 compares digests once every source is done with phase 1",
            {{"layout_version", absl::StrCat(p.layout_version)},
             {"keys", absl::StrCat(p.keys)},
             {"bytes", absl::StrCat(p.bytes)},
             {"took", absl::FormatDuration(took)},
             {"mb_per_s", absl::StrCat(mb_per_s)}});
    Publish(*job);
    WaitForStreamed(job);
    return;
  }
  p.done = true;
  LogInfo("handoff done", {{"layout_version", absl::StrCat(p.layout_version)},
                           {"keys", absl::StrCat(p.keys)},
                           {"bytes", absl::StrCat(p.bytes)},
                           {"digests", absl::StrCat(p.digests)},
                           {"compared_keys", absl::StrCat(p.compared_keys)},
                           {"took", absl::FormatDuration(took)},
                           {"mb_per_s", absl::StrCat(mb_per_s)}});
  Publish(*job);
}

void HandoffSender::WaitForStreamed(JobPtr job) {
  if (!Current(job)) return;
  if (all_streamed_(job->placement->layout())) {
    StartScan(job);
    return;
  }
  scheduler_->RunAfter(options_.poll, guard_.Wrap([this, job] { WaitForStreamed(job); }));
}

void HandoffSender::Throttled(const JobPtr& job, std::function<void()> step) {
  absl::Duration wait = absl::ZeroDuration();
  if (options_.bytes_per_second > 0) {
    // Records and the digests of phase 2 count against the same limit.
    const absl::Duration due =
        absl::Seconds(static_cast<double>(job->progress.bytes + job->compared_bytes) /
                      static_cast<double>(options_.bytes_per_second));
    wait = std::max(absl::ZeroDuration(), due - (clock_->Now() - job->started));
  }
  if (wait == absl::ZeroDuration()) {
    executor_->Schedule(guard_.Wrap(std::move(step)));
  } else {
    scheduler_->RunAfter(wait, guard_.Wrap(std::move(step)));
  }
}

}  // namespace kv

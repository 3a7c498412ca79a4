#include "node/repair_runner.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kv {

struct RepairRunner::Job {
  std::string id;
  std::string asked;                  // the peer asked for; empty: every peer
  std::vector<std::string> peers;     // those done before a restart first
  size_t next = 0;                    // index into peers of the peer being repaired
  int exchanges_with_peer = 0;        // with peers[next]
  absl::Duration waited;              // waiting for a busy exchanger or the trees, for peers[next]
  std::vector<std::string> failures;  // "peer: error"
  std::vector<absl::StatusCode> failure_codes;
  absl::Status skipped;                // peers[next]: keys its exchanges could not repair, if any
  std::vector<std::string> succeeded;  // the peers whose exchanges succeeded, in the checkpoint
};

RepairRunner::RepairRunner(MerkleIndex* index, AntiEntropy* anti_entropy,
                           OperationRegistry* operations, Scheduler* scheduler, Options options)
    : index_(index),
      anti_entropy_(anti_entropy),
      operations_(operations),
      scheduler_(scheduler),
      options_(options) {}

RepairRunner::~RepairRunner() { Shutdown(); }

void RepairRunner::Shutdown() {
  std::map<std::string, std::string> running;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
  }
  guard_.Close();
  {
    absl::MutexLock lock(&mu_);
    running.swap(running_);
  }
  const bool durable = operations_->durable();
  for (const auto& [id, asked] : running) {
    if (durable) {  // left RUNNING: the next run of the node goes on with it (Resume)
      operations_
          ->Update(id,
                   [](OperationInfo& op) {
                     op.message =
                         "the node is shutting down; this repair goes on when it restarts, with "
                         "the peers not yet done";
                   })
          .IgnoreError();
      continue;
    }
    operations_->Finish(id, absl::CancelledError("the node is shutting down")).IgnoreError();
  }
}

namespace {

// "peer=" + the peer asked for (empty: every peer), then, once an exchange with a peer has
// succeeded, ";done=" + those peers joined by ',' (node ids have neither character). Earlier
// versions wrote the first part alone.
constexpr absl::string_view kPeerCheckpoint = "peer=";
constexpr absl::string_view kDoneCheckpoint = ";done=";

std::string Checkpoint(absl::string_view asked, const std::vector<std::string>& succeeded) {
  if (succeeded.empty()) return absl::StrCat(kPeerCheckpoint, asked);
  return absl::StrCat(kPeerCheckpoint, asked, kDoneCheckpoint, absl::StrJoin(succeeded, ","));
}

}  // namespace

std::vector<std::string> RepairRunner::PeersFor(const std::string& peer_id) const {
  std::vector<std::string> peers;
  for (const Member& peer : index_->peers()) {
    if (peer_id.empty() || peer.id == peer_id) peers.push_back(peer.id);
  }
  return peers;
}

void RepairRunner::Resume(const std::vector<OperationInfo>& interrupted) {
  // Called before the node serves: no Start of the same peers can run yet.
  for (const OperationInfo& op : interrupted) {
    if (!absl::StartsWith(op.checkpoint, kPeerCheckpoint)) {
      operations_
          ->Finish(op.id, absl::DataLossError(absl::StrCat(
                              "cannot start over after a restart: the stored checkpoint \"",
                              op.checkpoint, "\" names no peer set")))
          .IgnoreError();
      continue;
    }
    absl::string_view rest = absl::string_view(op.checkpoint).substr(kPeerCheckpoint.size());
    std::set<std::string> done_before;
    if (const size_t at = rest.find(kDoneCheckpoint); at != absl::string_view::npos) {
      for (absl::string_view peer :
           absl::StrSplit(rest.substr(at + kDoneCheckpoint.size()), ',', absl::SkipEmpty())) {
        done_before.emplace(peer);
      }
      rest = rest.substr(0, at);
    }
    const std::string peer_id(rest);
    auto job = std::make_shared<Job>();
    job->id = op.id;
    job->asked = peer_id;
    job->peers = PeersFor(peer_id);
    if (job->peers.empty()) {
      operations_
          ->Finish(op.id, absl::FailedPreconditionError(absl::StrCat(
                              "the node restarted, and ",
                              peer_id.empty() ? "it has no peers now"
                                              : absl::StrCat(peer_id, " is no longer a peer"))))
          .IgnoreError();
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      running_.emplace(job->id, peer_id);
    }
    // The peers whose exchanges succeeded before are done (and stay first, so that done counts
    // them); the others, those that failed included, are asked again: exchanges are idempotent.
    std::stable_partition(job->peers.begin(), job->peers.end(),
                          [&](const std::string& p) { return done_before.count(p) > 0; });
    while (job->next < job->peers.size() && done_before.count(job->peers[job->next]) > 0) {
      job->succeeded.push_back(job->peers[job->next]);
      ++job->next;
    }
    const std::string message =
        job->next == 0
            ? "the node restarted; exchanging with every peer again"
            : absl::StrCat(
                  "the node restarted; ", job->next, " of ", job->peers.size(),
                  " peer(s) were done before (", absl::StrJoin(job->succeeded, ", "),
                  job->next == job->peers.size() ? "); finishing" : "), going on with the others");
    operations_
        ->Update(job->id,
                 [&](OperationInfo& o) {
                   o.done = job->next;
                   o.total = job->peers.size();
                   o.counters.erase("peers_failed");
                   o.message = message;
                   o.checkpoint = Checkpoint(job->asked, job->succeeded);
                 })
        .IgnoreError();
    scheduler_->RunAfter(absl::ZeroDuration(), guard_.Wrap([this, job] { Next(job); }));
  }
}

absl::StatusOr<std::string> RepairRunner::Start(const std::string& peer_id, bool* already_running) {
  if (already_running != nullptr) *already_running = false;
  auto job = std::make_shared<Job>();
  job->asked = peer_id;
  job->peers = PeersFor(peer_id);
  if (job->peers.empty()) {
    if (!peer_id.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", peer_id, "\" is not a peer of ", index_->self_id()));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(index_->self_id(), " has no peers: a single node has nothing to repair"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the node is shutting down");
    for (const auto& [id, asked] : running_) {
      if (asked == peer_id) {  // the same repair is still running
        if (already_running != nullptr) *already_running = true;
        return id;
      }
    }
    const std::string description = peer_id.empty()
                                        ? absl::StrCat("anti-entropy exchange with every peer: ",
                                                       absl::StrJoin(job->peers, ", "))
                                        : absl::StrCat("anti-entropy exchange with ", peer_id);
    job->id = operations_->Start("repair", description, job->peers.size(), "peers",
                                 Checkpoint(peer_id, {}));
    running_.emplace(job->id, peer_id);
  }
  scheduler_->RunAfter(absl::ZeroDuration(), guard_.Wrap([this, job] { Next(job); }));
  return job->id;
}

void RepairRunner::Progress(const JobPtr& job, const std::string& message) {
  operations_
      ->Update(job->id,
               [&](OperationInfo& op) {
                 op.done = job->next;
                 op.message = message;
               })
      .IgnoreError();
}

absl::Status RepairRunner::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);  // then the registry's, as Start and Next's end
  if (running_.erase(id) == 0) {
    return absl::NotFoundError(absl::StrCat("no running repair ", id));
  }
  cancelled_.insert(id);
  return operations_->Finish(
      id, absl::CancelledError(absl::StrCat(kCancelledByCaller,
                                            " (an exchange that was running then finishes; what it "
                                            "repaired stays repaired)")));
}

bool RepairRunner::Cancelled(const JobPtr& job) {
  absl::MutexLock lock(&mu_);
  return cancelled_.erase(job->id) != 0;
}

void RepairRunner::Next(JobPtr job) {
  if (Cancelled(job)) return;
  if (job->next == job->peers.size()) {
    absl::Status result;
    if (!job->failures.empty()) {
      const bool same = std::all_of(job->failure_codes.begin(), job->failure_codes.end(),
                                    [&](absl::StatusCode c) { return c == job->failure_codes[0]; });
      result = absl::Status(
          same ? job->failure_codes[0] : absl::StatusCode::kUnavailable,
          absl::StrCat("the exchange failed with ", job->failures.size(), " of ", job->peers.size(),
                       " peer(s): ", absl::StrJoin(job->failures, "; ")));
    }
    Progress(job, result.ok() ? "done" : "done, with failures");
    // Under mu_, as Cancel: a cancel sees the repair either running or ended.
    absl::MutexLock lock(&mu_);
    if (cancelled_.erase(job->id) != 0) return;  // it ended when it was cancelled
    running_.erase(job->id);
    operations_->Finish(job->id, std::move(result)).IgnoreError();
    return;
  }
  const std::string& peer = job->peers[job->next];
  if (!index_->ready()) return Retry(job, "this node's Merkle trees to be built");
  Progress(job, absl::StrCat("exchanging with ", peer));
  if (Cancelled(job)) return;  // while the progress was written
  anti_entropy_->Exchange(peer, guard_.Wrap([this, job](absl::StatusOr<ExchangeResult> result) {
    OnExchange(job, std::move(result));
  }));
}

void RepairRunner::Retry(JobPtr job, const std::string& waiting_for) {
  if (job->waited >= options_.wait_timeout) {
    return PeerDone(job, absl::DeadlineExceededError(absl::StrCat(
                             "waited ", absl::FormatDuration(job->waited), " for ", waiting_for)));
  }
  Progress(job, absl::StrCat("waiting for ", waiting_for));
  job->waited += options_.busy_retry;
  scheduler_->RunAfter(options_.busy_retry, guard_.Wrap([this, job] { Next(job); }));
}

void RepairRunner::OnExchange(JobPtr job, absl::StatusOr<ExchangeResult> result) {
  if (absl::IsAborted(result.status())) {
    const std::string busy = anti_entropy_->running_peer();
    return Retry(job, absl::StrCat("the running exchange",
                                   busy.empty() ? "" : absl::StrCat(" with ", busy), " to end"));
  }
  if (!result.ok()) return PeerDone(job, result.status());
  ++job->exchanges_with_peer;
  operations_
      ->Update(job->id,
               [&](OperationInfo& op) {
                 op.counters["exchanges"] += 1;
                 op.counters["segments_different"] += result->segments_different;
                 op.counters["keys_different"] += result->keys_different;
                 op.counters["keys_repaired"] += result->keys_repaired;
                 if (result->keys_skipped > 0) {
                   op.counters["keys_skipped"] += result->keys_skipped;
                 }
               })
      .IgnoreError();
  if (result->keys_skipped > 0 && job->skipped.ok()) {
    job->skipped = absl::Status(
        result->skipped_error.code(),
        absl::StrCat(result->keys_skipped, " key(s) could not be repaired; the first: ",
                     result->skipped_error.message()));
  }
  if (!result->complete && job->exchanges_with_peer < options_.max_exchanges_per_peer) {
    job->waited = absl::ZeroDuration();
    return Next(job);  // the same peer again: it stopped at the per-exchange key limit
  }
  // The other keys were repaired; the ones skipped fail the peer (and so the operation), and so
  // does a peer still different after the last exchange allowed.
  absl::Status status = std::exchange(job->skipped, absl::OkStatus());
  if (status.ok() && !result->complete) {
    status = absl::FailedPreconditionError(absl::StrCat(
        "still different after ", job->exchanges_with_peer,
        " exchanges (each stops at the per-exchange key limit); run the repair again"));
  }
  PeerDone(job, std::move(status));
}

void RepairRunner::PeerDone(JobPtr job, absl::Status status) {
  if (!status.ok()) {
    job->failures.push_back(absl::StrCat(job->peers[job->next], ": ", status.message()));
    job->failure_codes.push_back(status.code());
    operations_->Update(job->id, [](OperationInfo& op) { op.counters["peers_failed"] += 1; })
        .IgnoreError();
  } else {
    // A restart goes on after this peer (Resume).
    job->succeeded.push_back(job->peers[job->next]);
    operations_
        ->Update(job->id,
                 [&](OperationInfo& op) { op.checkpoint = Checkpoint(job->asked, job->succeeded); })
        .IgnoreError();
  }
  ++job->next;
  job->skipped = absl::OkStatus();
  job->exchanges_with_peer = 0;
  job->waited = absl::ZeroDuration();
  Next(job);
}

}  // namespace kv

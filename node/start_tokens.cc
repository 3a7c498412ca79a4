#include "node/start_tokens.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/log.h"
#include "storage/status_macros.h"

namespace kv {

StartTokens::StartTokens(const Clock* clock, Options options) : clock_(clock), options_(options) {}

absl::Status StartTokens::Load(StartTokenJournal* journal) {
  KV_ASSIGN_OR_RETURN(std::vector<StartTokenJournal::Record> stored, journal->LoadAllTokens());
  std::sort(stored.begin(), stored.end(),
            [](const StartTokenJournal::Record& a, const StartTokenJournal::Record& b) {
              return a.started < b.started;
            });
  absl::MutexLock lock(&mu_);
  journal_ = journal;
  for (StartTokenJournal::Record& record : stored) {
    if (entries_.count(record.token) != 0) continue;
    order_.push_back(record.token);
    entries_.emplace(std::move(record.token), Entry{std::move(record.fingerprint),
                                                    std::move(record.response), record.started});
  }
  Prune(clock_->Now());
  EraseDropped();
  return absl::OkStatus();
}

absl::StatusOr<StartTokens::Answer> StartTokens::Run(
    absl::string_view token, absl::string_view fingerprint,
    absl::FunctionRef<absl::StatusOr<std::string>()> start, absl::Duration max_wait) {
  if (token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency_token is ", token.size(),
                                                   " bytes; the limit is ", kMaxTokenBytes));
  }
  if (token.empty()) {
    absl::StatusOr<std::string> response = start();
    if (!response.ok()) return response.status();
    return Answer{*std::move(response), /*deduplicated=*/false};
  }
  // On the monotonic clock: a step of the wall clock must neither stretch nor cut the wait.
  const absl::Time wait_until = SteadyNow() + max_wait;
  absl::MutexLock lock(&mu_);
  for (;;) {
    Prune(clock_->Now());
    const std::string* known = nullptr;
    if (auto it = entries_.find(token); it != entries_.end()) {
      known = &it->second.fingerprint;
    } else if (auto run = running_.find(token); run != running_.end()) {
      known = &run->second;
    }
    if (known != nullptr && *known != fingerprint) {
      return absl::InvalidArgumentError(absl::StrCat(
          "idempotency token reused with different parameters: '", token,
          "' was used for another request on this node; a token names one request (use a new "
          "token for a new request)"));
    }
    if (auto it = entries_.find(token); it != entries_.end()) {
      return Answer{it->second.response, /*deduplicated=*/true};
    }
    if (running_.count(token) == 0) break;
    // The same request is starting on another thread: wait for its answer (or its refusal,
    // after which this call may start the job).
    struct Waiting {
      const std::map<std::string, std::string, std::less<>>* running;
      absl::string_view token;
    } waiting{&running_, token};
    const bool ended = start_ended_.AwaitWithTimeout(
        &mu_,
        absl::Condition(
            +[](Waiting* w) { return w->running->find(w->token) == w->running->end(); }, &waiting),
        wait_until - SteadyNow());
    if (!ended) {
      return absl::AbortedError(absl::StrCat(
          "the request with idempotency token '", token,
          "' is still starting on this node (another call with it came first); ask again with "
          "the same token for its answer"));
    }
  }
  running_.emplace(std::string(token), std::string(fingerprint));
  // Started without the lock: a membership change's start may wait seconds for the other
  // members, and calls with other tokens must not wait for it.
  mu_.Unlock();
  absl::StatusOr<std::string> response = start();
  mu_.Lock();
  running_.erase(running_.find(token));
  start_ended_.Notify();
  if (!response.ok()) return response.status();
  const absl::Time now = clock_->Now();
  entries_.emplace(std::string(token), Entry{std::string(fingerprint), *response, now});
  order_.emplace_back(token);
  if (journal_ != nullptr) {
    absl::Status saved =
        journal_->SaveToken({std::string(token), std::string(fingerprint), *response, now});
    if (!saved.ok()) {
      LogWarn("an operation start's idempotency token was not stored: a restart forgets it",
              {{"error", std::string(saved.message())}});
    }
  }
  Prune(now);
  EraseDropped();
  return Answer{*std::move(response), /*deduplicated=*/false};
}

size_t StartTokens::size() {
  absl::MutexLock lock(&mu_);
  Prune(clock_->Now());
  return entries_.size();
}

void StartTokens::Prune(absl::Time now) {
  // order_ and entries_ hold the same tokens.
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    if (now - it->second.started < options_.retention && order_.size() <= options_.max_tokens) {
      break;
    }
    if (journal_ != nullptr) dropped_.push_back(it->first);
    entries_.erase(it);
    order_.pop_front();
  }
}

void StartTokens::EraseDropped() {
  for (const std::string& token : dropped_) {
    // Dropped, then used again since (a new request under an expired token): its new record
    // stays.
    if (entries_.count(token) != 0) continue;
    if (absl::Status erased = journal_->EraseToken(token); !erased.ok()) {
      LogWarn("an expired idempotency token was not deleted from storage: a restart loads it again",
              {{"error", std::string(erased.message())}});
    }
  }
  dropped_.clear();
}

}  // namespace kv

#include "node/start_tokens.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kv {

StartTokens::StartTokens(const Clock* clock, Options options) : clock_(clock), options_(options) {}

absl::StatusOr<StartTokens::Answer> StartTokens::Run(
    absl::string_view token, absl::string_view fingerprint,
    absl::FunctionRef<absl::StatusOr<std::string>()> start) {
  if (token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency_token is ", token.size(),
                                                   " bytes; the limit is ", kMaxTokenBytes));
  }
  if (token.empty()) {
    absl::StatusOr<std::string> response = start();
    if (!response.ok()) return response.status();
    return Answer{*std::move(response), /*deduplicated=*/false};
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  Prune(now);
  if (auto it = entries_.find(token); it != entries_.end()) {
    if (it->second.fingerprint != fingerprint) {
      return absl::InvalidArgumentError(
          absl::StrCat("idempotency_token '", token,
                       "' was used for another request on this node; a token names one request "
                       "(use a new token for a new request)"));
    }
    return Answer{it->second.response, /*deduplicated=*/true};
  }
  absl::StatusOr<std::string> response = start();
  if (!response.ok()) return response.status();
  entries_.emplace(std::string(token), Entry{std::string(fingerprint), *response, now});
  order_.emplace_back(token);
  if (order_.size() > options_.max_tokens) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
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
    if (now - it->second.started < options_.retention) break;
    entries_.erase(it);
    order_.pop_front();
  }
}

}  // namespace kv

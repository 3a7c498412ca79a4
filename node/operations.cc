#include "node/operations.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

bool AllDigits(absl::string_view text) {
  if (text.empty() || text.size() > 19) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool IsIncarnation(absl::string_view text) {
  if (text.empty() || text.size() > 32) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) &&
        !absl::ascii_islower(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::string_view OperationStateName(OperationState state) {
  switch (state) {
    case OperationState::kRunning:
      return "RUNNING";
    case OperationState::kSucceeded:
      return "SUCCEEDED";
    case OperationState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

absl::StatusOr<OperationIdParts> ParseOperationId(absl::string_view id) {
  const size_t colon = id.find(':');
  const size_t dash = id.rfind('-');
  OperationIdParts parts;
  const bool ok = colon != absl::string_view::npos && colon > 0 &&
                  dash != absl::string_view::npos && dash > colon &&
                  IsIncarnation(id.substr(colon + 1, dash - colon - 1)) &&
                  AllDigits(id.substr(dash + 1)) &&
                  absl::SimpleAtoi(id.substr(dash + 1), &parts.sequence) && parts.sequence > 0;
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed operation id \"", id,
                     "\": expected NODE:INCARNATION-SEQUENCE, such as n1:66a1b2c3-7, as printed "
                     "by the command that started the operation"));
  }
  parts.node_id = std::string(id.substr(0, colon));
  parts.incarnation = std::string(id.substr(colon + 1, dash - colon - 1));
  return parts;
}

OperationRegistry::OperationRegistry(std::string node_id, std::string incarnation,
                                     const Clock* clock, Options options)
    : node_id_(std::move(node_id)),
      incarnation_(std::move(incarnation)),
      clock_(clock),
      options_(options) {}

std::string OperationRegistry::Start(std::string kind, std::string description, uint64_t total,
                                     std::string unit) {
  absl::MutexLock lock(&mu_);
  Prune();
  const uint64_t sequence = next_sequence_++;
  OperationInfo& op = operations_[sequence];
  op.id = absl::StrCat(node_id_, ":", incarnation_, "-", sequence);
  op.kind = std::move(kind);
  op.description = std::move(description);
  op.started = clock_->Now();
  op.total = total;
  op.unit = std::move(unit);
  return op.id;
}

absl::StatusOr<OperationInfo*> OperationRegistry::FindRunning(absl::string_view id) {
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(id);
  auto it = parts.ok() && parts->node_id == node_id_ && parts->incarnation == incarnation_
                ? operations_.find(parts->sequence)
                : operations_.end();
  if (it == operations_.end()) {
    return absl::NotFoundError(absl::StrCat("no operation ", id));
  }
  if (it->second.state != OperationState::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat("operation ", id, " has finished"));
  }
  return &it->second;
}

absl::Status OperationRegistry::Update(absl::string_view id,
                                       const std::function<void(OperationInfo&)>& update) {
  absl::MutexLock lock(&mu_);
  KV_ASSIGN_OR_RETURN(OperationInfo * running, FindRunning(id));
  OperationInfo& op = *running;
  OperationInfo copy = op;
  update(copy);
  op.done = copy.done;
  op.total = copy.total;
  op.unit = std::move(copy.unit);
  op.message = std::move(copy.message);
  op.counters = std::move(copy.counters);
  return absl::OkStatus();
}

absl::Status OperationRegistry::Finish(absl::string_view id, absl::Status result) {
  absl::MutexLock lock(&mu_);
  KV_ASSIGN_OR_RETURN(OperationInfo * running, FindRunning(id));
  OperationInfo& op = *running;
  op.state = result.ok() ? OperationState::kSucceeded : OperationState::kFailed;
  op.error = std::move(result);
  op.ended = clock_->Now();
  finished_.push_back(ParseOperationId(id)->sequence);  // valid: FindRunning parsed it
  Prune();
  return absl::OkStatus();
}

absl::StatusOr<OperationInfo> OperationRegistry::Get(absl::string_view id) {
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(id);
  if (!parts.ok()) return parts.status();
  if (parts->node_id != node_id_) {
    return absl::NotFoundError(absl::StrCat("operation ", id, " belongs to node ", parts->node_id,
                                            ", not to ", node_id_, ": ask ", parts->node_id));
  }
  if (parts->incarnation != incarnation_) {
    return absl::NotFoundError(
        absl::StrCat("operation ", id, " was started by an earlier run of ", node_id_,
                     ", which has restarted since; operations are not kept across restarts"));
  }
  absl::MutexLock lock(&mu_);
  Prune();
  auto it = operations_.find(parts->sequence);
  if (it == operations_.end()) {
    return absl::NotFoundError(absl::StrCat("no operation ", id, " on ", node_id_,
                                            " (finished operations are kept for ",
                                            absl::FormatDuration(options_.retention),
                                            ", at most the last ", options_.max_finished, ")"));
  }
  return it->second;
}

std::vector<OperationInfo> OperationRegistry::List() {
  absl::MutexLock lock(&mu_);
  Prune();
  std::vector<OperationInfo> list;
  for (auto it = operations_.rbegin(); it != operations_.rend(); ++it) list.push_back(it->second);
  return list;
}

void OperationRegistry::Prune() {
  const absl::Time now = clock_->Now();
  while (!finished_.empty()) {
    auto it = operations_.find(finished_.front());
    const bool expired = it == operations_.end() || it->second.ended + options_.retention <= now;
    if (!expired && finished_.size() <= options_.max_finished) break;
    if (it != operations_.end()) operations_.erase(it);
    finished_.pop_front();
  }
}

}  // namespace kv

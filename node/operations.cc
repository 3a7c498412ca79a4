#include "node/operations.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "node/log.h"
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

// A node's start time in lowercase hexadecimal (seconds in the first versions, then
// milliseconds): at most 16 digits, the width of a 64-bit number.
bool IsIncarnation(absl::string_view text) {
  return !text.empty() && text.size() <= 16 &&
         text.find_first_not_of("0123456789abcdef") == absl::string_view::npos;
}

// `id` as error messages show it: escaped, and cut after 128 bytes (a caller may send any bytes,
// and a message carrying them whole could make an answer the client refuses).
std::string ShownId(absl::string_view id) {
  constexpr size_t kShown = 128;
  return id.size() <= kShown ? absl::CHexEscape(id)
                             : absl::StrCat(absl::CHexEscape(id.substr(0, kShown)), "...");
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
        absl::StrCat("malformed operation id \"", ShownId(id),
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

absl::Status OperationRegistry::Load(OperationJournal* journal) {
  KV_ASSIGN_OR_RETURN(std::vector<OperationInfo> stored, journal->LoadAll());
  std::sort(stored.begin(), stored.end(),
            [](const OperationInfo& a, const OperationInfo& b) { return a.started < b.started; });
  absl::MutexLock lock(&mu_);
  journal_ = journal;
  std::vector<std::pair<absl::Time, uint64_t>> ended;  // of the finished ones
  for (OperationInfo& op : stored) {
    if (slots_.contains(op.id)) continue;
    if (ParseOperationId(op.id)->node_id != node_id_) {  // LoadAll returns valid ids only
      // The data directory served under another node id before: its operations are not ours
      // to answer for or resume.
      LogWarn("deleting a stored operation of another node id",
              {{"operation", op.id}, {"node_id", node_id_}});
      Erase(op.id);
      continue;
    }
    const bool running = op.state == OperationState::kRunning;
    const absl::Time end = op.ended;
    const uint64_t slot = next_slot_;
    Add(std::move(op));
    if (running) {
      interrupted_.insert(slot);
    } else {
      ended.emplace_back(end, slot);
    }
  }
  std::sort(ended.begin(), ended.end());
  for (const auto& [end, slot] : ended) finished_.push_back(slot);
  Prune();
  EraseExpired();
  return absl::OkStatus();
}

bool OperationRegistry::durable() const {
  absl::MutexLock lock(&mu_);
  return journal_ != nullptr;
}

OperationInfo& OperationRegistry::Add(OperationInfo op) {
  const uint64_t slot = next_slot_++;
  slots_[op.id] = slot;
  return operations_[slot] = std::move(op);
}

std::string OperationRegistry::Start(std::string kind, std::string description, uint64_t total,
                                     std::string unit, std::string checkpoint) {
  absl::MutexLock lock(&mu_);
  Prune();
  OperationInfo op;
  do {  // an earlier run with the same incarnation (a restart within a second) may hold ids
    op.id = absl::StrCat(node_id_, ":", incarnation_, "-", next_sequence_++);
  } while (slots_.contains(op.id));
  op.kind = std::move(kind);
  op.description = std::move(description);
  op.started = clock_->Now();
  op.total = total;
  op.unit = std::move(unit);
  op.checkpoint = std::move(checkpoint);
  const OperationInfo& added = Add(std::move(op));
  Save(added);
  EraseExpired();
  return added.id;
}

absl::StatusOr<OperationInfo*> OperationRegistry::FindRunning(absl::string_view id) {
  auto slot = slots_.find(id);
  auto it = slot == slots_.end() ? operations_.end() : operations_.find(slot->second);
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
  // Jobs poll and report the same progress again and again: only a change is written.
  const bool changed = op.done != copy.done || op.total != copy.total || op.unit != copy.unit ||
                       op.message != copy.message || op.counters != copy.counters ||
                       op.checkpoint != copy.checkpoint;
  if (!changed) return absl::OkStatus();
  op.done = copy.done;
  op.total = copy.total;
  op.unit = std::move(copy.unit);
  op.message = std::move(copy.message);
  op.counters = std::move(copy.counters);
  op.checkpoint = std::move(copy.checkpoint);
  Save(op);
  return absl::OkStatus();
}

absl::Status OperationRegistry::Finish(absl::string_view id, absl::Status result) {
  absl::MutexLock lock(&mu_);
  KV_ASSIGN_OR_RETURN(OperationInfo * running, FindRunning(id));
  EndRunning(*running, std::move(result));
  Prune();
  EraseExpired();
  return absl::OkStatus();
}

void OperationRegistry::EndRunning(OperationInfo& op, absl::Status result) {
  op.state = result.ok() ? OperationState::kSucceeded : OperationState::kFailed;
  op.error = std::move(result);
  op.ended = clock_->Now();
  const uint64_t slot = slots_.at(op.id);
  interrupted_.erase(slot);
  finished_.push_back(slot);
  Save(op);
}

std::vector<OperationInfo> OperationRegistry::TakeInterrupted(
    const std::vector<std::string>& kinds) {
  absl::MutexLock lock(&mu_);
  std::vector<OperationInfo> taken;
  for (auto it = interrupted_.begin(); it != interrupted_.end();) {
    const OperationInfo& op = operations_.at(*it);
    if (std::find(kinds.begin(), kinds.end(), op.kind) == kinds.end()) {
      ++it;
      continue;
    }
    taken.push_back(op);
    it = interrupted_.erase(it);
  }
  return taken;
}

void OperationRegistry::FailInterrupted(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  const std::set<uint64_t> interrupted = interrupted_;
  for (uint64_t slot : interrupted) EndRunning(operations_.at(slot), why);
  Prune();
  EraseExpired();
}

absl::StatusOr<OperationInfo> OperationRegistry::Get(absl::string_view id) {
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(id);
  if (!parts.ok()) return parts.status();
  if (parts->node_id != node_id_) {
    return absl::NotFoundError(absl::StrCat("operation ", ShownId(id), " belongs to node ",
                                            ShownId(parts->node_id), ", not to ", node_id_,
                                            ": ask ", ShownId(parts->node_id)));
  }
  absl::MutexLock lock(&mu_);
  Prune();
  auto slot = slots_.find(id);
  if (slot == slots_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "no operation ", id, " on ", node_id_, " (finished operations are kept for ",
        absl::FormatDuration(options_.retention), ", at most the last ", options_.max_finished,
        journal_ != nullptr ? ", also across restarts)"
        : parts->incarnation != incarnation_
            ? "; it is from an earlier run of the node, and operations are kept in memory only)"
            : ")"));
  }
  return operations_.at(slot->second);
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
    if (it != operations_.end()) {
      if (journal_ != nullptr) expired_.push_back(it->second.id);
      slots_.erase(it->second.id);
      operations_.erase(it);
    }
    finished_.pop_front();
  }
}

void OperationRegistry::Save(const OperationInfo& op) {
  if (journal_ == nullptr) return;
  if (absl::Status saved = journal_->Save(op); !saved.ok()) {
    LogWarn("an operation's state was not stored: it is kept in memory, and a restart loses it",
            {{"operation", op.id}, {"error", std::string(saved.message())}});
  }
}

void OperationRegistry::EraseExpired() {
  for (const std::string& id : expired_) Erase(id);
  expired_.clear();
}

void OperationRegistry::Erase(const std::string& id) {
  if (journal_ == nullptr) return;
  if (absl::Status erased = journal_->Erase(id); !erased.ok()) {
    LogWarn("an expired operation was not deleted from storage: a restart loads it again",
            {{"operation", id}, {"error", std::string(erased.message())}});
  }
}

}  // namespace kv

#include "client/kvctl_replication.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/kvctl_format.h"
#include "client/retry_policy.h"
#include "storage/steady_timer.h"

namespace kv::kvctl {
namespace {

constexpr absl::Duration kFirstPoll = absl::Milliseconds(10);
constexpr absl::Duration kMaxPoll = absl::Seconds(1);
// Less time than this left is no time for another poll.
constexpr absl::Duration kMinPollTime = absl::Milliseconds(1);

const char* StateName(DescribeWriteResult::State state) {
  switch (state) {
    case DescribeWriteResult::State::kPending:
      return "PENDING";
    case DescribeWriteResult::State::kReplicated:
      return "REPLICATED";
    case DescribeWriteResult::State::kUnknown:
      break;
  }
  return "UNKNOWN";
}

const char* ReplicaStateName(const ReplicaWriteState& replica) {
  if (replica.applied) return "applied";
  return replica.reachable ? "pending" : "unreachable";
}

size_t AppliedCount(const DescribeWriteResult& write) {
  return std::count_if(write.replicas.begin(), write.replicas.end(),
                       [](const ReplicaWriteState& replica) { return replica.applied; });
}

// "n3 (pending), n4 (unreachable: connection refused)": the replicas that lack the write.
std::string Stragglers(const DescribeWriteResult& write) {
  std::vector<std::string> names;
  for (const ReplicaWriteState& replica : write.replicas) {
    if (replica.applied) continue;
    names.push_back(absl::StrCat(
        replica.node_id, " (", ReplicaStateName(replica),
        replica.reachable || replica.error.empty() ? "" : absl::StrCat(": ", replica.error), ")"));
  }
  return names.empty() ? "none reported" : absl::StrJoin(names, ", ");
}

std::string FormatWaited(absl::Duration waited) {
  if (waited < absl::Milliseconds(1)) return "<1ms";
  return absl::FormatDuration(absl::Trunc(waited, absl::Milliseconds(1)));
}

}  // namespace

absl::StatusOr<std::optional<absl::Duration>> WaitTimeoutFrom(const cli::ParsedArgs& flags) {
  const bool wait = flags.GetBool("wait", false);
  const std::optional<std::string> text = flags.Get("wait-timeout");
  if (!wait) {
    if (text.has_value()) return UsageError("--wait-timeout needs --wait");
    return std::optional<absl::Duration>();
  }
  if (!text.has_value()) return std::optional<absl::Duration>(kDefaultWaitTimeout);
  absl::StatusOr<absl::Duration> timeout = cli::ParseDurationFlag("wait-timeout", *text);
  if (!timeout.ok()) return UsageError(timeout.status().message());
  if (*timeout <= absl::ZeroDuration()) return UsageError("--wait-timeout must be positive");
  return std::optional<absl::Duration>(*timeout);
}

WaitOutcome WaitUntilReplicated(Client& client, const std::string& write_id,
                                absl::Duration timeout) {
  const absl::Time start = SteadyNow();
  const absl::Time deadline = start + timeout;
  WaitOutcome outcome;
  absl::Status last_error;
  absl::Duration backoff = kFirstPoll;
  for (absl::Time now = start; deadline - now >= kMinPollTime; now = SteadyNow()) {
    CallOptions poll;
    poll.deadline = std::min(deadline - now, client.options().call_deadline);
    absl::StatusOr<DescribeWriteResult> write = client.DescribeWrite(write_id, poll);
    if (write.ok()) {
      const bool replicated = write->state == DescribeWriteResult::State::kReplicated;
      outcome.last = *std::move(write);
      if (replicated) {
        outcome.waited = SteadyNow() - start;
        return outcome;
      }
    } else if (!IsRetryableCode(write.status().code())) {
      // The write succeeded: whatever the read's code, this must not read as a usage error or a
      // missing key (exit 3, as the help says).
      outcome.status = absl::UnavailableError(absl::StrCat(
          "write ", write_id, " is stored, but where it has spread could not be checked: ",
          absl::StatusCodeToString(write.status().code()), ": ", write.status().message()));
      outcome.waited = SteadyNow() - start;
      return outcome;
    } else {
      last_error = write.status();
    }
    absl::SleepFor(std::min(backoff, deadline - SteadyNow()));
    backoff = std::min(2 * backoff, kMaxPoll);
  }
  outcome.waited = SteadyNow() - start;
  if (outcome.last.has_value()) {
    outcome.status = absl::DeadlineExceededError(absl::StrCat(
        "write ", write_id, " is stored but was not on every replica within ",
        absl::FormatDuration(timeout), "; still ", StateName(outcome.last->state), " on ",
        Stragglers(*outcome.last),
        ". It keeps replicating: check it later with 'kvctl describe-write ", write_id, "'"));
  } else {
    outcome.status = absl::Status(
        last_error.ok() ? absl::StatusCode::kDeadlineExceeded : last_error.code(),
        absl::StrCat("write ", write_id, " is stored, but no node said where it has spread within ",
                     absl::FormatDuration(timeout),
                     last_error.ok() ? "" : absl::StrCat(": ", last_error.message())));
  }
  return outcome;
}

void WaitAndReport(Client& client, const std::string& write_id, absl::Duration timeout,
                   CommandOutput& out) {
  WaitOutcome outcome = WaitUntilReplicated(client, write_id, timeout);
  out.json["waited_ms"] = absl::ToInt64Milliseconds(outcome.waited);
  if (outcome.last.has_value()) {
    out.json["write_state"] = WriteStateToJson(*outcome.last);
    absl::StrAppend(&out.text, "replication after waiting ", FormatWaited(outcome.waited), ": ",
                    WriteStateText(*outcome.last));
  }
  out.status = std::move(outcome.status);
}

nlohmann::json WriteStateToJson(const DescribeWriteResult& write) {
  nlohmann::json json = nlohmann::json::object();
  json["state"] = StateName(write.state);
  SetBytesField(json, "key", write.key);
  json["dot"] = write.dot;
  json["applied_count"] = AppliedCount(write);
  json["replica_count"] = write.replicas.size();
  json["replicas"] = nlohmann::json::array();
  for (const ReplicaWriteState& replica : write.replicas) {
    nlohmann::json entry = {{"node_id", replica.node_id},
                            {"state", ReplicaStateName(replica)},
                            {"applied", replica.applied},
                            {"reachable", replica.reachable}};
    if (!replica.error.empty()) entry["error"] = replica.error;
    json["replicas"].push_back(std::move(entry));
  }
  return json;
}

std::string WriteStateText(const DescribeWriteResult& write) {
  std::string text = absl::StrCat(StateName(write.state), ", ", AppliedCount(write), " of ",
                                  write.replicas.size(), " replicas applied\n");
  for (const ReplicaWriteState& replica : write.replicas) {
    absl::StrAppend(&text, "  ", replica.node_id, "  ", ReplicaStateName(replica),
                    replica.error.empty() ? "" : absl::StrCat(" (", replica.error, ")"), "\n");
  }
  return text;
}

absl::StatusOr<CommandOutput> RunDescribeWrite(Client& client, const CommandInput& input) {
  const std::string& write_id = input.args[0];
  absl::StatusOr<DescribeWriteResult> write = client.DescribeWrite(write_id);
  if (!write.ok()) return write.status();

  CommandOutput out;
  out.json = WriteStateToJson(*write);
  out.json["write_id"] = write_id;
  out.text = absl::StrCat("write_id: ", write_id, "\n", "key: ", DisplayKey(write->key), "\n",
                          "dot: ", write->dot, "\n", "state: ", WriteStateText(*write));
  return out;
}

}  // namespace kv::kvctl

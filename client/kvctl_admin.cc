#include "client/kvctl_admin.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli_flags.h"
#include "client/kvctl_format.h"
#include "client/kvctl_replication.h"
#include "client/retry_policy.h"
#include "storage/steady_timer.h"

namespace kv::kvctl {
namespace {

constexpr absl::Duration kDefaultRepairWait = absl::Minutes(10);
constexpr absl::Duration kDefaultOperationWait = absl::Minutes(10);
constexpr absl::Duration kFirstPoll = absl::Milliseconds(100);
constexpr absl::Duration kMaxPoll = absl::Seconds(1);

std::string TimeOrNever(int64_t micros) { return micros == 0 ? "never" : FormatTimestamp(micros); }

nlohmann::json OperationToJson(const OperationStatus& op) {
  nlohmann::json json = {
      {"operation_id", op.operation_id},
      {"node_id", op.node_id},
      {"kind", op.kind},
      {"description", op.description},
      {"state", OperationStateName(op.state)},
      {"start_unix_micros", op.start_unix_micros},
      {"start", TimeOrNever(op.start_unix_micros)},
      {"end_unix_micros", op.end_unix_micros},
      {"end", op.end_unix_micros == 0 ? "" : FormatTimestamp(op.end_unix_micros)},
      {"progress",
       {{"done", op.progress_done},
        {"total", op.progress_total},
        {"unit", op.progress_unit},
        {"message", op.progress_message}}},
      {"counters", nlohmann::json::object()}};
  for (const auto& [name, value] : op.counters) json["counters"][name] = value;
  if (op.state == OperationStatus::State::kFailed) {
    json["error"] = {
        {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(op.error_code))},
        {"message", op.error_message}};
  }
  return json;
}

std::string OperationText(const OperationStatus& op) {
  std::string text = absl::StrCat("operation ", op.operation_id, " on ", op.node_id, ": ",
                                  OperationStateName(op.state), "\n", "  kind: ", op.kind, " (",
                                  op.description, ")\n");
  absl::StrAppend(&text, "  progress: ", op.progress_done);
  if (op.progress_total > 0) absl::StrAppend(&text, " of ", op.progress_total);
  absl::StrAppend(&text, " ", op.progress_unit);
  if (!op.progress_message.empty()) absl::StrAppend(&text, " (", op.progress_message, ")");
  absl::StrAppend(&text, "\n");
  for (const auto& [name, value] : op.counters)
    absl::StrAppend(&text, "  ", name, ": ", value, "\n");
  absl::StrAppend(&text, "  started: ", TimeOrNever(op.start_unix_micros), "\n");
  if (op.end_unix_micros != 0) {
    absl::StrAppend(
        &text, "  ended: ", FormatTimestamp(op.end_unix_micros), " (took ",
        absl::FormatDuration(absl::Trunc(
            absl::Microseconds(op.end_unix_micros - op.start_unix_micros), absl::Milliseconds(1))),
        ")\n");
  }
  if (op.state == OperationStatus::State::kFailed) {
    absl::StrAppend(
        &text, "  error: ", absl::StatusCodeToString(static_cast<absl::StatusCode>(op.error_code)),
        ": ", TerminalSafe(op.error_message), "\n");
  }
  return text;
}

// Polls the operation until it is no longer RUNNING or `timeout` passes. A poll that fails in a
// way that can pass (the operation's node unreachable or restarting) is retried until the
// deadline; the last error is returned then. NOT_FOUND is final: the client asks the
// operation's node (Client::GetOperation), so it means that node no longer keeps the operation
// (it expired) or never ran it, or that no endpoint is that node.
absl::StatusOr<OperationStatus> WaitForOperation(Client& client, const std::string& id,
                                                 absl::Duration timeout) {
  const absl::Time deadline = SteadyNow() + timeout;
  absl::Duration backoff = kFirstPoll;
  while (true) {
    CallOptions poll;
    poll.deadline = std::max(absl::Milliseconds(100),
                             std::min(deadline - SteadyNow(), client.options().call_deadline));
    absl::StatusOr<OperationStatus> op = client.GetOperation(id, poll);
    if (op.ok()) {
      if (op->state != OperationStatus::State::kRunning) return op;
    } else if (!IsRetryableCode(op.status().code())) {
      return op.status();
    }
    if (SteadyNow() >= deadline) return op;
    absl::SleepFor(std::min(backoff, std::max(deadline - SteadyNow(), absl::ZeroDuration())));
    backoff = std::min(2 * backoff, kMaxPoll);
  }
}

}  // namespace

void WaitAndReportOperation(Client& client, absl::string_view what, const std::string& id,
                            absl::Duration timeout, bool deduplicated, CommandOutput* out) {
  if (id.empty()) {
    out->status = absl::InternalError(
        absl::StrCat("the node answered the ", what, " without an operation id to wait for"));
    return;
  }
  // NOT_FOUND ends the wait; a deduplicated start may name an operation that expired since.
  absl::StatusOr<OperationStatus> op = WaitForOperation(client, id, timeout);
  if (!op.ok()) {
    // The start went through: whatever the read's code, this is not a usage error or a missing
    // key (exit 3).
    std::string message;
    if (deduplicated && absl::IsNotFound(op.status())) {
      message = absl::StrCat(what, " ", id, " was started earlier with this token, and its ",
                             "operation is no longer kept (finished operations are kept for an ",
                             "hour), so how it ended is not known here: ", op.status().message());
    } else if (absl::IsNotFound(op.status())) {
      message = absl::StrCat(what, " ", id, " is no longer kept by its node, so how it ended ",
                             "is not known here: ", op.status().message());
    } else {
      message = absl::StrCat(what, " ", id,
                             " started, but its state could not be read: ", op.status().message());
    }
    out->status = absl::UnavailableError(message);
    return;
  }
  out->json["operation"] = OperationToJson(*op);
  absl::StrAppend(&out->text, OperationText(*op));
  if (op->state == OperationStatus::State::kRunning) {
    out->status = absl::DeadlineExceededError(absl::StrCat(
        what, " ", op->operation_id, " is still running after ", absl::FormatDuration(timeout),
        "; follow it with: kvctl operation get ", op->operation_id));
  } else if (op->state == OperationStatus::State::kFailed) {
    out->status =
        absl::Status(static_cast<absl::StatusCode>(op->error_code),
                     absl::StrCat(what, " ", op->operation_id, " failed: ", op->error_message));
    // INVALID_ARGUMENT or NOT_FOUND from the job must not read as a usage error or a missing key;
    // and a failure without a code (an OK status drops its message) is still one.
    if (out->status.ok() || ExitCodeFor(out->status) != kExitFailure) {
      out->status = absl::UnavailableError(out->status.message());
    }
  } else if (op->state != OperationStatus::State::kSucceeded) {
    // A state this kvctl does not know (a newer node's): not a success.
    out->status = absl::UnavailableError(absl::StrCat(
        what, " ", op->operation_id,
        " ended in a state this kvctl does not know; see kvctl operation get ", op->operation_id));
  }
}

absl::StatusOr<CommandOutput> RunRepair(Client& client, const CommandInput& input) {
  absl::StatusOr<std::optional<absl::Duration>> wait = WaitTimeoutFrom(*input.flags);
  if (!wait.ok()) return wait.status();
  if (wait->has_value() && !input.flags->Get("wait-timeout").has_value()) {
    *wait = kDefaultRepairWait;
  }
  const std::string peer = input.flags->Get("peer").value_or("");
  if (input.flags->Get("peer").has_value() && peer.empty()) {
    return UsageError("--peer needs a node id");
  }
  StartOptions options;
  absl::StatusOr<std::string> token = TokenFlag(*input.flags);
  if (!token.ok()) return token.status();
  options.idempotency_token = *std::move(token);
  absl::StatusOr<RepairStarted> started = client.StartRepair(peer, options);
  if (!started.ok()) return FailedMutation(started.status(), "repair", options.idempotency_token);
  CommandOutput out;
  out.json = {{"operation_id", started->operation_id},
              {"node_id", started->node_id},
              {"deduplicated", started->deduplicated},
              {"already_running", started->already_running}};
  if (!wait->has_value()) {
    out.text = absl::StrCat(started->operation_id, "\n");
    out.notice = absl::StrCat(
        started->deduplicated
            ? "this token had already started the repair; nothing new started"
            : (started->already_running
                   ? "a repair of the same peers was already running; nothing new started: it runs"
                   : "repair started"),
        " on ", started->node_id, "; follow it with: kvctl operation get ", started->operation_id,
        "\n");
    return out;
  }
  WaitAndReportOperation(client, "repair", started->operation_id, **wait, started->deduplicated,
                         &out);
  if (!out.status.ok() && out.text.empty()) out.text = absl::StrCat(started->operation_id, "\n");
  return out;
}

absl::StatusOr<CommandOutput> RunOperation(Client& client, const CommandInput& input) {
  const std::string& sub = input.args[0];
  const std::optional<std::string> timeout_flag = input.flags->Get("wait-timeout");
  if (sub == "list") {
    if (input.args.size() != 1) return UsageError("usage: kvctl operation list");
    if (timeout_flag.has_value()) return UsageError("--wait-timeout is a flag of 'operation wait'");
    absl::StatusOr<std::vector<OperationStatus>> ops = client.ListOperations();
    if (!ops.ok()) return ops.status();
    CommandOutput out;
    out.json = {{"operations", nlohmann::json::array()}};
    std::vector<std::vector<std::string>> rows = {
        {"OPERATION", "KIND", "STATE", "PROGRESS", "STARTED", "ENDED"}};
    for (const OperationStatus& op : *ops) {
      out.json["operations"].push_back(OperationToJson(op));
      rows.push_back({op.operation_id, op.kind, OperationStateName(op.state),
                      absl::StrCat(op.progress_done, "/", op.progress_total, " ", op.progress_unit),
                      TimeOrNever(op.start_unix_micros),
                      op.end_unix_micros == 0 ? "-" : FormatTimestamp(op.end_unix_micros)});
    }
    out.text = ops->empty() ? "no operations\n" : FormatTable(rows);
    return out;
  }
  if (sub != "get" && sub != "wait" && sub != "cancel") {
    return UsageError(absl::StrCat("unknown operation subcommand '", sub,
                                   "'; usage: kvctl operation get ID | operation wait ID "
                                   "[--wait-timeout=D] | operation cancel ID | operation list"));
  }
  if (sub == "wait") {
    if (input.args.size() != 2)
      return UsageError("usage: kvctl operation wait ID [--wait-timeout=D]");
    absl::Duration timeout = kDefaultOperationWait;
    if (timeout_flag.has_value()) {
      absl::StatusOr<absl::Duration> parsed = cli::ParseDurationFlag("wait-timeout", *timeout_flag);
      if (!parsed.ok()) return UsageError(parsed.status().message());
      if (*parsed <= absl::ZeroDuration()) return UsageError("--wait-timeout must be positive");
      timeout = *parsed;
    }
    // An id that is malformed, unknown or of another node is answered before any waiting.
    absl::StatusOr<OperationStatus> first = client.GetOperation(input.args[1]);
    if (!first.ok()) return first.status();
    CommandOutput out;
    out.json = {{"operation_id", first->operation_id}, {"node_id", first->node_id}};
    WaitAndReportOperation(client, first->kind, first->operation_id, timeout,
                           /*deduplicated=*/false, &out);
    return out;
  }
  if (timeout_flag.has_value()) return UsageError("--wait-timeout is a flag of 'operation wait'");
  if (input.args.size() != 2)
    return UsageError(absl::StrCat("usage: kvctl operation ", sub, " ID"));
  if (sub == "cancel") {
    absl::StatusOr<OperationStatus> cancelled = client.CancelOperation(input.args[1]);
    if (!cancelled.ok()) return cancelled.status();
    CommandOutput out;
    // Nested: the cancelled operation's "error" is not the command's.
    out.json = {{"operation", OperationToJson(*cancelled)}};
    out.text = OperationText(*cancelled);
    return out;
  }
  absl::StatusOr<OperationStatus> op = client.GetOperation(input.args[1]);
  if (!op.ok()) return op.status();
  CommandOutput out;
  out.json = OperationToJson(*op);
  out.text = OperationText(*op);
  return out;
}

absl::StatusOr<CommandOutput> RunClusterAntiEntropy(Client& client, const CommandInput& input) {
  const bool ranges = input.flags->GetBool("ranges", false);
  absl::StatusOr<AntiEntropyStatusResult> status = client.AntiEntropyStatus(ranges);
  if (!status.ok()) return status.status();
  CommandOutput out;
  out.json = {{"node_id", status->node_id},
              {"merkle_ready", status->merkle_ready},
              {"interval_us", status->interval_us},
              {"keys_per_second", status->keys_per_second},
              {"running_exchange_peer", status->running_exchange_peer},
              {"peers", nlohmann::json::array()}};
  out.text = absl::StrCat(
      "anti-entropy on ", status->node_id, ": ",
      status->interval_us == 0
          ? std::string("periodic exchanges off (kvctl repair still runs one)")
          : absl::StrCat("one exchange every ",
                         absl::FormatDuration(absl::Microseconds(status->interval_us))),
      ", budget ", status->keys_per_second, " keys/s, trees ",
      status->merkle_ready ? "built" : "still being built",
      status->running_exchange_peer.empty()
          ? std::string()
          : absl::StrCat(", exchanging with ", status->running_exchange_peer, " now"),
      "\n");
  std::vector<std::vector<std::string>> rows = {{"PEER", "EXCHANGES", "FAILED", "LAST EXCHANGE",
                                                 "TOOK", "IN SYNC", "KEYS DIFFERENT",
                                                 "REPAIRED (LAST/TOTAL)", "LAST ERROR"}};
  std::string range_text;
  for (const PeerAntiEntropyStatus& peer : status->peers) {
    nlohmann::json json = {{"peer_id", peer.peer_id},
                           {"exchanges", peer.exchanges},
                           {"failed_exchanges", peer.failed_exchanges},
                           {"last_exchange_unix_micros", peer.last_exchange_unix_micros},
                           {"last_exchange", TimeOrNever(peer.last_exchange_unix_micros)},
                           {"last_exchange_duration_us", peer.last_exchange_duration_us},
                           {"last_attempt_unix_micros", peer.last_attempt_unix_micros},
                           {"last_error", peer.last_error},
                           {"in_sync", peer.in_sync},
                           {"last_segments_different", peer.last_segments_different},
                           {"last_keys_different", peer.last_keys_different},
                           {"last_keys_repaired", peer.last_keys_repaired},
                           {"keys_repaired", peer.keys_repaired}};
    const bool never = peer.last_exchange_unix_micros == 0;
    rows.push_back(
        {peer.peer_id, absl::StrCat(peer.exchanges), absl::StrCat(peer.failed_exchanges),
         TimeOrNever(peer.last_exchange_unix_micros),
         never ? "-"
         : peer.last_exchange_duration_us < 1000
             ? "<1ms"
             : absl::FormatDuration(absl::Trunc(absl::Microseconds(peer.last_exchange_duration_us),
                                                absl::Milliseconds(1))),
         never ? "-" : (peer.in_sync ? "yes" : "no"),
         never ? "-" : absl::StrCat(peer.last_keys_different),
         absl::StrCat(peer.last_keys_repaired, "/", peer.keys_repaired),
         peer.last_error.empty() ? "-" : peer.last_error});
    if (ranges) {
      json["ranges"] = nlohmann::json::array();
      std::vector<std::vector<std::string>> range_rows = {
          {"RANGE", "SEGMENTS", "LAST DIFFERENCE", "DIFFERENT (LAST/TOTAL)", "REPAIRED"}};
      for (const AntiEntropyRangeStatus& r : peer.ranges) {
        json["ranges"].push_back({{"index", r.index},
                                  {"first_segment", r.index * 256},
                                  {"last_segment", r.index * 256 + 255},
                                  {"last_difference_unix_micros", r.last_difference_unix_micros},
                                  {"last_difference", TimeOrNever(r.last_difference_unix_micros)},
                                  {"last_keys_different", r.last_keys_different},
                                  {"keys_different_total", r.keys_different_total},
                                  {"keys_repaired", r.keys_repaired}});
        range_rows.push_back({absl::StrCat(r.index),
                              absl::StrCat(r.index * 256, "-", r.index * 256 + 255),
                              TimeOrNever(r.last_difference_unix_micros),
                              absl::StrCat(r.last_keys_different, "/", r.keys_different_total),
                              absl::StrCat(r.keys_repaired)});
      }
      absl::StrAppend(&range_text, "ranges of the tree shared with ", peer.peer_id,
                      " that ever differed: ", peer.ranges.size(), " of 256\n");
      if (!peer.ranges.empty()) absl::StrAppend(&range_text, FormatTable(range_rows));
    }
    out.json["peers"].push_back(std::move(json));
  }
  absl::StrAppend(&out.text, status->peers.empty() ? "  no peers\n" : FormatTable(rows),
                  range_text);
  return out;
}

}  // namespace kv::kvctl

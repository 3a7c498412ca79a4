#include "client/kvctl_cluster.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/kvctl_admin.h"
#include "client/kvctl_format.h"
#include "client/kvctl_replication.h"

namespace kv::kvctl {
namespace {

// How long `cluster join|leave|remove --commit --wait` waits by default: a handoff of a large
// node takes long.
constexpr absl::Duration kDefaultChangeWait = absl::Hours(1);

std::string MemberState(const MemberStatus& member) {
  if (member.self) return "self";
  if (member.reachable) return "reachable";
  if (member.last_error.empty() && member.last_success_unix_micros == 0) return "not contacted";
  return "unreachable";
}

std::string Micros(int64_t micros) { return absl::FormatDuration(absl::Microseconds(micros)); }

nlohmann::json MemberToJson(const MemberStatus& member) {
  return {{"node_id", member.node_id},
          {"address", member.address},
          {"zone", member.zone},
          {"self", member.self},
          {"reachable", member.reachable},
          {"state", MemberState(member)},
          {"outbox_depth", member.outbox_depth},
          {"outbox_dropped", member.outbox_dropped},
          {"sent_records", member.sent_records},
          {"last_error", member.last_error},
          {"last_success_unix_micros", member.last_success_unix_micros},
          {"last_success", member.last_success_unix_micros == 0
                               ? "never"
                               : FormatTimestamp(member.last_success_unix_micros)},
          {"liveness", member.liveness},
          {"heartbeat", member.heartbeat},
          {"incarnation", member.incarnation},
          {"last_heard_ms_ago", member.last_heard_ms_ago}};
}

std::string LastHeard(const MemberStatus& member) {
  if (member.self) return "-";
  if (member.last_heard_ms_ago < 0) return "never";
  return absl::StrCat(absl::FormatDuration(absl::Milliseconds(member.last_heard_ms_ago)), " ago");
}

std::string MembersText(const ClusterStatusResult& status) {
  std::vector<std::vector<std::string>> rows = {{"NODE", "ADDRESS", "ZONE", "LIVENESS", "HEARTBEAT",
                                                 "HEARD", "STATE", "OUTBOX", "DROPPED", "SENT",
                                                 "LAST SUCCESS", "LAST ERROR"}};
  for (const MemberStatus& member : status.members) {
    if (member.self) {
      rows.push_back({member.node_id, member.address, member.zone.empty() ? "-" : member.zone,
                      member.liveness, absl::StrCat(member.heartbeat), "-", "self", "-", "-", "-",
                      "-", "-"});
      continue;
    }
    rows.push_back({member.node_id, member.address, member.zone.empty() ? "-" : member.zone,
                    member.liveness, absl::StrCat(member.heartbeat), LastHeard(member),
                    MemberState(member), absl::StrCat(member.outbox_depth),
                    absl::StrCat(member.outbox_dropped), absl::StrCat(member.sent_records),
                    member.last_success_unix_micros == 0
                        ? "never"
                        : FormatTimestamp(member.last_success_unix_micros),
                    member.last_error.empty() ? "-" : member.last_error});
  }
  return FormatTable(rows);
}

// What a node gossip knows off the ring is: "joining" (a next owner of the change in
// progress), "self" (the answering node otherwise: it waits to be joined, or has left), or
// "outside" (waiting to be joined, or gone).
std::string OutsideState(const ClusterStatusResult& status, const MemberStatus& node) {
  const std::vector<std::string>& next = status.layout_next_members;
  if (std::find(next.begin(), next.end(), node.node_id) != next.end()) return "joining";
  return node.self ? "self" : "outside";
}

// The nodes gossip knows outside the ring, or "" if none.
std::string OutsideLayoutText(const ClusterStatusResult& status) {
  if (status.outside_layout.empty()) return "";
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "ADDRESS", "ZONE", "LIVENESS", "HEARTBEAT", "HEARD", "STATE"}};
  for (const MemberStatus& node : status.outside_layout) {
    rows.push_back({node.node_id, node.address, node.zone.empty() ? "-" : node.zone, node.liveness,
                    absl::StrCat(node.heartbeat), LastHeard(node), OutsideState(status, node)});
  }
  return absl::StrCat(
      "known to gossip, not members (waiting to be joined, joining, or gone; a node outside the "
      "layout is forgotten once silent for --gossip_forget_after):\n",
      FormatTable(rows));
}

CommandOutput ClusterStatusOutput(const ClusterStatusResult& status) {
  CommandOutput out;
  out.json = {{"node_id", status.node_id},
              {"replication_factor", status.replication_factor},
              {"default_w", status.default_w},
              {"default_r", status.default_r},
              {"members", nlohmann::json::array()},
              {"writes_coordinated", status.writes_coordinated},
              {"writes_forwarded", status.writes_forwarded},
              {"read_repairs", status.read_repairs},
              {"replication_lag_p50_us", status.replication_lag_p50_us},
              {"replication_lag_p99_us", status.replication_lag_p99_us},
              {"replication_lag_max_us", status.replication_lag_max_us},
              {"replication_lag_samples", status.replication_lag_samples},
              {"layout_version", status.layout_version},
              {"layout_next_members", status.layout_next_members},
              {"layout_change", status.layout_change},
              {"layout_conflict", status.layout_conflict},
              {"settings_conflict", status.settings_conflict},
              {"catching_up", status.catching_up},
              {"history_conflict", status.history_conflict},
              {"outside_layout", nlohmann::json::array()}};
  for (const MemberStatus& member : status.members) {
    out.json["members"].push_back(MemberToJson(member));
  }
  for (const MemberStatus& node : status.outside_layout) {
    out.json["outside_layout"].push_back({{"node_id", node.node_id},
                                          {"address", node.address},
                                          {"zone", node.zone},
                                          {"self", node.self},
                                          {"state", OutsideState(status, node)},
                                          {"liveness", node.liveness},
                                          {"heartbeat", node.heartbeat},
                                          {"incarnation", node.incarnation},
                                          {"last_heard_ms_ago", node.last_heard_ms_ago}});
  }
  out.text = absl::StrCat(
      "cluster as seen by ", status.node_id, ": N=", status.replication_factor,
      " W=", status.default_w, " R=", status.default_r, ", ", status.members.size(),
      " member(s), layout version ", status.layout_version, "\n",
      status.layout_conflict.empty()
          ? ""
          : absl::StrCat("WARNING: cluster layout conflict: ", status.layout_conflict,
                         " (README.md, \"One change at a time across the cluster\")\n"),
      status.settings_conflict.empty()
          ? ""
          : absl::StrCat("WARNING: members run with other settings: ", status.settings_conflict,
                         "; every member must share them (README.md, \"Configuration\")\n"),
      status.history_conflict.empty()
          ? ""
          : absl::StrCat("WARNING: ", status.node_id,
                         "'s data directory is older than its last run: ", status.history_conflict,
                         " (README.md, C5)\n"),
      status.catching_up
          ? absl::StrCat(status.node_id,
                         " is catching up: it restarted after a machine crash, or on a data "
                         "directory older than its last run, and may lack writes it "
                         "acknowledged; until anti-entropy has compared it with every peer, reads "
                         "do not count its answers that a key has no live version\n")
          : "",
      status.layout_next_members.empty()
          ? ""
          : absl::StrCat("membership change in progress (", status.layout_change,
                         "): owners after it: ", absl::StrJoin(status.layout_next_members, ", "),
                         "; keys are placed on the old and the new owners until it completes\n"),
      MembersText(status), OutsideLayoutText(status),
      "writes coordinated here: ", status.writes_coordinated,
      ", forwarded: ", status.writes_forwarded, ", read repairs: ", status.read_repairs, "\n");
  if (status.replication_lag_samples == 0) {
    absl::StrAppend(&out.text,
                    "replication lag: no samples (no write coordinated here has been confirmed "
                    "by another replica since the node started)\n");
  } else {
    absl::StrAppend(&out.text, "replication lag (last ", status.replication_lag_samples,
                    " writes coordinated here, commit to all replicas): p50 ",
                    Micros(status.replication_lag_p50_us), ", p99 ",
                    Micros(status.replication_lag_p99_us), ", max ",
                    Micros(status.replication_lag_max_us), "\n");
  }
  return out;
}

absl::StatusOr<CommandOutput> RunClusterChange(Client& client, const CommandInput& input) {
  const MembershipAction action = input.args[0] == "join"    ? MembershipAction::kJoin
                                  : input.args[0] == "leave" ? MembershipAction::kLeave
                                                             : MembershipAction::kRemoveDown;
  if (input.args.size() != 2) {
    return UsageError(absl::StrCat(
        "usage: kvctl cluster ", input.args[0],
        " NODE_ID [--commit [--layout-version=V] [--token=TOKEN] [--wait [--wait-timeout=D]]]"));
  }
  const bool commit = input.flags->GetBool("commit", false);
  absl::StatusOr<std::optional<absl::Duration>> wait = WaitTimeoutFrom(*input.flags);
  if (!wait.ok()) return wait.status();
  if (wait->has_value() && !commit) return UsageError("--wait goes with --commit");
  if (wait->has_value() && !input.flags->Get("wait-timeout").has_value()) {
    *wait = kDefaultChangeWait;
  }
  uint64_t expected = 0;
  if (std::optional<std::string> v = input.flags->Get("layout-version"); v.has_value()) {
    if (!commit) return UsageError("--layout-version goes with --commit");
    if (!absl::SimpleAtoi(*v, &expected)) {
      return UsageError(absl::StrCat("--layout-version must be a number, not '", *v, "'"));
    }
    if (expected == 0) {
      // 0 is the request's "no check"; no plan ever names it (layout versions start at 1).
      return UsageError(
          "--layout-version must be at least 1: it is the version `kvctl cluster plan` printed");
    }
  }
  StartOptions options;
  if (!commit && input.flags->Has("token")) return UsageError("--token goes with --commit");
  if (commit) {
    absl::StatusOr<std::string> token = TokenFlag(*input.flags);
    if (!token.ok()) return token.status();
    options.idempotency_token = *std::move(token);
  }
  absl::StatusOr<MembershipPlan> plan =
      client.ChangeMembership(action, input.args[1], commit, expected, options);
  if (!plan.ok()) {
    if (!commit) return plan.status();  // a plan changes nothing: just ask again
    return FailedMutation(plan.status(), absl::StrCat("cluster ", input.args[0]),
                          options.idempotency_token);
  }
  CommandOutput out;
  nlohmann::json moves = nlohmann::json::array();
  nlohmann::json shares = nlohmann::json::array();
  std::vector<std::vector<std::string>> move_rows = {{"FROM", "TO", "SHARE OF DATA"}};
  for (const MembershipPlan::Move& m : plan->moves) {
    moves.push_back({{"from", m.from_node_id}, {"to", m.to_node_id}, {"fraction", m.fraction}});
    move_rows.push_back(
        {m.from_node_id, m.to_node_id, absl::StrFormat("%.1f%%", 100 * m.fraction)});
  }
  std::vector<std::vector<std::string>> share_rows = {
      {"MEMBER", "PRIMARY BEFORE", "PRIMARY AFTER", "REPLICA BEFORE", "REPLICA AFTER"}};
  for (const MembershipPlan::Share& s : plan->shares) {
    shares.push_back({{"node_id", s.node_id},
                      {"primary_before", s.primary_before},
                      {"primary_after", s.primary_after},
                      {"replica_before", s.replica_before},
                      {"replica_after", s.replica_after}});
    share_rows.push_back({s.node_id, absl::StrFormat("%.1f%%", 100 * s.primary_before),
                          absl::StrFormat("%.1f%%", 100 * s.primary_after),
                          absl::StrFormat("%.1f%%", 100 * s.replica_before),
                          absl::StrFormat("%.1f%%", 100 * s.replica_after)});
  }
  out.json = {{"layout_version", plan->layout_version},
              {"members_before", plan->members_before},
              {"members_after", plan->members_after},
              {"moved_fraction", plan->moved_fraction},
              {"moves", moves},
              {"shares", shares}};
  out.text = absl::StrCat(
      input.args[0], " ", input.args[1], " at layout version ", plan->layout_version, ": members ",
      absl::StrJoin(plan->members_before, ","), " -> ", absl::StrJoin(plan->members_after, ","),
      "\n",
      plan->moves.empty()
          ? std::string("no stored replica data moves: the members after the change already hold "
                        "every key they will own\n")
          : absl::StrCat(absl::StrFormat("%.1f%%", 100 * plan->moved_fraction),
                         " of the stored replica data moves:\n", FormatTable(move_rows)),
      FormatTable(share_rows));
  if (!commit) {
    out.notice =
        absl::StrCat("nothing changed; apply with: kvctl cluster ", input.args[0], " ",
                     input.args[1], " --commit --layout-version=", plan->layout_version, "\n");
    return out;
  }
  out.json["operation_id"] = plan->operation_id;
  out.json["node_id"] = plan->node_id;
  out.json["deduplicated"] = plan->deduplicated;
  absl::StrAppend(&out.text, plan->operation_id, "\n");
  out.notice = absl::StrCat(
      input.args[0],
      plan->deduplicated ? " had already been committed with this token; nothing new started"
                         : " started",
      " on ", plan->node_id, "; ",
      wait->has_value() ? "waiting for it to end"
                        : absl::StrCat("follow it with: kvctl operation get ", plan->operation_id),
      "\n");
  if (wait->has_value()) {
    WaitAndReportOperation(client, input.args[0], plan->operation_id, **wait, plan->deduplicated,
                           &out);
  }
  return out;
}

}  // namespace

absl::StatusOr<CommandOutput> RunCluster(Client& client, const CommandInput& input) {
  if (input.args[0] == "join" || input.args[0] == "leave" || input.args[0] == "remove") {
    if (input.flags->Get("ranges").has_value()) {
      return UsageError("--ranges is a flag of 'cluster anti-entropy'");
    }
    return RunClusterChange(client, input);
  }
  if (input.args[0] != "status" && input.args[0] != "anti-entropy") {
    return UsageError(absl::StrCat(
        "unknown cluster subcommand '", input.args[0],
        "'; usage: kvctl cluster status | cluster anti-entropy | cluster join|leave|remove "
        "NODE_ID"));
  }
  for (const char* flag : {"commit", "layout-version", "token", "wait", "wait-timeout"}) {
    if (input.flags->Get(flag).has_value()) {
      return UsageError(absl::StrCat(
          "--", flag, " is a flag of 'cluster join', 'cluster leave' and 'cluster remove'"));
    }
  }
  if (input.args.size() != 1) {
    return UsageError(absl::StrCat("usage: kvctl cluster ", input.args[0], " (no arguments)"));
  }
  if (input.args[0] == "anti-entropy") return RunClusterAntiEntropy(client, input);
  if (input.flags->Get("ranges").has_value()) {
    return UsageError("--ranges is a flag of 'cluster anti-entropy', not 'cluster status'");
  }
  absl::StatusOr<ClusterStatusResult> status = client.ClusterStatus();
  if (!status.ok()) return status.status();
  return ClusterStatusOutput(*status);
}

}  // namespace kv::kvctl

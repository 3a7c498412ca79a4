#include "client/kvbench_replication_lag.h"

#include <algorithm>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace kv::bench {
namespace {

constexpr char kMethod[] =
    "largest of the nodes' own percentiles (an upper bound: per-node percentiles cannot be "
    "merged), over the recent writes each node coordinated, from commit on the coordinator to "
    "every replica confirmed";

std::string Micros(int64_t micros) { return absl::FormatDuration(absl::Microseconds(micros)); }

}  // namespace

ReplicationLagReport CollectReplicationLag(Client& client) {
  ReplicationLagReport report;
  const std::vector<std::string>& endpoints = client.options().endpoints;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    NodeReplicationLag node;
    node.endpoint = endpoints[i];
    absl::StatusOr<ClusterStatusResult> status = client.ClusterStatusOf(i);
    if (!status.ok()) {
      node.status = status.status();
      report.nodes.push_back(std::move(node));
      continue;
    }
    node.node_id = status->node_id;
    node.p50_us = status->replication_lag_p50_us;
    node.p99_us = status->replication_lag_p99_us;
    node.max_us = status->replication_lag_max_us;
    node.samples = status->replication_lag_samples;
    if (node.samples > 0) {
      report.p50_us = std::max(report.p50_us, node.p50_us);
      report.p99_us = std::max(report.p99_us, node.p99_us);
      report.max_us = std::max(report.max_us, node.max_us);
      report.samples += node.samples;
    }
    report.nodes.push_back(std::move(node));
  }
  return report;
}

void AddReplicationLagJson(const ReplicationLagReport& report, nlohmann::json& json) {
  if (report.samples > 0) {
    json["replication_lag_p50_us"] = report.p50_us;
    json["replication_lag_p99_us"] = report.p99_us;
    json["replication_lag_max_us"] = report.max_us;
    json["replication_lag_samples"] = report.samples;
  }
  json["replication_lag_method"] = kMethod;
  json["replication_lag_nodes"] = nlohmann::json::array();
  for (const NodeReplicationLag& node : report.nodes) {
    nlohmann::json entry = {{"endpoint", node.endpoint}};
    if (!node.status.ok()) {
      entry["error"] = {{"code", absl::StatusCodeToString(node.status.code())},
                        {"message", std::string(node.status.message())}};
    } else {
      entry["node_id"] = node.node_id;
      entry["p50_us"] = node.p50_us;
      entry["p99_us"] = node.p99_us;
      entry["max_us"] = node.max_us;
      entry["samples"] = node.samples;
    }
    json["replication_lag_nodes"].push_back(std::move(entry));
  }
}

std::string ReplicationLagText(const ReplicationLagReport& report) {
  std::string text =
      "replication lag (commit on the coordinator to every replica confirmed, recent writes):\n";
  if (report.samples == 0) {
    absl::StrAppend(&text, "  no samples: no node reported a write confirmed by other replicas\n");
  } else {
    absl::StrAppend(&text, "  all nodes: p50 ", Micros(report.p50_us), "  p99 ",
                    Micros(report.p99_us), "  max ", Micros(report.max_us), "  (", report.samples,
                    " samples; each figure is the largest of the nodes' own, an upper bound)\n");
  }
  for (const NodeReplicationLag& node : report.nodes) {
    if (!node.status.ok()) {
      absl::StrAppend(&text, "  ", node.endpoint,
                      ": could not ask: ", absl::StatusCodeToString(node.status.code()), ": ",
                      node.status.message(), "\n");
    } else {
      absl::StrAppend(&text, "  ", node.endpoint, " (", node.node_id, "): p50 ",
                      Micros(node.p50_us), "  p99 ", Micros(node.p99_us), "  max ",
                      Micros(node.max_us), "  (", node.samples, " samples)\n");
    }
  }
  return text;
}

}  // namespace kv::bench

// kvbench's replication lag report. After the run, every endpoint is asked for its
// Admin.ClusterStatus, which gives the lag percentiles (local commit to every replica confirmed)
// of the recent writes that node coordinated. Percentiles of different nodes cannot be merged
// exactly without their samples, so the cluster figure of each percentile is the largest of the
// nodes' own: an upper bound, reported as such.
#ifndef KV_CLIENT_KVBENCH_REPLICATION_LAG_H_
#define KV_CLIENT_KVBENCH_REPLICATION_LAG_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/kv_client.h"

namespace kv::bench {

struct NodeReplicationLag {
  std::string endpoint;
  absl::Status status;  // not OK: the endpoint could not say (the fields below are unset)
  std::string node_id;
  int64_t p50_us = 0;
  int64_t p99_us = 0;
  int64_t max_us = 0;
  uint32_t samples = 0;
};

struct ReplicationLagReport {
  std::vector<NodeReplicationLag> nodes;  // one per endpoint, in ClientOptions order
  // Over the nodes that have samples: the largest p50, p99 and max, and the sum of samples.
  int64_t p50_us = 0;
  int64_t p99_us = 0;
  int64_t max_us = 0;
  uint64_t samples = 0;
};

// Asks each endpoint of `client` in turn (synchronously; must not run in a client callback).
// Endpoints that fail are reported in `nodes`, never as an error of the whole report.
ReplicationLagReport CollectReplicationLag(Client& client);

// Adds "replication_lag_p50_us", "replication_lag_p99_us", "replication_lag_max_us" and
// "replication_lag_samples" (only when there are samples), "replication_lag_method", and
// "replication_lag_nodes" (per endpoint: the figures, or "error": {"code", "message"}).
void AddReplicationLagJson(const ReplicationLagReport& report, nlohmann::json& json);

std::string ReplicationLagText(const ReplicationLagReport& report);

}  // namespace kv::bench

#endif  // KV_CLIENT_KVBENCH_REPLICATION_LAG_H_

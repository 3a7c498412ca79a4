// `kvctl cluster status`: the members of the cluster, their liveness as gossip sees it, their
// reachability and the replication backlog toward each, N/W/R and the replication lag, as the first
// reachable endpoint sees them.
//
// JSON mirrors Admin.ClusterStatus: {"node_id", "replication_factor", "default_w", "default_r",
// "members": [{"node_id", "address", "zone", "self", "reachable", "state", "outbox_depth",
// "outbox_dropped", "sent_records", "last_error", "last_success_unix_micros", "last_success",
// "liveness", "heartbeat", "incarnation", "last_heard_ms_ago"}],
// "writes_coordinated", "writes_forwarded", "read_repairs", "replication_lag_p50_us",
// "replication_lag_p99_us", "replication_lag_max_us", "replication_lag_samples"}, where a
// member's "state" is "self", "reachable", "unreachable", or "not contacted" (no replication
// attempt to it yet), and "liveness" is the gossip failure detector's "UP", "DOWN" or "UNKNOWN"
// (last_heard_ms_ago -1: never heard).
//
// `kvctl cluster join|leave|remove NODE_ID [--commit [--layout-version=V] [--token=TOKEN]
// [--wait [--wait-timeout=D]]]` (RunCluster as well): the plan, and with --commit the change
// started as an operation, whose id is printed ("operation_id", "node_id", "deduplicated" in
// JSON). With --token, the same commit again on the same node answers the first one's operation
// and starts nothing. --wait then polls the operation until it ends (default 1h), as repair
// --wait does: exit 0 if it SUCCEEDED, 3 if it FAILED or is still running.
#ifndef KV_CLIENT_KVCTL_CLUSTER_H_
#define KV_CLIENT_KVCTL_CLUSTER_H_

#include "absl/status/statusor.h"
#include "client/kv_client.h"
#include "client/kvctl_commands.h"

namespace kv::kvctl {

// `cluster SUBCOMMAND`: "status", or "anti-entropy" (client/kvctl_admin.h); anything else is a
// usage error.
absl::StatusOr<CommandOutput> RunCluster(Client& client, const CommandInput& input);

}  // namespace kv::kvctl

#endif  // KV_CLIENT_KVCTL_CLUSTER_H_

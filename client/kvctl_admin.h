// kvctl's commands for long admin operations and anti-entropy:
//
//   repair [--peer=ID] [--token=TOKEN] [--wait [--wait-timeout=D]]
//       starts a forced anti-entropy exchange with every peer (or one) on the first reachable
//       endpoint and prints the operation id at once. With --token, running it again with the
//       same token and peer on the same node answers the same operation ("deduplicated") and
//       starts nothing; the token with another --peer is refused (exit 2). --wait polls the
//       operation (backoff 100ms doubling to 1s) until it ends, or --wait-timeout passes (default
//       10m): exit 0 if it SUCCEEDED, 3 if it FAILED or is still RUNNING at the timeout.
//   operation get ID     state and progress of an operation (exit 0 whatever its state; 1 for
//                        an unknown or expired id or one of another node; 2 for a malformed id)
//   operation list       the operations the node keeps, newest first
//   cluster anti-entropy [--ranges]
//       Merkle anti-entropy with each peer of the answering node; --ranges adds, per peer, the
//       top-level tree ranges (1/256 of the key-hash space each) that ever differed.
//
// JSON: an operation is {"operation_id", "node_id", "kind", "description", "state",
// "error": {"code", "message"} (FAILED only), "start_unix_micros", "start", "end_unix_micros",
// "end", "progress": {"done", "total", "unit", "message"}, "counters": {...}}; repair prints
// {"operation_id", "node_id", "deduplicated"} and with --wait adds the final state as "operation";
// operation list prints {"operations": [...]}; cluster anti-entropy mirrors
// Admin.AntiEntropyStatus.
#ifndef KV_CLIENT_KVCTL_ADMIN_H_
#define KV_CLIENT_KVCTL_ADMIN_H_

#include "absl/status/statusor.h"
#include "client/kv_client.h"
#include "client/kvctl_commands.h"

namespace kv::kvctl {

absl::StatusOr<CommandOutput> RunRepair(Client& client, const CommandInput& input);
absl::StatusOr<CommandOutput> RunOperation(Client& client, const CommandInput& input);
// `cluster anti-entropy` (dispatched by RunCluster).
absl::StatusOr<CommandOutput> RunClusterAntiEntropy(Client& client, const CommandInput& input);

}  // namespace kv::kvctl

#endif  // KV_CLIENT_KVCTL_ADMIN_H_

// kvctl's commands for long admin operations and anti-entropy:
//
//   repair [--peer=ID] [--token=TOKEN] [--wait [--wait-timeout=D]]
//       starts a forced anti-entropy exchange with every peer (or one) on the first reachable
//       endpoint and prints the operation id at once. With --token, running it again with the
//       same token and peer on the same node answers the same operation ("deduplicated") and
//       starts nothing; the token with another --peer is refused (exit 2). --wait polls the
//       operation (backoff 100ms doubling to 1s) until it ends, or --wait-timeout passes (default
//       10m): exit 0 if it SUCCEEDED, 3 if it FAILED or is still RUNNING at the timeout.
//   operation get ID     state and progress of an operation, asked of the endpoints until its
//                        node answers (exit 0 whatever its state; 1 for an unknown or expired
//                        id, or one of a node no endpoint is while every endpoint answers; 3
//                        when an endpoint that may be its node does not answer; 2 for a
//                        malformed id)
//   operation cancel ID  cancels a running repair (prints it, FAILED/CANCELLED, as
//                        {"operation": {...}}; exit 0, also for a repair cancelled before); a
//                        membership change or an operation that ended otherwise: exit 3
//                        (FAILED_PRECONDITION); ids as operation get
//   operation wait ID [--wait-timeout=D]
//                        polls it as repair --wait does (default 10m): exit 0 if it SUCCEEDED,
//                        3 if it FAILED or is still RUNNING, or if its node no longer keeps it
//                        (expired) while it waits; 1, 2 or 3 for ids as operation get
//   operation list       the operations the node keeps, newest first
//   cluster anti-entropy [--ranges]
//       Merkle anti-entropy with each peer of the answering node; --ranges adds, per peer, the
//       top-level tree ranges (1/256 of the key-hash space each) that ever differed.
//
// JSON: an operation is {"operation_id", "node_id", "kind", "description", "state",
// "error": {"code", "message"} (FAILED only), "start_unix_micros", "start", "end_unix_micros",
// "end", "progress": {"done", "total", "unit", "message"}, "counters": {...}}; repair prints
// {"operation_id", "node_id", "deduplicated"} and with --wait adds the final state as "operation"
// (so do cluster join|leave|remove --commit --wait; operation wait prints {"operation_id",
// "node_id", "operation"});
// operation list prints {"operations": [...]}; cluster anti-entropy mirrors
// Admin.AntiEntropyStatus.
#ifndef KV_CLIENT_KVCTL_ADMIN_H_
#define KV_CLIENT_KVCTL_ADMIN_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "client/kvctl_commands.h"

namespace kv::kvctl {

absl::StatusOr<CommandOutput> RunRepair(Client& client, const CommandInput& input);
// Polls operation `id` (backoff 100ms doubling to 1s; polls that fail in a way that can pass
// are retried) until it ends or `timeout` passes, then appends its final state to `out` (text,
// and json "operation"); `out->status` says how it ended when not SUCCEEDED:
// DEADLINE_EXCEEDED still running, the operation's error if it FAILED, UNAVAILABLE if it could
// not be read (for a `deduplicated` start whose operation expired, saying so) — never a code
// that reads as a usage error or a missing key. `what` names the job in the messages ("repair",
// "join", ...).
void WaitAndReportOperation(Client& client, absl::string_view what, const std::string& id,
                            absl::Duration timeout, bool deduplicated, CommandOutput* out);
absl::StatusOr<CommandOutput> RunOperation(Client& client, const CommandInput& input);
// `cluster anti-entropy` (dispatched by RunCluster).
absl::StatusOr<CommandOutput> RunClusterAntiEntropy(Client& client, const CommandInput& input);

}  // namespace kv::kvctl

#endif  // KV_CLIENT_KVCTL_ADMIN_H_

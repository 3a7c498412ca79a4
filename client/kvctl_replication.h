// kvctl's view of where writes have spread: `describe-write WRITE_ID`, and the `--wait` of put
// and delete, which polls DescribeWrite until every replica holds the write.
//
// A write's state renders as JSON
//   {"state": "PENDING"|"REPLICATED"|"UNKNOWN", "key"|"key_base64", "dot", "applied_count",
//    "replica_count", "replicas": [{"node_id", "state": "applied"|"pending"|"unreachable",
//    "applied", "reachable", "error"?}]}
// and as text, one line for the state and one per replica.
#ifndef KV_CLIENT_KVCTL_REPLICATION_H_
#define KV_CLIENT_KVCTL_REPLICATION_H_

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli_flags.h"
#include "client/kv_client.h"
#include "client/kvctl_commands.h"

namespace kv::kvctl {

// How long --wait waits when --wait-timeout is not given.
inline constexpr absl::Duration kDefaultWaitTimeout = absl::Seconds(30);

// The wait that --wait and --wait-timeout ask for: nullopt without --wait. A usage error for
// --wait-timeout without --wait or with a malformed or zero duration.
absl::StatusOr<std::optional<absl::Duration>> WaitTimeoutFrom(const cli::ParsedArgs& flags);

// What waiting for a write to reach every replica found.
struct WaitOutcome {
  std::optional<DescribeWriteResult> last;  // the last state the store reported, if any
  // OK once REPLICATED. DEADLINE_EXCEEDED when the timeout passed while the write was still
  // pending; when no poll ever answered, the last poll's error. A non-retryable error of a
  // poll (e.g. UNIMPLEMENTED from a node without DescribeWrite) ends the wait at once.
  absl::Status status;
  absl::Duration waited;
};

// Polls DescribeWrite(write_id) with capped exponential backoff (10 ms doubling to 1 s) until the
// write is REPLICATED or `timeout` has passed. Each poll is bounded by the time left and by the
// client's call deadline; polls failing with a retryable code are retried until the timeout.
WaitOutcome WaitUntilReplicated(Client& client, const std::string& write_id,
                                absl::Duration timeout);

// Waits for the write just made (put/delete --wait) and adds the outcome to `out`: the final
// write state under "write_state" and "waited_ms", a summary in the text, and out.status set
// when the write did not reach every replica in time.
void WaitAndReport(Client& client, const std::string& write_id, absl::Duration timeout,
                   CommandOutput& out);

nlohmann::json WriteStateToJson(const DescribeWriteResult& write);
// "REPLICATED, 3 of 3 replicas applied\n", then "  n1  applied\n" per replica.
std::string WriteStateText(const DescribeWriteResult& write);

absl::StatusOr<CommandOutput> RunDescribeWrite(Client& client, const CommandInput& input);

}  // namespace kv::kvctl

#endif  // KV_CLIENT_KVCTL_REPLICATION_H_

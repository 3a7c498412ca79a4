// Results of the client library's admin calls for long operations and anti-entropy
// (Client::StartRepair, GetOperation, ListOperations, AntiEntropyStatus in client/kv_client.h).
// They mirror kv.v1.Admin's Operation and AntiEntropyStatusResponse (proto/kv.proto).
#ifndef KV_CLIENT_KV_ADMIN_H_
#define KV_CLIENT_KV_ADMIN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kv {

// A long admin job running on one node. Ids are "NODE:INCARNATION-SEQUENCE": only that node knows
// the operation (also after it restarts: it keeps them in its data directory).
struct OperationStatus {
  enum class State { kUnknown, kRunning, kSucceeded, kFailed };
  std::string operation_id;
  std::string node_id;  // the node that runs it
  std::string kind;     // "repair"
  std::string description;
  State state = State::kUnknown;
  int error_code = 0;  // gRPC status code when kFailed
  std::string error_message;
  int64_t start_unix_micros = 0;
  int64_t end_unix_micros = 0;  // 0 while running
  uint64_t progress_done = 0;
  uint64_t progress_total = 0;  // 0: unknown
  std::string progress_unit;    // e.g. "peers"
  std::string progress_message;
  std::map<std::string, uint64_t> counters;  // repair: exchanges, keys_different, keys_repaired...
};

// "RUNNING", "SUCCEEDED", "FAILED" or "UNKNOWN".
const char* OperationStateName(OperationStatus::State state);

struct RepairStarted {
  std::string operation_id;
  std::string node_id;        // the node that runs it: ask that node for the operation
  bool deduplicated = false;  // the call's token had started this operation already
  // A repair of the same peers was still running: this is its id, and nothing new started.
  bool already_running = false;
};

// What Client::ChangeMembership does: add a node (kJoin), remove a member (kLeave), or remove a
// member that is down for good, whose keys the other owners hand off in its place (kRemoveDown).
enum class MembershipAction { kJoin, kLeave, kRemoveDown };

// A staged membership change (Client::ChangeMembership): the plan, and with commit the operation.
struct MembershipPlan {
  struct Move {
    std::string from_node_id;
    std::string to_node_id;
    double fraction = 0;  // of all (key, replica) slots
  };
  struct Share {
    std::string node_id;
    double primary_before = 0, primary_after = 0;  // fraction of keys it is first replica of
    double replica_before = 0, replica_after = 0;  // fraction of keys it holds a replica of
  };
  uint64_t layout_version = 0;
  std::vector<std::string> members_before;
  std::vector<std::string> members_after;
  double moved_fraction = 0;  // of all stored replica data
  std::vector<Move> moves;
  std::vector<Share> shares;
  std::string operation_id;   // with commit
  std::string node_id;        // the node that runs the operation
  bool deduplicated = false;  // with commit: the call's token had committed this change already
};

// One top-level range of a peer's Merkle tree (segments 256*index..256*index+255: 1/256 of the
// key-hash space).
struct AntiEntropyRangeStatus {
  uint32_t index = 0;
  int64_t last_difference_unix_micros = 0;
  uint64_t last_keys_different = 0;  // found by the last completed exchange (0: in sync)
  uint64_t keys_different_total = 0;
  uint64_t keys_repaired = 0;
};

struct PeerAntiEntropyStatus {
  std::string peer_id;
  uint64_t exchanges = 0;
  uint64_t failed_exchanges = 0;
  int64_t last_exchange_unix_micros = 0;  // 0: never
  int64_t last_exchange_duration_us = 0;
  int64_t last_attempt_unix_micros = 0;
  std::string last_error;
  bool in_sync = false;
  uint64_t last_segments_different = 0;
  uint64_t last_keys_different = 0;
  uint64_t last_keys_repaired = 0;
  uint64_t keys_repaired = 0;
  std::vector<AntiEntropyRangeStatus> ranges;  // only when asked for: ranges that ever differed
};

struct AntiEntropyStatusResult {
  std::string node_id;
  bool merkle_ready = false;
  int64_t interval_us = 0;  // 0: periodic exchanges are off
  double keys_per_second = 0;
  std::string running_exchange_peer;
  std::vector<PeerAntiEntropyStatus> peers;
};

}  // namespace kv

#endif  // KV_CLIENT_KV_ADMIN_H_

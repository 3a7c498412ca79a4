// History: what the simulated clients did and saw, the input of the end-of-run checkers.
//
// One WriteOp per logical Put or Delete (all its attempts share one idempotency token and one
// entry), one ReadOp per logical Get. Times are simulated. Plain data; single-threaded.
#ifndef KV_TESTS_SIM_SIM_HISTORY_H_
#define KV_TESTS_SIM_SIM_HISTORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "storage/sibling_set.h"
#include "storage/version_vector.h"

namespace kv::sim {

enum class Outcome {
  kPending,   // still being tried
  kOk,        // acknowledged (writes) or answered (reads)
  kNotFound,  // reads only: NOT_FOUND, or only tombstones
  kGaveUp,    // retryable errors until the client stopped trying: outcome unknown
  kFailed,    // a non-retryable error (never expected from this workload)
};

struct WriteOp {
  uint64_t id = 0;
  int client = 0;
  std::string key;
  bool is_delete = false;
  std::string value;
  std::string token;
  bool has_context = false;
  CausalContext context;  // what the write was issued with (empty when !has_context)
  // The dots of the siblings (tombstones included) that the Get whose context the write carries
  // returned: the versions its client saw, which the write may replace.
  std::vector<Dot> seen;
  std::string context_bytes;  // the same, as sent on every attempt
  absl::Time issued;
  int attempts = 0;
  int node = -1;  // the node of the latest attempt (the one that answered, once kOk)
  Outcome outcome = Outcome::kPending;
  absl::Status last_error;
  // Set when acknowledged.
  absl::Time acked;
  Dot dot;
  bool deduplicated = false;
  // The causal context returned with the acknowledgement: it covers every version the write
  // replaced (for a Delete: every version the tombstone covers).
  CausalContext reply_context;
};

struct ReadOp {
  uint64_t id = 0;
  int client = 0;
  std::string key;
  absl::Time issued;
  absl::Time completed;
  int attempts = 0;
  int node = -1;  // the node of the latest attempt
  Outcome outcome = Outcome::kPending;
  absl::Status last_error;
  SiblingSet record;  // the merged record returned (tombstones included), when kOk/kNotFound
};

struct History {
  std::vector<WriteOp> writes;
  std::vector<ReadOp> reads;
};

const char* OutcomeName(Outcome outcome);

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_HISTORY_H_

// The closed loop of kvbench: `concurrency` independent chains, each with exactly one operation
// outstanding; when an operation completes, its chain records it and starts the next one, until
// the phase ends. Operations come from an OpSource (the workload, the preload or Ping).
//
// A phase lasts `warmup + duration`. Only operations that complete inside the measured window
// [start + warmup, start + warmup + duration) are counted; operations still outstanding at the
// end are waited for (each is bounded by its call deadline) but not counted. A phase with an
// infinite duration (the preload) runs until every chain's source is exhausted.
//
// With a rate, chains that completed wait for the next slot (start + n / rate) before starting
// again, so the load is capped at `rate` operations per second (for a latency or replication lag
// figure at a given fraction of the maximum load); latency is measured from the actual start.
//
// Progress goes to stderr once per second. Thread-safe as used: RunClosedLoop blocks its caller
// while completions arrive on the client library's threads.
#ifndef KV_CLIENT_KVBENCH_LOOP_H_
#define KV_CLIENT_KVBENCH_LOOP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/latency_histogram.h"

namespace kv::bench {

enum class OpKind { kRead, kWrite, kDelete, kPing };

struct OpResult {
  OpKind kind = OpKind::kRead;
  absl::StatusCode code = absl::StatusCode::kOk;
};

// Where a chain's operations come from.
class OpSource {
 public:
  virtual ~OpSource() = default;
  // Starts the next operation of chain `chain` (0 <= chain < concurrency) and arranges for
  // `done` to run exactly once when it completes, on another thread. Returns false, without
  // calling `done`, when the source has nothing more for this chain. Calls for one chain never
  // overlap, so a source may keep unsynchronized per-chain state.
  virtual bool Start(int chain, std::function<void(OpResult)> done) = 0;
};

// What one phase measured.
struct PhaseStats {
  LatencyHistogram latency_ns;  // successful operations (not-found reads included)
  uint64_t ops = 0;             // successful operations (not-found reads included)
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t deletes = 0;
  uint64_t pings = 0;
  uint64_t reads_not_found = 0;
  std::map<std::string, uint64_t> errors;  // status code name -> count; failed ops only
  double seconds = 0;                      // length of the measured window

  uint64_t error_count() const;
  // Adds `other`'s operations, errors, latencies and measured time to these.
  void MergeFrom(const PhaseStats& other);
  double ops_per_sec() const { return seconds > 0 ? static_cast<double>(ops) / seconds : 0; }
};

struct LoopOptions {
  std::string label;  // names the phase in progress lines
  int concurrency = 64;
  absl::Duration warmup = absl::ZeroDuration();
  absl::Duration duration = absl::InfiniteDuration();
  uint64_t expected_ops = 0;  // when known (preload), progress shows "done/expected"
  bool progress = true;
  // At most this many operations started per second (0: as many as the chains allow). Ignored
  // for a phase of infinite duration.
  double rate = 0;
};

PhaseStats RunClosedLoop(OpSource& source, const LoopOptions& options);

}  // namespace kv::bench

#endif  // KV_CLIENT_KVBENCH_LOOP_H_

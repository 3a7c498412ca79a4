// Workload: seeded simulated clients driving the cluster through the simulated network, and
// recording everything they do and see in a History.
//
// Each client is an endpoint of the network attached to one node. It runs one logical operation
// at a time, separated by a random think time: Puts of new keys, blind Puts and Deletes (no
// context) of shared keys, Gets of shared keys and of new keys (through any node), and
// read-modify-writes (a Get, then a Put or Delete with the Get's context). Like the client
// library (client/retry_policy.h), it gives every logical mutation one idempotency token, retries
// UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED / ABORTED with the same token after a
// capped exponential backoff with full jitter, fails over to the next node on UNAVAILABLE and
// sometimes retries through another node anyway; it gives up after a bounded number of attempts
// (the outcome is then unknown). Single-threaded.
#ifndef KV_TESTS_SIM_SIM_WORKLOAD_H_
#define KV_TESTS_SIM_SIM_WORKLOAD_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_history.h"
#include "tests/sim/sim_loop.h"
#include "tests/sim/sim_network.h"

namespace kv::sim {

struct WorkloadOptions {
  int num_clients = 4;
  int shared_keys = 12;
  absl::Duration think_min = absl::Milliseconds(1);
  absl::Duration think_max = absl::Milliseconds(25);
  int max_attempts = 8;
  absl::Duration backoff_base = absl::Milliseconds(10);
  absl::Duration backoff_cap = absl::Milliseconds(800);
  absl::Duration call_timeout = absl::Milliseconds(1500);
  double retry_elsewhere = 0.25;  // a retry goes through another node although this one answered
};

class Workload {
 public:
  // Clients are endpoints first_endpoint.. of `network`.
  Workload(SimLoop* loop, SimNetwork* network, SimCluster* cluster, int first_endpoint,
           WorkloadOptions options, History* history);

  void Start();
  // No new operations; those in progress finish (or give up).
  void Stop() { stopped_ = true; }
  bool Idle() const;

 private:
  struct Client {
    int endpoint = 0;
    int node = 0;  // where the next operation goes
    bool busy = false;
    uint64_t ops = 0;
    std::vector<std::string> new_keys;  // created by this client, acknowledged
  };
  using ReadDone = std::function<void(const ReadOp& read)>;

  void Step(int c);
  void Next(int c);
  std::string SharedKey();
  std::string Token(int c);

  void StartWrite(int c, std::string key, bool is_delete, const ReadOp* seen);
  void AttemptWrite(int c, size_t w);
  void OnWriteDone(int c, size_t w, int node, absl::StatusOr<WriteReply> reply);
  void StartRead(int c, std::string key, int node, ReadDone then);
  void AttemptRead(int c, size_t r, ReadDone then);
  void OnReadDone(int c, size_t r, int node, absl::StatusOr<SiblingSet> record, ReadDone then);
  // Picks the node of the next attempt after `error` and returns the backoff before it, or
  // InfiniteDuration() if the operation should give up.
  absl::Duration PlanRetry(int c, int attempts, int* node, const absl::Status& error);

  SimLoop* const loop_;
  SimNetwork* const network_;
  SimCluster* const cluster_;
  const WorkloadOptions options_;
  History* const history_;
  std::vector<Client> clients_;
  bool stopped_ = false;
};

// UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED.
bool IsRetryable(const absl::Status& status);

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_WORKLOAD_H_

// SimNetwork: the simulated network between simulated nodes and clients (endpoints numbered
// 0..n-1), and SimPeerTransport, the node core's PeerTransport over it.
//
// A call is a request message and, if the request is delivered and served, a reply message.
// Each message independently may be lost, duplicated, or delayed (uniformly between a minimum
// and a maximum, sometimes much longer), which also reorders messages. Endpoints separated by a
// partition cannot exchange messages (checked when sent and when delivered). A call to an
// endpoint that is down or unreachable either fails fast with UNAVAILABLE (a refused
// connection) or never hears back. A call that has no reply by its deadline fails with
// DEADLINE_EXCEEDED, although its request may have been served: the caller cannot tell.
//
// Every call's `done` runs exactly once (first reply, failure or deadline wins; later replies are
// dropped), always from an event of the loop, never inline, and never once the caller's
// incarnation has died (SetDown drops its outstanding calls unrun).
//
// Single-threaded, like the SimLoop that drives it.
#ifndef KV_TESTS_SIM_SIM_NETWORK_H_
#define KV_TESTS_SIM_SIM_NETWORK_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "node/peer_transport.h"
#include "tests/sim/sim_loop.h"

namespace kv::sim {

struct NetworkFaults {
  double request_loss = 0;
  double response_loss = 0;
  double duplicate = 0;
  absl::Duration min_delay = absl::Microseconds(100);
  absl::Duration max_delay = absl::Milliseconds(2);
  double slow = 0;  // probability that a message takes up to slow_delay instead
  absl::Duration slow_delay = absl::Milliseconds(200);
  // Probability that a call to a down or unreachable endpoint is refused at once (UNAVAILABLE)
  // rather than left to reach its deadline.
  double refuse = 0.5;
};

struct NetworkStats {
  uint64_t sent = 0;
  uint64_t delivered = 0;
  uint64_t lost = 0;
  uint64_t duplicated = 0;
  uint64_t refused = 0;
  uint64_t deadlines = 0;
};

class SimNetwork {
 public:
  struct CallSpec {
    int from = 0;
    int to = 0;
    std::string kind;  // for the trace: "merge", "read", "forward", "client-put", ...
    std::string key;   // for the trace
    absl::Duration timeout;
  };
  // Serves a delivered request: answers through `reply` (at most once per delivery), or never.
  template <typename R>
  using Serve = std::function<void(std::function<void(R)> reply)>;

  SimNetwork(SimLoop* loop, int num_endpoints);

  void set_faults(const NetworkFaults& faults) { faults_ = faults; }
  const NetworkFaults& faults() const { return faults_; }
  const NetworkStats& stats() const { return stats_; }

  // An endpoint is up with the guard of its current incarnation (null: never dies).
  void SetUp(int endpoint, Guard guard);
  // Takes an endpoint down and drops the calls it was waiting on, unrun.
  void SetDown(int endpoint);
  bool IsUp(int endpoint) const;

  void Partition(int a, int b);
  void Heal(int a, int b);
  void HealAll() { partitions_.clear(); }
  bool Reachable(int a, int b) const;
  bool partitioned() const { return !partitions_.empty(); }

  // Calls `serve` at spec.to; `done` gets its reply or the failure (R is constructible from an
  // error absl::Status: absl::Status or absl::StatusOr<T>).
  template <typename R>
  void Call(CallSpec spec, Serve<R> serve, std::function<void(R)> done);

  // Nothing is on the wire and no call waits for its answer.
  bool Idle() const { return in_flight_ == 0 && pending_.empty(); }

 private:
  struct PendingCall {
    int from;
    Guard guard;
    std::function<void(absl::Status)> fail;
  };

  // Registers call `id` with its deadline; false if the request is not sent at all (the target
  // is down or unreachable: the call is refused or left to time out).
  bool StartCall(uint64_t id, const CallSpec& spec, std::function<void(absl::Status)> fail);
  // Sends one message; `deliver` runs at `to` once, twice or never.
  void Send(int from, int to, const std::string& kind, const std::string& key, bool reply,
            std::function<void()> deliver);
  // Ends call `id` with `finish` if it is still waiting and its caller lives.
  void Finish(uint64_t id, const std::function<void()>& finish);
  void Fail(uint64_t id, absl::Status status);

  SimLoop* const loop_;
  NetworkFaults faults_;
  NetworkStats stats_;
  struct Endpoint {
    bool up = false;
    Guard guard;  // of the incarnation that is up; null for endpoints that never die
  };
  std::vector<Endpoint> endpoints_;
  std::set<std::pair<int, int>> partitions_;  // (min, max)
  std::map<uint64_t, PendingCall> pending_;
  uint64_t next_call_ = 1;
  uint64_t in_flight_ = 0;
};

template <typename R>
void SimNetwork::Call(CallSpec spec, Serve<R> serve, std::function<void(R)> done) {
  auto shared_done = std::make_shared<std::function<void(R)>>(std::move(done));
  const uint64_t id = next_call_++;
  if (!StartCall(id, spec, [shared_done](absl::Status s) { (*shared_done)(R(std::move(s))); })) {
    return;
  }
  Send(spec.from, spec.to, spec.kind, spec.key, /*reply=*/false,
       [this, id, spec, serve = std::move(serve), shared_done] {
         serve([this, id, spec, shared_done](R response) {
           Send(spec.to, spec.from, spec.kind + "-reply", spec.key, /*reply=*/true,
                [this, id, shared_done, response = std::move(response)] {
                  Finish(id, [&] { (*shared_done)(response); });
                });
         });
       });
}

// The requests a simulated node serves (implemented by SimCluster over the node's real core).
class SimReplicaServer {
 public:
  virtual ~SimReplicaServer() = default;
  // `from`: the node that sent them.
  virtual void ServeMergeRecords(int from, int node, const std::vector<EncodedRecord>& records,
                                 std::function<void(absl::Status)> reply) = 0;
  // `for_quorum`: PeerTransport::ReadRecordForQuorum.
  virtual void ServeReadRecord(int node, const std::string& key, bool for_quorum,
                               std::function<void(absl::StatusOr<QuorumRecord>)> reply) = 0;
  virtual void ServeForwardWrite(int node, const WriteCommand& command, QuorumSpec w,
                                 std::function<void(absl::StatusOr<WriteReply>)> reply) = 0;
  virtual void ServeListKeys(int node, const std::string& prefix, const std::string& page_token,
                             uint32_t limit,
                             std::function<void(absl::StatusOr<ListPage>)> reply) = 0;
  // Anti-entropy and tombstone purge; `requester` is the calling node's endpoint.
  virtual void ServeMerkleNodes(
      int node, int requester, MerkleLevel level, const std::vector<uint32_t>& indexes,
      std::function<void(absl::StatusOr<std::vector<uint64_t>>)> reply) = 0;
  virtual void ServeSegmentKeys(int node, int requester, const std::vector<uint32_t>& segments,
                                size_t max_bytes,
                                std::function<void(absl::StatusOr<SegmentKeyList>)> reply) = 0;
  virtual void ServePurgeRecord(int node, const std::string& key, const std::string& expected,
                                uint64_t layout_version,
                                std::function<void(absl::Status)> reply) = 0;
  // Handoff phase 2 (node/handoff_plan.h KeysNotMatching).
  virtual void ServeCompareDigests(
      int node, const std::vector<KeyDigest>& digests,
      std::function<void(absl::StatusOr<std::vector<std::string>>)> reply) = 0;
};

struct TransportTimeouts {
  absl::Duration merge = absl::Milliseconds(250);
  absl::Duration read = absl::Milliseconds(250);
  absl::Duration forward = absl::Seconds(1);
};

// One node incarnation's PeerTransport.
class SimPeerTransport : public PeerTransport {
 public:
  // `endpoints` maps member ids to endpoint numbers.
  SimPeerTransport(SimNetwork* network, SimReplicaServer* server,
                   const std::map<std::string, int>* endpoints, int self,
                   TransportTimeouts timeouts);

  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override;
  void ReadRecord(const Member& peer, std::string key,
                  std::function<void(absl::StatusOr<std::string>)> done) override;
  void ReadRecordForQuorum(const Member& peer, std::string key,
                           std::function<void(absl::StatusOr<QuorumRecord>)> done) override;
  void ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                    std::function<void(absl::StatusOr<WriteReply>)> done) override;
  void ListKeys(const Member& peer, std::string prefix, std::string page_token, uint32_t limit,
                std::function<void(absl::StatusOr<ListPage>)> done) override;
  void MerkleNodes(const Member& peer, MerkleLevel level, std::vector<uint32_t> indexes,
                   std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done) override;
  void SegmentKeys(const Member& peer, std::vector<uint32_t> segments, size_t max_bytes,
                   std::function<void(absl::StatusOr<SegmentKeyList>)> done) override;
  void PurgeRecord(const Member& peer, std::string key, std::string expected_record,
                   uint64_t layout_version, std::function<void(absl::Status)> done) override;
  void CompareDigests(const Member& peer, std::vector<KeyDigest> digests,
                      std::function<void(absl::StatusOr<std::vector<std::string>>)> done) override;

 private:
  // ReadRecord and ReadRecordForQuorum.
  void Read(const Member& peer, std::string key, bool for_quorum,
            std::function<void(absl::StatusOr<QuorumRecord>)> done);
  SimNetwork::CallSpec Spec(const Member& peer, const char* kind, std::string key,
                            absl::Duration timeout) const;

  SimNetwork* const network_;
  SimReplicaServer* const server_;
  const std::map<std::string, int>* const endpoints_;
  const int self_;
  const TransportTimeouts timeouts_;
};

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_NETWORK_H_

// NodeMetrics: the node's metrics in the Prometheus text format, served over HTTP at
// http://<metrics_listen>/metrics (kvnode --metrics_listen; off when empty).
//
// Two kinds of metrics:
//   - Requests, counted as they happen by a gRPC server interceptor (InterceptorFactory, added to
//     the server builder): kv_grpc_requests_total{method,code} and the latency histogram
//     kv_grpc_request_duration_seconds{method}, from the call's arrival to its status being sent.
//     Every service of the server is counted (KV, Admin, Replica, health, reflection). The
//     items of PutBatch answers are counted too, by kind and each item's code:
//     kv_put_batch_items_total{op,code}; and those of GetBatch answers by code:
//     kv_get_batch_items_total{code}.
//   - State, read at each scrape from a StatusSource (the same snapshot `kvctl cluster status`
//     shows): keys, uptime, coordinated and forwarded writes, read repairs, the recent
//     replication lag, and per member its liveness, outbox depth and drops, replicated records and
//     anti-entropy progress. Until SetStatusSource is called (or after it is cleared) a scrape
//     shows the request metrics only.
//
// The names, their types and labels are listed in the README ("Metrics"). Counters restart at 0
// when the node restarts (Prometheus handles that as a counter reset).
//
// Thread-safe. The HTTP server runs its own threads; a scrape calls the status source on one of
// them, so the source must be thread-safe. Destroying NodeMetrics stops the HTTP server and waits
// for a scrape under way; interceptors of calls still running keep the request metrics (and the
// registry they live in) alive.
#ifndef KV_NODE_METRICS_H_
#define KV_NODE_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/server_interceptor.h"
#include "kv.pb.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace kv {

class StatusCollectable;

class NodeMetrics {
 public:
  // Fills a snapshot of the node's state; called at each scrape.
  using StatusSource =
      std::function<void(v1::ClusterStatusResponse* status, v1::NodeStatusResponse* node)>;

  // Serves the metrics on `listen` (IPV4:PORT, as --metrics_listen; port 0 picks a free one, see
  // port()). UNAVAILABLE, naming the address, when it cannot be bound (in use, or not an address
  // of this machine).
  static absl::StatusOr<std::unique_ptr<NodeMetrics>> Start(const std::string& listen);
  ~NodeMetrics();
  NodeMetrics(const NodeMetrics&) = delete;
  NodeMetrics& operator=(const NodeMetrics&) = delete;

  // The port the HTTP server listens on.
  int port() const { return port_; }

  // An interceptor factory that counts every call of the server it is added to, by method: the
  // methods of `services` (full names such as "kv.v1.KV", found in the generated descriptor
  // pool), gRPC's health and reflection services, and "unknown" for any other name a client
  // calls. Call once.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory(
      const std::vector<std::string>& services);

  // Sets (or, with an empty function, clears) what scrapes read the node's state from. Clearing
  // waits for a scrape that is reading it.
  void SetStatusSource(StatusSource source);

 private:
  NodeMetrics();

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<StatusCollectable> status_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace kv

#endif  // KV_NODE_METRICS_H_

#include "node/metrics.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/interceptor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

// gRPC status codes are 0 (OK) to 16 (UNAUTHENTICATED).
constexpr int kStatusCodes = 17;

// PutBatch's and GetBatch's answers are counted item by item too.
constexpr char kPutBatchMethod[] = "/kv.v1.KV/PutBatch";
constexpr char kGetBatchMethod[] = "/kv.v1.KV/GetBatch";
// The client operations kv_operations_total counts, by index; the single calls of each.
constexpr int kNumOps = 3;
constexpr int kPutOp = 0;  // also the index of PutBatch's counters by kind, with kDeleteOp
constexpr int kDeleteOp = 1;
constexpr int kGetOp = 2;
constexpr const char* kOpNames[kNumOps] = {"put", "delete", "get"};
constexpr const char* kOpMethods[kNumOps] = {"/kv.v1.KV/Put", "/kv.v1.KV/Delete", "/kv.v1.KV/Get"};

const char* const kCodeNames[kStatusCodes] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

}  // namespace

// The request counters and latency histograms, by method (and status code). The methods are
// fixed at construction, so clients cannot add labels (a call of any other method counts as
// "unknown"); the counter of a (method, code) pair is created when first needed.
class RequestMetrics {
 public:
  struct Method {
    std::string name;
    prometheus::Histogram* duration = nullptr;
    std::array<std::atomic<prometheus::Counter*>, kStatusCodes> by_code{};
    bool is_put_batch = false;  // its answers' items are counted too (RecordBatchItems)
    bool is_get_batch = false;  // the same (RecordGetBatchItems)
    int op = -1;                // a single Put, Delete or Get: its index in kOpNames
  };

  RequestMetrics(std::shared_ptr<prometheus::Registry> registry,
                 const std::vector<std::string>& method_names)
      : registry_(std::move(registry)),
        requests_(prometheus::BuildCounter()
                      .Name("kv_grpc_requests_total")
                      .Help("gRPC calls answered, by method and status code.")
                      .Register(*registry_)),
        durations_(prometheus::BuildHistogram()
                       .Name("kv_grpc_request_duration_seconds")
                       .Help("gRPC call latency on this node, from the call's arrival to its "
                             "status being sent, by method.")
                       .Register(*registry_)),
        batch_items_(prometheus::BuildCounter()
                         .Name("kv_put_batch_items_total")
                         .Help("Items of PutBatch calls answered, by kind (put or delete) and "
                               "each item's own status code (a batch refused as a whole counts "
                               "in kv_grpc_requests_total only).")
                         .Register(*registry_)),
        get_batch_items_(prometheus::BuildCounter()
                             .Name("kv_get_batch_items_total")
                             .Help("Items of GetBatch calls answered, by each item's own status "
                                   "code (a batch refused as a whole counts in "
                                   "kv_grpc_requests_total only).")
                             .Register(*registry_)),
        operations_(prometheus::BuildCounter()
                        .Name("kv_operations_total")
                        .Help("Client Puts, Deletes and Gets answered, by operation and each "
                              "one's own status code, whether it came alone or in a PutBatch or "
                              "GetBatch (the items of a batch refused as a whole count with the "
                              "batch's code).")
                        .Register(*registry_)) {
    for (const std::string& name : method_names) Add(name);
    unknown_ = Add("unknown");
  }

  // The metrics of method `name` ("/package.Service/Method"); "unknown" for another name.
  Method* ForMethod(absl::string_view name) const {
    auto found = methods_.find(name);
    return found == methods_.end() ? unknown_ : found->second.get();
  }

  void Record(Method* method, int code, absl::Duration elapsed) {
    code = KnownCode(code);
    CounterIn(method->by_code[code], requests_,
              {{"method", method->name}, {"code", kCodeNames[code]}})
        ->Increment();
    method->duration->Observe(absl::ToDoubleSeconds(elapsed));
    if (method->op >= 0) CountOperations(method->op, code, 1);
  }

  // The items of a PutBatch or GetBatch refused as a whole (no answer of results was sent):
  // each counts as an operation with the batch's code.
  void RecordRefusedBatch(int code, int puts, int deletes, int gets) {
    if (code == 0) return;  // OK is never a refusal
    CountOperations(kPutOp, code, puts);
    CountOperations(kDeleteOp, code, deletes);
    CountOperations(kGetOp, code, gets);
  }

  // Counts the items of a PutBatch answer by kind and code: the first `puts` results are the
  // puts', the rest the deletes' (kv.proto, PutBatchResponse).
  void RecordBatchItems(const v1::PutBatchResponse& response, int puts) {
    for (int i = 0; i < response.results_size(); ++i) {
      const int code = KnownCode(response.results(i).code());
      const int op = i < puts ? kPutOp : kDeleteOp;
      CounterIn(batch_item_counters_[op][code], batch_items_,
                {{"op", kOpNames[op]}, {"code", kCodeNames[code]}})
          ->Increment();
      CountOperations(op, code, 1);
    }
  }

  // Counts the items of a GetBatch answer by code.
  void RecordGetBatchItems(const v1::GetBatchResponse& response) {
    for (const v1::GetBatchResult& result : response.results()) {
      const int code = KnownCode(result.code());
      CounterIn(get_batch_item_counters_[code], get_batch_items_, {{"code", kCodeNames[code]}})
          ->Increment();
      CountOperations(kGetOp, code, 1);
    }
  }

 private:
  // `code` if it is a gRPC status code, else UNKNOWN.
  static int KnownCode(int code) { return code < 0 || code >= kStatusCodes ? 2 : code; }

  void CountOperations(int op, int code, int count) {
    if (count <= 0) return;
    code = KnownCode(code);
    CounterIn(operation_counters_[op][code], operations_,
              {{"op", kOpNames[op]}, {"code", kCodeNames[code]}})
        ->Increment(count);
  }

  // The counter `slot` caches: created in `family` with `labels` when first needed.
  prometheus::Counter* CounterIn(std::atomic<prometheus::Counter*>& slot,
                                 prometheus::Family<prometheus::Counter>& family,
                                 const std::map<std::string, std::string>& labels) {
    prometheus::Counter* counter = slot.load(std::memory_order_acquire);
    if (counter != nullptr) return counter;
    absl::MutexLock lock(&mu_);
    counter = slot.load(std::memory_order_acquire);
    if (counter == nullptr) {
      counter = &family.Add(labels);
      slot.store(counter, std::memory_order_release);
    }
    return counter;
  }

  Method* Add(const std::string& name) {
    auto [it, inserted] = methods_.try_emplace(name);
    if (inserted) {
      it->second = std::make_unique<Method>();
      it->second->name = name;
      it->second->is_put_batch = name == kPutBatchMethod;
      it->second->is_get_batch = name == kGetBatchMethod;
      for (int op = 0; op < kNumOps; ++op) {
        if (name == kOpMethods[op]) it->second->op = op;
      }
      it->second->duration = &durations_.Add(
          {{"method", name}}, prometheus::Histogram::BucketBoundaries{
                                  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1, 0.25, 0.5, 1, 2.5, 5, 10});
    }
    return it->second.get();
  }

  // The families below belong to the registry: kept alive while an interceptor may record.
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& durations_;
  prometheus::Family<prometheus::Counter>& batch_items_;
  prometheus::Family<prometheus::Counter>& get_batch_items_;
  prometheus::Family<prometheus::Counter>& operations_;
  // By operation (kPutOp or kDeleteOp) and code.
  std::array<std::array<std::atomic<prometheus::Counter*>, kStatusCodes>, 2> batch_item_counters_{};
  std::array<std::atomic<prometheus::Counter*>, kStatusCodes> get_batch_item_counters_{};
  // By operation (kOpNames) and code.
  std::array<std::array<std::atomic<prometheus::Counter*>, kStatusCodes>, kNumOps>
      operation_counters_{};
  // Filled by the constructor, then only read.
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_;
  Method* unknown_ = nullptr;
  absl::Mutex mu_;  // serializes the creation of counters
};

namespace {

// One call: its arrival time, and its status when it is sent.
class CountingInterceptor : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(std::shared_ptr<RequestMetrics> metrics, RequestMetrics::Method* method)
      : metrics_(std::move(metrics)), method_(method), start_(SteadyNow()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if ((method_->is_put_batch || method_->is_get_batch) &&
        methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // The request, parsed: how many of the answer's results are puts' (the rest are
      // deletes'), and how many items a refusal of the whole batch fails.
      if (const void* message = methods->GetRecvMessage(); message != nullptr) {
        if (method_->is_put_batch) {
          const auto* request = static_cast<const v1::PutBatchRequest*>(message);
          puts_ = request->puts_size();
          deletes_ = request->deletes_size();
        } else {
          gets_ = static_cast<const v1::GetBatchRequest*>(message)->gets_size();
        }
      }
    }
    if (method_->is_put_batch &&
        methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      // The handler's response object (a unary answer is sent once, with an OK status).
      if (const void* message = methods->GetSendMessage(); message != nullptr) {
        metrics_->RecordBatchItems(*static_cast<const v1::PutBatchResponse*>(message), puts_);
        answered_ = true;
      }
    }
    if (method_->is_get_batch &&
        methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      if (const void* message = methods->GetSendMessage(); message != nullptr) {
        metrics_->RecordGetBatchItems(*static_cast<const v1::GetBatchResponse*>(message));
        answered_ = true;
      }
    }
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const int code = static_cast<int>(methods->GetSendStatus().error_code());
      metrics_->Record(method_, code, SteadyNow() - start_);
      if (!answered_) metrics_->RecordRefusedBatch(code, puts_, deletes_, gets_);
    }
    methods->Proceed();
  }

 private:
  const std::shared_ptr<RequestMetrics> metrics_;
  RequestMetrics::Method* const method_;
  const absl::Time start_;
  // Items of a PutBatch or GetBatch request (0 for any other call).
  int puts_ = 0;
  int deletes_ = 0;
  int gets_ = 0;
  bool answered_ = false;  // a batch's results were sent (each item counted by its own code)
};

class CountingInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingInterceptorFactory(std::shared_ptr<RequestMetrics> metrics)
      : metrics_(std::move(metrics)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    return new CountingInterceptor(metrics_,
                                   metrics_->ForMethod(method == nullptr ? "unknown" : method));
  }

 private:
  const std::shared_ptr<RequestMetrics> metrics_;
};

prometheus::MetricFamily NewFamily(std::string name, std::string help,
                                   prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddValue(prometheus::MetricFamily* family, double value,
              std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  std::sort(labels.begin(), labels.end());  // as the registry's own metrics write them
  metric.label = std::move(labels);
  if (family->type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family->metric.push_back(std::move(metric));
}

// One family with one sample per member of `status` other than this node.
template <typename Value>
prometheus::MetricFamily PerPeer(const v1::ClusterStatusResponse& status, std::string name,
                                 std::string help, prometheus::MetricType type, Value value) {
  prometheus::MetricFamily family = NewFamily(std::move(name), std::move(help), type);
  for (const v1::MemberStatus& member : status.members()) {
    if (member.self()) continue;
    AddValue(&family, static_cast<double>(value(member)), {{"peer", member.node_id()}});
  }
  return family;
}

std::vector<prometheus::MetricFamily> StatusFamilies(const v1::ClusterStatusResponse& status,
                                                     const v1::NodeStatusResponse& node) {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  auto single = [&out](std::string name, std::string help, MetricType type, double value) {
    out.push_back(NewFamily(std::move(name), std::move(help), type));
    AddValue(&out.back(), value);
  };

  out.push_back(NewFamily("kv_node_info", "This node: id, actor (id and epoch) and version.",
                          MetricType::Gauge));
  AddValue(&out.back(), 1,
           {{"node_id", node.node_id()}, {"actor", node.actor()}, {"version", node.version()}});
  single("kv_uptime_seconds", "Seconds since this node started.", MetricType::Gauge,
         static_cast<double>(node.uptime_seconds()));
  single("kv_keys_approximate", "Keys stored on this node (the storage engine's estimate).",
         MetricType::Gauge, static_cast<double>(node.approximate_keys()));
  single("kv_writes_coordinated_total", "Writes this node coordinated as a replica of the key.",
         MetricType::Counter, static_cast<double>(status.writes_coordinated()));
  single("kv_writes_forwarded_total",
         "Writes this node forwarded to a replica because it is not one.", MetricType::Counter,
         static_cast<double>(status.writes_forwarded()));
  single("kv_read_repairs_total", "Read repairs this node started.", MetricType::Counter,
         static_cast<double>(status.read_repairs()));

  out.push_back(NewFamily("kv_replication_lag_recent_seconds",
                          "Replication lag of the writes this node coordinated recently (the "
                          "last 49,152-65,536): local commit to every replica confirmed; "
                          "quantile 1 is the maximum.",
                          MetricType::Gauge));
  if (status.replication_lag_samples() > 0) {
    AddValue(&out.back(), status.replication_lag_p50_us() / 1e6, {{"quantile", "0.5"}});
    AddValue(&out.back(), status.replication_lag_p99_us() / 1e6, {{"quantile", "0.99"}});
    AddValue(&out.back(), status.replication_lag_max_us() / 1e6, {{"quantile", "1"}});
  }
  single("kv_replication_lag_recent_samples", "Writes behind kv_replication_lag_recent_seconds.",
         MetricType::Gauge, status.replication_lag_samples());

  single("kv_layout_version", "Version of the cluster layout this node places keys with.",
         MetricType::Gauge, static_cast<double>(status.layout_version()));
  single("kv_layout_in_transition", "1 while a join or leave is under way.", MetricType::Gauge,
         status.layout_next_members_size() > 0 ? 1 : 0);
  single("kv_layout_conflict",
         "1 if another node gossips a different layout of this node's version (a split).",
         MetricType::Gauge, status.layout_conflict().empty() ? 0 : 1);
  single("kv_settings_conflict",
         "1 if a member gossips other values of the settings every member must share.",
         MetricType::Gauge, status.settings_conflict().empty() ? 0 : 1);
  single("kv_catching_up",
         "1 while this replica may lack writes it acknowledged (restarted after a machine crash "
         "without sync_writes) and anti-entropy has not yet compared it with every peer.",
         MetricType::Gauge, status.catching_up() ? 1 : 0);
  single("kv_history_conflict",
         "1 if another node gossiped a later history generation of an earlier run of this node: "
         "its data directory is older than that run (restored?) and it kept its actor epoch.",
         MetricType::Gauge, status.history_conflict().empty() ? 0 : 1);
  single("kv_members", "Members that own keys in the current layout.", MetricType::Gauge,
         status.members_size());
  single("kv_merkle_ready", "1 once the anti-entropy hash trees are built.", MetricType::Gauge,
         status.merkle_ready() ? 1 : 0);
  if (node.tls_not_after_unix_seconds() != 0) {
    single("kv_tls_certificate_expiry_timestamp_seconds",
           "When the TLS certificate this node uses expires (Unix time).", MetricType::Gauge,
           static_cast<double>(node.tls_not_after_unix_seconds()));
    single("kv_tls_rotations_total",
           "Changed TLS files this node installed without a restart (--tls_reload_interval).",
           MetricType::Counter, static_cast<double>(node.tls_rotations()));
    single("kv_tls_refusals_total",
           "Changed TLS files this node refused (they failed the start checks); it kept its "
           "certificate.",
           MetricType::Counter, static_cast<double>(node.tls_refusals()));
  }
  single("kv_tombstones_purged_total", "Tombstones this node purged as the keys' primary.",
         MetricType::Counter, static_cast<double>(status.tombstones_purged()));

  out.push_back(PerPeer(
      status, "kv_member_up", "Gossip's judgement of the peer: 1 UP, 0 DOWN or not heard from yet.",
      MetricType::Gauge, [](const v1::MemberStatus& m) { return m.liveness() == "UP" ? 1 : 0; }));
  out.push_back(PerPeer(status, "kv_outbox_depth",
                        "Writes waiting to be sent to the peer (hinted handoff when it is down).",
                        MetricType::Gauge,
                        [](const v1::MemberStatus& m) { return m.outbox_depth(); }));
  out.push_back(PerPeer(status, "kv_outbox_dropped_total",
                        "Writes not queued for the peer because its queue was full "
                        "(anti-entropy repairs them).",
                        MetricType::Counter,
                        [](const v1::MemberStatus& m) { return m.outbox_dropped(); }));
  out.push_back(PerPeer(status, "kv_replicated_records_total",
                        "Records the peer confirmed receiving from this node's outbox.",
                        MetricType::Counter,
                        [](const v1::MemberStatus& m) { return m.sent_records(); }));
  out.push_back(PerPeer(
      status, "kv_peer_reachable", "1 when the last replication attempt to the peer succeeded.",
      MetricType::Gauge, [](const v1::MemberStatus& m) { return m.reachable() ? 1 : 0; }));
  out.push_back(PerPeer(status, "kv_anti_entropy_exchanges_total",
                        "Merkle tree exchanges with the peer.", MetricType::Counter,
                        [](const v1::MemberStatus& m) { return m.anti_entropy_exchanges(); }));
  out.push_back(PerPeer(status, "kv_anti_entropy_keys_repaired_total",
                        "Keys anti-entropy repaired between this node and the peer.",
                        MetricType::Counter,
                        [](const v1::MemberStatus& m) { return m.anti_entropy_keys_repaired(); }));
  out.push_back(PerPeer(status, "kv_anti_entropy_keys_different",
                        "Keys that differed in the last exchange with the peer.", MetricType::Gauge,
                        [](const v1::MemberStatus& m) { return m.anti_entropy_keys_different(); }));
  out.push_back(
      PerPeer(status, "kv_anti_entropy_in_sync",
              "1 when the last exchange with the peer found identical trees.", MetricType::Gauge,
              [](const v1::MemberStatus& m) { return m.anti_entropy_in_sync() ? 1 : 0; }));
  return out;
}

}  // namespace

// The state part of a scrape, read from the status source.
class StatusCollectable : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    absl::MutexLock lock(&mu_);
    if (!source_) return {};
    v1::ClusterStatusResponse status;
    v1::NodeStatusResponse node;
    source_(&status, &node);
    return StatusFamilies(status, node);
  }

  void Set(NodeMetrics::StatusSource source) {
    absl::MutexLock lock(&mu_);
    source_ = std::move(source);
  }

 private:
  mutable absl::Mutex mu_;
  NodeMetrics::StatusSource source_ ABSL_GUARDED_BY(mu_);
};

NodeMetrics::NodeMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      status_(std::make_shared<StatusCollectable>()) {}

NodeMetrics::~NodeMetrics() {
  exposer_.reset();  // stops serving; a scrape under way finishes first
}

absl::StatusOr<std::unique_ptr<NodeMetrics>> NodeMetrics::Start(const std::string& listen) {
  std::unique_ptr<NodeMetrics> metrics(new NodeMetrics());
  try {
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen,
                     ": the address is in use or not an address of this machine (", e.what(),
                     "). Stop what uses it or choose another --metrics_listen."));
  }
  const std::vector<int> ports = metrics->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": the HTTP server listens on no port"));
  }
  metrics->port_ = ports.front();
  metrics->exposer_->RegisterCollectable(metrics->registry_);
  metrics->exposer_->RegisterCollectable(metrics->status_);
  return metrics;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NodeMetrics::InterceptorFactory(const std::vector<std::string>& services) {
  std::vector<std::string> methods = {
      // Services of gRPC itself, whose descriptors are not in the generated pool.
      "/grpc.health.v1.Health/Check",
      "/grpc.health.v1.Health/Watch",
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
  };
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& service : services) {
    const google::protobuf::ServiceDescriptor* descriptor = pool->FindServiceByName(service);
    if (descriptor == nullptr) continue;  // its calls count as "unknown"
    for (int i = 0; i < descriptor->method_count(); ++i) {
      methods.push_back(absl::StrCat("/", service, "/", descriptor->method(i)->name()));
    }
  }
  return std::make_unique<CountingInterceptorFactory>(
      std::make_shared<RequestMetrics>(registry_, methods));
}

void NodeMetrics::SetStatusSource(StatusSource source) { status_->Set(std::move(source)); }

}  // namespace kv

#include "tests/sim/sim_workload.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kv::sim {

bool IsRetryable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsResourceExhausted(status) || absl::IsAborted(status);
}

Workload::Workload(SimLoop* loop, SimNetwork* network, SimCluster* cluster, int first_endpoint,
                   WorkloadOptions options, History* history)
    : loop_(loop),
      network_(network),
      cluster_(cluster),
      options_(options),
      history_(history),
      clients_(options.num_clients) {
  for (int c = 0; c < options_.num_clients; ++c) {
    clients_[c].endpoint = first_endpoint + c;
    clients_[c].node = c % cluster_->num_nodes();
  }
}

void Workload::Start() {
  for (int c = 0; c < options_.num_clients; ++c) {
    network_->SetUp(clients_[c].endpoint, nullptr);
    Next(c);
  }
}

bool Workload::Idle() const {
  return stopped_ &&
         std::none_of(clients_.begin(), clients_.end(), [](const Client& c) { return c.busy; });
}

void Workload::Next(int c) {
  clients_[c].busy = false;
  if (stopped_) return;
  loop_->Post(
      loop_->UniformDuration(options_.think_min, options_.think_max), [this, c] { Step(c); },
      nullptr, "client-step", clients_[c].endpoint);
}

std::string Workload::SharedKey() {
  return absl::StrFormat("key-%02d", loop_->UniformInt(0, options_.shared_keys - 1));
}

std::string Workload::Token(int c) { return absl::StrCat("tok-c", c, "-", clients_[c].ops); }

void Workload::Step(int c) {
  if (stopped_) return;
  Client& client = clients_[c];
  client.busy = true;
  ++client.ops;
  for (int i = 0; i < cluster_->num_nodes() && cluster_->IsRemoved(client.node); ++i) {
    client.node = (client.node + 1) % cluster_->num_nodes();
  }
  const int64_t p = loop_->UniformInt(0, 99);
  auto own_new_key = [&]() -> std::string {
    if (client.new_keys.empty()) return SharedKey();
    const int64_t last = static_cast<int64_t>(client.new_keys.size()) - 1;
    return client.new_keys[loop_->UniformInt(std::max<int64_t>(0, last - 4), last)];
  };
  if (p < 20) {  // a new key
    StartWrite(c, absl::StrCat("new-c", c, "-", client.ops), /*is_delete=*/false, nullptr);
  } else if (p < 33) {  // blind overwrite: a sibling of whatever is there
    StartWrite(c, SharedKey(), /*is_delete=*/false, nullptr);
  } else if (p < 45) {
    StartRead(c, SharedKey(), client.node, [this, c](const ReadOp&) { Next(c); });
  } else if (p < 60) {  // read-after-write of a new key, through any node
    int node = static_cast<int>(loop_->UniformInt(0, cluster_->num_nodes() - 1));
    if (cluster_->IsRemoved(node)) node = client.node;
    StartRead(c, own_new_key(), node, [this, c](const ReadOp&) { Next(c); });
  } else if (p < 85) {  // read-modify-write
    std::string key = loop_->Chance(0.2) ? own_new_key() : SharedKey();
    StartRead(c, key, client.node, [this, c](const ReadOp& read) {
      if (read.outcome != Outcome::kOk && read.outcome != Outcome::kNotFound) return Next(c);
      StartWrite(c, read.key, /*is_delete=*/false, &read);
    });
  } else if (p < 93) {  // delete what was read
    StartRead(c, SharedKey(), client.node, [this, c](const ReadOp& read) {
      if (read.outcome != Outcome::kOk) return Next(c);
      StartWrite(c, read.key, /*is_delete=*/true, &read);
    });
  } else {  // blind delete: removes whatever the coordinating replica holds
    StartWrite(c, SharedKey(), /*is_delete=*/true, nullptr);
  }
}

void Workload::StartWrite(int c, std::string key, bool is_delete, const ReadOp* seen) {
  Client& client = clients_[c];
  WriteOp op;
  op.id = history_->writes.size() + history_->reads.size();
  op.client = c;
  op.key = std::move(key);
  op.is_delete = is_delete;
  if (!is_delete) op.value = absl::StrCat("v", c, ".", client.ops);
  op.token = Token(c);
  if (seen != nullptr && seen->outcome == Outcome::kOk) {
    op.has_context = true;
    op.context = seen->record.ClientContext();  // as KvService::Get answers
    for (const Sibling& s : seen->record.siblings()) op.seen.push_back(s.dot);
    op.context_bytes = op.context.Encode();
  }
  op.issued = loop_->Now();
  op.node = client.node;
  history_->writes.push_back(std::move(op));
  AttemptWrite(c, history_->writes.size() - 1);
}

void Workload::AttemptWrite(int c, size_t w) {
  WriteOp& op = history_->writes[w];
  ++op.attempts;
  WriteCommand command{op.key, op.is_delete, op.value, op.context_bytes, op.token};
  command.first_attempt = op.attempts == 1;  // as the client library marks it
  auto deliveries = std::make_shared<int>(0);
  SimNetwork::CallSpec spec;
  spec.from = clients_[c].endpoint;
  spec.to = op.node;
  spec.kind = op.is_delete ? "client-delete" : "client-put";
  spec.key = op.key;
  spec.timeout = options_.call_timeout;
  const int node = op.node;
  network_->Call<absl::StatusOr<WriteReply>>(
      std::move(spec),
      [cluster = cluster_, node, command,
       deliveries](std::function<void(absl::StatusOr<WriteReply>)> reply) {
        // A request the network duplicated is not a first attempt: it models a retry at a lower
        // layer, which must not carry the mark (gRPC delivers a call once).
        WriteCommand delivered = command;
        if ((*deliveries)++ > 0) delivered.first_attempt = false;
        cluster->ServeClientWrite(node, delivered, std::move(reply));
      },
      [this, c, w, node](absl::StatusOr<WriteReply> reply) {
        OnWriteDone(c, w, node, std::move(reply));
      });
}

void Workload::OnWriteDone(int c, size_t w, int node, absl::StatusOr<WriteReply> reply) {
  WriteOp& op = history_->writes[w];
  if (reply.ok()) {
    std::string key;
    absl::Status parsed = ParseWriteId(reply->write_id, &op.dot, &key);
    if (!parsed.ok() || key != op.key) {
      op.outcome = Outcome::kFailed;
      op.last_error = absl::InternalError(absl::StrCat("bad write id ", reply->write_id));
      return Next(c);
    }
    op.outcome = Outcome::kOk;
    op.acked = loop_->Now();
    op.node = node;
    op.deduplicated = reply->deduplicated;
    if (absl::StatusOr<CausalContext> context = CausalContext::Decode(reply->context);
        context.ok()) {
      op.reply_context = *std::move(context);
    }
    if (loop_->verbose()) {
      loop_->Log(absl::StrCat("client ", c, " ", op.is_delete ? "DELETE " : "PUT ", op.key, " ",
                              op.value, " token=", op.token, " ctx=", op.context.ToString(),
                              " -> OK dot=", op.dot.ToString(), " via ", cluster_->NodeId(node),
                              op.deduplicated ? " (deduplicated)" : "", " attempt ", op.attempts));
    }
    if (!op.is_delete && op.key.rfind("new-", 0) == 0) clients_[c].new_keys.push_back(op.key);
    return Next(c);
  }
  op.last_error = reply.status();
  if (loop_->verbose()) {
    loop_->Log(absl::StrCat("client ", c, " ", op.is_delete ? "DELETE " : "PUT ", op.key,
                            " token=", op.token, " via ", cluster_->NodeId(node), " attempt ",
                            op.attempts, " -> ", reply.status().ToString()));
  }
  if (!IsRetryable(reply.status())) {
    op.outcome = Outcome::kFailed;
    return Next(c);
  }
  const absl::Duration backoff = PlanRetry(c, op.attempts, &op.node, reply.status());
  if (backoff == absl::InfiniteDuration()) {
    op.outcome = Outcome::kGaveUp;
    return Next(c);
  }
  loop_->Post(
      backoff, [this, c, w] { AttemptWrite(c, w); }, nullptr, "client-retry", clients_[c].endpoint,
      op.key);
}

void Workload::StartRead(int c, std::string key, int node, ReadDone then) {
  ReadOp op;
  op.id = history_->writes.size() + history_->reads.size();
  op.client = c;
  op.key = std::move(key);
  op.issued = loop_->Now();
  op.node = node;
  history_->reads.push_back(std::move(op));
  AttemptRead(c, history_->reads.size() - 1, std::move(then));
}

void Workload::AttemptRead(int c, size_t r, ReadDone then) {
  ReadOp& op = history_->reads[r];
  ++op.attempts;
  SimNetwork::CallSpec spec;
  spec.from = clients_[c].endpoint;
  spec.to = op.node;
  spec.kind = "client-get";
  spec.key = op.key;
  spec.timeout = options_.call_timeout;
  const int node = op.node;
  network_->Call<absl::StatusOr<SiblingSet>>(
      std::move(spec),
      [cluster = cluster_, node,
       key = op.key](std::function<void(absl::StatusOr<SiblingSet>)> reply) {
        cluster->ServeClientRead(node, key, std::move(reply));
      },
      [this, c, r, node, then = std::move(then)](absl::StatusOr<SiblingSet> record) {
        OnReadDone(c, r, node, std::move(record), then);
      });
}

void Workload::OnReadDone(int c, size_t r, int node, absl::StatusOr<SiblingSet> record,
                          ReadDone then) {
  ReadOp& op = history_->reads[r];
  if (record.ok() || absl::IsNotFound(record.status())) {
    op.completed = loop_->Now();
    op.node = node;
    if (record.ok()) op.record = *std::move(record);
    // As the KV service answers a Get: only tombstones is NOT_FOUND.
    op.outcome = op.record.AllTombstones() ? Outcome::kNotFound : Outcome::kOk;
    if (loop_->verbose()) {
      loop_->Log(absl::StrCat("client ", c, " GET ", op.key, " via ", cluster_->NodeId(node),
                              " -> ", OutcomeName(op.outcome), " ", op.record.ToString()));
    }
    return then(op);
  }
  op.last_error = record.status();
  if (loop_->verbose()) {
    loop_->Log(absl::StrCat("client ", c, " GET ", op.key, " via ", cluster_->NodeId(node),
                            " attempt ", op.attempts, " -> ", record.status().ToString()));
  }
  if (!IsRetryable(record.status())) {
    op.outcome = Outcome::kFailed;
    op.completed = loop_->Now();
    return then(op);
  }
  const absl::Duration backoff = PlanRetry(c, op.attempts, &op.node, record.status());
  if (backoff == absl::InfiniteDuration()) {
    op.outcome = Outcome::kGaveUp;
    op.completed = loop_->Now();
    return then(op);
  }
  loop_->Post(
      backoff, [this, c, r, then] { AttemptRead(c, r, then); }, nullptr, "client-retry",
      clients_[c].endpoint, op.key);
}

absl::Duration Workload::PlanRetry(int c, int attempts, int* node, const absl::Status& error) {
  if (attempts >= options_.max_attempts) return absl::InfiniteDuration();
  const int n = cluster_->num_nodes();
  if (absl::IsUnavailable(error)) {
    *node = (*node + 1) % n;
  } else if (loop_->Chance(options_.retry_elsewhere)) {
    *node = static_cast<int>(loop_->UniformInt(0, n - 1));
  }
  // A node that left the cluster is gone for good: the client's endpoint list drops it.
  for (int i = 0; i < n && cluster_->IsRemoved(*node); ++i) *node = (*node + 1) % n;
  clients_[c].node = *node;
  absl::Duration ceiling = options_.backoff_base;
  for (int i = 1; i < attempts && ceiling < options_.backoff_cap; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, options_.backoff_cap);
  return loop_->UniformDuration(absl::ZeroDuration(), ceiling);
}

}  // namespace kv::sim

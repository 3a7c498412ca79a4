#include "node/admin_service.h"

#include <algorithm>
#include <map>
#include <utility>

#include "node/grpc_util.h"

namespace kv {

AdminService::AdminService(NodeInfo info, Engine* engine, Coordinator* coordinator,
                           ReplicationOutbox* outbox, MerkleIndex* merkle,
                           AntiEntropy* anti_entropy, TombstoneReaper* reaper,
                           OperationRegistry* operations, RepairRunner* repairs, Executor* executor,
                           CallGate* gate, const Clock* steady_clock, const Clock* wall_clock,
                           const Gossiper* gossiper)
    : info_(std::move(info)),
      engine_(engine),
      coordinator_(coordinator),
      outbox_(outbox),
      merkle_(merkle),
      anti_entropy_(anti_entropy),
      reaper_(reaper),
      operations_(operations),
      repairs_(repairs),
      start_tokens_(wall_clock),
      executor_(executor),
      gate_(gate),
      steady_clock_(steady_clock),
      gossiper_(gossiper),
      started_(steady_clock->Now()) {}

grpc::ServerUnaryReactor* AdminService::Ping(grpc::CallbackServerContext* context,
                                             const v1::PingRequest* request,
                                             v1::PingResponse* response) {
  absl::Status admitted = gate_->Check();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  response->set_payload(request->payload());
  response->set_node_id(info_.node_id);
  return FinishNow(gate_, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::NodeStatus(grpc::CallbackServerContext* context,
                                                   const v1::NodeStatusRequest* request,
                                                   v1::NodeStatusResponse* response) {
  absl::Status admitted = gate_->Check();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  return FinishOnExecutor(context, gate_, executor_, [this, response] {
    FillNodeStatus(response);
    return absl::OkStatus();
  });
}

void AdminService::FillNodeStatus(v1::NodeStatusResponse* response) const {
  response->set_node_id(info_.node_id);
  response->set_actor(info_.actor);
  response->set_listen_address(info_.listen_address);
  response->set_approximate_keys(engine_->ApproximateCount(Column::kData));
  response->set_uptime_seconds(absl::ToInt64Seconds(steady_clock_->Now() - started_));
  response->set_version(info_.version);
  if (tls_ != nullptr && tls_->enabled()) {
    const NodeTls::Stats tls = tls_->stats();
    response->set_tls_subject(tls.subject);
    response->set_tls_not_after_unix_seconds(absl::ToUnixSeconds(tls.not_after));
    response->set_tls_rotations(tls.installed);
    response->set_tls_refusals(tls.refused);
    response->set_tls_refused_because(tls.last_refusal);
  }
}

grpc::ServerUnaryReactor* AdminService::ClusterStatus(grpc::CallbackServerContext* context,
                                                      const v1::ClusterStatusRequest* request,
                                                      v1::ClusterStatusResponse* response) {
  absl::Status admitted = gate_->Check();
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  return FinishOnExecutor(context, gate_, executor_, [this, response] {
    FillClusterStatus(response);
    return absl::OkStatus();
  });
}

void AdminService::FillClusterStatus(v1::ClusterStatusResponse* response) const {
  const ClusterOptions& options = coordinator_->options();
  const std::shared_ptr<const Placement> placement = coordinator_->placement();
  const HashRing& ring = placement->current();
  const ClusterLayout& layout = placement->layout();
  response->set_layout_version(layout.version);
  for (const Member& m : layout.next) response->add_layout_next_members(m.id);
  response->set_layout_change(layout.change);
  if (gossiper_ != nullptr) {
    response->set_layout_conflict(gossiper_->LayoutConflict());
    response->set_settings_conflict(gossiper_->SettingsConflict());
    response->set_history_conflict(gossiper_->HistoryConflict());
  }
  response->set_catching_up(coordinator_->store()->catching_up());
  const int n = std::min<int>(options.replication_factor, static_cast<int>(ring.size()));
  response->set_node_id(info_.node_id);
  response->set_replication_factor(n);
  response->set_default_w(std::min(options.default_w, n));
  response->set_default_r(std::min(options.default_r, n));
  FillMembers(ring, response);
  response->set_merkle_ready(merkle_->ready());
  const TombstoneReaperStats reaper = reaper_->Stats();
  response->set_tombstones_purged(reaper.purged);
  response->set_tombstone_sweeps(reaper.sweeps);
  FillCoordinatorStats(coordinator_->Stats(), response);
}

void AdminService::FillMembers(const HashRing& ring, v1::ClusterStatusResponse* response) const {
  std::map<std::string, PeerOutboxStats> outbox;
  for (PeerOutboxStats& stats : outbox_->Stats()) outbox[stats.peer_id] = std::move(stats);
  std::map<std::string, PeerAntiEntropyStats> exchanges;
  if (anti_entropy_ != nullptr) {
    for (PeerAntiEntropyStats& stats : anti_entropy_->Stats()) {
      exchanges[stats.peer_id] = std::move(stats);
    }
  }
  std::map<std::string, MemberView> gossip;
  if (gossiper_ != nullptr) {
    for (MemberView& view : gossiper_->Members()) {
      std::string id = view.entry.member.id;
      gossip.emplace(std::move(id), std::move(view));
    }
  }
  for (const Member& member : ring.members()) {
    v1::MemberStatus* out = response->add_members();
    out->set_node_id(member.id);
    out->set_address(member.address);
    out->set_zone(member.zone);
    out->set_self(member.id == info_.node_id);
    out->set_reachable(true);
    out->set_liveness("UNKNOWN");
    out->set_last_heard_ms_ago(-1);
    if (auto g = gossip.find(member.id); g != gossip.end()) FillGossip(g->second, out);
    if (auto ae = exchanges.find(member.id); ae != exchanges.end())
      FillAntiEntropy(ae->second, out);
    if (auto ob = outbox.find(member.id); ob != outbox.end()) FillOutbox(ob->second, out);
    gossip.erase(member.id);
  }
  for (const auto& [id, view] : gossip) {
    v1::MemberStatus* out = response->add_outside_layout();
    out->set_node_id(id);
    out->set_address(view.entry.member.address);
    out->set_zone(view.entry.member.zone);
    out->set_self(view.self);
    out->set_last_heard_ms_ago(-1);
    FillGossip(view, out);
  }
}

void AdminService::FillGossip(const MemberView& view, v1::MemberStatus* out) {
  out->set_liveness(std::string(LivenessName(view.liveness)));
  out->set_heartbeat(view.entry.heartbeat);
  out->set_incarnation(view.entry.incarnation);
  if (view.since_heard != absl::InfiniteDuration()) {
    out->set_last_heard_ms_ago(std::max<int64_t>(0, absl::ToInt64Milliseconds(view.since_heard)));
  }
}

void AdminService::FillAntiEntropy(const PeerAntiEntropyStats& stats, v1::MemberStatus* out) {
  out->set_anti_entropy_exchanges(stats.exchanges);
  if (stats.last_exchange != absl::InfinitePast()) {
    out->set_anti_entropy_last_exchange_unix_micros(absl::ToUnixMicros(stats.last_exchange));
  }
  out->set_anti_entropy_in_sync(stats.in_sync);
  out->set_anti_entropy_keys_different(stats.last_keys_different);
  out->set_anti_entropy_keys_repaired(stats.keys_repaired);
  out->set_anti_entropy_last_error(stats.last_error);
}

void AdminService::FillOutbox(const PeerOutboxStats& stats, v1::MemberStatus* out) {
  out->set_reachable(stats.reachable);
  out->set_outbox_depth(stats.depth);
  out->set_outbox_dropped(stats.dropped);
  out->set_sent_records(stats.sent_records);
  out->set_last_error(stats.last_error);
  if (stats.last_success != absl::InfinitePast()) {
    out->set_last_success_unix_micros(absl::ToUnixMicros(stats.last_success));
  }
}

void AdminService::FillCoordinatorStats(CoordinatorStats stats,
                                        v1::ClusterStatusResponse* response) {
  response->set_writes_coordinated(stats.writes_coordinated);
  response->set_writes_forwarded(stats.writes_forwarded);
  response->set_read_repairs(stats.read_repairs);
  std::vector<int64_t>& lag = stats.recent_replication_lag_us;
  response->set_replication_lag_samples(static_cast<uint32_t>(lag.size()));
  if (!lag.empty()) {
    std::sort(lag.begin(), lag.end());
    response->set_replication_lag_p50_us(lag[lag.size() / 2]);
    response->set_replication_lag_p99_us(lag[std::min(lag.size() - 1, lag.size() * 99 / 100)]);
    response->set_replication_lag_max_us(lag.back());
  }
}

grpc::ServerUnaryReactor* AdminService::RunAntiEntropy(grpc::CallbackServerContext* context,
                                                       const v1::RunAntiEntropyRequest* request,
                                                       v1::RunAntiEntropyResponse* response) {
  absl::Status admitted = gate_->Check();
  if (admitted.ok()) admitted = administrators_.Check(*context);
  if (admitted.ok() && anti_entropy_ == nullptr) {
    admitted = absl::FailedPreconditionError("anti-entropy is not available on this node");
  }
  if (!admitted.ok()) return FinishNow(gate_, admitted);
  return StartOnExecutor(context, gate_, executor_, [this, request](auto finish) {
    anti_entropy_->ExchangeNow(request->peer_id(), finish);
  });
}

}  // namespace kv

#include "tests/sim/sim_faults.h"

#include "absl/strings/str_cat.h"

namespace kv::sim {

FaultInjector::FaultInjector(SimLoop* loop, SimNetwork* network, SimCluster* cluster,
                             int first_client, int num_clients)
    : loop_(loop),
      network_(network),
      cluster_(cluster),
      first_client_(first_client),
      num_clients_(num_clients) {}

void FaultInjector::Start(absl::Time until) {
  until_ = until;
  NetworkFaults faults;
  faults.request_loss = loop_->UniformInt(0, 60) / 1000.0;
  faults.response_loss = loop_->UniformInt(0, 60) / 1000.0;
  faults.duplicate = loop_->UniformInt(0, 40) / 1000.0;
  faults.min_delay = absl::Microseconds(50);
  faults.max_delay = loop_->UniformDuration(absl::Milliseconds(1), absl::Milliseconds(8));
  faults.slow = loop_->UniformInt(0, 30) / 1000.0;
  faults.slow_delay = loop_->UniformDuration(absl::Milliseconds(100), absl::Seconds(1));
  network_->set_faults(faults);
  drawn_ = absl::StrCat("request_loss=", faults.request_loss,
                        " response_loss=", faults.response_loss, " duplicate=", faults.duplicate,
                        " delay=", absl::FormatDuration(faults.min_delay), "..",
                        absl::FormatDuration(faults.max_delay), " slow=", faults.slow, " up to ",
                        absl::FormatDuration(faults.slow_delay));
  loop_->Log(absl::StrCat("FAULTS ", drawn_));
  loop_->Post(
      loop_->UniformDuration(absl::Milliseconds(100), absl::Seconds(1)), [this] { Tick(); },
      nullptr, "fault");
}

void FaultInjector::Tick() {
  if (healed_ || loop_->Now() >= until_) return;
  const int n = cluster_->num_nodes();
  const int64_t p = loop_->UniformInt(0, 99);
  if (p < 25) {
    const int a = static_cast<int>(loop_->UniformInt(0, n - 1));
    const int b = static_cast<int>(loop_->UniformInt(0, n - 1));
    if (a != b) {
      network_->Partition(a, b);
      ++stats_.partitions;
      loop_->Log(absl::StrCat("PARTITION ", cluster_->NodeId(a), " | ", cluster_->NodeId(b)));
    }
  } else if (p < 35) {
    const int a = static_cast<int>(loop_->UniformInt(0, n - 1));
    for (int b = 0; b < n; ++b) network_->Partition(a, b);
    ++stats_.partitions;
    loop_->Log(absl::StrCat("ISOLATE ", cluster_->NodeId(a)));
  } else if (p < 45) {
    const int node = static_cast<int>(loop_->UniformInt(0, n - 1));
    const int client = first_client_ + static_cast<int>(loop_->UniformInt(0, num_clients_ - 1));
    network_->Partition(node, client);
    ++stats_.partitions;
    loop_->Log(absl::StrCat("PARTITION client endpoint ", client, " | ", cluster_->NodeId(node)));
  } else if (p < 70) {
    if (loop_->Chance(0.3)) {
      network_->HealAll();
      loop_->Log("HEAL all partitions");
    } else {
      const int a = static_cast<int>(loop_->UniformInt(0, n - 1));
      for (int b = 0; b < n + num_clients_; ++b) network_->Heal(a, b);
      loop_->Log(absl::StrCat("HEAL partitions of ", cluster_->NodeId(a)));
    }
  } else if (p < 90) {
    CrashOne();
  }
  loop_->Post(
      loop_->UniformDuration(absl::Milliseconds(100), absl::Milliseconds(1500)), [this] { Tick(); },
      nullptr, "fault");
}

void FaultInjector::CrashOne() {
  const int n = cluster_->num_nodes();
  // Keep a majority of the nodes still in the cluster up, so that some writes can reach W.
  int active = 0;
  for (int i = 0; i < n; ++i) active += cluster_->IsRemoved(i) ? 0 : 1;
  const int max_down = (active - 1) / 2;
  if (active - cluster_->NumUp() >= max_down) return;
  const int node = static_cast<int>(loop_->UniformInt(0, n - 1));
  if (!cluster_->IsUp(node) || cluster_->CrashTooSoon()) return;
  cluster_->Crash(node);
  ++stats_.crashes;
  RestartLater(node);
}

void FaultInjector::RestartLater(int node) {
  loop_->Post(
      loop_->UniformDuration(absl::Milliseconds(50), absl::Seconds(3)),
      [this, node] {
        if (cluster_->IsUp(node) || cluster_->IsRemoved(node)) return;
        // (Chance is drawn whether or not wipes are allowed: runs that allow them are unchanged.)
        if (!wiped_ && loop_->Chance(0.2) && wipes_allowed_) {
          wiped_ = true;
          cluster_->Wipe(node);
          ++stats_.wipes;
        }
        if (absl::Status s = cluster_->Restart(node); !s.ok()) {
          restart_error_ = s;
          return;
        }
        ++stats_.restarts;
      },
      nullptr, "restart", node);
}

absl::Status FaultInjector::HealAll() {
  healed_ = true;
  network_->HealAll();
  network_->set_faults(NetworkFaults{});
  for (int node = 0; node < cluster_->num_nodes(); ++node) {
    if (cluster_->IsUp(node) || cluster_->IsRemoved(node)) continue;
    if (absl::Status s = cluster_->Restart(node); !s.ok()) return s;
    ++stats_.restarts;
  }
  loop_->Log("HEAL everything: faults end");
  return restart_error_;
}

}  // namespace kv::sim

#include "tests/cluster_util.h"

#include <signal.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace kv::testing {
namespace {

// `count` distinct loopback ports that were free a moment ago.
std::vector<int> PickFreePorts(size_t count) {
  std::set<int> seen;
  std::vector<int> ports;
  while (ports.size() < count) {
    const int port = PickFreePort();
    if (seen.insert(port).second) ports.push_back(port);
  }
  return ports;
}

}  // namespace

Cluster::Cluster(Options options) : options_(std::move(options)) {}

Cluster::~Cluster() {
  for (Node& node : nodes_) node.process.Kill();  // SIGKILL works on paused nodes too
}

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Start(Options options) {
  if (options.nodes < 1) return absl::InvalidArgumentError("a cluster needs at least one node");
  absl::Status status;
  // A picked port can be taken by someone else before its node binds it: then start over with
  // new ports (every node must know every port before any starts).
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::unique_ptr<Cluster> cluster(new Cluster(options));
    const std::vector<int> ports = PickFreePorts(static_cast<size_t>(options.nodes));
    std::vector<std::string> peers;
    cluster->nodes_.resize(ports.size());
    for (size_t i = 0; i < ports.size(); ++i) {
      Node& node = cluster->nodes_[i];
      node.id = absl::StrCat("n", i + 1);
      node.port = ports[i];
      node.data_dir = cluster->dir_.Sub(node.id);
      if (!cluster->IsJoiner(i)) peers.push_back(absl::StrCat(node.id, "=127.0.0.1:", node.port));
    }
    cluster->peers_ = peers;
    cluster->peers_flag_ = absl::StrJoin(peers, ",");
    status = absl::OkStatus();
    for (size_t i = 0; i < ports.size() && status.ok(); ++i) {
      if (!cluster->IsJoiner(i)) status = cluster->Launch(i);
    }
    for (size_t i = 0; i < ports.size() && status.ok(); ++i) {
      if (!cluster->IsJoiner(i)) status = cluster->AwaitServing(i, options.start_timeout);
    }
    if (status.ok()) return cluster;
    if (!absl::StrContains(status.message(), "cannot listen")) break;
  }
  return status;
}

std::string Cluster::node_id(size_t index) const { return nodes_.at(index).id; }

std::optional<size_t> Cluster::IndexOf(const std::string& node_id) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].id == node_id) return i;
  }
  return std::nullopt;
}

std::string Cluster::endpoint(size_t index) const {
  return absl::StrCat("127.0.0.1:", nodes_.at(index).port);
}

std::vector<std::string> Cluster::endpoints() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < nodes_.size(); ++i) out.push_back(endpoint(i));
  return out;
}

std::string Cluster::data_dir(size_t index) const { return nodes_.at(index).data_dir; }

pid_t Cluster::pid(size_t index) { return running(index) ? nodes_.at(index).process.pid() : -1; }

bool Cluster::running(size_t index) {
  Node& node = nodes_.at(index);
  return node.started && node.process.running();
}

std::string Cluster::PeersFlagFor(size_t index) const {
  // Each node lists the members starting from itself, as a per-node configuration might: the
  // order must not matter (the layout is the same set of members).
  std::vector<std::string> rotated = peers_;
  if (!rotated.empty()) {
    std::rotate(rotated.begin(), rotated.begin() + static_cast<long>(index % rotated.size()),
                rotated.end());
  }
  return absl::StrJoin(rotated, ",");
}

std::vector<std::string> Cluster::Argv(size_t index) const {
  const Node& node = nodes_.at(index);
  std::vector<std::string> argv = {
      KVNODE_PATH,
      "--node_id=" + node.id,
      "--listen=" + endpoint(index),
      "--data_dir=" + node.data_dir,
      IsJoiner(index) || std::find(options_.seeds_only.begin(), options_.seeds_only.end(), index) !=
                             options_.seeds_only.end()
          ? "--seeds=" + endpoint(0)
          : "--peers=" + PeersFlagFor(index),
      absl::StrCat("--replication_factor=", options_.replication_factor),
      absl::StrCat("--write_quorum=", options_.write_quorum),
      absl::StrCat("--read_quorum=", options_.read_quorum),
  };
  argv.insert(argv.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  if (auto own = options_.node_flags.find(index); own != options_.node_flags.end()) {
    argv.insert(argv.end(), own->second.begin(), own->second.end());
  }
  return argv;
}

absl::Status Cluster::Launch(size_t index) {
  Node& node = nodes_.at(index);
  const auto env = options_.node_env.find(index);
  absl::StatusOr<Subprocess> process = Subprocess::Start(
      Argv(index), dir_.Sub("logs"),
      env == options_.node_env.end() ? std::map<std::string, std::string>() : env->second);
  if (!process.ok()) return process.status();
  node.process = *std::move(process);
  node.started = true;
  node.expected_running = true;
  return absl::OkStatus();
}

absl::Status Cluster::AwaitServing(size_t index, absl::Duration timeout) {
  Node& node = nodes_.at(index);
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    // Something serves on the port; it must be this node, not a process that took the port
    // between PickFreePort and the node's bind (tests run in parallel).
    if (WaitForServing(endpoint(index), absl::Seconds(1)) &&
        ListensOn(node.process.pid(), node.port)) {
      node.served = true;
      return absl::OkStatus();
    }
    if (!node.process.running()) {
      absl::StatusOr<int> code = node.process.Wait(absl::ZeroDuration());
      return absl::UnavailableError(absl::StrCat(node.id, " (kvnode) exited with code ",
                                                 code.ok() ? *code : -1, " before serving; ",
                                                 "stderr:\n", node.process.Stderr()));
    }
  }
  KeepLogs(node);
  node.process.Kill();
  return absl::DeadlineExceededError(absl::StrCat(node.id, " (kvnode) did not serve within ",
                                                  absl::FormatDuration(timeout), "; stderr:\n",
                                                  node.earlier_logs));
}

void Cluster::KeepLogs(Node& node) {
  if (!node.started) return;
  absl::StrAppend(&node.earlier_logs, node.process.Stderr());
  node.started = false;
}

absl::StatusOr<int> Cluster::Stop(size_t index, absl::Duration timeout) {
  Node& node = nodes_.at(index);
  if (!node.started) return absl::FailedPreconditionError(node.id + " is not running");
  node.expected_running = false;
  node.process.Signal(SIGCONT);  // a paused node could not handle SIGTERM
  node.process.Signal(SIGTERM);
  absl::StatusOr<int> code = node.process.Wait(timeout);
  KeepLogs(node);
  node.process.Kill();
  return code;
}

void Cluster::Kill(size_t index) {
  Node& node = nodes_.at(index);
  node.expected_running = false;
  node.process.Kill();
  KeepLogs(node);
}

absl::Status Cluster::Restart(size_t index) {
  Node& node = nodes_.at(index);
  if (running(index)) return absl::FailedPreconditionError(node.id + " is still running");
  if (node.started && node.expected_running) {
    // It exited although nobody stopped it: StopAll reports that even after this restart.
    absl::StatusOr<int> code = node.process.Wait(absl::ZeroDuration());
    unexpected_exits_.push_back(
        absl::StrCat(node.id, " exited on its own with code ", code.ok() ? *code : -1));
  }
  KeepLogs(node);
  absl::Status status;
  for (int attempt = 0; attempt < 3; ++attempt) {
    status = Launch(index);
    if (status.ok()) status = AwaitServing(index, options_.start_timeout);
    // A joiner that never served is in nobody's --peers: if another process took its port
    // meanwhile, it can start over on a new one.
    if (status.ok() || node.served || !IsJoiner(index) ||
        !absl::StrContains(status.message(), "cannot listen")) {
      break;
    }
    KeepLogs(node);
    node.port = PickFreePort();
  }
  return status;
}

absl::Status Cluster::KillAndRestart(size_t index) {
  Kill(index);
  return Restart(index);
}

bool Cluster::Pause(size_t index) { return nodes_.at(index).process.Stop(); }

void Cluster::Resume(size_t index) { nodes_.at(index).process.Signal(SIGCONT); }

absl::Status Cluster::StopAll(absl::Duration timeout) {
  std::vector<std::string> problems = std::exchange(unexpected_exits_, {});
  std::vector<Node*> stopping;
  for (Node& node : nodes_) {
    if (!node.started) continue;
    if (!node.process.running()) {
      if (node.expected_running) {
        absl::StatusOr<int> code = node.process.Wait(absl::ZeroDuration());
        problems.push_back(
            absl::StrCat(node.id, " exited on its own with code ", code.ok() ? *code : -1));
      }
      KeepLogs(node);
      continue;
    }
    node.expected_running = false;
    node.process.Signal(SIGCONT);
    node.process.Signal(SIGTERM);
    stopping.push_back(&node);
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (Node* node : stopping) {
    absl::StatusOr<int> code =
        node->process.Wait(std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (!code.ok()) {
      problems.push_back(absl::StrCat(node->id, " did not exit within ",
                                      absl::FormatDuration(timeout), " of SIGTERM"));
    } else if (*code != 0) {
      problems.push_back(absl::StrCat(node->id, " exited with code ", *code, " on SIGTERM"));
    }
    KeepLogs(*node);
    node->process.Kill();
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrJoin(problems, "; "));
}

std::string Cluster::SanitizerReports() {
  std::string out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    for (absl::string_view line : absl::StrSplit(Logs(i), '\n')) {
      if (absl::StrContains(line, "AddressSanitizer") || absl::StrContains(line, "LeakSanitizer") ||
          absl::StrContains(line, "runtime error:")) {
        absl::StrAppend(&out, nodes_[i].id, ": ", line, "\n");
      }
    }
  }
  return out;
}

std::string Cluster::Logs(size_t index) {
  Node& node = nodes_.at(index);
  return node.started ? node.earlier_logs + node.process.Stderr() : node.earlier_logs;
}

std::string Cluster::LogTails(size_t max_bytes) {
  std::string out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const std::string logs = Logs(i);
    const size_t start = logs.size() > max_bytes ? logs.size() - max_bytes : 0;
    absl::StrAppend(&out, "--- ", nodes_[i].id, " (", endpoint(i), ") stderr",
                    start > 0 ? ", last part" : "", ":\n", logs.substr(start), "\n");
  }
  return out;
}

}  // namespace kv::testing

// A cluster of real kvnode processes on loopback, for multi-process tests.
//
// Start picks K free loopback ports, gives every node (ids n1..nK) the same --peers list and its
// own data directory under one TempDir, launches them all, and waits until each answers gRPC
// health checks with SERVING. Nodes are addressed by index (0..K-1). A node can be stopped
// (SIGTERM, clean shutdown), killed (SIGKILL), paused (SIGSTOP) and resumed (SIGCONT), and
// restarted on the same port and data directory, so it keeps its actor epoch and its outbox.
//
// Cleanup: the destructor kills (SIGKILL) and reaps every node it started, by pid, then removes
// the data directories and logs. Each node's stderr is kept across restarts (Logs) so that a
// failing test can print what every incarnation said.
//
// Not thread-safe: drive a Cluster from one thread (tests may talk to its nodes from many).
#ifndef KV_TESTS_CLUSTER_UTIL_H_
#define KV_TESTS_CLUSTER_UTIL_H_

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/test_util.h"

namespace kv::testing {

class Cluster {
 public:
  struct Options {
    int nodes = 3;
    int replication_factor = 3;  // --replication_factor
    int write_quorum = 2;        // --write_quorum (default W)
    int read_quorum = 1;         // --read_quorum (default R)
    // Indexes of nodes started with --seeds=<node 0's address> instead of --peers (they learn
    // the members from node 0, which must not be one of them; the others still list them).
    std::vector<size_t> seeds_only;
    // Indexes of nodes that are not in the layout: left out of --peers, not started by Start;
    // Restart(index) starts one with --seeds=<node 0's address>, and it waits to be joined.
    std::vector<size_t> joiners;
    // Added to every node's command line (e.g. "--fault_replication_delay=1s").
    std::vector<std::string> extra_flags;
    // Added to one node's command line, by index, after extra_flags (SetNodeFlags changes them).
    std::map<size_t, std::vector<std::string>> node_flags;
    // Added to one node's environment, by index (e.g. LD_PRELOAD), at every (re)start.
    std::map<size_t, std::map<std::string, std::string>> node_env;
    // How long each (re)start may take until the node serves.
    absl::Duration start_timeout = absl::Seconds(60);
  };

  // Starts the nodes and waits until all serve. On failure nothing is left running, and the
  // error carries the stderr of the node that failed.
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(Options options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  size_t size() const { return nodes_.size(); }
  const Options& options() const { return options_; }
  // "n1".."nK" for indexes 0..K-1.
  std::string node_id(size_t index) const;
  // The index of node `node_id`, if it is a member.
  std::optional<size_t> IndexOf(const std::string& node_id) const;
  // "127.0.0.1:PORT".
  std::string endpoint(size_t index) const;
  std::vector<std::string> endpoints() const;
  std::string data_dir(size_t index) const;
  // The members as --peers lists them (each node is given them starting from itself).
  const std::string& peers_flag() const { return peers_flag_; }
  // The running process's pid, or -1 when the node is not running.
  pid_t pid(size_t index);
  // False once the node has exited (stopped, killed, or crashed); a paused node is running.
  bool running(size_t index);

  // SIGTERM, then waits up to `timeout` for a clean exit; returns the exit code (0 is clean).
  // Kills it (SIGKILL) if it has not exited by then, and returns DEADLINE_EXCEEDED.
  absl::StatusOr<int> Stop(size_t index, absl::Duration timeout = absl::Seconds(30));
  // SIGKILL (kill -9) and reap.
  void Kill(size_t index);
  // Starts a node that is not running again, on the same port and data directory, and waits
  // until it serves. FAILED_PRECONDITION if it is still running.
  absl::Status Restart(size_t index);
  // Kill, then Restart.
  absl::Status KillAndRestart(size_t index);
  // Replaces node `index`'s own flags (Options::node_flags) from its next (re)start on.
  void SetNodeFlags(size_t index, std::vector<std::string> flags) {
    options_.node_flags[index] = std::move(flags);
  }
  // SIGSTOP / SIGCONT: the node stops answering, its connections stay open. Pause returns once
  // every thread of the node has stopped (false if that took over 10 s, or it was not running).
  bool Pause(size_t index);
  void Resume(size_t index);

  // Stops every node at once, as at the end of a test: SIGCONT and SIGTERM to each running node,
  // then waits up to `timeout` for all of them. OK if every node exited cleanly (code 0) and no
  // node had exited without being stopped or killed through this class; otherwise an error
  // naming each such node and its exit code (nodes still running at the deadline are killed).
  absl::Status StopAll(absl::Duration timeout = absl::Seconds(30));

  // Lines of the nodes' logs that report a sanitizer finding (AddressSanitizer,
  // LeakSanitizer, UndefinedBehaviorSanitizer), labelled with the node; empty if there is none.
  std::string SanitizerReports();

  // Everything the node wrote to stderr, over all its incarnations.
  std::string Logs(size_t index);
  // The last `max_bytes` of every node's Logs, labelled, for failure messages.
  std::string LogTails(size_t max_bytes = 4000);

 private:
  bool IsJoiner(size_t index) const {
    return std::find(options_.joiners.begin(), options_.joiners.end(), index) !=
           options_.joiners.end();
  }
  struct Node {
    std::string id;
    int port = 0;
    std::string data_dir;
    Subprocess process;
    bool started = false;           // process holds a process that was started
    bool expected_running = false;  // started, and not stopped or killed through this class
    bool served = false;            // some incarnation served (its port is known to others)
    std::string earlier_logs;       // stderr of incarnations before the current one
  };

  explicit Cluster(Options options);
  std::vector<std::string> Argv(size_t index) const;
  // The --peers value node `index` is given: the members, starting from that node.
  std::string PeersFlagFor(size_t index) const;
  // Starts node `index` without waiting.
  absl::Status Launch(size_t index);
  // Waits until node `index` serves, or fails if it exits or `timeout` passes.
  absl::Status AwaitServing(size_t index, absl::Duration timeout);
  // Keeps the current incarnation's stderr before the process is replaced.
  void KeepLogs(Node& node);

  Options options_;
  TempDir dir_;  // declared before nodes_: the processes die before their directories go
  std::string peers_flag_;
  std::vector<std::string> peers_;  // "id=host:port" of each member, in node order
  std::vector<Node> nodes_;
  std::vector<std::string> unexpected_exits_;  // found by Restart, reported by StopAll
};

}  // namespace kv::testing

#endif  // KV_TESTS_CLUSTER_UTIL_H_

// NodeConfig: every setting of a kvnode process, read from command-line flags and an optional
// config file through one table of settings, so that a flag and a file line mean the same thing.
//
// Command line: `--name=value`, `--name value`, or a bare `--name` for booleans (`-` and `_` are
// interchangeable in names). `--config=FILE` reads FILE first: one `name = value` per line,
// blank lines and `#` comments (whole lines, or after whitespace) ignored, values optionally in
// double quotes. Flags override the file wherever they appear on the command line.
//
// Errors: INVALID_ARGUMENT with a message that names the flag, or the file and line, says what
// was wrong, and points at `kvnode --help`: unknown settings, malformed or out-of-range values,
// missing values, a setting given twice in the same source, positional arguments, and config
// files that cannot be read.
//
// Values and free functions; no shared state. Thread-compatible.
#ifndef KV_NODE_CONFIG_H_
#define KV_NODE_CONFIG_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "node/limits.h"
#include "node/log.h"
#include "node/ring.h"
#include "storage/small_file.h"

namespace kv {

struct NodeConfig {
  std::string node_id = "n1";
  // The cluster this node belongs to (node/cluster_name.h); stored in the data directory.
  std::string cluster_name = "kv";
  std::string listen = "127.0.0.1:7700";
  // IPV4:PORT of the HTTP server of the Prometheus metrics (node/metrics.h); empty: none.
  std::string metrics_listen;
  // TLS (node/tls.h): all three files, or none for plaintext. With tls_client_auth, callers
  // (peers and clients) must present a certificate signed by the CA.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  bool tls_client_auth = true;
  // Patterns of the hosts whose certificates may call the internal Replica service
  // (node/certificate_authorizer.h); empty: any certificate the CA signed.
  std::vector<std::string> tls_peer_names;
  // Patterns of the names whose certificates may change the membership and start anti-entropy
  // runs and repairs (node/certificate_authorizer.h); empty: any certificate the CA signed.
  std::vector<std::string> tls_admin_names;
  // How often the node reads the TLS files again to install a rotated set; zero: never.
  absl::Duration tls_reload_interval = absl::Minutes(1);
  // Empty until parsing finishes; ParseNodeCommandLine fills in "./kvdata/<node_id>".
  std::string data_dir;
  std::string config_file;  // the file the settings came from, if any
  bool sync_writes = false;
  // RocksDB's block cache: data blocks, and the index and filter partitions of table files.
  int block_cache_mb = 64;
  int executor_threads = 8;
  // Commit writes on the executor rather than on the gRPC thread that receives them.
  bool commit_on_executor = false;
  Limits limits;
  absl::Duration idempotency_ttl = absl::Hours(24);
  // Writes marked as first attempts (PutRequest.first_attempt) skip the token lookup.
  bool trust_first_attempts = true;
  absl::Duration shutdown_drain = absl::Milliseconds(500);
  absl::Duration shutdown_grace = absl::Seconds(10);
  LogLevel log_level = LogLevel::kInfo;
  // Cluster membership (ID=HOST:PORT[@ZONE],...), the same list on every node; it must name this
  // node. Empty: a cluster of this node alone.
  std::vector<Member> peers;
  // HOST:PORT of nodes to learn the member list from when `peers` is empty (and to gossip with
  // while no other member is known).
  std::vector<std::string> seeds;
  // Gossip: one push-pull exchange with a random member per interval; a member whose heartbeat
  // does not advance for failure_timeout is DOWN. A seeds-only node waits up to seed_timeout
  // for a seed to tell it the members before it gives up starting.
  absl::Duration gossip_interval = absl::Seconds(1);
  absl::Duration failure_timeout = absl::Seconds(5);
  absl::Duration seed_timeout = absl::Seconds(60);
  // A node outside the layout silent for this long is forgotten by gossip (Gossiper::Options::
  // forget_after); 0: never.
  absl::Duration gossip_forget_after = absl::Hours(1);
  int replication_factor = 3;  // N; capped by the number of members
  int write_quorum = 2;        // default W
  // How long a coordinated write waits for its W acknowledgements (ClusterOptions::ack_timeout).
  absl::Duration write_ack_timeout = absl::Seconds(4);
  int read_quorum = 1;  // default R
  // Merkle anti-entropy: one exchange with one peer per interval (0 disables), repair budget.
  absl::Duration anti_entropy_interval = absl::Seconds(30);
  double anti_entropy_keys_per_second = 2000;
  int anti_entropy_key_list_bytes = 4 << 20;
  // Merkle tree builds (at start, after a ring change or a failed write) read at most this many
  // index entries per second; 0: no cap.
  int merkle_scan_keys_per_second = 1000000;
  int handoff_mb_per_second = 100;  // join/leave handoff throughput limit per node; 0: none
  bool exit_after_leave = true;     // stop once a leave removed this node (handoff complete)
  // Removal of the records of keys this node no longer owns after a change completes
  // (node/unowned_record_cleaner.h): records read per second, delay before each removal.
  int cleanup_keys_per_second = 20000;
  absl::Duration cleanup_confirm_delay = absl::Seconds(10);
  // Tombstone purge: age before a purge is considered, delay between the two confirmations that
  // every replica holds the same tombstone, and how often candidates are looked for.
  absl::Duration tombstone_min_age = absl::Hours(24);
  absl::Duration tombstone_confirm_delay = absl::Minutes(1);
  absl::Duration tombstone_sweep_interval = absl::Seconds(10);
  // Fault point for tests and demos: every replication send waits this long first.
  absl::Duration fault_replication_delay = absl::ZeroDuration();
  // Testing aid: the format level gossiped to the other members (storage/format_level.h); 0:
  // this build's. 1 makes the node look like one built before levels existed.
  uint32_t fault_format_level = 0;
  // Testing aid: operations and their start tokens are kept in memory only (nothing is loaded).
  bool fault_forget_operations = false;
};

// What the command line asked for.
struct CommandLine {
  NodeConfig config;
  bool help = false;  // --help or -h: print NodeConfigHelp() and exit 0; `config` is unset
};

// Parses argv[1..] (argv[0], the program name, is skipped) and the config file it names.
absl::StatusOr<CommandLine> ParseNodeCommandLine(const std::vector<std::string>& argv);

// Files kvnode reads at start (the config file, TLS certificates and keys) are small; a bigger
// one is a mistake.
inline constexpr size_t kMaxConfigFileBytes = 1 << 20;

// Applies the `name = value` lines of a config file to `config`. `file_name` is used only in
// error messages. Exposed for tests; ParseNodeCommandLine reads the file itself.
absl::Status ApplyConfigFileContents(absl::string_view contents, absl::string_view file_name,
                                     NodeConfig* config);

// The --help text: usage, then every setting with its default and meaning.
std::string NodeConfigHelp();

}  // namespace kv

#endif  // KV_NODE_CONFIG_H_

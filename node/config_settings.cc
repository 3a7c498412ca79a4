#include "node/config_settings.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "node/certificate_authorizer.h"
#include "node/cluster_name.h"
#include "node/ring.h"
#include "storage/format_level.h"
#include "storage/host_port.h"
#include "storage/status_macros.h"

namespace kv::config_internal {
namespace {

absl::Status Expected(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("expected ", what));
}

absl::Status ParseBool(absl::string_view text, bool* out) {
  const std::string v = absl::AsciiStrToLower(text);
  if (v == "true" || v == "yes" || v == "on" || v == "1") {
    *out = true;
  } else if (v == "false" || v == "no" || v == "off" || v == "0") {
    *out = false;
  } else {
    return Expected("true or false");
  }
  return absl::OkStatus();
}

template <typename Int>
absl::Status ParseIntInRange(absl::string_view text, int64_t min, int64_t max, Int* out) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < min || v > max) {
    return Expected(absl::StrCat("an integer from ", min, " to ", max));
  }
  *out = static_cast<Int>(v);
  return absl::OkStatus();
}

// No duration setting means more than ten years; longer ones would overflow time arithmetic
// (an idempotency window added to a timestamp) or wait forever (a shutdown drain).
constexpr absl::Duration kLongestDurationSetting = absl::Hours(24 * 365 * 10);

// Above the longest a record can spend in flight to a replica (a read repair: answers up to
// Coordinator::Options::read_repair_max_age old, sent with a 2 s deadline; anti-entropy merges a
// pulled record within AntiEntropy::Options::max_pulled_record_age, 4 s): a shorter delay
// between the reaper's two confirmations could purge a tombstone before such a record, still
// holding the deleted value, arrives at a replica, and the value would come back.
constexpr absl::Duration kMinTombstoneConfirmDelay = absl::Seconds(5);

absl::Status ParseDurationAtLeast(absl::string_view text, absl::Duration min, absl::Duration* out) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < min || d > kLongestDurationSetting) {
    return Expected(absl::StrCat("a duration of at least ", absl::FormatDuration(min),
                                 " and at most 87600h (ten years), such as 30s, 15m or 24h"));
  }
  *out = d;
  return absl::OkStatus();
}

// A comma-separated list of certificate name patterns (node/certificate_authorizer.h).
absl::Status ParseNamePatterns(absl::string_view text, std::vector<std::string>* out) {
  std::vector<std::string> patterns;
  for (absl::string_view pattern : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    KV_RETURN_IF_ERROR(CertificateAuthorizer::ValidatePattern(pattern));
    patterns.emplace_back(pattern);
  }
  if (patterns.empty() && !absl::StripAsciiWhitespace(text).empty()) {
    return Expected("patterns separated by commas (an empty value: anyone)");
  }
  *out = std::move(patterns);
  return absl::OkStatus();
}

absl::Status ApplyNodeId(absl::string_view v, NodeConfig* c) {
  if (!IsValidNodeId(v)) {
    return Expected(
        "1 to 64 characters from A-Z a-z 0-9 _ . -, starting with a letter, a digit or _");
  }
  c->node_id = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyClusterName(absl::string_view v, NodeConfig* c) {
  if (!IsValidClusterName(v)) return Expected("1 to 64 characters from A-Z a-z 0-9 _ . -");
  c->cluster_name = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyListen(absl::string_view v, NodeConfig* c) {
  std::string host;
  int port = 0;
  if (absl::Status address = ParseHostPort(v, &host, &port); !address.ok()) {
    return Expected(absl::StrCat("HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:7700 (",
                                 address.message(), ")"));
  }
  c->listen = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyMetricsListen(absl::string_view v, NodeConfig* c) {
  if (v.empty()) {
    c->metrics_listen.clear();
    return absl::OkStatus();
  }
  // The HTTP server binds IPv4 addresses only (no names; Debian's civetweb has no IPv6).
  const size_t colon = v.rfind(':');
  bool ok = colon != absl::string_view::npos && colon > 0;
  if (ok) {
    const absl::string_view port = v.substr(colon + 1);
    int number = 0;
    // Digits only, and no leading zero but in "0" itself: one spelling per port.
    ok = !port.empty() && port.size() <= 5 && (port == "0" || port.front() != '0') &&
         std::all_of(port.begin(), port.end(),
                     [](char ch) { return absl::ascii_isdigit(static_cast<unsigned char>(ch)); }) &&
         ParseIntInRange(port, 0, 65535, &number).ok();
    in_addr address;
    ok = ok && inet_pton(AF_INET, std::string(v.substr(0, colon)).c_str(), &address) == 1;
  }
  if (!ok) {
    return Expected(
        "IPV4:PORT with a port from 0 to 65535 (0: any free one, logged at start), such as "
        "127.0.0.1:7800 or 0.0.0.0:9700 (an IPv4 address, not a name), or nothing for no "
        "metrics");
  }
  c->metrics_listen = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyPath(absl::string_view v, std::string* out) {
  if (v.empty()) return Expected("a file path");
  *out = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyDataDir(absl::string_view v, NodeConfig* c) {
  if (v.empty()) return Expected("a directory path");
  c->data_dir = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyConfigFile(absl::string_view v, NodeConfig* c) {
  if (v.empty()) return Expected("a file path");
  c->config_file = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyLogLevel(absl::string_view v, NodeConfig* c) {
  for (LogLevel level : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (absl::AsciiStrToLower(v) == LogLevelName(level)) {
      c->log_level = level;
      return absl::OkStatus();
    }
  }
  return Expected("one of debug, info, warn, error");
}

absl::Status ApplySeeds(absl::string_view v, NodeConfig* c) {
  std::vector<std::string> seeds;
  if (absl::StripAsciiWhitespace(v).empty()) {  // no seeds
    c->seeds.clear();
    return absl::OkStatus();
  }
  for (absl::string_view seed : absl::StrSplit(v, ',')) {
    seed = absl::StripAsciiWhitespace(seed);
    if (seed.empty()) {
      return Expected(absl::StrCat(
          "HOST:PORT entries separated by commas, such as 10.0.0.1:7700,10.0.0.2:7700 (an empty "
          "entry in \"",
          v, "\")"));
    }
    std::string host;
    int port = 0;
    if (absl::Status address = ParseHostPort(seed, &host, &port); !address.ok()) {
      return Expected(
          absl::StrCat("HOST:PORT entries separated by commas, such as 10.0.0.1:7700,10.0.0.2:7700 "
                       "(bad entry \"",
                       seed, "\": ", address.message(), ")"));
    }
    if (absl::StrContains(seed, '=') || absl::StrContains(seed, '@')) {
      return Expected(absl::StrCat(
          "HOST:PORT entries, not ID=HOST:PORT@ZONE as in --peers (bad entry \"", seed, "\")"));
    }
    if (std::find(seeds.begin(), seeds.end(), seed) != seeds.end()) {
      return Expected(absl::StrCat("each seed once (\"", seed, "\" is listed twice)"));
    }
    seeds.emplace_back(seed);
  }
  c->seeds = std::move(seeds);
  return absl::OkStatus();
}

// The table. Order is the order of --help.
}  // namespace

const std::vector<Setting>& Settings() {
  static const auto* const settings = new std::vector<Setting>{
      {"config", "FILE", false, ApplyConfigFile,
       [](const NodeConfig& c) { return std::string("none"); },
       "Read settings from FILE, one `name = value` per line (# starts a comment). Flags "
       "override the file."},
      {"node_id", "NAME", false, ApplyNodeId, [](const NodeConfig& c) { return c.node_id; },
       "This node's id: 1 to 64 characters from A-Z a-z 0-9 _ . - (with a per-data-directory "
       "epoch it stamps every version this node creates)."},
      {"cluster_name", "NAME", false, ApplyClusterName,
       [](const NodeConfig& c) { return c.cluster_name; },
       "The cluster this node belongs to: 1 to 64 characters from A-Z a-z 0-9 _ . -, the same "
       "on every member. Nodes answer calls from nodes of another cluster with UNAVAILABLE (no "
       "replication, gossip or forwarded writes between clusters), and a data directory keeps "
       "the name of its first start that knew its cluster layout: a start under another is "
       "refused."},
      {"listen", "HOST:PORT", false, ApplyListen, [](const NodeConfig& c) { return c.listen; },
       "Address of the gRPC server (KV, Admin and Replica services, health checking, "
       "reflection)."},
      {"metrics_listen", "IPV4:PORT", false, ApplyMetricsListen,
       [](const NodeConfig& c) { return c.metrics_listen.empty() ? "none" : c.metrics_listen; },
       "Address of the HTTP server that serves the node's metrics in the Prometheus text "
       "format at /metrics (requests by method and status, replication lag, outbox depth, "
       "member liveness, anti-entropy; see the README). Empty: no metrics server."},
      {"tls_cert_file", "FILE", false,
       [](absl::string_view v, NodeConfig* c) { return ApplyPath(v, &c->tls_cert_file); },
       [](const NodeConfig& c) { return c.tls_cert_file.empty() ? "none" : c.tls_cert_file; },
       "PEM certificate of this node. With --tls_key_file and --tls_ca_file, the gRPC server "
       "and every connection to a peer use TLS (the certificate must name the host this node "
       "has in --peers); without the three, plaintext."},
      {"tls_key_file", "FILE", false,
       [](absl::string_view v, NodeConfig* c) { return ApplyPath(v, &c->tls_key_file); },
       [](const NodeConfig& c) { return c.tls_key_file.empty() ? "none" : c.tls_key_file; },
       "PEM private key (unencrypted) of --tls_cert_file."},
      {"tls_ca_file", "FILE", false,
       [](absl::string_view v, NodeConfig* c) { return ApplyPath(v, &c->tls_ca_file); },
       [](const NodeConfig& c) { return c.tls_ca_file.empty() ? "none" : c.tls_ca_file; },
       "PEM certificate(s) of the CA that signed the members' certificates (and, with "
       "--tls_client_auth, the clients')."},
      {"tls_client_auth", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->tls_client_auth); },
       [](const NodeConfig& c) { return std::string(c.tls_client_auth ? "true" : "false"); },
       "With TLS: require a certificate signed by --tls_ca_file from every caller (mutual TLS; "
       "peers present their node certificate). false: clients need only trust the CA."},
      {"tls_peer_names", "PATTERN,...", false,
       [](absl::string_view v, NodeConfig* c) { return ParseNamePatterns(v, &c->tls_peer_names); },
       [](const NodeConfig& c) {
         return c.tls_peer_names.empty() ? std::string("any")
                                         : absl::StrJoin(c.tls_peer_names, ",");
       },
       "With mutual TLS: only callers whose certificate names a host matching one of these "
       "patterns (`*` stands for any run of characters but '.', e.g. node*,"
       "*.kvnode.prod.svc.cluster.local) may call the internal Replica service (replication, "
       "anti-entropy, handoff, gossip), and have a write they pass on treated as forwarded; "
       "others get PERMISSION_DENIED there, and their writes are coordinated as clients'. "
       "Empty: any certificate the CA signed, clients' included."},
      {"tls_admin_names", "PATTERN,...", false,
       [](absl::string_view v, NodeConfig* c) { return ParseNamePatterns(v, &c->tls_admin_names); },
       [](const NodeConfig& c) {
         return c.tls_admin_names.empty() ? std::string("any")
                                          : absl::StrJoin(c.tls_admin_names, ",");
       },
       "With mutual TLS: only callers whose certificate names a match of one of these patterns "
       "(as --tls_peer_names) may change the membership (kvctl cluster join/leave/remove), "
       "run anti-entropy, or start and cancel repairs and other operations (kvctl operation "
       "cancel); others get PERMISSION_DENIED. The KV service and "
       "the "
       "status calls stay open to every certificate the CA signed. Needs --tls_peer_names (or "
       "a client could gossip a cluster layout). Empty: any."},
      {"tls_reload_interval", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) -> absl::Status {
         absl::Duration d;
         if (!absl::ParseDuration(v, &d) || d == absl::InfiniteDuration() ||
             (d != absl::ZeroDuration() && d < absl::Seconds(1))) {
           return Expected("0 (never) or a duration of at least 1s such as 30s or 5m");
         }
         c->tls_reload_interval = d;
         return absl::OkStatus();
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.tls_reload_interval); },
       "With TLS: how often to read the three TLS files again. A changed set that passes the "
       "start checks (PEM, key of the certificate, usable as server and client, verified by "
       "the CA file, valid now) is used "
       "for new connections within a second, without a restart; one that fails them is logged "
       "and refused, and the node keeps its certificate. 0: read them at start only."},
      {"data_dir", "DIR", false, ApplyDataDir,
       [](const NodeConfig& c) { return std::string("./kvdata/<node_id>"); },
       "RocksDB data directory, created if missing. Only one kvnode may use it at a time."},
      {"sync_writes", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->sync_writes); },
       [](const NodeConfig& c) { return std::string(c.sync_writes ? "true" : "false"); },
       "fsync the write-ahead log before acknowledging a write. Without it an acknowledged "
       "write survives a crash of kvnode but not of the machine (its copies on other replicas "
       "survive: after such a crash the node takes a new actor epoch, so that its new versions "
       "never reuse the dots of writes it lost)."},
      {"block_cache_mb", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 8, 1 << 20, &c->block_cache_mb);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.block_cache_mb); },
       "RocksDB block cache in MiB (8 to 1048576): data blocks and the index and filter "
       "partitions of table files. A lookup of a new idempotency token reads a filter "
       "partition of each level of table files from the cache, or from the file when it is not "
       "there: a day of tokens at 1,000 writes a second has about 110 MB of filters."},
      {"peers", "ID=HOST:PORT,...", false,
       [](absl::string_view v, NodeConfig* c) -> absl::Status {
         absl::StatusOr<std::vector<Member>> members = ParseMembers(v);
         if (!members.ok()) return members.status();
         c->peers = *std::move(members);
         return absl::OkStatus();
       },
       [](const NodeConfig& c) { return FormatMembers(c.peers); },
       "Every member of the cluster, this node included, as ID=HOST:PORT or ID=HOST:PORT@ZONE, "
       "comma-separated, each id and each address once; the same list on every node. Empty: the "
       "members that --seeds know, or without seeds a cluster of this node alone."},
      {"seeds", "HOST:PORT,...", false, ApplySeeds,
       [](const NodeConfig& c) {
         return c.seeds.empty() ? std::string("none") : absl::StrJoin(c.seeds, ",");
       },
       "Nodes to learn the cluster from, comma-separated. Without --peers, the node asks the "
       "seeds for the member list at start (and does not serve until one answers, for at most "
       "seed_timeout). A node the cluster layout does not list yet serves as a forwarding "
       "coordinator and waits to be joined: kvctl cluster join NODE_ID --commit."},
      {"gossip_interval", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Milliseconds(10), &c->gossip_interval);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.gossip_interval); },
       "Gossip: how often this node bumps its heartbeat and exchanges its membership table "
       "with one random member (push-pull)."},
      {"failure_timeout", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Milliseconds(30), &c->failure_timeout);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.failure_timeout); },
       "A member whose gossiped heartbeat has not advanced for this long is DOWN (requests "
       "route around it; its writes wait in the outbox); UP again as soon as it advances. At "
       "least 3 gossip intervals."},
      {"gossip_forget_after", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::ZeroDuration(), &c->gossip_forget_after);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.gossip_forget_after); },
       "Gossip forgets a node outside the cluster layout (one that left, was removed, or waited "
       "to be joined and went away) once its heartbeat has not advanced for this long: it leaves "
       "the member list and kvctl cluster status, and is known again if it comes back. Members "
       "of the layout are never forgotten. 0: never. Otherwise at least twice failure_timeout."},
      {"seed_timeout", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Seconds(1), &c->seed_timeout);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.seed_timeout); },
       "Without --peers: how long to keep asking the seeds for the member list before giving "
       "up starting."},
      {"replication_factor", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 16, &c->replication_factor);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.replication_factor); },
       "Replicas of each key, N (1 to 16; capped by the number of members)."},
      {"write_quorum", "W", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 16, &c->write_quorum);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.write_quorum); },
       "Default W: replicas that must hold a write durably before it is acknowledged (1 to N)."},
      {"write_ack_timeout", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::ZeroDuration(), &c->write_ack_timeout);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.write_ack_timeout); },
       "How long a write waits for W replicas to confirm it; then it is answered UNAVAILABLE "
       "marked kv-write-stored (stored here, still replicating; retry with the same token). "
       "0: no limit."},
      {"read_quorum", "R", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 16, &c->read_quorum);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.read_quorum); },
       "Default R: replicas asked by a read (1 to N)."},
      {"anti_entropy_interval", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::ZeroDuration(), &c->anti_entropy_interval);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.anti_entropy_interval); },
       "Merkle anti-entropy: how often this node compares its hash tree with one peer (round "
       "robin) and repairs the keys that differ, in both directions. 0 turns the periodic "
       "exchanges off; a forced one (kvctl repair) still runs."},
      {"anti_entropy_keys_per_second", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         int keys = 0;
         absl::Status status = ParseIntInRange(v, 1, 10000000, &keys);
         c->anti_entropy_keys_per_second = keys;
         return status;
       },
       [](const NodeConfig& c) { return absl::StrCat(c.anti_entropy_keys_per_second); },
       "Anti-entropy repair budget: keys compared and repaired per second at most."},
      {"anti_entropy_key_list_bytes", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 16 << 20, &c->anti_entropy_key_list_bytes);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.anti_entropy_key_list_bytes); },
       "Anti-entropy: a peer asked for the keys of the hash-tree segments that differ answers "
       "with about this many bytes of keys per call (whole segments, at least one; at most 16 "
       "MiB, a quarter of the largest peer message); the rest are asked for in further calls."},
      {"merkle_scan_keys_per_second", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 0, 1000000000, &c->merkle_scan_keys_per_second);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.merkle_scan_keys_per_second); },
       "Anti-entropy's hash trees are built from the Merkle index at start, after a membership "
       "change completes and after a failed write, reading at most this many keys per second. "
       "Until a build ends, exchanges, repairs and tombstone purging on a new ring wait, and "
       "the storage engine keeps the versions replaced meanwhile. 0: no limit."},
      {"handoff_mb_per_second", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         int mb = 0;
         absl::Status status = ParseIntInRange(v, 0, 100000, &mb);
         c->handoff_mb_per_second = mb;
         return status;
       },
       [](const NodeConfig& c) { return absl::StrCat(c.handoff_mb_per_second); },
       "Membership changes: each node streams the keys new owners gain at most this many MB "
       "(10^6 bytes) per second on average. 0: no limit."},
      {"exit_after_leave", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->exit_after_leave); },
       [](const NodeConfig& c) { return std::string(c.exit_after_leave ? "true" : "false"); },
       "When a leave (kvctl cluster leave) has removed this node, which happens only once "
       "everything it owned is held by the other members, stop as on SIGTERM. false: keep "
       "running as a forwarding coordinator until stopped."},
      {"cleanup_keys_per_second", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 10000000, &c->cleanup_keys_per_second);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.cleanup_keys_per_second); },
       "Once a join or leave completes, each node removes the records of keys it no longer owns "
       "in the background, reading at most this many records per second."},
      {"cleanup_confirm_delay", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Milliseconds(100), &c->cleanup_confirm_delay);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.cleanup_confirm_delay); },
       "A record this node no longer owns is removed only if it is unchanged this long after it "
       "was read; longer than a new cluster layout takes to reach every node."},
      {"tombstone_min_age", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Seconds(1), &c->tombstone_min_age);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.tombstone_min_age); },
       "A deleted key's tombstone is purged only when it is at least this old AND every replica "
       "of the key holds the same tombstone (checked twice, tombstone_confirm_delay apart)."},
      {"tombstone_confirm_delay", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, kMinTombstoneConfirmDelay, &c->tombstone_confirm_delay);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.tombstone_confirm_delay); },
       "Time between the two checks before a purge; longer than any record can be in flight "
       "(a peer call's 2 s deadline, plus up to 2 s that a read repair's answers may be old; "
       "anti-entropy merges a record it pulled within 4 s of asking for it, or not at all), "
       "so at least 5s; keep it at 10s or more."},
      {"tombstone_sweep_interval", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Milliseconds(100), &c->tombstone_sweep_interval);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.tombstone_sweep_interval); },
       "How often this node looks for tombstones to purge (for keys it is the primary of)."},
      {"fault_replication_delay", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::ZeroDuration(), &c->fault_replication_delay);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.fault_replication_delay); },
       "Testing aid: hold every replication send this long, so that replication lag can be "
       "watched (e.g. with kvctl describe-key). 0 in production."},
      {"fault_format_level", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 0, kFormatLevel, &c->fault_format_level);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.fault_format_level); },
       "Testing aid: the storage format level this node tells the others it reads (1: act as a "
       "node built before format levels, to test rolling upgrades). 0 in production: this "
       "build's level."},
      {"fault_forget_operations", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->fault_forget_operations); },
       [](const NodeConfig& c) {
         return std::string(c.fault_forget_operations ? "true" : "false");
       },
       "Testing aid: neither load the operations (and their start tokens) an earlier run stored "
       "nor store new ones (act as a node built before operations were kept on disk: its "
       "membership changes are completed by the other nodes' takeover). false in production."},
      {"executor_threads", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 1024, &c->executor_threads);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.executor_threads); },
       "Worker threads that run storage work other than client writes (replication, repair, "
       "reads from disk), so that gRPC threads do not block on it (1 to 1024)."},
      {"max_key_bytes", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, kMaxKeyBytesCeiling, &c->limits.max_key_bytes);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.limits.max_key_bytes); },
       "Largest key accepted, in bytes (1 to 65536); longer keys get INVALID_ARGUMENT."},
      {"max_value_bytes", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 20 << 20, &c->limits.max_value_bytes);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.limits.max_value_bytes); },
       "Largest value accepted, in bytes (1 to 20971520: at most max_record_bytes); larger "
       "values get INVALID_ARGUMENT."},
      {"max_record_bytes", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1 << 16, 20 << 20, &c->limits.max_record_bytes);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.limits.max_record_bytes); },
       "Largest record (a key's siblings and their metadata) a write may make, in bytes (65536 "
       "to 20971520, at least max_value_bytes; at most a third of the 60 MiB a replication "
       "message carries, for the siblings three coordinators may each add); a write that would "
       "make a key's record larger gets FAILED_PRECONDITION until the key's siblings are "
       "resolved with a context."},
      {"idempotency_ttl", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Seconds(1), &c->idempotency_ttl);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.idempotency_ttl); },
       "How long an idempotency token is remembered; a retry after that creates a new version. "
       "Also how far apart two copies of one retried write may be; use the same value on every "
       "node."},
      {"commit_on_executor", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->commit_on_executor); },
       [](const NodeConfig& c) { return std::string(c.commit_on_executor ? "true" : "false"); },
       "Commit writes (the RocksDB write, and its fsync with sync_writes) on the node's "
       "executor threads, so that gRPC's threads never wait on storage. false: the gRPC thread "
       "that receives a write commits it, and the writes queued meanwhile, when no other thread "
       "is committing (less CPU per write: fewer thread hand-offs)."},
      {"trust_first_attempts", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->trust_first_attempts); },
       [](const NodeConfig& c) { return std::string(c.trust_first_attempts ? "true" : "false"); },
       "Record the token of a write its client marks as a first attempt without looking it up "
       "(about 1.1 times the Puts per second on one node). false: look every token up, for "
       "clients behind something that may send one call twice (a retrying proxy, a gRPC retry "
       "policy) that still mark first attempts."},
      {"shutdown_drain", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::ZeroDuration(), &c->shutdown_drain);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.shutdown_drain); },
       "On SIGTERM or SIGINT, how long the node first answers new requests with UNAVAILABLE "
       "(and health checks with NOT_SERVING) so that clients move to other nodes, before it "
       "stops accepting connections."},
      {"shutdown_grace", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::ZeroDuration(), &c->shutdown_grace);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.shutdown_grace); },
       "After the drain, how long in-flight requests may run before they are cancelled."},
      {"log_level", "LEVEL", false, ApplyLogLevel,
       [](const NodeConfig& c) { return std::string(LogLevelName(c.log_level)); },
       "Least severe log level written to stderr: debug, info, warn or error."},
  };
  return *settings;
}

const Setting* FindSetting(absl::string_view name) {
  std::string normalized(name);
  for (char& ch : normalized) {
    if (ch == '-') ch = '_';
  }
  for (const Setting& setting : Settings()) {
    if (setting.name == normalized) return &setting;
  }
  return nullptr;
}

}  // namespace kv::config_internal

#include "node/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "storage/format_level.h"

namespace kv {
namespace {

constexpr absl::string_view kHelpHint = "Run 'kvnode --help' to list every setting.";

// One setting. `apply` parses a value into the config; its error says only what is wrong with
// the value ("expected ..."), and the caller adds where the value came from.
struct Setting {
  absl::string_view name;
  absl::string_view value_name;  // shown in --help: --name=VALUE
  bool is_bool;
  absl::Status (*apply)(absl::string_view value, NodeConfig* config);
  std::string (*show)(const NodeConfig& config);  // the current value, for --help defaults
  absl::string_view help;
};

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

absl::Status ParseDurationAtLeast(absl::string_view text, absl::Duration min, absl::Duration* out) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration() || d < min) {
    return Expected(absl::StrCat("a duration of at least ", absl::FormatDuration(min),
                                 " such as 30s, 15m or 24h"));
  }
  *out = d;
  return absl::OkStatus();
}

absl::Status ApplyNodeId(absl::string_view v, NodeConfig* c) {
  bool ok = !v.empty() && v.size() <= 64;
  for (char ch : v) {
    ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' ||
                ch == '-');
  }
  if (!ok) return Expected("1 to 64 characters from A-Z a-z 0-9 _ . -");
  c->node_id = std::string(v);
  return absl::OkStatus();
}

absl::Status ApplyListen(absl::string_view v, NodeConfig* c) {
  const size_t colon = v.rfind(':');
  int port = 0;
  const bool ok = colon != absl::string_view::npos && colon > 0 &&
                  ParseIntInRange(v.substr(colon + 1), 1, 65535, &port).ok();
  if (!ok) return Expected("HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:7700");
  c->listen = std::string(v);
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
  for (absl::string_view seed : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
    seed = absl::StripAsciiWhitespace(seed);
    const size_t colon = seed.rfind(':');
    int port = 0;
    if (colon == absl::string_view::npos || colon == 0 ||
        !ParseIntInRange(seed.substr(colon + 1), 1, 65535, &port).ok()) {
      return Expected(
          absl::StrCat("HOST:PORT entries separated by commas, such as "
                       "10.0.0.1:7700,10.0.0.2:7700 (bad entry \"",
                       seed, "\")"));
    }
    seeds.emplace_back(seed);
  }
  c->seeds = std::move(seeds);
  return absl::OkStatus();
}

// The table. Order is the order of --help.
const std::vector<Setting>& Settings() {
  static const auto* const settings = new std::vector<Setting>{
      {"config", "FILE", false, ApplyConfigFile,
       [](const NodeConfig& c) { return std::string("none"); },
       "Read settings from FILE, one `name = value` per line (# starts a comment). Flags "
       "override the file."},
      {"node_id", "NAME", false, ApplyNodeId, [](const NodeConfig& c) { return c.node_id; },
       "This node's id: 1 to 64 characters from A-Z a-z 0-9 _ . - (with a per-data-directory "
       "epoch it stamps every version this node creates)."},
      {"listen", "HOST:PORT", false, ApplyListen, [](const NodeConfig& c) { return c.listen; },
       "Address of the gRPC server (KV, Admin and Replica services, health checking, "
       "reflection)."},
      {"data_dir", "DIR", false, ApplyDataDir,
       [](const NodeConfig& c) { return std::string("./kvdata/<node_id>"); },
       "RocksDB data directory, created if missing. Only one kvnode may use it at a time."},
      {"sync_writes", "BOOL", true,
       [](absl::string_view v, NodeConfig* c) { return ParseBool(v, &c->sync_writes); },
       [](const NodeConfig& c) { return std::string(c.sync_writes ? "true" : "false"); },
       "fsync the write-ahead log before acknowledging a write. Without it an acknowledged "
       "write survives a crash of kvnode but not of the machine."},
      {"peers", "ID=HOST:PORT,...", false,
       [](absl::string_view v, NodeConfig* c) -> absl::Status {
         absl::StatusOr<std::vector<Member>> members = ParseMembers(v);
         if (!members.ok()) return members.status();
         c->peers = *std::move(members);
         return absl::OkStatus();
       },
       [](const NodeConfig& c) { return FormatMembers(c.peers); },
       "Every member of the cluster, this node included, as ID=HOST:PORT or ID=HOST:PORT@ZONE, "
       "comma-separated; the same list on every node. Empty: the members that --seeds know, or "
       "without seeds a cluster of this node alone."},
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
         return ParseDurationAtLeast(v, absl::Seconds(1), &c->tombstone_confirm_delay);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.tombstone_confirm_delay); },
       "Time between the two checks before a purge; longer than any replication message can "
       "be in flight."},
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
      {"executor_threads", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 1024, &c->executor_threads);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.executor_threads); },
       "Worker threads that run storage work, so that gRPC threads never block (1 to 1024)."},
      {"max_key_bytes", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 64 << 10, &c->limits.max_key_bytes);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.limits.max_key_bytes); },
       "Largest key accepted, in bytes (1 to 65536); longer keys get INVALID_ARGUMENT."},
      {"max_value_bytes", "N", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseIntInRange(v, 1, 64 << 20, &c->limits.max_value_bytes);
       },
       [](const NodeConfig& c) { return absl::StrCat(c.limits.max_value_bytes); },
       "Largest value accepted, in bytes (1 to 67108864); larger values get INVALID_ARGUMENT."},
      {"idempotency_ttl", "DURATION", false,
       [](absl::string_view v, NodeConfig* c) {
         return ParseDurationAtLeast(v, absl::Seconds(1), &c->idempotency_ttl);
       },
       [](const NodeConfig& c) { return absl::FormatDuration(c.idempotency_ttl); },
       "How long an idempotency token is remembered; a retry after that creates a new version. "
       "Also how far apart two copies of one retried write may be; use the same value on every "
       "node."},
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

// Finds a setting by name; `-` and `_` are interchangeable.
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

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(message, ". ", kHelpHint));
}

// A value for a setting and where it came from, for error messages.
struct Assignment {
  const Setting* setting;
  std::string value;
};

absl::Status ApplyFlag(const Assignment& a, NodeConfig* config) {
  absl::Status status = a.setting->apply(a.value, config);
  if (status.ok()) return status;
  return UsageError(absl::StrCat("invalid value \"", a.value, "\" for flag --", a.setting->name,
                                 ": ", status.message()));
}

// Parses one command-line argument (and possibly the next) into `out`. `*i` is advanced past
// what was consumed.
absl::Status ParseFlag(const std::vector<std::string>& argv, size_t* i, Assignment* out) {
  absl::string_view arg = argv[*i];
  if (!absl::ConsumePrefix(&arg, "--")) {
    if (absl::StartsWith(arg, "-")) return UsageError(absl::StrCat("unknown flag ", arg));
    return UsageError(
        absl::StrCat("unexpected argument \"", arg, "\": settings are given as --name=value"));
  }
  const size_t eq = arg.find('=');
  const absl::string_view name = arg.substr(0, eq);
  out->setting = FindSetting(name);
  if (out->setting == nullptr) return UsageError(absl::StrCat("unknown flag --", name));
  if (eq != absl::string_view::npos) {
    out->value = std::string(arg.substr(eq + 1));
  } else if (out->setting->is_bool) {
    out->value = "true";
  } else if (*i + 1 < argv.size() && !absl::StartsWith(argv[*i + 1], "--")) {
    out->value = argv[++*i];
  } else {
    return UsageError(absl::StrCat("flag --", name, " needs a value, as in --", out->setting->name,
                                   "=", out->setting->value_name));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  auto error = [&path](absl::string_view why) {
    return UsageError(absl::StrCat("cannot read config file \"", path, "\": ", why));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return error("not a regular file");
  }
  std::string contents;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) contents.append(buf, static_cast<size_t>(n));
  const int read_errno = errno;
  close(fd);
  if (n < 0) return error(strerror(read_errno));
  return contents;
}

// Splits a config line "name = value  # comment" into name and value; false if malformed.
bool SplitConfigLine(absl::string_view line, absl::string_view* name, std::string* value) {
  const size_t eq = line.find('=');
  if (eq == absl::string_view::npos) return false;
  *name = absl::StripAsciiWhitespace(line.substr(0, eq));
  absl::string_view rest = absl::StripAsciiWhitespace(line.substr(eq + 1));
  if (absl::ConsumePrefix(&rest, "\"")) {
    const size_t close = rest.find('"');
    if (close == absl::string_view::npos) return false;
    *value = std::string(rest.substr(0, close));
    rest = absl::StripAsciiWhitespace(rest.substr(close + 1));
    return rest.empty() || absl::StartsWith(rest, "#");
  }
  for (size_t i = 1; i < rest.size(); ++i) {
    if (rest[i] == '#' && absl::ascii_isspace(static_cast<unsigned char>(rest[i - 1]))) {
      rest = absl::StripTrailingAsciiWhitespace(rest.substr(0, i));
      break;
    }
  }
  *value = std::string(rest);
  return !name->empty();
}

}  // namespace

absl::Status ApplyConfigFileContents(absl::string_view contents, absl::string_view file_name,
                                     NodeConfig* config) {
  std::map<std::string, int> seen_on_line;
  int line_number = 0;
  for (absl::string_view raw : absl::StrSplit(contents, '\n')) {
    ++line_number;
    const absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    const std::string where = absl::StrCat("config file \"", file_name, "\" line ", line_number);
    absl::string_view name;
    std::string value;
    if (!SplitConfigLine(line, &name, &value)) {
      return UsageError(absl::StrCat(where, ": expected `name = value`, got \"", line, "\""));
    }
    const Setting* setting = FindSetting(name);
    if (setting == nullptr) return UsageError(absl::StrCat(where, ": unknown setting ", name));
    if (setting->name == "config") {
      return UsageError(absl::StrCat(where, ": config cannot be set inside a config file"));
    }
    auto [it, inserted] = seen_on_line.emplace(std::string(setting->name), line_number);
    if (!inserted) {
      return UsageError(
          absl::StrCat(where, ": ", setting->name, " is already set on line ", it->second));
    }
    absl::Status status = setting->apply(value, config);
    if (!status.ok()) {
      return UsageError(absl::StrCat(where, ": invalid value \"", value, "\" for ", setting->name,
                                     ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandLine> ParseNodeCommandLine(const std::vector<std::string>& argv) {
  CommandLine result;
  for (size_t i = 1; i < argv.size(); ++i) {
    if (argv[i] == "--help" || argv[i] == "-h" || argv[i] == "-help") {
      result.help = true;
      return result;
    }
  }
  std::vector<Assignment> flags;
  std::set<absl::string_view> seen;
  for (size_t i = 1; i < argv.size(); ++i) {
    Assignment a;
    absl::Status status = ParseFlag(argv, &i, &a);
    if (!status.ok()) return status;
    if (!seen.insert(a.setting->name).second) {
      return UsageError(absl::StrCat("flag --", a.setting->name, " is given more than once"));
    }
    flags.push_back(std::move(a));
  }
  NodeConfig& config = result.config;
  for (const Assignment& a : flags) {
    if (a.setting->name != "config") continue;
    absl::Status status = ApplyFlag(a, &config);
    if (!status.ok()) return status;
    absl::StatusOr<std::string> contents = ReadConfigFile(config.config_file);
    if (!contents.ok()) return contents.status();
    status = ApplyConfigFileContents(*contents, config.config_file, &config);
    if (!status.ok()) return status;
  }
  for (const Assignment& a : flags) {
    absl::Status status = ApplyFlag(a, &config);
    if (!status.ok()) return status;
  }
  if (config.data_dir.empty()) config.data_dir = absl::StrCat("./kvdata/", config.node_id);
  if (!config.peers.empty()) {
    const bool listed = std::any_of(config.peers.begin(), config.peers.end(),
                                    [&](const Member& m) { return m.id == config.node_id; });
    if (!listed) {
      return UsageError(absl::StrCat("--peers does not list this node (--node_id=", config.node_id,
                                     "); list every member, this one included"));
    }
  }
  if (config.failure_timeout < 3 * config.gossip_interval) {
    return UsageError(absl::StrCat("failure_timeout (",
                                   absl::FormatDuration(config.failure_timeout),
                                   ") must be at least 3 gossip intervals (gossip_interval=",
                                   absl::FormatDuration(config.gossip_interval),
                                   "), or one lost exchange would mark live members DOWN"));
  }
  if (config.write_quorum > config.replication_factor ||
      config.read_quorum > config.replication_factor) {
    return UsageError(absl::StrCat("write_quorum (", config.write_quorum, ") and read_quorum (",
                                   config.read_quorum, ") must not exceed replication_factor (",
                                   config.replication_factor, ")"));
  }
  return result;
}

namespace {

// Wraps `text` into lines of at most `width` characters, each prefixed with `indent`.
std::string Wrap(absl::string_view text, absl::string_view indent, size_t width) {
  std::string out;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, indent, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, indent, line, "\n");
  return out;
}

}  // namespace

std::string NodeConfigHelp() {
  std::string out =
      "Usage: kvnode [--config=FILE] [--name=value ...]\n\n"
      "kvnode runs one storage node of the kv store and serves it over gRPC.\n"
      "Every setting below is a flag (--name=value, --name value, or a bare --name for\n"
      "booleans) and can also be a line `name = value` in the file given with --config.\n"
      "Flags override the file.\n\nSettings:\n";
  const NodeConfig defaults;
  for (const Setting& s : Settings()) {
    absl::StrAppend(&out, "  --", s.name, "=", s.value_name, "  (default: ", s.show(defaults),
                    ")\n", Wrap(s.help, "      ", 88));
  }
  absl::StrAppend(
      &out, "  --help, -h\n      Print this help and exit.\n\n",
      "Durations are written like 30s, 15m, 24h or 1h30m.\n\n"
      "Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT) or --help; 1 when the node\n"
      "cannot start or fails (data directory locked or not writable, address in use), or\n"
      "when a second signal interrupts a slow shutdown; 2 for bad flags or a bad config file.\n\n"
      "Example:\n"
      "  kvnode --node_id=n1 --listen=127.0.0.1:7700 --data_dir=/var/lib/kv/n1\n"
      "  kvctl --endpoints=127.0.0.1:7700 put hello world\n");
  return out;
}

}  // namespace kv

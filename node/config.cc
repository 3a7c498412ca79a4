#include "node/config.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "node/config_settings.h"

namespace kv {
namespace {

using config_internal::FindSetting;
using config_internal::Setting;
using config_internal::Settings;

constexpr absl::string_view kHelpHint = "Run 'kvnode --help' to list every setting.";

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
    // "--sync_writes false": a bare boolean flag means true, and takes no separate value.
    if (*i > 0 && (arg == "true" || arg == "false")) {
      absl::string_view previous = argv[*i - 1];
      if (absl::ConsumePrefix(&previous, "--") && previous.find('=') == absl::string_view::npos) {
        if (const Setting* flag = FindSetting(previous); flag != nullptr && flag->is_bool) {
          return UsageError(absl::StrCat("unexpected argument \"", arg, "\" after --", flag->name,
                                         ": a boolean flag takes its value with '=', as in --",
                                         flag->name, "=", arg));
        }
      }
    }
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
  absl::StatusOr<std::string> contents = ReadSmallRegularFile(path, kMaxConfigFileBytes);
  if (!contents.ok()) {
    return UsageError(
        absl::StrCat("cannot read config file \"", path, "\": ", contents.status().message()));
  }
  return contents;
}

// Splits a config line "name = value  # comment" into name and value; false if malformed.
bool SplitConfigLine(absl::string_view line, absl::string_view* name, std::string* value) {
  const size_t eq = line.find('=');
  if (eq == absl::string_view::npos) return false;
  *name = absl::StripAsciiWhitespace(line.substr(0, eq));
  if (name->empty()) return false;
  const absl::string_view after = line.substr(eq + 1);  // " value  # comment"
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(after);
  if (absl::ConsumePrefix(&rest, "\"")) {
    const size_t close = rest.find('"');
    if (close == absl::string_view::npos) return false;
    *value = std::string(rest.substr(0, close));
    rest = absl::StripAsciiWhitespace(rest.substr(close + 1));
    return rest.empty() || absl::StartsWith(rest, "#");
  }
  // A '#' after whitespace starts a comment, also the first one right after "name = " (the value
  // is then empty), counted in the line as written, before stripping.
  rest = after;
  for (size_t i = 1; i < rest.size(); ++i) {
    if (rest[i] == '#' && absl::ascii_isspace(static_cast<unsigned char>(rest[i - 1]))) {
      rest = rest.substr(0, i);
      break;
    }
  }
  *value = std::string(absl::StripAsciiWhitespace(rest));
  return true;
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
  const int tls_files =
      !config.tls_cert_file.empty() + !config.tls_key_file.empty() + !config.tls_ca_file.empty();
  if (tls_files != 0 && tls_files != 3) {
    return UsageError(
        "TLS needs all of --tls_cert_file, --tls_key_file and --tls_ca_file (or none of them "
        "for plaintext)");
  }
  for (const auto& [flag, patterns] : {std::pair<const char*, const std::vector<std::string>*>{
                                           "--tls_peer_names", &config.tls_peer_names},
                                       {"--tls_admin_names", &config.tls_admin_names}}) {
    if (!patterns->empty() && (tls_files == 0 || !config.tls_client_auth)) {
      return UsageError(absl::StrCat(flag,
                                     " needs mutual TLS (the three --tls_*_file flags and "
                                     "--tls_client_auth=true): it checks the certificates "
                                     "callers present"));
    }
  }
  if (!config.tls_admin_names.empty() && config.tls_peer_names.empty()) {
    return UsageError(
        "--tls_admin_names needs --tls_peer_names: without it every certificate the CA signed may "
        "call the internal Replica service, whose gossip can install a newer cluster layout, "
        "which would go around the administrators' check");
  }
  if (!config.metrics_listen.empty()) {
    const absl::string_view grpc_port =
        absl::string_view(config.listen).substr(config.listen.rfind(':') + 1);
    const absl::string_view metrics_port =
        absl::string_view(config.metrics_listen).substr(config.metrics_listen.rfind(':') + 1);
    int grpc_number = 0;
    int metrics_number = 0;
    // Compared as numbers: "018232" and "18232" are one port.
    if (absl::SimpleAtoi(grpc_port, &grpc_number) &&
        absl::SimpleAtoi(metrics_port, &metrics_number) && grpc_number == metrics_number) {
      return UsageError(absl::StrCat("--metrics_listen (", config.metrics_listen,
                                     ") must use another port than --listen (", config.listen,
                                     ")"));
    }
  }
  if (!config.peers.empty()) {
    const bool listed = std::any_of(config.peers.begin(), config.peers.end(),
                                    [&](const Member& m) { return m.id == config.node_id; });
    if (!listed) {
      return UsageError(absl::StrCat("--peers does not list this node (--node_id=", config.node_id,
                                     "); list every member, this one included"));
    }
    // Another member reached at exactly this node's --listen address would be this process
    // (a copied command line with the wrong --node_id): calls meant for it would come here.
    for (const Member& m : config.peers) {
      if (m.id != config.node_id && m.address == config.listen) {
        return UsageError(absl::StrCat("--listen (", config.listen,
                                       ") is the address --peers gives "
                                       "to member ",
                                       m.id, ", not to this node (--node_id=", config.node_id,
                                       "): check --node_id and --listen"));
      }
    }
  }
  if (config.failure_timeout < 3 * config.gossip_interval) {
    return UsageError(absl::StrCat("failure_timeout (",
                                   absl::FormatDuration(config.failure_timeout),
                                   ") must be at least 3 gossip intervals (gossip_interval=",
                                   absl::FormatDuration(config.gossip_interval),
                                   "), or one lost exchange would mark live members DOWN"));
  }
  if (config.gossip_forget_after != absl::ZeroDuration() &&
      config.gossip_forget_after < 2 * config.failure_timeout) {
    return UsageError(absl::StrCat("gossip_forget_after (",
                                   absl::FormatDuration(config.gossip_forget_after),
                                   ") must be 0 (never) or at least twice failure_timeout (",
                                   absl::FormatDuration(config.failure_timeout),
                                   "): a node is forgotten only well after it is DOWN"));
  }
  // Room for one value of the largest size with its key and metadata (its dot, token, context
  // and the writes it replaced): otherwise such a Put could never be stored.
  const size_t one_record =
      config.limits.max_value_bytes + config.limits.max_key_bytes + kRecordMetadataAllowance;
  if (config.limits.max_record_bytes < one_record) {
    return UsageError(absl::StrCat("max_record_bytes (", config.limits.max_record_bytes,
                                   ") must be at least max_value_bytes + max_key_bytes + ",
                                   kRecordMetadataAllowance, " (", one_record,
                                   "), or a Put of the largest value could never be stored"));
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
    const std::string shown = s.show(defaults);
    absl::StrAppend(&out, "  --", s.name, "=", s.value_name,
                    "  (default: ", shown.empty() ? "none" : shown, ")\n",
                    Wrap(s.help, "      ", 88));
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

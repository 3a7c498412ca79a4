// kvctl: the command line of the key-value store. See Usage() below (or `kvctl --help`).
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli_flags.h"
#include "client/kv_client.h"
#include "client/kvctl_commands.h"
#include "client/kvctl_format.h"

namespace kv::kvctl {
namespace {

constexpr char kDefaultEndpoint[] = "127.0.0.1:7700";

std::string Usage() {
  std::string commands;
  for (const CommandSpec& spec : Commands())
    absl::StrAppend(&commands, "  kvctl ", spec.synopsis, "\n");
  return absl::StrCat(
      "kvctl: command line of the replicated key-value store.\n"
      "\n"
      "Usage: kvctl [--endpoints=HOST:PORT,...] [--json] [--timeout=DURATION] COMMAND [ARGS]\n"
      "\n"
      "Commands:\n",
      commands,
      "  kvctl help                     this text (also --help, -h)\n"
      "\n"
      "  put           store VALUE under KEY. The value comes from the VALUE argument, from\n"
      "                --file=F, or from stdin when VALUE is '-' or absent and stdin is not a\n"
      "                terminal. Without --context the write is concurrent with whatever the key\n"
      "                holds and becomes a sibling; with the context printed by get it replaces\n"
      "                exactly the versions that get returned. --token sets your own idempotency\n"
      "                token: repeating a put with the same token creates no new version.\n"
      "                Without it kvctl makes a fresh one (JSON: \"idempotency_token\"); when a\n"
      "                put, delete, repair or commit fails in a way that may have applied it\n"
      "                (unreachable, timed out), the error names --token=T to retry it with.\n"
      "                --wait: after the write, poll describe-write (backoff 10ms doubling to\n"
      "                1s) until every replica holds it, or --wait-timeout passes (default 30s;\n"
      "                then exit 3: the write is stored but still PENDING somewhere). Prints\n"
      "                each replica's state; --json adds it as \"write_state\".\n"
      "                --w=W: replicas that must hold the write before it is acknowledged: a\n"
      "                count (1..N), quorum or all (default: the server's, normally 2).\n"
      "  get           print every live version (sibling) of KEY and its causal context. Several\n"
      "                siblings mean concurrent writes: merge them and put the result with\n"
      "                --context to resolve them. --r=R: replicas asked (count, quorum, all).\n"
      "  delete        delete KEY (with --context: only the versions that context saw).\n"
      "                --w, --wait and --wait-timeout as for put.\n"
      "  list          keys starting with PREFIX, one page (--limit keys; server default when\n"
      "                absent). --page-token continues from a previous page, --all fetches every\n"
      "                page. Listings are eventually consistent.\n"
      "  describe-key  each replica's versions of KEY, tombstones included, and whether the\n"
      "                replicas have converged.\n"
      "  describe-write  where the write WRITE_ID (printed by put/delete) has spread: each\n"
      "                replica applied, pending or unreachable, and overall PENDING or\n"
      "                REPLICATED (all N replicas hold it).\n"
      "  cluster status  the members as the first reachable endpoint sees them: reachability,\n"
      "                outbox depth (writes waiting for that member), dropped writes, last\n"
      "                error; N/W/R, and the replication lag p50/p99 of writes it coordinated.\n"
      "  cluster anti-entropy  Merkle anti-entropy with each peer of the first reachable\n"
      "                endpoint: exchanges, last exchange and how long it took, whether the\n"
      "                trees were in sync, keys found different and repaired. --ranges adds the\n"
      "                top-level ranges of each tree (1/256 of the key-hash space each) that\n"
      "                ever differed, with their last difference and repaired keys.\n"
      "  cluster join NODE_ID  plan adding NODE_ID (a kvnode started with --seeds that waits to\n"
      "                be joined): which share of the data moves from whom to whom and each\n"
      "                member's share after. Nothing changes without --commit, which starts the\n"
      "                change and prints its operation id (follow it with operation get): every\n"
      "                member hands off the keys the new node gains, reads and writes use old and\n"
      "                new owners until it completes. --layout-version=V refuses to commit if\n"
      "                the layout moved past the planned version. --token=T names the commit:\n"
      "                the same command with T again on the same node (a retry) prints the\n"
      "                first commit's operation and starts nothing, for 24h (so use a new T\n"
      "                for a new change, even an identical one). --wait: then poll the\n"
      "                operation until it ends (--wait-timeout, default 1h): exit 0 if it\n"
      "                SUCCEEDED, 3 if it FAILED or is still RUNNING.\n"
      "  cluster leave NODE_ID  the same for removing a member; once its operation SUCCEEDED,\n"
      "                everything it owned is held by the others and it may be stopped.\n"
      "  cluster remove NODE_ID  the same for a member that is down for good (disk lost, never\n"
      "                coming back): the other owners of its keys hand them off in its place;\n"
      "                refused while the node asked hears from it. Writes only it held are lost.\n"
      "                Also while a join or leave runs, for a member that died during it and\n"
      "                holds it up: that change goes on without it (its operation ends FAILED,\n"
      "                the remove's operation follows it to the end).\n"
      "  repair        force an anti-entropy exchange with every peer (--peer=ID: one) of the\n"
      "                first reachable endpoint. Prints the operation id at once (stdout) and\n"
      "                returns; --wait polls it until it ends (--wait-timeout, default 10m) and\n"
      "                exits 0 if it SUCCEEDED, 3 if it FAILED or is still RUNNING. --token=T\n"
      "                as for cluster join: repair with T again on that node is the same repair.\n"
      "  operation get  state (RUNNING, SUCCEEDED, FAILED with the error) and progress of the\n"
      "                operation ID (exit 0 whatever its state). Ids are NODE:INCARNATION-SEQ;\n"
      "                only node NODE knows it, also after it restarts, so the endpoints are\n"
      "                asked until NODE answers; finished operations are kept for 1h (the last\n"
      "                1000). Unknown id, or one of a node no endpoint is (while every\n"
      "                endpoint answers): exit 1; NODE or another endpoint not answering: 3.\n"
      "  operation wait  poll the operation ID until it ends (--wait-timeout, default 10m):\n"
      "                exit 0 if it SUCCEEDED, 3 if it FAILED or is still RUNNING.\n"
      "  operation cancel  stop the running repair ID: it ends FAILED (CANCELLED) now; an\n"
      "                exchange under way finishes. A membership change cannot be cancelled.\n"
      "  operation list  the operations the first reachable endpoint keeps, newest first.\n"
      "\n"
      "Global flags (before or after the command):\n"
      "  --endpoints=HOST:PORT,...  nodes to talk to; default $KV_ENDPOINTS, else ",
      kDefaultEndpoint,
      "\n"
      "  --json                     print exactly one JSON object on stdout, errors included:\n"
      "                             {\"error\": {\"code\": \"NOT_FOUND\", \"message\": \"...\"}}\n"
      "                             (--wait past its timeout: the result plus \"error\")\n"
      "  --timeout=DURATION         deadline of each call, retries included (e.g. 500ms, 5s;\n"
      "                             default 10s)\n"
      "  --tls-ca=FILE              talk TLS to nodes run with --tls_*: PEM CA that signed\n"
      "                             their certificates; default $KV_TLS_CA (none: plaintext)\n"
      "  --tls-cert=FILE, --tls-key=FILE  this client's PEM certificate and key, for nodes that\n"
      "                             require one (default $KV_TLS_CERT, $KV_TLS_KEY)\n"
      "\n"
      "Encoding: contexts are printed and accepted as web-safe base64. In JSON, keys and values\n"
      "that are not valid UTF-8 appear base64-encoded (standard alphabet) in a field with a\n"
      "_base64 suffix (\"value_base64\" instead of \"value\"). Use -- before a VALUE that starts\n"
      "with '-'.\n"
      "\n"
      "Exit codes:\n"
      "  0  success\n"
      "  1  key not found (operation get, wait, cancel: no such operation; cluster join,\n"
      "     leave, remove: a node the cluster does not know)\n"
      "  2  usage error (bad flag, unknown command, wrong arguments) or INVALID_ARGUMENT from\n"
      "     the store (e.g. an oversized key or value, a malformed context)\n"
      "  3  server or network error (unreachable endpoints, timeouts, a refusal such as\n"
      "     FAILED_PRECONDITION, anything else), or\n"
      "     put/delete --wait: the write is stored but did not reach every replica in time,\n"
      "     or repair --wait, operation wait, cluster ... --commit --wait: the operation\n"
      "     FAILED or is still RUNNING\n");
}

void PrintError(const absl::Status& status) {
  std::cerr << "kvctl: " << absl::StatusCodeToString(status.code()) << ": "
            << TerminalSafe(status.message()) << "\n";
  if (IsUsageError(status)) std::cerr << "Run 'kvctl help' for usage.\n";
  // How gRPC reports a TLS node hanging up on a plaintext client (or on a client without the
  // certificate it requires).
  if (status.code() == absl::StatusCode::kUnavailable &&
      absl::StrContains(status.message(), "Socket closed")) {
    std::cerr << "If the nodes run with TLS (kvnode --tls_*), give --tls-ca, and --tls-cert and "
                 "--tls-key when they require a client certificate.\n";
  }
}

// Prints the result or the error in the selected format and returns the exit code. A result
// whose own status is an error (put --wait that timed out) prints both.
int Finish(const absl::StatusOr<CommandOutput>& result, bool json) {
  if (result.ok()) {
    if (json) {
      nlohmann::json output = result->json;
      if (!result->status.ok()) output.update(ErrorToJson(result->status));
      std::cout << DumpJson(output) << std::endl;
    } else {
      std::fwrite(result->text.data(), 1, result->text.size(), stdout);
      std::fflush(stdout);
      std::cerr << result->notice;
      if (!result->status.ok()) PrintError(result->status);
    }
    return ExitCodeFor(result->status);
  }
  const absl::Status& status = result.status();
  if (json) {
    std::cout << DumpJson(ErrorToJson(status)) << std::endl;
  } else {
    PrintError(status);
  }
  return ExitCodeFor(status);
}

std::vector<cli::FlagSpec> AllFlags() {
  std::vector<cli::FlagSpec> specs = {
      {"endpoints", true}, {"json", false}, {"timeout", true}, {"help", false}};
  for (const cli::FlagSpec& tls : cli::TlsFlagSpecs()) specs.push_back(tls);
  for (const CommandSpec& command : Commands()) {
    specs.insert(specs.end(), command.flags.begin(), command.flags.end());
  }
  return specs;
}

// Checks arity and that only global flags and the command's own flags were given.
absl::Status CheckCommandLine(const CommandSpec& spec, const CommandInput& input) {
  if (input.args.size() < spec.min_args || input.args.size() > spec.max_args) {
    return UsageError(absl::StrCat("wrong number of arguments for ", spec.name, "; usage: kvctl ",
                                   spec.synopsis));
  }
  for (const auto& [name, value] : input.flags->flags) {
    if (name == "endpoints" || name == "json" || name == "timeout" || name == "help" ||
        absl::StartsWith(name, "tls-")) {
      continue;
    }
    bool allowed = false;
    for (const cli::FlagSpec& flag : spec.flags) allowed = allowed || flag.name == name;
    if (!allowed) {
      return UsageError(absl::StrCat("--", name, " is not a flag of ", spec.name, "; usage: kvctl ",
                                     spec.synopsis));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Client>> MakeClient(const cli::ParsedArgs& flags) {
  ClientOptions options;
  absl::StatusOr<std::vector<std::string>> endpoints =
      cli::ResolveEndpoints(flags.Get("endpoints"), kDefaultEndpoint);
  if (!endpoints.ok()) return UsageError(endpoints.status().message());
  options.endpoints = *std::move(endpoints);
  absl::StatusOr<cli::TlsFiles> tls = cli::ResolveTls(flags);
  if (!tls.ok()) return UsageError(tls.status().message());
  options.tls.enabled = tls->enabled;
  options.tls.ca_pem = std::move(tls->ca_pem);
  options.tls.cert_pem = std::move(tls->cert_pem);
  options.tls.key_pem = std::move(tls->key_pem);
  if (std::optional<std::string> timeout = flags.Get("timeout"); timeout.has_value()) {
    absl::StatusOr<absl::Duration> parsed = cli::ParseDurationFlag("timeout", *timeout);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    if (*parsed <= absl::ZeroDuration()) return UsageError("--timeout must be positive");
    options.call_deadline = *parsed;
  }
  if (options.endpoints.size() > 1) {
    // A hung endpoint then costs one attempt, leaving time to fail over to the others.
    options.attempt_timeout = options.call_deadline / 3;
  }
  return Client::Create(std::move(options));
}

// Whether the command line asks for JSON, for when it does not parse as a whole: --json is
// honoured even when another argument is bad, in each of its boolean spellings (the last one
// given wins; a malformed one counts as not given).
bool JsonAsked(const std::vector<std::string>& argv) {
  bool json = false;
  for (const std::string& arg : argv) {
    if (arg == "--") break;  // what follows is positional
    if (arg == "--json") {
      json = true;
    } else if (arg == "--no-json" || arg == "--nojson") {
      json = false;
    } else if (absl::StartsWith(arg, "--json=")) {
      absl::StatusOr<bool> value = cli::ParseBoolFlag("json", arg.substr(7));
      if (value.ok()) json = *value;
    }
  }
  return json;
}

int Main(const std::vector<std::string>& argv) {
  absl::StatusOr<cli::ParsedArgs> parsed = cli::ParseArgs(argv, AllFlags());
  if (!parsed.ok()) {
    return Finish(UsageError(parsed.status().message()), JsonAsked(argv));
  }
  const bool json = parsed->GetBool("json", false);
  std::vector<std::string> positional = parsed->positional;
  const bool want_help =
      parsed->GetBool("help", false) || (!positional.empty() && positional[0] == "help");
  if (want_help) {
    if (json) {
      std::cout << DumpJson({{"usage", Usage()}}) << std::endl;
    } else {
      std::cout << Usage();
    }
    return kExitOk;
  }
  std::vector<std::string> names;
  for (const CommandSpec& candidate : Commands()) names.push_back(candidate.name);
  if (positional.empty()) {
    return Finish(UsageError(absl::StrCat(
                      "no command given; commands: ", absl::StrJoin(names, ", "), ", help")),
                  json);
  }
  const std::string command = positional[0];
  const CommandSpec* spec = nullptr;
  for (const CommandSpec& candidate : Commands()) {
    if (candidate.name == command) spec = &candidate;
  }
  if (spec == nullptr) {
    return Finish(UsageError(absl::StrCat("unknown command '", command,
                                          "'; commands: ", absl::StrJoin(names, ", "), ", help")),
                  json);
  }
  CommandInput input;
  input.args.assign(positional.begin() + 1, positional.end());
  input.flags = &*parsed;
  if (absl::Status status = CheckCommandLine(*spec, input); !status.ok()) {
    return Finish(status, json);
  }
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient(*parsed);
  if (!client.ok()) return Finish(client.status(), json);
  return Finish(spec->run(**client, input), json);
}

}  // namespace
}  // namespace kv::kvctl

int main(int argc, char** argv) {
  kv::kvctl::GuardStandardDescriptors();
  std::vector<std::string> args(argv + 1, argv + argc);
  return kv::kvctl::Main(args);
}

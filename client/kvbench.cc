// kvbench: closed-loop load generator for the key-value store. See Usage() below.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "client/cli_flags.h"
#include "client/kv_client.h"
#include "client/kvbench_loop.h"
#include "client/kvbench_replication_lag.h"
#include "client/kvbench_workload.h"

namespace kv::bench {
namespace {

constexpr char kDefaultEndpoint[] = "127.0.0.1:7700";
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitFailure = 3;
constexpr absl::Duration kMaxFlagDuration =
    absl::Hours(24 * 366);  // --duration, --warmup, --timeout

std::string Usage() {
  return absl::StrCat(
      "kvbench: closed-loop load generator for the key-value store.\n"
      "\n"
      "Usage: kvbench [flags]\n"
      "\n"
      "Keeps --concurrency requests outstanding (each completion starts the next request) for\n"
      "--warmup, then measures for --duration, and reports throughput, errors by code and\n"
      "latency percentiles. It stops by itself after the preload (if any), the ceiling run (if\n"
      "any) and warmup + duration, plus at most --timeout to drain outstanding requests.\n"
      "\n"
      "Flags:\n"
      "  --endpoints=HOST:PORT,...  nodes to load; default $KV_ENDPOINTS, else ",
      kDefaultEndpoint,
      "\n"
      "  --workload=a|b|c|put|delete  a: 50% reads/50% updates (YCSB A), b: 95/5 (YCSB B),\n"
      "                             c: reads only (YCSB C), put: updates only, delete: 50%\n"
      "                             puts/50% deletes. Default a.\n"
      "  --concurrency=N            requests outstanding at all times (default 64)\n"
      "  --keys=N                   number of distinct keys (default 10000)\n"
      "  --value_size=BYTES         size of written values (default 100)\n"
      "  --distribution=zipfian|uniform  key popularity (default zipfian, as in YCSB)\n"
      "  --duration=DURATION        measured time (default 10s; each DURATION at most 366 days)\n"
      "  --warmup=DURATION          unmeasured time before it (default 1s)\n"
      "  --[no-]preload             write every key once before the run, each with the context\n"
      "                             of a read of it (so repeated runs add no siblings; default\n"
      "                             on for a, b, c; off for put)\n"
      "  --ceiling                  first run the same loop with Admin.Ping for warmup +\n"
      "                             duration; report its ops/s as the transport ceiling and the\n"
      "                             workload's ratio to it\n"
      "  --ceiling_endpoints=HOST:PORT,...  the nodes the ceiling's Pings go to (default\n"
      "                             --endpoints), e.g. one node of a cluster for a single-node\n"
      "                             ceiling; needs --ceiling\n"
      "  --rounds=N                 split the measured time into N rounds (default 1); with\n"
      "                             --ceiling each round measures the ceiling right before the\n"
      "                             workload, and the ratio reported is the median of the rounds'\n"
      "                             ratios (robust on a shared, noisy machine)\n"
      "  --rate=OPS                 start the workload's operations at OPS per second\n"
      "                             (default 0: as fast as the requests allow), e.g. half the\n"
      "                             maximum for a replication lag figure at half load. Slots\n"
      "                             missed while every request is outstanding are started later,\n"
      "                             and latencies count from each slot; the report says how much\n"
      "                             of the rate was achieved. The ceiling run is never paced\n"
      "  --timeout=DURATION         deadline of each request, retries included (default 2s)\n"
      "  --put_coalescing=N         Puts in flight to a node before further Puts wait and leave\n"
      "                             together as one PutBatch call (default 8, the client\n"
      "                             library's); 0 = one RPC per Put\n"
      "  --get_coalescing=N         the same for Gets and GetBatch calls (default 8); 0 = one\n"
      "                             RPC per Get\n"
      "  --[no-]first_attempt_marks  mark each write's first attempt as such, sparing the node\n"
      "                             a token lookup (default on, the client library's)\n"
      "  --seed=N                   seed of the key and operation choices (default 1)\n"
      "  --tls-ca=FILE, --tls-cert=FILE, --tls-key=FILE  TLS to nodes run with --tls_*, as\n"
      "                             for kvctl (default $KV_TLS_CA, $KV_TLS_CERT, $KV_TLS_KEY)\n"
      "  --json                     print one JSON object on stdout (progress stays on stderr)\n"
      "  --help                     this text\n"
      "\n"
      "Reads of keys that were never written (NOT_FOUND) count as successful operations and are\n"
      "reported separately. Latencies are of successful operations, in microseconds, from a\n"
      "log-bucketed histogram (relative error below 0.4%).\n"
      "\n"
      "After the run every endpoint is asked for its cluster status, and the replication lag\n"
      "(commit on the coordinator to every replica confirmed) of the recent writes each node\n"
      "coordinated is reported: p50, p99 and max are the largest of the nodes' own figures, an\n"
      "upper bound (JSON: replication_lag_p50_us, replication_lag_p99_us, omitted when no node\n"
      "has samples; replication_lag_nodes has each node's figures). A node's window holds its\n"
      "last 49,152-65,536 writes, so it can include the preload and earlier runs.\n"
      "\n"
      "Exit codes: 0 the run completed with at least one successful operation; 2 usage error\n"
      "(or the preload refused as INVALID_ARGUMENT, e.g. --value_size over the nodes' limit);\n"
      "3 the store could not be reached or every operation failed (the report still prints).\n");
}

struct BenchFlags {
  std::vector<std::string> endpoints;
  std::vector<std::string> ceiling_endpoints;  // empty: `endpoints`
  cli::TlsFiles tls;
  WorkloadConfig workload;
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration timeout = absl::Seconds(2);
  bool preload = true;
  bool ceiling = false;
  int rounds = 1;
  double rate = 0;  // ops/s cap of the workload; 0: none
  int put_coalescing = CoalescingOptions().max_in_flight;
  int get_coalescing = CoalescingOptions().max_in_flight;
  bool first_attempt_marks = ClientOptions().mark_first_attempts;
  bool json = false;
};

absl::StatusOr<BenchFlags> ParseFlags(const cli::ParsedArgs& args) {
  if (!args.positional.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", args.positional[0], "'; kvbench takes only flags"));
  }
  BenchFlags flags;
  flags.json = args.GetBool("json", false);
  flags.ceiling = args.GetBool("ceiling", false);
  absl::StatusOr<std::vector<std::string>> endpoints =
      cli::ResolveEndpoints(args.Get("endpoints"), kDefaultEndpoint);
  if (!endpoints.ok()) return endpoints.status();
  flags.endpoints = *std::move(endpoints);
  if (std::optional<std::string> text = args.Get("ceiling_endpoints"); text.has_value()) {
    if (!flags.ceiling) {
      return absl::InvalidArgumentError("--ceiling_endpoints needs --ceiling");
    }
    absl::StatusOr<std::vector<std::string>> ceiling = cli::ParseEndpoints(*text);
    if (!ceiling.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ceiling_endpoints: ", ceiling.status().message()));
    }
    flags.ceiling_endpoints = *std::move(ceiling);
  }
  absl::StatusOr<cli::TlsFiles> tls = cli::ResolveTls(args);
  if (!tls.ok()) return tls.status();
  flags.tls = *std::move(tls);

  absl::StatusOr<WorkloadSpec> spec = ParseWorkload(args.Get("workload").value_or("a"));
  if (!spec.ok()) return spec.status();
  flags.workload.spec = *spec;
  flags.preload = args.GetBool("preload", spec->preload_by_default);
  flags.first_attempt_marks =
      args.GetBool("first_attempt_marks", ClientOptions().mark_first_attempts);
  absl::StatusOr<KeyDistribution> distribution =
      ParseDistribution(args.Get("distribution").value_or("zipfian"));
  if (!distribution.ok()) return distribution.status();
  flags.workload.distribution = *distribution;

  struct IntFlag {
    const char* name;
    int64_t fallback, min, max;
    int64_t* out;
  };
  int64_t concurrency = 0, keys = 0, value_size = 0, seed = 0, rounds = 0, rate = 0;
  int64_t put_coalescing = 0, get_coalescing = 0;
  const IntFlag int_flags[] = {
      {"concurrency", 64, 1, 100000, &concurrency},
      {"put_coalescing", CoalescingOptions().max_in_flight, 0, 1000, &put_coalescing},
      {"get_coalescing", CoalescingOptions().max_in_flight, 0, 1000, &get_coalescing},
      {"rounds", 1, 1, 100, &rounds},
      {"rate", 0, 0, 100'000'000, &rate},
      {"keys", 10000, 1, 1'000'000'000, &keys},
      {"value_size", 100, 0, 16 << 20, &value_size},
      {"seed", 1, 0, INT64_MAX, &seed}};
  for (const IntFlag& flag : int_flags) {
    *flag.out = flag.fallback;
    if (std::optional<std::string> text = args.Get(flag.name); text.has_value()) {
      absl::StatusOr<int64_t> value = cli::ParseIntFlag(flag.name, *text, flag.min, flag.max);
      if (!value.ok()) return value.status();
      *flag.out = *value;
    }
  }
  flags.workload.concurrency = static_cast<int>(concurrency);
  flags.workload.keys = static_cast<uint64_t>(keys);
  flags.workload.value_size = static_cast<size_t>(value_size);
  flags.workload.seed = static_cast<uint64_t>(seed);
  flags.rounds = static_cast<int>(rounds);
  flags.rate = static_cast<double>(rate);
  flags.put_coalescing = static_cast<int>(put_coalescing);
  flags.get_coalescing = static_cast<int>(get_coalescing);

  struct DurationFlag {
    const char* name;
    absl::Duration* out;
  };
  for (const DurationFlag& flag :
       {DurationFlag{"duration", &flags.duration}, DurationFlag{"warmup", &flags.warmup},
        DurationFlag{"timeout", &flags.timeout}}) {
    if (std::optional<std::string> text = args.Get(flag.name); text.has_value()) {
      absl::StatusOr<absl::Duration> value = cli::ParseDurationFlag(flag.name, *text);
      if (!value.ok()) return value.status();
      // Far beyond any run, and small enough that deadlines computed from it cannot overflow.
      if (*value > kMaxFlagDuration) {
        return absl::InvalidArgumentError(absl::StrCat("--", flag.name, " must be at most ",
                                                       absl::FormatDuration(kMaxFlagDuration)));
      }
      *flag.out = *value;
    }
  }
  if (flags.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration must be positive");
  }
  if (flags.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  return flags;
}

double Micros(double nanos) { return nanos / 1000.0; }

// Throughput, percentiles and errors of one phase, under `prefix` ("" or "ceiling_").
void AddPhaseJson(const PhaseStats& stats, const std::string& prefix, nlohmann::json& json) {
  json[prefix + "ops"] = stats.ops;
  json[prefix + "ops_per_sec"] = stats.ops_per_sec();
  json[prefix + "seconds"] = stats.seconds;
  json[prefix + "p50_us"] = Micros(stats.latency_ns.ValueAtQuantile(0.5));
  json[prefix + "p99_us"] = Micros(stats.latency_ns.ValueAtQuantile(0.99));
  json[prefix + "p999_us"] = Micros(stats.latency_ns.ValueAtQuantile(0.999));
  json[prefix + "mean_us"] = Micros(stats.latency_ns.Mean());
  json[prefix + "max_us"] = Micros(static_cast<double>(stats.latency_ns.max()));
  json[prefix + "errors"] = nlohmann::json::object();
  for (const auto& [code, count] : stats.errors) json[prefix + "errors"][code] = count;
  json[prefix + "error_count"] = stats.error_count();
}

std::string PhaseText(const PhaseStats& stats) {
  std::vector<std::string> errors;
  for (const auto& [code, count] : stats.errors) errors.push_back(absl::StrCat(code, " ", count));
  return absl::StrFormat(
      "  throughput: %.1f ops/s (%d ops in %.2fs)\n"
      "  latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  mean %.1f  max %.1f\n"
      "  errors:     %s\n",
      stats.ops_per_sec(), stats.ops, stats.seconds, Micros(stats.latency_ns.ValueAtQuantile(0.5)),
      Micros(stats.latency_ns.ValueAtQuantile(0.99)),
      Micros(stats.latency_ns.ValueAtQuantile(0.999)), Micros(stats.latency_ns.Mean()),
      Micros(static_cast<double>(stats.latency_ns.max())),
      errors.empty() ? "none" : absl::StrJoin(errors, ", "));
}

int Fail(const absl::Status& status, bool json, int exit_code) {
  if (json) {
    nlohmann::json error = {{"code", absl::StatusCodeToString(status.code())},
                            {"message", std::string(status.message())}};
    std::cout << nlohmann::json{{"error", error}}.dump(-1, ' ', false,
                                                       nlohmann::json::error_handler_t::replace)
              << std::endl;
  } else {
    std::cerr << "kvbench: " << status.message() << "\n";
    if (exit_code == kExitUsage) std::cerr << "Run 'kvbench --help' for usage.\n";
  }
  return exit_code;
}

// Writes every key once; on failure returns the first error, saying how far it got.
absl::Status Preload(Client& client, const WorkloadConfig& config, ContextCache& contexts,
                     nlohmann::json& report, std::string& text) {
  PreloadSource preload(client, config, contexts);
  const PhaseStats stats =
      RunClosedLoop(preload, {"preload", config.concurrency, absl::ZeroDuration(),
                              absl::InfiniteDuration(), config.keys, true});
  if (absl::Status error = preload.first_error(); !error.ok()) {
    return absl::Status(error.code(), absl::StrCat("preload failed after ", stats.ops, " of ",
                                                   config.keys, " keys: ", error.message()));
  }
  report["preload"] = {
      {"keys", stats.ops}, {"seconds", stats.seconds}, {"ops_per_sec", stats.ops_per_sec()}};
  absl::StrAppend(&text, absl::StrFormat("preload: %d keys in %.2fs (%.0f puts/s)\n", stats.ops,
                                         stats.seconds, stats.ops_per_sec()));
  return absl::OkStatus();
}

nlohmann::json ReportHeader(const BenchFlags& flags) {
  const WorkloadConfig& config = flags.workload;
  return {
      {"workload", config.spec.name},
      {"description", config.spec.description},
      {"endpoints", flags.endpoints},
      {"concurrency", config.concurrency},
      {"keys", config.keys},
      {"value_size", config.value_size},
      {"distribution", config.distribution == KeyDistribution::kZipfian ? "zipfian" : "uniform"},
      {"seed", config.seed},
      {"rate_cap", flags.rate},
      {"put_coalescing", flags.put_coalescing},
      {"get_coalescing", flags.get_coalescing},
      {"first_attempt_marks", flags.first_attempt_marks},
      {"warmup_s", absl::ToDoubleSeconds(flags.warmup)},
      {"duration_s", absl::ToDoubleSeconds(flags.duration)}};
}

// What the measured rounds gave: the workload's and the ceiling's stats, merged over the rounds,
// and each round's ratio of the two.
struct Rounds {
  PhaseStats workload;
  std::optional<PhaseStats> ceiling;
  std::vector<double> ratios;
};

// Each round: the ceiling (if asked), then the workload, for warmup + duration / rounds each.
Rounds RunRounds(const BenchFlags& flags, OpSource& ping, OpSource& workload) {
  const WorkloadConfig& config = flags.workload;
  const absl::Duration round_duration = flags.duration / flags.rounds;
  Rounds rounds;
  for (int round = 0; round < flags.rounds; ++round) {
    const std::string suffix =
        flags.rounds > 1 ? absl::StrCat(" round ", round + 1, "/", flags.rounds) : "";
    std::optional<PhaseStats> round_ceiling;
    if (flags.ceiling) {
      round_ceiling = RunClosedLoop(ping, {"ceiling (Ping)" + suffix, config.concurrency,
                                           flags.warmup, round_duration, 0, true});
    }
    LoopOptions loop{"workload " + config.spec.name + suffix,
                     config.concurrency,
                     flags.warmup,
                     round_duration,
                     0,
                     true};
    loop.rate = flags.rate;
    PhaseStats round_stats = RunClosedLoop(workload, loop);
    if (round_ceiling.has_value()) {
      rounds.ratios.push_back(round_ceiling->ops_per_sec() > 0
                                  ? round_stats.ops_per_sec() / round_ceiling->ops_per_sec()
                                  : 0);
      if (!rounds.ceiling.has_value()) rounds.ceiling.emplace();
      rounds.ceiling->MergeFrom(*round_ceiling);
    }
    rounds.workload.MergeFrom(round_stats);
  }
  return rounds;
}

// The ceiling and the workload's ratio to it: the median of the rounds' ratios.
void AddCeilingReport(const PhaseStats& ceiling, const std::vector<double>& round_ratios,
                      int rounds, nlohmann::json& report, std::string& text) {
  AddPhaseJson(ceiling, "ceiling_", report);
  std::vector<double> sorted = round_ratios;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double ratio = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  report["ratio_to_ceiling"] = ratio;
  report["rounds"] = rounds;
  report["round_ratios"] = round_ratios;
  if (n > 1) {
    absl::StrAppend(&text, "ratio to the ceiling by round: ",
                    absl::StrJoin(round_ratios, " ",
                                  [](std::string* out, double r) {
                                    absl::StrAppend(out, absl::StrFormat("%.3f", r));
                                  }),
                    "\n");
  }
  absl::StrAppend(&text, "transport ceiling (Admin.Ping, same loop):\n", PhaseText(ceiling),
                  absl::StrFormat("  the workload reached %.1f%% of the ceiling%s\n", 100 * ratio,
                                  n > 1 ? " (median of the rounds)" : ""));
}

int Run(const BenchFlags& flags) {
  ClientOptions client_options;
  client_options.endpoints = flags.endpoints;
  client_options.call_deadline = flags.timeout;
  client_options.put_coalescing.max_in_flight = flags.put_coalescing;
  client_options.get_coalescing.max_in_flight = flags.get_coalescing;
  client_options.mark_first_attempts = flags.first_attempt_marks;
  client_options.tls.enabled = flags.tls.enabled;
  client_options.tls.ca_pem = flags.tls.ca_pem;
  client_options.tls.cert_pem = flags.tls.cert_pem;
  client_options.tls.key_pem = flags.tls.key_pem;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(client_options);
  if (!client.ok()) return Fail(client.status(), flags.json, kExitUsage);
  // The ceiling's own client when its Pings go to other nodes than the workload.
  std::unique_ptr<Client> ceiling_client;
  if (!flags.ceiling_endpoints.empty()) {
    client_options.endpoints = flags.ceiling_endpoints;
    absl::StatusOr<std::unique_ptr<Client>> created = Client::Create(client_options);
    if (!created.ok()) return Fail(created.status(), flags.json, kExitUsage);
    ceiling_client = *std::move(created);
  }

  const WorkloadConfig& config = flags.workload;
  nlohmann::json report = ReportHeader(flags);
  std::string text = absl::StrFormat(
      "kvbench: %s; %d outstanding, %d %s keys, %d-byte values, %s after %s warmup\n",
      config.spec.description, config.concurrency, config.keys,
      report["distribution"].get<std::string>(), config.value_size,
      absl::FormatDuration(flags.duration), absl::FormatDuration(flags.warmup));

  ContextCache contexts(config.keys);
  if (flags.preload) {
    if (absl::Status status = Preload(**client, config, contexts, report, text); !status.ok()) {
      // The nodes refused what the flags ask for (--value_size over their max_value_bytes).
      return Fail(status, flags.json, absl::IsInvalidArgument(status) ? kExitUsage : kExitFailure);
    }
  }
  PingSource ping(ceiling_client != nullptr ? *ceiling_client : **client);
  WorkloadSource workload(**client, config, contexts);
  const Rounds rounds = RunRounds(flags, ping, workload);
  const ReplicationLagReport lag = CollectReplicationLag(**client);
  // Waits for every callback before the sources (declared above) are destroyed.
  client->reset();
  ceiling_client.reset();

  const PhaseStats& stats = rounds.workload;
  AddPhaseJson(stats, "", report);
  report["reads"] = stats.reads;
  report["writes"] = stats.writes;  // Puts
  report["deletes"] = stats.deletes;
  report["reads_not_found"] = stats.reads_not_found;
  absl::StrAppend(
      &text, "workload:\n", PhaseText(stats),
      absl::StrFormat("  reads %d (%d not found: never written), writes %d, deletes %d\n",
                      stats.reads, stats.reads_not_found, stats.writes, stats.deletes));
  if (flags.rate > 0 && stats.seconds > 0) {
    // Operations that succeeded per second against the rate asked for: paced slots are never
    // dropped, so a shortfall means the nodes did not keep up, or failed operations (counted
    // under errors).
    const double achieved = static_cast<double>(stats.ops) / stats.seconds / flags.rate;
    report["rate_achieved_fraction"] = achieved;
    // Short of the rate: the nodes did not keep up, or operations failed (or both).
    const std::string why = stats.error_count() > 0 ? absl::StrCat(stats.error_count(),
                                                                   " operations failed, see errors")
                                                    : "the nodes did not keep up";
    absl::StrAppend(&text,
                    absl::StrFormat("  rate: %.0f ops/s asked, %.1f%% achieved%s\n", flags.rate,
                                    100 * achieved, achieved < 0.98 ? " (" + why + ")" : ""));
    if (achieved < 0.98) {
      std::fprintf(stderr,
                   "kvbench: warning: only %.1f%% of --rate=%.0f was achieved (%s); latencies "
                   "count from each operation's slot, so they include the backlog\n",
                   100 * achieved, flags.rate, why.c_str());
    }
  }
  if (rounds.ceiling.has_value()) {
    report["ceiling_endpoints"] =
        flags.ceiling_endpoints.empty() ? flags.endpoints : flags.ceiling_endpoints;
    AddCeilingReport(*rounds.ceiling, rounds.ratios, flags.rounds, report, text);
  }
  AddReplicationLagJson(lag, report);
  absl::StrAppend(&text, ReplicationLagText(lag));
  if (flags.json) {
    std::cout << report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << text;
  }
  return stats.ops > 0 ? kExitOk : kExitFailure;
}

int Main(const std::vector<std::string>& argv) {
  std::vector<cli::FlagSpec> specs = {{"endpoints", true},      {"workload", true},
                                      {"concurrency", true},    {"keys", true},
                                      {"value_size", true},     {"distribution", true},
                                      {"duration", true},       {"warmup", true},
                                      {"preload", false},       {"ceiling", false},
                                      {"timeout", true},        {"ceiling_endpoints", true},
                                      {"seed", true},           {"rounds", true},
                                      {"rate", true},           {"put_coalescing", true},
                                      {"get_coalescing", true}, {"json", false},
                                      {"help", false},          {"first_attempt_marks", false}};
  for (const cli::FlagSpec& tls : cli::TlsFlagSpecs()) specs.push_back(tls);
  bool json = false;
  for (const std::string& arg : argv) json = json || arg == "--json";
  absl::StatusOr<cli::ParsedArgs> args = cli::ParseArgs(argv, specs);
  if (!args.ok()) return Fail(args.status(), json, kExitUsage);
  if (args->GetBool("help", false)) {
    std::cout << Usage();
    return kExitOk;
  }
  absl::StatusOr<BenchFlags> flags = ParseFlags(*args);
  if (!flags.ok()) return Fail(flags.status(), args->GetBool("json", false), kExitUsage);
  return Run(*flags);
}

}  // namespace
}  // namespace kv::bench

int main(int argc, char** argv) {
#ifdef NDEBUG
  // As in kvnode: Debian's abseil checks every absl::Mutex (gRPC's too) for lock-order cycles,
  // which would load the measuring client. Debug and sanitizer builds keep the check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  std::vector<std::string> args(argv + 1, argv + argc);
  return kv::bench::Main(args);
}

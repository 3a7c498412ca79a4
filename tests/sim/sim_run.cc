#include "tests/sim/sim_run.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/log.h"
#include "tests/sim/sim_checkers.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_faults.h"
#include "tests/sim/sim_history.h"
#include "tests/sim/sim_loop.h"
#include "tests/sim/sim_network.h"
#include "tests/sim/sim_sabotage.h"
#include "tests/sim/sim_workload.h"

namespace kv::sim {
namespace {

ClusterConfig DrawClusterConfig(SimLoop* loop, int num_nodes, MembershipChange change) {
  ClusterConfig config;
  config.num_nodes = num_nodes;
  config.replication_factor = 3;
  // Small batches and few in flight in some runs, to exercise batching and queueing.
  const size_t batch_sizes[] = {1, 4, 16, 256};
  config.outbox.batch_max_records = batch_sizes[loop->UniformInt(0, 3)];
  config.outbox.max_in_flight = static_cast<int>(loop->UniformInt(1, 2));
  // A tiny in-memory queue in some runs, so that backlogs wait on disk and are scanned back in.
  const size_t queue_sizes[] = {2, 16, 100'000};
  config.outbox.max_queued_per_peer = queue_sizes[loop->UniformInt(0, 2)];
  config.outbox.initial_backoff = absl::Milliseconds(20);
  config.outbox.max_backoff = absl::Seconds(1);
  // A tiny outbox bound in some runs: writes beyond it record no entry for the peer, and only
  // anti-entropy repairs those replicas.
  const uint64_t outbox_bounds[] = {3, 1'000'000};
  config.outbox.max_entries_per_peer = outbox_bounds[loop->UniformInt(0, 1)];
  config.anti_entropy_options.interval =
      loop->UniformDuration(absl::Milliseconds(200), absl::Seconds(1));
  config.anti_entropy_options.keys_per_second = 200;
  config.anti_entropy_options.keys_per_batch = static_cast<size_t>(loop->UniformInt(1, 16));
  config.anti_entropy_options.segments_per_call = static_cast<size_t>(loop->UniformInt(1, 64));
  // Key lists of a few keys per answer in about half the runs (the others unlimited), so that
  // peers answer fewer segments than asked. Derived from the draw above: no new draw.
  config.anti_entropy_options.segment_keys_max_bytes =
      config.anti_entropy_options.segments_per_call > 32 ? 100 : 0;
  // Longer than any message can stay in flight (simulated slow messages take up to 1 s, and a
  // request is served whenever it arrives), as TombstoneReaper requires; the confirm delay also
  // longer than the nodes' own bounds on a record in flight (a read repair's answers up to 2 s
  // old, a pulled record merged within 4 s), as kvnode requires (at least 5 s).
  config.reaper.min_age = absl::Seconds(2);
  config.reaper.confirm_delay = absl::Seconds(5);
  config.reaper.sweep_interval = absl::Milliseconds(500);
  config.reaper.keys_per_sweep = static_cast<size_t>(loop->UniformInt(4, 64));
  if (change == MembershipChange::kNone) return config;  // (draws nothing more: old seeds replay)
  if (change == MembershipChange::kJoin || change == MembershipChange::kJoinThenRemove) {
    config.initial_members = num_nodes - 1;
  }
  // Small batches and a low rate in some runs, so that a handoff takes a while (crashes, writes
  // and gossip land in the middle of it).
  const size_t batch_bytes[] = {200, 2000, 1 << 20};
  config.handoff.batch_bytes = batch_bytes[loop->UniformInt(0, 2)];
  const uint64_t rates[] = {5'000, 50'000, 0};
  config.handoff.bytes_per_second = rates[loop->UniformInt(0, 2)];
  config.handoff.retry = loop->UniformDuration(absl::Milliseconds(100), absl::Seconds(1));
  return config;
}

void Summarize(const History& history, SimResult* result) {
  result->writes = history.writes.size();
  for (const WriteOp& op : history.writes) {
    result->writes_acked += op.outcome == Outcome::kOk;
    result->writes_deduplicated += op.outcome == Outcome::kOk && op.deduplicated;
    result->writes_gave_up += op.outcome == Outcome::kGaveUp;
  }
  result->reads = history.reads.size();
  for (const ReadOp& op : history.reads) {
    result->reads_found += op.outcome == Outcome::kOk;
    result->reads_not_found += op.outcome == Outcome::kNotFound;
    result->reads_gave_up += op.outcome == Outcome::kGaveUp;
  }
}

}  // namespace

std::string SimOptions::ReplayHint() const {
  std::string hint = absl::StrCat("KV_SIM_SEED=", seed, " KV_SIM_NODES=", num_nodes);
  if (change != MembershipChange::kNone) {
    absl::StrAppend(&hint, " KV_SIM_CHANGE=", MembershipChangeName(change));
  }
  if (!sync_writes) absl::StrAppend(&hint, " KV_SIM_SYNC=0");
  return hint;
}

std::string SimResult::Summary() const {
  return absl::StrCat(
      "seed ", seed, ", ", num_nodes, " nodes: ", ok() ? "OK" : "FAILED", "; ", events,
      " events over ", absl::FormatDuration(simulated), " simulated; writes ", writes_acked, "/",
      writes, " acknowledged (", writes_deduplicated, " deduplicated, ", writes_gave_up,
      " gave up); reads ", reads_found, " found, ", reads_not_found, " not found, ", reads_gave_up,
      " gave up, of ", reads, "; ", crashes, " crashes, ", partitions, " partitions; ", messages,
      " messages (", messages_lost, " lost, ", messages_duplicated,
      " duplicated); anti-entropy repaired ", keys_repaired, " keys, ", purged,
      " tombstones purged; ",
      membership.change.empty()
          ? std::string()
          : absl::StrCat(membership.change, " from ",
                         absl::FormatDuration(membership.started - SimLoop::Start()),
                         membership.completed == absl::InfiniteFuture()
                             ? std::string(" (not completed)")
                             : absl::StrCat(" to ", absl::FormatDuration(membership.completed -
                                                                         SimLoop::Start())),
                         ", ", membership.handoff_keys, " records handed off, ",
                         membership.crashes_during_handoff, " crashes during it (",
                         membership.handoff_crashes, " of a member by the driver), ", cleaned,
                         " records no longer owned removed, ", outbox_dropped,
                         " outbox entries for the member that left dropped; "),
      "faults: ", faults, "; trace ", absl::Hex(trace_hash), ", state ", absl::Hex(state_hash));
}

SimResult RunSimulation(const SimOptions& options) {
  SimResult result;
  result.seed = options.seed;
  result.num_nodes = options.num_nodes;
  auto fail = [&](const std::string& what) {
    result.failures.push_back(
        absl::StrCat("seed ", options.seed, ": ", what, " (replay: ", options.ReplayHint(), ")"));
  };

  // The node core's own log lines (e.g. the handoff's) only when every event is logged.
  SetLogLevel(options.verbose ? LogLevel::kInfo : LogLevel::kWarn);
  SimLoop loop(options.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(options.num_nodes));
  loop.set_verbose(options.verbose);
  const int num_clients = options.num_nodes + 2;
  SimNetwork network(&loop, options.num_nodes + num_clients);
  ClusterConfig config = DrawClusterConfig(&loop, options.num_nodes, options.change);
  config.purge_tombstones = options.purge_tombstones;
  config.anti_entropy = options.anti_entropy;
  config.drop_handoff_keys = options.sabotage == Sabotage::kDropHandoffKeys;
  config.sync_writes = options.sync_writes;
  config.keep_boot_after_crash = options.sabotage == Sabotage::kKeepEpochAfterLostWrites;
  const bool removes = options.change == MembershipChange::kRemoveDown ||
                       options.change == MembershipChange::kJoinThenRemove ||
                       options.change == MembershipChange::kLeaveThenRemove;
  if (!options.sync_writes && removes) {
    fail(
        "runs without synced writes do not remove members (a member removed down for good "
        "and a crash that lost its writes could lose both copies of a write)");
    return result;
  }
  SimCluster cluster(&loop, &network, std::move(config));
  if (absl::Status started = cluster.Start(); !started.ok()) {
    fail(absl::StrCat("the cluster did not start: ", started.message()));
    return result;
  }
  History history;
  WorkloadOptions workload_options;
  workload_options.num_clients = num_clients;
  Workload workload(&loop, &network, &cluster, options.num_nodes, workload_options, &history);
  FaultInjector faults(&loop, &network, &cluster, options.num_nodes, num_clients);
  // A member removed down for good is the run's one lost disk: with a wiped disk on top, a write
  // acknowledged by W=2 of 3 replicas could lose both copies.
  // Without synced writes, a crash may lose the only other copy of a write just as well.
  if (removes || !options.sync_writes) faults.NoWipes();
  MembershipDriver membership(&loop, &cluster, options.change);

  const absl::Time fault_end = loop.Now() + options.fault_phase;
  faults.Start(fault_end);
  workload.Start();
  membership.Start(fault_end);
  loop.RunUntil(fault_end);

  if (absl::Status healed = faults.HealAll(); !healed.ok()) {
    fail(absl::StrCat("a node did not restart: ", healed.message()));
  }
  workload.Stop();
  if (options.change != MembershipChange::kNone) {
    if (!loop.RunUntil([&] { return membership.Done(); }, loop.Now() + options.drain_limit)) {
      fail(absl::StrCat("the membership change (", membership.stats().change,
                        ") did not complete within ", absl::FormatDuration(options.drain_limit),
                        " after the faults healed; ", membership.error().ToString()));
    }
  }
  auto quiescent = [&] {
    return workload.Idle() && cluster.AllUp() && membership.Done() && network.Idle() &&
           cluster.OutboxDepth() == 0 && cluster.TreesAgree();
  };
  auto drain = [&](absl::string_view after) {
    const absl::Time drain_deadline = loop.Now() + options.drain_limit;
    bool quiet = false;
    while (!quiet && loop.RunUntil(quiescent, drain_deadline)) {
      // Let whatever is due shortly (executor tasks, idle timers) run, then look again.
      loop.RunUntil(std::min(loop.Now() + absl::Seconds(1), drain_deadline));
      quiet = quiescent() || loop.Now() >= drain_deadline;
    }
    if (!quiescent()) {
      fail(absl::StrCat("not quiescent ", absl::FormatDuration(options.drain_limit), " after ",
                        after, ": clients idle=", workload.Idle(), ", network idle=",
                        network.Idle(), ", outbox entries waiting=", cluster.OutboxDepth(),
                        ", Merkle trees agree=", cluster.TreesAgree()));
    }
  };
  drain("the faults healed");
  // Purge phase: time passes without writes, so that the reapers purge the tombstones (each
  // needs min_age, then two confirmations confirm_delay apart); then the cluster must be
  // quiescent again, with nothing deleted come back.
  if (options.purge_phase > absl::ZeroDuration()) {
    loop.RunUntil(loop.Now() + options.purge_phase);
    drain("the purge phase");
  }

  if (cluster.AllUp()) {
    ApplySabotage(options.sabotage, &cluster, &history);
    const FinalState state = CollectFinalState(&cluster, history);
    Checkers checkers(options.seed, options.ReplayHint(), history, state, &cluster);
    checkers.RunAll(options.check_token_resurrection);
    result.failures.insert(result.failures.end(), checkers.failures().begin(),
                           checkers.failures().end());
    // Every member ran its cleaner through the purge phase (passes every few seconds).
    if (const uint64_t unowned = cluster.UnownedRecords(); unowned > 0) {
      fail(absl::StrCat(unowned, " records of keys their node does not own remain at the end"));
    }
  }

  Summarize(history, &result);
  result.trace_hash = loop.trace_hash();
  result.state_hash = cluster.StateHash();
  result.events = loop.events_run();
  result.simulated = loop.Now() - SimLoop::Start();
  result.crashes = faults.stats().crashes;
  result.partitions = faults.stats().partitions;
  result.messages = network.stats().sent;
  result.messages_lost = network.stats().lost;
  result.messages_duplicated = network.stats().duplicated;
  for (int node = 0; node < cluster.num_nodes(); ++node) {
    if (cluster.reaper(node) != nullptr) result.purged += cluster.reaper(node)->Stats().purged;
    if (cluster.anti_entropy(node) == nullptr) continue;
    for (const PeerAntiEntropyStats& peer : cluster.anti_entropy(node)->Stats()) {
      result.keys_repaired += peer.keys_repaired;
    }
  }
  result.faults = faults.Describe();
  result.membership = membership.stats();
  result.cleaned = cluster.CleanedRecords();
  result.outbox_dropped = cluster.dropped_outbox_entries();
  return result;
}

}  // namespace kv::sim

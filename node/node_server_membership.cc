// NodeServer: the cluster layout and gossip (node/node_server.h): the layout to start with,
// learning it from the seeds, gossip, and following layout changes.
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "node/clock.h"
#include "node/gossip_proto.h"
#include "node/log.h"
#include "node/node_server.h"
#include "storage/status_macros.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

// Meta column key of the cluster layout this node last stored (storage/FORMAT.md).
constexpr absl::string_view kLayoutMetaKey = "cluster_layout";
// Meta column key of this node's layout promises (replica.proto LayoutAcceptorState).
constexpr absl::string_view kAcceptorMetaKey = "layout_acceptor";

}  // namespace

void NodeServer::WarnIfPeersEntryNamesAnotherPort() const {
  auto port_of = [](absl::string_view address) {
    int port = 0;
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
      return 0;
    }
    return port;
  };
  for (const Member& m : config_.peers) {
    if (m.id != config_.node_id || port_of(m.address) == port_of(config_.listen)) continue;
    // Not refused: behind a port mapping (a container's published port) the address others
    // reach may differ from the one this node binds.
    LogWarn(
        "this node's --peers entry names another port than --listen: the other members will "
        "call it there (right behind a port mapping, a mistake otherwise)",
        {{"peers_entry", absl::StrCat(m.id, "=", m.address)}, {"listen", config_.listen}});
  }
}

std::vector<std::string> NodeServer::PeerAddresses(std::vector<std::string>* self_addresses) const {
  std::set<std::string> addresses;
  std::set<std::string> self = {config_.listen};
  auto add = [&](const Member& m) {
    if (m.id != config_.node_id) {
      addresses.insert(m.address);
    } else {
      self.insert(m.address);
    }
  };
  for (const Member& m : config_.peers) add(m);
  // An unreadable stored layout stops the start later (InitialLayout); here it names no one.
  absl::StatusOr<std::optional<ClusterLayout>> stored = StoredLayout();
  if (stored.ok() && stored->has_value()) {
    for (const std::vector<Member>* list : {&(*stored)->members, &(*stored)->next}) {
      for (const Member& m : *list) add(m);
    }
  }
  self_addresses->assign(self.begin(), self.end());
  for (const std::string& seed : config_.seeds) {
    if (seed != config_.listen) addresses.insert(seed);
  }
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

absl::StatusOr<std::optional<ClusterLayout>> NodeServer::StoredLayout() const {
  absl::StatusOr<std::string> stored = engine_->Get(Column::kMeta, kLayoutMetaKey);
  if (absl::IsNotFound(stored.status())) return std::nullopt;
  if (!stored.ok()) return stored.status();
  KV_ASSIGN_OR_RETURN(ClusterLayout layout, DecodeLayout(*stored));
  return layout;
}

absl::StatusOr<ClusterLayout> NodeServer::InitialLayout() {
  KV_ASSIGN_OR_RETURN(std::optional<ClusterLayout> stored_layout, StoredLayout());
  ClusterLayout layout;
  if (!config_.peers.empty()) {
    layout.version = 1;
    layout.members = SortedById(config_.peers);  // the order a layout keeps (any is accepted)
    WarnIfPeersEntryNamesAnotherPort();
  } else if (!config_.seeds.empty() && stored_layout.has_value()) {
    // A restart: the stored layout's members are as good as the seeds to gossip with, and the
    // seeds may be down or gone (a seed can leave the cluster). Gossip brings anything newer.
    LogInfo("starting from the stored cluster layout; the seeds are not waited for",
            {{"layout_version", absl::StrCat(stored_layout->version)},
             {"members", FormatMembers(stored_layout->members)}});
    return *std::move(stored_layout);
  } else if (!config_.seeds.empty()) {
    KV_ASSIGN_OR_RETURN(layout, LearnLayoutFromSeeds());
  } else if (stored_layout.has_value() &&
             (stored_layout->members.size() > 1 || stored_layout->in_transition())) {
    // Neither --peers nor --seeds: a member of a cluster restarted without its cluster flags
    // stays a member of that cluster. Starting as a cluster of one would accept writes with
    // N=W=R=1 apart from its peers. (A single node's stored layout of version 1 is rebuilt
    // below, so that a changed --listen takes effect; a later one is used as it is.)
    LogInfo("no --peers or --seeds: starting from the stored cluster layout",
            {{"layout_version", absl::StrCat(stored_layout->version)},
             {"members", FormatMembers(stored_layout->members)}});
    return *std::move(stored_layout);
  } else {
    layout.version = 1;
    layout.members.push_back(Member{config_.node_id, config_.listen, ""});
  }
  if (!config_.peers.empty() && stored_layout.has_value() && stored_layout->members.size() > 1 &&
      stored_layout->version == layout.version &&
      !SameMembers(stored_layout->members, layout.members)) {
    LogWarn(
        "the configured --peers differ from the cluster layout this node stored at the same "
        "version: every member must be given the same list (gossip reports a layout conflict "
        "until they agree); change a running cluster's membership with kvctl cluster "
        "join|leave|remove",
        {{"layout_version", absl::StrCat(layout.version)},
         {"configured", FormatMembers(layout.members)},
         {"stored", FormatMembers(stored_layout->members)}});
  }
  if (stored_layout.has_value() && stored_layout->version > layout.version) {
    LogInfo("using the stored cluster layout: newer than the configured or learned one",
            {{"layout_version", absl::StrCat(stored_layout->version)},
             {"members", FormatMembers(stored_layout->members)}});
    layout = *std::move(stored_layout);
  } else if (!config_.peers.empty()) {
    // The configured layout is stored too (gossip stores each later one), so that a restart
    // without --peers still knows the cluster (above).
    const std::string encoded = EncodeLayout(layout);
    if (!stored_layout.has_value() || EncodeLayout(*stored_layout) != encoded) {
      if (absl::Status written = PutSynced(*engine_, Column::kMeta, kLayoutMetaKey, encoded);
          !written.ok()) {
        return absl::Status(written.code(),
                            absl::StrCat("cannot store the cluster layout: ", written.message()));
      }
    }
  }
  return layout;
}

absl::StatusOr<std::unique_ptr<LayoutReservations>> NodeServer::OpenLayoutAcceptor() {
  LayoutReservations::Options options;
  options.persist = [engine = engine_.get()](const LayoutAcceptorState& state) {
    return PutSynced(*engine, Column::kMeta, kAcceptorMetaKey, EncodeAcceptorState(state));
  };
  auto acceptor = std::make_unique<LayoutReservations>(SteadyClock::Get(), std::move(options));
  absl::StatusOr<std::string> stored = engine_->Get(Column::kMeta, kAcceptorMetaKey);
  if (stored.ok()) {
    absl::StatusOr<LayoutAcceptorState> state = DecodeAcceptorState(*stored);
    if (!state.ok()) return state.status();
    acceptor->Restore(*std::move(state));
  } else if (!absl::IsNotFound(stored.status())) {
    return stored.status();
  }
  return acceptor;
}

void NodeServer::OnLayout(const ClusterLayout& layout) {
  absl::MutexLock serial(&on_layout_mu_);
  absl::StatusOr<std::shared_ptr<const Placement>> placement = Placement::Create(layout);
  if (!placement.ok()) {
    // The gossip listener has paused tombstone purging for it: purging stays off until a newer
    // layout is placed and followed.
    LogError("ignoring a cluster layout that cannot be placed; tombstone purging is paused",
             {{"layout_version", absl::StrCat(layout.version)},
              {"error", std::string(placement.status().message())}});
    return;
  }
  const bool was_member = placement_->Get()->layout().Contains(config_.node_id);
  // The outbox learns the new members before writes are placed by the new layout: a write
  // coordinated in between would otherwise record no entry for a gaining member (and count no
  // drop). A peer added for a layout that Set then refuses only idles.
  if (layout.version > placement_->Get()->layout().version) {
    for (const Member* m : (*placement)->AllMembers()) {
      if (m->id != config_.node_id) outbox_->AddPeer(*m);
    }
  }
  if (!placement_->Set(*placement)) return;
  {
    absl::MutexLock lock(&layout_store_mu_);
    if (placement_->Get()->layout().version == layout.version) {
      if (absl::Status stored =
              PutSynced(*engine_, Column::kMeta, kLayoutMetaKey, EncodeLayout(layout));
          !stored.ok()) {
        LogWarn("could not store the cluster layout; a restart relearns it from gossip",
                {{"error", std::string(stored.message())}});
      }
    }
  }
  if (!layout.in_transition()) RemoveDepartedPeers(layout);
  LogInfo("cluster layout changed", {{"layout_version", absl::StrCat(layout.version)},
                                     {"members", FormatMembers(layout.members)},
                                     {"next", FormatMembers(layout.next)},
                                     {"change", layout.change}});
  // Anti-entropy follows the owners once a change is complete: the trees are rebuilt for the
  // new ring in the background (exchanges wait meanwhile). During a transition they keep the
  // old owners' ring, which still holds every key.
  if (!layout.in_transition()) executor_->Schedule([this] { FollowRingWithMerkleTrees(); });
  if (was_member && !layout.Contains(config_.node_id)) {
    const bool stop = config_.exit_after_leave && request_stop_;
    LogInfo(stop ? "this node has left the cluster: everything it owned is held by the other "
                   "members; stopping"
                 : "this node has left the cluster: everything it owned is held by the other "
                   "members; it may be stopped",
            {{"layout_version", absl::StrCat(layout.version)}});
    // After a few gossip rounds, so that the others learn the final layout from this node too.
    if (stop) {
      scheduler_->RunAfter(std::max(absl::Seconds(1), 3 * config_.gossip_interval), request_stop_);
    }
  } else if (!was_member && layout.Contains(config_.node_id)) {
    LogInfo("this node was joined to the cluster",
            {{"layout_version", absl::StrCat(layout.version)}});
  }
  handoff_->OnPlacement(*placement);
  // Once a change is complete, the records of keys this node no longer owns are removed in the
  // background; a transition ends a clean-up under way.
  cleaner_->OnPlacement(*placement);
}

void NodeServer::RemoveDepartedPeers(const ClusterLayout& layout) {
  // The change is complete: every remaining owner holds what the departed member held (the
  // handoff), so the writes still queued for it are needed nowhere else.
  for (const PeerOutboxStats& peer : outbox_->Stats()) {
    if (layout.Contains(peer.peer_id)) continue;
    absl::StatusOr<uint64_t> dropped = outbox_->RemovePeer(peer.peer_id);
    if (dropped.ok()) {
      LogInfo("replication outbox: dropped the entries of a member that left the cluster",
              {{"member", peer.peer_id},
               {"dropped_entries", absl::StrCat(*dropped)},
               {"layout_version", absl::StrCat(layout.version)}});
    } else {
      LogWarn(
          "replication outbox: stopped sending to a member that left, but could not delete "
          "its entries; they are never sent",
          {{"member", peer.peer_id}, {"error", std::string(dropped.status().message())}});
    }
  }
}

void NodeServer::FollowRingWithMerkleTrees() {
  // One rebuild at a time, each for the placement current when it starts, so that rebuilds
  // scheduled by layouts that arrived close together end with the newest ring.
  absl::MutexLock lock(&merkle_ring_mu_);
  std::shared_ptr<const Placement> placement = placement_->Get();
  const ClusterLayout& layout = placement->layout();
  if (layout.in_transition() || layout.version == merkle_layout_version_) return;
  merkle_layout_version_ = layout.version;
  const absl::Time start = SteadyClock::Get()->Now();
  absl::Status built = merkle_->ChangeRing(placement->current_ptr());
  if (built.ok()) {
    LogInfo("Merkle trees rebuilt for the new cluster layout",
            {{"layout_version", absl::StrCat(layout.version)},
             {"took", absl::FormatDuration(SteadyClock::Get()->Now() - start)}});
    // Tombstone purging was paused when the layout arrived (the gossip listener): it checks the
    // replicas of the index's ring, which is now the new one.
    if (reaper_->ResumeOnRing(layout.version)) {
      LogInfo("tombstone purging resumed on the new ring",
              {{"layout_version", absl::StrCat(layout.version)}});
    }
    // A replica catching up compares with the new ring's peers again; a ring of one ends it.
    if (anti_entropy_ != nullptr) anti_entropy_->MaybeFinishCatchingUp();
  } else if (!absl::IsCancelled(built)) {  // cancelled: the node is stopping (StopScans)
    LogError(
        "rebuilding the Merkle trees failed; anti-entropy and tombstone purging stay off until a "
        "rebuild succeeds (retried every second after a read error) or the node restarts",
        {{"error", std::string(built.message())}});
  }
}

absl::StatusOr<ClusterLayout> NodeServer::LearnLayoutFromSeeds() {
  const std::string seeds = absl::StrJoin(config_.seeds, ",");
  LogInfo("no --peers: asking the seeds for the cluster layout; not serving until one answers",
          {{"seeds", seeds}, {"seed_timeout", absl::FormatDuration(config_.seed_timeout)}});
  // On the monotonic clock, as the pauses below: a step of the wall clock neither cuts the wait
  // short (the node would give up at once) nor stretches it.
  const absl::Time deadline = SteadyNow() + config_.seed_timeout;
  std::string last_error = "no seed was asked";
  while (true) {
    for (const std::string& seed : config_.seeds) {
      absl::Notification answered;
      absl::StatusOr<GossipDigest> reply;
      GossipDigest ask;  // an empty table: learn from the seed, teach it nothing yet
      ask.from_id = config_.node_id;
      transport_->Gossip(seed, std::move(ask), [&](absl::StatusOr<GossipDigest> r) {
        reply = std::move(r);
        answered.Notify();
      });
      answered.WaitForNotification();
      if (!reply.ok()) {
        last_error = absl::StrCat(seed, ": ", reply.status().message());
        continue;
      }
      ClusterLayout layout = reply->layout;
      if (layout.version == 0) {
        // A seed of an earlier version sends no layout: its NORMAL members are the ring.
        for (const MemberEntry& entry : reply->members) {
          if (entry.ring_status == RingStatus::kNormal) layout.members.push_back(entry.member);
        }
        if (!layout.members.empty()) layout.version = 1;
      }
      if (layout.members.empty()) {
        last_error = absl::StrCat(seed, " knows no members yet");
        continue;
      }
      if (absl::Status valid = CheckLayout(layout); !valid.ok()) {
        last_error = absl::StrCat(seed, " sent a layout this node cannot use: ", valid.message());
        continue;
      }
      if (!layout.Contains(config_.node_id)) {
        LogInfo(
            "this node is not in the cluster layout yet: it forwards requests and waits to "
            "be joined",
            {{"seed", seed},
             {"layout_version", absl::StrCat(layout.version)},
             {"members", FormatMembers(layout.members)},
             {"join_with", absl::StrCat("kvctl cluster join ", config_.node_id, " --commit")}});
      } else {
        LogInfo("learned the cluster layout from a seed",
                {{"seed", seed},
                 {"seed_node", reply->from_id},
                 {"layout_version", absl::StrCat(layout.version)},
                 {"members", FormatMembers(layout.members)}});
      }
      return layout;
    }
    if (start_cancel_ != nullptr && start_cancel_->HasBeenNotified()) {
      return absl::CancelledError("stopped while waiting for a seed to tell the cluster layout");
    }
    if (SteadyNow() >= deadline) {
      return absl::UnavailableError(
          absl::StrCat("no seed told the cluster layout within seed_timeout=",
                       absl::FormatDuration(config_.seed_timeout), " (last error: ", last_error,
                       "). Check --seeds, start a seed with --peers, or raise --seed_timeout."));
    }
    // Slept in slices (absl::SleepFor sleeps on the monotonic clock) rather than waited on
    // `start_cancel_`, whose timed wait ends at a wall-clock deadline.
    const absl::Duration pause = std::min(absl::Milliseconds(500), config_.seed_timeout / 4);
    constexpr absl::Duration kSlice = absl::Milliseconds(20);
    for (absl::Duration slept; slept < pause; slept += kSlice) {
      if (start_cancel_ != nullptr && start_cancel_->HasBeenNotified()) break;
      absl::SleepFor(std::min(kSlice, pause - slept));
    }
  }
}

void NodeServer::StartGossip(const ClusterLayout& layout) {
  Member self{config_.node_id, config_.listen, ""};
  std::vector<Member> members = layout.members;
  members.insert(members.end(), layout.next.begin(), layout.next.end());
  for (const Member& m : members) {
    if (m.id == config_.node_id) self = m;
  }
  Gossiper::Options options;
  options.layout = layout;
  options.interval = config_.gossip_interval;
  options.failure_timeout = config_.failure_timeout;
  options.forget_after = config_.gossip_forget_after == absl::ZeroDuration()
                             ? absl::InfiniteDuration()
                             : config_.gossip_forget_after;
  options.seeds = config_.seeds;
  options.format_level = config_.fault_format_level;
  options.generation = store_->generation();
  options.new_epoch = store_->new_epoch();
  // On the wall clock, unlike the gossiper's intervals (SteadyClock): peers compare it with the
  // incarnations of this node's earlier runs.
  options.incarnation =
      static_cast<uint64_t>(std::max<int64_t>(absl::ToUnixMicros(absl::Now()), 1));
  // What every member must share: where keys live (N), what replicas accept, and how long a
  // silent node outside the layout is kept (a member that keeps it longer, or for good, keeps
  // gossiping it, and the others' quarantine of it never ends: see Gossiper's "Forgetting").
  options.settings =
      absl::StrCat("replication_factor=", config_.replication_factor,
                   ",max_key_bytes=", config_.limits.max_key_bytes,
                   ",max_value_bytes=", config_.limits.max_value_bytes,
                   ",max_record_bytes=", config_.limits.max_record_bytes,
                   ",idempotency_ttl=", absl::FormatDuration(config_.idempotency_ttl),
                   ",gossip_forget_after=", absl::FormatDuration(config_.gossip_forget_after));
  // Asked only while this node is outside the layout: any record at all, tombstones included.
  options.holds_records = [engine = engine_.get()] {
    std::unique_ptr<Iterator> it = engine->NewIterator(Column::kData);
    it->SeekToFirst();
    return it->Valid() || !it->status().ok();  // an unreadable directory counts as holding some
  };
  if (options.format_level != 0) {
    LogWarn("fault point: this node tells the others it reads an older storage format level",
            {{"fault_format_level", absl::StrCat(options.format_level)}});
  }
  gossip_executor_ = std::make_unique<ThreadPoolExecutor>(1);
  gossip_scheduler_ = std::make_unique<TimerScheduler>(gossip_executor_.get());
  GrpcPeerTransport::Options transport_options;
  transport_options.gossip_timeout = std::min(absl::Seconds(1), config_.failure_timeout / 2);
  transport_options.credentials = tls_->peer_credentials();
  transport_options.cluster_name = config_.cluster_name;
  gossip_transport_ = std::make_unique<GrpcPeerTransport>(config_.node_id, gossip_executor_.get(),
                                                          transport_options);
  gossiper_ =
      std::make_unique<Gossiper>(self, members, gossip_transport_.get(), gossip_scheduler_.get(),
                                 SteadyClock::Get(), gossip_rng_, options);
  // Runs on gossip's threads (possibly a gRPC thread): log, and hand outbox work to the executor.
  gossiper_->SetListener([this](const std::string& member, Liveness from, Liveness to) {
    const std::string was(LivenessName(from));
    const std::string timeout = absl::FormatDuration(config_.failure_timeout);
    if (to == Liveness::kDown) {
      LogWarn("member is DOWN: its heartbeat stopped advancing; routing around it",
              {{"member", member}, {"was", was}, {"failure_timeout", timeout}});
      return;
    }
    LogInfo("member is UP", {{"member", member}, {"was", was}});
    if (from == Liveness::kDown) {
      executor_->Schedule([outbox = outbox_.get(), member] {
        if (outbox != nullptr) outbox->Resume(member);
      });
    }
  });
}

}  // namespace kv

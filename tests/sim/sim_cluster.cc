#include "tests/sim/sim_cluster.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/forwarding_peer_transport.h"
#include "node/handoff_plan.h"
#include "node/merkle_tree.h"
#include "storage/record_codec.h"

namespace kv::sim {
namespace {

// Sabotage (ClusterConfig::drop_handoff_keys): passes everything on, except that MergeRecords
// leaves out the records of every other key (by Merkle segment) and still answers OK.
class DroppingHandoffTransport : public ForwardingPeerTransport {
 public:
  using ForwardingPeerTransport::ForwardingPeerTransport;
  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    std::vector<EncodedRecord> kept;
    for (EncodedRecord& r : records) {
      if (MerkleTree::SegmentOf(r.key) % 2 != 0) kept.push_back(std::move(r));
    }
    if (kept.empty()) return done(absl::OkStatus());
    inner()->MergeRecords(peer, std::move(kept), std::move(done));
  }
};

}  // namespace

SimCluster::SimCluster(SimLoop* loop, SimNetwork* network, ClusterConfig config)
    : loop_(loop), network_(network), config_(std::move(config)), clock_(loop) {
  nodes_.resize(config_.num_nodes);
  const int initial = config_.initial_members > 0 ? config_.initial_members : config_.num_nodes;
  ClusterLayout layout;
  layout.version = 1;
  for (int i = 0; i < config_.num_nodes; ++i) {
    Node& node = nodes_[i];
    node.member.id = absl::StrCat("n", i + 1);
    node.member.address = absl::StrCat("sim-", node.member.id, ":7000");
    node.engine = std::make_unique<MemoryEngine>();
    node.rng.seed(loop_->rng()());
    // Seeded from a copy of the node's generator, so that the other draws stay as they were.
    std::mt19937_64 copy = node.rng;
    node.handoff_rng.seed(copy() ^ 0x68616e646f6666ULL);
    endpoints_[node.member.id] = i;
    if (i < initial) layout.members.push_back(node.member);
  }
  // Ids n1..n9 sort as numbered; more nodes than that are not simulated.
  for (Node& node : nodes_) node.layout = layout;
  absl::StatusOr<std::shared_ptr<const Placement>> placement = Placement::Create(layout);
  // Create fails only on an empty membership, which Start reports.
  if (placement.ok()) placement_ = *std::move(placement);
}

SimCluster::~SimCluster() {
  for (Node& node : nodes_) TearDown(&node);
}

absl::Status SimCluster::Start() {
  if (!placement_) return absl::InternalError("the simulated cluster has no members");
  for (int i = 0; i < num_nodes(); ++i) {
    if (absl::Status s = Restart(i); !s.ok()) return s;
  }
  if (!config_.sync_writes) {
    for (int i = 0; i < num_nodes(); ++i) Writeback(i);
  }
  return absl::OkStatus();
}

int SimCluster::NumUp() const {
  int up = 0;
  for (const Node& node : nodes_) up += node.up ? 1 : 0;
  return up;
}

bool SimCluster::AllUp() const {
  return std::all_of(nodes_.begin(), nodes_.end(),
                     [](const Node& node) { return node.up || node.removed; });
}

void SimCluster::TearDown(Node* node) {
  if (node->alive) *node->alive = false;
  if (node->cleaner) cleaned_records_ += node->cleaner->Stats().removed;
  if (node->outbox) node->outbox->Shutdown();
  node->cleaner.reset();
  node->handoff.reset();
  node->reaper.reset();
  node->anti_entropy.reset();
  node->coordinator.reset();
  node->outbox.reset();
  node->store.reset();
  node->merkle.reset();
  node->placement.reset();
  node->handoff_transport.reset();
  node->transport.reset();
  node->scheduler.reset();
  node->executor.reset();
  node->alive.reset();
  node->up = false;
}

void SimCluster::Crash(int index) {
  Node& node = nodes_[index];
  if (!node.up) return;
  loop_->Log(absl::StrCat("CRASH ", node.member.id, " (incarnation ", node.incarnation, ")"));
  network_->SetDown(index);
  TearDown(&node);
  const size_t lost = node.engine->SimulateCrash();
  if (lost > 0) loop_->Log(absl::StrCat("LOST ", lost, " unsynced batches of ", node.member.id));
  if (!config_.keep_boot_after_crash) ++node.boot;
  ++crashes_;
  crash_times_.push_back(loop_->Now());
}

void SimCluster::Writeback(int index) {
  // The machine's, not an incarnation's: no guard. It outlives crashes and wipes (it reads the
  // node's current engine each time), as an OS does.
  loop_->Post(
      config_.writeback_interval,
      [this, index] {
        nodes_[index].engine->SyncAll();
        Writeback(index);
      },
      nullptr, "writeback", index);
}

void SimCluster::Stop(int index) {
  Node& node = nodes_[index];
  if (!node.up) return;
  loop_->Log(absl::StrCat("STOP ", node.member.id, " (incarnation ", node.incarnation, ")"));
  network_->SetDown(index);
  TearDown(&node);
}

void SimCluster::Remove(int index) {
  Stop(index);
  nodes_[index].removed = true;
  loop_->Log(absl::StrCat("REMOVED ", nodes_[index].member.id, ": it left the cluster"));
}

absl::Status SimCluster::Restart(int index) {
  Node& node = nodes_[index];
  if (node.up || node.removed) return absl::OkStatus();
  ++node.incarnation;
  clean_versions_.erase(index);  // a new incarnation's entry says nothing yet
  node.alive = std::make_shared<bool>(true);
  node.executor = std::make_unique<SimExecutor>(loop_, node.alive, index);
  node.scheduler = std::make_unique<SimScheduler>(loop_, node.alive, index);
  node.transport =
      std::make_unique<SimPeerTransport>(network_, this, &endpoints_, index, config_.timeouts);
  LocalStore::Options store_options;
  store_options.sync_writes = config_.sync_writes;
  store_options.boot_id = absl::StrCat(node.member.id, "-boot-", node.boot);
  store_options.wait_clock = &clock_;  // simulated time, as for everything else
  if (absl::Status backfilled = BackfillMerkleIndex(node.engine.get()); !backfilled.ok()) {
    TearDown(&node);
    return absl::InternalError(absl::StrCat("cannot backfill the Merkle index of ", node.member.id,
                                            ": ", backfilled.message()));
  }
  absl::StatusOr<std::unique_ptr<LocalStore>> store =
      LocalStore::Open(node.engine.get(), &clock_, node.rng, node.member.id, store_options);
  if (!store.ok()) {
    TearDown(&node);
    return absl::InternalError(
        absl::StrCat("cannot open the store of ", node.member.id, ": ", store.status().message()));
  }
  node.store = *std::move(store);
  if (!node.store->new_epoch_reason().empty()) {
    loop_->Log(
        absl::StrCat("NEW EPOCH ", node.store->actor(), ": ", node.store->new_epoch_reason()));
  }
  // As NodeServer::StartReplication: the placement of the stored layout; the Merkle trees and
  // tombstone purging follow its current ring until a change completes (InstallLayout).
  absl::StatusOr<std::shared_ptr<const Placement>> placement = Placement::Create(node.layout);
  if (!placement.ok()) {
    TearDown(&node);
    return absl::InternalError(absl::StrCat("cannot place the layout of ", node.member.id, ": ",
                                            placement.status().message()));
  }
  node.placement = std::make_unique<PlacementHolder>(*placement);
  node.merkle_layout_version = node.layout.version;
  // The Merkle index exists also with anti-entropy off, as in kvnode: the handoff's phase 2
  // compares digests from its column.
  node.merkle = std::make_unique<MerkleIndex>(node.member.id, (*placement)->current_ptr(),
                                              config_.replication_factor, node.engine.get());
  node.merkle->SetCommitCut([store = node.store.get()](const std::function<void()>& at_cut) {
    store->RunAtCommitCut(at_cut);
  });
  node.store->SetObserver(node.merkle.get());
  std::vector<Member> peers;
  for (const Member* m : (*placement)->AllMembers()) {
    if (m->id != node.member.id) peers.push_back(*m);
  }
  ReplicationOutbox::Options outbox_options = config_.outbox;
  outbox_options.clock = &clock_;
  outbox_options.layout_version = [holder = node.placement.get()] {
    return holder->Get()->layout().version;
  };
  node.outbox = std::make_unique<ReplicationOutbox>(std::move(peers), node.engine.get(),
                                                    node.transport.get(), node.scheduler.get(),
                                                    node.executor.get(), node.rng, outbox_options);
  if (absl::Status recovered = node.outbox->Recover(); !recovered.ok()) {
    TearDown(&node);
    return absl::InternalError(
        absl::StrCat("cannot recover the outbox of ", node.member.id, ": ", recovered.message()));
  }
  ClusterOptions options;
  options.self_id = node.member.id;
  options.replication_factor = config_.replication_factor;
  node.coordinator = std::make_unique<Coordinator>(options, node.placement.get(), node.store.get(),
                                                   node.outbox.get(), node.transport.get(),
                                                   node.executor.get(), &clock_);
  // As kvnode: a write still short of W after ClusterOptions::ack_timeout is answered
  // UNAVAILABLE (stored here; the client retries it with its token).
  node.coordinator->SetAckTimer(node.scheduler.get());
  // Built in the background, as kvnode does; exchanges wait until it is ready.
  MerkleIndex* merkle = node.merkle.get();
  node.executor->Schedule([this, merkle] {
    if (absl::Status built = merkle->Build(); !built.ok() && !absl::IsCancelled(built)) {
      loop_->Log(absl::StrCat("MERKLE BUILD FAILED ", merkle->self_id(), ": ", built.ToString()));
    }
  });
  if (config_.anti_entropy) {
    node.anti_entropy = std::make_unique<AntiEntropy>(
        node.merkle.get(), node.store.get(), node.transport.get(), node.scheduler.get(),
        node.executor.get(), &clock_, &clock_, config_.anti_entropy_options);
    node.anti_entropy->SetTransitionCheck(
        [holder = node.placement.get()] { return holder->Get()->layout().in_transition(); });
    node.anti_entropy->SetOwnershipCheck(
        [holder = node.placement.get(), id = node.member.id,
         n = static_cast<size_t>(config_.replication_factor)](absl::string_view key) {
          return holder->Get()->CheckMayHold(id, key, n).ok();
        });
    node.anti_entropy->Start();
    node.anti_entropy->MaybeFinishCatchingUp();  // as kvnode: a ring of one waits for nobody
    // As kvnode: an incarnation started during a transition purges once the change completes
    // and the Merkle index follows the new ring.
    if (config_.purge_tombstones) {
      node.reaper = std::make_unique<TombstoneReaper>(
          node.merkle.get(), node.store.get(), node.engine.get(), node.transport.get(),
          node.scheduler.get(), node.executor.get(), &clock_, &clock_, config_.reaper);
      // As kvnode: purging waits until every owner's clean-up pass on the ring kept nothing.
      node.reaper->SetCleanupCheck([this, index](uint64_t version) {
        const ClusterLayout& layout = nodes_[index].layout;
        if (layout.version != version) return false;
        std::vector<MemberView> members;
        for (const auto& [n, clean] : clean_versions_) {
          MemberView view;
          view.entry.member.id = nodes_[n].member.id;
          view.entry.clean_layout_version = clean;
          members.push_back(std::move(view));
        }
        return StraysCleared(layout, members);
      });
      node.reaper->OnLayout(node.layout.version, node.layout.in_transition());
      node.reaper->ResumeOnRing(node.layout.version);
      node.reaper->Start();
    }
  }
  PeerTransport* handoff_transport = node.transport.get();
  if (config_.drop_handoff_keys) {
    node.handoff_transport = std::make_unique<DroppingHandoffTransport>(node.transport.get());
    handoff_transport = node.handoff_transport.get();
  }
  HandoffSender::Options handoff_options = config_.handoff;
  handoff_options.replication_factor = static_cast<size_t>(config_.replication_factor);
  node.handoff = std::make_unique<HandoffSender>(
      node.member.id, node.engine.get(), handoff_transport, node.scheduler.get(),
      node.executor.get(), &clock_, node.handoff_rng, handoff_options,
      [this, index](const HandoffProgress& progress) {
        // Published as gossip would publish it (at once: the sim has no gossip delay here).
        handoff_progress_[index] = progress;
        if (handoff_listener_) handoff_listener_(index, progress);
      },
      [this](const ClusterLayout& transition) {
        std::vector<MemberView> members;
        for (const auto& [node, progress] : handoff_progress_) {
          MemberView view;
          view.entry.member.id = nodes_[node].member.id;
          view.entry.handoff = progress;
          members.push_back(std::move(view));
        }
        return AllSourcesStreamed(transition, members);
      });
  // As NodeServer::StartReplication: the cleaner finishes a clean-up a restart interrupted.
  node.cleaner = std::make_unique<UnownedRecordCleaner>(
      node.member.id, node.placement.get(), node.store.get(), node.engine.get(),
      node.scheduler.get(), node.executor.get(), &clock_, CleanupOptions(),
      [outbox = node.outbox.get()](absl::string_view key) {
        return outbox->MayHaveEntriesFor(key);
      });
  node.cleaner->SetCleanListener([this, index](uint64_t version) {
    clean_versions_[index] = version;
    loop_->Log(absl::StrCat(nodes_[index].member.id, " CLEANED UP on the ring of v", version));
  });
  node.up = true;
  network_->SetUp(index, node.alive);
  loop_->Log(absl::StrCat("START ", node.member.id, " incarnation ", node.incarnation, " actor ",
                          node.store->actor(), " layout v", node.layout.version));
  // A restart during a transition resumes the handoff (from the start of the scan).
  node.handoff->OnPlacement(node.placement->Get());
  node.cleaner->OnPlacement(node.placement->Get());
  return absl::OkStatus();
}

void SimCluster::SetClusterLayout(const ClusterLayout& layout) {
  absl::StatusOr<std::shared_ptr<const Placement>> placement = Placement::Create(layout);
  if (!placement.ok()) {
    loop_->Log(absl::StrCat("BAD LAYOUT v", layout.version, ": ", placement.status().ToString()));
    return;
  }
  placement_ = *std::move(placement);
}

std::vector<int> SimCluster::MembersOf(const ClusterLayout& layout) const {
  std::vector<int> members;
  for (const Member& m : layout.members) members.push_back(endpoints_.at(m.id));
  for (const Member& m : layout.next) {
    const int node = endpoints_.at(m.id);
    if (std::find(members.begin(), members.end(), node) == members.end()) members.push_back(node);
  }
  return members;
}

bool SimCluster::InstallLayout(int index, const ClusterLayout& layout) {
  Node& node = nodes_[index];
  if (!node.up) return false;
  // What NodeServer::OnLayout does (kept in step with it by hand).
  absl::StatusOr<std::shared_ptr<const Placement>> placement = Placement::Create(layout);
  if (!placement.ok()) return true;  // kvnode logs and ignores it
  const bool was_member = node.placement->Get()->layout().Contains(node.member.id);
  // kvnode's gossip listener tells the reaper before the placement changes.
  if (node.reaper != nullptr) node.reaper->OnLayout(layout.version, layout.in_transition());
  if (!node.placement->Set(*placement)) return true;
  node.layout = layout;  // stored synced
  for (const Member* m : (*placement)->AllMembers()) {
    if (m->id != node.member.id) node.outbox->AddPeer(*m);
  }
  // NodeServer::RemoveDepartedPeers: a complete change drops the entries of members that left.
  if (!layout.in_transition()) {
    for (const PeerOutboxStats& peer : node.outbox->Stats()) {
      if (layout.Contains(peer.peer_id)) continue;
      absl::StatusOr<uint64_t> dropped = node.outbox->RemovePeer(peer.peer_id);
      if (dropped.ok()) dropped_outbox_entries_ += *dropped;
      loop_->Log(absl::StrCat(node.member.id, " OUTBOX dropped the entries for ", peer.peer_id,
                              ": ",
                              dropped.ok() ? absl::StrCat(*dropped) : dropped.status().ToString()));
    }
  }
  loop_->Log(absl::StrCat(node.member.id, " LAYOUT v", layout.version,
                          layout.in_transition() ? absl::StrCat(" (", layout.change, ")") : "",
                          was_member && !layout.Contains(node.member.id) ? ": it has left" : ""));
  // Anti-entropy follows the owners once a change is complete (NodeServer::
  // FollowRingWithMerkleTrees): the trees are rebuilt for the new ring in the background.
  if (node.merkle != nullptr && !layout.in_transition() &&
      layout.version != node.merkle_layout_version) {
    node.merkle_layout_version = layout.version;
    MerkleIndex* merkle = node.merkle.get();
    TombstoneReaper* reaper = node.reaper.get();
    AntiEntropy* anti_entropy = node.anti_entropy.get();
    node.executor->Schedule([this, merkle, reaper, anti_entropy, version = layout.version,
                             ring = (*placement)->current_ptr()] {
      absl::Status built = merkle->ChangeRing(ring);
      if (built.ok() && anti_entropy != nullptr) anti_entropy->MaybeFinishCatchingUp();
      if (built.ok() && reaper != nullptr && reaper->ResumeOnRing(version)) {
        loop_->Log(absl::StrCat(merkle->self_id(), " PURGING resumed on the ring of v", version));
      } else if (!built.ok() && !absl::IsCancelled(built)) {
        loop_->Log(
            absl::StrCat("MERKLE REBUILD FAILED ", merkle->self_id(), ": ", built.ToString()));
      }
    });
  }
  node.handoff->OnPlacement(*placement);
  node.cleaner->OnPlacement(*placement);
  return true;
}

void SimCluster::Wipe(int index) {
  Node& node = nodes_[index];
  if (node.up) return;
  loop_->Log(absl::StrCat("WIPE the disk of ", node.member.id));
  if (first_wiped_node_ < 0) {
    first_wipe_ = loop_->Now();
    first_wiped_node_ = index;
  }
  node.engine = std::make_unique<MemoryEngine>();
}

bool SimCluster::TreesAgree() const {
  if (!config_.anti_entropy) return true;
  const std::vector<int> members = MembersOf(layout());
  for (size_t x = 0; x < members.size(); ++x) {
    const Node& a = nodes_[members[x]];
    if (!a.up || !a.merkle->ready()) return false;
    for (size_t y = x + 1; y < members.size(); ++y) {
      const Node& b = nodes_[members[y]];
      if (!b.up || !b.merkle->ready()) return false;
      absl::StatusOr<std::vector<uint64_t>> ab =
          a.merkle->Nodes(b.member.id, MerkleLevel::kRoot, {});
      absl::StatusOr<std::vector<uint64_t>> ba =
          b.merkle->Nodes(a.member.id, MerkleLevel::kRoot, {});
      if (!ab.ok() || !ba.ok() || *ab != *ba) return false;
    }
  }
  return true;
}

std::vector<int> SimCluster::ReplicasOf(const std::string& key) const {
  std::vector<int> replicas;
  for (const Member* m :
       placement_->Replicas(key, static_cast<size_t>(config_.replication_factor))) {
    replicas.push_back(endpoints_.at(m->id));
  }
  return replicas;
}

uint64_t SimCluster::OutboxDepth() const {
  uint64_t depth = 0;
  for (const Node& node : nodes_) {
    if (!node.up) continue;
    for (const PeerOutboxStats& peer : node.outbox->Stats()) {
      // Entries for a member that left wait until the completing layout reaches the node.
      auto it = endpoints_.find(peer.peer_id);
      if (it != endpoints_.end() && nodes_[it->second].removed) continue;
      depth += peer.depth;
    }
  }
  return depth;
}

UnownedRecordCleaner::Options SimCluster::CleanupOptions() const {
  UnownedRecordCleaner::Options options = config_.cleanup;
  options.replication_factor = static_cast<size_t>(config_.replication_factor);
  return options;
}

uint64_t SimCluster::CleanedRecords() const {
  uint64_t removed = cleaned_records_;
  for (const Node& node : nodes_) {
    if (node.cleaner) removed += node.cleaner->Stats().removed;
  }
  return removed;
}

uint64_t SimCluster::UnownedRecords() {
  const ClusterLayout& cluster = layout();
  uint64_t unowned = 0;
  for (const Node& node : nodes_) {
    if (!node.up || !cluster.IsOwner(node.member.id)) continue;
    std::unique_ptr<Iterator> it = node.engine->NewIterator(Column::kData);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (!placement_->current().IsReplica(
              it->key(), static_cast<size_t>(config_.replication_factor), node.member.id)) {
        ++unowned;
      }
    }
  }
  return unowned;
}

uint64_t SimCluster::StateHash() {
  Fingerprint fp;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    for (int c = 0; c < kNumColumns; ++c) {
      fp.Add(static_cast<uint64_t>(i * kNumColumns + c));
      std::unique_ptr<Iterator> it = nodes_[i].engine->NewIterator(static_cast<Column>(c));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        fp.Add(it->key());
        fp.Add(it->value());
      }
    }
  }
  return fp.value();
}

void SimCluster::OnNode(int index, std::function<void(Node*)> fn) {
  Node* node = &nodes_[index];
  if (!node->up) return;  // the request dies with the node; the caller times out
  node->executor->Schedule([node, fn = std::move(fn)] { fn(node); });
}

void SimCluster::ServeClientWrite(int node, const WriteCommand& command,
                                  std::function<void(absl::StatusOr<WriteReply>)> reply) {
  OnNode(node, [command, reply = std::move(reply)](Node* n) {
    n->coordinator->Write(command, QuorumSpec{}, reply);
  });
}

void SimCluster::ServeClientRead(int node, const std::string& key,
                                 std::function<void(absl::StatusOr<SiblingSet>)> reply) {
  OnNode(node, [key, reply = std::move(reply)](Node* n) {
    // As KvService::Get: this node's replica from memory when that answers (R=1), else the
    // coordinator's read.
    SiblingSet record;
    if (n->coordinator->TryReadFromMemory(key, QuorumSpec{}, &record)) return reply(record);
    n->coordinator->Read(key, QuorumSpec{}, reply);
  });
}

void SimCluster::ServeMergeRecords(int from, int node, const std::vector<EncodedRecord>& records,
                                   std::function<void(absl::Status)> reply) {
  OnNode(node, [this, from, records, reply = std::move(reply)](Node* n) {
    // As ReplicaService::DecodeMergeBatch: refuse a sender that is not a member and records this
    // member does not replicate, and decode everything, before changing anything.
    const std::shared_ptr<const Placement> placement = n->placement->Get();
    if (absl::Status sender = placement->CheckSender(n->member.id, NodeId(from)); !sender.ok()) {
      reply(sender);
      return;
    }
    for (const EncodedRecord& record : records) {
      absl::Status may_hold = placement->CheckMayHold(
          n->member.id, record.key, static_cast<size_t>(config_.replication_factor));
      if (!may_hold.ok()) {
        reply(may_hold);
        return;
      }
    }
    std::vector<SiblingSet> decoded;
    for (const EncodedRecord& record : records) {
      absl::StatusOr<SiblingSet> set = DecodeSiblingSet(record.record);
      if (!set.ok()) {
        reply(absl::InvalidArgumentError(
            absl::StrCat("record of key ", record.key, " is invalid: ", set.status().message())));
        return;
      }
      decoded.push_back(*std::move(set));
    }
    for (size_t i = 0; i < records.size(); ++i) {
      absl::StatusOr<SiblingSet> merged = n->store->MergeRecord(records[i].key, decoded[i]);
      if (!merged.ok()) {
        reply(merged.status());
        return;
      }
    }
    reply(absl::OkStatus());
  });
}

void SimCluster::ServeReadRecord(int node, const std::string& key, bool for_quorum,
                                 std::function<void(absl::StatusOr<QuorumRecord>)> reply) {
  OnNode(node, [key, for_quorum, reply = std::move(reply)](Node* n) {
    absl::StatusOr<LocalStore::QuorumRead> read = n->store->ReadRecordAs(key, for_quorum);
    if (!read.ok()) {
      reply(read.status());
      return;
    }
    reply(QuorumRecord{EncodeSiblingSet(read->record), read->catching_up});
  });
}

void SimCluster::ServeListKeys(int node, const std::string& prefix, const std::string& page_token,
                               uint32_t limit,
                               std::function<void(absl::StatusOr<ListPage>)> reply) {
  OnNode(node, [prefix, page_token, limit, reply = std::move(reply)](Node* n) {
    reply(n->store->List(prefix, page_token, limit));
  });
}

void SimCluster::ServeForwardWrite(int node, const WriteCommand& received, QuorumSpec w,
                                   std::function<void(absl::StatusOr<WriteReply>)> reply) {
  WriteCommand command = received;
  command.forwarded = true;       // as KvService marks a write another node forwarded
  command.first_attempt = false;  // a forwarded request does not carry it
  OnNode(node, [this, command, w, reply = std::move(reply)](Node* n) {
    if (!loop_->verbose()) return n->coordinator->Write(command, w, reply);
    n->coordinator->Write(command, w, [this, n, command, reply](absl::StatusOr<WriteReply> r) {
      loop_->Log(absl::StrCat(n->member.id, " coordinated forwarded write of ", command.key,
                              " token=", command.idempotency_token, " -> ",
                              r.ok() ? r->write_id : r.status().ToString()));
      reply(std::move(r));
    });
  });
}

void SimCluster::ServeMerkleNodes(
    int node, int requester, MerkleLevel level, const std::vector<uint32_t>& indexes,
    std::function<void(absl::StatusOr<std::vector<uint64_t>>)> reply) {
  const std::string requester_id = NodeId(requester);
  OnNode(node, [requester_id, level, indexes, reply = std::move(reply)](Node* n) {
    if (!n->merkle) return reply(absl::UnimplementedError("anti-entropy is off"));
    reply(n->merkle->Nodes(requester_id, level, indexes));
  });
}

void SimCluster::ServeSegmentKeys(int node, int requester, const std::vector<uint32_t>& segments,
                                  size_t max_bytes,
                                  std::function<void(absl::StatusOr<SegmentKeyList>)> reply) {
  const std::string requester_id = NodeId(requester);
  OnNode(node, [requester_id, segments, max_bytes, reply = std::move(reply)](Node* n) {
    if (!n->merkle) return reply(absl::UnimplementedError("anti-entropy is off"));
    reply(n->merkle->SegmentEntries(requester_id, segments, max_bytes));
  });
}

void SimCluster::ServePurgeRecord(int node, const std::string& key, const std::string& expected,
                                  uint64_t layout_version,
                                  std::function<void(absl::Status)> reply) {
  OnNode(node, [this, key, expected, layout_version, reply = std::move(reply)](Node* n) {
    // As ReplicaService::PurgeRecord: refused during a transition or on another layout, checked
    // before and inside the purge's commit.
    auto check = [n, layout_version](absl::string_view /*key*/) {
      return CheckPurgeOnLayout(n->placement->Get()->layout(), layout_version, n->member.id);
    };
    if (absl::Status refused = check(key); !refused.ok()) return reply(refused);
    absl::StatusOr<SiblingSet> record = DecodeSiblingSet(expected);
    if (!record.ok()) return reply(absl::InvalidArgumentError(record.status().message()));
    if (!record->AllTombstones()) {
      return reply(absl::InvalidArgumentError("the expected record holds a live version"));
    }
    absl::Status purged = n->store->PurgeIfUnchanged(key, *record, check);
    if (purged.ok()) {
      purged_contexts_[key].Merge(record->context());
      loop_->Log(absl::StrCat(n->member.id, " PURGED ", key));
    }
    reply(purged);
  });
}

void SimCluster::ServeCompareDigests(
    int node, const std::vector<KeyDigest>& digests,
    std::function<void(absl::StatusOr<std::vector<std::string>>)> reply) {
  OnNode(node, [digests, reply = std::move(reply)](Node* n) {
    reply(KeysNotMatching(*n->merkle, digests));
  });
}

}  // namespace kv::sim

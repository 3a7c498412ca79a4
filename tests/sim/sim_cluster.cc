#include "tests/sim/sim_cluster.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "node/handoff_plan.h"
#include "storage/record_codec.h"

namespace kv::sim {

SimCluster::SimCluster(SimLoop* loop, SimNetwork* network, ClusterConfig config)
    : loop_(loop), network_(network), config_(std::move(config)), clock_(loop) {
  nodes_.resize(config_.num_nodes);
  std::vector<Member> members;
  for (int i = 0; i < config_.num_nodes; ++i) {
    Node& node = nodes_[i];
    node.member.id = absl::StrCat("n", i + 1);
    node.member.address = absl::StrCat("sim-", node.member.id, ":7000");
    node.engine = std::make_unique<MemoryEngine>();
    node.rng.seed(loop_->rng()());
    endpoints_[node.member.id] = i;
    members.push_back(node.member);
  }
  absl::StatusOr<HashRing> ring = HashRing::Build(members);
  // Build fails only on an empty or duplicated membership, which the loop above cannot make.
  if (ring.ok()) ring_ = std::make_shared<const HashRing>(*std::move(ring));
}

SimCluster::~SimCluster() {
  for (Node& node : nodes_) TearDown(&node);
}

absl::Status SimCluster::Start() {
  if (!ring_) return absl::InternalError("the simulated cluster has no ring");
  for (int i = 0; i < num_nodes(); ++i) {
    if (absl::Status s = Restart(i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

int SimCluster::NumUp() const {
  int up = 0;
  for (const Node& node : nodes_) up += node.up ? 1 : 0;
  return up;
}

void SimCluster::TearDown(Node* node) {
  if (node->alive) *node->alive = false;
  if (node->outbox) node->outbox->Shutdown();
  node->reaper.reset();
  node->anti_entropy.reset();
  node->coordinator.reset();
  node->outbox.reset();
  node->store.reset();
  node->merkle.reset();
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
  node.engine->SimulateCrash();
  ++crashes_;
}

absl::Status SimCluster::Restart(int index) {
  Node& node = nodes_[index];
  if (node.up) return absl::OkStatus();
  ++node.incarnation;
  node.alive = std::make_shared<bool>(true);
  node.executor = std::make_unique<SimExecutor>(loop_, node.alive, index);
  node.scheduler = std::make_unique<SimScheduler>(loop_, node.alive, index);
  node.transport =
      std::make_unique<SimPeerTransport>(network_, this, &endpoints_, index, config_.timeouts);
  LocalStore::Options store_options;
  store_options.sync_writes = true;
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
  if (config_.anti_entropy) {
    node.merkle = std::make_unique<MerkleIndex>(node.member.id, ring_, config_.replication_factor,
                                                node.engine.get());
    node.store->SetObserver(node.merkle.get());
  }
  std::vector<Member> peers;
  for (const Member& m : ring_->members()) {
    if (m.id != node.member.id) peers.push_back(m);
  }
  ReplicationOutbox::Options outbox_options = config_.outbox;
  outbox_options.clock = &clock_;
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
  node.coordinator =
      std::make_unique<Coordinator>(options, ring_, node.store.get(), node.outbox.get(),
                                    node.transport.get(), node.executor.get(), &clock_);
  if (config_.anti_entropy) {
    // Built in the background, as kvnode does; exchanges wait until it is ready.
    MerkleIndex* merkle = node.merkle.get();
    node.executor->Schedule([this, merkle] {
      if (absl::Status built = merkle->Build(); !built.ok()) {
        loop_->Log(absl::StrCat("MERKLE BUILD FAILED ", merkle->self_id(), ": ", built.ToString()));
      }
    });
    node.anti_entropy = std::make_unique<AntiEntropy>(
        node.merkle.get(), node.store.get(), node.transport.get(), node.scheduler.get(),
        node.executor.get(), &clock_, config_.anti_entropy_options);
    node.anti_entropy->Start();
    if (config_.purge_tombstones) {
      node.reaper = std::make_unique<TombstoneReaper>(
          node.merkle.get(), node.store.get(), node.engine.get(), node.transport.get(),
          node.scheduler.get(), node.executor.get(), &clock_, config_.reaper);
      node.reaper->Start();
    }
  }
  node.up = true;
  network_->SetUp(index, node.alive);
  loop_->Log(absl::StrCat("START ", node.member.id, " incarnation ", node.incarnation, " actor ",
                          node.store->actor()));
  return absl::OkStatus();
}

void SimCluster::Wipe(int index) {
  Node& node = nodes_[index];
  if (node.up) return;
  loop_->Log(absl::StrCat("WIPE the disk of ", node.member.id));
  first_wipe_ = std::min(first_wipe_, loop_->Now());
  node.engine = std::make_unique<MemoryEngine>();
}

bool SimCluster::TreesAgree() const {
  if (!config_.anti_entropy) return true;
  for (int i = 0; i < num_nodes(); ++i) {
    const Node& a = nodes_[i];
    if (!a.up || !a.merkle->ready()) return false;
    for (int j = i + 1; j < num_nodes(); ++j) {
      const Node& b = nodes_[j];
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
       ring_->PreferenceList(key, static_cast<size_t>(config_.replication_factor))) {
    replicas.push_back(endpoints_.at(m->id));
  }
  return replicas;
}

uint64_t SimCluster::OutboxDepth() const {
  uint64_t depth = 0;
  for (const Node& node : nodes_) {
    if (!node.up) continue;
    for (const PeerOutboxStats& peer : node.outbox->Stats()) depth += peer.depth;
  }
  return depth;
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
    n->coordinator->Read(key, QuorumSpec{}, reply);
  });
}

void SimCluster::ServeMergeRecords(int node, const std::vector<EncodedRecord>& records,
                                   std::function<void(absl::Status)> reply) {
  OnNode(node, [records, reply = std::move(reply)](Node* n) {
    // As ReplicaService::DoMergeBatch: decode everything before changing anything.
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

void SimCluster::ServeReadRecord(int node, const std::string& key,
                                 std::function<void(absl::StatusOr<std::string>)> reply) {
  OnNode(node, [key, reply = std::move(reply)](Node* n) {
    absl::StatusOr<SiblingSet> record = n->store->ReadRecord(key);
    if (!record.ok()) {
      reply(record.status());
      return;
    }
    reply(EncodeSiblingSet(*record));
  });
}

void SimCluster::ServeListKeys(int node, const std::string& prefix, const std::string& page_token,
                               uint32_t limit,
                               std::function<void(absl::StatusOr<ListPage>)> reply) {
  OnNode(node, [prefix, page_token, limit, reply = std::move(reply)](Node* n) {
    reply(n->store->List(prefix, page_token, limit));
  });
}

void SimCluster::ServeForwardWrite(int node, const WriteCommand& command, QuorumSpec w,
                                   std::function<void(absl::StatusOr<WriteReply>)> reply) {
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

void SimCluster::ServeSegmentKeys(
    int node, int requester, const std::vector<uint32_t>& segments,
    std::function<void(absl::StatusOr<std::vector<KeyDigest>>)> reply) {
  const std::string requester_id = NodeId(requester);
  OnNode(node, [requester_id, segments, reply = std::move(reply)](Node* n) {
    if (!n->merkle) return reply(absl::UnimplementedError("anti-entropy is off"));
    reply(n->merkle->SegmentEntries(requester_id, segments));
  });
}

void SimCluster::ServePurgeRecord(int node, const std::string& key, const std::string& expected,
                                  std::function<void(absl::Status)> reply) {
  OnNode(node, [this, key, expected, reply = std::move(reply)](Node* n) {
    // As ReplicaService::PurgeRecord.
    absl::StatusOr<SiblingSet> record = DecodeSiblingSet(expected);
    if (!record.ok()) return reply(absl::InvalidArgumentError(record.status().message()));
    absl::Status purged = n->store->PurgeIfUnchanged(key, *record);
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

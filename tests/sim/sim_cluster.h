// SimCluster: 3 to 5 simulated storage nodes, each running the real node core (HashRing,
// Coordinator, ReplicationOutbox, LocalStore over a MemoryEngine, with sync writes unless
// ClusterConfig::sync_writes is off) on the SimLoop's clock, executor and timers and the
// SimNetwork's transport.
//
// A node's MemoryEngine is its disk and outlives its incarnations. Crash() is a machine crash:
// the engine drops every unsynced batch, the incarnation's guard turns false (so its pending
// tasks, timers and call callbacks are dropped unrun) and its objects are destroyed. Restart()
// builds a new incarnation over the same engine and recovers the outbox from it, as kvnode does
// at startup. Each incarnation runs a MerkleIndex (built in the background after start; its trees
// follow the ring when a change completes) and a HandoffSender, and with anti-entropy on also
// AntiEntropy and a TombstoneReaper, and an UnownedRecordCleaner, as kvnode does.
//
// SimCluster also serves the requests that reach a node over the simulated network: replica
// requests from peers (as node/replica_service.cc does) and client requests (as a cluster-aware
// KV service would: through the node's Coordinator). Single-threaded.
//
// Membership. Every node has a cluster layout (node/cluster_layout.h) that it keeps across
// crashes (kvnode stores it synced) and starts each incarnation with, as kvnode does: the
// Coordinator places keys through a PlacementHolder (the union of old and new owners during a
// transition), the outbox replicates to every member of both rings, the MerkleIndex (and so
// anti-entropy and the TombstoneReaper) follows the current ring once a change completes, and a
// HandoffSender (node/handoff.h) streams the keys new owners gain. Nodes beyond
// ClusterConfig::initial_members start empty, outside the layout (forwarding coordinators, as a
// kvnode started with --seeds waits to be joined). InstallLayout is what gossip delivering a
// newer layout does in kvnode (NodeServer::OnLayout, replicated here: the store's layout, outbox
// peers added and, once a change is complete, those that left removed, tombstone purging paused
// until the Merkle index follows the completed change's ring, the handoff, the clean-up of
// records the node no longer owns). Unlike kvnode, the sim rebuilds the index for a completed
// layout even if a newer transition arrived before the rebuild ran (purging stays paused either
// way), and it pauses purging only for a layout it can place. The cluster's
// own layout
// (SetClusterLayout) is the newest one committed, which the checkers take replicas from.
#ifndef KV_TESTS_SIM_SIM_CLUSTER_H_
#define KV_TESTS_SIM_SIM_CLUSTER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/anti_entropy.h"
#include "node/coordinator.h"
#include "node/handoff.h"
#include "node/local_store.h"
#include "node/merkle_index.h"
#include "node/placement.h"
#include "node/replication_outbox.h"
#include "node/ring.h"
#include "node/tombstone_reaper.h"
#include "node/unowned_record_cleaner.h"
#include "storage/memory_engine.h"
#include "tests/sim/sim_loop.h"
#include "tests/sim/sim_network.h"

namespace kv::sim {

struct ClusterConfig {
  int num_nodes = 3;
  // Nodes 0..initial_members-1 form the first layout (version 1); the others start outside it
  // (0: all nodes are members).
  int initial_members = 0;
  int replication_factor = 3;
  ReplicationOutbox::Options outbox;
  TransportTimeouts timeouts;
  // Merkle anti-entropy and tombstone purge run on every node when set.
  bool anti_entropy = true;
  AntiEntropy::Options anti_entropy_options;
  bool purge_tombstones = true;
  TombstoneReaper::Options reaper;
  HandoffSender::Options handoff;
  // Removal of records a node no longer owns after a change (always on, as in kvnode). The
  // confirm delay exceeds the longest simulated gossip delay of a layout.
  UnownedRecordCleaner::Options cleanup = [] {
    UnownedRecordCleaner::Options o;
    o.keys_per_second = 5000;
    o.keys_per_step = 100;
    o.confirm_delay = absl::Seconds(2);
    o.retry = absl::Seconds(2);
    o.interval = absl::Seconds(4);  // so that stray copies are gone by the end of a run
    return o;
  }();
  // Sabotage (checkers' tests): handoff streams drop the records of every other key, answering
  // as if delivered.
  bool drop_handoff_keys = false;
  // False: every node runs as kvnode does by default (--sync_writes=false): a write is durable
  // once its machine's writeback has run (every writeback_interval of simulated time, for the
  // whole engine, as an OS flushing its dirty pages), and a crash loses the writes since. Each
  // crash is a machine crash: the node restarts with a new boot id, so its store takes a new
  // actor epoch (LocalStore, "Actor epochs"). Crashes are spaced more than two writeback
  // intervals apart (CrashTooSoon), so that a write W=2 nodes acknowledged survives on one: its
  // coordinator is one of them and acknowledges within an interval of the other's apply, so the
  // later of the two crashes comes after the other node's writeback of it. On a real machine the
  // window is the OS's writeback delay (Linux: dirty pages up to about 30 s by default). All
  // nodes write back at the same instants (one phase), unlike real machines.
  bool sync_writes = true;
  absl::Duration writeback_interval = absl::Milliseconds(50);
  // Sabotage (checkers' tests): a crash keeps the node's boot id, so its store keeps its epoch
  // after losing unsynced writes and reuses their dots.
  bool keep_boot_after_crash = false;
};

class SimCluster : public SimReplicaServer {
 public:
  // Nodes are endpoints 0..num_nodes-1 of `network`.
  SimCluster(SimLoop* loop, SimNetwork* network, ClusterConfig config);
  ~SimCluster() override;
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  // Starts every node on an empty engine.
  absl::Status Start();
  void Crash(int node);
  absl::Status Restart(int node);
  // A clean stop (nothing lost: every write is synced), e.g. for a rolling restart.
  void Stop(int node);
  // Stops a node that left the cluster for good: it is never restarted, and nothing waits for it.
  void Remove(int node);
  bool IsRemoved(int node) const { return nodes_[node].removed; }
  // True when every node that was not removed is up.
  bool AllUp() const;
  // Replaces the disk of a node that is down by an empty one (a lost or wiped data directory).
  void Wipe(int node);
  // When the first disk was wiped (InfiniteFuture if none was), and whose (-1 if none was).
  absl::Time first_wipe() const { return first_wipe_; }
  int first_wiped_node() const { return first_wiped_node_; }
  // When each crash happened, in order.
  const std::vector<absl::Time>& crash_times() const { return crash_times_; }
  // True when a crash now could lose, with another crash's, both copies of a write two nodes
  // acknowledged: writes are not synced and the last crash was at most two writeback intervals
  // ago. Fault drivers skip such a crash.
  bool CrashTooSoon() const {
    return !config_.sync_writes && !crash_times_.empty() &&
           loop_->Now() - crash_times_.back() <= 2 * config_.writeback_interval;
  }

  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  bool IsUp(int node) const { return nodes_[node].up; }
  int NumUp() const;
  const std::string& NodeId(int node) const { return nodes_[node].member.id; }
  const ClusterConfig& config() const { return config_; }
  // The newest layout committed (by the membership change driver); version 1 at start.
  const ClusterLayout& layout() const { return placement_->layout(); }
  void SetClusterLayout(const ClusterLayout& layout);
  // The layout node `node` holds (the one its next incarnation starts with).
  const ClusterLayout& NodeLayout(int node) const { return nodes_[node].layout; }
  // Gossip delivering `layout` to a node that is up (as NodeServer::OnLayout). False if the node
  // is down; an older or equal version is ignored (true).
  bool InstallLayout(int node, const ClusterLayout& layout);
  // Called for every handoff progress report: (node, layout version, keys sent, done).
  // Every handoff progress a node's HandoffSender publishes: (node, progress).
  using HandoffListener = std::function<void(int, const HandoffProgress&)>;
  void SetHandoffListener(HandoffListener listener) { handoff_listener_ = std::move(listener); }
  // Node numbers of the members of `layout` (owners, then the next owners not among them).
  std::vector<int> MembersOf(const ClusterLayout& layout) const;
  // The node numbers of a key's replicas under the cluster's layout, in preference order.
  std::vector<int> ReplicasOf(const std::string& key) const;
  // The live incarnation's objects; null while the node is down.
  LocalStore* store(int node) { return nodes_[node].store.get(); }
  ReplicationOutbox* outbox(int node) { return nodes_[node].outbox.get(); }
  // The node's disk (whatever its state).
  MemoryEngine* engine(int node) { return nodes_[node].engine.get(); }
  // Entries waiting in the outboxes of nodes that are up, for peers that were not removed.
  uint64_t OutboxDepth() const;
  // Records that nodes up and in the cluster's layout hold of keys they do not own under it.
  uint64_t UnownedRecords();
  // Records removed by the nodes' cleaners, and outbox entries dropped for members that left,
  // over the run.
  uint64_t CleanedRecords() const;
  uint64_t dropped_outbox_entries() const { return dropped_outbox_entries_; }
  // True when anti-entropy is off, or every pair of members of the cluster's layout (all up,
  // trees built) has equal Merkle roots: their shared keys hold the same records.
  bool TreesAgree() const;
  AntiEntropy* anti_entropy(int node) { return nodes_[node].anti_entropy.get(); }
  // The merged causal contexts of the (tombstone-only) records of `key` that replicas purged at a
  // reaper's request during the run: every live version they cover had been replaced. Null if
  // none was purged.
  const VersionVector* PurgedContext(const std::string& key) const {
    auto it = purged_contexts_.find(key);
    return it == purged_contexts_.end() ? nullptr : &it->second;
  }
  TombstoneReaper* reaper(int node) { return nodes_[node].reaper.get(); }
  uint64_t crashes() const { return crashes_; }
  // Fingerprint of every node's engine contents (all columns).
  uint64_t StateHash();

  // Client requests arriving at `node`.
  void ServeClientWrite(int node, const WriteCommand& command,
                        std::function<void(absl::StatusOr<WriteReply>)> reply);
  void ServeClientRead(int node, const std::string& key,
                       std::function<void(absl::StatusOr<SiblingSet>)> reply);

  // SimReplicaServer: requests from peers.
  void ServeMergeRecords(int from, int node, const std::vector<EncodedRecord>& records,
                         std::function<void(absl::Status)> reply) override;
  void ServeReadRecord(int node, const std::string& key, bool for_quorum,
                       std::function<void(absl::StatusOr<QuorumRecord>)> reply) override;
  void ServeForwardWrite(int node, const WriteCommand& received, QuorumSpec w,
                         std::function<void(absl::StatusOr<WriteReply>)> reply) override;
  void ServeListKeys(int node, const std::string& prefix, const std::string& page_token,
                     uint32_t limit, std::function<void(absl::StatusOr<ListPage>)> reply) override;
  void ServeMerkleNodes(int node, int requester, MerkleLevel level,
                        const std::vector<uint32_t>& indexes,
                        std::function<void(absl::StatusOr<std::vector<uint64_t>>)> reply) override;
  void ServeSegmentKeys(int node, int requester, const std::vector<uint32_t>& segments,
                        size_t max_bytes,
                        std::function<void(absl::StatusOr<SegmentKeyList>)> reply) override;
  void ServePurgeRecord(int node, const std::string& key, const std::string& expected,
                        uint64_t layout_version, std::function<void(absl::Status)> reply) override;
  void ServeCompareDigests(
      int node, const std::vector<KeyDigest>& digests,
      std::function<void(absl::StatusOr<std::vector<std::string>>)> reply) override;

 private:
  struct Node {
    Member member;
    std::unique_ptr<MemoryEngine> engine;  // the disk: survives crashes
    std::mt19937_64 rng;                   // the node's randomness (epochs, backoff jitter)
    std::mt19937_64 handoff_rng;           // its HandoffSender's retry jitter
    ClusterLayout layout;  // the newest it knows: survives crashes (kvnode stores it synced)
    bool up = false;
    bool removed = false;
    uint64_t incarnation = 0;
    uint64_t boot = 0;  // the machine's boots: a crash reboots it (LocalStore::Options::boot_id)
    uint64_t merkle_layout_version = 0;  // the layout whose ring the Merkle trees follow
    // The live incarnation, in construction order (destroyed in reverse).
    std::shared_ptr<bool> alive;
    std::unique_ptr<SimExecutor> executor;
    std::unique_ptr<SimScheduler> scheduler;
    std::unique_ptr<SimPeerTransport> transport;
    std::unique_ptr<PeerTransport> handoff_transport;  // drop_handoff_keys only
    std::unique_ptr<PlacementHolder> placement;
    std::unique_ptr<MerkleIndex> merkle;  // the store's observer: outlives the store
    std::unique_ptr<LocalStore> store;
    std::unique_ptr<ReplicationOutbox> outbox;
    std::unique_ptr<Coordinator> coordinator;
    std::unique_ptr<AntiEntropy> anti_entropy;
    std::unique_ptr<TombstoneReaper> reaper;
    std::unique_ptr<HandoffSender> handoff;
    std::unique_ptr<UnownedRecordCleaner> cleaner;
  };

  UnownedRecordCleaner::Options CleanupOptions() const;
  // Destroys the live incarnation's objects (the engine stays).
  void TearDown(Node* node);
  // Makes the node's engine durable every writeback_interval, from now on (sync_writes off).
  void Writeback(int node);
  // Runs `fn` on the node's executor if it is up (like a gRPC handler handing work off).
  void OnNode(int node, std::function<void(Node*)> fn);

  SimLoop* const loop_;
  SimNetwork* const network_;
  const ClusterConfig config_;
  SimClock clock_;
  std::vector<Node> nodes_;
  std::map<std::string, int> endpoints_;        // member id -> node number
  std::shared_ptr<const Placement> placement_;  // of the cluster's layout
  HandoffListener handoff_listener_;
  // The last handoff progress each node published (kept across its crashes, as gossip does).
  std::map<int, HandoffProgress> handoff_progress_;
  // The layout version of each node's last clean-up pass that kept nothing, in its current
  // incarnation (as gossip publishes MemberEntry::clean_layout_version).
  std::map<int, uint64_t> clean_versions_;
  uint64_t crashes_ = 0;
  uint64_t cleaned_records_ = 0;  // by incarnations already torn down
  uint64_t dropped_outbox_entries_ = 0;
  std::map<std::string, VersionVector> purged_contexts_;
  absl::Time first_wipe_ = absl::InfiniteFuture();
  int first_wiped_node_ = -1;
  std::vector<absl::Time> crash_times_;
};

}  // namespace kv::sim

#endif  // KV_TESTS_SIM_SIM_CLUSTER_H_

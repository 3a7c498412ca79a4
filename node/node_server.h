// NodeServer: one running kvnode, wired together: the RocksDB engine on the data directory, the
// LocalStore over it, the executor that runs storage work, the cluster (hash ring from --peers or
// learned from --seeds, versioned by the cluster layout, gRPC peer transport, gossip membership and
// failure detection, replication outbox, coordinator), and the gRPC server with the KV, Admin and
// Replica services, standard health checking and server reflection. A background thread expires old
// idempotency records every minute.
//
// Start fails with a clear status and leaves nothing running: PERMISSION_DENIED when the data
// directory cannot be created or written, FAILED_PRECONDITION when another process holds it,
// UNAVAILABLE when the listen address cannot be bound (in use, or not a local address) or when
// no seed told the cluster layout within seed_timeout (the node does not serve before it knows
// the ring); the message names the directory, address or seed and what to do. A node the layout
// does not list serves as a forwarding coordinator and gossips itself as a candidate until
// `kvctl cluster join` adds it.
//
// Shutdown is graceful: for `shutdown_drain` new calls are answered UNAVAILABLE and health
// checks NOT_SERVING (clients move elsewhere; calls still queued inside gRPC get answered rather
// than dropped); calls already admitted get up to `shutdown_grace` to finish (then they are
// cancelled); then the server closes its connections, queued storage work drains, and RocksDB
// is closed. Every acknowledged write is in RocksDB's write-ahead log before it is acknowledged.
//
// Thread-safety: Start and Shutdown must not run concurrently with each other; the accessors
// are thread-safe.
#ifndef KV_NODE_NODE_SERVER_H_
#define KV_NODE_NODE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "node/admin_service.h"
#include "node/anti_entropy.h"
#include "node/call_gate.h"
#include "node/config.h"
#include "node/coordinator.h"
#include "node/delaying_peer_transport.h"
#include "node/executor.h"
#include "node/gossip.h"
#include "node/grpc_peer_transport.h"
#include "node/handoff.h"
#include "node/kv_service.h"
#include "node/leveling_peer_transport.h"
#include "node/local_store.h"
#include "node/membership_change.h"
#include "node/merkle_index.h"
#include "node/metrics.h"
#include "node/operation_journal.h"
#include "node/operations.h"
#include "node/placement.h"
#include "node/repair_runner.h"
#include "node/replica_service.h"
#include "node/replication_outbox.h"
#include "node/scheduler.h"
#include "node/tls.h"
#include "node/tombstone_reaper.h"
#include "node/unowned_record_cleaner.h"
#include "storage/engine.h"
#include "storage/steady_timer.h"

namespace kv {

class NodeServer {
 public:
  // `request_stop` (may be empty) is called once when a leave has removed this node and
  // exit_after_leave is set: the caller then stops the server (kvnode: as on SIGTERM).
  // `cancel` (may be null; must outlive Start) ends a wait for the seeds early: Start then
  // returns CANCELLED (kvnode: a shutdown signal while the node was still starting).
  static absl::StatusOr<std::unique_ptr<NodeServer>> Start(
      const NodeConfig& config, std::function<void()> request_stop = {},
      const absl::Notification* cancel = nullptr);
  ~NodeServer();  // Shutdown() if still running
  NodeServer(const NodeServer&) = delete;
  NodeServer& operator=(const NodeServer&) = delete;

  // Stops serving gracefully (see above). Idempotent.
  void Shutdown();

  const std::string& actor() const { return actor_; }
  int port() const { return port_; }

 private:
  NodeServer(const NodeConfig& config, std::function<void()> request_stop)
      : config_(config), request_stop_(std::move(request_stop)) {}
  absl::Status OpenStorage();
  // A value a data directory keeps from its first start (the node id, the cluster name): in the
  // meta column under `meta_key`, and in file `file_name`, which a start reads before the engine
  // opens.
  struct DirectoryRecord {
    std::string meta_key;
    const char* file_name;
    const std::string& expected;  // this start's value
    // The refusal of a directory that recorded another value (`recorded_in`: the file, if
    // that is where it was read).
    absl::Status (NodeServer::*refuse)(absl::string_view recorded,
                                       absl::string_view recorded_in) const;
    std::string file_value = "";  // what the file said when OpenStorage read it ("" if none)
  };
  std::vector<DirectoryRecord> DirectoryRecords() const;
  // FAILED_PRECONDITION if the engine's meta column records another value than
  // `record.expected`. A directory that records none is added to `unrecorded_`, which
  // RecordDataDir records once the start knows its cluster layout; one that does but lacks the
  // file gets the file.
  absl::Status CheckDataDirRecord(const DirectoryRecord& record);
  // Records `unrecorded_` (the meta column, synced, then the file).
  absl::Status RecordDataDir();
  // Writes `record`'s file unless it already says `record.expected`; a failure is logged, not
  // returned (the meta column decides without it).
  absl::Status FileDataDirRecord(const DirectoryRecord& record);
  // FAILED_PRECONDITION naming `owner` (and the file that records it, if not empty).
  absl::Status OwnedByAnotherNode(absl::string_view owner, absl::string_view recorded_in) const;
  // The same for a directory of cluster `name`.
  absl::Status OwnedByAnotherCluster(absl::string_view name, absl::string_view recorded_in) const;
  // The executor, the peer transport and the store (LocalStore::Open), once the other nodes
  // said which history generation they last saw from this one (PeerGeneration).
  absl::Status OpenStore();
  void MakeTransport();  // transport_
  // The addresses of the other nodes this one knows before it starts (--peers, the stored
  // layout's members and --seeds), and in `*self_addresses` those the others may know this node
  // by (its member's in --peers and in the stored layout, and --listen).
  // The cluster layout this node stored (nullopt if none).
  absl::StatusOr<std::optional<ClusterLayout>> StoredLayout() const;
  std::vector<std::string> PeerAddresses(std::vector<std::string>* self_addresses) const;
  // The highest history generation of this node that another node reports (node/local_store.h,
  // "History generations"; node/history_check.h), 0 if none; waits for the answers at most
  // kPeerGenerationWait.
  absl::StatusOr<uint64_t> PeerGeneration();
  // Advances the store's generation every kGenerationInterval and gossips it, until shutdown.
  void ScheduleGenerationAdvance();
  // The ring, the replication outbox (recovered from disk) and the coordinator.
  absl::Status StartReplication();
  // The Merkle index of `ring`, observing every record change from now on; its trees are built
  // in the background.
  void StartMerkleIndex(std::shared_ptr<const HashRing> ring);
  // The replication outbox to `peers`, recovered from disk.
  absl::Status StartOutbox(std::vector<Member> peers);
  // Anti-entropy, repair operations (and the operations an earlier run stored) and tombstone
  // purging (off when `layout` is in transition).
  absl::Status StartRepairs(const ClusterLayout& layout);
  // Handoff, the clean-up of records this node no longer owns, and membership changes (resuming
  // those an earlier run's operations ran; the other interrupted operations end FAILED); from
  // then on layout changes reach the placement.
  void StartMembershipWork();
  // Without --peers: asks the seeds, round robin, until one tells the cluster layout.
  absl::StatusOr<ClusterLayout> LearnLayoutFromSeeds();
  // The layout to start with: from --peers or the seeds, or the one stored in the meta column
  // if that is newer.
  absl::StatusOr<ClusterLayout> InitialLayout();
  // Logs a warning if this node's --peers entry has another port than --listen.
  void WarnIfPeersEntryNamesAnotherPort() const;
  // The layout promises this node made, as stored (synced, in the meta column) by the last run;
  // DATA_LOSS if they do not decode.
  absl::StatusOr<std::unique_ptr<LayoutReservations>> OpenLayoutAcceptor();
  void StartGossip(const ClusterLayout& layout);
  // Gossip brought (or this node committed) a newer layout: store it, place keys by it, add
  // joined members to the outbox, start this node's handoff; once a change is complete, drop the
  // outbox entries of members that left and remove the records this node no longer owns.
  void OnLayout(const ClusterLayout& layout);
  // Removes from the outbox the peers that `layout` (complete, no transition) does not list.
  void RemoveDepartedPeers(const ClusterLayout& layout);
  // Rebuilds the Merkle trees for the current ring if a change completed since they were built
  // (blocks for the scan: runs on the executor).
  void FollowRingWithMerkleTrees();
  absl::Status StartGrpc();
  // Once a minute until Shutdown: expires idempotency records, closes idle peer channels.
  void MaintenanceLoop();
  // Drains and stops the gRPC server (see Shutdown above).
  void StopServing();
  void LogStarted() const;

  const NodeConfig config_;
  const std::function<void()> request_stop_;          // may be empty
  const absl::Notification* start_cancel_ = nullptr;  // Start's `cancel`, during Start only
  // The directory records a new data directory takes once the start knows its layout.
  std::vector<DirectoryRecord> unrecorded_;
  std::unique_ptr<NodeTls> tls_;  // the server's and the peer channels' credentials (node/tls.h)
  absl::BitGen rng_;
  absl::BitGen outbox_rng_;   // backoff jitter; used only under the outbox's lock
  absl::BitGen gossip_rng_;   // gossip peer choice; used only under the gossiper's lock
  absl::BitGen handoff_rng_;  // handoff retry jitter; used only under the sender's lock
  // Declared in dependency order: destroyed from the server down to the engine.
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<TimerScheduler> scheduler_;
  std::unique_ptr<GrpcPeerTransport> transport_;
  // transport_ sending older members only what they read; what every component uses.
  std::unique_ptr<LevelingPeerTransport> peer_transport_;
  // Gossip runs on its own thread, timer and channels, so that its heartbeats never wait behind
  // storage work queued on executor_ (a backlog there must not make this node look DOWN).
  std::unique_ptr<ThreadPoolExecutor> gossip_executor_;
  std::unique_ptr<TimerScheduler> gossip_scheduler_;
  std::unique_ptr<GrpcPeerTransport> gossip_transport_;
  std::unique_ptr<PlacementHolder> placement_;
  // A failed write left the Merkle trees wrong: rebuilds them from what was written, a second
  // later (again after a scan that was running), one rebuild at a time with the ring changes.
  void ScheduleStaleMerkleRebuild();
  // Held through OnLayout, which runs on the executor: layouts are applied one at a time, so
  // that an older layout's removal of departed outbox peers cannot follow a newer layout that
  // added one of them back (the peer would be missing from the outbox, and writes would record
  // no entry for it).
  absl::Mutex on_layout_mu_;
  // Orders the stored layout's writes: a layout is stored only while it is still the
  // placement's, so an older one never overwrites a newer.
  absl::Mutex layout_store_mu_;
  // Serializes FollowRingWithMerkleTrees.
  absl::Mutex merkle_ring_mu_;
  // Held by the Merkle index's stale handler while it schedules, and by Shutdown while it
  // destroys scheduler_ (a write may fail on another thread meanwhile).
  absl::Mutex stale_timer_mu_;
  // The layout whose ring the Merkle trees follow.
  uint64_t merkle_layout_version_ ABSL_GUARDED_BY(merkle_ring_mu_) = 0;
  std::unique_ptr<Gossiper> gossiper_;  // destroyed after its transport and the server
  std::unique_ptr<HandoffSender> handoff_;
  std::unique_ptr<MembershipChanger> changer_;
  // Layout promises and accepts (Replica.ReserveLayout, AcceptLayout); outlives the replica
  // service.
  std::unique_ptr<LayoutReservations> reservations_;
  std::unique_ptr<PeerTransport> outbox_transport_;  // the fault-point wrapper, if configured
  std::unique_ptr<ReplicationOutbox> outbox_;
  std::unique_ptr<UnownedRecordCleaner> cleaner_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<MerkleIndex> merkle_;
  std::unique_ptr<AntiEntropy> anti_entropy_;  // periodic only with anti_entropy_interval > 0
  std::unique_ptr<TombstoneReaper> reaper_;
  std::unique_ptr<EngineOperationJournal> operation_journal_;  // operations and start tokens
  std::unique_ptr<OperationRegistry> operations_;
  std::unique_ptr<RepairRunner> repairs_;
  CallGate gate_;
  std::unique_ptr<KvService> kv_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<ReplicaService> replica_service_;
  std::unique_ptr<grpc::Server> server_;
  // The metrics HTTP server (null without --metrics_listen); its interceptors share its request
  // counters, so calls still running may outlive it.
  std::unique_ptr<NodeMetrics> metrics_;
  std::string actor_;
  int port_ = 0;
  // On the monotonic clock: a step of the wall clock must not hold back or hurry the passes.
  SteadyNotification stop_expiry_;
  std::thread expiry_thread_;
  bool shut_down_ = false;
};

}  // namespace kv

#endif  // KV_NODE_NODE_SERVER_H_

#include "node/node_server.h"

#include <fcntl.h>
#include <grpc/support/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <system_error>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "node/clock.h"
#include "node/handoff_plan.h"
#include "node/history_check.h"
#include "node/log.h"
#include "node/metrics.h"
#include "node/tls.h"
#include "storage/rocksdb_engine.h"
#include "storage/small_file.h"
#include "storage/status_macros.h"

#ifndef KV_VERSION
#define KV_VERSION "unknown"
#endif

namespace kv {
namespace {

constexpr absl::Duration kMaintenanceInterval = absl::Minutes(1);
// How often the store's history generation advances (node/local_store.h): a data directory
// copied at least this long (plus the gossip delay) before the node's last run ended is told
// apart from the node's own. Each advance is one synced write of a few bytes.
constexpr absl::Duration kGenerationInterval = absl::Seconds(5);
// How long a start waits for the other nodes to say which generation they last saw from it, at
// most: each exchange gives up sooner, after the transport's gossip timeout (1 s, or half of
// --failure_timeout if less). Nodes that are down refuse the connection at once; only
// unresponsive ones cost the wait.
constexpr absl::Duration kPeerGenerationWait = absl::Seconds(2);

// The id of the machine's current boot, which a restart of the machine changes
// (LocalStore::Options::boot_id). If it cannot be read, a fresh random one: every start then
// counts as a machine restart, which costs at most a new actor epoch after a crash.
std::string MachineBootId(absl::BitGenRef rng) {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (file && std::getline(file, id) && !id.empty()) return id;
  return absl::StrCat("unknown-", absl::Hex(absl::Uniform<uint64_t>(rng), absl::kZeroPad16));
}

// A data directory problem: the errno's text, the directory, and what to do.
absl::Status DataDirError(int error_number, absl::string_view what, absl::string_view dir) {
  const std::string message =
      absl::StrCat(what, " data directory \"", dir, "\": ", strerror(error_number),
                   ". Fix its permissions or choose another directory with --data_dir.");
  if (error_number == EACCES || error_number == EPERM || error_number == EROFS) {
    return absl::PermissionDeniedError(message);
  }
  return absl::FailedPreconditionError(message);
}

// Creates the data directory (and its parents) and checks that this process may write in it,
// so that permission problems are reported before RocksDB sees them.
absl::Status PrepareDataDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return DataDirError(ec.value(), "cannot create", dir);
  if (!std::filesystem::is_directory(dir, ec)) return DataDirError(ENOTDIR, "cannot use", dir);
  if (access(dir.c_str(), W_OK | X_OK) != 0) return DataDirError(errno, "cannot write in", dir);
  return absl::OkStatus();
}

// The value in `dir`'s file `name` (a DirectoryRecord's), or "" if it has none.
absl::StatusOr<std::string> ReadDirectoryRecord(const std::string& dir, const char* name) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) return std::string();
  absl::StatusOr<std::string> contents = ReadSmallRegularFile(path, 1024);
  if (!contents.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read \"", path, "\": ", contents.status().message()));
  }
  return std::string(absl::StripAsciiWhitespace(*contents));
}

// Writes file `name` of `dir` whole or not at all: a temporary file, synced, renamed over, and
// the directory synced. An error says which step failed.
absl::Status WriteDirectoryRecord(const std::string& dir, const char* name,
                                  const std::string& value) {
  const std::filesystem::path final_path = std::filesystem::path(dir) / name;
  const std::string temp = final_path.string() + ".tmp";
  const std::string contents = value + "\n";
  auto failed = [&](absl::string_view step) {
    const int error = errno;
    unlink(temp.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("cannot ", step, " \"", final_path.string(), "\": ", strerror(error)));
  };
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return failed("create");
  errno = 0;
  const ssize_t n = write(fd, contents.data(), contents.size());
  // A short write sets no errno: it is a full disk.
  if (n >= 0 && static_cast<size_t>(n) < contents.size() && errno == 0) errno = ENOSPC;
  const bool written = n == static_cast<ssize_t>(contents.size()) && fsync(fd) == 0;
  if (!written) {
    absl::Status status = failed("write");
    close(fd);
    return status;
  }
  close(fd);
  if (rename(temp.c_str(), final_path.c_str()) != 0) return failed("rename into place");
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0 || fsync(dir_fd) != 0) {
    absl::Status status = absl::FailedPreconditionError(absl::StrCat(
        "cannot sync the directory of \"", final_path.string(), "\": ", strerror(errno)));
    if (dir_fd >= 0) close(dir_fd);
    return status;
  }
  close(dir_fd);
  return absl::OkStatus();
}

// Keeps the engine's code (FAILED_PRECONDITION for a held lock, PERMISSION_DENIED, ...) and
// adds which directory and what to do.
absl::Status EngineOpenError(const absl::Status& status, const std::string& dir) {
  std::string message =
      absl::StrCat("cannot open data directory \"", dir, "\": ", status.message());
  if (absl::StrContains(status.message(), "No space left on device")) {
    absl::StrAppend(&message,
                    ". The disk is full: free space there (or move the directory to a larger "
                    "disk) and start the node again; nothing stored is lost.");
  } else if (absl::IsFailedPrecondition(status) &&
             !absl::StrContains(status.message(), "another kvnode")) {
    absl::StrAppend(&message,
                    ". If another kvnode is running on this directory (it holds the "
                    "lock), stop it or choose another --data_dir.");
  }
  return absl::Status(status.code(), message);
}

// The endpoint a local kvctl should use: wildcard listen hosts become loopback.
std::string LocalEndpoint(absl::string_view listen, int port) {
  std::string host(listen.substr(0, listen.rfind(':')));
  if (host == "0.0.0.0" || host == "[::]" || host == "::") host = "127.0.0.1";
  return absl::StrCat(host, ":", port);
}

// gRPC's own log lines, in the node's structured format.
void LogFromGrpc(gpr_log_func_args* args) {
  LogLevel level = LogLevel::kError;
  if (args->severity == GPR_LOG_SEVERITY_DEBUG) level = LogLevel::kDebug;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = LogLevel::kInfo;
  Log(level, args->message,
      {{"component", "grpc"}, {"source", absl::StrCat(args->file, ":", args->line)}});
}

// The host of --listen must name an address of this machine (a name must resolve to one), and its
// port must not be taken. This is checked before the data directory is touched, so that a
// mistyped address or a port in use changes nothing; another process may still take the port
// before the server listens (StartGrpc reports that).
absl::Status CheckListenHost(const std::string& listen) {
  const std::string port = listen.substr(listen.rfind(':') + 1);
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot listen on ", listen, ": ", host,
                                                   " does not resolve (", gai_strerror(rc),
                                                   "); check --listen"));
  }
  bool local = false;
  bool in_use = false;
  bool denied = false;
  for (const addrinfo* a = found; a != nullptr && !local; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // As gRPC binds (SO_REUSEADDR, so connections in TIME_WAIT do not count; no SO_REUSEPORT).
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0) {
      local = true;  // port 0: any free one
    } else if (errno == EADDRINUSE) {
      local = in_use = true;
    } else if (errno == EACCES) {
      local = denied = true;  // a privileged port without the capability to bind it
    } else if (errno != EADDRNOTAVAIL) {
      local = true;  // anything else: the server reports it when it listens
    }
    close(fd);
  }
  freeaddrinfo(found);
  if (denied) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot listen on ", listen,
                     ": permission denied (a port below 1024 needs root or "
                     "CAP_NET_BIND_SERVICE); choose another --listen port"));
  }
  if (in_use) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen,
        ": the port is in use (another kvnode?). Stop what uses it or choose another --listen."));
  }
  if (!local) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot listen on ", listen, ": ", host,
                     " is not an address of this machine; use one of its addresses, 0.0.0.0 "
                     "(all of them) or 127.0.0.1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeServer>> NodeServer::Start(const NodeConfig& config,
                                                              std::function<void()> request_stop,
                                                              const absl::Notification* cancel) {
  gpr_set_log_function(LogFromGrpc);
  KV_RETURN_IF_ERROR(CheckListenHost(config.listen));
  std::unique_ptr<NodeServer> server(new NodeServer(config, std::move(request_stop)));
  server->start_cancel_ = cancel;
  // Checked before the data directory is touched; installed (under it) once no other node's
  // or cluster's records refuse the directory (a start that then fails leaves them there).
  std::optional<TlsFiles> tls_files;
  if (!config.tls_cert_file.empty()) {
    absl::StatusOr<TlsFiles> files = ReadTlsFiles(config, absl::Now());
    if (!files.ok()) return files.status();
    tls_files = *std::move(files);
  }
  if (!config.metrics_listen.empty()) {
    // Bound before the data directory is touched, so that a taken address changes nothing.
    absl::StatusOr<std::unique_ptr<NodeMetrics>> metrics =
        NodeMetrics::Start(config.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    server->metrics_ = *std::move(metrics);
  }
  KV_RETURN_IF_ERROR(server->OpenStorage());
  if (tls_files.has_value()) {
    absl::StatusOr<std::unique_ptr<NodeTls>> tls = NodeTls::Start(
        config, *std::move(tls_files), (std::filesystem::path(config.data_dir) / "tls").string());
    if (!tls.ok()) return tls.status();
    server->tls_ = *std::move(tls);
  } else {
    server->tls_ = std::make_unique<NodeTls>();
    // A copy of TLS files an earlier run with TLS installed (with its private key) goes.
    std::error_code ignored;
    std::filesystem::remove_all(std::filesystem::path(config.data_dir) / "tls", ignored);
  }
  KV_RETURN_IF_ERROR(server->OpenStore());
  KV_RETURN_IF_ERROR(server->StartReplication());
  KV_RETURN_IF_ERROR(server->StartGrpc());
  server->gossiper_->Start();  // once this node can answer the exchanges it starts
  server->expiry_thread_ = std::thread([s = server.get()] { s->MaintenanceLoop(); });
  server->LogStarted();
  return server;
}

absl::Status NodeServer::OwnedByAnotherNode(absl::string_view owner,
                                            absl::string_view recorded_in) const {
  // Another id would serve this node's replicas under a name the ring places elsewhere.
  return absl::FailedPreconditionError(
      absl::StrCat("data directory \"", config_.data_dir, "\" belongs to node ", owner,
                   " (the node id of its first start", recorded_in.empty() ? "" : ", recorded in ",
                   recorded_in, "), not to --node_id=", config_.node_id, ": start ", owner,
                   " with it, or give ", config_.node_id, " a data directory of its own"));
}

absl::Status NodeServer::OwnedByAnotherCluster(absl::string_view name,
                                               absl::string_view recorded_in) const {
  return absl::FailedPreconditionError(absl::StrCat(
      "data directory \"", config_.data_dir, "\" belongs to cluster \"", name,
      "\" (the --cluster_name of its first start", recorded_in.empty() ? "" : ", recorded in ",
      recorded_in, "), not to --cluster_name=", config_.cluster_name,
      ": a node keeps its cluster; start it with --cluster_name=", name,
      ", or give it a data directory of its own"));
}

std::vector<NodeServer::DirectoryRecord> NodeServer::DirectoryRecords() const {
  // Plain files, so that a start under another value is refused before RocksDB opens (opening
  // replays the write-ahead log and writes table, manifest and options files: a refused start
  // would change the directory). The meta column's keys (storage/FORMAT.md) say the same; a
  // file is written with its key (RecordDataDir), or once CheckDataDirRecord passed for a
  // directory an earlier version wrote, which has none.
  return {DirectoryRecord{"node_id", "NODE_ID", config_.node_id, &NodeServer::OwnedByAnotherNode},
          DirectoryRecord{"cluster_name", "CLUSTER_NAME", config_.cluster_name,
                          &NodeServer::OwnedByAnotherCluster}};
}

absl::Status NodeServer::CheckDataDirRecord(const DirectoryRecord& record) {
  absl::StatusOr<std::string> recorded = engine_->Get(Column::kMeta, record.meta_key);
  if (absl::IsNotFound(recorded.status())) {
    // A new directory, or one written before this was recorded: it becomes this node's once the
    // start knows its cluster layout (RecordDataDir), so that a first start that fails before
    // (no seed answered a mistyped --cluster_name) leaves nothing that refuses the next one.
    unrecorded_.push_back(record);
    return absl::OkStatus();
  }
  if (!recorded.ok()) return recorded.status();
  if (*recorded != record.expected) return (this->*record.refuse)(*recorded, "");
  return FileDataDirRecord(record);
}

absl::Status NodeServer::RecordDataDir() {
  for (const DirectoryRecord& record : unrecorded_) {
    KV_RETURN_IF_ERROR(PutSynced(*engine_, Column::kMeta, record.meta_key, record.expected));
    KV_RETURN_IF_ERROR(FileDataDirRecord(record));
  }
  unrecorded_.clear();
  return absl::OkStatus();
}

absl::Status NodeServer::FileDataDirRecord(const DirectoryRecord& record) {
  if (record.file_value == record.expected) return absl::OkStatus();
  // None yet (OpenStorage refused any other value in it): the meta column agreed, so write it.
  // The file only lets the next start refuse before the engine opens; without it, the meta
  // column still decides, so a failure is worth a warning, not a refused start.
  absl::Status written = WriteDirectoryRecord(config_.data_dir, record.file_name, record.expected);
  if (!written.ok()) {
    LogWarn(absl::StrCat("cannot record the ", record.meta_key,
                         " in the data directory; a start under another one will be refused "
                         "only once the database is open"),
            {{"error", std::string(written.message())}});
  }
  return absl::OkStatus();
}

absl::Status NodeServer::OpenStorage() {
  KV_RETURN_IF_ERROR(PrepareDataDir(config_.data_dir));
  // Before the engine opens, which writes to the directory (see DirectoryRecords).
  std::vector<DirectoryRecord> records = DirectoryRecords();
  std::vector<std::string> unfiled;  // meta keys of the records without a file
  for (DirectoryRecord& record : records) {
    KV_ASSIGN_OR_RETURN(record.file_value, ReadDirectoryRecord(config_.data_dir, record.file_name));
    if (record.file_value.empty()) {
      unfiled.push_back(record.meta_key);
    } else if (record.file_value != record.expected) {
      return (this->*record.refuse)(
          absl::CHexEscape(absl::string_view(record.file_value).substr(0, 64)),
          (std::filesystem::path(config_.data_dir) / record.file_name).string());
    }
  }
  if (!unfiled.empty()) {
    // A directory an earlier version wrote lacks some files: read the engine's records in one
    // open that writes nothing. Any error here (no database yet, an unreadable one) is left to
    // the real open and CheckDataDirRecord, which report it.
    absl::StatusOr<std::vector<std::optional<std::string>>> recorded =
        RocksDbEngine::ReadWithoutOpening(config_.data_dir, Column::kMeta, unfiled);
    size_t next = 0;
    for (const DirectoryRecord& record : records) {
      if (!recorded.ok() || !record.file_value.empty()) continue;
      const std::optional<std::string>& value = (*recorded)[next++];
      if (value.has_value() && *value != record.expected) {
        return (this->*record.refuse)(*value, "");
      }
    }
  }
  RocksDbOptions storage;
  storage.block_cache_bytes = static_cast<size_t>(config_.block_cache_mb) << 20;
  storage.log_warning = [](absl::string_view level, absl::string_view line) {
    LogWarn("storage engine warning",
            {{"rocksdb_level", std::string(level)}, {"detail", std::string(line)}});
  };
  absl::StatusOr<std::unique_ptr<RocksDbEngine>> engine =
      RocksDbEngine::Open(config_.data_dir, storage);
  if (!engine.ok()) return EngineOpenError(engine.status(), config_.data_dir);
  if (const uint64_t tables = (*engine)->WholeFilterTablesAtOpen(); tables > 0) {
    LogInfo("rewriting table files written by an earlier version (whole filters) in the background",
            {{"files", absl::StrCat(tables)}});
  }
  engine_ = *std::move(engine);
  // Before anything is written to the directory.
  for (const DirectoryRecord& record : records) KV_RETURN_IF_ERROR(CheckDataDirRecord(record));
  // Databases written before the Merkle index column existed get their index entries now.
  if (absl::Status backfilled = BackfillMerkleIndex(engine_.get()); !backfilled.ok()) {
    return absl::Status(backfilled.code(),
                        absl::StrCat("cannot build the Merkle index in \"", config_.data_dir,
                                     "\": ", backfilled.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> NodeServer::PeerGeneration() {
  KV_ASSIGN_OR_RETURN(const LocalStore::StoredHistory history,
                      LocalStore::ReadStoredHistory(engine_.get()));
  std::vector<std::string> self_addresses;
  const std::vector<std::string> addresses = PeerAddresses(&self_addresses);
  if (addresses.empty()) return 0;
  const PeerGenerations peers = AskPeerGenerations(transport_.get(), config_.node_id,
                                                   self_addresses, addresses, kPeerGenerationWait);
  if (history.has_epoch && peers.answered == 0) {
    LogWarn(
        "no other node answered which history generation it last saw from this node: a data "
        "directory restored from a backup or a snapshot would go unnoticed this start",
        {{"asked", absl::StrJoin(addresses, ",")},
         {"stored_generation", absl::StrCat(history.generation)}});
  }
  if (peers.highest > history.generation) {
    LogInfo(
        "another node saw a later history generation of this node than its data directory holds",
        {{"peer", peers.highest_from},
         {"peer_generation", absl::StrCat(peers.highest)},
         {"stored_generation", absl::StrCat(history.generation)}});
  }
  return peers.highest;
}

void NodeServer::ScheduleGenerationAdvance() {
  absl::MutexLock timers(&stale_timer_mu_);
  if (scheduler_ == nullptr) return;  // shutting down
  scheduler_->RunAfter(kGenerationInterval, [this] {
    // No advance after a history conflict: the next start must see the earlier run's generation
    // even if the conflict's record could not be stored.
    if (gossiper_->HistoryConflict().empty()) {
      // Past what the peers hold of an earlier run, too (a start with a new epoch while none
      // answered): the next start's check must not take that for a restore. Not beyond the
      // bound the check believes (node/history_check.h).
      const uint64_t seen = gossiper_->SelfGenerationSeen();
      absl::StatusOr<uint64_t> advanced =
          store_->AdvanceGeneration(seen < kMaxPeerGeneration ? seen + 1 : 0);
      if (advanced.ok()) {
        gossiper_->SetGeneration(*advanced);
      } else {
        LogWarn("could not store the next history generation; retrying",
                {{"error", advanced.status().ToString()}});
      }
    }
    ScheduleGenerationAdvance();
  });
}

absl::Status NodeServer::OpenStore() {
  executor_ = std::make_unique<ThreadPoolExecutor>(config_.executor_threads);
  MakeTransport();
  LocalStore::Options options;
  // Before the store opens, which records this run's generation.
  absl::StatusOr<uint64_t> peer_generation = PeerGeneration();
  if (!peer_generation.ok()) {
    return absl::Status(peer_generation.status().code(),
                        absl::StrCat("cannot load the node's state from \"", config_.data_dir,
                                     "\": ", peer_generation.status().message()));
  }
  options.peer_generation = *peer_generation;
  if (config_.fault_format_level != 0) options.format_level = config_.fault_format_level;
  options.limits = config_.limits;
  options.idempotency_ttl = config_.idempotency_ttl;
  options.sync_writes = config_.sync_writes;
  options.boot_id = MachineBootId(rng_);
  // By default no commit executor: a client's write is committed on the gRPC thread that submits
  // it when no other thread is committing (under load one such thread commits group after group and
  // answers the calls of each group as it goes; the other threads only queue their writes).
  // Measured against committing on the executor (kvbench, 1 node, put, 64 outstanding, 5
  // alternating pairs): about a third fewer context switches and 15% less node CPU per write, 0.37
  // -> 0.42 of the ceiling. A handler that commits returns only when the queue is empty, and gRPC
  // ends its call (OnDone) only after that, so once the server has shut down (StopServing waits for
  // every call) no gRPC thread is inside the store.
  // With --commit_on_executor the gRPC threads only queue writes and merges; the executor
  // commits them and runs their callbacks, and it runs what is queued before the store closes
  // (Stop shuts it down first).
  if (config_.commit_on_executor) options.commit_executor = executor_.get();
  absl::StatusOr<std::unique_ptr<LocalStore>> store =
      LocalStore::Open(engine_.get(), SystemClock::Get(), rng_, config_.node_id, options);
  if (!store.ok()) {
    return absl::Status(store.status().code(),
                        absl::StrCat("cannot load the node's state from \"", config_.data_dir,
                                     "\": ", store.status().message()));
  }
  store_ = *std::move(store);
  actor_ = store_->actor();
  if (!store_->new_epoch_reason().empty()) {
    LogWarn(
        "took a new actor epoch, so that new versions never reuse the dots of writes this "
        "disk may have lost",
        {{"actor", actor_}, {"reason", store_->new_epoch_reason()}});
  }
  return absl::OkStatus();
}

void NodeServer::MakeTransport() {
  GrpcPeerTransport::Options transport_options;
  transport_options.gossip_timeout = std::min(absl::Seconds(1), config_.failure_timeout / 2);
  if (config_.fault_format_level != 0) transport_options.format_level = config_.fault_format_level;
  transport_options.credentials = tls_->peer_credentials();
  transport_options.cluster_name = config_.cluster_name;
  // A forwarded write is answered by the coordinating replica at the latest once its W
  // shortfall is known: write_ack_timeout after its commit, plus up to a quarter of it until the
  // sweep that answers it. The forwarding call waits that long and 2 s more, so that the
  // forwarding node passes on the "stored" answer (the client then retries where the write is)
  // rather than a timeout (it would fail over and store a second copy). Without a limit, 60 s.
  if (config_.write_ack_timeout > absl::ZeroDuration()) {
    transport_options.forward_timeout =
        std::max(transport_options.forward_timeout,
                 config_.write_ack_timeout +
                     Coordinator::AckSweepPeriod(config_.write_ack_timeout) + absl::Seconds(2));
  } else {
    transport_options.forward_timeout = absl::Seconds(60);
  }
  transport_ =
      std::make_unique<GrpcPeerTransport>(config_.node_id, executor_.get(), transport_options);
}

absl::Status NodeServer::StartReplication() {
  scheduler_ = std::make_unique<TimerScheduler>(executor_.get());
  KV_ASSIGN_OR_RETURN(ClusterLayout layout, InitialLayout());
  KV_RETURN_IF_ERROR(RecordDataDir());
  absl::StatusOr<std::shared_ptr<const Placement>> initial = Placement::Create(layout);
  if (!initial.ok()) return initial.status();
  placement_ = std::make_unique<PlacementHolder>(*initial);
  std::vector<Member> peers;
  for (const Member* m : (*initial)->AllMembers()) {
    if (m->id != config_.node_id) peers.push_back(*m);
  }
  // The Merkle trees follow the current ring, rebuilt when a change completes (see OnLayout);
  // tombstone purging follows them.
  std::shared_ptr<const HashRing> ring = (*initial)->current_ptr();
  {
    absl::MutexLock lock(&merkle_ring_mu_);
    merkle_layout_version_ = layout.version;
  }
  StartGossip(layout);
  ScheduleGenerationAdvance();
  // From here on, what goes to peers and to clients suits the levels gossip reports.
  peer_transport_ = std::make_unique<LevelingPeerTransport>(transport_.get(), gossiper_.get());
  store_->SetFormatLevels(gossiper_.get());
  StartMerkleIndex(std::move(ring));
  KV_RETURN_IF_ERROR(StartOutbox(std::move(peers)));
  ClusterOptions cluster;
  cluster.self_id = config_.node_id;
  cluster.replication_factor = config_.replication_factor;
  cluster.default_w = config_.write_quorum;
  cluster.default_r = config_.read_quorum;
  cluster.ack_timeout = config_.write_ack_timeout;
  coordinator_ = std::make_unique<Coordinator>(
      cluster, placement_.get(), store_.get(), outbox_.get(), peer_transport_.get(),
      executor_.get(), SteadyClock::Get(), gossiper_.get());
  coordinator_->SetFormatLevels(gossiper_.get());
  coordinator_->SetAckTimer(scheduler_.get());
  KV_RETURN_IF_ERROR(StartRepairs(layout));
  KV_ASSIGN_OR_RETURN(reservations_, OpenLayoutAcceptor());
  StartMembershipWork();
  return absl::OkStatus();
}

void NodeServer::ScheduleStaleMerkleRebuild() {
  absl::MutexLock timers(&stale_timer_mu_);
  if (scheduler_ == nullptr) return;  // shutting down: the next start rebuilds the trees
  scheduler_->RunAfter(absl::Seconds(1), [this] {
    absl::StatusOr<bool> rebuilt;
    const absl::Time start = SteadyClock::Get()->Now();
    uint64_t version = 0;
    bool ready = false;
    {
      absl::MutexLock lock(&merkle_ring_mu_);  // one rebuild at a time with the ring changes
      rebuilt = merkle_->RebuildIfStale();
      version = merkle_layout_version_;
      ready = merkle_->ready();
    }
    // Ready (rebuilt here, or by an exchange that found the index stale first) after a ring
    // change whose scan failed: purging and catching up go on from here.
    if (ready) {
      if (reaper_ != nullptr) reaper_->ResumeOnRing(version);
      if (anti_entropy_ != nullptr) anti_entropy_->MaybeFinishCatchingUp();
    }
    if (rebuilt.ok() && *rebuilt) {
      LogInfo("Merkle trees rebuilt after a failed write or scan",
              {{"took", absl::FormatDuration(SteadyClock::Get()->Now() - start)}});
    } else if (absl::IsUnavailable(rebuilt.status())) {
      ScheduleStaleMerkleRebuild();  // a scan was running: after it
    } else if (!rebuilt.ok() && !absl::IsCancelled(rebuilt.status())) {
      LogError("rebuilding the Merkle trees after a failed write failed",
               {{"error", std::string(rebuilt.status().message())}});
    }
  });
}

void NodeServer::StartMerkleIndex(std::shared_ptr<const HashRing> ring) {
  // The index observes every record change from now on; its trees are built in the background.
  merkle_ = std::make_unique<MerkleIndex>(config_.node_id, std::move(ring),
                                          config_.replication_factor, engine_.get());
  merkle_->SetCommitCut([store = store_.get()](const std::function<void()>& at_cut) {
    store->RunAtCommitCut(at_cut);
  });
  // A failed write left the trees wrong: rebuilt from what was written, one rebuild at a time
  // with the ring changes, and a second later (writes failing on and on rebuild once a second).
  merkle_->SetStaleHandler([this] { ScheduleStaleMerkleRebuild(); });
  merkle_->SetScanRate(config_.merkle_scan_keys_per_second);
  store_->SetObserver(merkle_.get());
  executor_->Schedule([merkle = merkle_.get()] {
    const absl::Time start = SteadyClock::Get()->Now();
    absl::Status built = merkle->Build();
    if (built.ok()) {
      LogInfo("Merkle trees built",
              {{"took", absl::FormatDuration(SteadyClock::Get()->Now() - start)}});
    } else if (!absl::IsCancelled(built) && !absl::IsFailedPrecondition(built)) {
      // (Cancelled, or refused because a ring change began first: that change builds them.)
      LogError(
          "building the Merkle trees failed; anti-entropy stays off until a rebuild succeeds "
          "(retried every second after a read error) or the node restarts",
          {{"error", std::string(built.message())}});
    }
  });
}

absl::Status NodeServer::StartOutbox(std::vector<Member> peers) {
  ReplicationOutbox::Options outbox_options;
  outbox_options.clock = SystemClock::Get();
  outbox_options.layout_version = [this] { return placement_->Get()->layout().version; };
  PeerTransport* outbox_transport = peer_transport_.get();
  if (config_.fault_replication_delay > absl::ZeroDuration()) {
    LogWarn("fault point: every replication send is delayed",
            {{"fault_replication_delay", absl::FormatDuration(config_.fault_replication_delay)}});
    outbox_transport_ = std::make_unique<DelayingPeerTransport>(
        peer_transport_.get(), scheduler_.get(), config_.fault_replication_delay);
    outbox_transport = outbox_transport_.get();
  }
  outbox_ =
      std::make_unique<ReplicationOutbox>(peers, engine_.get(), outbox_transport, scheduler_.get(),
                                          executor_.get(), outbox_rng_, outbox_options);
  if (absl::Status recovered = outbox_->Recover(); !recovered.ok()) {
    return absl::Status(recovered.code(),
                        absl::StrCat("cannot load the replication outbox from \"", config_.data_dir,
                                     "\": ", recovered.message()));
  }
  return absl::OkStatus();
}

absl::Status NodeServer::StartRepairs(const ClusterLayout& layout) {
  // Forced exchanges (repair operations) work also when periodic ones are off (interval 0).
  AntiEntropy::Options ae;
  ae.interval = config_.anti_entropy_interval;
  ae.keys_per_second = config_.anti_entropy_keys_per_second;
  ae.segment_keys_max_bytes = static_cast<size_t>(config_.anti_entropy_key_list_bytes);
  anti_entropy_ = std::make_unique<AntiEntropy>(merkle_.get(), store_.get(), peer_transport_.get(),
                                                scheduler_.get(), executor_.get(),
                                                SystemClock::Get(), SteadyClock::Get(), ae);
  anti_entropy_->SetTransitionCheck([this] { return placement_->Get()->layout().in_transition(); });
  anti_entropy_->SetOwnershipCheck([this](absl::string_view key) {
    return placement_->Get()
        ->CheckMayHold(config_.node_id, key, static_cast<size_t>(config_.replication_factor))
        .ok();
  });
  if (config_.anti_entropy_interval > absl::ZeroDuration()) anti_entropy_->Start();
  anti_entropy_->MaybeFinishCatchingUp();  // a node alone in its ring has nobody to wait for
  // Operation ids carry the start time (milliseconds, hexadecimal), so that a run does not hand
  // out an id an earlier run used, also one that expired since.
  operations_ = std::make_unique<OperationRegistry>(
      config_.node_id, absl::StrFormat("%x", absl::ToUnixMillis(absl::Now())), SystemClock::Get(),
      OperationRegistry::Options());
  if (config_.fault_forget_operations) {
    LogWarn("fault point: operations are kept in memory only; stored ones are not loaded");
  } else {
    operation_journal_ = std::make_unique<EngineOperationJournal>(engine_.get());
    if (absl::Status loaded = operations_->Load(operation_journal_.get()); !loaded.ok()) {
      return absl::Status(loaded.code(), absl::StrCat("cannot load the operations stored in \"",
                                                      config_.data_dir, "\": ", loaded.message()));
    }
  }
  repairs_ = std::make_unique<RepairRunner>(merkle_.get(), anti_entropy_.get(), operations_.get(),
                                            scheduler_.get(), RepairRunner::Options());
  TombstoneReaper::Options reaping;
  reaping.min_age = config_.tombstone_min_age;
  reaping.confirm_delay = config_.tombstone_confirm_delay;
  reaping.sweep_interval = config_.tombstone_sweep_interval;
  reaper_ = std::make_unique<TombstoneReaper>(
      merkle_.get(), store_.get(), engine_.get(), peer_transport_.get(), scheduler_.get(),
      executor_.get(), SystemClock::Get(), SteadyClock::Get(), reaping);
  // Purging checks the replicas of one ring; during a transition a key has owners in two, so a
  // node started in the middle of one purges only once the change is complete and the Merkle
  // index follows the new ring (FollowRingWithMerkleTrees).
  // Nor while a member may still hold a stray copy of a key it no longer owns: purging on a ring
  // waits until every owner has gossiped that its clean-up pass on that ring kept nothing.
  reaper_->SetCleanupCheck([gossiper = gossiper_.get()](uint64_t version) {
    const ClusterLayout current = gossiper->Layout();
    return current.version == version && StraysCleared(current, gossiper->Members());
  });
  reaper_->OnLayout(layout.version, layout.in_transition());
  if (!reaper_->ResumeOnRing(layout.version)) {
    LogInfo("tombstone purging is paused until the membership change under way completes",
            {{"layout_version", absl::StrCat(layout.version)}, {"change", layout.change}});
  }
  reaper_->Start();
  return absl::OkStatus();
}

void NodeServer::StartMembershipWork() {
  HandoffSender::Options handoff;
  handoff.replication_factor = static_cast<size_t>(config_.replication_factor);
  handoff.bytes_per_second = static_cast<uint64_t>(config_.handoff_mb_per_second) * 1000000;
  handoff_ = std::make_unique<HandoffSender>(
      config_.node_id, engine_.get(), peer_transport_.get(), scheduler_.get(), executor_.get(),
      SteadyClock::Get(), handoff_rng_, handoff,
      [gossiper = gossiper_.get()](const HandoffProgress& progress) {
        gossiper->SetHandoffProgress(progress);
      },
      [gossiper = gossiper_.get()](const ClusterLayout& transition) {
        return AllSourcesStreamed(transition, gossiper->Members());
      });
  UnownedRecordCleaner::Options cleanup;
  cleanup.replication_factor = static_cast<size_t>(config_.replication_factor);
  cleanup.keys_per_second = static_cast<uint64_t>(config_.cleanup_keys_per_second);
  cleanup.confirm_delay = config_.cleanup_confirm_delay;
  cleaner_ = std::make_unique<UnownedRecordCleaner>(
      config_.node_id, placement_.get(), store_.get(), engine_.get(), scheduler_.get(),
      executor_.get(), SteadyClock::Get(), cleanup,
      [outbox = outbox_.get()](absl::string_view key) { return outbox->MayHaveEntriesFor(key); });
  cleaner_->SetCleanListener(
      [gossiper = gossiper_.get()](uint64_t version) { gossiper->SetCleanLayoutVersion(version); });
  MembershipChanger::Options changes;
  changes.replication_factor = static_cast<size_t>(config_.replication_factor);
  changer_ = std::make_unique<MembershipChanger>(gossiper_.get(), operations_.get(),
                                                 scheduler_.get(), SteadyClock::Get(), changes);
  changer_->SetReservations(config_.node_id, reservations_.get(), peer_transport_.get());
  // An earlier run's operations go on under their ids: membership changes from where the layout
  // is, repairs from their first peer.
  changer_->Resume(operations_->TakeInterrupted({"join", "leave", "remove"}));
  repairs_->Resume(operations_->TakeInterrupted({"repair"}));
  operations_->FailInterrupted(absl::AbortedError(
      "kvnode stopped while this operation ran, and this version does not resume operations of "
      "its kind: start it again"));
  changer_->StartWatching();
  // From here on layout changes reach the placement; a restart during a transition resumes it.
  // Gossip calls it on its own thread or a gRPC thread; OnLayout writes to storage (synced), so
  // it runs on the executor. An older layout arriving late is ignored (PlacementHolder::Set).
  // Tombstone purging pauses here, before the placement changes, so that no purge is decided on
  // a ring the node has left behind.
  // A restore that the start's check missed, shown later by a peer's gossip: no more writes under
  // this epoch, and a new one at the next start (LocalStore::MarkHistoryConflict). Gossip calls it
  // on its own thread or a gRPC thread; the record is written (synced) on the executor.
  gossiper_->SetHistoryListener([this](const std::string& conflict) {
    store_->MarkHistoryConflict(conflict);
    LogError("refusing new writes until this node restarts (it then takes a new actor epoch)",
             {{"history_conflict", conflict}});
    executor_->Schedule([this] {
      if (absl::Status marked = store_->StoreHistoryConflict(); !marked.ok()) {
        LogError("could not record the history conflict; the next start may keep its epoch",
                 {{"error", marked.ToString()}});
      }
    });
  });
  gossiper_->SetLayoutListener([this](const ClusterLayout& l) {
    reaper_->OnLayout(l.version, l.in_transition());
    executor_->Schedule([this, l] { OnLayout(l); });
  });
  handoff_->OnPlacement(placement_->Get());
  // Finishes a clean-up a restart interrupted (and removes stray copies that arrived meanwhile).
  // A cluster whose membership never changed (layout version 1) has nothing to clean up: no scan.
  if (placement_->Get()->layout().version > 1) cleaner_->OnPlacement(placement_->Get());
}

absl::Status NodeServer::StartGrpc() {
  kv_service_ =
      std::make_unique<KvService>(coordinator_.get(), store_.get(), executor_.get(), &gate_);
  kv_service_->SetClusterName(config_.cluster_name);
  kv_service_->SetTrustFirstAttempts(config_.trust_first_attempts);
  kv_service_->SetPeers(
      CertificateAuthorizer(config_.tls_peer_names, "forwarded writes", "--tls_peer_names"));
  admin_service_ = std::make_unique<AdminService>(
      AdminService::NodeInfo{config_.node_id, store_->actor(), config_.listen, KV_VERSION},
      engine_.get(), coordinator_.get(), outbox_.get(), merkle_.get(), anti_entropy_.get(),
      reaper_.get(), operations_.get(), repairs_.get(), executor_.get(), &gate_, SteadyClock::Get(),
      SystemClock::Get(), gossiper_.get());
  admin_service_->SetMembershipChanger(changer_.get());
  if (operation_journal_ != nullptr) {  // null: --fault_forget_operations
    if (absl::Status loaded = admin_service_->LoadStartTokens(operation_journal_.get());
        !loaded.ok()) {
      return absl::Status(loaded.code(),
                          absl::StrCat("cannot load the idempotency tokens stored in \"",
                                       config_.data_dir, "\": ", loaded.message()));
    }
  }
  admin_service_->SetTls(tls_.get());
  admin_service_->SetAdministrators(CertificateAuthorizer(
      config_.tls_admin_names, "membership changes, anti-entropy runs and repairs",
      "--tls_admin_names"));
  replica_service_ = std::make_unique<ReplicaService>(
      store_.get(), executor_.get(), &gate_, merkle_.get(), gossiper_.get(),
      CertificateAuthorizer(config_.tls_peer_names, "calls of the internal Replica service",
                            "--tls_peer_names"));
  replica_service_->SetPlacement(placement_.get(), config_.node_id,
                                 static_cast<size_t>(config_.replication_factor));
  replica_service_->SetLayoutReservations(reservations_.get());
  replica_service_->SetClusterName(config_.cluster_name);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, tls_->server_credentials(), &port_);
  if (metrics_ != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counting;
    counting.push_back(
        metrics_->InterceptorFactory({v1::KV::service_full_name(), v1::Admin::service_full_name(),
                                      internal::v1::Replica::service_full_name()}));
    builder.experimental().SetInterceptorCreators(std::move(counting));
  }
  // gRPC sets SO_REUSEPORT by default, which would let a second node silently share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Clients and peers ping a silent node while their calls wait (ClientOptions::keepalive_time
  // and GrpcPeerTransport::Options::keepalive_time, at least a second apart): allowed, where
  // gRPC's default (five minutes) would close their connections.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits.max_message_bytes()));
  builder.RegisterService(kv_service_.get());
  builder.RegisterService(admin_service_.get());
  builder.RegisterService(replica_service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    executor_->Shutdown();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", config_.listen,
        ": the address is in use or not local. Stop what uses it or choose another --listen."));
  }
  if (metrics_ != nullptr) {
    metrics_->SetStatusSource([admin = admin_service_.get()](v1::ClusterStatusResponse* status,
                                                             v1::NodeStatusResponse* node) {
      admin->FillClusterStatus(status);
      admin->FillNodeStatus(node);
    });
  }
  return absl::OkStatus();
}

void NodeServer::LogStarted() const {
  const std::string endpoint = LocalEndpoint(config_.listen, port_);
  LogInfo("kvnode serving",
          {{"node_id", config_.node_id},
           {"actor", store_->actor()},
           {"generation", absl::StrCat(store_->generation())},
           {"listen", config_.listen},
           {"data_dir", config_.data_dir},
           {"sync_writes", config_.sync_writes ? "true" : "false"},
           {"executor_threads", absl::StrCat(config_.executor_threads)},
           {"commit_on_executor", config_.commit_on_executor ? "true" : "false"},
           {"tls", !tls_->enabled()          ? "off"
                   : config_.tls_client_auth ? "mutual"
                                             : "server"},
           {"tls_peer_names",
            config_.tls_peer_names.empty() ? "any" : absl::StrJoin(config_.tls_peer_names, ",")},
           {"tls_admin_names",
            config_.tls_admin_names.empty() ? "any" : absl::StrJoin(config_.tls_admin_names, ",")},
           {"metrics",
            metrics_ == nullptr
                ? std::string("off")
                : absl::StrCat("http://", LocalEndpoint(config_.metrics_listen, metrics_->port()),
                               "/metrics")},
           {"members", absl::StrCat(coordinator_->ring().size())},
           {"replication_factor", absl::StrCat(std::min<size_t>(config_.replication_factor,
                                                                coordinator_->ring().size()))},
           {"version", KV_VERSION},
           {"pid", absl::StrCat(getpid())}});
  LogInfo("try it with kvctl",
          {{"example", absl::StrCat("kvctl --endpoints=", endpoint, " put hello world")},
           {"then", absl::StrCat("kvctl --endpoints=", endpoint, " get hello")}});
}

void NodeServer::MaintenanceLoop() {
  while (!stop_expiry_.WaitForNotificationWithTimeout(kMaintenanceInterval)) {
    absl::StatusOr<size_t> expired = store_->ExpireIdempotencyRecords();
    if (!expired.ok()) {
      LogWarn("expiring idempotency records failed; will retry",
              {{"error", std::string(expired.status().message())}});
    } else if (*expired > 0) {
      Log(LogLevel::kDebug, "expired idempotency records", {{"count", absl::StrCat(*expired)}});
    }
    // Channels to addresses nobody has called for an hour: nodes that went away, or were
    // replaced under new addresses. This thread is not one of gRPC's (see DropIdleChannels).
    const size_t dropped = transport_->DropIdleChannels() + gossip_transport_->DropIdleChannels();
    if (dropped > 0) {
      Log(LogLevel::kInfo, "closed idle channels to peers", {{"count", absl::StrCat(dropped)}});
    }
  }
}

void NodeServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) StopServing();
  // Scrapes from now on show request counts only: what the state is read from is going away.
  if (metrics_ != nullptr) metrics_->SetStatusSource({});
  if (expiry_thread_.joinable()) {
    stop_expiry_.Notify();
    expiry_thread_.join();
  }
  // Replication stops in dependency order: the outbox answers its waiters and ignores late
  // completions (unsent entries stay on disk for the next start); the timer stops; queued work
  // drains; then the transports cancel their calls in flight (whose callbacks then run inline).
  // A Merkle tree scan under way (a build, a rebuild for a new ring or after a failed write,
  // which anti-entropy's shutdown would wait for) ends at its next chunk, and later ones at once.
  if (merkle_ != nullptr) merkle_->StopScans();
  if (changer_ != nullptr) changer_->Shutdown();
  if (gossiper_ != nullptr) gossiper_->Shutdown();
  gossip_scheduler_.reset();
  if (gossip_executor_ != nullptr) gossip_executor_->Shutdown();
  gossip_transport_.reset();
  if (handoff_ != nullptr) handoff_->Shutdown();
  if (repairs_ != nullptr) repairs_->Shutdown();
  if (anti_entropy_ != nullptr) anti_entropy_->Shutdown();
  if (reaper_ != nullptr) reaper_->Shutdown();
  if (cleaner_ != nullptr) cleaner_->Shutdown();
  if (outbox_ != nullptr) outbox_->Shutdown();
  if (coordinator_ != nullptr) coordinator_->StopAckTimer();  // its sweeps use the scheduler
  {
    absl::MutexLock timers(&stale_timer_mu_);  // the Merkle stale handler uses it too
    scheduler_.reset();
  }
  if (executor_ != nullptr) executor_->Shutdown();
  outbox_transport_.reset();
  peer_transport_.reset();
  transport_.reset();
  server_.reset();
  replica_service_.reset();
  admin_service_.reset();
  changer_.reset();
  handoff_.reset();
  gossiper_.reset();  // after the transport and the services that called it
  kv_service_.reset();
  repairs_.reset();
  operations_.reset();
  operation_journal_.reset();
  anti_entropy_.reset();
  reaper_.reset();
  coordinator_.reset();
  cleaner_.reset();
  outbox_.reset();
  if (store_ != nullptr) {
    // Every mutation has ended (the server, the executor and every job that writes stopped).
    if (absl::Status status = store_->RecordCleanStop(); !status.ok()) {
      LogWarn(
          "could not record the clean stop: the next start takes a new actor epoch if the "
          "machine restarts before it",
          {{"error", status.ToString()}});
    }
  }
  store_.reset();
  merkle_.reset();  // observed the store until it closed
  if (engine_ != nullptr) {
    engine_.reset();  // closes RocksDB
    LogInfo("storage closed", {{"data_dir", config_.data_dir}});
  }
}

void NodeServer::StopServing() {
  // gRPC drops (CANCELLED) calls it has received but not yet handed to a service when the server
  // shuts down. Refusing new calls first, with a retryable code, lets such calls be answered and
  // sends clients elsewhere before the listener closes.
  LogInfo("draining: answering new requests with UNAVAILABLE",
          {{"drain", absl::FormatDuration(config_.shutdown_drain)}});
  gate_.Close();
  server_->GetHealthCheckService()->SetServingStatus(false);
  absl::SleepFor(config_.shutdown_drain);
  LogInfo("waiting for in-flight requests",
          {{"in_flight", absl::StrCat(gate_.in_flight())},
           {"grace", absl::FormatDuration(config_.shutdown_grace)}});
  int left = gate_.WaitUntilIdle(config_.shutdown_grace);
  if (left > 0) {
    LogWarn("shutdown grace expired; cancelling requests still running",
            {{"in_flight", absl::StrCat(left)}});
    // Writes waiting for W acknowledgements are answered by the outbox only when their entries
    // are attempted, which behind a backlog for hung peers can take long after gRPC has
    // cancelled the calls; the server cannot stop before they are answered. Shutting the outbox
    // down answers them UNAVAILABLE now; their entries stay on disk for the next start. Their
    // answers are given before the server cancels the calls: answering calls while the server
    // cancelled them tripped an assertion in gRPC's reference counting (about 1 run in 10).
    // Likewise a membership commit waiting for the members' answers (up to three times its
    // reserve timeout) ends now, UNAVAILABLE, and so does an Admin.RunAntiEntropy call waiting
    // for its exchange (which may take max_keys_per_exchange / anti_entropy_keys_per_second).
    // Repairs stop first, so that the exchange they wait for ending does not fail them: they
    // go on at the next start. A Merkle scan under way, which the exchange's stop would wait
    // for, ends at its next chunk.
    if (changer_ != nullptr) changer_->Shutdown();
    if (repairs_ != nullptr) repairs_->Shutdown();
    if (merkle_ != nullptr) merkle_->StopScans();
    if (anti_entropy_ != nullptr) anti_entropy_->Shutdown();
    if (outbox_ != nullptr) {
      outbox_->Shutdown();
      left = gate_.WaitUntilIdle(absl::Seconds(2));
      if (left > 0) {
        LogWarn("requests still running after the replication outbox stopped; cancelling them",
                {{"in_flight", absl::StrCat(left)}});
      }
    }
  }
  // Nothing admitted is still running: close every connection now rather than wait for idle
  // clients to hang up.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
}

NodeServer::~NodeServer() { Shutdown(); }

}  // namespace kv

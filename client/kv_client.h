// kv::Client: the C++ client library of the store (CMake target kv::client).
//
// Every call has a deadline (ClientOptions::call_deadline unless overridden) covering all its
// attempts. Calls that fail with a retryable code (client/retry_policy.h) are retried with capped
// exponential backoff and full jitter, within a retry budget shared by the client, moving to the
// next endpoint after UNAVAILABLE or DEADLINE_EXCEEDED. The client never cancels its attempts,
// and kvnode ends a call CANCELLED only when it never started it (gRPC answers so for calls that
// reach a server while it shuts down), so an attempt that ends CANCELLED is reported and retried
// as UNAVAILABLE (a proxy between client and nodes that resets streams whose handler ran would
// break that assumption; the Put/Delete token still keeps such a retry from applying twice).
// Each Put/Delete carries one idempotency token, generated once per logical call (or given by the
// caller) and reused on every retry, so a retry never creates a second version.
//
// A Put/Delete that fails with UNAVAILABLE and the trailing metadata "kv-write-stored" (the node
// stored the write, but fewer than W replicas confirmed it; it keeps replicating) is retried on
// the same endpoint rather than failed over: that node holds the token and answers the retry from
// it. If the call gives up after such an answer, its message says the write is stored there.
//
// Results are absl::Status / absl::StatusOr with gRPC's codes: INVALID_ARGUMENT for bad input
// (never retried), NOT_FOUND for a key with no live version, UNAVAILABLE when no endpoint could
// serve the call within its deadline (DEADLINE_EXCEEDED if the deadline ran out during the last
// attempt). A call that gave up after retryable failures keeps the last code and message and
// appends "[kv client: gave up after N attempts, last to ENDPOINT; REASON]"; any other error
// is the server's (or gRPC's) code and message unchanged.
//
// The first attempt of a call goes to the next endpoint in round-robin order (ClusterStatus: the
// first endpoint), skipping endpoints whose channel is known to be down (gRPC TRANSIENT_FAILURE)
// while another is not; failover moves on the same way. Each attempt gets the call's remaining
// time, capped by ClientOptions::attempt_timeout when that is set. The backoff before a retry is
// waited on a timer thread owned by the Client, never on a gRPC thread.
//
// Asynchronous calls take a callback run exactly once on a gRPC or timer thread, never on the
// calling thread (even for errors found before sending); it must not block and must not make
// synchronous calls. Synchronous calls are the asynchronous ones plus a wait. Thread-safe.
// The destructor waits until every pending call has run its callback (at most each call's
// deadline, since pending calls are not cancelled), so it must not run inside a callback.
#ifndef KV_CLIENT_KV_CLIENT_H_
#define KV_CLIENT_KV_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/kv_admin.h"
#include "client/retry_policy.h"

namespace grpc {
class Channel;
}

namespace kv {

// Replica count for a request: server default, an exact count (1..N), a majority, or all N.
struct Quorum {
  enum class Kind { kDefault, kCount, kQuorum, kAll };
  Kind kind = Kind::kDefault;
  uint32_t count = 0;
  static Quorum Default() { return {}; }
  static Quorum Count(uint32_t n) { return {Kind::kCount, n}; }
  static Quorum Majority() { return {Kind::kQuorum, 0}; }
  static Quorum All() { return {Kind::kAll, 0}; }
};

struct Version {
  std::string value;
  bool tombstone = false;  // only DescribeKey shows tombstones
  std::string dot;         // "actor:counter"
  int64_t timestamp_micros = 0;
};

struct GetResult {
  std::vector<Version> siblings;  // every live version; more than one means concurrent writes
  std::string context;            // pass to the next Put/Delete of this key
};

struct WriteResult {
  std::string write_id;
  std::string context;
  bool deduplicated = false;  // the server had already applied this token
};

struct ListResult {
  std::vector<std::string> keys;
  std::string next_page_token;
};

struct ReplicaView {
  std::string node_id;
  bool reachable = false;
  std::string error;
  bool has_record = false;
  std::vector<Version> versions;  // tombstones included
  std::string context;            // human-readable
};

struct DescribeKeyResult {
  std::vector<ReplicaView> replicas;
  bool converged = false;  // every replica answered and holds the same versions
};

// One replica's state for a write (DescribeWrite).
struct ReplicaWriteState {
  std::string node_id;
  // The replica holds the write's version, or a newer one that replaced it.
  bool applied = false;
  // False when the replica could not be asked (`error` says why); `applied` is then false.
  bool reachable = false;
  std::string error;
};

// Where a write (named by the write id of a Put or Delete) has spread.
struct DescribeWriteResult {
  enum class State {
    kUnknown,     // the server did not say (it predates DescribeWrite's states)
    kPending,     // some replica does not hold the write yet, or could not be asked
    kReplicated,  // all N replicas hold it
  };
  State state = State::kUnknown;
  std::string key;
  std::string dot;                          // "actor:counter" of the write's version
  std::vector<ReplicaWriteState> replicas;  // the key's N replicas, in preference order
};

// One member of the cluster as the answering node sees it (ClusterStatus).
struct MemberStatus {
  std::string node_id;
  std::string address;
  std::string zone;
  bool self = false;                     // the answering node itself
  bool reachable = false;                // the node's last replication attempt to it succeeded
  uint64_t outbox_depth = 0;             // writes waiting to be sent to it (hinted handoff)
  uint64_t outbox_dropped = 0;           // writes not queued for it because its queue was full
  uint64_t sent_records = 0;             // records it confirmed since the node started
  std::string last_error;                // of the last failed replication attempt; may be empty
  int64_t last_success_unix_micros = 0;  // 0 = never
  // Gossip failure detection as the answering node judges it: "UP", "DOWN" or "UNKNOWN" (not
  // heard from yet; also from nodes that predate gossip).
  std::string liveness;
  uint64_t heartbeat = 0;          // the member's gossiped heartbeat counter
  uint64_t incarnation = 0;        // changes at every start of the member
  int64_t last_heard_ms_ago = -1;  // since its heartbeat last advanced; -1 = never
};

// Membership, quorum defaults and replication health as one node sees them.
struct ClusterStatusResult {
  std::string node_id;              // the node that answered
  uint32_t replication_factor = 0;  // N
  uint32_t default_w = 0;
  uint32_t default_r = 0;
  std::vector<MemberStatus> members;
  // Nodes gossip knows that are not on the answering node's ring: waiting to be joined, joining
  // (in layout_next_members), or gone (left or removed; forgotten once silent for the nodes'
  // --gossip_forget_after). Only the id, address, zone and gossip fields are set.
  std::vector<MemberStatus> outside_layout;
  uint64_t writes_coordinated = 0;
  uint64_t writes_forwarded = 0;
  uint64_t read_repairs = 0;
  // Replication lag (local commit to every replica confirmed) of the recent writes this node
  // coordinated, in microseconds; all zero when `replication_lag_samples` is 0.
  int64_t replication_lag_p50_us = 0;
  int64_t replication_lag_p99_us = 0;
  int64_t replication_lag_max_us = 0;
  uint32_t replication_lag_samples = 0;
  // The cluster layout the node places keys with; during a join or leave, the owners after it
  // and what the change does (both empty otherwise).
  uint64_t layout_version = 0;
  std::vector<std::string> layout_next_members;
  std::string layout_change;
  // Empty, or why another node holds a different layout of the same version (a split).
  std::string layout_conflict;
  // Empty, or which members run with other values of the settings every member must share
  // (replication_factor, the size limits, idempotency_ttl) than the node that answered.
  std::string settings_conflict;
  // True while the answering node's replica may lack writes it acknowledged (it restarted after
  // a machine crash without sync_writes and has not yet been compared with every peer).
  bool catching_up = false;
  // Empty, or what shows that the answering node's data directory is older than its last run
  // (another node gossiped a later history generation of it) although it kept its actor epoch.
  std::string history_conflict;
};

struct CallOptions {
  // Bounds all attempts of the call. Zero = ClientOptions::call_deadline; negative is
  // INVALID_ARGUMENT.
  absl::Duration deadline = absl::ZeroDuration();
};

struct WriteOptions : CallOptions {
  std::string context;            // from a previous Get/Put/Delete; empty = none
  std::string idempotency_token;  // empty = the client makes one for this call
  Quorum w;
};

// Options of the calls that start an operation (Client::StartRepair; ChangeMembership with
// commit).
struct StartOptions : CallOptions {
  // Names the request: a retry with this token on the node that answered returns the first
  // answer (see Client::StartRepair). Empty = the client makes one for this call; at most 128
  // bytes.
  std::string idempotency_token;
};

struct ReadOptions : CallOptions {
  Quorum r;
};

// Resolves siblings into one value; used by GetResolved. Receives live values in dot order.
using SiblingMerger = std::function<std::string(const std::vector<std::string>& values)>;

// Transport security of the client's channels (kvnode --tls_*). Off by default: plaintext
// (Create refuses files or PEM contents given while `enabled` is false: INVALID_ARGUMENT).
//
// The PEM data comes either as contents (the *_pem fields), used as they are for the Client's
// lifetime, or as file paths (the *_file fields, not both kinds). Create reads and checks the
// files (an error is INVALID_ARGUMENT); then gRPC reads them again every `reload_interval`, on
// a thread of its own per Client, and connections made after a change (to a new node, or again
// after a node restarted or dropped the connection) use the new certificate and CA bundle,
// without a new Client. Connections already open keep the certificates they were made with.
// gRPC reads the key and the certificate as two files: change them in one step, by keeping the
// three files in a directory reached through a symbolic link and replacing the link (as a
// Kubernetes Secret volume does), and give the CA bundle both the old and the new CA before any
// node presents a certificate of the new one. Later reads are not checked the way Create checks:
// a file that is missing or unreadable then is skipped (gRPC keeps what it has and logs an error
// on every read), and one that holds the wrong certificates fails new handshakes (UNAVAILABLE)
// until it is fixed.
struct TlsOptions {
  bool enabled = false;
  // PEM certificate(s) of the CA that signed the nodes' certificates; with TLS, this or ca_file
  // is required. A node's certificate must name the host of its endpoint.
  std::string ca_pem;
  // This client's PEM certificate and unencrypted private key, for nodes that require one
  // (kvnode --tls_client_auth, the default with TLS); both or neither.
  std::string cert_pem;
  std::string key_pem;
  // The same as files: ca_file is required in this form; cert_file and key_file both or neither.
  // Naming files with `enabled` false is an error.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  // How often the files are read again (whole seconds, at least one).
  absl::Duration reload_interval = absl::Minutes(1);
};

// How calls to one endpoint share RPCs (client/kv_client_coalescer.h): Puts and Deletes under
// ClientOptions::put_coalescing, Gets under ClientOptions::get_coalescing, each kind counted
// apart. While fewer than `max_in_flight` calls of a kind to an endpoint are in flight, a call
// goes out at once as a call of its own, as it always did. Beyond that, calls wait until one of
// the calls of their kind in flight to that endpoint finishes and then leave together as one
// PutBatch or GetBatch call (or after `max_delay` if none finishes), each with its own result,
// status and retries exactly as alone. So up to `max_in_flight` concurrent calls of a kind per
// endpoint never wait, and under heavier load one RPC carries many (kvbench, 1 node, 64
// outstanding: about 1.35 times the Puts per second). Nodes older than PutBatch or GetBatch get
// single calls; nodes older than batched deletes get single Deletes (their Puts are still
// batched).
struct CoalescingOptions {
  int max_in_flight = 8;  // 0 = never coalesce: one RPC per call
  size_t max_batch_items = 128;
  size_t max_batch_bytes = 60 << 10;  // far below a node's message limit (at least 65 MiB)
  // The longest a call waits for a call in flight to finish before it leaves anyway. It also
  // leaves 25 ms before its own deadline, whatever this is (a call with under 50 ms left never
  // waits).
  absl::Duration max_delay = absl::Milliseconds(5);
};
// The name CoalescingOptions had when only writes were coalesced.
using PutCoalescingOptions = CoalescingOptions;

struct ClientOptions {
  std::vector<std::string> endpoints;  // "host:port"; at least one
  absl::Duration call_deadline = absl::Seconds(10);
  // Caps each attempt of a call (the call deadline still bounds them all), so that a hung
  // endpoint costs one attempt rather than the whole call. Zero = no cap.
  absl::Duration attempt_timeout = absl::ZeroDuration();
  // How long a channel may take to connect to its endpoint (TCP and TLS handshakes) before gRPC
  // gives up on that connection attempt: the calls waiting for it then fail with UNAVAILABLE and
  // move to the next endpoint, and the channel counts as down (skipped while another endpoint is
  // not) until it connects again. So a dead host that drops packets costs one call this long,
  // not every call sent to it its whole deadline (gRPC's own default is 20 s). It covers the TCP
  // and TLS handshakes, which on a loaded machine can take a good part of a second. Used by the
  // channels the Client makes; a channel_factory's channels are the factory's. Between 100 ms
  // (gRPC's floor) and an hour.
  absl::Duration connect_timeout = absl::Seconds(3);
  // While calls are in flight on a connection and nothing has been read from it for
  // `keepalive_time`, the channel pings the node, and closes the connection if the ping is not
  // answered within `keepalive_timeout`: the calls on it then fail UNAVAILABLE and are retried
  // on another endpoint (with their tokens: never applied twice), and the endpoint counts as
  // down until it connects again. So a node that hangs (a stopped process, a host that drops the
  // packets of an open connection) costs calls a few seconds, not their whole deadline, without
  // an attempt_timeout. Nodes accept pings every second or less often; keepalive_time is 0 (no
  // pings) or at least 1 s, keepalive_timeout at least 100 ms. Used by the channels the Client
  // makes; a channel_factory's channels are the factory's.
  absl::Duration keepalive_time = absl::Seconds(2);
  absl::Duration keepalive_timeout = absl::Seconds(3);
  RetryOptions retry;
  // Requests larger than this fail locally with INVALID_ARGUMENT, never reaching the network.
  size_t max_request_bytes = 64 << 20;
  SiblingMerger merger;  // optional; GetResolved requires it
  TlsOptions tls;
  CoalescingOptions put_coalescing;  // Puts and Deletes
  CoalescingOptions get_coalescing;  // Gets
  // Marks the first attempt of each Put and Delete whose idempotency token the client makes
  // (not one given in WriteOptions) as such (PutRequest.first_attempt): the node then records
  // the token without first looking it up, which nothing could find (on one node about 1.1 times
  // the Puts per second). Retries are never marked. Set it false when a channel_factory's
  // channels, or a proxy between the client and the nodes, may send one call twice (a gRPC retry
  // policy, a retrying proxy): a marked write sent twice could be applied twice.
  bool mark_first_attempts = true;
  // Test seam: makes the channel for an endpoint (e.g. with an interceptor that drops
  // responses). Null = a channel to the endpoint (TLS as `tls` says) with no receive-size limit
  // that reconnects to a restarted endpoint within about a second.
  std::function<std::shared_ptr<grpc::Channel>(const std::string& endpoint)> channel_factory;
};

// Makes a fresh random idempotency token: 128 random bits as 32 lowercase hex characters.
std::string NewIdempotencyToken();

class Client {
 public:
  // INVALID_ARGUMENT if no endpoint is given or an option is out of range (TLS files are read and
  // checked here). Does not connect: an unreachable endpoint shows up as UNAVAILABLE on the first
  // calls.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);
  ~Client();

  absl::StatusOr<WriteResult> Put(absl::string_view key, absl::string_view value,
                                  const WriteOptions& options = {});
  absl::StatusOr<GetResult> Get(absl::string_view key, const ReadOptions& options = {});
  absl::StatusOr<WriteResult> Delete(absl::string_view key, const WriteOptions& options = {});
  absl::StatusOr<ListResult> List(absl::string_view prefix, absl::string_view page_token = "",
                                  uint32_t limit = 0, const CallOptions& options = {});
  absl::StatusOr<DescribeKeyResult> DescribeKey(absl::string_view key,
                                                const CallOptions& options = {});

  // Where the write `write_id` (from WriteResult::write_id) has spread: each replica's state and
  // PENDING or REPLICATED overall. A write id the store cannot parse is INVALID_ARGUMENT; a
  // well-formed id of a write no replica holds is PENDING with no replica applied.
  absl::StatusOr<DescribeWriteResult> DescribeWrite(absl::string_view write_id,
                                                    const CallOptions& options = {});
  // Asks the first endpoint (in ClientOptions::endpoints order) whose channel is not known to be
  // down, retrying and failing over like any call. The answer is that node's view.
  absl::StatusOr<ClusterStatusResult> ClusterStatus(const CallOptions& options = {});
  // Asks endpoint `endpoint_index` only (INVALID_ARGUMENT if out of range): retries stay on it.
  absl::StatusOr<ClusterStatusResult> ClusterStatusOf(size_t endpoint_index,
                                                      const CallOptions& options = {});

  // Admin calls for long operations and anti-entropy (results in client/kv_admin.h). Each asks
  // the first endpoint whose channel is not known to be down, failing over like ClusterStatus.
  // The calls that start an operation (StartRepair; ChangeMembership with commit) carry an
  // idempotency token (StartOptions), which the node that took the call remembers with its
  // answer (in its data directory, also across restarts; see kv.proto); a retry that reaches
  // that node gets the first answer (deduplicated = true) instead of starting the job again. Such a
  // call is retried on the same node after a timeout (the answer may have been lost) and fails over
  // only on UNAVAILABLE (the node is down or going away): if that node had started the job before
  // going away, the other node does not know the token and starts a second repair (harmless:
  // exchanges repair idempotently) or refuses a second membership change (FAILED_PRECONDITION: one
  // is in progress). INVALID_ARGUMENT when the token was used for another request on that node.
  // StartRepair starts a forced anti-entropy exchange with every peer (or `peer_id`) on the
  // node that answers and returns its operation id at once.
  absl::StatusOr<RepairStarted> StartRepair(absl::string_view peer_id = "",
                                            const StartOptions& options = {});
  // NOT_FOUND for an unknown or expired id or one of another node (the message names it);
  // INVALID_ARGUMENT for a malformed id.
  // Plans adding (join) or removing (leave, or remove-down for a member down for good) a member;
  // with `commit`, also starts the change as an operation (MembershipPlan::operation_id) on the
  // node that answered. FAILED_PRECONDITION while another change runs or when the layout moved
  // past `expected_layout_version` (0: any), and for kRemoveDown while the node that answers
  // hears from the member.
  absl::StatusOr<MembershipPlan> ChangeMembership(MembershipAction action,
                                                  absl::string_view node_id, bool commit,
                                                  uint64_t expected_layout_version = 0,
                                                  const StartOptions& options = {});
  // The form from before MembershipAction: kJoin if `join`, else kLeave.
  absl::StatusOr<MembershipPlan> ChangeMembership(bool join, absl::string_view node_id, bool commit,
                                                  uint64_t expected_layout_version = 0,
                                                  const StartOptions& options = {}) {
    return ChangeMembership(join ? MembershipAction::kJoin : MembershipAction::kLeave, node_id,
                            commit, expected_layout_version, options);
  }
  // GetOperation asks the endpoint that answered this client's start of an operation of the
  // node the id names, or its last read of one (an operation is known only to that node), and
  // stays there. Otherwise it asks the endpoints in turn: a node that answers NOT_FOUND marked as
  // another node's operation is not asked again, and the first one that knows the operation is
  // remembered. NOT_FOUND once every endpoint has said the operation is another node's (the
  // message names that node and its address); while one has not answered, the call keeps trying
  // it, so an operation whose node is down ends UNAVAILABLE. NOT_FOUND from the operation's node
  // itself: it never ran the operation, or no longer keeps it.
  absl::StatusOr<OperationStatus> GetOperation(absl::string_view operation_id,
                                               const CallOptions& options = {});
  // Cancels a running repair (it ends FAILED, CANCELLED; see kv.proto CancelOperation) and
  // returns it as it is then; asked of endpoints as GetOperation is (a retry that reaches the
  // node again after a lost answer is answered the same: a repair cancelled already is returned
  // as it is). FAILED_PRECONDITION for a membership change or an operation that ended otherwise.
  absl::StatusOr<OperationStatus> CancelOperation(absl::string_view operation_id,
                                                  const CallOptions& options = {});
  absl::StatusOr<std::vector<OperationStatus>> ListOperations(const CallOptions& options = {});
  absl::StatusOr<AntiEntropyStatusResult> AntiEntropyStatus(bool include_ranges,
                                                            const CallOptions& options = {});

  // Get, then fold siblings with ClientOptions::merger (FAILED_PRECONDITION if none is set,
  // without sending anything). The returned GetResult holds exactly one sibling (the merged
  // value) and the context that lets a following Put replace all the siblings that were merged.
  // A single sibling is returned as is, without calling the merger; a merged sibling has an
  // empty dot and the newest timestamp of the siblings it replaces.
  absl::StatusOr<GetResult> GetResolved(absl::string_view key, const ReadOptions& options = {});

  void PutAsync(std::string key, std::string value, WriteOptions options,
                std::function<void(absl::StatusOr<WriteResult>)> done);
  void GetAsync(std::string key, ReadOptions options,
                std::function<void(absl::StatusOr<GetResult>)> done);
  void DeleteAsync(std::string key, WriteOptions options,
                   std::function<void(absl::StatusOr<WriteResult>)> done);
  void ListAsync(std::string prefix, std::string page_token, uint32_t limit, CallOptions options,
                 std::function<void(absl::StatusOr<ListResult>)> done);
  void DescribeKeyAsync(std::string key, CallOptions options,
                        std::function<void(absl::StatusOr<DescribeKeyResult>)> done);
  void DescribeWriteAsync(std::string write_id, CallOptions options,
                          std::function<void(absl::StatusOr<DescribeWriteResult>)> done);
  // An empty round trip (Admin.Ping) to endpoint `endpoint_index` (an index into
  // ClientOptions::endpoints; INVALID_ARGUMENT if out of range), tried once with the client's
  // call deadline: kvbench's transport ceiling.
  void PingAsync(size_t endpoint_index, std::function<void(absl::Status)> done);

  const ClientOptions& options() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kv

#endif  // KV_CLIENT_KV_CLIENT_H_

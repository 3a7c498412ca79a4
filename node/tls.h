// TLS for kvnode (--tls_cert_file, --tls_key_file, --tls_ca_file, --tls_client_auth,
// --tls_reload_interval).
//
// With the three files, the gRPC server speaks TLS only, with the node's certificate, and every
// channel to a peer (replication, forwarding, gossip, repair) is TLS too: it verifies the peer's
// certificate against the CA, which must name the host of the peer's address (a DNS name or IP
// subject alternative name), and presents this node's certificate as its client certificate.
// With tls_client_auth (the default) the server requires a client certificate signed by the CA
// from every caller (mutual TLS: peers and clients alike); without it, clients need only trust
// the CA. Without the files: plaintext. Which callers may make which calls beyond that
// (--tls_peer_names, --tls_admin_names): node/certificate_authorizer.h.
//
// ReadTlsFiles reads and checks the files before the node touches its data directory: each must
// be readable, the certificate and the CA must parse as PEM certificates, the key as a PEM
// private key that belongs to the certificate, usable as a TLS server and client certificate, and
// the CA file must verify it (chain, signature, validity period at `now`). Every failure names
// the flag and the file.
//
// Rotation without a restart (NodeTls): every tls_reload_interval the node reads the three files
// again. When they changed and pass the same checks, it installs them; new connections, to its
// server and to its peers, use them within about a second, while connections already open keep
// the certificate they were made with. Files that changed but fail a check are refused: the
// reason is logged and counted, and the node keeps the certificate it has, so a half-written or
// mismatched set never reaches a handshake. A new CA is rolled out as a bundle (old and new CA
// in the CA file of every member and client) before certificates it signed.
//
// gRPC reads the credentials it uses from the node's own copy of the checked files, under
// <data_dir>/tls (mode 0700, the key 0600): NodeTls switches the key and certificate of that copy
// atomically, so gRPC, which polls it every second, never sees a key of one set with the
// certificate of another (the CA file may lag or lead them by a poll). kvprobe health-checks with
// the same copy. The set it replaced is kept while gRPC may still read it, and deleted by the
// first reload that finds the files unchanged at least 5 s after the switch (a key rotated away
// after a compromise does not stay on the data volume until the next rotation). Files unchanged
// since they were installed are not checked again: a certificate that expires in use is for
// the expiry metric to show, not a refusal.
#ifndef KV_NODE_TLS_H_
#define KV_NODE_TLS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "node/config.h"
#include "storage/steady_timer.h"

namespace kv {

// The contents of the three files, checked.
struct TlsFiles {
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
  std::string subject;  // of the certificate, one line
  absl::Time not_after;

  bool SameContents(const TlsFiles& other) const {
    return cert_pem == other.cert_pem && key_pem == other.key_pem && ca_pem == other.ca_pem;
  }
};

// The files of `config`, checked as described above at time `now`. INVALID_ARGUMENT naming the
// flag and file when one cannot be read or does not hold what it should.
absl::StatusOr<TlsFiles> ReadTlsFiles(const NodeConfig& config, absl::Time now);

// The node's credentials, and the thread that reloads them. Thread-safe.
class NodeTls {
 public:
  // Plaintext: insecure server credentials, no peer credentials.
  NodeTls();
  // Installs `files` (from ReadTlsFiles) under `dir`, which it creates or empties, and builds
  // credentials that read them from there. With config.tls_reload_interval > 0, a thread reads
  // the configured files again at that interval (ReloadNow) until destruction.
  static absl::StatusOr<std::unique_ptr<NodeTls>> Start(const NodeConfig& config, TlsFiles files,
                                                        const std::string& dir);
  ~NodeTls();
  NodeTls(const NodeTls&) = delete;
  NodeTls& operator=(const NodeTls&) = delete;

  bool enabled() const { return peers_ != nullptr; }
  const std::shared_ptr<grpc::ServerCredentials>& server_credentials() const { return server_; }
  // Null without TLS.
  const std::shared_ptr<grpc::ChannelCredentials>& peer_credentials() const { return peers_; }

  // Reads the configured files; installs them if they changed and pass the checks. OK when they
  // are unchanged or were installed; otherwise the reason they were refused (also logged, once
  // per reason, and counted).
  absl::Status ReloadNow() ABSL_LOCKS_EXCLUDED(mu_, reload_mu_);

  struct Stats {
    std::string subject;     // of the certificate in use
    absl::Time not_after;    // of the certificate in use
    uint64_t installed = 0;  // changed sets installed since start
    uint64_t refused = 0;    // checks of changed files that failed
    std::string last_refusal;
  };
  Stats stats() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  NodeTls(NodeConfig config, std::string dir);
  absl::Status Install(const TlsFiles& files) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReloadLoop() ABSL_LOCKS_EXCLUDED(mu_, reload_mu_);

  const NodeConfig config_;
  const std::string dir_;
  std::shared_ptr<grpc::ServerCredentials> server_;
  std::shared_ptr<grpc::ChannelCredentials> peers_;

  absl::Mutex reload_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // held by ReloadNow throughout
  mutable absl::Mutex mu_;
  TlsFiles current_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_mtime_ ABSL_GUARDED_BY(mu_) = 0;
  // When set-(generation_ - 1) was replaced, while it is still on disk.
  std::optional<absl::Time> retired_at_ ABSL_GUARDED_BY(mu_);
  uint64_t installed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_refusal_ ABSL_GUARDED_BY(mu_);
  // The files last refused, when they could be read (not counted again while they stay).
  std::optional<TlsFiles> refused_set_ ABSL_GUARDED_BY(mu_);
  SteadyNotification stop_;  // a step of the wall clock must not hold back or hurry reloads
  std::thread reloader_;
};

}  // namespace kv

#endif  // KV_NODE_TLS_H_

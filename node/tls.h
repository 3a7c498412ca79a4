// TLS for kvnode (--tls_cert_file, --tls_key_file, --tls_ca_file, --tls_client_auth).
//
// With the three files, the gRPC server speaks TLS only, with the node's certificate, and every
// channel to a peer (replication, forwarding, gossip, repair) is TLS too: it verifies the peer's
// certificate against the CA, which must name the host of the peer's address (a DNS name or IP
// subject alternative name), and presents this node's certificate as its client certificate.
// With tls_client_auth (the default) the server requires a client certificate signed by the CA
// from every caller (mutual TLS: peers and clients alike); without it, clients need only trust
// the CA. Without the files: plaintext, as before.
//
// LoadNodeTls reads and checks the files before the node touches its data directory: each must
// be readable, the certificate and the CA must parse as PEM certificates, the key as a PEM
// private key that belongs to the certificate. Every failure names the flag and the file.
#ifndef KV_NODE_TLS_H_
#define KV_NODE_TLS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "node/config.h"

namespace kv {

struct NodeTls {
  std::shared_ptr<grpc::ServerCredentials> server;  // insecure without TLS
  std::shared_ptr<grpc::ChannelCredentials> peers;  // null without TLS
  bool enabled() const { return peers != nullptr; }
};

// INVALID_ARGUMENT naming the flag and file when one cannot be read or does not hold what it
// should, or when the key does not belong to the certificate.
absl::StatusOr<NodeTls> LoadNodeTls(const NodeConfig& config);

}  // namespace kv

#endif  // KV_NODE_TLS_H_

// PeerAuthorizer: who may call the internal Replica service (replication, anti-entropy, handoff,
// tombstone purges, gossip) of a node with mutual TLS (kvnode --tls_peer_names).
//
// Without patterns every caller is let in: with mutual TLS that is anyone whose certificate the
// CA signed, clients included. With patterns, a caller is a peer only if its certificate names a
// host that matches one of them: a DNS or IP subject alternative name (email and URI names do
// not count), or, for a certificate with neither, its common name. A pattern is a host name or
// address in which `*` stands for any run of characters other than '.' ("node*",
// "*.kvnode.prod.svc.cluster.local", "10.0.0.*"); DNS names compare case-insensitively. Members'
// certificates name the hosts they are reached by (node/tls.h), so the patterns are usually those
// hosts.
//
// Thread-safe (immutable).
#ifndef KV_NODE_PEER_AUTHORIZER_H_
#define KV_NODE_PEER_AUTHORIZER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace kv {

class PeerAuthorizer {
 public:
  // No patterns: everyone.
  PeerAuthorizer() = default;
  explicit PeerAuthorizer(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {}

  // INVALID_ARGUMENT unless `pattern` is a usable pattern (see above).
  static absl::Status ValidatePattern(absl::string_view pattern);
  // Whether `name` matches `pattern`.
  static bool Matches(absl::string_view pattern, absl::string_view name);

  // OK if the caller of `context` may call the internal service; PERMISSION_DENIED naming what
  // its certificate names otherwise.
  absl::Status Check(const grpc::ServerContextBase& context) const;

 private:
  std::vector<std::string> patterns_;
};

}  // namespace kv

#endif  // KV_NODE_PEER_AUTHORIZER_H_

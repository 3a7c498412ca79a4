// CertificateAuthorizer: which callers of a node with mutual TLS may make a class of calls, by
// the names in their certificates. The node has two: the internal Replica service (replication,
// anti-entropy, handoff, tombstone purges, gossip) takes the members named by --tls_peer_names;
// the Admin calls that change the cluster or start or stop work (ChangeMembership,
// RunAntiEntropy, StartRepair, CancelOperation) take the administrators named by
// --tls_admin_names.
//
// Without patterns every caller is let in: with mutual TLS that is anyone whose certificate the
// CA signed, clients included. With patterns, a caller is let in only if its certificate names a
// host that matches one of them: a DNS or IP subject alternative name (email and URI names do
// not count), or, for a certificate with no subject alternative name of any kind, its common
// name (one with only email or URI names names no host). A pattern is a name or
// address in which `*` stands for any run of characters other than '.' ("node*",
// "*.kvnode.prod.svc.cluster.local", "10.0.0.*"); names compare case-insensitively. Members'
// certificates name the hosts they are reached by (node/tls.h), so --tls_peer_names patterns are
// usually those hosts.
//
// Thread-safe (immutable).
#ifndef KV_NODE_CERTIFICATE_AUTHORIZER_H_
#define KV_NODE_CERTIFICATE_AUTHORIZER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace kv {

class CertificateAuthorizer {
 public:
  // No patterns: everyone.
  CertificateAuthorizer() = default;
  // `calls` says what is guarded and `flag` where the patterns come from, for the refusal:
  // "<calls> take callers named by <flag> only: ...".
  CertificateAuthorizer(std::vector<std::string> patterns, std::string calls, std::string flag)
      : patterns_(std::move(patterns)), calls_(std::move(calls)), flag_(std::move(flag)) {}

  // INVALID_ARGUMENT unless `pattern` is a usable pattern (see above).
  static absl::Status ValidatePattern(absl::string_view pattern);
  // Whether `name` matches `pattern`.
  static bool Matches(absl::string_view pattern, absl::string_view name);

  // OK if the caller of `context` is let in; PERMISSION_DENIED naming what its certificate names
  // otherwise.
  absl::Status Check(const grpc::ServerContextBase& context) const;

 private:
  std::vector<std::string> patterns_;
  std::string calls_;
  std::string flag_;
};

}  // namespace kv

#endif  // KV_NODE_CERTIFICATE_AUTHORIZER_H_

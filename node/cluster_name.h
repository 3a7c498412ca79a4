// Cluster names: which cluster a node belongs to (kvnode --cluster_name, default "kv").
//
// Every call a node makes to another node (replication, reads, forwarded writes, gossip,
// anti-entropy, handoff, layout agreement) carries the caller's cluster name in the
// kClusterNameMetadata header, added by the interceptor of ClusterNameInterceptors to every
// channel the node opens to a peer. A node answers a call whose header names another cluster
// with UNAVAILABLE naming both, and the trailer kClusterMismatchMetadata (RefuseOtherCluster),
// and does nothing else with it: two clusters that meet (an address one of them knew now serves
// a node of the other; two clusters whose members share ids) neither merge each other's records
// nor take in each other's membership. UNAVAILABLE, because for the caller its member is not
// there: replication keeps the entries for it and retries with backoff (hinted handoff), a
// forwarded write goes to the next replica (and when every replica of its key answered so, the
// UNAVAILABLE names the likely misconfiguration: Coordinator::ForwardWrite), reads count it as
// not answering. A call without the
// header (a client, or a node of an earlier version during a rolling upgrade) is let in.
//
// The name is also stored in the data directory by the first start that knows its cluster layout
// (meta column "cluster_name", storage/FORMAT.md); a start under another name is refused before
// the database opens for writing (node_server.cc), so a node cannot move between clusters with
// its replicas.
#ifndef KV_NODE_CLUSTER_NAME_H_
#define KV_NODE_CLUSTER_NAME_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/client_interceptor.h"

namespace kv {

inline constexpr char kClusterNameMetadata[] = "kv-cluster";
// Trailer of a refusal for another cluster; its value is this node's cluster name.
inline constexpr char kClusterMismatchMetadata[] = "kv-cluster-mismatch";
inline constexpr char kDefaultClusterName[] = "kv";

// 1 to 64 characters from A-Z a-z 0-9 _ . - (the characters of node ids, IsWellFormedNodeId).
bool IsValidClusterName(absl::string_view name);

// Interceptor factories for a channel to a peer: they add `name` to every call's metadata.
std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
ClusterNameInterceptors(std::string name);

// OK unless the call's metadata names a cluster other than `own`: then UNAVAILABLE naming both,
// with the kClusterMismatchMetadata trailer added to `context`.
absl::Status RefuseOtherCluster(grpc::ServerContextBase* context, absl::string_view own);

}  // namespace kv

#endif  // KV_NODE_CLUSTER_NAME_H_

// Internal to kv_client: checking ClientOptions, and the channel a Client makes for an endpoint
// when no ClientOptions::channel_factory is given.
#ifndef KV_CLIENT_KV_CLIENT_OPTIONS_H_
#define KV_CLIENT_KV_CLIENT_OPTIONS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "client/kv_client.h"

namespace kv::client_internal {

// INVALID_ARGUMENT, naming the option, if `options` cannot make a working Client.
absl::Status ValidateOptions(const ClientOptions& options);

// A channel to `endpoint` (TLS if `tls.enabled`, else plaintext) with no receive-size limit that
// reconnects to a restarted endpoint within about a second.
std::shared_ptr<grpc::Channel> DefaultChannel(const std::string& endpoint, const TlsOptions& tls);

}  // namespace kv::client_internal

#endif  // KV_CLIENT_KV_CLIENT_OPTIONS_H_

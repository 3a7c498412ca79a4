// Internal to kv_client: checking ClientOptions, and the channel a Client makes for an endpoint
// when no ClientOptions::channel_factory is given.
#ifndef KV_CLIENT_KV_CLIENT_OPTIONS_H_
#define KV_CLIENT_KV_CLIENT_OPTIONS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"

namespace kv::client_internal {

// INVALID_ARGUMENT, naming the option, if `options` cannot make a working Client. With
// TlsOptions' file paths this reads the files and checks what they hold.
absl::Status ValidateOptions(const ClientOptions& options);

// The credentials of a Client's channels, made once for all of them: plaintext unless
// `tls.enabled`; with TlsOptions' file paths, TLS credentials that read the files again every
// `tls.reload_interval`. Null if gRPC cannot make them. Call after ValidateOptions.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsOptions& tls);

// A channel to `endpoint` with `credentials` and no receive-size limit that reconnects to a
// restarted endpoint within about a second, gives up on a connection attempt after
// ClientOptions::connect_timeout and pings a silent node as ClientOptions::keepalive_time says.
std::shared_ptr<grpc::Channel> DefaultChannel(
    const std::string& endpoint, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const ClientOptions& options);

}  // namespace kv::client_internal

#endif  // KV_CLIENT_KV_CLIENT_OPTIONS_H_

#include "client/kv_client_options.h"

#include "absl/strings/match.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kv::client_internal {
namespace {

// Reconnect quickly to an endpoint that comes back (e.g. a restarted node): gRPC's default
// reconnect backoff grows to two minutes, during which every call to the endpoint fails at once.
constexpr int kInitialReconnectBackoffMs = 100;
constexpr int kMaxReconnectBackoffMs = 1000;

}  // namespace

std::shared_ptr<grpc::Channel> DefaultChannel(const std::string& endpoint, const TlsOptions& tls) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // responses come from our own nodes, which bound them
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kInitialReconnectBackoffMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  if (!tls.enabled) {
    return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls.ca_pem;
  ssl.pem_cert_chain = tls.cert_pem;
  ssl.pem_private_key = tls.key_pem;
  return grpc::CreateCustomChannel(endpoint, grpc::SslCredentials(ssl), args);
}

absl::Status ValidateOptions(const ClientOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError(
        "ClientOptions::endpoints is empty; give at least one \"host:port\"");
  }
  for (const std::string& endpoint : options.endpoints) {
    if (endpoint.empty()) {
      return absl::InvalidArgumentError("ClientOptions::endpoints contains an empty endpoint");
    }
  }
  if (options.tls.enabled) {
    if (options.tls.ca_pem.empty()) {
      return absl::InvalidArgumentError(
          "TlsOptions::ca_pem is empty; TLS needs the CA that signed the nodes' certificates");
    }
    if (options.tls.cert_pem.empty() != options.tls.key_pem.empty()) {
      return absl::InvalidArgumentError(
          "TlsOptions needs both cert_pem and key_pem (a client certificate), or neither");
    }
    // gRPC would only log a bad PEM and then fail every call as if the nodes were unreachable.
    if (!absl::StrContains(options.tls.ca_pem, "-----BEGIN CERTIFICATE-----")) {
      return absl::InvalidArgumentError("TlsOptions::ca_pem holds no PEM certificate");
    }
    if (!options.tls.cert_pem.empty()) {
      if (!absl::StrContains(options.tls.cert_pem, "-----BEGIN CERTIFICATE-----")) {
        return absl::InvalidArgumentError("TlsOptions::cert_pem holds no PEM certificate");
      }
      if (!absl::StrContains(options.tls.key_pem, "PRIVATE KEY-----") ||
          absl::StrContains(options.tls.key_pem, "ENCRYPTED")) {
        return absl::InvalidArgumentError(
            "TlsOptions::key_pem holds no unencrypted PEM private key");
      }
    }
  }
  const RetryOptions& retry = options.retry;
  if (options.call_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions::call_deadline must be positive");
  }
  if (options.attempt_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions::attempt_timeout must be >= 0 (0 = no cap)");
  }
  if (options.max_request_bytes == 0) {
    return absl::InvalidArgumentError("ClientOptions::max_request_bytes must be positive");
  }
  if (retry.max_attempts < 1) {
    return absl::InvalidArgumentError("RetryOptions::max_attempts must be >= 1");
  }
  if (retry.initial_backoff < absl::ZeroDuration() || retry.max_backoff < retry.initial_backoff) {
    return absl::InvalidArgumentError(
        "RetryOptions backoffs must satisfy 0 <= initial_backoff <= max_backoff");
  }
  if (!(retry.multiplier >= 1.0)) {
    return absl::InvalidArgumentError("RetryOptions::multiplier must be >= 1");
  }
  if (!(retry.budget_max_tokens > 0) || !(retry.budget_success_credit >= 0)) {
    return absl::InvalidArgumentError(
        "RetryOptions needs budget_max_tokens > 0 and budget_success_credit >= 0");
  }
  return absl::OkStatus();
}

}  // namespace kv::client_internal

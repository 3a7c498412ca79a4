#include "client/kv_client_options.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/channel_arguments.h"
#include "storage/small_file.h"

namespace kv::client_internal {
namespace {

// Reconnect quickly to an endpoint that comes back (e.g. a restarted node): gRPC's default
// reconnect backoff grows to two minutes, during which every call to the endpoint fails at once.
constexpr int kInitialReconnectBackoffMs = 100;
constexpr int kMaxReconnectBackoffMs = 1000;
// PEM files are small; anything larger is not one.
constexpr size_t kMaxPemFileBytes = 1 << 20;

// The contents of the PEM file at `path`, which TlsOptions names `option`.
absl::StatusOr<std::string> ReadPemFile(absl::string_view option, const std::string& path) {
  absl::StatusOr<std::string> contents = ReadSmallRegularFile(path, kMaxPemFileBytes);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read TlsOptions::", option, " \"", path,
                                                   "\": ", contents.status().message()));
  }
  return contents;
}

// Names the three TLS options in error messages: "ca_pem", or "ca_file \"/path\"".
struct PemNames {
  std::string ca;
  std::string cert;
  std::string key;
};

// What gRPC would not check itself: it would only log a bad PEM and then fail every call as if
// the nodes were unreachable.
absl::Status CheckPem(const std::string& ca, const std::string& cert, const std::string& key,
                      const PemNames& names) {
  if (!absl::StrContains(ca, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat("TlsOptions::", names.ca, " holds no PEM certificate"));
  }
  if (cert.empty() && key.empty()) return absl::OkStatus();
  if (!absl::StrContains(cert, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat("TlsOptions::", names.cert, " holds no PEM certificate"));
  }
  if (!absl::StrContains(key, "PRIVATE KEY-----") || absl::StrContains(key, "ENCRYPTED")) {
    return absl::InvalidArgumentError(
        absl::StrCat("TlsOptions::", names.key, " holds no unencrypted PEM private key"));
  }
  return absl::OkStatus();
}

bool UsesFiles(const TlsOptions& tls) {
  return !tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty();
}

absl::Status ValidateTlsFiles(const TlsOptions& tls) {
  if (!tls.ca_pem.empty() || !tls.cert_pem.empty() || !tls.key_pem.empty()) {
    return absl::InvalidArgumentError(
        "TlsOptions takes the PEM contents (ca_pem, cert_pem, key_pem) or the paths of PEM "
        "files (ca_file, cert_file, key_file), not both");
  }
  if (tls.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "TlsOptions::ca_file is empty; TLS needs the CA that signed the nodes' certificates");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TlsOptions needs both cert_file and key_file (a client certificate), or neither");
  }
  if (tls.reload_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "TlsOptions::reload_interval must be at least 1s (the files are read again that often)");
  }
  absl::StatusOr<std::string> ca = ReadPemFile("ca_file", tls.ca_file);
  if (!ca.ok()) return ca.status();
  std::string cert;
  std::string key;
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> read = ReadPemFile("cert_file", tls.cert_file);
    if (!read.ok()) return read.status();
    cert = *std::move(read);
    read = ReadPemFile("key_file", tls.key_file);
    if (!read.ok()) return read.status();
    key = *std::move(read);
  }
  auto quoted = [](absl::string_view option, const std::string& path) {
    return absl::StrCat(option, " \"", path, "\"");
  };
  return CheckPem(*ca, cert, key,
                  {quoted("ca_file", tls.ca_file), quoted("cert_file", tls.cert_file),
                   quoted("key_file", tls.key_file)});
}

absl::Status ValidateTls(const TlsOptions& tls) {
  if (!tls.enabled) {
    // Plaintext; but files or PEM contents given for TLS say the caller meant TLS (keys, values
    // and tokens would otherwise go out in clear, to a server nobody checked).
    if (UsesFiles(tls)) {
      return absl::InvalidArgumentError(
          "TlsOptions names PEM files but TlsOptions::enabled is false (plaintext); set enabled");
    }
    if (!tls.ca_pem.empty() || !tls.cert_pem.empty() || !tls.key_pem.empty()) {
      return absl::InvalidArgumentError(
          "TlsOptions holds PEM contents but TlsOptions::enabled is false (plaintext); set "
          "enabled");
    }
    return absl::OkStatus();
  }
  if (UsesFiles(tls)) return ValidateTlsFiles(tls);
  if (tls.ca_pem.empty()) {
    return absl::InvalidArgumentError(
        "TlsOptions::ca_pem is empty; TLS needs the CA that signed the nodes' certificates");
  }
  if (tls.cert_pem.empty() != tls.key_pem.empty()) {
    return absl::InvalidArgumentError(
        "TlsOptions needs both cert_pem and key_pem (a client certificate), or neither");
  }
  return CheckPem(tls.ca_pem, tls.cert_pem, tls.key_pem, {"ca_pem", "cert_pem", "key_pem"});
}

}  // namespace

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsOptions& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  if (!UsesFiles(tls)) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls.ca_pem;
    ssl.pem_cert_chain = tls.cert_pem;
    ssl.pem_private_key = tls.key_pem;
    return grpc::SslCredentials(ssl);
  }
  const auto seconds = static_cast<unsigned int>(std::min<int64_t>(
      absl::ToInt64Seconds(tls.reload_interval), std::numeric_limits<unsigned int>::max()));
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (tls.cert_file.empty()) {
    provider =
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(tls.ca_file, seconds);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls.key_file, tls.cert_file, tls.ca_file, seconds);
  }
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(std::move(provider));
  options.watch_root_certs();
  if (!tls.cert_file.empty()) options.watch_identity_key_cert_pairs();
  // The chain. The endpoint's host is checked against the certificate by gRPC's default
  // certificate verifier (HostNameCertificateVerifier), which setting a verifier would replace.
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

std::shared_ptr<grpc::Channel> DefaultChannel(
    const std::string& endpoint, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const ClientOptions& options) {
  grpc::ChannelArguments args;
  // Responses come from our own nodes, which bound them (a record by max_record_bytes, a
  // GetBatch answer by about 1 MiB plus one record).
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kInitialReconnectBackoffMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  // gRPC gives a connection attempt until the later of its reconnect backoff and this "minimum
  // reconnect backoff" (20 s by default), then fails the calls waiting for it (they are not
  // wait-for-ready) and reports the channel TRANSIENT_FAILURE, which Client skips.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.connect_timeout)));
  if (options.keepalive_time > absl::ZeroDuration()) {
    // Pings only while calls are in flight, as often as keepalive_time for as long as the node
    // sends nothing (nodes accept one a second: kvnode's server arguments).
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  // No service config from name resolution: one could add a retry policy, which would send a
  // call again after a node received it, first-attempt mark included (PutRequest.first_attempt).
  // gRPC's transparent retries resend only calls no node received.
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  return grpc::CreateCustomChannel(endpoint, credentials, args);
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
  if (absl::Status tls = ValidateTls(options.tls); !tls.ok()) return tls;
  const RetryOptions& retry = options.retry;
  if (options.call_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions::call_deadline must be positive");
  }
  if (options.attempt_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions::attempt_timeout must be >= 0 (0 = no cap)");
  }
  if (options.connect_timeout < absl::Milliseconds(100) ||
      options.connect_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions::connect_timeout must be between 100ms and 1h, not ",
                     absl::FormatDuration(options.connect_timeout)));
  }
  if (options.keepalive_time != absl::ZeroDuration() &&
      (options.keepalive_time < absl::Seconds(1) || options.keepalive_time > absl::Hours(24))) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions::keepalive_time must be 0 (no pings) or between 1s and 24h, "
                     "not ",
                     absl::FormatDuration(options.keepalive_time)));
  }
  if (options.keepalive_timeout < absl::Milliseconds(100) ||
      options.keepalive_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions::keepalive_timeout must be between 100ms and 1h, not ",
                     absl::FormatDuration(options.keepalive_timeout)));
  }
  for (const auto& [name, coalescing] :
       {std::pair<const char*, const CoalescingOptions*>{"put_coalescing", &options.put_coalescing},
        {"get_coalescing", &options.get_coalescing}}) {
    if (coalescing->max_in_flight < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ClientOptions::", name, ".max_in_flight must be >= 0 (0 = never coalesce)"));
    }
    if (coalescing->max_batch_items < 2 || coalescing->max_batch_items > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat("ClientOptions::", name,
                       ".max_batch_items must be in [2, 1000] (a node takes at most 1000)"));
    }
    if (coalescing->max_batch_bytes == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ClientOptions::", name, ".max_batch_bytes must be positive"));
    }
    if (coalescing->max_delay < absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ClientOptions::", name, ".max_delay must be >= 0"));
    }
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
  if (!(retry.budget_max_tokens > 0) || !std::isfinite(retry.budget_max_tokens) ||
      !(retry.budget_success_credit >= 0) || !std::isfinite(retry.budget_success_credit)) {
    return absl::InvalidArgumentError(
        "RetryOptions needs a finite budget_max_tokens > 0 and budget_success_credit >= 0");
  }
  return absl::OkStatus();
}

}  // namespace kv::client_internal

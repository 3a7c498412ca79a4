// kvprobe: a gRPC health check (grpc.health.v1.Health/Check) for the container HEALTHCHECK.
// Debian has no grpc_health_probe, and kvctl talks to the KV/Admin services, not to the health
// service, so this small program asks the health service itself: exit 0 when the node answers
// SERVING, 1 otherwise (NOT_SERVING while it drains on SIGTERM, unreachable, timeout, a failed
// TLS handshake), 2 for usage errors and unreadable TLS files (a HEALTHCHECK counts every
// non-zero code as unhealthy; the image's command never has usage errors).
//
//   kvprobe [--addr=HOST:PORT] [--service=NAME] [--timeout=SECONDS]
//           [--tls-ca=FILE [--tls-cert=FILE --tls-key=FILE] [--tls-server-name=NAME]]
//           [--plaintext]
//
// The address defaults to the port of $KVNODE_LISTEN (the setting the image's entrypoint turns
// into --listen) on 127.0.0.1, else 127.0.0.1:7700.
//
// TLS: a node started with --tls_* serves TLS only, so the probe of its container must speak TLS
// too. The TLS files default to the node's own, from the variables the entrypoint turns into
// kvnode's flags: $KVNODE_TLS_CA_FILE (turns TLS on), $KVNODE_TLS_CERT_FILE and
// $KVNODE_TLS_KEY_FILE (the node's certificate, which kvnode requires to be usable as a client
// certificate: the probe presents it, as a peer would, so mutual TLS accepts it). When the node
// has installed a copy of them under $KVNODE_DATA_DIR/tls/active (node/tls.h), the probe uses
// that copy instead: it is the set the node serves with, also after the node refused changed
// files (a probe reading those would fail, and have a healthy node restarted into a start that
// refuses them too). The node's
// certificate is verified against the CA and against the name the probe connects to: the host
// of --addr (127.0.0.1 by default), unless --tls-server-name (default $KV_PROBE_TLS_SERVER_NAME)
// names the host the certificate is issued for, e.g. the address the node's peers use. Each flag
// overrides its own variable only (an explicit --tls-ca still presents the certificate of
// $KVNODE_TLS_CERT_FILE unless --tls-cert is given too). --plaintext ignores the variables;
// with a --tls-* flag it is a usage error.
//
// The CMake target kvprobe (deploy/CMakeLists.txt); it needs grpc++ and the small-file reader
// of storage/small_file.h, no generated code: the two health messages are encoded by hand (both
// hold one field).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/small_file.h"

namespace {

std::string DefaultAddress() {
  const char* listen = std::getenv("KVNODE_LISTEN");
  if (listen == nullptr || *listen == '\0') return "127.0.0.1:7700";
  const std::string value(listen);
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos) return "127.0.0.1:7700";
  return "127.0.0.1" + value.substr(colon);
}

// HealthCheckRequest { string service = 1; }
std::string EncodeRequest(const std::string& service) {
  std::string out;
  if (service.empty()) return out;
  out.push_back(0x0a);  // field 1, length-delimited
  size_t n = service.size();
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  return out + service;
}

// HealthCheckResponse { ServingStatus status = 1; } -> the status (0 UNKNOWN when absent), or -1
// for bytes that are not such a message.
int DecodeStatus(const std::string& bytes) {
  int status = 0;
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned tag = static_cast<unsigned char>(bytes[i++]);
    if ((tag & 7) != 0) return -1;  // only varint fields are expected
    uint64_t value = 0;
    int shift = 0;
    while (true) {
      if (i >= bytes.size() || shift > 63) return -1;
      const unsigned char b = static_cast<unsigned char>(bytes[i++]);
      value |= static_cast<uint64_t>(b & 0x7f) << shift;
      shift += 7;
      if ((b & 0x80) == 0) break;
    }
    if ((tag >> 3) == 1) status = static_cast<int>(value);
  }
  return status;
}

const char* StatusName(int status) {
  switch (status) {
    case 0:
      return "UNKNOWN";
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return "INVALID";
  }
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value == nullptr || *value == '\0' ? fallback : std::string(value);
}

// The contents of a PEM file named by `flag`, or false (with a message) if it cannot be used.
bool ReadPem(const char* flag, const std::string& path, std::string* out) {
  absl::StatusOr<std::string> contents = kv::ReadSmallRegularFile(path, 1 << 20);
  if (!contents.ok()) {
    std::fprintf(stderr, "kvprobe: %s=%s: cannot read: %s\n", flag, path.c_str(),
                 std::string(contents.status().message()).c_str());
    return false;
  }
  if (contents->find("-----BEGIN ") == std::string::npos) {
    std::fprintf(stderr, "kvprobe: %s=%s: is not PEM\n", flag, path.c_str());
    return false;
  }
  *out = *std::move(contents);
  return true;
}

int Usage() {
  std::fprintf(stderr,
               "usage: kvprobe [--addr=HOST:PORT] [--service=NAME] [--timeout=SECONDS]\n"
               "               [--tls-ca=FILE [--tls-cert=FILE --tls-key=FILE]"
               " [--tls-server-name=NAME]] [--plaintext]\n"
               "Asks grpc.health.v1.Health/Check; exit 0 when SERVING, 1 otherwise, 2 for "
               "usage errors.\n"
               "TLS files default to the node's installed copy in $KVNODE_DATA_DIR/tls/active, "
               "else to\n$KVNODE_TLS_CA_FILE, $KVNODE_TLS_CERT_FILE and $KVNODE_TLS_KEY_FILE; "
               "the server name to $KV_PROBE_TLS_SERVER_NAME.\n");
  return 2;
}

// Where the node keeps the TLS files it serves with (node/tls.h), if it runs with TLS and has
// installed them; empty otherwise.
std::string InstalledTlsDir() {
  const std::string data_dir = EnvOr("KVNODE_DATA_DIR", "");
  if (EnvOr("KVNODE_TLS_CA_FILE", "").empty() || data_dir.empty()) return "";
  const std::string dir = data_dir + "/tls/active";
  struct stat info;
  if (stat((dir + "/cert.pem").c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return "";
  return dir;
}

struct ProbeOptions {
  // The TLS files default to the node's installed copy, all three or none, else to the
  // variables.
  ProbeOptions() {
    const std::string installed = InstalledTlsDir();
    if (installed.empty()) {
      ca_file = EnvOr("KVNODE_TLS_CA_FILE", "");
      cert_file = EnvOr("KVNODE_TLS_CERT_FILE", "");
      key_file = EnvOr("KVNODE_TLS_KEY_FILE", "");
    } else {
      ca_file = installed + "/ca.pem";
      cert_file = installed + "/cert.pem";
      key_file = installed + "/key.pem";
    }
  }

  std::string address = DefaultAddress();
  std::string service;
  double timeout_seconds = 2.0;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string server_name = EnvOr("KV_PROBE_TLS_SERVER_NAME", "");
  bool plaintext = false;
};

// Parses the flags over the defaults; false (after a message) on a usage error.
bool ParseFlags(int argc, char** argv, ProbeOptions* options) {
  bool tls_flag = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value_of = [&arg](const char* prefix, std::string* out) {
      const std::string p(prefix);
      if (arg.compare(0, p.size(), p) != 0) return false;
      *out = arg.substr(p.size());
      return true;
    };
    std::string timeout;
    if (value_of("--addr=", &options->address) || value_of("--service=", &options->service)) {
      continue;
    }
    if (value_of("--tls-ca=", &options->ca_file) || value_of("--tls-cert=", &options->cert_file) ||
        value_of("--tls-key=", &options->key_file) ||
        value_of("--tls-server-name=", &options->server_name)) {
      tls_flag = true;
    } else if (value_of("--timeout=", &timeout)) {
      char* end = nullptr;
      options->timeout_seconds = std::strtod(timeout.c_str(), &end);
      if (timeout.empty() || *end != '\0' || !(options->timeout_seconds > 0) ||
          options->timeout_seconds > 3600) {
        std::fprintf(stderr, "kvprobe: --timeout=%s: want seconds, more than 0, at most 3600\n",
                     timeout.c_str());
        return false;
      }
    } else if (arg == "--plaintext") {
      options->plaintext = true;
    } else {
      Usage();
      return false;
    }
  }
  if (options->plaintext && tls_flag) {
    std::fprintf(stderr, "kvprobe: --plaintext and --tls-* flags contradict each other\n");
    return false;
  }
  return true;
}

// The channel credentials `options` ask for (and the TLS name override in `args`); null (after
// a message) when a TLS file cannot be used.
std::shared_ptr<grpc::ChannelCredentials> MakeCredentials(const ProbeOptions& options,
                                                          grpc::ChannelArguments* args) {
  if (options.plaintext) return grpc::InsecureChannelCredentials();
  if (options.ca_file.empty()) {
    if (!options.cert_file.empty() || !options.key_file.empty()) {
      std::fprintf(stderr,
                   "kvprobe: a client certificate needs --tls-ca (or $KVNODE_TLS_CA_FILE)\n");
      return nullptr;
    }
    return grpc::InsecureChannelCredentials();
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    std::fprintf(stderr, "kvprobe: --tls-cert and --tls-key go together (or neither)\n");
    return nullptr;
  }
  grpc::SslCredentialsOptions ssl;
  if (!ReadPem("--tls-ca", options.ca_file, &ssl.pem_root_certs)) return nullptr;
  if (!options.cert_file.empty() &&
      (!ReadPem("--tls-cert", options.cert_file, &ssl.pem_cert_chain) ||
       !ReadPem("--tls-key", options.key_file, &ssl.pem_private_key))) {
    return nullptr;
  }
  if (!options.server_name.empty()) args->SetSslTargetNameOverride(options.server_name);
  return grpc::SslCredentials(ssl);
}

}  // namespace

int main(int argc, char** argv) {
  ProbeOptions options;
  if (!ParseFlags(argc, argv, &options)) return 2;
  grpc::ChannelArguments channel_args;
  std::shared_ptr<grpc::ChannelCredentials> credentials = MakeCredentials(options, &channel_args);
  if (credentials == nullptr) return 2;
  const std::string& address = options.address;

  auto channel = grpc::CreateCustomChannel(address, credentials, channel_args);
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000)));

  const std::string request_bytes = EncodeRequest(options.service);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::CompletionQueue cq;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> call =
      stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) {
    std::fprintf(stderr, "kvprobe: %s: the call did not complete\n", address.c_str());
    return 1;
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) {
    std::fprintf(stderr, "kvprobe: %s: %d %s\n", address.c_str(),
                 static_cast<int>(status.error_code()), status.error_message().c_str());
    return 1;
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  const int serving = DecodeStatus(bytes);
  std::printf("%s %s\n", address.c_str(), StatusName(serving));
  return serving == 1 ? 0 : 1;
}

// kvprobe: a gRPC health check (grpc.health.v1.Health/Check) for the container HEALTHCHECK.
// Debian has no grpc_health_probe, and kvctl talks to the KV/Admin services, not to the health
// service, so this small program asks the health service itself: exit 0 when the node answers
// SERVING, 1 otherwise (NOT_SERVING while it drains on SIGTERM, unreachable, timeout).
//
//   kvprobe [--addr=HOST:PORT] [--service=NAME] [--timeout=SECONDS]
//
// The address defaults to the port of $KVNODE_LISTEN (the setting the image's entrypoint turns
// into --listen) on 127.0.0.1, else 127.0.0.1:7700. Built in deploy/Dockerfile with one g++
// command; it needs no generated code: the two health messages are encoded by hand (both hold
// one field).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

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
    unsigned long long value = 0;
    int shift = 0;
    while (true) {
      if (i >= bytes.size() || shift > 63) return -1;
      const unsigned char b = static_cast<unsigned char>(bytes[i++]);
      value |= static_cast<unsigned long long>(b & 0x7f) << shift;
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

}  // namespace

int main(int argc, char** argv) {
  std::string address = DefaultAddress();
  std::string service;
  double timeout_seconds = 2.0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--addr=", 0) == 0) {
      address = arg.substr(7);
    } else if (arg.rfind("--service=", 0) == 0) {
      service = arg.substr(10);
    } else if (arg.rfind("--timeout=", 0) == 0) {
      timeout_seconds = std::atof(arg.c_str() + 10);
    } else {
      std::fprintf(stderr,
                   "usage: kvprobe [--addr=HOST:PORT] [--service=NAME] [--timeout=SECONDS]\n"
                   "Asks grpc.health.v1.Health/Check; exit 0 when SERVING, 1 otherwise, 2 for "
                   "usage errors.\n");
      return 2;
    }
  }
  if (timeout_seconds <= 0) timeout_seconds = 2.0;

  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<long>(timeout_seconds * 1000)));

  const std::string request_bytes = EncodeRequest(service);
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

// Uses the installed kvclient package: creates a kv::Client for an endpoint where nothing
// listens and expects its Put to fail quickly with a non-OK status. Exit code 0 = as expected.
#include <iostream>

#include "absl/time/clock.h"
#include "client/kv_client.h"
#include "kv.pb.h"

int main() {
  kv::v1::PutRequest request;  // the generated protos are installed too
  request.set_key("k");

  kv::ClientOptions options;
  options.endpoints = {"127.0.0.1:1"};
  options.call_deadline = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<kv::Client>> client = kv::Client::Create(options);
  if (!client.ok()) {
    std::cerr << "Client::Create failed: " << client.status() << "\n";
    return 1;
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<kv::WriteResult> put = (*client)->Put(request.key(), "v");
  const absl::Duration elapsed = absl::Now() - start;
  if (put.ok()) {
    std::cerr << "Put to 127.0.0.1:1 unexpectedly succeeded\n";
    return 1;
  }
  if (elapsed > absl::Seconds(6)) {
    std::cerr << "Put took " << elapsed << ", beyond its 5s deadline\n";
    return 1;
  }
  std::cout << "Put failed as expected after " << elapsed << ": " << put.status() << "\n";
  return 0;
}

// LoopbackServer: a gRPC server on 127.0.0.1 with a port the kernel picks, serving the given
// services (fake nodes in tests) until it is destroyed. The services must outlive it.
#ifndef KV_TESTS_LOOPBACK_SERVER_H_
#define KV_TESTS_LOOPBACK_SERVER_H_

#include <initializer_list>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace kv::testing {

class LoopbackServer {
 public:
  explicit LoopbackServer(std::initializer_list<grpc::Service*> services) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    for (grpc::Service* service : services) builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~LoopbackServer() {
    if (server_ != nullptr) server_->Shutdown();
  }
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;

  bool ok() const { return server_ != nullptr; }
  std::string endpoint() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace kv::testing

#endif  // KV_TESTS_LOOPBACK_SERVER_H_

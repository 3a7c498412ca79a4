// GrpcPeerTransport's forwarded writes against an in-process gRPC server whose KV service answers
// what the test scripts: replies and verdicts come back as they are, a W shortfall keeps its
// "stored" mark, and a call the peer dropped unstarted (CANCELLED, as gRPC answers while a server
// shuts down) comes back as UNAVAILABLE, so that a coordinator moves on to the next replica.
#include "node/grpc_peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"

namespace kv {
namespace {

using ::testing::HasSubstr;

// Answers every Put with the scripted status (OK: a fixed reply). Thread-safe.
class ScriptedPut final : public v1::KV::CallbackService {
 public:
  void Answer(grpc::Status status, bool mark_stored = false) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
    mark_stored_ = mark_stored;
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest* request,
                                v1::PutResponse* response) override {
    absl::MutexLock lock(&mu_);
    last_token_ = request->idempotency_token();
    if (mark_stored_) context->AddTrailingMetadata(kWriteStoredMetadata, "1");
    if (status_.ok()) {
      response->set_write_id("dot/key");
      response->set_context("ctx");
      response->set_deduplicated(true);
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(status_);
    return reactor;
  }
  std::string last_token() const {
    absl::MutexLock lock(&mu_);
    return last_token_;
  }

 private:
  mutable absl::Mutex mu_;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool mark_stored_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_token_ ABSL_GUARDED_BY(mu_);
};

class GrpcPeerTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    peer_ = Member{"n2", absl::StrCat("127.0.0.1:", port), ""};
  }
  void TearDown() override {
    transport_.reset();
    server_->Shutdown();
  }

  absl::StatusOr<WriteReply> Forward() {
    absl::Notification done;
    std::optional<absl::StatusOr<WriteReply>> result;
    transport_->ForwardWrite(peer_, WriteCommand{"key", false, "value", "", "token-1"}, {},
                             [&](absl::StatusOr<WriteReply> reply) {
                               result = std::move(reply);
                               done.Notify();
                             });
    done.WaitForNotification();
    return *std::move(result);
  }

  InlineExecutor executor_;
  ScriptedPut service_;
  std::unique_ptr<grpc::Server> server_;
  Member peer_;
  std::unique_ptr<GrpcPeerTransport> transport_ =
      std::make_unique<GrpcPeerTransport>("n1", &executor_, GrpcPeerTransport::Options{});
};

TEST_F(GrpcPeerTransportTest, ForwardedWriteReturnsThePeersReply) {
  service_.Answer(grpc::Status::OK);
  absl::StatusOr<WriteReply> reply = Forward();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->write_id, "dot/key");
  EXPECT_EQ(reply->context, "ctx");
  EXPECT_TRUE(reply->deduplicated);
  EXPECT_EQ(service_.last_token(), "token-1");
}

TEST_F(GrpcPeerTransportTest, ForwardedVerdictsKeepTheirCodeAndMessage) {
  service_.Answer(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad context"));
  absl::StatusOr<WriteReply> reply = Forward();
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reply.status().message(), "bad context");
  EXPECT_FALSE(IsWriteStored(reply.status()));
}

TEST_F(GrpcPeerTransportTest, AShortfallMarkedStoredKeepsItsMark) {
  service_.Answer(grpc::Status(grpc::StatusCode::UNAVAILABLE, "W=2 not reached"),
                  /*mark_stored=*/true);
  absl::StatusOr<WriteReply> reply = Forward();
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsWriteStored(reply.status()));
}

TEST_F(GrpcPeerTransportTest, ACallThePeerDroppedUnstartedIsUnavailable) {
  service_.Answer(grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED"));
  absl::StatusOr<WriteReply> reply = Forward();
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(reply.status().message(),
              HasSubstr("the peer dropped the call before starting it (CANCELLED: CANCELLED)"));
  EXPECT_FALSE(IsWriteStored(reply.status()));
}

}  // namespace
}  // namespace kv

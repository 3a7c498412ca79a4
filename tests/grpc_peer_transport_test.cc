// GrpcPeerTransport's forwarded writes against an in-process gRPC server whose KV service answers
// what the test scripts: replies and verdicts come back as they are, a W shortfall keeps its
// "stored" mark, a call the peer dropped unstarted (CANCELLED, as gRPC answers while a server
// shuts down) comes back as UNAVAILABLE, so that a coordinator moves on to the next replica, and
// a call the transport cancelled itself (on destruction) stays CANCELLED. A MergeBatch refusal by
// a peer that does not replicate a key keeps its not-a-replica mark. A lease release reaches the
// peer. Channels no call has used for their idle lifetime are closed, and others are kept.
#include "node/grpc_peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
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
#include "node/clock.h"
#include "replica.grpc.pb.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

using ::testing::HasSubstr;

// Finishes only when the call is cancelled.
class HangingReactor : public grpc::ServerUnaryReactor {
 public:
  void OnCancel() override { Finish(grpc::Status::CANCELLED); }
  void OnDone() override { delete this; }
};

// Answers every Put with the scripted status (OK: a fixed reply), or never. Thread-safe.
class ScriptedPut final : public v1::KV::CallbackService {
 public:
  void Answer(grpc::Status status, bool mark_stored = false) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
    mark_stored_ = mark_stored;
  }
  void Hang() {
    absl::MutexLock lock(&mu_);
    hang_ = true;
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest* request,
                                v1::PutResponse* response) override {
    absl::MutexLock lock(&mu_);
    last_token_ = request->idempotency_token();
    if (hang_) {
      received_.Notify();
      return new HangingReactor();
    }
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
  // Notified when a Put arrives in Hang mode.
  absl::Notification& received() { return received_; }

 private:
  mutable absl::Mutex mu_;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool mark_stored_ ABSL_GUARDED_BY(mu_) = false;
  bool hang_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_token_ ABSL_GUARDED_BY(mu_);
  absl::Notification received_;
};

// Refuses every MergeBatch as a member that does not replicate the keys does: the first one as
// a node that does not say its layout version, the later ones under layout version 7.
class RefusingReplica final : public internal::v1::Replica::CallbackService {
 public:
  // Records the release and answers OK.
  grpc::ServerUnaryReactor* ReleaseLayout(
      grpc::CallbackServerContext* context, const internal::v1::ReleaseLayoutRequest* request,
      internal::v1::ReleaseLayoutResponse* /*response*/) override {
    release_ = *request;
    released_.Notify();
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  // Notified when a ReleaseLayout arrives; release() is its request then.
  absl::Notification& released() { return released_; }
  const internal::v1::ReleaseLayoutRequest& release() const { return release_; }

  grpc::ServerUnaryReactor* MergeBatch(grpc::CallbackServerContext* context,
                                       const internal::v1::MergeBatchRequest* /*request*/,
                                       internal::v1::MergeBatchResponse* /*response*/) override {
    context->AddTrailingMetadata(kNotAReplicaMetadata, "1");
    if (calls_.fetch_add(1) > 0) context->AddTrailingMetadata(kNotAReplicaVersionMetadata, "7");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "n2 is not a replica"));
    return reactor;
  }

 private:
  std::atomic<int> calls_{0};
  internal::v1::ReleaseLayoutRequest release_;  // written before released_ is notified
  absl::Notification released_;
};

class GrpcPeerTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    builder.RegisterService(&replica_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    peer_ = Member{"n2", absl::StrCat("127.0.0.1:", port), ""};
  }
  void TearDown() override {
    transport_.reset();
    if (server_ != nullptr) server_->Shutdown();
  }

  // A forwarded write's answer, delivered on the executor.
  struct Answer {
    absl::Notification done;
    std::optional<absl::StatusOr<WriteReply>> reply;
  };
  std::shared_ptr<Answer> StartForward() {
    auto answer = std::make_shared<Answer>();
    transport_->ForwardWrite(peer_, WriteCommand{"key", false, "value", "", "token-1"}, {},
                             [answer](absl::StatusOr<WriteReply> reply) {
                               answer->reply = std::move(reply);
                               answer->done.Notify();
                             });
    return answer;
  }
  absl::StatusOr<WriteReply> Forward() {
    std::shared_ptr<Answer> answer = StartForward();
    answer->done.WaitForNotification();
    return *std::move(answer->reply);
  }

  // Callbacks run here, off gRPC's threads (as in kvnode): the last reference to a channel must
  // never be dropped on one of the channel's own threads.
  ThreadPoolExecutor executor_{1};
  ScriptedPut service_;
  RefusingReplica replica_;
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

// A forwarded write waits no longer than its client does: the call ends at the deadline the
// client gave the forwarding node, long before the transport's own forward_timeout.
TEST_F(GrpcPeerTransportTest, AForwardedWriteEndsAtItsClientsDeadline) {
  GrpcPeerTransport::Options options;
  options.forward_timeout = absl::Seconds(120);
  transport_ = std::make_unique<GrpcPeerTransport>("n1", &executor_, options);
  service_.Hang();
  WriteCommand command{"key", false, "value", "", "token-1"};
  const absl::Time start = SteadyNow();
  command.deadline = start + absl::Seconds(3);
  auto answer = std::make_shared<Answer>();
  transport_->ForwardWrite(peer_, std::move(command), {},
                           [answer](absl::StatusOr<WriteReply> reply) {
                             answer->reply = std::move(reply);
                             answer->done.Notify();
                           });
  answer->done.WaitForNotification();
  EXPECT_LT(SteadyNow() - start, absl::Seconds(60));
  EXPECT_EQ(answer->reply->status().code(), absl::StatusCode::kDeadlineExceeded)
      << answer->reply->status();
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

TEST_F(GrpcPeerTransportTest, ARefusalByAMemberThatDoesNotReplicateKeepsItsMark) {
  auto merge = [&] {
    absl::Notification done;
    absl::Status merged;
    transport_->MergeRecords(peer_, {EncodedRecord{"key", "record"}}, [&](absl::Status status) {
      merged = std::move(status);
      done.Notify();
    });
    done.WaitForNotification();
    return merged;
  };
  absl::Status merged = merge();
  EXPECT_EQ(merged.code(), absl::StatusCode::kFailedPrecondition) << merged;
  EXPECT_TRUE(IsNotAReplica(merged)) << merged;
  EXPECT_EQ(NotAReplicaLayoutVersion(merged), std::nullopt);  // the member did not say
  // With the member's layout version, which a sender with a newer layout retries on.
  merged = merge();
  EXPECT_TRUE(IsNotAReplica(merged)) << merged;
  EXPECT_EQ(NotAReplicaLayoutVersion(merged), 7u);
}

// A failed commit's release reaches the peer with its ballot and version.
TEST_F(GrpcPeerTransportTest, ALeaseReleaseReachesThePeer) {
  transport_->ReleaseLayout(peer_, 5, LayoutBallot{7, "n1"});
  ASSERT_TRUE(replica_.released().WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(replica_.release().proposer_id(), "n1");
  EXPECT_EQ(replica_.release().round(), 7u);
  EXPECT_EQ(replica_.release().version(), 5u);
}

TEST_F(GrpcPeerTransportTest, ACallThePeerDroppedUnstartedIsUnavailable) {
  service_.Answer(grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED"));
  absl::StatusOr<WriteReply> reply = Forward();
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(reply.status().message(),
              HasSubstr("the peer dropped the call before starting it (CANCELLED: CANCELLED)"));
  EXPECT_FALSE(IsWriteStored(reply.status()));
}

// The calls the transport cancels itself, when it is destroyed, stay CANCELLED: they end a
// forwarding chain instead of moving on to another replica through a transport going away.
TEST_F(GrpcPeerTransportTest, CallsCancelledByTheTransportsDestructionStayCancelled) {
  service_.Hang();
  std::shared_ptr<Answer> answer = StartForward();
  service_.received().WaitForNotification();
  transport_.reset();
  answer->done.WaitForNotification();
  ASSERT_TRUE(answer->reply.has_value());
  EXPECT_EQ(answer->reply->status().code(), absl::StatusCode::kCancelled);
}

// A channel unused for idle_channel_lifetime is closed; a use restarts its time, a call in flight
// keeps it, and a call after its closing makes a new one.
TEST_F(GrpcPeerTransportTest, ChannelsNoCallUsedForTheirLifetimeAreClosed) {
  ManualClock clock;
  GrpcPeerTransport::Options options;
  options.clock = &clock;
  options.idle_channel_lifetime = absl::Hours(1);
  transport_ = std::make_unique<GrpcPeerTransport>("n1", &executor_, options);
  auto merge = [&] {
    absl::Notification done;
    transport_->MergeRecords(peer_, {EncodedRecord{"key", "record"}},
                             [&](absl::Status /*refused*/) { done.Notify(); });
    done.WaitForNotification();
    // The call releases the channel on the executor after its callback; the executor's one
    // thread runs this once it has.
    absl::Notification released;
    executor_.Schedule([&] { released.Notify(); });
    released.WaitForNotification();
  };
  EXPECT_EQ(transport_->ChannelCount(), 0u);
  merge();
  EXPECT_EQ(transport_->ChannelCount(), 1u);
  clock.Advance(absl::Minutes(59));
  EXPECT_EQ(transport_->DropIdleChannels(), 0u);
  merge();  // used again: another hour from now
  clock.Advance(absl::Minutes(59));
  EXPECT_EQ(transport_->DropIdleChannels(), 0u);
  clock.Advance(absl::Minutes(2));
  EXPECT_EQ(transport_->DropIdleChannels(), 1u);
  EXPECT_EQ(transport_->ChannelCount(), 0u);
  merge();  // a new channel
  EXPECT_EQ(transport_->ChannelCount(), 1u);

  // A call in flight keeps its channel, however long ago it started.
  service_.Hang();
  std::shared_ptr<Answer> answer = StartForward();
  service_.received().WaitForNotification();
  clock.Advance(absl::Hours(2));
  EXPECT_EQ(transport_->DropIdleChannels(), 0u);
  EXPECT_EQ(transport_->ChannelCount(), 1u);
  transport_.reset();
  answer->done.WaitForNotification();
}

}  // namespace
}  // namespace kv

// Node-to-node channels ping a peer that stops answering (a stopped process here: its kernel
// still acknowledges the packets, so only a ping tells): a call on the open connection fails
// UNAVAILABLE once a ping goes unanswered, instead of waiting out its deadline.
#include <signal.h>

#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "node/executor.h"
#include "node/grpc_peer_transport.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::kv::testing::NodeProcess;
using ::kv::testing::TempDir;

// Forwards a write to `peer` and waits for the answer, delivered on the executor.
absl::StatusOr<WriteReply> Forward(GrpcPeerTransport& transport, const Member& peer,
                                   const std::string& key) {
  absl::Notification done;
  std::optional<absl::StatusOr<WriteReply>> reply;
  transport.ForwardWrite(peer, WriteCommand{key, false, "value", "", ""}, {},
                         [&](absl::StatusOr<WriteReply> r) {
                           reply = std::move(r);
                           done.Notify();
                         });
  done.WaitForNotification();
  return *std::move(reply);
}

TEST(PeerKeepaliveProcessTest, ACallToAStoppedPeerFailsOverAtTheFirstUnansweredPing) {
  TempDir dir;
  NodeProcess::Options node_options;
  node_options.data_dir = dir.Sub("n2");
  node_options.node_id = "n2";
  absl::StatusOr<NodeProcess> node = NodeProcess::Start(node_options);
  ASSERT_TRUE(node.ok()) << node.status();
  const Member peer{"n2", node->endpoint(), ""};

  ThreadPoolExecutor executor(1);
  GrpcPeerTransport::Options options;
  options.forward_timeout = absl::Seconds(30);
  options.keepalive_time = absl::Seconds(1);
  options.keepalive_timeout = absl::Seconds(1);
  auto transport = std::make_unique<GrpcPeerTransport>("n1", &executor, options);
  absl::StatusOr<WriteReply> first = Forward(*transport, peer, "before");
  ASSERT_TRUE(first.ok()) << first.status();  // the connection is open

  ASSERT_TRUE(node->process().Stop());  // SIGSTOP, and every thread stopped
  const absl::Time start = absl::Now();
  absl::StatusOr<WriteReply> stalled = Forward(*transport, peer, "while-stopped");
  const absl::Duration took = absl::Now() - start;
  node->process().Signal(SIGCONT);
  std::cout << "a forwarded write to a stopped peer ended after " << absl::FormatDuration(took)
            << ": " << stalled.status() << "\n";
  EXPECT_TRUE(absl::IsUnavailable(stalled.status())) << stalled.status();
  EXPECT_TRUE(absl::StrContains(stalled.status().message(), "keepalive")) << stalled.status();
  // A ping 1 s after the last read, unanswered for 1 s (the defaults, 2 s and 3 s, would take
  // about 5 s): far from the 30 s deadline.
  EXPECT_LT(took, absl::Milliseconds(4500));
  // Resumed, the peer is reached again on a new connection.
  absl::StatusOr<WriteReply> after = absl::UnavailableError("not tried");
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!after.ok() && absl::Now() < deadline) {
    after = Forward(*transport, peer, "after");
    if (!after.ok()) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(after.ok()) << after.status();
  transport.reset();
}

}  // namespace
}  // namespace kv

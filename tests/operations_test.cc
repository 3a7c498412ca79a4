// OperationRegistry (node/operations.h): ids name their node and run, state moves RUNNING ->
// SUCCEEDED/FAILED once, progress updates apply only while running, and finished operations are
// kept for a bounded time and count (on a manual clock).
#include "node/operations.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/clock.h"

namespace kv {
namespace {

class OperationRegistryTest : public ::testing::Test {
 protected:
  OperationRegistry Make(size_t max_finished = 100, absl::Duration retention = absl::Hours(1)) {
    OperationRegistry::Options options;
    options.max_finished = max_finished;
    options.retention = retention;
    return OperationRegistry("n1", "66a1b2c3", &clock_, options);
  }
  ManualClock clock_;
};

TEST_F(OperationRegistryTest, IdsNameTheNodeAndRunAndAreUnique) {
  OperationRegistry ops = Make();
  const std::string a = ops.Start("repair", "with every peer", 2, "peers");
  const std::string b = ops.Start("repair", "with every peer", 2, "peers");
  EXPECT_EQ(a, "n1:66a1b2c3-1");
  EXPECT_EQ(b, "n1:66a1b2c3-2");
  absl::StatusOr<OperationIdParts> parts = ParseOperationId(b);
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->node_id, "n1");
  EXPECT_EQ(parts->incarnation, "66a1b2c3");
  EXPECT_EQ(parts->sequence, 2u);
  // Node ids may contain '-' and '.': the id splits at the first ':' and the last '-'.
  parts = ParseOperationId("node-a.b:ff-12");
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->node_id, "node-a.b");
  EXPECT_EQ(parts->sequence, 12u);
}

TEST_F(OperationRegistryTest, MalformedIdsAreInvalidArgument) {
  OperationRegistry ops = Make();
  for (const std::string id : {"", "n1", "n1:", ":ab-1", "n1:ab", "n1:ab-", "n1:-1", "n1:AB-1",
                               "n1:ab-x", "n1:ab-0", "n1:ab-+1", "n1:ab- 1", "n1:a:b-1"}) {
    absl::StatusOr<OperationInfo> got = ops.Get(id);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << "\"" << id << "\"";
    EXPECT_TRUE(absl::StrContains(got.status().message(), "NODE:INCARNATION-SEQUENCE"))
        << got.status();
  }
}

TEST_F(OperationRegistryTest, UnknownOtherNodeAndEarlierRunAreNotFoundWithTheReason) {
  OperationRegistry ops = Make();
  ops.Start("repair", "", 1, "peers");
  absl::StatusOr<OperationInfo> got = ops.Get("n1:66a1b2c3-9");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  got = ops.Get("n2:66a1b2c3-1");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "belongs to node n2")) << got.status();
  got = ops.Get("n1:1234-1");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "earlier run")) << got.status();
}

TEST_F(OperationRegistryTest, StateAndProgressFollowTheJob) {
  OperationRegistry ops = Make();
  const absl::Time start = clock_.Now();
  const std::string id = ops.Start("repair", "with n2", 1, "peers");
  absl::StatusOr<OperationInfo> got = ops.Get(id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, OperationState::kRunning);
  EXPECT_EQ(got->kind, "repair");
  EXPECT_EQ(got->started, start);
  EXPECT_EQ(got->ended, absl::InfinitePast());

  ASSERT_TRUE(ops.Update(id,
                         [](OperationInfo& op) {
                           op.message = "exchanging with n2";
                           op.counters["keys_repaired"] += 5;
                           op.state = OperationState::kSucceeded;  // ignored: only Finish ends it
                         })
                  .ok());
  got = ops.Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, OperationState::kRunning);
  EXPECT_EQ(got->message, "exchanging with n2");
  EXPECT_EQ(got->counters.at("keys_repaired"), 5u);

  clock_.Advance(absl::Seconds(3));
  ASSERT_TRUE(ops.Finish(id, absl::OkStatus()).ok());
  got = ops.Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, OperationState::kSucceeded);
  EXPECT_EQ(got->ended - got->started, absl::Seconds(3));
  // Finished is final.
  EXPECT_EQ(ops.Finish(id, absl::InternalError("late")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ops.Update(id, [](OperationInfo&) {}).code(), absl::StatusCode::kFailedPrecondition);

  const std::string failed = ops.Start("repair", "", 1, "peers");
  ASSERT_TRUE(ops.Finish(failed, absl::UnavailableError("n2: unreachable")).ok());
  got = ops.Get(failed);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, OperationState::kFailed);
  EXPECT_EQ(got->error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(OperationStateName(got->state), "FAILED");
}

TEST_F(OperationRegistryTest, FinishedOperationsExpireAfterTheRetention) {
  OperationRegistry ops = Make(100, absl::Minutes(10));
  const std::string done = ops.Start("repair", "", 1, "peers");
  const std::string running = ops.Start("repair", "", 1, "peers");
  ASSERT_TRUE(ops.Finish(done, absl::OkStatus()).ok());
  clock_.Advance(absl::Minutes(10) - absl::Seconds(1));
  EXPECT_TRUE(ops.Get(done).ok());
  clock_.Advance(absl::Seconds(1));
  absl::StatusOr<OperationInfo> got = ops.Get(done);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "kept for 10m")) << got.status();
  // Running operations never expire.
  clock_.Advance(absl::Hours(24));
  EXPECT_TRUE(ops.Get(running).ok());
}

TEST_F(OperationRegistryTest, AtMostMaxFinishedAreKeptOldestEndedFirstOut) {
  OperationRegistry ops = Make(/*max_finished=*/3);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(ops.Start("repair", "", 1, "peers"));
  // End them in the order 4, 0, 1, 2, 3: the first two to end are dropped.
  for (int i : {4, 0, 1, 2, 3}) ASSERT_TRUE(ops.Finish(ids[i], absl::OkStatus()).ok());
  EXPECT_FALSE(ops.Get(ids[4]).ok());
  EXPECT_FALSE(ops.Get(ids[0]).ok());
  for (int i : {1, 2, 3}) EXPECT_TRUE(ops.Get(ids[i]).ok()) << ids[i];
  std::vector<OperationInfo> list = ops.List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].id, ids[3]);  // newest first
  EXPECT_EQ(list[2].id, ids[1]);
  // Many running operations are all kept, whatever max_finished.
  for (int i = 0; i < 10; ++i) ops.Start("repair", "", 1, "peers");
  EXPECT_EQ(ops.List().size(), 13u);
}

}  // namespace
}  // namespace kv

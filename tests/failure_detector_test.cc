#include "node/failure_detector.h"

#include "gtest/gtest.h"

namespace kv {
namespace {

const absl::Time kStart = absl::UnixEpoch() + absl::Hours(1000);

TEST(FailureDetectorTest, UnknownUntilHeardThenDownAfterTimeout) {
  FailureDetector fd(absl::Seconds(2));
  fd.Watch("a", kStart);
  EXPECT_EQ(fd.Get("a"), Liveness::kUnknown);
  fd.Evaluate(kStart + absl::Milliseconds(1999));
  EXPECT_EQ(fd.Get("a"), Liveness::kUnknown);
  fd.Evaluate(kStart + absl::Seconds(2));
  EXPECT_EQ(fd.Get("a"), Liveness::kDown);
  EXPECT_EQ(fd.LastHeard("a"), absl::InfinitePast());
}

TEST(FailureDetectorTest, RestartUnheardGivesNeverHeardMembersAFullTimeout) {
  FailureDetector fd(absl::Seconds(2));
  fd.Watch("silent", kStart);
  fd.Watch("heard", kStart);
  fd.Heard("heard", kStart + absl::Seconds(1));
  // A slow start-up: gossip starts 5 s after watching began.
  fd.RestartUnheard(kStart + absl::Seconds(5));
  fd.Evaluate(kStart + absl::Seconds(6));
  EXPECT_EQ(fd.Get("silent"), Liveness::kUnknown);  // 1 s into its restarted timeout
  EXPECT_EQ(fd.Get("heard"), Liveness::kDown);      // heard 5 s ago: not restarted
  fd.Evaluate(kStart + absl::Seconds(7));
  EXPECT_EQ(fd.Get("silent"), Liveness::kDown);
}

TEST(FailureDetectorTest, HeardMarksUpAndSilenceMarksDownAgain) {
  FailureDetector fd(absl::Seconds(1));
  fd.Watch("a", kStart);
  fd.Heard("a", kStart + absl::Milliseconds(500));
  EXPECT_EQ(fd.Get("a"), Liveness::kUp);
  // The timeout runs from the last advance, not from when watching began.
  fd.Evaluate(kStart + absl::Milliseconds(1400));
  EXPECT_EQ(fd.Get("a"), Liveness::kUp);
  fd.Evaluate(kStart + absl::Milliseconds(1500));
  EXPECT_EQ(fd.Get("a"), Liveness::kDown);
  fd.Heard("a", kStart + absl::Seconds(3));
  EXPECT_EQ(fd.Get("a"), Liveness::kUp);
  EXPECT_EQ(fd.LastHeard("a"), kStart + absl::Seconds(3));

  std::vector<FailureDetector::Transition> t = fd.TakeTransitions();
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].from, Liveness::kUnknown);
  EXPECT_EQ(t[0].to, Liveness::kUp);
  EXPECT_EQ(t[1].to, Liveness::kDown);
  EXPECT_EQ(t[2].from, Liveness::kDown);
  EXPECT_EQ(t[2].to, Liveness::kUp);
  EXPECT_TRUE(fd.TakeTransitions().empty());
}

TEST(FailureDetectorTest, RepeatedJudgementsRecordNoTransition) {
  FailureDetector fd(absl::Seconds(1));
  fd.Heard("a", kStart);  // watched on first hearing
  fd.Heard("a", kStart + absl::Milliseconds(10));
  fd.Evaluate(kStart + absl::Seconds(5));
  fd.Evaluate(kStart + absl::Seconds(6));
  std::vector<FailureDetector::Transition> t = fd.TakeTransitions();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].to, Liveness::kUp);
  EXPECT_EQ(t[1].to, Liveness::kDown);
  EXPECT_EQ(fd.Get("unwatched"), Liveness::kUnknown);
}

TEST(FailureDetectorTest, WatchingTwiceDoesNotRestartTheTimeout) {
  FailureDetector fd(absl::Seconds(1));
  fd.Watch("a", kStart);
  fd.Watch("a", kStart + absl::Milliseconds(900));
  fd.Evaluate(kStart + absl::Seconds(1));
  EXPECT_EQ(fd.Get("a"), Liveness::kDown);
}

}  // namespace
}  // namespace kv

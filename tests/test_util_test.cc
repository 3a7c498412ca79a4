// Tests for tests/test_util.h: the helpers the process tests rely on must themselves be right
// (stdin feeding, timeouts, exit codes, cleanup), or a passing process test means little.
#include "tests/test_util.h"

#include <signal.h>
#include <sys/stat.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kv::testing {
namespace {

using ::testing::HasSubstr;

TEST(TempDirTest, CreatesAndRemovesDirectory) {
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    WriteFile(dir.Sub("f"), "contents");
    EXPECT_EQ(ReadFile(dir.Sub("f")), "contents");
  }
  struct stat st;
  EXPECT_NE(stat(path.c_str(), &st), 0);
}

TEST(PickFreePortTest, ReturnsUsablePort) {
  const int port = PickFreePort();
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
}

TEST(RunCommandTest, FeedsStdinAndCapturesOutput) {
  CommandResult r = RunCommand({"cat"}, "hello\nworld\n");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "hello\nworld\n");
  EXPECT_EQ(r.err, "");
}

TEST(RunCommandTest, LargeStdinThroughAPipe) {
  const std::string big(3 << 20, 'x');  // far beyond the pipe buffer in both directions
  CommandResult r = RunCommand({"cat"}, big);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.size(), big.size());
}

TEST(RunCommandTest, ChildThatIgnoresStdin) {
  CommandResult r = RunCommand({"true"}, std::string(1 << 20, 'x'));
  EXPECT_EQ(r.exit_code, 0);
}

TEST(RunCommandTest, ExitCodeStderrAndEnvironment) {
  CommandResult r = RunCommand({"sh", "-c", "echo \"$KV_TEST_VAR\" >&2; exit 3"}, "",
                               absl::Seconds(30), {{"KV_TEST_VAR", "from-env"}});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "from-env\n");
}

TEST(RunCommandTest, KillsAfterTimeout) {
  const absl::Time start = absl::Now();
  CommandResult r = RunCommand({"sleep", "30"}, "", absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  EXPECT_THAT(r.err, HasSubstr("killed after"));
}

TEST(RunCommandTest, MissingProgram) {
  CommandResult r = RunCommand({"/nonexistent/program"});
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/program"));
}

TEST(SubprocessTest, OutputGoesToFilesAndExitCodeIsReported) {
  TempDir dir;
  absl::StatusOr<Subprocess> p =
      Subprocess::Start({"sh", "-c", "echo out; echo err >&2; exit 7"}, dir.path());
  ASSERT_TRUE(p.ok()) << p.status();
  absl::StatusOr<int> code = p->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 7);
  EXPECT_FALSE(p->running());
  EXPECT_EQ(p->Stdout(), "out\n");
  EXPECT_EQ(p->Stderr(), "err\n");
}

TEST(SubprocessTest, SignalWaitAndKill) {
  TempDir dir;
  absl::StatusOr<Subprocess> p = Subprocess::Start({"sleep", "30"}, dir.path());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->running());
  EXPECT_EQ(p->Wait(absl::Milliseconds(50)).status().code(), absl::StatusCode::kDeadlineExceeded);
  p->Signal(SIGTERM);
  absl::StatusOr<int> code = p->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 128 + SIGTERM);

  absl::StatusOr<Subprocess> q = Subprocess::Start({"sleep", "30"}, dir.path());
  ASSERT_TRUE(q.ok());
  const pid_t pid = q->pid();
  q->Kill();
  EXPECT_FALSE(q->running());
  EXPECT_NE(kill(pid, 0), 0);  // reaped: the pid no longer exists
}

TEST(SubprocessTest, DestructorKillsRunningChild) {
  TempDir dir;
  pid_t pid;
  {
    absl::StatusOr<Subprocess> p = Subprocess::Start({"sleep", "30"}, dir.path());
    ASSERT_TRUE(p.ok());
    pid = p->pid();
    Subprocess moved = *std::move(p);
    EXPECT_TRUE(moved.running());
  }
  EXPECT_NE(kill(pid, 0), 0);
}

TEST(SubprocessTest, MissingProgramIsAnError) {
  TempDir dir;
  EXPECT_FALSE(Subprocess::Start({"/nonexistent/program"}, dir.path()).ok());
}

TEST(WaitForServingTest, FalseWhenNothingListens) {
  const absl::Time start = absl::Now();
  EXPECT_FALSE(
      WaitForServing("127.0.0.1:" + std::to_string(PickFreePort()), absl::Milliseconds(300)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace kv::testing

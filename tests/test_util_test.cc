// Tests for tests/test_util.h: the helpers the process tests rely on must themselves be right
// (stdin feeding, timeouts, exit codes, cleanup), or a passing process test means little.
#include "tests/test_util.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
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

// A process serving on a port is told from one that only shares the machine with it.
TEST(ListensOnTest, TellsWhichProcessListens) {
  const int port = PickFreePort();
  EXPECT_FALSE(ListensOn(getpid(), port));
  const int fd = BindLoopback(port);
  EXPECT_FALSE(ListensOn(getpid(), port));  // bound, not listening
  ASSERT_EQ(listen(fd, 1), 0);
  EXPECT_TRUE(ListensOn(getpid(), port));
  EXPECT_FALSE(ListensOn(getpid(), port == 65535 ? port - 1 : port + 1));
  EXPECT_FALSE(ListensOn(getppid(), port));  // another process
  close(fd);
  EXPECT_FALSE(ListensOn(getpid(), port));
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

// A test process that dies without cleaning up (here: _exit in a forked copy of this test) takes
// the processes it started with it.
TEST(SubprocessTest, ChildDiesWithTheTestProcess) {
  TempDir logs;
  int pid_pipe[2];
  ASSERT_EQ(pipe(pid_pipe), 0);
  const pid_t test_process = fork();
  ASSERT_GE(test_process, 0);
  if (test_process == 0) {
    close(pid_pipe[0]);
    absl::StatusOr<Subprocess> sleeper = Subprocess::Start({"sleep", "60"}, logs.path());
    pid_t child = sleeper.ok() ? sleeper->pid() : -1;
    (void)!write(pid_pipe[1], &child, sizeof(child));
    _exit(0);  // no destructors: as if the test had crashed
  }
  close(pid_pipe[1]);
  pid_t child = -1;
  ASSERT_EQ(read(pid_pipe[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  close(pid_pipe[0]);
  waitpid(test_process, nullptr, 0);
  ASSERT_GT(child, 0);
  // Gone, or a zombie waiting for whoever adopted it to reap it.
  auto dead = [child] {
    std::ifstream stat(absl::StrCat("/proc/", child, "/stat"));
    std::string line;
    if (!std::getline(stat, line)) return true;
    const size_t paren = line.rfind(')');
    return paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z';
  };
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = dead();
    if (!gone) absl::SleepFor(absl::Milliseconds(20));
  }
  if (!gone) kill(child, SIGKILL);
  EXPECT_TRUE(gone) << "the child of a dead test process is still running";
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

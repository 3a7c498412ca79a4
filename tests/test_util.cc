#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

extern char** environ;

namespace kv::testing {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "test_util: %s\n", message.c_str());
  std::abort();
}

std::string ErrnoText(int error_number) { return std::strerror(error_number); }

// Everything execve needs, built before fork so the child only makes async-signal-safe calls.
class ExecSpec {
 public:
  ExecSpec(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env)
      : argv_(argv) {
    path_ = ResolveExecutable(argv.empty() ? "" : argv[0]);
    for (char** e = environ; *e != nullptr; ++e) {
      const absl::string_view entry(*e);
      const std::string name(entry.substr(0, entry.find('=')));
      if (env.count(name) == 0) env_.emplace_back(entry);
    }
    for (const auto& [name, value] : env) env_.push_back(name + "=" + value);
    for (std::string& a : argv_) argv_ptrs_.push_back(a.data());
    argv_ptrs_.push_back(nullptr);
    for (std::string& e : env_) env_ptrs_.push_back(e.data());
    env_ptrs_.push_back(nullptr);
  }

  const std::string& path() const { return path_; }

  // In the child, after fork: unblock signals, restore SIGPIPE, exec. Reports errno on
  // `error_fd` (close-on-exec) if exec fails.
  [[noreturn]] void ExecInChild(int error_fd) const {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    execve(path_.c_str(), argv_ptrs_.data(), env_ptrs_.data());
    const int error_number = errno;
    (void)!write(error_fd, &error_number, sizeof(error_number));
    _exit(127);
  }

 private:
  static std::string ResolveExecutable(const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos) return name;
    const char* path = std::getenv("PATH");
    for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
      std::string candidate = absl::StrCat(dir, "/", name);
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return name;
  }

  std::string path_;
  std::vector<std::string> argv_;
  std::vector<std::string> env_;
  std::vector<char*> argv_ptrs_;
  std::vector<char*> env_ptrs_;
};

// Forks and execs `spec`; `setup_fds` runs in the child first (dup2 only). Returns the pid, or
// an error if fork or exec failed.
//
// A child started from the main thread gets SIGKILL when the test process dies, so that a test
// that crashes (an ASan abort, a fatal signal) leaves no node running. Not for children started
// from other threads: the kernel sends the signal when the forking *thread* exits.
template <typename SetupFds>
absl::StatusOr<pid_t> Spawn(const ExecSpec& spec, SetupFds setup_fds) {
  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  const pid_t parent = getpid();
  const bool from_main_thread = static_cast<pid_t>(syscall(SYS_gettid)) == parent;
  const pid_t pid = fork();
  if (pid < 0) {
    close(error_pipe[0]);
    close(error_pipe[1]);
    return absl::InternalError(absl::StrCat("fork failed: ", ErrnoText(errno)));
  }
  if (pid == 0) {
    close(error_pipe[0]);
    if (from_main_thread) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // the parent died before prctl
    }
    setup_fds();
    spec.ExecInChild(error_pipe[1]);
  }
  close(error_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(error_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(error_pipe[0]);
  if (n == sizeof(child_errno)) {
    waitpid(pid, nullptr, 0);
    return absl::NotFoundError(
        absl::StrCat("cannot execute ", spec.path(), ": ", ErrnoText(child_errno)));
  }
  return pid;
}

int ExitCodeFromWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Polls waitpid until the child exits or `deadline` passes; true (and its code) if it exited.
bool WaitPidUntil(pid_t pid, absl::Time deadline, int* exit_code) {
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      *exit_code = ExitCodeFromWaitStatus(status);
      return true;
    }
    if (r < 0 && errno != EINTR) {
      *exit_code = -1;
      return true;  // not our child any more; nothing to wait for
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

absl::StatusOr<int> OpenForWriting(const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", ErrnoText(errno)));
  return fd;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr && *base ? base : "/tmp", "/kvtest.XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    Die(absl::StrCat("mkdtemp(", pattern, "): ", ErrnoText(errno)));
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Die(absl::StrCat("socket: ", ErrnoText(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die(absl::StrCat("bind/getsockname: ", ErrnoText(errno)));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

int BindLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Die(absl::StrCat("socket: ", ErrnoText(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die(absl::StrCat("bind to port ", port, ": ", ErrnoText(errno)));
  }
  return fd;
}

bool ListensOn(pid_t pid, int port) {
  // Inodes of the process's sockets.
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& fd :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code link_ec;
    const std::string target = std::filesystem::read_symlink(fd.path(), link_ec).string();
    if (!link_ec && absl::StartsWith(target, "socket:[")) {
      inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  if (inodes.empty()) return false;
  // Listening sockets (state 0A) on `port`, with their inodes.
  const std::string hex_port =
      absl::StrCat(":", absl::AsciiStrToUpper(absl::StrFormat("%04x", port)));
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::istringstream lines(ReadFile(table));
    std::string line;
    std::getline(lines, line);  // header
    while (std::getline(lines, line)) {
      const std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (fields.size() < 10) continue;
      if (!absl::EndsWith(fields[1], hex_port) || fields[3] != "0A") continue;
      if (inodes.count(fields[9]) > 0) return true;
    }
  }
  return false;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) Die(absl::StrCat("cannot write ", path));
}

void ReplaceFile(const std::string& path, const std::string& contents) {
  WriteFile(path + ".new", contents);
  if (std::rename((path + ".new").c_str(), path.c_str()) != 0) {
    Die(absl::StrCat("cannot rename ", path, ".new to ", path));
  }
}

DirectorySnapshot SnapshotDirectory(const std::string& dir) {
  DirectorySnapshot files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    files[entry.path().filename().string()] = {entry.is_regular_file() ? entry.file_size() : 0,
                                               entry.last_write_time()};
  }
  return files;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// ---------------------------------------------------------------------------------------------

Subprocess::~Subprocess() { Kill(); }

Subprocess::Subprocess(Subprocess&& other) noexcept { *this = std::move(other); }

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    Kill();
    pid_ = std::exchange(other.pid_, -1);
    reaped_ = std::exchange(other.reaped_, false);
    exit_code_ = std::exchange(other.exit_code_, -1);
    stdout_path_ = std::move(other.stdout_path_);
    stderr_path_ = std::move(other.stderr_path_);
  }
  return *this;
}

absl::StatusOr<Subprocess> Subprocess::Start(const std::vector<std::string>& argv,
                                             const std::string& log_dir,
                                             const std::map<std::string, std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  static std::atomic<int> counter{0};
  const std::string base =
      absl::StrCat(log_dir, "/", std::filesystem::path(argv[0]).filename().string(), ".", getpid(),
                   ".", counter.fetch_add(1));
  Subprocess process;
  process.stdout_path_ = base + ".stdout";
  process.stderr_path_ = base + ".stderr";
  const ExecSpec spec(argv, env);
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  absl::StatusOr<int> out = OpenForWriting(process.stdout_path_);
  absl::StatusOr<int> err = OpenForWriting(process.stderr_path_);
  if (!out.ok() || !err.ok()) {
    if (out.ok()) close(*out);
    if (err.ok()) close(*err);
    return out.ok() ? err.status() : out.status();
  }
  const int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out_fd = *out;
  const int err_fd = *err;
  absl::StatusOr<pid_t> pid = Spawn(spec, [&] {
    dup2(in_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
  });
  close(in_fd);
  close(out_fd);
  close(err_fd);
  if (!pid.ok()) return pid.status();
  process.pid_ = *pid;
  return process;
}

bool Subprocess::Reap(bool block) {
  if (pid_ < 0 || reaped_) return reaped_;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    reaped_ = true;
    exit_code_ = ExitCodeFromWaitStatus(status);
  } else if (r < 0) {
    reaped_ = true;  // not our child (already reaped elsewhere)
    exit_code_ = -1;
  }
  return reaped_;
}

bool Subprocess::running() { return pid_ >= 0 && !Reap(/*block=*/false); }

void Subprocess::Signal(int signal) {
  if (running()) kill(pid_, signal);
}

bool Subprocess::Stop(absl::Duration timeout) {
  if (!running()) return false;
  kill(pid_, SIGSTOP);
  const absl::Time deadline = absl::Now() + timeout;
  const std::string tasks = absl::StrCat("/proc/", pid_, "/task");
  while (true) {
    bool all_stopped = true;
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      // "pid (comm) S ...": the state follows the last ')' (comm may hold parentheses).
      const size_t paren = line.rfind(')');
      if (paren == std::string::npos || paren + 2 >= line.size()) continue;  // the thread ended
      const char state = line[paren + 2];
      // Stopped, or a thread that has exited (zombie, dead).
      if (state != 'T' && state != 't' && state != 'Z' && state != 'X') {
        all_stopped = false;
        break;
      }
    }
    if (error) return false;
    if (all_stopped) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (pid_ < 0) return absl::FailedPreconditionError("no process was started");
  const absl::Time deadline = absl::Now() + timeout;
  while (!Reap(/*block=*/false)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("pid ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return exit_code_;
}

void Subprocess::Kill() {
  if (pid_ < 0 || reaped_) return;
  if (!Reap(/*block=*/false)) {
    kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
}

std::string Subprocess::Stdout() const { return ReadFile(stdout_path_); }
std::string Subprocess::Stderr() const { return ReadFile(stderr_path_); }

// ---------------------------------------------------------------------------------------------

namespace {

// Moves data between the child's pipes and the buffers until both output pipes close or the
// deadline passes. Returns false on timeout.
bool PumpPipes(int in_fd, int out_fd, int err_fd, const std::string& input, absl::Time deadline,
               CommandResult* result) {
  size_t written = 0;
  if (input.empty() && in_fd >= 0) {
    close(in_fd);
    in_fd = -1;
  }
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}, {in_fd, POLLOUT, 0}};
    const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (wait_ms <= 0) return false;
    if (poll(fds, 3, static_cast<int>(std::min<int64_t>(wait_ms, 100))) < 0 && errno != EINTR) {
      return false;
    }
    char buf[65536];
    int* read_fds[2] = {&out_fd, &err_fd};
    std::string* sinks[2] = {&result->out, &result->err};
    for (int i = 0; i < 2; ++i) {
      if (*read_fds[i] < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = read(*read_fds[i], buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(*read_fds[i]);
        *read_fds[i] = -1;
      }
    }
    if (in_fd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t n = write(in_fd, input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if ((n < 0 && errno != EINTR && errno != EAGAIN) || written == input.size()) {
        close(in_fd);  // all written, or the child closed its stdin
        in_fd = -1;
      }
    }
  }
  if (in_fd >= 0) close(in_fd);
  return true;
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& stdin_data,
                         absl::Duration timeout, const std::map<std::string, std::string>& env) {
  // A child that exits without reading its stdin must not kill the test with SIGPIPE.
  static const bool sigpipe_ignored = [] { return signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
  (void)sigpipe_ignored;
  CommandResult result;
  const ExecSpec spec(argv, env);
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    Die(absl::StrCat("pipe2: ", ErrnoText(errno)));
  }
  absl::StatusOr<pid_t> pid = Spawn(spec, [&] {
    dup2(in_pipe[0], STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
  });
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.ok()) {
    for (int fd : {in_pipe[1], out_pipe[0], err_pipe[0]}) close(fd);
    result.exit_code = 127;
    result.err = std::string(pid.status().message());
    return result;
  }
  fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  const absl::Time deadline = absl::Now() + timeout;
  const bool finished =
      PumpPipes(in_pipe[1], out_pipe[0], err_pipe[0], stdin_data, deadline, &result);
  if (!finished || !WaitPidUntil(*pid, deadline, &result.exit_code)) {
    kill(*pid, SIGKILL);
    int status = 0;
    waitpid(*pid, &status, 0);
    result.exit_code = ExitCodeFromWaitStatus(status);
    absl::StrAppend(&result.err, "\n[test_util: killed after ", absl::FormatDuration(timeout),
                    "]\n");
  }
  return result;
}

// ---------------------------------------------------------------------------------------------

namespace {

// Reads a protobuf varint; false if truncated.
bool ReadVarint(absl::string_view* in, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// True if an encoded grpc.health.v1.HealthCheckResponse says SERVING (field 1 = 1).
bool IsServingResponse(absl::string_view message) {
  while (!message.empty()) {
    uint64_t tag = 0, value = 0;
    if (!ReadVarint(&message, &tag)) return false;
    if ((tag & 7) == 0) {
      if (!ReadVarint(&message, &value)) return false;
      if ((tag >> 3) == 1) return value == 1;
    } else if ((tag & 7) == 2) {
      if (!ReadVarint(&message, &value) || value > message.size()) return false;
      message.remove_prefix(value);
    } else {
      return false;
    }
  }
  return false;  // status UNKNOWN (0) is encoded as an absent field
}

std::string ByteBufferToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// One health check that may take `timeout`. gRPC deadlines are read on the system clock, as gRPC
// reads it (abseil's clock may lag a step of it).
bool CheckServingOnce(grpc::GenericStub* stub, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  context.set_wait_for_ready(true);
  grpc::Slice empty_slice("");
  grpc::ByteBuffer request(&empty_slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  absl::Notification done;
  stub->UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                  &response, [&](grpc::Status s) {
                    status = std::move(s);
                    done.Notify();
                  });
  done.WaitForNotification();
  return status.ok() && IsServingResponse(ByteBufferToString(response));
}

}  // namespace

bool WaitForServing(const std::string& endpoint, absl::Duration timeout) {
  grpc::ChannelArguments args;
  // Reconnect quickly while the server is still starting.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  grpc::GenericStub stub(
      grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args));
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const absl::Duration attempt = std::min(deadline - absl::Now(), absl::Seconds(1));
    if (CheckServingOnce(&stub, std::max(attempt, absl::Milliseconds(1)))) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<NodeProcess> NodeProcess::Start(Options options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir is required");
  const bool pick_port = options.port == 0;
  NodeProcess node;
  absl::Status status;
  // A picked port can be taken by someone else before kvnode binds it: then pick another.
  for (int attempt = 0; attempt < 3; ++attempt) {
    node.options_ = options;
    if (pick_port) node.options_.port = PickFreePort();
    status = node.Launch();
    if (status.ok()) return node;
    if (!pick_port || !absl::StrContains(status.message(), "cannot listen")) break;
  }
  return status;
}

absl::Status NodeProcess::Launch() {
  std::vector<std::string> argv = {KVNODE_PATH, "--node_id=" + options_.node_id,
                                   "--listen=" + endpoint(), "--data_dir=" + options_.data_dir};
  argv.insert(argv.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  std::string log_dir = std::filesystem::path(options_.data_dir).parent_path().string();
  if (log_dir.empty()) log_dir = ".";
  absl::StatusOr<Subprocess> process = Subprocess::Start(argv, log_dir);
  if (!process.ok()) return process.status();
  process_ = *std::move(process);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (WaitForServing(endpoint(), absl::Milliseconds(250))) return absl::OkStatus();
    if (!process_.running()) {
      absl::StatusOr<int> code = process_.Wait(absl::ZeroDuration());
      return absl::UnavailableError(absl::StrCat("kvnode exited with code ", code.ok() ? *code : -1,
                                                 " before serving; stderr:\n", process_.Stderr()));
    }
  }
  process_.Kill();
  return absl::DeadlineExceededError(
      absl::StrCat("kvnode did not serve within 20s; stderr:\n", process_.Stderr()));
}

absl::Status NodeProcess::KillAndRestart() {
  process_.Kill();
  return Launch();
}

// GET http://127.0.0.1:`port``path` (HTTP/1.0: the server closes the connection after the
// answer). The body, or an error with the status line.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to port ", port));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("short write");
  }
  std::string answer;
  char buffer[8192];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) answer.append(buffer, n);
  close(fd);
  const size_t body = answer.find("\r\n\r\n");
  if (body == std::string::npos) return absl::UnavailableError("no HTTP answer: " + answer);
  const std::string status_line = answer.substr(0, answer.find("\r\n"));
  if (!absl::StrContains(status_line, " 200 ")) return absl::NotFoundError(status_line);
  return answer.substr(body + 4);
}

// The value of the sample written exactly `series` (name and labels, as the exposition writes
// them: labels sorted by name), or nullopt when the scrape has no such sample.
std::optional<double> MetricSample(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, series) || !absl::ConsumePrefix(&line, " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(line, &value)) return value;
  }
  return std::nullopt;
}

std::string LibfaketimePath() {
  // /usr/lib/<multiarch triplet>/faketime/libfaketimeMT.so.1
  std::error_code error;
  for (const auto& dir : std::filesystem::directory_iterator("/usr/lib", error)) {
    const std::filesystem::path candidate = dir.path() / "faketime" / "libfaketimeMT.so.1";
    if (std::filesystem::exists(candidate, error)) return candidate.string();
  }
  return "";
}

std::map<std::string, std::string> FaketimeEnv(const std::string& libfaketime) {
  const char* asan = std::getenv("ASAN_OPTIONS");
  return {{"LD_PRELOAD", libfaketime},
          {"FAKETIME_DONT_FAKE_MONOTONIC", "1"},
          {"ASAN_OPTIONS",
           absl::StrCat(asan != nullptr ? asan : "", asan != nullptr && *asan != 0 ? ":" : "",
                        "verify_asan_link_order=0")}};
}

}  // namespace kv::testing

// Helpers for tests that start real things: temporary directories, free loopback ports, and
// child processes (kvnode, kvctl, kvbench) tracked by pid. Everything cleans up in its
// destructor: directories are removed, processes still running are killed (SIGKILL) and reaped.
#ifndef KV_TESTS_TEST_UTIL_H_
#define KV_TESTS_TEST_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kv::testing {

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path()/name
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A loopback TCP port that was free a moment ago (bound to 0, then released).
int PickFreePort();

// A TCP socket bound to 127.0.0.1:`port` (not listening yet). Dies on failure.
int BindLoopback(int port);

// True if process `pid` holds a TCP socket listening on `port` (IPv4 or IPv6), as /proc shows;
// false if it does not, or /proc cannot tell. Tells a node that serves on its port from another
// process that took the port first.
bool ListensOn(pid_t pid, int port);

// Writes `contents` to `path` (replacing it). Dies on failure.
void WriteFile(const std::string& path, const std::string& contents);
// Writes `contents` to `path` + ".new" and renames it over `path`, so a reader sees the old
// contents or the new, never half of them (libfaketime's FAKETIME_TIMESTAMP_FILE, read at every
// call). Dies on failure.
void ReplaceFile(const std::string& path, const std::string& contents);
std::string ReadFile(const std::string& path);

// Every entry of directory `dir` (not recursive) with its size (0 for a non-file) and last
// modification time: equal snapshots mean nothing in the directory was created, removed or
// written.
using DirectorySnapshot =
    std::map<std::string, std::pair<uintmax_t, std::filesystem::file_time_type>>;
DirectorySnapshot SnapshotDirectory(const std::string& dir);

// A child process started with fork+exec; stdout and stderr go to files in `log_dir`.
class Subprocess {
 public:
  Subprocess() = default;
  ~Subprocess();  // SIGKILL + reap if still running
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;

  // Starts argv[0] with the given arguments and extra environment variables.
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                          const std::string& log_dir,
                                          const std::map<std::string, std::string>& env = {});
  pid_t pid() const { return pid_; }
  bool running();
  // Sends `signal` (e.g. SIGTERM, SIGKILL, SIGSTOP).
  void Signal(int signal);
  // SIGSTOP, then waits (up to `timeout`) until every thread of the process has stopped: the
  // signal takes effect only when each thread next runs, which on a loaded machine can be after
  // the process has answered a request sent right after kill() returned. False on timeout.
  bool Stop(absl::Duration timeout = absl::Seconds(10));
  // Waits for exit up to `timeout`; returns the exit code (128+signal if killed), or
  // DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  void Kill();  // SIGKILL and reap
  std::string Stdout() const;
  std::string Stderr() const;

 private:
  // Collects the exit status if the child has exited (waiting for it if `block`).
  bool Reap(bool block);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;  // valid once reaped_
  std::string stdout_path_;
  std::string stderr_path_;
};

// Result of running a command to completion.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs a command to completion (killed after `timeout`), feeding `stdin_data` to its stdin.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                         absl::Duration timeout = absl::Seconds(30),
                         const std::map<std::string, std::string>& env = {});

// A kvnode process on 127.0.0.1 with its own data directory.
class NodeProcess {
 public:
  struct Options {
    std::string node_id = "n1";
    std::string data_dir;  // required
    int port = 0;          // 0 = pick a free one
    std::vector<std::string> extra_flags;
  };
  // Starts kvnode and waits until its gRPC health service answers SERVING (up to 20 s).
  static absl::StatusOr<NodeProcess> Start(Options options);
  NodeProcess() = default;
  NodeProcess(NodeProcess&&) noexcept = default;
  NodeProcess& operator=(NodeProcess&&) noexcept = default;

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(options_.port); }
  Subprocess& process() { return process_; }
  const Options& options() const { return options_; }
  // SIGKILL, then start again with the same options (same port and data directory).
  absl::Status KillAndRestart();

 private:
  // Starts kvnode with options_ (whose port is set) and waits until it serves.
  absl::Status Launch();

  Options options_;
  Subprocess process_;
};

// True if a gRPC health check to `endpoint` answers SERVING within `timeout`.
bool WaitForServing(const std::string& endpoint, absl::Duration timeout);

// GET http://127.0.0.1:`port``path` (HTTP/1.0: the server closes the connection after the
// answer). The body, or an error with the status line.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// The value of the sample written exactly `series` (name and labels, as the Prometheus text
// exposition writes them: labels sorted by name), or nullopt when `text` has no such sample.
std::optional<double> MetricSample(const std::string& text, const std::string& series);

// The path of libfaketimeMT.so.1 (Debian's faketime package), or "" when it is not installed.
std::string LibfaketimePath();
// The environment of a process whose wall clock libfaketime at `libfaketime` moves (the caller
// adds FAKETIME or FAKETIME_TIMESTAMP_FILE) while its monotonic clock is left alone, as when the
// wall clock of a machine steps. Under AddressSanitizer its runtime is then not the first library
// loaded, which ASAN_OPTIONS (this process's, plus verify_asan_link_order=0) lets pass.
std::map<std::string, std::string> FaketimeEnv(const std::string& libfaketime);

}  // namespace kv::testing

#endif  // KV_TESTS_TEST_UTIL_H_

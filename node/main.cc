// kvnode: one storage node of the kv store. See `kvnode --help`.
//
// Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT) or --help; 1 when the node cannot start
// (data directory locked or not writable, address in use) or fails; 2 for bad flags or a bad
// config file.
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "node/config.h"
#include "node/log.h"
#include "node/node_server.h"
#include "node/shutdown_signal.h"

int main(int argc, char** argv) {
#ifdef NDEBUG
  // Debian's abseil is built with mutex deadlock detection on, which every absl::Mutex (gRPC's
  // too) then pays for. Debug and sanitizer builds keep it as a check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  // Before anything can start a thread (gRPC, RocksDB): every thread inherits the mask.
  kv::BlockShutdownSignals();

  const std::vector<std::string> args(argv, argv + argc);
  absl::StatusOr<kv::CommandLine> command_line = kv::ParseNodeCommandLine(args);
  if (!command_line.ok()) {
    // Flags and config files may hold any byte (a NUL would end the line early).
    std::fprintf(stderr, "kvnode: %s\n",
                 kv::PrintableAscii(command_line.status().message()).c_str());
    return 2;
  }
  if (command_line->help) {
    std::fputs(kv::NodeConfigHelp().c_str(), stdout);
    return 0;
  }
  const kv::NodeConfig& config = command_line->config;
  kv::SetLogLevel(config.log_level);

  // Heard from now on, also while the node starts (a seeds-only node may wait for its seeds).
  const absl::Notification& stop_requested = kv::WatchShutdownSignals();
  // A leave that removed this node stops it like SIGTERM: the signal goes to the thread above.
  absl::StatusOr<std::unique_ptr<kv::NodeServer>> server = kv::NodeServer::Start(
      config, [] { kill(getpid(), SIGTERM); }, &stop_requested);
  if (!server.ok() && absl::IsCancelled(server.status()) && stop_requested.HasBeenNotified()) {
    kv::LogInfo("shutdown signal received while starting: stopped before serving",
                {{"reason", std::string(server.status().message())}});
    return 0;
  }
  if (!server.ok()) {
    kv::LogError("kvnode cannot start",
                 {{"error", std::string(server.status().message())},
                  {"code", absl::StatusCodeToString(server.status().code())}});
    return 1;
  }
  const int signal_number = kv::WaitForShutdownSignal();
  kv::LogInfo("shutdown signal received", {{"signal", strsignal(signal_number)}});
  (*server)->Shutdown();
  server->reset();
  kv::LogInfo("kvnode stopped cleanly");
  return 0;
}

// RocksDbInfoLog: where an open RocksDbEngine sends RocksDB's informational log, instead of
// RocksDB's own file logger.
//
// RocksDB's logger writes DIR/LOG and aborts the process on the first write after a failed one
// (Debian's build keeps RocksDB's assertions: "Assertion `sync_without_flush_called_' failed").
// On a full disk that killed kvnode, and killed it again at every restart (opening the database
// logs its build version first). This logger writes the same lines to DIR/LOG, ignores write
// errors (a line lost on a full disk is all it costs; it tries again at the next line), keeps
// the kOldFiles latest older files (LOG.old.<UTC time>: earlier runs', and the current run's
// once LOG passes `max_file_bytes`), and hands lines at WARN level or above to `warn` (kvnode: its
// own log), so that RocksDB's warnings (write stalls, background errors) reach the operator: at
// most kWarningsPerWindow per kWarningWindow (a full disk makes every write warn), the first one
// after a window that dropped some saying how many (the file has them all).
//
// Thread-safe: RocksDB logs from its background threads and from writers.
#ifndef KV_STORAGE_ROCKSDB_INFO_LOG_H_
#define KV_STORAGE_ROCKSDB_INFO_LOG_H_

#include <cstdarg>
#include <cstdio>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rocksdb/env.h"

namespace kv {

class RocksDbInfoLog : public rocksdb::Logger {
 public:
  // Called with the level ("WARN", "ERROR", "FATAL") and the line (no trailing newline), without
  // the log's lock held, from whatever thread logged.
  using WarnFn = std::function<void(absl::string_view level, absl::string_view line)>;
  static constexpr int kWarningsPerWindow = 20;
  static constexpr size_t kOldFiles = 4;
  static constexpr absl::Duration kWarningWindow = absl::Seconds(10);

  // Renames an existing DIR/LOG to DIR/LOG.old.<time> (deleting the oldest such files past
  // kOldFiles) and opens a new DIR/LOG (appends to it if it could not be renamed). Never fails:
  // a file that cannot be opened makes the lines go to `warn` only (those at WARN or above).
  RocksDbInfoLog(const std::string& dir, size_t max_file_bytes, WarnFn warn);
  ~RocksDbInfoLog() override;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  void Logv(rocksdb::InfoLogLevel level, const char* format, va_list ap) override;
  void Flush() override;

  // Lines that could not be written to the file (a full disk, an I/O error) since the start.
  uint64_t lines_lost() const;
  // Warnings not handed to `warn` (over the rate) since the start.
  uint64_t warnings_dropped() const;

 private:
  void Write(rocksdb::InfoLogLevel level, const std::string& formatted);
  // Moves LOG aside (see the constructor) and opens LOG again; no file if that fails.
  void Rotate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Opens LOG for appending (file_bytes_: its size).
  void OpenForAppend() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const std::string dir_;
  const size_t max_file_bytes_;
  const WarnFn warn_;

  mutable absl::Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t file_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lines_lost_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int warnings_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_since_last_ ABSL_GUARDED_BY(mu_) = 0;  // dropped since the last one passed
  uint64_t warnings_dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kv

#endif  // KV_STORAGE_ROCKSDB_INFO_LOG_H_

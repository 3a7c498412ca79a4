#include "storage/rocksdb_info_log.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kv {
namespace {

const char* LevelName(rocksdb::InfoLogLevel level) {
  switch (level) {
    case rocksdb::InfoLogLevel::DEBUG_LEVEL:
      return "DEBUG";
    case rocksdb::InfoLogLevel::INFO_LEVEL:
      return "INFO";
    case rocksdb::InfoLogLevel::WARN_LEVEL:
      return "WARN";
    case rocksdb::InfoLogLevel::ERROR_LEVEL:
      return "ERROR";
    case rocksdb::InfoLogLevel::FATAL_LEVEL:
      return "FATAL";
    default:
      return "HEADER";
  }
}

bool IsWarning(rocksdb::InfoLogLevel level) {
  return level >= rocksdb::InfoLogLevel::WARN_LEVEL && level < rocksdb::InfoLogLevel::HEADER_LEVEL;
}

std::string Format(const char* format, va_list ap) {
  char small[512];
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(small, sizeof(small), format, copy);
  va_end(copy);
  if (n < 0) return std::string(format);
  if (static_cast<size_t>(n) < sizeof(small)) return std::string(small, static_cast<size_t>(n));
  std::string out(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(out.data(), out.size(), format, ap);
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

RocksDbInfoLog::RocksDbInfoLog(const std::string& dir, size_t max_file_bytes, WarnFn warn)
    : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
      path_(dir + "/LOG"),
      dir_(dir),
      max_file_bytes_(max_file_bytes),
      warn_(std::move(warn)) {
  absl::MutexLock lock(&mu_);
  Rotate();
}

RocksDbInfoLog::~RocksDbInfoLog() {
  absl::MutexLock lock(&mu_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
}

void RocksDbInfoLog::Logv(const char* format, va_list ap) {
  Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
}

void RocksDbInfoLog::Logv(rocksdb::InfoLogLevel level, const char* format, va_list ap) {
  if (level < GetInfoLogLevel()) return;
  Write(level, Format(format, ap));
}

void RocksDbInfoLog::Write(rocksdb::InfoLogLevel level, const std::string& formatted) {
  absl::string_view message = formatted;
  while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  const bool info = level == rocksdb::InfoLogLevel::INFO_LEVEL;
  const absl::Time now = absl::Now();
  const std::string line =
      absl::StrCat(absl::FormatTime("%Y/%m/%d-%H:%M:%E6S", now, absl::UTCTimeZone()), " ",
                   info ? "" : absl::StrCat("[", LevelName(level), "] "), message, "\n");
  bool forward = false;
  uint64_t dropped_before = 0;
  {
    absl::MutexLock lock(&mu_);
    if (IsWarning(level) && warn_) {
      if (now - window_start_ >= kWarningWindow) {
        window_start_ = now;
        warnings_in_window_ = 0;
      }
      forward = warnings_in_window_ < kWarningsPerWindow;
      if (forward) {
        ++warnings_in_window_;
        dropped_before = dropped_since_last_;
        dropped_since_last_ = 0;
      } else {
        ++dropped_since_last_;
        ++warnings_dropped_;
      }
    }
    if (file_ != nullptr && file_bytes_ + line.size() > max_file_bytes_) Rotate();
    // After a failed open (a full disk, say), each line tries again.
    if (file_ == nullptr) OpenForAppend();
    const bool written = file_ != nullptr &&
                         std::fwrite(line.data(), 1, line.size(), file_) == line.size() &&
                         std::fflush(file_) == 0;
    if (written) {
      file_bytes_ += line.size();
    } else {
      ++lines_lost_;
      if (file_ != nullptr) std::clearerr(file_);
    }
  }
  if (!forward) return;
  if (dropped_before == 0) return warn_(LevelName(level), message);
  warn_(LevelName(level), absl::StrCat(message, " (", dropped_before,
                                       " earlier warnings not shown here; ", path_, " has them)"));
}

void RocksDbInfoLog::Flush() {
  absl::MutexLock lock(&mu_);
  if (file_ != nullptr && std::fflush(file_) != 0) std::clearerr(file_);
}

uint64_t RocksDbInfoLog::lines_lost() const {
  absl::MutexLock lock(&mu_);
  return lines_lost_;
}

uint64_t RocksDbInfoLog::warnings_dropped() const {
  absl::MutexLock lock(&mu_);
  return warnings_dropped_;
}

void RocksDbInfoLog::OpenForAppend() {
  file_ = std::fopen(path_.c_str(), "a");
  const long size =  // NOLINT(runtime/int)
      file_ != nullptr && std::fseek(file_, 0, SEEK_END) == 0 ? std::ftell(file_) : 0;
  file_bytes_ = size > 0 ? static_cast<size_t>(size) : 0;
}

void RocksDbInfoLog::Rotate() {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  std::error_code error;
  if (!std::filesystem::exists(path_, error)) return OpenForAppend();
  const std::string moved = absl::StrCat(
      dir_, "/LOG.old.", absl::FormatTime("%Y%m%dT%H%M%E6SZ", absl::Now(), absl::UTCTimeZone()));
  if (std::rename(path_.c_str(), moved.c_str()) != 0) return OpenForAppend();  // keep its lines
  // The oldest moved files past kOldFiles go (their names sort by time).
  std::vector<std::string> old;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, error)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "LOG.old.")) old.push_back(entry.path().string());
  }
  std::sort(old.begin(), old.end());
  for (size_t i = 0; i + kOldFiles < old.size(); ++i) std::filesystem::remove(old[i], error);
  OpenForAppend();
}

}  // namespace kv

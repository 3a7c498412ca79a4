// Structured logging for the kvnode process: one line per event on stderr, logfmt style:
//
//   ts=2024-05-01T12:00:00.123456Z level=info msg="kvnode serving" node_id=n1 listen=...
//
// Values are quoted when they contain spaces, quotes or '='. Lines below the process-wide
// minimum level (SetLogLevel) are dropped. Thread-safe: each line is written with one write(2).
#ifndef KV_NODE_LOG_H_
#define KV_NODE_LOG_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace kv {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
absl::string_view LogLevelName(LogLevel level);

using LogField = std::pair<absl::string_view, std::string>;

void SetLogLevel(LogLevel level);
void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});

// `text` with every byte outside printable ASCII written as \xNN: for messages that may carry
// bytes from outside (keys, flag values), so that a NUL or a control character cannot cut or
// garble them.
std::string PrintableAscii(absl::string_view text);

// The formatted line without its trailing newline (exposed for tests).
std::string FormatLogLine(LogLevel level, absl::string_view msg,
                          std::initializer_list<LogField> fields);

inline void LogInfo(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarn(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarn, msg, fields);
}
inline void LogError(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, msg, fields);
}

}  // namespace kv

#endif  // KV_NODE_LOG_H_

// Output conventions of kvctl, shared by its commands: how bytes, versions and errors appear in
// JSON and in text, and which exit code a status maps to.
//
// Keys and values are arbitrary bytes, while JSON strings must be UTF-8. A field holding bytes is
// written as "<name>": "<text>" when the bytes are valid UTF-8, and otherwise as
// "<name>_base64": "<standard base64, padded>". Causal contexts are always base64 with the
// web-safe alphabet and no padding (absl::WebSafeBase64Escape), so they can be pasted into a
// shell argument unquoted.
#ifndef KV_CLIENT_KVCTL_FORMAT_H_
#define KV_CLIENT_KVCTL_FORMAT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/kv_client.h"

namespace kv::kvctl {

// Process exit codes, documented in `kvctl --help`.
enum ExitCode : int {
  kExitOk = 0,
  kExitNotFound = 1,
  kExitUsage = 2,   // bad command line, or INVALID_ARGUMENT from the store
  kExitFailure = 3  // server or network error: every other code
};

ExitCode ExitCodeFor(const absl::Status& status);

// An INVALID_ARGUMENT status marked as a command-line mistake, so that kvctl adds a pointer to
// `kvctl help` when it prints it.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// True if `bytes` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF).
bool IsValidUtf8(absl::string_view bytes);

// Sets json[name] or json[name + "_base64"] as described above.
void SetBytesField(nlohmann::json& json, const std::string& name, absl::string_view bytes);

// Bytes for a line of text output: as-is when valid UTF-8, else "base64:<standard base64>" (also
// for bytes that start with "base64:" themselves, so that the two cannot be told apart). For
// values: a multi-line value prints as its lines, as `cat` would print it.
std::string DisplayBytes(absl::string_view bytes);
// A key for a line of text output: as DisplayBytes, and "base64:..." too when the key holds a
// control character (C0, DEL or C1), so that a key can neither break the one-key-per-line
// listing nor send escape sequences to the terminal.
std::string DisplayKey(absl::string_view key);
// `text` (a message that may echo a user's or a node's bytes) with every control character
// (C0, DEL, and C1 as UTF-8) and every byte that is not part of valid UTF-8 written as \xNN,
// so that printing it cannot move the cursor, retitle the terminal or forge output lines.
std::string TerminalSafe(absl::string_view text);

// Contexts on the command line and in output.
std::string EncodeContext(absl::string_view context);
// Accepts web-safe or standard base64, with or without padding. INVALID_ARGUMENT (a usage
// error) if `text` is not base64.
absl::StatusOr<std::string> DecodeContext(absl::string_view text);

// RFC 3339 UTC, microsecond precision; "unknown" for 0.
std::string FormatTimestamp(int64_t micros);

// {"value"|"value_base64", "tombstone", "dot", "timestamp_micros", "timestamp"}.
nlohmann::json VersionToJson(const Version& version);

// {"error": {"code": "NOT_FOUND", "message": "..."}}.
nlohmann::json ErrorToJson(const absl::Status& status);

// Serializes `json` on one line; invalid UTF-8 in any string (which SetBytesField avoids) is
// replaced rather than aborting the output.
std::string DumpJson(const nlohmann::json& json);

// Rows of cells as columns padded to their widest cell, two spaces apart, each line indented by
// two spaces.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

}  // namespace kv::kvctl

#endif  // KV_CLIENT_KVCTL_FORMAT_H_

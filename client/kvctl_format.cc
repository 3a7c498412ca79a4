#include "client/kvctl_format.h"

#include <algorithm>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/kv_client_convert.h"

namespace kv::kvctl {
namespace {

constexpr absl::string_view kUsagePayloadUrl = "type.kvstore/kvctl.UsageError";

}  // namespace

ExitCode ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    default:
      return kExitFailure;
  }
}

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayloadUrl, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayloadUrl).has_value();
}

bool IsValidUtf8(absl::string_view bytes) { return client_internal::IsValidUtf8(bytes); }

void SetBytesField(nlohmann::json& json, const std::string& name, absl::string_view bytes) {
  if (IsValidUtf8(bytes)) {
    json[name] = std::string(bytes);
  } else {
    json[name + "_base64"] = absl::Base64Escape(bytes);
  }
}

std::string DisplayBytes(absl::string_view bytes) {
  if (IsValidUtf8(bytes) && !absl::StartsWith(bytes, "base64:")) return std::string(bytes);
  return absl::StrCat("base64:", absl::Base64Escape(bytes));
}

namespace {

// The length of the valid UTF-8 sequence at the start of `text` (1 for ASCII), or 0 if none.
size_t Utf8SequenceLength(absl::string_view text) {
  const auto lead = static_cast<unsigned char>(text[0]);
  const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  if (length > text.size() || !IsValidUtf8(text.substr(0, length))) return 0;
  return length;
}

// True for C0 controls, DEL, and U+0080..U+009F (C1) encoded as UTF-8.
bool IsControl(absl::string_view sequence) {
  const auto lead = static_cast<unsigned char>(sequence[0]);
  if (sequence.size() == 1) return lead < 0x20 || lead == 0x7F;
  return sequence.size() == 2 && lead == 0xC2 && static_cast<unsigned char>(sequence[1]) < 0xA0;
}

}  // namespace

std::string DisplayKey(absl::string_view key) {
  if (absl::StartsWith(key, "base64:")) return absl::StrCat("base64:", absl::Base64Escape(key));
  for (size_t i = 0; i < key.size();) {
    const size_t length = Utf8SequenceLength(key.substr(i));
    if (length == 0 || IsControl(key.substr(i, length))) {
      return absl::StrCat("base64:", absl::Base64Escape(key));
    }
    i += length;
  }
  return std::string(key);
}

std::string TerminalSafe(absl::string_view text) {
  std::string safe;
  safe.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t length = Utf8SequenceLength(text.substr(i));
    if (length != 0 && !IsControl(text.substr(i, length))) {
      safe.append(text.data() + i, length);
      i += length;
      continue;
    }
    // An invalid byte alone, or every byte of a control character.
    const size_t escaped = length == 0 ? 1 : length;
    for (size_t k = 0; k < escaped; ++k) {
      absl::StrAppend(&safe, "\\x",
                      absl::Hex(static_cast<unsigned char>(text[i + k]), absl::kZeroPad2));
    }
    i += escaped;
  }
  return safe;
}

std::string EncodeContext(absl::string_view context) { return absl::WebSafeBase64Escape(context); }

absl::StatusOr<std::string> DecodeContext(absl::string_view text) {
  std::string decoded;
  absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (absl::WebSafeBase64Unescape(trimmed, &decoded) || absl::Base64Unescape(trimmed, &decoded)) {
    return decoded;
  }
  return UsageError(absl::StrCat("--context is not base64: '", text,
                                 "'; pass the context printed by kvctl get/put/delete"));
}

std::string FormatTimestamp(int64_t micros) {
  if (micros == 0) return "unknown";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromUnixMicros(micros),
                          absl::UTCTimeZone());
}

nlohmann::json VersionToJson(const Version& version) {
  nlohmann::json json = nlohmann::json::object();
  if (!version.tombstone) SetBytesField(json, "value", version.value);
  json["tombstone"] = version.tombstone;
  json["dot"] = version.dot;
  json["timestamp_micros"] = version.timestamp_micros;
  json["timestamp"] = FormatTimestamp(version.timestamp_micros);
  return json;
}

nlohmann::json ErrorToJson(const absl::Status& status) {
  std::string code = absl::StatusCodeToString(status.code());
  if (code.empty()) code = absl::StrCat("CODE_", static_cast<int>(status.code()));
  nlohmann::json error = {{"code", code}, {"message", std::string(status.message())}};
  return {{"error", error}};
}

std::string DumpJson(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const std::vector<std::string>& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string text;
  for (const std::vector<std::string>& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i], std::string(widths[i] - row[i].size() + 2, ' '));
    }
    absl::StrAppend(&text, "  ", absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return text;
}

}  // namespace kv::kvctl

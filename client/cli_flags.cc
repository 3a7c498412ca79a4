#include "client/cli_flags.h"

#include <cmath>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "storage/host_port.h"
#include "storage/small_file.h"

namespace kv::cli {
namespace {

std::string Canonical(absl::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c == '_') c = '-';
  }
  return out;
}

const FlagSpec* FindSpec(const std::vector<FlagSpec>& specs, absl::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (Canonical(spec.name) == name) return &spec;
  }
  return nullptr;
}

absl::Status GivenTwice(absl::string_view name) {
  return absl::InvalidArgumentError(absl::StrCat("flag --", name, " is given twice; give it once"));
}

}  // namespace

absl::StatusOr<bool> ParseBoolFlag(absl::string_view flag, absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  return absl::InvalidArgumentError(absl::StrCat("flag --", flag, " is boolean; use --", flag,
                                                 " or --", flag, "=false, not --", flag, "=",
                                                 text));
}

bool ParsedArgs::Has(absl::string_view name) const { return flags.count(Canonical(name)) > 0; }

std::optional<std::string> ParsedArgs::Get(absl::string_view name) const {
  auto it = flags.find(Canonical(name));
  if (it == flags.end()) return std::nullopt;
  return it->second;
}

bool ParsedArgs::GetBool(absl::string_view name, bool fallback) const {
  auto it = flags.find(Canonical(name));
  if (it == flags.end()) return fallback;
  return it->second == "true";
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagSpec>& specs) {
  ParsedArgs parsed;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg == "-" || !absl::StartsWith(arg, "-")) {
      parsed.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h") {
      parsed.flags["help"] = "true";
      continue;
    }
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", arg,
                       " (flags are long options like --json; put -- before an argument that "
                       "starts with -)"));
    }
    absl::string_view body = absl::string_view(arg).substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = body.find('='); eq != absl::string_view::npos) {
      inline_value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    std::string name = Canonical(body);
    const FlagSpec* spec = FindSpec(specs, name);
    bool negated = false;
    if (spec == nullptr && absl::StartsWith(name, "no")) {
      // --no-name / --noname for boolean flags.
      std::string positive(absl::StripPrefix(absl::StripPrefix(name, "no"), "-"));
      const FlagSpec* candidate = FindSpec(specs, positive);
      if (candidate != nullptr && !candidate->takes_value && !inline_value.has_value()) {
        spec = candidate;
        name = positive;
        negated = true;
      }
    }
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", body));
    }
    if (!spec->takes_value) {
      bool value = !negated;
      if (inline_value.has_value()) {
        absl::StatusOr<bool> parsed_bool = ParseBoolFlag(name, *inline_value);
        if (!parsed_bool.ok()) return parsed_bool.status();
        value = *parsed_bool;
      }
      if (parsed.flags.count(name) > 0) return GivenTwice(name);
      parsed.flags[name] = value ? "true" : "false";
      continue;
    }
    if (parsed.flags.count(name) > 0) return GivenTwice(name);
    if (inline_value.has_value()) {
      parsed.flags[name] = *inline_value;
    } else if (i + 1 < args.size() && !absl::StartsWith(args[i + 1], "--")) {
      parsed.flags[name] = args[++i];
    } else {
      // A following flag is not taken as the value: `--token --json` is a forgotten value.
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " needs a value (--", name,
                       "=VALUE, also for a value that starts with --)"));
    }
  }
  return parsed;
}

absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view flag, absl::string_view text) {
  absl::Duration duration;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds)) {
    duration = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &duration)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", text,
                     " is not a duration; use e.g. 10s, 500ms, 1m or a number of seconds"));
  }
  if (duration < absl::ZeroDuration() || duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", text, " must be a finite, non-negative duration"));
  }
  return duration;
}

absl::StatusOr<int64_t> ParseIntFlag(absl::string_view flag, absl::string_view text, int64_t min,
                                     int64_t max) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", text, " must be an integer from ", min, " to ", max));
  }
  return value;
}

absl::StatusOr<std::vector<std::string>> ParseEndpoints(absl::string_view text) {
  std::vector<std::string> endpoints;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    // gRPC target URIs go to gRPC as they are: unix:PATH, dns:///NAME:PORT, ipv4:A:P, ipv6:[A]:P.
    bool uri = false;
    for (absl::string_view scheme : {"unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:"}) {
      if (!absl::StartsWith(part, scheme)) continue;
      if (part.size() == scheme.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("endpoint '", part, "' names nothing after the scheme"));
      }
      uri = true;
    }
    if (!uri) {
      std::string host;
      int port = 0;
      if (absl::Status address = ParseHostPort(part, &host, &port); !address.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("endpoint '", part, "' is not HOST:PORT: ", address.message()));
      }
    }
    endpoints.emplace_back(part);
  }
  if (endpoints.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no endpoints in '", text, "'; use HOST:PORT[,HOST:PORT...]"));
  }
  return endpoints;
}

absl::StatusOr<std::vector<std::string>> ResolveEndpoints(const std::optional<std::string>& flag,
                                                          absl::string_view fallback) {
  if (flag.has_value()) return ParseEndpoints(*flag);
  const char* env = std::getenv("KV_ENDPOINTS");
  if (env != nullptr && !absl::StripAsciiWhitespace(env).empty()) {
    absl::StatusOr<std::vector<std::string>> endpoints = ParseEndpoints(env);
    if (!endpoints.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV_ENDPOINTS: ", endpoints.status().message()));
    }
    return endpoints;
  }
  return ParseEndpoints(fallback);
}

namespace {

// A file named by a flag or a variable, and which one named it (for messages).
struct NamedFile {
  std::string where;  // "--tls-ca" or "KV_TLS_CA"
  std::string path;
  std::string contents;
};

// The file named by --`flag` or else by $`env`; nullopt if neither is given.
absl::StatusOr<std::optional<NamedFile>> ReadNamedFile(const ParsedArgs& flags,
                                                       const std::string& flag, const char* env) {
  NamedFile file;
  if (std::optional<std::string> given = flags.Get(flag); given.has_value()) {
    file.where = "--" + flag;
    file.path = *given;
  } else if (const char* value = std::getenv(env); value != nullptr && *value != '\0') {
    file.where = env;
    file.path = value;
  } else {
    return std::nullopt;
  }
  constexpr size_t kMaxBytes = 1 << 20;  // PEM files are small
  absl::StatusOr<std::string> contents = ReadSmallRegularFile(file.path, kMaxBytes);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file.where, ": cannot read \"", file.path,
                                                   "\": ", contents.status().message()));
  }
  if (contents->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(file.where, ": \"", file.path, "\" is empty"));
  }
  file.contents = *std::move(contents);
  return file;
}

// INVALID_ARGUMENT naming the flag (or variable) and the file if `file` holds no PEM certificate
// (or, `key`, no unencrypted PEM private key). The client library would find that too, but name
// its own option.
absl::Status CheckPem(const NamedFile& file, bool key) {
  const bool ok = key ? absl::StrContains(file.contents, "PRIVATE KEY-----") &&
                            !absl::StrContains(file.contents, "ENCRYPTED")
                      : absl::StrContains(file.contents, "-----BEGIN CERTIFICATE-----");
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(file.where, ": \"", file.path, "\" holds no ",
                   key ? "unencrypted PEM private key" : "PEM certificate"));
}

}  // namespace

absl::StatusOr<TlsFiles> ResolveTls(const ParsedArgs& flags) {
  absl::StatusOr<std::optional<NamedFile>> ca = ReadNamedFile(flags, "tls-ca", "KV_TLS_CA");
  if (!ca.ok()) return ca.status();
  absl::StatusOr<std::optional<NamedFile>> cert = ReadNamedFile(flags, "tls-cert", "KV_TLS_CERT");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::optional<NamedFile>> key = ReadNamedFile(flags, "tls-key", "KV_TLS_KEY");
  if (!key.ok()) return key.status();
  TlsFiles tls;
  if (!ca->has_value()) {
    if (cert->has_value() || key->has_value()) {
      return absl::InvalidArgumentError(
          "--tls-cert and --tls-key ($KV_TLS_CERT, $KV_TLS_KEY) need --tls-ca ($KV_TLS_CA: the "
          "CA that signed the nodes' certificates)");
    }
    return tls;
  }
  if (cert->has_value() != key->has_value()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key ($KV_TLS_CERT, $KV_TLS_KEY) go together (or neither)");
  }
  if (absl::Status pem = CheckPem(**ca, false); !pem.ok()) return pem;
  tls.enabled = true;
  tls.ca_pem = (*ca)->contents;
  if (cert->has_value()) {
    if (absl::Status pem = CheckPem(**cert, false); !pem.ok()) return pem;
    if (absl::Status pem = CheckPem(**key, true); !pem.ok()) return pem;
    tls.cert_pem = (*cert)->contents;
    tls.key_pem = (*key)->contents;
  }
  return tls;
}

std::vector<FlagSpec> TlsFlagSpecs() {
  return {{"tls-ca", true}, {"tls-cert", true}, {"tls-key", true}};
}

}  // namespace kv::cli

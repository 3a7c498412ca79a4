// Command-line parsing shared by kvctl and kvbench.
//
// Flags are GNU-style long options that may appear anywhere among the positional arguments:
// `--name=value`, `--name value` (for flags that take a value), `--name` / `--no-name` /
// `--name=true|false` (for boolean flags). `-` and `_` are interchangeable in flag names
// (`--value-size` == `--value_size`). `-h` means `--help`. A lone `-` is a positional argument
// (conventionally "stdin"), and `--` ends flag parsing so that later arguments starting with `-`
// are positional.
//
// Every error is INVALID_ARGUMENT with a message that names the offending argument.
#ifndef KV_CLIENT_CLI_FLAGS_H_
#define KV_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kv::cli {

struct FlagSpec {
  std::string name;  // canonical spelling, without dashes, e.g. "page-token"
  bool takes_value = true;
};

// The result of parsing: positional arguments in order, and the flags that were given (by
// canonical name; boolean flags hold "true" or "false"; a flag given twice is an error).
class ParsedArgs {
 public:
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;

  bool Has(absl::string_view name) const;
  // The flag's value, or nullopt if it was not given.
  std::optional<std::string> Get(absl::string_view name) const;
  // A boolean flag's value, or `fallback` if it was not given.
  bool GetBool(absl::string_view name, bool fallback) const;
};

// Parses `args` (argv without the program name) against `specs`. Unknown flags, a flag given
// twice, a missing value (a following argument that starts with "--" is not taken as one: give
// such a value as --name=VALUE), or a value given to a boolean flag in a form other than
// true/false are errors.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagSpec>& specs);

// A boolean flag's value: true/1/yes or false/0/no, in any case. `flag` names the flag in the
// error message.
absl::StatusOr<bool> ParseBoolFlag(absl::string_view flag, absl::string_view text);

// "10s", "250ms", "1m30s" (absl::ParseDuration), or a bare number of seconds ("2", "0.5").
// Negative and infinite durations are errors. `flag` names the flag in error messages.
absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view flag, absl::string_view text);

// A decimal integer in [min, max].
absl::StatusOr<int64_t> ParseIntFlag(absl::string_view flag, absl::string_view text, int64_t min,
                                     int64_t max);

// Splits "host:port,host:port" into endpoints, trimming blanks and dropping empty entries.
// INVALID_ARGUMENT if none is left or an entry is not HOST:PORT as storage/host_port.h reads it
// (a port without sign or leading zero, IPv6 in brackets). gRPC target URIs (unix:PATH,
// dns:///NAME:PORT, ipv4:..., ipv6:...) are taken as they are.
absl::StatusOr<std::vector<std::string>> ParseEndpoints(absl::string_view text);

// The endpoints to use: `flag_value` if given, else $KV_ENDPOINTS if set and non-empty, else
// `fallback`.
absl::StatusOr<std::vector<std::string>> ResolveEndpoints(const std::optional<std::string>& flag,
                                                          absl::string_view fallback);

// TLS material for the client, read from files named by --tls-ca, --tls-cert and --tls-key, or
// (for a flag not given) by $KV_TLS_CA, $KV_TLS_CERT and $KV_TLS_KEY. TLS is on when a CA is
// named; a certificate needs its key and both need a CA. INVALID_ARGUMENT naming the flag (or
// variable) and the file when one cannot be read or is empty.
struct TlsFiles {
  bool enabled = false;
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};
absl::StatusOr<TlsFiles> ResolveTls(const ParsedArgs& flags);

// The global TLS flags of kvctl and kvbench, for their flag specs.
std::vector<FlagSpec> TlsFlagSpecs();

}  // namespace kv::cli

#endif  // KV_CLIENT_CLI_FLAGS_H_

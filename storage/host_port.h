// Parsing a network address "HOST:PORT", one rule for kvnode's settings (--listen, --peers,
// --seeds) and the command-line tools' endpoints alike. Kept beside small_file.h as a dependency
// both may take (the client library and tools do not include node/).
//
// The port is decimal digits only, without a sign or a leading zero, from 1 to 65535, so that
// one address has one spelling ("h:018130" and "h:+18130" would be a second spelling of
// "h:18130", which duplicate checks then miss). The host is not empty; an IPv6 host is written
// in brackets, "[::1]:7700" (without them "::1:7700" is ambiguous). Names are not resolved here.
#ifndef KV_STORAGE_HOST_PORT_H_
#define KV_STORAGE_HOST_PORT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kv {

// Sets `*host` (brackets of an IPv6 host kept) and `*port` from `address`, or returns
// INVALID_ARGUMENT saying what is wrong, without naming the setting (callers add that).
absl::Status ParseHostPort(absl::string_view address, std::string* host, int* port);

}  // namespace kv

#endif  // KV_STORAGE_HOST_PORT_H_

#include "storage/host_port.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace kv {

absl::Status ParseHostPort(absl::string_view address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return absl::InvalidArgumentError("no ':PORT'");
  const absl::string_view host_part = address.substr(0, colon);
  const absl::string_view port_part = address.substr(colon + 1);
  if (host_part.empty()) return absl::InvalidArgumentError("no host before ':PORT'");
  if (host_part.front() == '[') {
    if (host_part.size() < 3 || host_part.back() != ']' ||
        host_part.find_first_of("[]", 1) != host_part.size() - 1) {
      return absl::InvalidArgumentError("an IPv6 host is written [ADDRESS]:PORT, e.g. [::1]:7700");
    }
  } else if (host_part.find_first_of(":[]") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "a host with ':' is an IPv6 address and needs brackets, e.g. [::1]:7700");
  }
  bool digits = !port_part.empty() && port_part.size() <= 5 && port_part.front() != '0';
  int value = 0;
  for (char c : port_part) {
    digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
    if (digits) value = value * 10 + (c - '0');
  }
  if (!digits || value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port '", port_part,
                     "' is not a number from 1 to 65535 in digits only, without a leading zero"));
  }
  *host = std::string(host_part);
  *port = value;
  return absl::OkStatus();
}

}  // namespace kv

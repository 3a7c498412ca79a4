#include "node/certificate_authorizer.h"

#include <grpc/grpc_security_constants.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/security/auth_context.h"

namespace kv {
namespace {

constexpr size_t kMaxPatternBytes = 253;  // a DNS name at most

std::vector<std::string> Values(const grpc::AuthContext& auth, const char* property) {
  std::vector<std::string> values;
  for (const grpc::string_ref& value : auth.FindPropertyValues(property)) {
    values.emplace_back(value.data(), value.size());
  }
  return values;
}

}  // namespace

absl::Status CertificateAuthorizer::ValidatePattern(absl::string_view pattern) {
  if (pattern.empty() || pattern.size() > kMaxPatternBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a certificate name pattern must have 1 to ",
                                                   kMaxPatternBytes, " characters"));
  }
  for (char c : pattern) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '*' &&
        c != ':' && c != '_') {
      return absl::InvalidArgumentError(
          absl::StrCat("certificate name pattern \"", pattern,
                       "\" may hold only letters, digits, '.', '-', '_', ':' and '*'"));
    }
  }
  return absl::OkStatus();
}

bool CertificateAuthorizer::Matches(absl::string_view pattern, absl::string_view name) {
  // Backtracking over the last '*' only: linear enough for names of at most 253 characters.
  size_t p = 0, n = 0, star = absl::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && absl::ascii_tolower(static_cast<unsigned char>(pattern[p])) ==
                                         absl::ascii_tolower(static_cast<unsigned char>(name[n]))) {
      ++p;
      ++n;
    } else if (star != absl::string_view::npos && name[resume] != '.') {
      // The '*' takes one more character (never a '.') and the rest is tried again.
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

absl::Status CertificateAuthorizer::Check(const grpc::ServerContextBase& context) const {
  if (patterns_.empty()) return absl::OkStatus();
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  std::vector<std::string> names;
  if (auth != nullptr) {
    // The DNS and IP subject alternative names (not email or URI ones).
    names = Values(*auth, GRPC_PEER_DNS_PROPERTY_NAME);
    for (std::string& ip : Values(*auth, GRPC_PEER_IP_PROPERTY_NAME)) {
      names.push_back(std::move(ip));
    }
    // The common name only for a certificate without any subject alternative name: one that
    // has some (a URI, an email address) is not named by its common name, as gRPC's own host
    // name check and RFC 6125 have it.
    if (names.empty() && Values(*auth, GRPC_X509_SAN_PROPERTY_NAME).empty()) {
      names = Values(*auth, GRPC_X509_CN_PROPERTY_NAME);
    }
  }
  for (const std::string& name : names) {
    for (const std::string& pattern : patterns_) {
      if (Matches(pattern, name)) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(
      calls_, " take callers named by ", flag_, " only: the caller's certificate names ",
      names.empty() ? "no host" : absl::StrJoin(names, ", "), ", which matches none of them"));
}

}  // namespace kv

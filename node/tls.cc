#include "node/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kv {
namespace {

// The whole file, or INVALID_ARGUMENT naming `flag` and `path`.
absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  absl::StatusOr<std::string> contents = ReadSmallRegularFile(path, kMaxConfigFileBytes);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", flag, " \"", path, "\": ", contents.status().message()));
  }
  return contents;
}

// Refuses to ask for a passphrase: keys must be unencrypted (kvnode has no terminal to ask on,
// and OpenSSL's default would block on one).
int NoPassphrase(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*data*/) { return 0; }

// OpenSSL's last error, for messages.
std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no PEM block found";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
}

// The first certificate of `pem`, or INVALID_ARGUMENT.
absl::StatusOr<X509Ptr> ParseCertificate(const char* flag, const std::string& path,
                                         const std::string& pem) {
  BioPtr bio = MemoryBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr), &X509_free);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " \"", path, "\" holds no PEM certificate (", OpenSslError(), ")"));
  }
  return cert;
}

}  // namespace

absl::StatusOr<NodeTls> LoadNodeTls(const NodeConfig& config) {
  NodeTls tls;
  if (config.tls_cert_file.empty()) {
    tls.server = grpc::InsecureServerCredentials();
    return tls;
  }
  absl::StatusOr<std::string> cert = ReadPem("--tls_cert_file", config.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls_key_file", config.tls_key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> ca = ReadPem("--tls_ca_file", config.tls_ca_file);
  if (!ca.ok()) return ca.status();

  absl::StatusOr<X509Ptr> parsed_cert =
      ParseCertificate("--tls_cert_file", config.tls_cert_file, *cert);
  if (!parsed_cert.ok()) return parsed_cert.status();
  absl::StatusOr<X509Ptr> parsed_ca = ParseCertificate("--tls_ca_file", config.tls_ca_file, *ca);
  if (!parsed_ca.ok()) return parsed_ca.status();
  BioPtr key_bio = MemoryBio(*key);
  KeyPtr parsed_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr),
                    &EVP_PKEY_free);
  if (parsed_key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file \"", config.tls_key_file,
                                                   "\" holds no unencrypted PEM private key (",
                                                   OpenSslError(), ")"));
  }
  if (X509_check_private_key(parsed_cert->get(), parsed_key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file \"", config.tls_key_file,
                                                   "\" is not the key of --tls_cert_file \"",
                                                   config.tls_cert_file, "\""));
  }

  grpc::SslServerCredentialsOptions server(
      config.tls_client_auth ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  server.pem_root_certs = *ca;
  server.pem_key_cert_pairs.push_back({*key, *cert});
  tls.server = grpc::SslServerCredentials(server);

  grpc::SslCredentialsOptions peers;
  peers.pem_root_certs = *ca;
  peers.pem_private_key = *key;
  peers.pem_cert_chain = *cert;
  tls.peers = grpc::SslCredentials(peers);
  return tls;
}

}  // namespace kv

#include "node/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "node/log.h"
#include "storage/small_file.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

// The files of one installed set, inside <dir>/<generation>; gRPC reads them through the
// symbolic link <dir>/active.
constexpr char kKeyName[] = "key.pem";
constexpr char kCertName[] = "cert.pem";
constexpr char kCaName[] = "ca.pem";
constexpr char kActiveLink[] = "active";
// How often gRPC reads the installed copy (it only picks up what NodeTls installed there).
constexpr unsigned int kGrpcRefreshSeconds = 1;
// How long a replaced set stays on disk: several of gRPC's reads, so that none is still on it.
constexpr absl::Duration kRetiredSetLifetime = absl::Seconds(5);

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
using StorePtr = std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)>;
using StoreContextPtr = std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
}

// Every certificate of `pem`, in order; INVALID_ARGUMENT if it has none.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const char* flag, const std::string& path,
                                                       const std::string& pem) {
  BioPtr bio = MemoryBio(pem);
  std::vector<X509Ptr> certs;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr), &X509_free);
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " \"", path, "\" holds no PEM certificate (", OpenSslError(), ")"));
  }
  // The loop ends at the end of the input, or at a block that is not a certificate.
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 && ERR_GET_REASON(last) != PEM_R_NO_START_LINE) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " \"", path,
                                                   "\" holds a damaged block after certificate ",
                                                   certs.size(), " (", OpenSslError(), ")"));
  }
  ERR_clear_error();
  return certs;
}

std::string Subject(X509* cert) {
  char line[512];
  X509_NAME_oneline(X509_get_subject_name(cert), line, sizeof(line));
  return line;
}

absl::Time NotAfter(X509* cert) {
  struct tm parts = {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &parts) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&parts));
}

// OK if the CA certificates `cas` verify `chain` (leaf first, then intermediates) at `now`, and
// the leaf may serve as a TLS server and client certificate (a member is both to its peers).
absl::Status Verify(const std::vector<X509Ptr>& chain, const std::vector<X509Ptr>& cas,
                    absl::Time now, const NodeConfig& config) {
  const std::string cert = absl::StrCat("--tls_cert_file \"", config.tls_cert_file, "\"");
  X509* leaf = chain[0].get();
  if (X509_check_purpose(leaf, X509_PURPOSE_SSL_SERVER, 0) != 1 ||
      X509_check_purpose(leaf, X509_PURPOSE_SSL_CLIENT, 0) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(cert,
                     " is not usable both as a TLS server and as a TLS client certificate (its key "
                     "usage or extended key usage forbids one); a member is both to its peers"));
  }
  StorePtr store(X509_STORE_new(), &X509_STORE_free);
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
  StoreContextPtr context(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
  bool started = false;
  int verified = 0;
  int error = X509_V_OK;
  std::string failed_subject;
  absl::Time failed_not_after;
  if (X509_STORE_CTX_init(context.get(), store.get(), leaf, untrusted) == 1) {
    started = true;
    X509_STORE_CTX_set_time(context.get(), 0, absl::ToTimeT(now));
    verified = X509_verify_cert(context.get());
    error = X509_STORE_CTX_get_error(context.get());
    if (X509* failed = X509_STORE_CTX_get_current_cert(context.get()); failed != nullptr) {
      failed_subject = Subject(failed);
      failed_not_after = NotAfter(failed);
    }
  }
  context.reset();          // before the stack it points to
  sk_X509_free(untrusted);  // the certificates stay owned by `chain`
  ERR_clear_error();
  if (verified == 1) return absl::OkStatus();
  if (!started) return absl::InternalError("OpenSSL could not start verifying the certificate");
  if (error == X509_V_ERR_CERT_HAS_EXPIRED) {
    return absl::InvalidArgumentError(absl::StrCat(cert, ": ", failed_subject, " expired at ",
                                                   absl::FormatTime(failed_not_after)));
  }
  if (error == X509_V_ERR_CERT_NOT_YET_VALID) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert, ": ", failed_subject, " is not valid yet"));
  }
  return absl::InvalidArgumentError(absl::StrCat(cert, " is not verified by --tls_ca_file \"",
                                                 config.tls_ca_file, "\" (",
                                                 X509_verify_cert_error_string(error), ")"));
}

// Writes `contents` to a new file `path` with `mode` and modification time `mtime`.
absl::Status WriteNewFile(const std::string& path, const std::string& contents, mode_t mode,
                          int64_t mtime) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", strerror(errno)));
  }
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      close(fd);
      return absl::InternalError(absl::StrCat("cannot write ", path, ": ", strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  // gRPC compares modification times (in seconds) before and after reading the key and the
  // certificate: distinct times per set make a read that straddles a switch start over.
  const struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
  const int timed = futimens(fd, times) == 0 ? 0 : errno;
  const int closed = close(fd) == 0 ? 0 : errno;
  if (timed != 0 || closed != 0) {
    return absl::InternalError(
        absl::StrCat("cannot finish ", path, ": ", strerror(timed != 0 ? timed : closed)));
  }
  return absl::OkStatus();
}

// The three files of `config` as they are, each read whole; INVALID_ARGUMENT naming the flag and
// file of one that cannot be read.
absl::StatusOr<TlsFiles> ReadContents(const NodeConfig& config) {
  TlsFiles files;
  absl::StatusOr<std::string> cert = ReadPem("--tls_cert_file", config.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls_key_file", config.tls_key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> ca = ReadPem("--tls_ca_file", config.tls_ca_file);
  if (!ca.ok()) return ca.status();
  files.cert_pem = *std::move(cert);
  files.key_pem = *std::move(key);
  files.ca_pem = *std::move(ca);
  return files;
}

// `files` (contents only) checked as ReadTlsFiles describes, with subject and expiry filled in.
absl::StatusOr<TlsFiles> Check(TlsFiles files, const NodeConfig& config, absl::Time now) {
  absl::StatusOr<std::vector<X509Ptr>> chain =
      ParseCertificates("--tls_cert_file", config.tls_cert_file, files.cert_pem);
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::vector<X509Ptr>> cas =
      ParseCertificates("--tls_ca_file", config.tls_ca_file, files.ca_pem);
  if (!cas.ok()) return cas.status();
  BioPtr key_bio = MemoryBio(files.key_pem);
  KeyPtr parsed_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr),
                    &EVP_PKEY_free);
  if (parsed_key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file \"", config.tls_key_file,
                                                   "\" holds no unencrypted PEM private key (",
                                                   OpenSslError(), ")"));
  }
  X509* leaf = chain->front().get();
  if (X509_check_private_key(leaf, parsed_key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file \"", config.tls_key_file,
                                                   "\" is not the key of --tls_cert_file \"",
                                                   config.tls_cert_file, "\""));
  }
  if (absl::Status verified = Verify(*chain, *cas, now, config); !verified.ok()) return verified;
  files.subject = Subject(leaf);
  files.not_after = NotAfter(leaf);
  return files;
}

}  // namespace

absl::StatusOr<TlsFiles> ReadTlsFiles(const NodeConfig& config, absl::Time now) {
  absl::StatusOr<TlsFiles> files = ReadContents(config);
  if (!files.ok()) return files.status();
  return Check(*std::move(files), config, now);
}

NodeTls::NodeTls() : server_(grpc::InsecureServerCredentials()) {}

NodeTls::NodeTls(NodeConfig config, std::string dir)
    : config_(std::move(config)), dir_(std::move(dir)) {}

absl::StatusOr<std::unique_ptr<NodeTls>> NodeTls::Start(const NodeConfig& config, TlsFiles files,
                                                        const std::string& dir) {
  std::unique_ptr<NodeTls> tls(new NodeTls(config, dir));
  std::error_code error;
  std::filesystem::remove_all(dir, error);  // the sets a previous run installed
  if (!error) std::filesystem::create_directory(dir, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot prepare \"", dir, "\" for the node's TLS files: ", error.message()));
  }
  if (chmod(dir.c_str(), 0700) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot make \"", dir, "\" private (mode 0700): ", strerror(errno)));
  }
  {
    absl::MutexLock lock(&tls->mu_);
    if (absl::Status installed = tls->Install(files); !installed.ok()) return installed;
    tls->current_ = std::move(files);
  }

  const std::string active = absl::StrCat(dir, "/", kActiveLink, "/");
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      active + kKeyName, active + kCertName, active + kCaName, kGrpcRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions server(provider);
  server.watch_root_certs();
  server.watch_identity_key_cert_pairs();
  server.set_cert_request_type(config.tls_client_auth
                                   ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  tls->server_ = grpc::experimental::TlsServerCredentials(server);
  grpc::experimental::TlsChannelCredentialsOptions peers;
  peers.set_certificate_provider(provider);
  peers.watch_root_certs();
  peers.watch_identity_key_cert_pairs();
  peers.set_verify_server_certs(true);
  tls->peers_ = grpc::experimental::TlsCredentials(peers);
  if (tls->server_ == nullptr || tls->peers_ == nullptr) {
    return absl::InternalError("gRPC could not build TLS credentials from the checked files");
  }
  if (config.tls_reload_interval > absl::ZeroDuration()) {
    tls->reloader_ = std::thread([t = tls.get()] { t->ReloadLoop(); });
  }
  return tls;
}

NodeTls::~NodeTls() {
  stop_.Notify();
  if (reloader_.joinable()) reloader_.join();
}

absl::Status NodeTls::Install(const TlsFiles& files) {
  const uint64_t generation = generation_ + 1;
  const std::string name = absl::StrCat("set-", generation);
  const std::string set = absl::StrCat(dir_, "/", name);
  if (mkdir(set.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot create ", set, ": ", strerror(errno)));
  }
  const int64_t mtime = std::max<int64_t>(absl::ToUnixSeconds(absl::Now()), last_mtime_ + 1);
  absl::Status written = WriteNewFile(absl::StrCat(set, "/", kKeyName), files.key_pem, 0600, mtime);
  if (written.ok()) {
    written = WriteNewFile(absl::StrCat(set, "/", kCertName), files.cert_pem, 0644, mtime);
  }
  if (written.ok()) {
    written = WriteNewFile(absl::StrCat(set, "/", kCaName), files.ca_pem, 0644, mtime);
  }
  // Switch the key and the certificate at once: a new link, renamed over the old one. (gRPC
  // reads the CA file on its own, so for up to a second it may pair the new CA with the old key
  // and certificate or the other way round: harmless when a new CA comes as a bundle first.)
  const std::string link = absl::StrCat(dir_, "/", kActiveLink);
  const std::string next_link = absl::StrCat(link, ".next");
  unlink(next_link.c_str());
  if (written.ok() && (symlink(name.c_str(), next_link.c_str()) != 0 ||
                       rename(next_link.c_str(), link.c_str()) != 0)) {
    written = absl::InternalError(absl::StrCat("cannot switch ", link, ": ", strerror(errno)));
  }
  std::error_code error;
  if (!written.ok()) {
    std::filesystem::remove_all(set, error);
    return written;
  }
  // Keep the set just replaced (gRPC may be reading it this very moment; a later reload, or an
  // unchanged one once it has been retired long enough, drops it); drop the one before, if
  // still there.
  if (generation >= 2) {
    std::filesystem::remove_all(absl::StrCat(dir_, "/set-", generation - 2), error);
    retired_at_ = SteadyNow();
  }
  generation_ = generation;
  last_mtime_ = mtime;
  return absl::OkStatus();
}

absl::Status NodeTls::ReloadNow() {
  if (!enabled()) return absl::OkStatus();
  // One reload at a time, so that an older read is never installed after a newer one.
  absl::MutexLock reloading(&reload_mu_);
  absl::StatusOr<TlsFiles> files = ReadContents(config_);
  std::optional<TlsFiles> read;  // the contents as read, to tell one refused set from another
  if (files.ok()) {
    read = *files;
    {
      absl::MutexLock lock(&mu_);
      if (files->SameContents(current_)) {
        // Nothing to check (a certificate that expires in use is for the expiry gauge), and
        // whatever was refused has been put back.
        last_refusal_.clear();
        refused_set_.reset();
        if (retired_at_.has_value() && SteadyNow() - *retired_at_ >= kRetiredSetLifetime) {
          std::error_code error;
          std::filesystem::remove_all(absl::StrCat(dir_, "/set-", generation_ - 1), error);
          if (!error) retired_at_.reset();
        }
        return absl::OkStatus();
      }
    }
    files = Check(*std::move(files), config_, absl::Now());
  }
  absl::MutexLock lock(&mu_);
  absl::Status installed = files.status();
  if (installed.ok()) installed = Install(*files);
  if (!installed.ok()) {
    // Each set of files refused counts once, however many reloads read it again (two different
    // bad sets count twice, even when refused for the same reason).
    const bool same_set = installed.message() == last_refusal_ &&
                          read.has_value() == refused_set_.has_value() &&
                          (!read.has_value() || read->SameContents(*refused_set_));
    if (!same_set) {
      ++refused_;
      last_refusal_ = std::string(installed.message());
      refused_set_ = std::move(read);
      LogWarn("TLS files changed but were refused; new connections keep the certificate in use",
              {{"reason", last_refusal_},
               {"in_use", current_.subject},
               {"in_use_expires", absl::FormatTime(current_.not_after)}});
    }
    return installed;
  }
  current_ = *std::move(files);
  ++installed_;
  last_refusal_.clear();
  refused_set_.reset();
  LogInfo("TLS files changed: new connections use the new certificate",
          {{"subject", current_.subject}, {"expires", absl::FormatTime(current_.not_after)}});
  return absl::OkStatus();
}

NodeTls::Stats NodeTls::stats() const {
  absl::MutexLock lock(&mu_);
  return Stats{current_.subject, current_.not_after, installed_, refused_, last_refusal_};
}

void NodeTls::ReloadLoop() {
  while (!stop_.WaitForNotificationWithTimeout(config_.tls_reload_interval)) {
    ReloadNow().IgnoreError();  // logged and counted by ReloadNow
  }
}

}  // namespace kv

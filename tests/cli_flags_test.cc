// The command-line parsing shared by kvctl and kvbench (client/cli_flags.h): bad flags are errors
// that name the flag, never silently taken another way.
#include "client/cli_flags.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace kv::cli {
namespace {

const std::vector<FlagSpec> kSpecs = {{"token"}, {"commit", false}, {"endpoints"}};

TEST(ParseArgsTest, ValuesBooleansAndPositionals) {
  absl::StatusOr<ParsedArgs> parsed =
      ParseArgs({"put", "--token", "t1", "k", "--commit=false", "--endpoints=a:1"}, kSpecs);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->positional, (std::vector<std::string>{"put", "k"}));
  EXPECT_EQ(parsed->Get("token"), "t1");
  EXPECT_FALSE(parsed->GetBool("commit", true));
  EXPECT_TRUE(ParseArgs({"--commit"}, kSpecs)->GetBool("commit", false));
  EXPECT_FALSE(ParseArgs({"--no-commit"}, kSpecs)->GetBool("commit", true));
  // A value that starts with -- is given inline.
  EXPECT_EQ(ParseArgs({"--token=--odd"}, kSpecs)->Get("token"), "--odd");
}

TEST(ParseArgsTest, FlagGivenTwiceIsAnError) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--token=a", "--token=b"},
        std::vector<std::string>{"--commit", "--no-commit"},
        std::vector<std::string>{"--endpoints=a:1", "--endpoints", "b:2"}}) {
    absl::StatusOr<ParsedArgs> parsed = ParseArgs(args, kSpecs);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << args[0];
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), "given twice")) << parsed.status();
  }
}

TEST(ParseArgsTest, FollowingFlagIsNotTakenAsAValue) {
  absl::StatusOr<ParsedArgs> parsed = ParseArgs({"--token", "--commit"}, kSpecs);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(parsed.status().message(), "--token needs a value"))
      << parsed.status();
  EXPECT_FALSE(ParseArgs({"--token"}, kSpecs).ok());
  // A single dash is an ordinary value (kvctl reads stdin for "-").
  EXPECT_EQ(ParseArgs({"--token", "-"}, kSpecs)->Get("token"), "-");
}

TEST(ParseEndpointsTest, NeedsHostAndAPortInRange) {
  absl::StatusOr<std::vector<std::string>> ok =
      ParseEndpoints(" 127.0.0.1:7700, [::1]:7701,,host:65535,unix:/tmp/kv.sock,dns:///kv:7700");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, (std::vector<std::string>{"127.0.0.1:7700", "[::1]:7701", "host:65535",
                                           "unix:/tmp/kv.sock", "dns:///kv:7700"}));
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:99999", "host:notaport", "[::1]", ":7700", ",", "",
                          // One spelling per address, IPv6 in brackets; a URI names something.
                          "h:07700", "h:+7700", "::1", "::1:7700", "[::1:7700", "unix:", "dns:"}) {
    absl::StatusOr<std::vector<std::string>> parsed = ParseEndpoints(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// A file with `contents` in a fresh temporary directory, removed with it.
class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/kv-cli-tls.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    unsetenv("KV_TLS_CA");
    unsetenv("KV_TLS_CERT");
    unsetenv("KV_TLS_KEY");
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    unsetenv("KV_TLS_CA");
  }
  std::string Write(const std::string& name, const std::string& contents) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << contents;
    return path;
  }
  static absl::StatusOr<TlsFiles> Resolve(const std::vector<std::string>& args) {
    absl::StatusOr<ParsedArgs> parsed = ParseArgs(args, TlsFlagSpecs());
    if (!parsed.ok()) return parsed.status();
    return ResolveTls(*parsed);
  }
  std::string dir_;
};

// PEM-shaped contents (what the tools check before the client library sees them).
constexpr char kCa[] = "-----BEGIN CERTIFICATE-----\nCA\n";
constexpr char kCert[] = "-----BEGIN CERTIFICATE-----\nCERT\n";
constexpr char kKey[] = "-----BEGIN PRIVATE KEY-----\nKEY\n";

TEST_F(TlsFilesTest, FlagsOrEnvironmentNameTheFiles) {
  const std::string ca = Write("ca.pem", kCa);
  const std::string cert = Write("c.pem", kCert);
  const std::string key = Write("c.key", kKey);
  absl::StatusOr<TlsFiles> none = Resolve({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->enabled);

  absl::StatusOr<TlsFiles> full =
      Resolve({"--tls-ca=" + ca, "--tls_cert=" + cert, "--tls-key", key});
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->enabled);
  EXPECT_EQ(full->ca_pem, kCa);
  EXPECT_EQ(full->cert_pem, kCert);
  EXPECT_EQ(full->key_pem, kKey);

  setenv("KV_TLS_CA", ca.c_str(), 1);
  absl::StatusOr<TlsFiles> from_env = Resolve({});
  ASSERT_TRUE(from_env.ok()) << from_env.status();
  EXPECT_TRUE(from_env->enabled);
  EXPECT_EQ(from_env->ca_pem, kCa);
  EXPECT_TRUE(from_env->cert_pem.empty());
  // A flag wins over the variable.
  const std::string other = Write("other.pem", std::string(kCa) + "OTHER");
  EXPECT_EQ(Resolve({"--tls-ca=" + other})->ca_pem, std::string(kCa) + "OTHER");
}

TEST_F(TlsFilesTest, IncompleteOrUnreadableSettingsAreErrors) {
  const std::string ca = Write("ca.pem", kCa);
  const std::string cert = Write("c.pem", kCert);
  const std::string key = Write("c.key", kKey);
  const std::string empty = Write("empty.pem", "");
  const std::string text = Write("text.pem", "not a certificate");
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--tls-cert=" + cert, "--tls-key=" + key}, "need --tls-ca"},
           {{"--tls-ca=" + ca, "--tls-cert=" + cert}, "go together"},
           {{"--tls-ca=" + ca, "--tls-key=" + key}, "go together"},
           {{"--tls-ca=" + dir_ + "/absent.pem"}, "cannot read"},
           {{"--tls-ca=" + empty}, "is empty"},
           {{"--tls-ca=" + dir_}, "--tls-ca"},
           // Not PEM: named by the flag that gave it.
           {{"--tls-ca=" + text}, "--tls-ca: \""},
           {{"--tls-ca=" + ca, "--tls-cert=" + key, "--tls-key=" + key}, "--tls-cert: \""},
           {{"--tls-ca=" + ca, "--tls-cert=" + cert, "--tls-key=" + cert},
            "holds no unencrypted PEM private key"},
       }) {
    absl::StatusOr<TlsFiles> tls = Resolve(c.args);
    ASSERT_FALSE(tls.ok()) << c.args.back();
    EXPECT_EQ(tls.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(tls.status().message(), c.message)) << tls.status();
  }
  setenv("KV_TLS_CA", (dir_ + "/absent.pem").c_str(), 1);
  absl::StatusOr<TlsFiles> bad_env = Resolve({});
  ASSERT_FALSE(bad_env.ok());
  EXPECT_TRUE(absl::StrContains(bad_env.status().message(), "KV_TLS_CA")) << bad_env.status();
}

}  // namespace
}  // namespace kv::cli

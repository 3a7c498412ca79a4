// Runs the real kvctl binary against a real single-node kvnode on loopback and checks what a user
// would see: values round-trip from arguments, files and stdin; --json prints one parseable
// object with the documented fields on every command (errors included); endpoints come from the
// flag or KV_ENDPOINTS; exit codes are 0/1/2/3 as documented; concurrent puts show as siblings
// and a put with the context resolves them; a single node is a cluster of one, where every write
// is REPLICATED at once (describe-write, put/delete --wait) and cluster status lists one member.
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::kv::testing::CommandResult;
using ::kv::testing::NodeProcess;
using ::kv::testing::RunCommand;
using ::kv::testing::TempDir;

class KvctlProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    NodeProcess::Options options;
    options.data_dir = dir_->Sub("n1");
    absl::StatusOr<NodeProcess> node = NodeProcess::Start(options);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = new NodeProcess(*std::move(node));
  }
  static void TearDownTestSuite() {
    delete node_;
    node_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(node_, nullptr) << "kvnode did not start"; }

  // Runs kvctl against the node with `args` (the command and its flags).
  static CommandResult Kvctl(const std::vector<std::string>& args,
                             const std::string& stdin_data = "",
                             const std::map<std::string, std::string>& env = {}) {
    std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + node_->endpoint()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, stdin_data, absl::Seconds(30), env);
  }

  // Runs kvctl with --json and parses stdout, which must be exactly one JSON object.
  static nlohmann::json KvctlJson(const std::vector<std::string>& args, int expected_exit,
                                  const std::string& stdin_data = "") {
    std::vector<std::string> with_json = args;
    with_json.push_back("--json");
    const CommandResult result = Kvctl(with_json, stdin_data);
    EXPECT_EQ(result.exit_code, expected_exit) << result.out << result.err;
    nlohmann::json json = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(json.is_object()) << "stdout is not one JSON object: " << result.out;
    return json;
  }

  static TempDir* dir_;
  static NodeProcess* node_;
};

TempDir* KvctlProcessTest::dir_ = nullptr;
NodeProcess* KvctlProcessTest::node_ = nullptr;

TEST_F(KvctlProcessTest, PutThenGetPrintsValueAndContext) {
  CommandResult put = Kvctl({"put", "plain/k", "hello world"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_TRUE(absl::StrContains(put.out, "context: ")) << put.out;

  CommandResult get = Kvctl({"get", "plain/k"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_TRUE(absl::StrContains(get.out, "value: hello world")) << get.out;
  EXPECT_TRUE(absl::StrContains(get.out, "context: ")) << get.out;
  EXPECT_FALSE(absl::StrContains(get.out, "siblings")) << get.out;
}

TEST_F(KvctlProcessTest, JsonOutputOfEveryCommandHasItsFields) {
  nlohmann::json put = KvctlJson({"put", "json/k", "v1"}, 0);
  EXPECT_EQ(put.value("key", ""), "json/k");
  EXPECT_FALSE(put.value("write_id", "").empty()) << put;
  EXPECT_FALSE(put.value("context", "").empty()) << put;
  EXPECT_EQ(put.value("deduplicated", true), false);

  nlohmann::json get = KvctlJson({"get", "json/k"}, 0);
  ASSERT_TRUE(get["siblings"].is_array()) << get;
  ASSERT_EQ(get["siblings"].size(), 1u) << get;
  EXPECT_EQ(get["siblings"][0].value("value", ""), "v1");
  EXPECT_FALSE(get["siblings"][0].value("dot", "").empty()) << get;
  EXPECT_EQ(get.value("sibling_count", 0), 1);
  EXPECT_FALSE(get.value("context", "").empty()) << get;

  nlohmann::json list = KvctlJson({"list", "json/"}, 0);
  ASSERT_TRUE(list["keys"].is_array()) << list;
  ASSERT_EQ(list["keys"].size(), 1u) << list;
  EXPECT_EQ(list["keys"][0].value("key", ""), "json/k");
  EXPECT_EQ(list.value("count", 0), 1);

  nlohmann::json describe = KvctlJson({"describe-key", "json/k"}, 0);
  ASSERT_TRUE(describe["replicas"].is_array()) << describe;
  ASSERT_FALSE(describe["replicas"].empty()) << describe;
  EXPECT_TRUE(describe["converged"].is_boolean()) << describe;
  const nlohmann::json& replica = describe["replicas"][0];
  EXPECT_FALSE(replica.value("node_id", "").empty()) << describe;
  EXPECT_TRUE(replica.value("reachable", false)) << describe;
  ASSERT_TRUE(replica["versions"].is_array()) << describe;
  ASSERT_EQ(replica["versions"].size(), 1u) << describe;
  EXPECT_EQ(replica["versions"][0].value("value", ""), "v1");

  nlohmann::json del = KvctlJson({"delete", "json/k"}, 0);
  EXPECT_EQ(del.value("deleted", false), true) << del;
  EXPECT_FALSE(del.value("write_id", "").empty()) << del;

  nlohmann::json missing = KvctlJson({"get", "json/k"}, 1);
  EXPECT_EQ(missing["error"].value("code", ""), "NOT_FOUND") << missing;
  EXPECT_FALSE(missing["error"].value("message", "").empty()) << missing;
}

TEST_F(KvctlProcessTest, ValueFromFileAndStdin) {
  const std::string file = dir_->Sub("value.txt");
  kv::testing::WriteFile(file, "from a file\nsecond line");
  ASSERT_EQ(Kvctl({"put", "src/file", "--file", file}).exit_code, 0);
  EXPECT_EQ(KvctlJson({"get", "src/file"}, 0)["siblings"][0].value("value", ""),
            "from a file\nsecond line");

  ASSERT_EQ(Kvctl({"put", "src/dash", "-"}, "piped with dash").exit_code, 0);
  EXPECT_EQ(KvctlJson({"get", "src/dash"}, 0)["siblings"][0].value("value", ""), "piped with dash");

  ASSERT_EQ(Kvctl({"put", "src/implicit"}, "piped, no VALUE").exit_code, 0);
  EXPECT_EQ(KvctlJson({"get", "src/implicit"}, 0)["siblings"][0].value("value", ""),
            "piped, no VALUE");

  CommandResult missing_file = Kvctl({"put", "src/nofile", "--file", dir_->Sub("absent")});
  EXPECT_EQ(missing_file.exit_code, 2) << missing_file.err;
  CommandResult both = Kvctl({"put", "src/both", "value", "--file", file});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  CommandResult directory = Kvctl({"put", "src/dir", "--file", dir_->path()});
  EXPECT_EQ(directory.exit_code, 2) << directory.err;
  EXPECT_TRUE(absl::StrContains(directory.err, "directory")) << directory.err;
  // An endless input stops at what a request may carry, at once.
  CommandResult endless = Kvctl({"put", "src/endless", "--file", "/dev/zero"});
  EXPECT_EQ(endless.exit_code, 2) << endless.err;
  EXPECT_TRUE(absl::StrContains(endless.err, "more than 64 MiB")) << endless.err;
  EXPECT_EQ(Kvctl({"get", "src/endless"}).exit_code, 1);
  // So is a stdin that cannot be read (a local mistake, not a server error).
  CommandResult stdin_directory =
      RunCommand({"/bin/sh", "-c",
                  absl::StrCat(KVCTL_PATH, " --endpoints=", node_->endpoint(), " put src/dir - < ",
                               dir_->path())});
  EXPECT_EQ(stdin_directory.exit_code, 2) << stdin_directory.err;
  EXPECT_TRUE(absl::StrContains(stdin_directory.err, "cannot read stdin")) << stdin_directory.err;
  EXPECT_EQ(KvctlJson({"get", "src/dir"}, 1)["error"].value("code", ""), "NOT_FOUND");
}

TEST_F(KvctlProcessTest, NonUtf8ValueIsBase64InJson) {
  const std::string binary("\xff\x00\x01\xfe", 4);
  ASSERT_EQ(Kvctl({"put", "bin/k", "-"}, binary).exit_code, 0);
  nlohmann::json get = KvctlJson({"get", "bin/k"}, 0);
  const nlohmann::json& sibling = get["siblings"][0];
  EXPECT_FALSE(sibling.contains("value")) << get;
  std::string decoded;
  ASSERT_TRUE(absl::Base64Unescape(sibling.value("value_base64", ""), &decoded)) << get;
  EXPECT_EQ(decoded, binary);
}

TEST_F(KvctlProcessTest, ControlCharactersInKeysAndMessagesReachNoTerminal) {
  // A key with an escape sequence and a newline: listed and named as base64, on one line.
  const std::string key = "ctl/\x1b]0;title\x07\nforged-line";
  const CommandResult put = Kvctl({"put", key, "v"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_TRUE(
      absl::StartsWith(put.out, "stored 1 byte under base64:" + absl::Base64Escape(key) + "\n"))
      << put.out;
  const CommandResult list = Kvctl({"list", "ctl/"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(list.out, "base64:" + absl::Base64Escape(key) + "\n");
  // JSON escapes it as JSON does, and keeps the bytes.
  nlohmann::json json = KvctlJson({"list", "ctl/"}, 0);
  ASSERT_EQ(json["keys"].size(), 1u) << json;
  EXPECT_EQ(json["keys"][0].value("key", ""), key) << json;
  // A key that reads like that display prints in base64 too: the two cannot be confused.
  const std::string lookalike = "base64:" + absl::Base64Escape(key);
  ASSERT_EQ(Kvctl({"put", lookalike, "v"}).exit_code, 0);
  const CommandResult both = Kvctl({"list", "base64:"});
  EXPECT_EQ(both.out, "base64:" + absl::Base64Escape(lookalike) + "\n") << both.out;
  // A key of printable UTF-8 (a tab is a control character, an accent is not) prints as-is.
  EXPECT_TRUE(absl::StartsWith(Kvctl({"put", "ctl/caf\xc3\xa9", "v"}).out,
                               "stored 1 byte under ctl/caf\xc3\xa9\n"));

  // An error message that echoes what was typed shows its control bytes escaped, on one line.
  const CommandResult bad = Kvctl({"put", "k", "v", "--context=\x1b[2J\r\xc2\x9b\xff"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err.find('\x1b'), std::string::npos) << bad.err;
  EXPECT_EQ(bad.err.find('\r'), std::string::npos) << bad.err;
  EXPECT_EQ(bad.err.find("\xc2\x9b"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("'\\x1b[2J\\x0d\\xc2\\x9b\\xff'"), std::string::npos) << bad.err;
}

// Text fields of the API (tokens, page tokens, write and operation ids) are UTF-8: bytes that
// are not are refused before anything is sent (the node could not parse the request and
// answered UNIMPLEMENTED with no message, exit 3).
TEST_F(KvctlProcessTest, ArgumentsThatMustBeTextAndAreNotAreUsageErrors) {
  const std::string bad = "\xff\xfe";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"put", "utf8/k", "v", "--token=" + bad},
        {"delete", "utf8/k", "--token=" + bad},
        {"list", "--page-token=" + bad},
        {"describe-write", bad},
        {"operation", "get", bad}}) {
    const CommandResult result = Kvctl(args);
    EXPECT_EQ(result.exit_code, 2) << args[0] << ": " << result.err;
    EXPECT_TRUE(absl::StrContains(result.err, "is not valid UTF-8")) << result.err;
    EXPECT_FALSE(absl::StrContains(result.err, "libprotobuf")) << result.err;
  }
  EXPECT_EQ(Kvctl({"get", "utf8/k"}).exit_code, 1);  // nothing was stored
}

// With stdin closed, put without a value is a usage error, not a read of whatever file took
// descriptor 0.
TEST_F(KvctlProcessTest, APutWithStdinClosedAsksForAValue) {
  const CommandResult result = RunCommand(
      {"/bin/sh", "-c",
       absl::StrCat("exec \"$0\" --endpoints=", node_->endpoint(), " put stdin/k <&-"), KVCTL_PATH},
      "", absl::Seconds(30));
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "stdin, which is closed")) << result.err;
  EXPECT_EQ(Kvctl({"get", "stdin/k"}).exit_code, 1);
}

TEST_F(KvctlProcessTest, DeleteMakesKeyNotFoundAndDescribeKeyShowsTombstone) {
  ASSERT_EQ(Kvctl({"put", "del/k", "doomed"}).exit_code, 0);
  CommandResult del = Kvctl({"delete", "del/k"});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  CommandResult get = Kvctl({"get", "del/k"});
  EXPECT_EQ(get.exit_code, 1) << get.out << get.err;

  nlohmann::json describe = KvctlJson({"describe-key", "del/k"}, 0);
  bool saw_tombstone = false;
  for (const nlohmann::json& replica : describe["replicas"]) {
    for (const nlohmann::json& version : replica["versions"]) {
      saw_tombstone = saw_tombstone || version.value("tombstone", false);
    }
  }
  EXPECT_TRUE(saw_tombstone) << describe;
  CommandResult text = Kvctl({"describe-key", "del/k"});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(text.out, "tombstone")) << text.out;
}

TEST_F(KvctlProcessTest, ListPagesWithTokensOrAll) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(Kvctl({"put", absl::StrCat("page/", i), "x"}).exit_code, 0);
  }
  nlohmann::json first = KvctlJson({"list", "page/", "--limit=2"}, 0);
  ASSERT_EQ(first["keys"].size(), 2u) << first;
  EXPECT_EQ(first["keys"][0].value("key", ""), "page/0");
  const std::string token = first.value("next_page_token", "");
  ASSERT_FALSE(token.empty()) << first;

  nlohmann::json second = KvctlJson({"list", "page/", "--limit=2", "--page-token=" + token}, 0);
  ASSERT_EQ(second["keys"].size(), 2u) << second;
  EXPECT_EQ(second["keys"][0].value("key", ""), "page/2");

  nlohmann::json all = KvctlJson({"list", "page/", "--limit=2", "--all"}, 0);
  ASSERT_EQ(all["keys"].size(), 5u) << all;
  EXPECT_EQ(all["keys"][4].value("key", ""), "page/4");
  EXPECT_EQ(all.value("next_page_token", "x"), "");

  CommandResult text = Kvctl({"list", "page/", "--all"});
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_EQ(text.out, "page/0\npage/1\npage/2\npage/3\npage/4\n");
}

TEST_F(KvctlProcessTest, EndpointsComeFromEnvironmentUnlessTheFlagIsGiven) {
  const std::map<std::string, std::string> env = {{"KV_ENDPOINTS", node_->endpoint()}};
  CommandResult put =
      RunCommand({KVCTL_PATH, "put", "env/k", "via env"}, "", absl::Seconds(30), env);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  CommandResult get = RunCommand({KVCTL_PATH, "get", "env/k"}, "", absl::Seconds(30), env);
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_TRUE(absl::StrContains(get.out, "via env")) << get.out;

  // The flag wins over the environment.
  const std::string dead = absl::StrCat("127.0.0.1:", kv::testing::PickFreePort());
  CommandResult flag_wins =
      RunCommand({KVCTL_PATH, "--endpoints=" + dead, "--timeout=300ms", "get", "env/k"}, "",
                 absl::Seconds(30), env);
  EXPECT_EQ(flag_wins.exit_code, 3) << flag_wins.out << flag_wins.err;
}

TEST_F(KvctlProcessTest, ADeadEndpointInTheListFailsOverToALiveOne) {
  const std::string dead = absl::StrCat("127.0.0.1:", kv::testing::PickFreePort());
  const std::string endpoints = dead + "," + node_->endpoint();
  for (int i = 0; i < 3; ++i) {  // round robin starts on either endpoint
    CommandResult put = RunCommand({KVCTL_PATH, "--endpoints=" + endpoints, "--timeout=5s", "put",
                                    absl::StrCat("failover/", i), "v"});
    EXPECT_EQ(put.exit_code, 0) << put.err;
  }
}

TEST_F(KvctlProcessTest, GlobalFlagsMayFollowTheCommand) {
  ASSERT_EQ(Kvctl({"put", "order/k", "v"}).exit_code, 0);
  CommandResult result = RunCommand(
      {KVCTL_PATH, "get", "order/k", "--json", "--endpoints", node_->endpoint(), "--timeout=5s"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["siblings"][0].value("value", ""), "v");
}

TEST_F(KvctlProcessTest, ExitCodes) {
  EXPECT_EQ(Kvctl({"get", "exit/never-written"}).exit_code, 1);

  CommandResult bad_flag = Kvctl({"get", "exit/k", "--frobnicate"});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad_flag.err, "--frobnicate")) << bad_flag.err;
  EXPECT_TRUE(absl::StrContains(bad_flag.err, "kvctl help")) << bad_flag.err;

  CommandResult unknown = Kvctl({"frobnicate", "exit/k"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(unknown.err, "unknown command")) << unknown.err;

  EXPECT_EQ(Kvctl({"get"}).exit_code, 2);                         // missing KEY
  EXPECT_EQ(Kvctl({"get", "exit/k", "--limit=3"}).exit_code, 2);  // not a flag of get
  EXPECT_EQ(Kvctl({"put", "exit/k", "v", "--context=!!!"}).exit_code, 2);
  // An empty context (a script's unset variable) is refused rather than taken as none.
  const testing::CommandResult empty_context = Kvctl({"put", "exit/k", "v", "--context="});
  EXPECT_EQ(empty_context.exit_code, 2);
  EXPECT_NE(empty_context.err.find("--context is empty"), std::string::npos) << empty_context.err;
  EXPECT_EQ(Kvctl({"delete", "exit/k", "--context= "}).exit_code, 2);
  EXPECT_EQ(Kvctl({}).exit_code, 2);  // no command
  // A flag given twice, or a value-taking flag followed by another flag, is not guessed at.
  EXPECT_EQ(Kvctl({"put", "exit/k", "v", "--w=1", "--w=all"}).exit_code, 2);
  CommandResult swallowed = Kvctl({"put", "exit/k", "v", "--token", "--json"});
  EXPECT_EQ(swallowed.exit_code, 2) << swallowed.out;
  EXPECT_TRUE(absl::StrContains(swallowed.out + swallowed.err, "--token needs a value"))
      << swallowed.out << swallowed.err;
  EXPECT_EQ(Kvctl({"get", "exit/never-written"}).exit_code, 1);  // nothing was written
  // An endpoint whose port is out of range would reach another port (gRPC wraps it).
  CommandResult port = RunCommand({KVCTL_PATH, "--endpoints=127.0.0.1:72236", "get", "k"});
  EXPECT_EQ(port.exit_code, 2) << port.err;
  EXPECT_TRUE(absl::StrContains(port.err, "1 to 65535")) << port.err;
  // --commit=false is false: the token and layout version that go with a commit are refused.
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--commit=false", "--token=t"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--no-commit", "--layout-version=3"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--commit", "--layout-version=0"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--ranges"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cluster", "anti-entropy", "extra"}).exit_code, 2);
  // --wait goes with a commit (checked before anything is asked), and with join/leave/remove.
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--wait"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--commit", "--wait-timeout=1s"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cluster", "join", "n9", "--commit", "--wait", "--wait-timeout=0s"}).exit_code,
            2);
  EXPECT_EQ(Kvctl({"cluster", "status", "--wait"}).exit_code, 2);
  // A node unknown to the cluster is not found; a string no node could have as its id is a
  // usage error (it was "not found", with advice to start a node with that id).
  EXPECT_EQ(Kvctl({"cluster", "join", "n9"}).exit_code, 1);
  const CommandResult bad_id = Kvctl({"cluster", "join", "bad/id"});
  EXPECT_EQ(bad_id.exit_code, 2) << bad_id.err;
  EXPECT_TRUE(absl::StrContains(bad_id.err, "is not a node id")) << bad_id.err;

  nlohmann::json oversized = KvctlJson({"put", std::string(4096, 'k'), "v"}, 2);
  EXPECT_EQ(oversized["error"].value("code", ""), "INVALID_ARGUMENT") << oversized;
  EXPECT_EQ(Kvctl({"get", std::string(4096, 'k')}).exit_code, 2);

  // A value far above the value limit is still the node's INVALID_ARGUMENT naming the limit
  // (not the transport's RESOURCE_EXHAUSTED, which the client would retry).
  const std::string big_file = dir_->Sub("big-value");
  kv::testing::WriteFile(big_file, std::string(2 << 20, 'v'));
  nlohmann::json too_big = KvctlJson({"put", "exit/big", "--file", big_file}, 2);
  EXPECT_EQ(too_big["error"].value("code", ""), "INVALID_ARGUMENT") << too_big;
  EXPECT_TRUE(absl::StrContains(too_big["error"].value("message", ""), "max_value_bytes"))
      << too_big;

  const std::string dead = absl::StrCat("127.0.0.1:", kv::testing::PickFreePort());
  CommandResult unreachable =
      RunCommand({KVCTL_PATH, "--endpoints=" + dead, "--timeout=300ms", "--json", "get", "k"});
  EXPECT_EQ(unreachable.exit_code, 3) << unreachable.out << unreachable.err;
  nlohmann::json error = nlohmann::json::parse(unreachable.out, nullptr, false);
  const std::string code = error["error"].value("code", "");
  EXPECT_TRUE(code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED") << unreachable.out;
}

TEST_F(KvctlProcessTest, UsageErrorsInJsonModeAreJsonToo) {
  nlohmann::json bad_flag = KvctlJson({"get", "k", "--frobnicate"}, 2);
  EXPECT_EQ(bad_flag["error"].value("code", ""), "INVALID_ARGUMENT") << bad_flag;
  EXPECT_TRUE(absl::StrContains(bad_flag["error"].value("message", ""), "--frobnicate"));
  nlohmann::json unknown = KvctlJson({"frobnicate"}, 2);
  EXPECT_EQ(unknown["error"].value("code", ""), "INVALID_ARGUMENT") << unknown;
  // --json in its other boolean spellings too.
  for (const char* spelling : {"--json=true", "--json=1", "--json=yes"}) {
    CommandResult result = Kvctl({spelling, "get", "k", "--frobnicate"});
    EXPECT_EQ(result.exit_code, 2) << spelling;
    nlohmann::json json = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_EQ(json["error"].value("code", ""), "INVALID_ARGUMENT") << spelling << result.out;
  }
  CommandResult off = Kvctl({"--json=false", "get", "k", "--frobnicate"});
  EXPECT_EQ(off.exit_code, 2);
  EXPECT_TRUE(off.out.empty()) << off.out;
  EXPECT_TRUE(absl::StrContains(off.err, "--frobnicate")) << off.err;
}

TEST_F(KvctlProcessTest, HelpDocumentsCommandsAndExitCodes) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"help"}, {"-h"}, {"get", "--help"}}) {
    CommandResult help = Kvctl(args);
    EXPECT_EQ(help.exit_code, 0) << args[0];
    for (const char* needle : {"put", "describe-key", "describe-write", "cluster status", "--wait",
                               "--wait-timeout", "--json", "KV_ENDPOINTS", "Exit codes",
                               "key not found", "usage error", "server or network error", "repair",
                               "operation get", "operation wait", "cluster anti-entropy"}) {
      EXPECT_TRUE(absl::StrContains(help.out, needle)) << needle;
    }
  }
  nlohmann::json json = KvctlJson({"help"}, 0);
  EXPECT_TRUE(absl::StrContains(json.value("usage", ""), "Exit codes")) << json;
}

TEST_F(KvctlProcessTest, ConcurrentPutsShowSiblingsAndContextResolvesThem) {
  ASSERT_EQ(Kvctl({"put", "sib/k", "left"}).exit_code, 0);
  ASSERT_EQ(Kvctl({"put", "sib/k", "right"}).exit_code, 0);  // no context: concurrent

  CommandResult text = Kvctl({"get", "sib/k"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(absl::StrContains(text.out,
                                "2 siblings (concurrent writes); pass --context to put to resolve"))
      << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "left")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "right")) << text.out;

  nlohmann::json get = KvctlJson({"get", "sib/k"}, 0);
  ASSERT_EQ(get.value("sibling_count", 0), 2) << get;
  const std::string context = get.value("context", "");
  ASSERT_FALSE(context.empty());

  ASSERT_EQ(Kvctl({"put", "sib/k", "merged", "--context=" + context}).exit_code, 0);
  nlohmann::json resolved = KvctlJson({"get", "sib/k"}, 0);
  ASSERT_EQ(resolved.value("sibling_count", 0), 1) << resolved;
  EXPECT_EQ(resolved["siblings"][0].value("value", ""), "merged");
}

TEST_F(KvctlProcessTest, OwnIdempotencyTokenDeduplicatesARepeatedPut) {
  nlohmann::json first = KvctlJson({"put", "token/k", "once", "--token=kvctl-test-token-1"}, 0);
  EXPECT_EQ(first.value("deduplicated", true), false) << first;
  nlohmann::json again = KvctlJson({"put", "token/k", "once", "--token=kvctl-test-token-1"}, 0);
  EXPECT_EQ(again.value("deduplicated", false), true) << again;
  EXPECT_EQ(again.value("write_id", ""), first.value("write_id", "x"));
  EXPECT_EQ(KvctlJson({"get", "token/k"}, 0).value("sibling_count", 0), 1);

  // Same token, different value: the store rejects it as a client error.
  nlohmann::json reused = KvctlJson({"put", "token/k", "other", "--token=kvctl-test-token-1"}, 2);
  EXPECT_EQ(reused["error"].value("code", ""), "INVALID_ARGUMENT") << reused;
}

TEST_F(KvctlProcessTest, EveryWriteNamesItsTokenSoThatAFailedOneCanBeRetried) {
  // A put that fails in a way that may have applied it prints the token it was sent with, and
  // the command to retry it with that token.
  const std::string dead = absl::StrCat("127.0.0.1:", kv::testing::PickFreePort());
  CommandResult failed = RunCommand(
      {KVCTL_PATH, "--endpoints=" + dead, "--timeout=300ms", "--json", "put", "retry/k", "v"});
  EXPECT_EQ(failed.exit_code, 3) << failed.out << failed.err;
  nlohmann::json error = nlohmann::json::parse(failed.out, nullptr, false);
  const std::string token = error.value("idempotency_token", "");
  EXPECT_THAT(token, ::testing::MatchesRegex("[0-9a-f]{32}")) << failed.out;
  EXPECT_TRUE(absl::StrContains(error["error"].value("message", ""), "--token=" + token))
      << failed.out;
  CommandResult text = RunCommand(
      {KVCTL_PATH, "--endpoints=" + dead, "--timeout=300ms", "delete", "retry/k", "--token=t1"});
  EXPECT_EQ(text.exit_code, 3) << text.err;
  EXPECT_TRUE(absl::StrContains(text.err, "repeat the command with --token=t1")) << text.err;

  // Retried against the node with that token, it is applied once.
  nlohmann::json first = KvctlJson({"put", "retry/k", "v", "--token=" + token}, 0);
  EXPECT_EQ(first.value("idempotency_token", ""), token) << first;
  nlohmann::json again = KvctlJson({"put", "retry/k", "v", "--token=" + token}, 0);
  EXPECT_EQ(again.value("deduplicated", false), true) << again;
  EXPECT_EQ(KvctlJson({"get", "retry/k"}, 0).value("sibling_count", 0), 1);
  // Without --token, each put gets a fresh one, and says which.
  nlohmann::json fresh = KvctlJson({"put", "retry/k", "v"}, 0);
  EXPECT_THAT(fresh.value("idempotency_token", ""), ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(fresh.value("idempotency_token", ""), token);

  // A refusal changed nothing: no retry hint.
  nlohmann::json refused = KvctlJson({"put", "retry/k", "other", "--token=" + token}, 2);
  EXPECT_FALSE(refused.contains("idempotency_token")) << refused;
  EXPECT_FALSE(absl::StrContains(refused["error"].value("message", ""), "repeat the command"));
}

TEST_F(KvctlProcessTest, DescribeWriteOfAPutOnOneNodeIsReplicated) {
  nlohmann::json put = KvctlJson({"put", "dw/k", "v"}, 0);
  const std::string write_id = put.value("write_id", "");
  ASSERT_FALSE(write_id.empty()) << put;

  nlohmann::json described = KvctlJson({"describe-write", write_id}, 0);
  EXPECT_EQ(described.value("write_id", ""), write_id) << described;
  EXPECT_EQ(described.value("state", ""), "REPLICATED") << described;
  EXPECT_EQ(described.value("key", ""), "dw/k") << described;
  EXPECT_FALSE(described.value("dot", "").empty()) << described;
  ASSERT_TRUE(described["replicas"].is_array()) << described;
  ASSERT_EQ(described["replicas"].size(), 1u) << described;
  EXPECT_EQ(described["replicas"][0].value("node_id", ""), "n1") << described;
  EXPECT_EQ(described["replicas"][0].value("state", ""), "applied") << described;
  EXPECT_TRUE(described["replicas"][0].value("applied", false)) << described;
  EXPECT_EQ(described.value("applied_count", 0), 1) << described;

  CommandResult text = Kvctl({"describe-write", write_id});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(absl::StrContains(text.out, "state: REPLICATED, 1 of 1 replicas applied"))
      << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "  n1  applied")) << text.out;

  nlohmann::json malformed = KvctlJson({"describe-write", "not-a-write-id"}, 2);
  EXPECT_EQ(malformed["error"].value("code", ""), "INVALID_ARGUMENT") << malformed;

  // Ids that were never issued (a counter past the actor's, a key never written) are NOT_FOUND,
  // not PENDING forever.
  const size_t colon = write_id.rfind(':', write_id.find('/'));
  ASSERT_NE(colon, std::string::npos) << write_id;
  const std::string actor = write_id.substr(0, colon);
  for (const std::string& never :
       {absl::StrCat(actor, ":999999", write_id.substr(write_id.find('/'))),
        absl::StrCat(actor, ":1/", absl::WebSafeBase64Escape("dw/never-written"))}) {
    nlohmann::json unknown = KvctlJson({"describe-write", never}, 1);
    EXPECT_EQ(unknown["error"].value("code", ""), "NOT_FOUND") << never << ": " << unknown;
  }
}

TEST_F(KvctlProcessTest, PutAndDeleteWaitUntilReplicated) {
  nlohmann::json put = KvctlJson({"put", "wait/k", "v", "--wait", "--wait-timeout=10s"}, 0);
  EXPECT_FALSE(put.value("write_id", "").empty()) << put;
  EXPECT_FALSE(put.contains("error")) << put;
  ASSERT_TRUE(put["write_state"].is_object()) << put;
  EXPECT_EQ(put["write_state"].value("state", ""), "REPLICATED") << put;
  EXPECT_EQ(put["write_state"].value("key", ""), "wait/k") << put;
  ASSERT_EQ(put["write_state"]["replicas"].size(), 1u) << put;
  EXPECT_EQ(put["write_state"]["replicas"][0].value("state", ""), "applied") << put;
  EXPECT_GE(put.value("waited_ms", -1), 0) << put;

  CommandResult text = Kvctl({"put", "wait/k", "v2", "--wait"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(absl::StrContains(text.out, "write_id: ")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "REPLICATED, 1 of 1 replicas applied")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "  n1  applied")) << text.out;

  nlohmann::json del = KvctlJson({"delete", "wait/k", "--wait"}, 0);
  EXPECT_EQ(del.value("deleted", false), true) << del;
  EXPECT_EQ(del["write_state"].value("state", ""), "REPLICATED") << del;
  EXPECT_EQ(Kvctl({"get", "wait/k"}).exit_code, 1);
}

TEST_F(KvctlProcessTest, WaitFlagsAreCheckedBeforeWriting) {
  for (const std::vector<std::string>& args : {
           std::vector<std::string>{"put", "waitflags/k", "v", "--wait-timeout=5s"},  // no --wait
           {"put", "waitflags/k", "v", "--wait", "--wait-timeout=soon"},
           {"put", "waitflags/k", "v", "--wait", "--wait-timeout=0s"},
           {"delete", "waitflags/k", "--wait-timeout=1s"},
           {"get", "waitflags/k", "--wait"},
       }) {
    CommandResult result = Kvctl(args);
    EXPECT_EQ(result.exit_code, 2) << args.back() << ": " << result.err;
    EXPECT_TRUE(absl::StrContains(result.err, "--wait")) << result.err;
  }
  EXPECT_EQ(Kvctl({"get", "waitflags/k"}).exit_code, 1);  // nothing was written
}

TEST_F(KvctlProcessTest, ClusterStatusOfOneNodeListsItself) {
  ASSERT_EQ(Kvctl({"put", "cluster/k", "v"}).exit_code, 0);
  nlohmann::json status = KvctlJson({"cluster", "status"}, 0);
  EXPECT_EQ(status.value("node_id", ""), "n1") << status;
  EXPECT_EQ(status.value("replication_factor", 0), 1) << status;
  EXPECT_EQ(status.value("default_w", 0), 1) << status;
  EXPECT_EQ(status.value("default_r", 0), 1) << status;
  EXPECT_GE(status.value("writes_coordinated", 0), 1) << status;
  for (const char* field : {"writes_forwarded", "read_repairs", "replication_lag_p50_us",
                            "replication_lag_p99_us", "replication_lag_samples"}) {
    EXPECT_TRUE(status[field].is_number()) << field << ": " << status;
  }
  ASSERT_TRUE(status["members"].is_array()) << status;
  ASSERT_EQ(status["members"].size(), 1u) << status;
  const nlohmann::json& self = status["members"][0];
  EXPECT_EQ(self.value("node_id", ""), "n1") << status;
  EXPECT_TRUE(self.value("self", false)) << status;
  EXPECT_EQ(self.value("state", ""), "self") << status;
  EXPECT_EQ(self.value("outbox_depth", -1), 0) << status;

  CommandResult text = Kvctl({"cluster", "status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(absl::StrContains(text.out, "cluster as seen by n1: N=1 W=1 R=1, 1 member(s)"))
      << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "OUTBOX")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "replication lag")) << text.out;

  EXPECT_EQ(Kvctl({"cluster"}).exit_code, 2);
  CommandResult unknown = Kvctl({"cluster", "frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(unknown.err, "kvctl cluster status")) << unknown.err;
}

TEST_F(KvctlProcessTest, ClusterStatusAsksTheFirstReachableEndpoint) {
  const std::string dead = absl::StrCat("127.0.0.1:", kv::testing::PickFreePort());
  CommandResult result = RunCommand({KVCTL_PATH, "--endpoints=" + dead + "," + node_->endpoint(),
                                     "--timeout=5s", "--json", "cluster", "status"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out).value("node_id", ""), "n1") << result.out;
}

// A single node has no peer to repair with: repair is a server-side refusal (exit 3), and the
// node keeps no operation. Operation ids are checked before anything is asked.
TEST_F(KvctlProcessTest, RepairOnASingleNodeIsRefusedAndOperationIdsAreChecked) {
  nlohmann::json repair = KvctlJson({"repair"}, 3);
  EXPECT_EQ(repair["error"].value("code", ""), "FAILED_PRECONDITION") << repair;
  EXPECT_TRUE(absl::StrContains(repair["error"].value("message", ""), "no peers")) << repair;
  nlohmann::json list = KvctlJson({"operation", "list"}, 0);
  EXPECT_TRUE(list["operations"].is_array() && list["operations"].empty()) << list;
  EXPECT_EQ(Kvctl({"operation", "get", "n1:ab-1"}).exit_code, 1);
  EXPECT_EQ(Kvctl({"operation", "get", "garbage"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"operation", "frobnicate"}).exit_code, 2);
  // operation cancel: ids as get.
  EXPECT_EQ(Kvctl({"operation", "cancel", "n1:ab-1"}).exit_code, 1);
  EXPECT_EQ(Kvctl({"operation", "cancel", "garbage"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"operation", "cancel"}).exit_code, 2);
  // operation wait checks the id before waiting, as get does.
  EXPECT_EQ(Kvctl({"operation", "wait", "n1:ab-1"}).exit_code, 1);
  EXPECT_EQ(Kvctl({"operation", "wait", "garbage"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"operation", "wait"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"operation", "wait", "n1:ab-1", "--wait-timeout=soon"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"operation", "get", "n1:ab-1", "--wait-timeout=1s"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"repair", "--wait-timeout=1s"}).exit_code, 2);  // needs --wait
  EXPECT_EQ(Kvctl({"cluster", "status", "--ranges"}).exit_code, 2);
  nlohmann::json ae = KvctlJson({"cluster", "anti-entropy"}, 0);
  EXPECT_TRUE(ae["peers"].is_array() && ae["peers"].empty()) << ae;
}

}  // namespace
}  // namespace kv

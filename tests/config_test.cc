// Tests for node/config.h: one table of settings read from flags and a config file, flags
// winning, and a clear error (naming the flag or file and line, pointing at --help) for every
// kind of bad input.
#include "node/config.h"

#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/config_settings.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "kvnode");
  return ParseNodeCommandLine(args);
}

NodeConfig ParseOk(std::vector<std::string> args) {
  absl::StatusOr<CommandLine> parsed = Parse(std::move(args));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return NodeConfig();
  EXPECT_FALSE(parsed->help);
  return parsed->config;
}

// The error message for bad arguments; fails the test if they parse.
std::string ParseError(std::vector<std::string> args) {
  absl::StatusOr<CommandLine> parsed = Parse(std::move(args));
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(parsed.status().message());
  EXPECT_THAT(message, HasSubstr("kvnode --help"));
  return message;
}

class ConfigFileTest : public ::testing::Test {
 protected:
  std::string WriteConfig(const std::string& contents) {
    const std::string path = dir_.Sub("kvnode.conf");
    testing::WriteFile(path, contents);
    return path;
  }
  testing::TempDir dir_;
};

TEST(ConfigTest, Defaults) {
  const NodeConfig c = ParseOk({});
  EXPECT_EQ(c.node_id, "n1");
  EXPECT_EQ(c.cluster_name, "kv");
  EXPECT_EQ(c.listen, "127.0.0.1:7700");
  EXPECT_EQ(c.data_dir, "./kvdata/n1");
  EXPECT_FALSE(c.sync_writes);
  EXPECT_EQ(c.executor_threads, 8);
  EXPECT_FALSE(c.commit_on_executor);
  EXPECT_EQ(c.block_cache_mb, 64);
  EXPECT_EQ(c.limits.max_key_bytes, Limits().max_key_bytes);
  EXPECT_EQ(c.limits.max_value_bytes, Limits().max_value_bytes);
  EXPECT_EQ(c.idempotency_ttl, absl::Hours(24));
  EXPECT_EQ(c.shutdown_grace, absl::Seconds(10));
  EXPECT_EQ(c.shutdown_drain, absl::Milliseconds(500));
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_TRUE(c.config_file.empty());
}

TEST(ConfigTest, FlagForms) {
  const NodeConfig c =
      ParseOk({"--node_id=alpha-1.b_c", "--listen", "0.0.0.0:9000", "--sync_writes",
               "--executor-threads=3", "--max_key_bytes", "100", "--max_value_bytes=2000",
               "--idempotency_ttl=1h30m", "--shutdown_grace=0s", "--shutdown-drain", "2s",
               "--log_level=WARN", "--data_dir=/var/lib/kv", "--cluster_name=prod-eu.1"});
  EXPECT_EQ(c.node_id, "alpha-1.b_c");
  EXPECT_EQ(c.cluster_name, "prod-eu.1");
  EXPECT_EQ(c.listen, "0.0.0.0:9000");
  EXPECT_TRUE(c.sync_writes);
  EXPECT_EQ(c.executor_threads, 3);
  EXPECT_EQ(c.limits.max_key_bytes, 100u);
  EXPECT_EQ(c.limits.max_value_bytes, 2000u);
  EXPECT_EQ(c.idempotency_ttl, absl::Minutes(90));
  EXPECT_EQ(c.shutdown_grace, absl::ZeroDuration());
  EXPECT_EQ(c.shutdown_drain, absl::Seconds(2));
  EXPECT_EQ(c.log_level, LogLevel::kWarn);
  EXPECT_EQ(c.data_dir, "/var/lib/kv");
}

TEST(ConfigTest, BooleanSpellings) {
  for (const char* yes : {"true", "TRUE", "yes", "on", "1"}) {
    EXPECT_TRUE(ParseOk({std::string("--sync_writes=") + yes}).sync_writes) << yes;
  }
  for (const char* no : {"false", "False", "no", "off", "0"}) {
    EXPECT_FALSE(ParseOk({std::string("--sync_writes=") + no}).sync_writes) << no;
  }
  EXPECT_TRUE(ParseOk({"--commit_on_executor=true"}).commit_on_executor);
  EXPECT_FALSE(ParseOk({"--commit_on_executor=false"}).commit_on_executor);
  // Every boolean setting takes the bare form (true) and no separate value.
  for (const config_internal::Setting& setting : config_internal::Settings()) {
    if (setting.value_name != "BOOL") continue;
    EXPECT_TRUE(setting.is_bool) << setting.name;
  }
  EXPECT_TRUE(ParseOk({"--commit_on_executor"}).commit_on_executor);
  EXPECT_FALSE(ParseOk({"--trust_first_attempts=false"}).trust_first_attempts);
  EXPECT_TRUE(ParseOk({"--trust_first_attempts"}).trust_first_attempts);
}

TEST(ConfigTest, DataDirDefaultFollowsNodeId) {
  EXPECT_EQ(ParseOk({"--node_id=n7"}).data_dir, "./kvdata/n7");
}

TEST(ConfigTest, ListenAcceptsHostnamesAndIpv6) {
  EXPECT_EQ(ParseOk({"--listen=localhost:1"}).listen, "localhost:1");
  EXPECT_EQ(ParseOk({"--listen=[::1]:65535"}).listen, "[::1]:65535");
}

TEST(ConfigTest, MetricsListenTakesIpv4AddressesOrNothing) {
  EXPECT_EQ(ParseOk({}).metrics_listen, "");
  EXPECT_EQ(ParseOk({"--metrics_listen=127.0.0.1:9700"}).metrics_listen, "127.0.0.1:9700");
  EXPECT_EQ(ParseOk({"--metrics_listen=0.0.0.0:1"}).metrics_listen, "0.0.0.0:1");
  EXPECT_EQ(ParseOk({"--metrics_listen=127.0.0.1:0"}).metrics_listen, "127.0.0.1:0");
  EXPECT_EQ(ParseOk({"--metrics_listen="}).metrics_listen, "");
  for (const char* bad : {"--metrics_listen=localhost:9700", "--metrics_listen=[::1]:9700",
                          "--metrics_listen=::1:9700", "--metrics_listen=1.2.3:9700",
                          "--metrics_listen=127.0.0.1:+9700",
                          "--metrics_listen=127.0.0.1:", "--metrics_listen=127.0.0.1:65536"}) {
    EXPECT_THAT(ParseError({bad}), HasSubstr("an IPv4 address, not a name")) << bad;
  }
  EXPECT_THAT(ParseError({"--listen=127.0.0.1:7700", "--metrics_listen=0.0.0.0:7700"}),
              HasSubstr("must use another port than --listen"));
  // A port has one spelling, so the comparison cannot be dodged.
  EXPECT_THAT(ParseError({"--listen=127.0.0.1:7700", "--metrics_listen=127.0.0.1:07700"}),
              HasSubstr("an IPv4 address, not a name"));
}

TEST(ConfigTest, PeersMustListThisNodeAndNoOtherMemberAtItsListenAddress) {
  const std::string peers = "--peers=n1=127.0.0.1:7700,n2=127.0.0.1:7701,n3=127.0.0.1:7702";
  EXPECT_THAT(ParseError({"--node_id=n9", "--listen=127.0.0.1:7700", peers}),
              HasSubstr("--peers does not list this node"));
  // n2's command line copied with n1's id: calls meant for n2 would reach this process.
  EXPECT_THAT(ParseError({"--node_id=n1", "--listen=127.0.0.1:7701", peers}),
              HasSubstr("is the address --peers gives to member n2"));
  // Its own entry may differ from --listen (a port mapping, or a wildcard address).
  EXPECT_EQ(ParseOk({"--node_id=n1", "--listen=0.0.0.0:7700", peers}).node_id, "n1");
  EXPECT_EQ(ParseOk({"--node_id=n1", "--listen=127.0.0.1:9000", peers}).node_id, "n1");
}

TEST(ConfigTest, MaxRecordBytesIsBoundedAndAtLeastTheValueLimit) {
  EXPECT_EQ(ParseOk({}).limits.max_record_bytes, 16u << 20);
  EXPECT_EQ(ParseOk({"--max_record_bytes=2097152"}).limits.max_record_bytes, 2u << 20);
  // A record must hold one value of the largest size, its key and metadata.
  EXPECT_THAT(ParseError({"--max_record_bytes=1048576"}),
              HasSubstr("or a Put of the largest value could never be stored"));
  EXPECT_THAT(ParseError({"--max_value_bytes=20971520", "--max_record_bytes=20971520"}),
              HasSubstr("max_value_bytes + max_key_bytes"));
  EXPECT_EQ(
      ParseOk({"--max_value_bytes=20000000", "--max_record_bytes=20971520"}).limits.max_value_bytes,
      20000000u);
  EXPECT_THAT(ParseError({"--max_record_bytes=100"}), HasSubstr("max_record_bytes"));
  EXPECT_THAT(ParseError({"--max_record_bytes=100000000"}), HasSubstr("max_record_bytes"));
  EXPECT_THAT(ParseError({"--max_record_bytes=1048576", "--max_value_bytes=2097152"}),
              HasSubstr("must be at least max_value_bytes"));
}

TEST(ConfigTest, HelpWinsOverEverythingElse) {
  for (const char* flag : {"--help", "-h"}) {
    absl::StatusOr<CommandLine> parsed = Parse({"--bogus", flag});
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(parsed->help);
  }
}

TEST(ConfigTest, HelpListsEverySettingWithDefault) {
  const std::string help = NodeConfigHelp();
  for (const char* line :
       {"--config=FILE", "--node_id=NAME  (default: n1)", "--cluster_name=NAME  (default: kv)",
        "--listen=HOST:PORT  (default: 127.0.0.1:7700)",
        "--data_dir=DIR  (default: ./kvdata/<node_id>)", "--sync_writes=BOOL  (default: false)",
        "--executor_threads=N  (default: 8)", "--max_key_bytes=N  (default: 1024)",
        "--max_value_bytes=N  (default: 1048576)", "--idempotency_ttl=DURATION  (default: 24h)",
        "--shutdown_drain=DURATION  (default: 500ms)", "--shutdown_grace=DURATION  (default: 10s)",
        "--log_level=LEVEL  (default: info)", "--help", "Exit codes", "kvctl --endpoints="}) {
    EXPECT_THAT(help, HasSubstr(line));
  }
}

TEST(ConfigTest, UnknownFlagIsNamed) {
  EXPECT_THAT(ParseError({"--bogus=1"}), HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(ParseError({"-x"}), HasSubstr("unknown flag -x"));
}

TEST(ConfigTest, PositionalArgumentIsRejected) {
  EXPECT_THAT(ParseError({"serve"}), HasSubstr("unexpected argument \"serve\""));
  // A boolean flag does not take a separate value.
  EXPECT_THAT(ParseError({"--sync_writes", "false"}), HasSubstr("\"false\""));
}

TEST(ConfigTest, MissingValueIsNamed) {
  EXPECT_THAT(ParseError({"--listen"}), HasSubstr("flag --listen needs a value"));
  EXPECT_THAT(ParseError({"--listen", "--sync_writes"}), HasSubstr("flag --listen needs a value"));
}

TEST(ConfigTest, RepeatedFlagIsRejected) {
  EXPECT_THAT(ParseError({"--node_id=a", "--node-id=b"}),
              HasSubstr("--node_id is given more than once"));
  EXPECT_THAT(ParseError({"--sync_writes", "false"}),
              HasSubstr("a boolean flag takes its value with '=', as in --sync_writes=false"));
}

TEST(ConfigTest, MalformedValuesNameTheFlagAndTheValue) {
  struct Case {
    const char* arg;
    const char* expected;
  };
  for (const Case& c : std::vector<Case>{
           {"--node_id=", "for flag --node_id"},
           {"--node_id=has space", "\"has space\" for flag --node_id"},
           {"--node_id=a/b", "1 to 64 characters"},
           {"--cluster_name=", "for flag --cluster_name"},
           {"--cluster_name=two words", "1 to 64 characters from A-Z a-z 0-9 _ . -"},
           {"--cluster_name=x\x01", "for flag --cluster_name"},
           // A path element or a flag: --data_dir defaults to ./kvdata/<node_id>.
           {"--node_id=..", "starting with a letter, a digit or _"},
           {"--node_id=.", "starting with a letter, a digit or _"},
           {"--node_id=-x", "starting with a letter, a digit or _"},
           // One spelling per address; IPv6 in brackets.
           {"--listen=::1:7700", "needs brackets"},
           {"--listen=::1", "needs brackets"},
           {"--listen=127.0.0.1:+7700", "digits only"},
           {"--listen=127.0.0.1:07700", "without a leading zero"},
           {"--seeds=h:07700", "without a leading zero"},
           {"--peers=n1=127.0.0.1:7700,n2=127.0.0.1:07700", "without a leading zero"},
           {"--peers=n1=127.0.0.1:7700,..=127.0.0.1:7701", "starting with a letter"},
           {"--executor_threads=x", "\"x\" for flag --executor_threads"},
           {"--executor_threads=0", "an integer from 1 to 1024"},
           {"--executor_threads=1025", "an integer from 1 to 1024"},
           {"--executor_threads=-3", "an integer from 1 to 1024"},
           {"--max_key_bytes=0", "for flag --max_key_bytes"},
           {"--max_key_bytes=99999999999999999999", "for flag --max_key_bytes"},
           {"--max_value_bytes=1e6", "for flag --max_value_bytes"},
           {"--sync_writes=maybe", "expected true or false"},
           {"--idempotency_ttl=24", "for flag --idempotency_ttl"},
           {"--idempotency_ttl=-1h", "at least 1s"},
           {"--idempotency_ttl=inf", "for flag --idempotency_ttl"},
           {"--idempotency_ttl=3000000000h", "at most 87600h (ten years)"},
           {"--shutdown_drain=100000h", "at most 87600h (ten years)"},
           // Below the longest a record can be in flight: a purge could let a deleted key back.
           {"--tombstone_confirm_delay=4s", "at least 5s"},
           {"--shutdown_grace=soon", "for flag --shutdown_grace"},
           {"--listen=7700", "HOST:PORT"},
           {"--listen=:7700", "HOST:PORT"},
           {"--listen=localhost:0", "port from 1 to 65535"},
           {"--listen=localhost:70000", "port from 1 to 65535"},
           {"--listen=localhost:http", "HOST:PORT"},
           {"--log_level=verbose", "one of debug, info, warn, error"},
           {"--data_dir=", "for flag --data_dir"},
           {"--block_cache_mb=4", "an integer from 8 to 1048576"},
           {"--block_cache_mb=64MB", "\"64MB\" for flag --block_cache_mb"},
       }) {
    EXPECT_THAT(ParseError({c.arg}), HasSubstr(c.expected)) << c.arg;
  }
  EXPECT_THAT(ParseError({"--node_id=" + std::string(65, 'a')}), HasSubstr("1 to 64 characters"));
  EXPECT_EQ(ParseOk({"--node_id=" + std::string(64, 'a')}).node_id, std::string(64, 'a'));
}

TEST_F(ConfigFileTest, FileSetsValues) {
  const std::string path = WriteConfig(
      "# a kvnode config\n"
      "\n"
      "node_id = n2\n"
      "  listen=127.0.0.1:7801   # trailing comment\n"
      "data_dir = \"/data/with # hash\"\n"
      "sync-writes = on\r\n"
      "executor_threads = 2\n"
      "idempotency_ttl = 1h\n");
  const NodeConfig c = ParseOk({"--config=" + path});
  EXPECT_EQ(c.config_file, path);
  EXPECT_EQ(c.node_id, "n2");
  EXPECT_EQ(c.listen, "127.0.0.1:7801");
  EXPECT_EQ(c.data_dir, "/data/with # hash");
  EXPECT_TRUE(c.sync_writes);
  EXPECT_EQ(c.executor_threads, 2);
  EXPECT_EQ(c.idempotency_ttl, absl::Hours(1));
}

TEST_F(ConfigFileTest, DataDirDefaultFollowsNodeIdFromFile) {
  EXPECT_EQ(ParseOk({"--config", WriteConfig("node_id = n9\n")}).data_dir, "./kvdata/n9");
}

TEST_F(ConfigFileTest, FlagsOverrideFileWhereverTheyAppear) {
  const std::string path = WriteConfig("node_id = from_file\nexecutor_threads = 2\n");
  NodeConfig before = ParseOk({"--node_id=from_flag", "--config=" + path});
  NodeConfig after = ParseOk({"--config", path, "--node_id=from_flag"});
  for (const NodeConfig& c : {before, after}) {
    EXPECT_EQ(c.node_id, "from_flag");
    EXPECT_EQ(c.executor_threads, 2);
  }
}

TEST_F(ConfigFileTest, UnreadableFileIsNamed) {
  const std::string missing = dir_.Sub("missing.conf");
  std::string message = ParseError({"--config=" + missing});
  EXPECT_THAT(message, HasSubstr("cannot read config file \"" + missing + "\""));
  EXPECT_THAT(message, HasSubstr("No such file or directory"));
  EXPECT_THAT(ParseError({"--config=" + dir_.path()}), HasSubstr("not a regular file"));
  EXPECT_THAT(ParseError({"--config="}), HasSubstr("for flag --config"));
}

TEST_F(ConfigFileTest, FileErrorsNameFileLineAndProblem) {
  struct Case {
    const char* contents;
    const char* expected;
  };
  for (const Case& c : std::vector<Case>{
           {"node_id = n1\nbogus = 3\n", "line 2: unknown setting bogus"},
           {"\n\njust some words\n", "line 3: expected `name = value`"},
           {" = value\n", "line 1: expected `name = value`"},
           {"node_id = a\n# c\nnode_id = b\n", "line 3: node_id is already set on line 1"},
           {"executor_threads = lots\n", "line 1: invalid value \"lots\" for executor_threads"},
           {"sync_writes =\n", "line 1: invalid value \"\" for sync_writes"},
           {"config = other.conf\n", "line 1: config cannot be set inside a config file"},
           {"data_dir = \"unterminated\n", "line 1: expected `name = value`"},
           {"data_dir = \"a\" trailing\n", "line 1: expected `name = value`"},
           {" = \"quoted\"\n", "line 1: expected `name = value`"},
           // A comment right after "name =" leaves the value empty; it never becomes the value.
           {"data_dir =        # default: ./kvdata/<node_id>\n", "line 1: invalid value \"\""},
           {"sync_writes = # off\n", "line 1: invalid value \"\" for sync_writes"},
       }) {
    const std::string path = WriteConfig(c.contents);
    const std::string message = ParseError({"--config=" + path});
    EXPECT_THAT(message, HasSubstr("config file \"" + path + "\" " + c.expected)) << c.contents;
  }
}

TEST_F(ConfigFileTest, ACommentAfterAnEmptyValueIsAComment) {
  // metrics_listen's empty value means no metrics endpoint.
  const NodeConfig c = ParseOk({"--config=" + WriteConfig("metrics_listen =   # none\n")});
  EXPECT_EQ(c.metrics_listen, "");
}

TEST_F(ConfigFileTest, FileErrorWinsEvenWhenFlagWouldOverride) {
  // A bad file is a bad deployment; it is reported rather than masked by a flag.
  const std::string path = WriteConfig("executor_threads = 0\n");
  EXPECT_THAT(ParseError({"--config=" + path, "--executor_threads=4"}), HasSubstr("line 1"));
}

TEST(ConfigContentsTest, ApplyDirectly) {
  NodeConfig c;
  ASSERT_TRUE(ApplyConfigFileContents("max_value_bytes = 10\nlog_level = debug", "x", &c).ok());
  EXPECT_EQ(c.limits.max_value_bytes, 10u);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_TRUE(ApplyConfigFileContents("", "empty", &c).ok());
}

}  // namespace
}  // namespace kv

namespace kv {
namespace {

TEST(ConfigGossipTest, SeedsAndGossipTimings) {
  NodeConfig c = ParseOk({"--seeds=10.0.0.1:7700, node-b.example:7701", "--gossip_interval=100ms",
                          "--failure_timeout=1s", "--seed_timeout=5s"});
  EXPECT_EQ(c.seeds, (std::vector<std::string>{"10.0.0.1:7700", "node-b.example:7701"}));
  EXPECT_EQ(c.gossip_interval, absl::Milliseconds(100));
  EXPECT_EQ(c.failure_timeout, absl::Seconds(1));
  EXPECT_EQ(c.seed_timeout, absl::Seconds(5));
  EXPECT_EQ(ParseOk({"--gossip_interval=100ms", "--failure_timeout=1s", "--gossip_forget_after=2s"})
                .gossip_forget_after,
            absl::Seconds(2));
  EXPECT_EQ(ParseOk({"--gossip_forget_after=0"}).gossip_forget_after, absl::ZeroDuration());
  const NodeConfig defaults = ParseOk({});
  EXPECT_EQ(defaults.gossip_forget_after, absl::Hours(1));
  EXPECT_TRUE(defaults.seeds.empty());
  EXPECT_EQ(defaults.gossip_interval, absl::Seconds(1));
  EXPECT_EQ(defaults.failure_timeout, absl::Seconds(5));
}

TEST(ConfigGossipTest, BadGossipSettingsAreNamed) {
  EXPECT_THAT(ParseError({"--seeds=10.0.0.1"}), HasSubstr("bad entry \"10.0.0.1\""));
  EXPECT_THAT(ParseError({"--seeds=a:0"}), HasSubstr("for flag --seeds"));
  EXPECT_THAT(ParseError({"--seeds=n1=10.0.0.1:7700"}), HasSubstr("not ID=HOST:PORT"));
  EXPECT_THAT(ParseError({"--seeds=10.0.0.1:7700,10.0.0.1:7700"}), HasSubstr("listed twice"));
  EXPECT_THAT(ParseError({"--seeds=10.0.0.1:7700,,10.0.0.2:7700"}), HasSubstr("an empty entry"));
  EXPECT_THAT(ParseError({"--seeds=10.0.0.1:7700,"}), HasSubstr("an empty entry"));
  EXPECT_TRUE(ParseOk({"--seeds="}).seeds.empty());
  EXPECT_THAT(ParseError({"--gossip_interval=1ms"}), HasSubstr("at least 10ms"));
  EXPECT_THAT(ParseError({"--gossip_interval=1s", "--failure_timeout=2s"}),
              HasSubstr("at least 3 gossip intervals"));
  EXPECT_THAT(ParseError({"--gossip_forget_after=9s"}),
              HasSubstr("must be 0 (never) or at least twice failure_timeout (5s)"));
  EXPECT_THAT(ParseError({"--gossip_forget_after=-1s"}), HasSubstr("gossip_forget_after"));
}

}  // namespace
}  // namespace kv

// The command-line parsing shared by kvctl and kvbench (client/cli_flags.h): bad flags are errors
// that name the flag, never silently taken another way.
#include "client/cli_flags.h"

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
      ParseEndpoints(" 127.0.0.1:7700, [::1]:7701,,host:65535,unix:/tmp/kv.sock");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, (std::vector<std::string>{"127.0.0.1:7700", "[::1]:7701", "host:65535",
                                           "unix:/tmp/kv.sock"}));
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:99999", "host:notaport", "[::1]", ":7700", ",", ""}) {
    absl::StatusOr<std::vector<std::string>> parsed = ParseEndpoints(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace kv::cli

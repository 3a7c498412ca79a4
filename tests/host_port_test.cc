#include "storage/host_port.h"

#include <string>

#include "gtest/gtest.h"

namespace kv {
namespace {

TEST(HostPortTest, SplitsHostAndPort) {
  struct Case {
    const char* address;
    const char* host;
    int port;
  };
  for (const Case& c :
       {Case{"127.0.0.1:7700", "127.0.0.1", 7700}, Case{"h:1", "h", 1},
        Case{"kv-0.kv.svc:65535", "kv-0.kv.svc", 65535}, Case{"[::1]:7700", "[::1]", 7700},
        Case{"[fe80::1%eth0]:9", "[fe80::1%eth0]", 9}}) {
    std::string host;
    int port = 0;
    ASSERT_TRUE(ParseHostPort(c.address, &host, &port).ok()) << c.address;
    EXPECT_EQ(host, c.host);
    EXPECT_EQ(port, c.port);
  }
}

TEST(HostPortTest, RefusesEverySecondSpellingAndAmbiguity) {
  for (const char* bad : {"",          ":",       "h",          "h:",      ":7700",    "h:0",
                          "h:65536",   "h:99999", "h:123456",   "h:07700", "h:+7700",  "h:-1",
                          "h: 7700",   "h:7700 ", "h:0x10",     "::1",     "::1:7700", "[::1]",
                          "[::1:7700", "[]:7700", "[a]b]:7700", "h]:7700"}) {
    std::string host = "unchanged";
    int port = -1;
    const absl::Status status = ParseHostPort(bad, &host, &port);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_EQ(host, "unchanged") << bad;
    EXPECT_EQ(port, -1) << bad;
  }
}

}  // namespace
}  // namespace kv

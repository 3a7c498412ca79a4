// RocksDbInfoLog: RocksDB's informational log in DIR/LOG, one older file kept, warnings handed
// on at a bounded rate, and a log file that cannot be written costing lost lines, not the process.
#include "storage/rocksdb_info_log.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

struct Forwarded {
  std::vector<std::pair<std::string, std::string>> lines;  // level, line
  RocksDbInfoLog::WarnFn Fn() {
    return [this](absl::string_view level, absl::string_view line) {
      lines.emplace_back(std::string(level), std::string(line));
    };
  }
};

std::vector<std::string> OldFiles(const std::string& dir) {
  std::vector<std::string> old;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "LOG.old.")) old.push_back(entry.path().string());
  }
  std::sort(old.begin(), old.end());
  return old;
}

TEST(RocksDbInfoLogTest, WritesLinesKeepsOlderFilesAndHandsOnWarnings) {
  testing::TempDir dir;
  { std::ofstream(dir.Sub("LOG")) << "the previous run\n"; }
  Forwarded forwarded;
  auto log = std::make_shared<RocksDbInfoLog>(dir.path(), 4096, forwarded.Fn());
  ASSERT_EQ(OldFiles(dir.path()).size(), 1u);
  EXPECT_EQ(Read(OldFiles(dir.path())[0]), "the previous run\n");
  rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, log, "flushed %d bytes", 1234);
  rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, log, "Stalling writes: %s\n", "too many files");
  rocksdb::Log(rocksdb::InfoLogLevel::DEBUG_LEVEL, log, "below the level");
  const std::string text = Read(dir.Sub("LOG"));
  EXPECT_THAT(text, HasSubstr(" flushed 1234 bytes\n"));
  EXPECT_THAT(text, HasSubstr(" [WARN] Stalling writes: too many files\n"));
  EXPECT_THAT(text, Not(HasSubstr("below the level")));
  ASSERT_EQ(forwarded.lines.size(), 1u);
  EXPECT_EQ(forwarded.lines[0].first, "WARN");
  EXPECT_EQ(forwarded.lines[0].second, "Stalling writes: too many files");

  // Past the size the current file is moved aside too; at most kOldFiles are kept, the latest.
  const std::string long_line(1000, 'x');
  for (int i = 0; i < 40; ++i) {
    rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, log, "line %d %s", i, long_line.c_str());
  }
  const std::vector<std::string> old = OldFiles(dir.path());
  EXPECT_EQ(old.size(), RocksDbInfoLog::kOldFiles);
  EXPECT_THAT(Read(dir.Sub("LOG")), HasSubstr("line 39 "));
  EXPECT_THAT(Read(old.back()), Not(HasSubstr("line 39 ")));
  EXPECT_THAT(Read(old.back()), HasSubstr("line 3"));
  EXPECT_LE(std::filesystem::file_size(dir.Sub("LOG")), 4096u);
  EXPECT_EQ(log->lines_lost(), 0u);
}

// The failure that used to abort kvnode: a log file that cannot be written (a full disk; here
// a file size limit). Lines are lost and counted; warnings still reach the node's own log.
TEST(RocksDbInfoLogTest, AFileThatCannotBeWrittenLosesLinesNotTheProcess) {
  testing::TempDir dir;
  Forwarded forwarded;
  auto log = std::make_shared<RocksDbInfoLog>(dir.path(), 1 << 20, forwarded.Fn());
  struct rlimit before {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &before), 0);
  signal(SIGXFSZ, SIG_IGN);  // a write past the limit then fails with EFBIG
  struct rlimit limited = before;
  limited.rlim_cur = 2048;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string long_line(500, 'z');
  for (int i = 0; i < 10; ++i) {
    rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, log, "Background IO error %d %s", i,
                 long_line.c_str());
  }
  log->Flush();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &before), 0);
  EXPECT_GE(log->lines_lost(), 5u);
  ASSERT_EQ(forwarded.lines.size(), 10u);
  EXPECT_EQ(forwarded.lines[9].first, "ERROR");
  EXPECT_THAT(forwarded.lines[9].second, HasSubstr("Background IO error 9"));
}

// A full disk makes every write warn: the node's log gets a bounded number of them per window.
TEST(RocksDbInfoLogTest, WarningsAreHandedOnAtABoundedRate) {
  testing::TempDir dir;
  Forwarded forwarded;
  auto log = std::make_shared<RocksDbInfoLog>(dir.path(), 1 << 20, forwarded.Fn());
  const int total = RocksDbInfoLog::kWarningsPerWindow + 30;
  for (int i = 0; i < total; ++i) {
    rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, log, "warning %d", i);
  }
  EXPECT_EQ(forwarded.lines.size(), static_cast<size_t>(RocksDbInfoLog::kWarningsPerWindow));
  EXPECT_EQ(log->warnings_dropped(), 30u);
  // The file has them all.
  EXPECT_THAT(Read(dir.Sub("LOG")), HasSubstr(absl::StrCat("warning ", total - 1, "\n")));
}

}  // namespace
}  // namespace kv

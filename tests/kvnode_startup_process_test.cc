// kvnode startup through real processes: --help, bad flags and config files (exit 2), and
// clear startup errors (exit 1) for a locked, unwritable or unusable data directory and for an
// address in use or not of this machine. Each error names what was wrong and what to do.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "storage/small_file.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return context;
}

grpc::Status Put(v1::KV::Stub* kv, const std::string& key) {
  v1::PutRequest request;
  request.set_key(key);
  request.set_value("v");
  v1::PutResponse response;
  return kv->Put(Ctx().get(), request, &response);
}

class KvnodeStartupTest : public ::testing::Test {
 protected:
  testing::CommandResult RunKvnode(std::vector<std::string> args) {
    args.insert(args.begin(), KVNODE_PATH);
    return testing::RunCommand(args, "", absl::Seconds(30));
  }
  std::string Listen() { return absl::StrCat("--listen=127.0.0.1:", testing::PickFreePort()); }
  // Options of node n1 on a data directory of its own, which it has started on and left
  // (stopped cleanly).
  void StartAndStopN1(testing::NodeProcess::Options* options) {
    options->node_id = "n1";
    options->data_dir = dir_.Sub("n1");
    absl::StatusOr<testing::NodeProcess> first = testing::NodeProcess::Start(*options);
    ASSERT_TRUE(first.ok()) << first.status();
  }
  testing::TempDir dir_;
};

TEST_F(KvnodeStartupTest, HelpExitsZero) {
  testing::CommandResult r = RunKvnode({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--data_dir=DIR"));
}

TEST_F(KvnodeStartupTest, UnknownFlagExitsTwoNamingIt) {
  testing::CommandResult r = RunKvnode({"--data_dir=" + dir_.Sub("d"), "--no_such_flag=1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown flag --no_such_flag"));
  EXPECT_THAT(r.err, HasSubstr("kvnode --help"));
}

TEST_F(KvnodeStartupTest, BadConfigFilesExitTwoNamingFileAndLine) {
  const std::string missing = dir_.Sub("missing.conf");
  testing::CommandResult r = RunKvnode({"--config=" + missing});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot read config file \"" + missing + "\""));

  const std::string bad = dir_.Sub("bad.conf");
  testing::WriteFile(bad, "node_id = n1\nexecutor_threads = many\n");
  r = RunKvnode({"--config", bad});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("config file \"" + bad + "\" line 2"));
  EXPECT_THAT(r.err, HasSubstr("executor_threads"));

  // A NUL byte in a value is shown, not the end of the message.
  const std::string nul = dir_.Sub("nul.conf");
  testing::WriteFile(nul, std::string("executor_threads = 4\0x\n", 23));
  r = RunKvnode({"--config", nul});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("invalid value \"4\\x00x\" for executor_threads")) << r.err;
}

TEST_F(KvnodeStartupTest, ConfigFileSettingsApply) {
  const std::string conf = dir_.Sub("kvnode.conf");
  testing::WriteFile(conf, "# test\nmax_key_bytes = 8\nnode_id = from-file\nblock_cache_mb = 16\n");
  testing::NodeProcess::Options options;
  options.data_dir = dir_.Sub("d");
  options.extra_flags = {"--config=" + conf};
  absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();
  auto channel = grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials());
  auto kv = v1::KV::NewStub(channel);
  EXPECT_TRUE(Put(kv.get(), "12345678").ok());
  const grpc::Status too_long = Put(kv.get(), "123456789");
  EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_long.error_message(), HasSubstr("max_key_bytes=8"));
  // NodeProcess passes --node_id=n1, which overrides the file.
  v1::PingResponse pong;
  EXPECT_TRUE(v1::Admin::NewStub(channel)->Ping(Ctx().get(), v1::PingRequest(), &pong).ok());
  EXPECT_EQ(pong.node_id(), "n1");
  // RocksDB's own log, written when the node opened its storage, shows the cache it was given.
  EXPECT_THAT(testing::ReadFile(options.data_dir + "/LOG"), HasSubstr("capacity : 16777216"));
}

// This node's --peers entry is where the other members call it. Another port than --listen's is
// right behind a port mapping and a mistake otherwise: it starts, and the log says so.
TEST_F(KvnodeStartupTest, APeersEntryOnAnotherPortThanListenIsWarnedAbout) {
  const int other_port = testing::PickFreePort();
  testing::NodeProcess::Options options;
  options.data_dir = dir_.Sub("d");
  options.extra_flags = {absl::StrCat("--peers=n1=127.0.0.1:", other_port)};
  absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_THAT(node->process().Stderr(), HasSubstr("names another port than --listen"));
  EXPECT_THAT(node->process().Stderr(), HasSubstr(absl::StrCat("n1=127.0.0.1:", other_port)));

  testing::NodeProcess::Options same;
  same.data_dir = dir_.Sub("e");
  same.port = testing::PickFreePort();
  same.extra_flags = {absl::StrCat("--peers=n1=127.0.0.1:", same.port)};
  absl::StatusOr<testing::NodeProcess> plain = testing::NodeProcess::Start(same);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->process().Stderr(), ::testing::Not(HasSubstr("another port")));
}

TEST_F(KvnodeStartupTest, KvprobeReportsServingOverPlaintext) {
  // The containers' health check, as the image runs it: the port from $KVNODE_LISTEN. kvprobe's
  // TLS variables are emptied (unset for it), whatever the test runner's environment holds.
  testing::NodeProcess::Options options;
  options.data_dir = dir_.Sub("d");
  absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();
  std::map<std::string, std::string> env = {{"KVNODE_TLS_CA_FILE", ""},
                                            {"KVNODE_TLS_CERT_FILE", ""},
                                            {"KVNODE_TLS_KEY_FILE", ""},
                                            {"KV_PROBE_TLS_SERVER_NAME", ""}};
  auto probe = [&env](std::vector<std::string> args) {
    args.insert(args.begin(), KVPROBE_PATH);
    return testing::RunCommand(args, "", absl::Seconds(30), env);
  };
  env["KVNODE_LISTEN"] = absl::StrCat("0.0.0.0:", node->options().port);
  testing::CommandResult serving = probe({"--timeout=10"});
  EXPECT_EQ(serving.exit_code, 0) << serving.err;
  EXPECT_EQ(serving.out, absl::StrCat(node->endpoint(), " SERVING\n"));
  // A service the node does not serve, and a port nobody serves on.
  testing::CommandResult unknown =
      probe({"--addr=" + node->endpoint(), "--service=no.such.Service", "--timeout=10"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out << unknown.err;
  testing::CommandResult nobody =
      probe({absl::StrCat("--addr=127.0.0.1:", testing::PickFreePort()), "--timeout=2"});
  EXPECT_EQ(nobody.exit_code, 1) << nobody.out << nobody.err;
  for (const char* bad : {"--timeout=0", "--timeout=soon", "--bogus"}) {
    testing::CommandResult r = probe({bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
}

TEST_F(KvnodeStartupTest, LockedDataDirectoryIsReported) {
  testing::NodeProcess::Options options;
  options.data_dir = dir_.Sub("shared");
  absl::StatusOr<testing::NodeProcess> first = testing::NodeProcess::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  testing::CommandResult r = RunKvnode({"--data_dir=" + options.data_dir, Listen()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(absl::AsciiStrToLower(r.err), HasSubstr("lock"));
  EXPECT_THAT(r.err, HasSubstr(options.data_dir));
  EXPECT_TRUE(first->process().running());
}

// A data directory holds one node's replicas under that node's id: another id would serve them
// where the ring places other keys.
TEST_F(KvnodeStartupTest, ADataDirectoryOfAnotherNodeIdIsRefused) {
  testing::NodeProcess::Options options;
  ASSERT_NO_FATAL_FAILURE(StartAndStopN1(&options));
  auto snapshot = [&] { return testing::SnapshotDirectory(options.data_dir); };
  const auto before = snapshot();
  ASSERT_EQ(before.count("NODE_ID"), 1u);
  testing::CommandResult r =
      RunKvnode({"--node_id=n9", "--data_dir=" + options.data_dir, Listen()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("belongs to node n1"));
  EXPECT_THAT(r.err, HasSubstr("--node_id=n9"));
  // Refused before the engine opened: nothing in the directory changed (opening replays the
  // write-ahead log into a new table file, and writes a manifest and an options file).
  EXPECT_TRUE(snapshot() == before);
  // A directory an earlier version wrote has no NODE_ID file (nor CLUSTER_NAME): the engine's
  // records decide, read without opening the database for writing, so the refusal changes
  // nothing either; the owner's next start writes the files.
  std::filesystem::remove(std::filesystem::path(options.data_dir) / "NODE_ID");
  std::filesystem::remove(std::filesystem::path(options.data_dir) / "CLUSTER_NAME");
  const auto without_file = snapshot();
  r = RunKvnode({"--node_id=n9", "--data_dir=" + options.data_dir, Listen()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("belongs to node n1"));
  EXPECT_TRUE(snapshot() == without_file);
  // The owner starts on it as before.
  absl::StatusOr<testing::NodeProcess> again = testing::NodeProcess::Start(options);
  ASSERT_TRUE(again.ok()) << again.status();
  absl::StatusOr<std::string> file =
      ReadSmallRegularFile((std::filesystem::path(options.data_dir) / "NODE_ID").string(), 100);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, "n1\n");
  file = ReadSmallRegularFile((std::filesystem::path(options.data_dir) / "CLUSTER_NAME").string(),
                              100);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, "kv\n");
}

// A data directory keeps the cluster name of its first start: a node cannot move its replicas
// into another cluster by a restart.
TEST_F(KvnodeStartupTest, ADataDirectoryOfAnotherClusterIsRefused) {
  testing::NodeProcess::Options options;
  ASSERT_NO_FATAL_FAILURE(StartAndStopN1(&options));
  const std::filesystem::path file = std::filesystem::path(options.data_dir) / "CLUSTER_NAME";
  absl::StatusOr<std::string> recorded = ReadSmallRegularFile(file.string(), 100);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(*recorded, "kv\n");  // the default name
  auto snapshot = [&] { return testing::SnapshotDirectory(options.data_dir); };
  const auto before = snapshot();
  testing::CommandResult r = RunKvnode(
      {"--node_id=n1", "--cluster_name=other", "--data_dir=" + options.data_dir, Listen()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("belongs to cluster"));
  EXPECT_THAT(r.err, HasSubstr("not to --cluster_name=other"));
  EXPECT_THAT(r.err, HasSubstr("start it with --cluster_name=kv"));
  EXPECT_TRUE(snapshot() == before);
  // Without the file (a directory of an earlier version), the database's record decides, read
  // without writing anything.
  std::filesystem::remove(file);
  const auto without_file = snapshot();
  r = RunKvnode(
      {"--node_id=n1", "--cluster_name=other", "--data_dir=" + options.data_dir, Listen()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("start it with --cluster_name=kv"));
  EXPECT_TRUE(snapshot() == without_file);
  // Under its own name the node starts, and writes the file again.
  absl::StatusOr<testing::NodeProcess> again = testing::NodeProcess::Start(options);
  ASSERT_TRUE(again.ok()) << again.status();
  recorded = ReadSmallRegularFile(file.string(), 100);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(*recorded, "kv\n");
}

// A port below 1024 without the right to bind it is refused before the data directory is
// touched, and said so (it was "the address is in use or not local", after the directory had
// been created and the database opened). Runs kvnode as nobody, so only where this test runs as
// root and unprivileged processes may not bind port 80.
TEST_F(KvnodeStartupTest, APrivilegedPortIsRefusedBeforeTheDataDirectory) {
  absl::StatusOr<std::string> start =
      ReadSmallRegularFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", 100);
  int first_unprivileged = 0;
  if (getuid() != 0 || !start.ok() ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*start), &first_unprivileged) ||
      first_unprivileged <= 80 || access("/usr/bin/setpriv", X_OK) != 0 ||
      testing::RunCommand({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "test", "-x", KVNODE_PATH})
              .exit_code != 0) {
    GTEST_SKIP() << "needs root, setpriv, port 80 privileged, and kvnode executable by uid 65534";
  }
  const std::string data_dir = dir_.Sub("privileged");
  testing::CommandResult r = testing::RunCommand(
      {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", KVNODE_PATH,
       "--node_id=n1", "--listen=127.0.0.1:80", "--data_dir=" + data_dir});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("permission denied"));
  EXPECT_FALSE(std::filesystem::exists(data_dir));
}

TEST_F(KvnodeStartupTest, AddressInUseIsReported) {
  testing::NodeProcess::Options options;
  options.data_dir = dir_.Sub("a");
  absl::StatusOr<testing::NodeProcess> first = testing::NodeProcess::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  testing::CommandResult r =
      RunKvnode({"--data_dir=" + dir_.Sub("b"), "--listen=" + first->endpoint()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot listen on " + first->endpoint()));
  EXPECT_THAT(r.err, HasSubstr("in use"));
  // Found before the data directory is created.
  EXPECT_FALSE(std::filesystem::exists(dir_.Sub("b")));
}

// A --listen host that is not this machine's is refused before the data directory is created.
TEST_F(KvnodeStartupTest, ForeignListenAddressIsReportedAndChangesNothing) {
  for (const char* listen : {"198.51.100.7:7700", "no-such-host.invalid:7700"}) {
    const std::string data_dir = dir_.Sub(absl::StrCat("never-", std::string(1, listen[0])));
    testing::CommandResult r =
        RunKvnode({"--data_dir=" + data_dir, absl::StrCat("--listen=", listen)});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("cannot listen on ", listen)));
    EXPECT_FALSE(std::filesystem::exists(data_dir)) << listen;
  }
}

TEST_F(KvnodeStartupTest, DataDirectoryUnderARegularFileIsReported) {
  const std::string file = dir_.Sub("file");
  testing::WriteFile(file, "x");
  testing::CommandResult r = RunKvnode({"--data_dir=" + file + "/data", Listen()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("data directory \\\"" + file + "/data\\\""));
  EXPECT_THAT(r.err, HasSubstr("Not a directory"));
}

TEST_F(KvnodeStartupTest, UnwritableDataDirectoryIsReported) {
  const std::vector<std::string> as_nobody = {"setpriv", "--reuid=65534", "--regid=65534",
                                              "--clear-groups"};
  std::vector<std::string> probe = as_nobody;
  probe.insert(probe.end(), {"test", "-x", KVNODE_PATH});
  if (geteuid() != 0 || testing::RunCommand(probe).exit_code != 0) {
    GTEST_SKIP() << "needs root and setpriv, and kvnode executable by uid 65534";
  }
  // mkdtemp makes the directory 0700; nobody needs to traverse it. It stays root-owned 0755.
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  for (const std::string& data_dir : {dir_.Sub("new"), dir_.path()}) {
    std::vector<std::string> args = as_nobody;
    args.insert(args.end(), {KVNODE_PATH, "--data_dir=" + data_dir, Listen()});
    testing::CommandResult r = testing::RunCommand(args, "", absl::Seconds(30));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("data directory \\\"" + data_dir + "\\\""));
    EXPECT_THAT(r.err, HasSubstr("Permission denied"));
    EXPECT_THAT(r.err, HasSubstr("--data_dir"));
  }
}

// A full disk: writes fail UNAVAILABLE (clients retry them elsewhere) and the node keeps serving
// what it holds; once space is freed writes go on without a restart. (RocksDB's own info log
// used to abort the process at its first line after a failed write, and again at every start.)
TEST_F(KvnodeStartupTest, AFullDiskFailsWritesAndTheNodeGoesOnOnceSpaceIsFreed) {
  const std::string disk = dir_.Sub("small-disk");
  ASSERT_TRUE(std::filesystem::create_directory(disk));
  if (geteuid() != 0 ||
      testing::RunCommand({"mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", disk}).exit_code !=
          0) {
    GTEST_SKIP() << "needs root to mount a small tmpfs";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { testing::RunCommand({"umount", "-l", path}); }
  } unmount{disk};  // after the node below has stopped
  testing::NodeProcess::Options options;
  options.data_dir = disk;  // the node's own log goes next to it, off the small disk
  absl::StatusOr<testing::NodeProcess> node = testing::NodeProcess::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();
  auto kv =
      v1::KV::NewStub(grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials()));
  // Values that do not compress, so that the table files fill the disk too.
  uint64_t state = 88172645463325252ull;
  auto value = [&state] {
    std::string v(60000, '\0');
    for (char& c : v) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      c = static_cast<char>(state);
    }
    return v;
  };
  grpc::Status failed;
  int stored = 0;
  for (int i = 0; i < 1000 && failed.ok(); ++i) {
    v1::PutRequest request;
    request.set_key(absl::StrCat("k", i));
    request.set_value(value());
    v1::PutResponse response;
    failed = kv->Put(Ctx().get(), request, &response);
    if (failed.ok()) ++stored;
  }
  ASSERT_FALSE(failed.ok()) << "24 MiB took 1000 values of 60 KB";
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::UNAVAILABLE) << failed.error_message();
  EXPECT_THAT(failed.error_message(), HasSubstr("could not write to its storage"));
  EXPECT_THAT(failed.error_message(), HasSubstr("No space left on device"));
  ASSERT_GT(stored, 10);
  EXPECT_TRUE(node->process().running()) << "kvnode died on a full disk";
  EXPECT_THAT(node->process().Stderr(), HasSubstr("storage engine warning"));
  EXPECT_THAT(node->process().Stderr(), HasSubstr("No space left on device"));
  v1::GetRequest get;
  get.set_key("k0");
  v1::GetResponse got;
  grpc::Status read = kv->Get(Ctx().get(), get, &got);
  EXPECT_TRUE(read.ok()) << read.error_message();

  ASSERT_EQ(testing::RunCommand({"mount", "-o", "remount,size=256m", disk}).exit_code, 0);
  grpc::Status after;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  do {
    absl::SleepFor(absl::Milliseconds(200));
    after = Put(kv.get(), "after-the-disk-was-freed");
  } while (!after.ok() && absl::Now() < give_up);
  EXPECT_TRUE(after.ok()) << "writes did not resume once space was freed: "
                          << after.error_message();
  EXPECT_TRUE(node->process().running());

  // A start on a full disk exits 1 saying so, and starts once space is freed again.
  node->process().Signal(SIGTERM);
  absl::StatusOr<int> stopped = node->process().Wait(absl::Seconds(30));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, 0);
  {
    std::ofstream filler(disk + "/filler", std::ios::binary);
    const std::string block(1 << 20, 'f');
    for (int i = 0; i < 512 && filler.write(block.data(), block.size()); ++i) {
    }
  }
  testing::CommandResult full =
      RunKvnode({"--node_id=n1", "--data_dir=" + options.data_dir, Listen()});
  EXPECT_EQ(full.exit_code, 1) << full.err;
  EXPECT_THAT(full.err, HasSubstr("The disk is full"));
  std::filesystem::remove(disk + "/filler");
  options.port = 0;
  node = testing::NodeProcess::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();
  kv = v1::KV::NewStub(grpc::CreateChannel(node->endpoint(), grpc::InsecureChannelCredentials()));
  read = kv->Get(Ctx().get(), get, &got);
  EXPECT_TRUE(read.ok()) << read.error_message();
}

}  // namespace
}  // namespace kv

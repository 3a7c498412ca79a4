// kvnode --tls_*: real kvnode processes on loopback with certificates made by the openssl command
// line in a temporary directory (a CA, a node certificate for 127.0.0.1, a client certificate,
// and a second CA with its own client certificate).
//   - three nodes with mutual TLS: a write through one node reaches all three replicas (so the
//     peer channels speak TLS), through kvctl and through the client library;
//   - the node refuses plaintext clients, clients without a certificate, clients whose
//     certificate another CA signed, and clients that do not trust the node's CA;
//   - with --tls_client_auth=false, trusting the CA is enough;
//   - a node whose certificate names another host is refused by clients and by its peers;
//   - with --tls_peer_names, a client certificate cannot call the internal Replica service; with
//     --tls_admin_names, only the named administrators change the membership or run
//     anti-entropy;
//   - changed TLS files are checked and installed without a restart: a key of another
//     certificate is refused (logged, counted, nothing changes), a CA bundle and a certificate
//     of the next CA are installed, for clients and for new peer connections alike;
//   - the client library given file paths reads them again: after a rotation to the next CA it
//     connects to the restarted node without a new Client (a client given the contents cannot),
//     and bad files are refused when the Client is made;
//   - kvprobe, the containers' health check, speaks TLS with the node's own files from the
//     image's variables, and fails like any other client that is refused;
//   - bad TLS settings (a missing file, a directory, a key of another certificate, an encrypted
//     key, a file that is not PEM, a certificate another CA signed, an expired certificate, only
//     some of the three flags) stop the node before its data
//     directory is touched, and kvctl reports its own bad TLS flags and files as usage errors.
// Every wait is a poll with a deadline.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "replica.grpc.pb.h"
#include "tests/test_util.h"

namespace kv {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kStartTimeout = absl::Seconds(60);

class TlsProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Keys and certificates, valid for two days; node.pem names 127.0.0.1.
    const std::string script = R"(
set -e
ca() { openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days 2 \
         -subj "/CN=$1" 2>/dev/null; }
leaf() { # NAME CA SAN [DAYS]
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days "${4:-2}" -extfile "$1.ext" 2>/dev/null
}
ca ca
ca other-ca
ca next-ca
leaf node ca IP:127.0.0.1
leaf client ca DNS:kv-client
leaf admin ca DNS:kv-admin
leaf stranger other-ca DNS:kv-stranger
leaf elsewhere ca DNS:elsewhere.invalid
leaf expired ca IP:127.0.0.1 -1
leaf next-node next-ca IP:127.0.0.1
leaf next-client next-ca DNS:kv-next-client
leaf 127.0.0.9 ca URI:spiffe://kv/workload
cat ca.pem next-ca.pem > ca-bundle.pem
openssl pkey -in node.key -aes256 -passout pass:secret -out node-encrypted.key 2>/dev/null
)";
    testing::CommandResult made =
        testing::RunCommand({"bash", "-c", absl::StrCat("cd '", dir_.path(), "' && ", script)});
    ASSERT_EQ(made.exit_code, 0) << "openssl failed: " << made.err;
  }

  std::string File(const std::string& name) const { return dir_.Sub(name); }

  // The TLS flags of a node.
  std::vector<std::string> NodeTlsFlags() const {
    return {"--tls_cert_file=" + File("node.pem"), "--tls_key_file=" + File("node.key"),
            "--tls_ca_file=" + File("ca.pem")};
  }
  // kvctl's TLS flags with the client certificate `client` (empty: none) and the CA `ca`.
  std::vector<std::string> KvctlTls(const std::string& client = "client",
                                    const std::string& ca = "ca") const {
    std::vector<std::string> flags = {"--tls-ca=" + File(ca + ".pem")};
    if (!client.empty()) {
      flags.push_back("--tls-cert=" + File(client + ".pem"));
      flags.push_back("--tls-key=" + File(client + ".key"));
    }
    return flags;
  }

  testing::CommandResult Kvctl(const std::string& endpoint, std::vector<std::string> flags,
                               std::vector<std::string> command) {
    std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + endpoint, "--timeout=20s"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), command.begin(), command.end());
    return testing::RunCommand(argv, "", absl::Seconds(60));
  }

  // Kvctl for a call the node refuses. kvctl may exit while gRPC still runs the failed handshake
  // on its own thread; LeakSanitizer (sanitizer builds) would report that handshake's memory and
  // turn the exit code into 1. It is memory at exit, not a leak of a running process.
  testing::CommandResult RefusedKvctl(const std::string& endpoint, std::vector<std::string> flags,
                                      std::vector<std::string> command) {
    std::vector<std::string> argv = {KVCTL_PATH, "--endpoints=" + endpoint, "--timeout=20s"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), command.begin(), command.end());
    return testing::RunCommand(argv, "", absl::Seconds(60),
                               {{"ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1"}});
  }

  // kvprobe with `env` added to this process's environment, where kvprobe's own variables are
  // empty (unset for it) unless `env` sets them; without LeakSanitizer, for the reason given at
  // RefusedKvctl.
  testing::CommandResult Probe(const std::vector<std::string>& argv,
                               std::map<std::string, std::string> env) {
    for (const char* name :
         {"KVNODE_LISTEN", "KVNODE_DATA_DIR", "KVNODE_TLS_CA_FILE", "KVNODE_TLS_CERT_FILE",
          "KVNODE_TLS_KEY_FILE", "KV_PROBE_TLS_SERVER_NAME"}) {
      env.emplace(name, "");
    }
    env.emplace("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1");
    return testing::RunCommand(argv, "", absl::Seconds(60), env);
  }

  // `n` distinct free loopback ports.
  static std::vector<int> FreePorts(size_t n) {
    std::vector<int> ports;
    while (ports.size() < n) {
      const int port = testing::PickFreePort();
      if (std::find(ports.begin(), ports.end(), port) == ports.end()) ports.push_back(port);
    }
    return ports;
  }

  // Starts kvnode n<index+1> of the cluster on `ports` with `extra` flags, without waiting.
  void StartNode(size_t index, const std::vector<int>& ports,
                 const std::vector<std::string>& extra) {
    std::vector<std::string> peers;
    for (size_t i = 0; i < ports.size(); ++i) {
      peers.push_back(absl::StrCat("n", i + 1, "=127.0.0.1:", ports[i]));
    }
    std::vector<std::string> argv = {KVNODE_PATH, absl::StrCat("--node_id=n", index + 1),
                                     absl::StrCat("--listen=127.0.0.1:", ports[index]),
                                     "--data_dir=" + File(absl::StrCat("data-n", index + 1)),
                                     "--peers=" + absl::StrJoin(peers, ",")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    absl::StatusOr<testing::Subprocess> node =
        testing::Subprocess::Start(argv, File(absl::StrCat("log-n", index + 1, "-", ++starts_)));
    ASSERT_TRUE(node.ok()) << node.status();
    if (nodes_.size() <= index) nodes_.resize(index + 1);
    nodes_[index] = *std::move(node);
    argvs_.resize(std::max(argvs_.size(), index + 1));
    argvs_[index] = argv;
  }

  // Waits until node `index`, listening on `port`, answers kvctl with `client_flags`.
  void WaitServing(size_t index, int port, const std::vector<std::string>& client_flags) {
    const absl::Time deadline = absl::Now() + kStartTimeout;
    testing::CommandResult r;
    do {
      r = Kvctl(absl::StrCat("127.0.0.1:", port), client_flags, {"list", "--limit=1"});
      if (r.exit_code == 0) break;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < deadline && nodes_[index].running());
    ASSERT_EQ(r.exit_code, 0) << "node n" << index + 1 << " does not serve over TLS: " << r.err
                              << "\nits log:\n"
                              << nodes_[index].Stderr();
  }

  // Starts one kvnode per port (ids n1..), all with `extra` flags plus node i's `per_node[i]`;
  // waits until each answers kvctl with `client_flags`.
  void StartNodes(const std::vector<int>& ports, const std::vector<std::string>& extra,
                  const std::vector<std::string>& client_flags,
                  const std::vector<std::vector<std::string>>& per_node = {}) {
    for (size_t i = 0; i < ports.size(); ++i) {
      std::vector<std::string> flags = extra;
      if (i < per_node.size()) flags.insert(flags.end(), per_node[i].begin(), per_node[i].end());
      ASSERT_NO_FATAL_FAILURE(StartNode(i, ports, flags));
    }
    for (size_t i = 0; i < ports.size(); ++i) {
      ASSERT_NO_FATAL_FAILURE(WaitServing(i, ports[i], client_flags));
    }
  }

  // Stops node `index` (SIGTERM) and starts it again with the same flags, without waiting.
  void RestartNode(size_t index) {
    nodes_[index].Signal(SIGTERM);
    absl::StatusOr<int> code = nodes_[index].Wait(absl::Seconds(30));
    ASSERT_TRUE(code.ok() && *code == 0) << nodes_[index].Stderr();
    absl::StatusOr<testing::Subprocess> node = testing::Subprocess::Start(
        argvs_[index], File(absl::StrCat("log-n", index + 1, "-", ++starts_)));
    ASSERT_TRUE(node.ok()) << node.status();
    nodes_[index] = *std::move(node);
  }

  // Replaces file `name` of the test directory with a copy of `from`, atomically (a new file
  // renamed over it), as an operator or a Kubernetes secret volume does.
  void Replace(const std::string& name, const std::string& from) {
    const std::string next = File(name + ".next");
    std::filesystem::copy_file(File(from), next, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(next, File(name));
  }

  // Waits until node `index` has logged `text` (the start line comes after the server serves).
  void ExpectLogged(size_t index, const std::string& text) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!absl::StrContains(nodes_[index].Stderr(), text) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    EXPECT_THAT(nodes_[index].Stderr(), HasSubstr(text));
  }

  void StopNodes() {
    for (testing::Subprocess& node : nodes_) node.Signal(SIGTERM);
    for (testing::Subprocess& node : nodes_) {
      absl::StatusOr<int> code = node.Wait(absl::Seconds(30));
      EXPECT_TRUE(code.ok() && *code == 0) << node.Stderr();
      EXPECT_THAT(node.Stderr(), ::testing::Not(HasSubstr("Sanitizer")));
    }
    nodes_.clear();
  }

  testing::TempDir dir_;
  std::vector<testing::Subprocess> nodes_;
  std::vector<std::vector<std::string>> argvs_;  // of nodes_
  int starts_ = 0;                               // node starts, for distinct log files
};

TEST_F(TlsProcessTest, ThreeNodesReplicateOverMutualTlsAndRefuseOtherClients) {
  const std::vector<int> ports = FreePorts(3);
  ASSERT_NO_FATAL_FAILURE(StartNodes(ports, NodeTlsFlags(), KvctlTls()));
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  const std::string n2 = absl::StrCat("127.0.0.1:", ports[1]);
  const std::string n3 = absl::StrCat("127.0.0.1:", ports[2]);
  ExpectLogged(0, "tls=mutual");

  testing::CommandResult put = Kvctl(n1, KvctlTls(), {"put", "greeting", "hello"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  // Every replica holds it: the coordinator's outbox reached the others over TLS.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  testing::CommandResult described;
  do {
    described = Kvctl(n2, KvctlTls(), {"describe-key", "greeting"});
    if (described.exit_code == 0 && absl::StrContains(described.out, "converged: yes") &&
        absl::StrContains(described.out, "replica n1: 1 version") &&
        absl::StrContains(described.out, "replica n2: 1 version") &&
        absl::StrContains(described.out, "replica n3: 1 version")) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  EXPECT_THAT(described.out, HasSubstr("converged: yes")) << described.out << described.err;
  EXPECT_THAT(described.out, HasSubstr("replica n3: 1 version")) << described.out;

  // The client library, with the same files' contents.
  ClientOptions options;
  options.endpoints = {n3};
  options.tls.enabled = true;
  options.tls.ca_pem = testing::ReadFile(File("ca.pem"));
  options.tls.cert_pem = testing::ReadFile(File("client.pem"));
  options.tls.key_pem = testing::ReadFile(File("client.key"));
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<GetResult> got = (*client)->Get("greeting");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->siblings.size(), 1u);
  EXPECT_EQ(got->siblings[0].value, "hello");
  ASSERT_TRUE((*client)->Put("library", "over tls").ok());

  // Refused: plaintext; TLS without a client certificate; a certificate another CA signed; a
  // client that does not trust the node's CA. None of them gets an answer (exit 3).
  struct Refused {
    const char* what;
    std::vector<std::string> flags;
  };
  for (const Refused& refused : std::vector<Refused>{
           {"plaintext", {}},
           {"no client certificate", KvctlTls("")},
           {"certificate of another CA", KvctlTls("stranger")},
           {"node's CA not trusted", KvctlTls("client", "other-ca")},
       }) {
    testing::CommandResult r = RefusedKvctl(n1, refused.flags, {"put", "intruder", "x"});
    EXPECT_EQ(r.exit_code, 3) << refused.what << ": " << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE")) << refused.what;
  }
  testing::CommandResult plaintext = RefusedKvctl(n1, {}, {"get", "greeting"});
  EXPECT_THAT(plaintext.err, HasSubstr("If the nodes run with TLS")) << plaintext.err;
  testing::CommandResult missing = Kvctl(n1, KvctlTls(), {"get", "intruder"});
  EXPECT_EQ(missing.exit_code, 1) << missing.out << missing.err;
  StopNodes();
}

TEST_F(TlsProcessTest, WithoutClientAuthTrustingTheCaIsEnough) {
  const std::vector<int> ports = {testing::PickFreePort()};
  std::vector<std::string> flags = NodeTlsFlags();
  flags.push_back("--tls_client_auth=false");
  ASSERT_NO_FATAL_FAILURE(StartNodes(ports, flags, KvctlTls("")));
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  ExpectLogged(0, "tls=server");
  EXPECT_EQ(Kvctl(n1, KvctlTls(""), {"put", "k", "v"}).exit_code, 0);
  EXPECT_EQ(Kvctl(n1, KvctlTls(), {"get", "k"}).exit_code, 0);
  // The client library given the CA file alone (no client certificate).
  ClientOptions by_files;
  by_files.endpoints = {n1};
  by_files.tls.enabled = true;
  by_files.tls.ca_file = File("ca.pem");
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(by_files);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<GetResult> got = (*client)->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->siblings.size(), 1u);
  EXPECT_EQ(got->siblings[0].value, "v");
  client->reset();
  EXPECT_EQ(RefusedKvctl(n1, {}, {"get", "k"}).exit_code, 3);
  StopNodes();
}

TEST_F(TlsProcessTest, ACertificateForAnotherNameIsRefusedByClients) {
  // The node's certificate names elsewhere.invalid, not 127.0.0.1: a client that checks the
  // name it connects to refuses it, even though the CA signed it.
  const std::vector<int> ports = {testing::PickFreePort()};
  std::vector<std::string> flags = {"--tls_cert_file=" + File("elsewhere.pem"),
                                    "--tls_key_file=" + File("elsewhere.key"),
                                    "--tls_ca_file=" + File("ca.pem")};
  std::vector<std::string> argv = {KVNODE_PATH, "--node_id=n1",
                                   absl::StrCat("--listen=127.0.0.1:", ports[0]),
                                   "--data_dir=" + File("data-elsewhere")};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<testing::Subprocess> node = testing::Subprocess::Start(argv, File("log-else"));
  ASSERT_TRUE(node.ok()) << node.status();
  nodes_.push_back(*std::move(node));
  ExpectLogged(0, "tls=mutual");
  testing::CommandResult r =
      RefusedKvctl(absl::StrCat("127.0.0.1:", ports[0]), KvctlTls(), {"put", "k", "v"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  // So does the client library given the paths of the files (its own TLS credentials).
  ClientOptions by_files;
  by_files.endpoints = {absl::StrCat("127.0.0.1:", ports[0])};
  by_files.call_deadline = absl::Seconds(5);
  by_files.tls.enabled = true;
  by_files.tls.ca_file = File("ca.pem");
  by_files.tls.cert_file = File("client.pem");
  by_files.tls.key_file = File("client.key");
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(by_files);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status put = (*client)->Put("k", "v").status();
  EXPECT_TRUE(absl::IsUnavailable(put)) << put;
  client->reset();
  // kvprobe checks the name too, unless told which name the certificate is issued for.
  const std::string addr = absl::StrCat("--addr=127.0.0.1:", ports[0]);
  const std::vector<std::string> tls = {"--tls-ca=" + File("ca.pem"),
                                        "--tls-cert=" + File("client.pem"),
                                        "--tls-key=" + File("client.key")};
  std::vector<std::string> probe = {KVPROBE_PATH, addr, "--timeout=10"};
  probe.insert(probe.end(), tls.begin(), tls.end());
  testing::CommandResult wrong_name = Probe(probe, {});
  EXPECT_EQ(wrong_name.exit_code, 1) << wrong_name.out << wrong_name.err;
  probe.push_back("--tls-server-name=elsewhere.invalid");
  testing::CommandResult named = Probe(probe, {});
  EXPECT_EQ(named.exit_code, 0) << named.out << named.err;
  EXPECT_THAT(named.out, HasSubstr("SERVING"));
  StopNodes();
}

TEST_F(TlsProcessTest, PeersCheckTheNameInEachOthersCertificates) {
  // n2's certificate is signed by the CA but names elsewhere.invalid, not 127.0.0.1, the host n1
  // has for it in --peers: n1 refuses to replicate to it.
  const std::vector<int> ports = FreePorts(2);
  ASSERT_NO_FATAL_FAILURE(StartNode(0, ports, NodeTlsFlags()));
  ASSERT_NO_FATAL_FAILURE(
      StartNode(1, ports,
                {"--tls_cert_file=" + File("elsewhere.pem"),
                 "--tls_key_file=" + File("elsewhere.key"), "--tls_ca_file=" + File("ca.pem")}));
  ASSERT_NO_FATAL_FAILURE(WaitServing(0, ports[0], KvctlTls()));
  ExpectLogged(1, "tls=mutual");
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  testing::CommandResult one = Kvctl(n1, KvctlTls(), {"put", "k", "v", "--w=1"});
  EXPECT_EQ(one.exit_code, 0) << one.out << one.err;
  testing::CommandResult all = Kvctl(n1, KvctlTls(), {"put", "k2", "v", "--w=all"});
  EXPECT_EQ(all.exit_code, 3) << all.out << all.err;
  EXPECT_THAT(all.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(all.err, HasSubstr("Hostname Verification Check failed"));
  StopNodes();
}

TEST_F(TlsProcessTest, TheInternalServiceTakesOnlyTheNamedPeers) {
  // Members' certificates name 127.0.0.1, the client's kv-client: with --tls_peer_names the
  // client may use the KV service but not the internal Replica service.
  const std::vector<int> ports = FreePorts(2);
  std::vector<std::string> flags = NodeTlsFlags();
  flags.push_back("--tls_peer_names=127.0.0.*");
  ASSERT_NO_FATAL_FAILURE(StartNodes(ports, flags, KvctlTls()));
  ExpectLogged(0, "tls_peer_names=127.0.0.*");
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  testing::CommandResult put = Kvctl(n1, KvctlTls(), {"put", "k", "v", "--w=all"});
  EXPECT_EQ(put.exit_code, 0) << put.out << put.err;  // replication is let in

  auto read_record = [&](const std::string& cert) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = testing::ReadFile(File("ca.pem"));
    ssl.pem_cert_chain = testing::ReadFile(File(cert + ".pem"));
    ssl.pem_private_key = testing::ReadFile(File(cert + ".key"));
    auto stub = internal::v1::Replica::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", ports[1]), grpc::SslCredentials(ssl)));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    internal::v1::ReadRecordRequest request;
    request.set_key("k");
    internal::v1::ReadRecordResponse response;
    return stub->ReadRecord(&context, request, &response);
  };
  const grpc::Status client = read_record("client");
  EXPECT_EQ(client.error_code(), grpc::StatusCode::PERMISSION_DENIED) << client.error_message();
  EXPECT_THAT(client.error_message(), HasSubstr("names kv-client"));
  const grpc::Status peer = read_record("node");
  EXPECT_TRUE(peer.ok()) << peer.error_message();
  // A certificate with a URI name only is not named by its common name (here 127.0.0.9, which
  // the pattern would match).
  const grpc::Status uri_only = read_record("127.0.0.9");
  EXPECT_EQ(uri_only.error_code(), grpc::StatusCode::PERMISSION_DENIED) << uri_only.error_message();
  EXPECT_THAT(uri_only.error_message(), HasSubstr("names no host"));
  StopNodes();
}

// The mark of a write one node forwarded to another counts only from a named peer: a node does
// not hand on a write a peer forwarded to it (the peer tries the key's next replica), but a
// client that sets the mark has its write coordinated as any client's.
TEST_F(TlsProcessTest, OnlyTheNamedPeersMarkAWriteAsForwarded) {
  const std::vector<int> ports = FreePorts(2);
  std::vector<std::string> flags = NodeTlsFlags();
  flags.push_back("--tls_peer_names=127.0.0.*");
  // n2 replicates about half the keys.
  for (const char* flag : {"--replication_factor=1", "--write_quorum=1"}) flags.push_back(flag);
  ASSERT_NO_FATAL_FAILURE(StartNodes(ports, flags, KvctlTls()));
  auto marked_put = [&](const std::string& cert, const std::string& key) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = testing::ReadFile(File("ca.pem"));
    ssl.pem_cert_chain = testing::ReadFile(File(cert + ".pem"));
    ssl.pem_private_key = testing::ReadFile(File(cert + ".key"));
    auto stub = v1::KV::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", ports[1]), grpc::SslCredentials(ssl)));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    context.AddMetadata("kv-forwarded-write", "1");
    v1::PutRequest request;
    request.set_key(key);
    request.set_value("v");
    v1::PutResponse response;
    return stub->Put(&context, request, &response);
  };
  // A key n2 does not replicate: the marked write of a peer is not handed on.
  std::string key;
  grpc::Status refused;
  for (int i = 0; i < 64 && key.empty(); ++i) {
    const std::string candidate = absl::StrCat("k", i);
    refused = marked_put("node", candidate);
    if (!refused.ok()) key = candidate;
  }
  ASSERT_FALSE(key.empty()) << "n2 replicates every key tried";
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("does not hand on a write"));
  const grpc::Status client = marked_put("client", key);
  EXPECT_TRUE(client.ok()) << client.error_message();
  StopNodes();
}

TEST_F(TlsProcessTest, OnlyTheNamedAdministratorsChangeTheCluster) {
  // With --tls_admin_names=kv-admin, the client certificate (kv-client) may read and write and
  // see the cluster's status, but not start a repair or change the membership.
  const std::vector<int> ports = FreePorts(2);
  std::vector<std::string> flags = NodeTlsFlags();
  flags.push_back("--tls_admin_names=kv-admin");
  flags.push_back("--tls_peer_names=127.0.0.*");  // required with --tls_admin_names
  ASSERT_NO_FATAL_FAILURE(StartNodes(ports, flags, KvctlTls()));
  ExpectLogged(0, "tls_admin_names=kv-admin");
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  EXPECT_EQ(Kvctl(n1, KvctlTls(), {"put", "k", "v"}).exit_code, 0);
  EXPECT_EQ(Kvctl(n1, KvctlTls(), {"cluster", "status"}).exit_code, 0);
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {"repair", "--peer=n2"}, {"cluster", "leave", "n2", "--commit"}}) {
    testing::CommandResult refused = Kvctl(n1, KvctlTls(), command);
    EXPECT_EQ(refused.exit_code, 3) << absl::StrJoin(command, " ") << ": " << refused.err;
    EXPECT_THAT(refused.err, HasSubstr("PERMISSION_DENIED")) << absl::StrJoin(command, " ");
    EXPECT_THAT(refused.err, HasSubstr("names kv-client")) << absl::StrJoin(command, " ");
  }
  testing::CommandResult admin = Kvctl(n1, KvctlTls("admin"), {"repair", "--peer=n2"});
  EXPECT_EQ(admin.exit_code, 0) << admin.out << admin.err;
  // Cancelling a repair is the administrators' too.
  const std::string repair_id(absl::StripAsciiWhitespace(admin.out));
  testing::CommandResult cancel = Kvctl(n1, KvctlTls(), {"operation", "cancel", repair_id});
  EXPECT_EQ(cancel.exit_code, 3) << cancel.err;
  EXPECT_THAT(cancel.err, HasSubstr("PERMISSION_DENIED"));
  // Nothing changed the membership: both nodes are still members.
  testing::CommandResult status = Kvctl(n1, KvctlTls(), {"cluster", "status"});
  EXPECT_THAT(status.out, HasSubstr("2 member(s)")) << status.out;
  StopNodes();
}

TEST_F(TlsProcessTest, ChangedFilesAreCheckedAndInstalledWithoutARestart) {
  // The nodes read live.pem, live.key and live-ca.pem, which the test replaces as an operator
  // (or a Kubernetes secret volume) would: first with a key of another certificate (refused),
  // then with a CA bundle and a certificate of the next CA (installed).
  Replace("live.pem", "node.pem");
  Replace("live.key", "node.key");
  Replace("live-ca.pem", "ca.pem");
  const std::vector<int> free_ports = FreePorts(3);
  const std::vector<int> ports = {free_ports[0], free_ports[1]};
  const int metrics_port = free_ports[2];
  ASSERT_NO_FATAL_FAILURE(
      StartNodes(ports,
                 {"--tls_cert_file=" + File("live.pem"), "--tls_key_file=" + File("live.key"),
                  "--tls_ca_file=" + File("live-ca.pem"), "--tls_reload_interval=1s"},
                 KvctlTls(), {{absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)}}));
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  const std::string n2 = absl::StrCat("127.0.0.1:", ports[1]);
  const std::vector<std::string> next = KvctlTls("next-client", "next-ca");
  EXPECT_EQ(RefusedKvctl(n1, next, {"get", "k"}).exit_code, 3);
  auto metric = [&](const std::string& series) -> double {
    absl::StatusOr<std::string> text = testing::HttpGet(metrics_port, "/metrics");
    if (!text.ok()) return -1;
    return testing::MetricSample(*text, series).value_or(-1);
  };
  EXPECT_GT(metric("kv_tls_certificate_expiry_timestamp_seconds"),
            absl::ToUnixSeconds(absl::Now()));
  EXPECT_EQ(metric("kv_tls_rotations_total"), 0);

  // A key that is not the certificate's: refused, logged, counted; new connections still work.
  Replace("live.key", "client.key");
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (metric("kv_tls_refusals_total") < 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(metric("kv_tls_refusals_total"), 1);
  ExpectLogged(0, "TLS files changed but were refused");
  ExpectLogged(0, "is not the key of --tls_cert_file");
  testing::CommandResult during = Kvctl(n1, KvctlTls(), {"put", "during", "refused", "--w=all"});
  EXPECT_EQ(during.exit_code, 0) << during.out << during.err;
  // Another wrong key, refused for the same reason, is another refusal (and one that stays is
  // counted once, whatever the reloads).
  Replace("live.key", "stranger.key");
  deadline = absl::Now() + absl::Seconds(30);
  while (metric("kv_tls_refusals_total") < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  absl::SleepFor(absl::Milliseconds(2500));  // two more reloads of the same files
  EXPECT_EQ(metric("kv_tls_refusals_total"), 2);
  EXPECT_EQ(metric("kv_tls_rotations_total"), 0);

  // The rotation: the CA bundle first, then the next CA's certificate and its key.
  Replace("live-ca.pem", "ca-bundle.pem");
  Replace("live.key", "next-node.key");
  Replace("live.pem", "next-node.pem");
  for (const std::string& node : {n1, n2}) {
    deadline = absl::Now() + absl::Seconds(30);
    testing::CommandResult r;
    do {
      r = RefusedKvctl(node, next, {"put", "rotated", "yes"});
      if (r.exit_code == 0) break;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < deadline);
    EXPECT_EQ(r.exit_code, 0) << node << " never used the new certificate: " << r.err;
  }
  ExpectLogged(0, "new connections use the new certificate");
  EXPECT_GE(metric("kv_tls_rotations_total"), 1);
  // The key rotated away leaves n1's data directory a few seconds later (gRPC no longer reads
  // it), not at the next rotation.
  const std::string old_key = testing::ReadFile(File("node.key"));
  auto holds_old_key = [&] {
    // The node may delete a directory while this walks it: any error counts as "still there",
    // and the walk is tried again.
    std::error_code error;
    std::filesystem::recursive_directory_iterator it(File("data-n1") + "/tls", error);
    for (; !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
      std::error_code file_error;
      if (it->is_regular_file(file_error) && testing::ReadFile(it->path().string()) == old_key) {
        return true;
      }
    }
    return static_cast<bool>(error);
  };
  deadline = absl::Now() + absl::Seconds(20);
  while (holds_old_key() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(holds_old_key()) << "the retired key is still under " << File("data-n1") << "/tls";
  // The node's certificate is the next CA's now, and it trusts clients of both CAs.
  EXPECT_EQ(RefusedKvctl(n1, KvctlTls("client", "ca"), {"get", "rotated"}).exit_code, 3);
  testing::CommandResult old_client = Kvctl(n1, KvctlTls("client", "next-ca"), {"get", "rotated"});
  EXPECT_EQ(old_client.exit_code, 0) << old_client.err;

  // New peer connections use the rotated files too: n1 reconnects to n2, restarted to trust the
  // next CA only, so n1 must present its new certificate (and verify n2's with its new CA file).
  for (std::string& arg : argvs_[1]) {
    if (arg == "--tls_ca_file=" + File("live-ca.pem")) arg = "--tls_ca_file=" + File("next-ca.pem");
  }
  ASSERT_NO_FATAL_FAILURE(RestartNode(1));
  ASSERT_NO_FATAL_FAILURE(WaitServing(1, ports[1], next));
  deadline = absl::Now() + absl::Seconds(30);
  testing::CommandResult all;
  do {  // n1's channel to n2 may still be waiting to reconnect
    all = Kvctl(n1, next, {"put", "after-restart", "v", "--w=all"});
    if (all.exit_code == 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  EXPECT_EQ(all.exit_code, 0) << all.out << all.err << "\nn1's log:\n" << nodes_[0].Stderr();
  StopNodes();
}

TEST_F(TlsProcessTest, AClientGivenFilePathsUsesRotatedFilesWithoutANewClient) {
  // The node reads node-live*.pem, replaced file by file (it checks each set it reads). The
  // file client reads client-tls/{ca,cert,key}.pem, where client-tls is a link to a directory
  // that the rotation replaces as a whole, as a Kubernetes Secret volume does: gRPC reads the
  // key and the certificate as two files, so they must change in one step. The node is
  // restarted after the rotation, so every client connects again.
  Replace("node-live.pem", "node.pem");
  Replace("node-live.key", "node.key");
  Replace("node-live-ca.pem", "ca.pem");
  auto client_set = [&](const std::string& set, const std::string& ca, const std::string& client) {
    std::filesystem::create_directory(File(set));
    std::filesystem::copy_file(File(ca + ".pem"), File(set + "/ca.pem"));
    std::filesystem::copy_file(File(client + ".pem"), File(set + "/cert.pem"));
    std::filesystem::copy_file(File(client + ".key"), File(set + "/key.pem"));
    std::filesystem::create_directory_symlink(File(set), File("client-tls.next"));
    std::filesystem::rename(File("client-tls.next"), File("client-tls"));
  };
  client_set("client-set-1", "ca", "client");
  const std::vector<int> ports = {testing::PickFreePort()};
  ASSERT_NO_FATAL_FAILURE(StartNodes(
      ports,
      {"--tls_cert_file=" + File("node-live.pem"), "--tls_key_file=" + File("node-live.key"),
       "--tls_ca_file=" + File("node-live-ca.pem")},
      KvctlTls()));
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);

  ClientOptions by_files;
  by_files.endpoints = {n1};
  by_files.call_deadline = absl::Seconds(5);
  by_files.tls.enabled = true;
  by_files.tls.ca_file = File("client-tls/ca.pem");
  by_files.tls.cert_file = File("client-tls/cert.pem");
  by_files.tls.key_file = File("client-tls/key.pem");
  by_files.tls.reload_interval = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Client>> watching = Client::Create(by_files);
  ASSERT_TRUE(watching.ok()) << watching.status();
  // The same certificates given as contents: used as they are for the client's lifetime.
  ClientOptions by_contents = by_files;
  by_contents.tls.ca_file.clear();
  by_contents.tls.cert_file.clear();
  by_contents.tls.key_file.clear();
  by_contents.tls.ca_pem = testing::ReadFile(File("ca.pem"));
  by_contents.tls.cert_pem = testing::ReadFile(File("client.pem"));
  by_contents.tls.key_pem = testing::ReadFile(File("client.key"));
  absl::StatusOr<std::unique_ptr<Client>> fixed = Client::Create(by_contents);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  ASSERT_TRUE((*watching)->Put("before", "by files").ok());
  ASSERT_TRUE((*fixed)->Put("before", "by contents").ok());

  // Rotation to the next CA: the client's CA bundle with its new certificate and key; the node
  // then trusts the next CA only and presents a certificate it signed.
  client_set("client-set-2", "ca-bundle", "next-client");
  Replace("node-live-ca.pem", "next-ca.pem");
  Replace("node-live.key", "next-node.key");
  Replace("node-live.pem", "next-node.pem");
  ASSERT_NO_FATAL_FAILURE(RestartNode(0));
  ASSERT_NO_FATAL_FAILURE(WaitServing(0, ports[0], KvctlTls("next-client", "next-ca")));

  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::Status put;
  do {
    put = (*watching)->Put("after", "rotated").status();
    if (put.ok()) break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  EXPECT_TRUE(put.ok()) << "the file client never used the rotated files: " << put;
  absl::StatusOr<GetResult> got = (*watching)->Get("after");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->siblings.size(), 1u);
  EXPECT_EQ(got->siblings[0].value, "rotated");
  // The contents client still presents the old CA's certificate and trusts only the old CA.
  absl::Status old = (*fixed)->Put("stale", "by contents").status();
  EXPECT_TRUE(absl::IsUnavailable(old)) << old;
  watching->reset();
  fixed->reset();
  StopNodes();
}

TEST_F(TlsProcessTest, BadTlsFilesOfTheClientLibraryAreRefusedAtCreate) {
  struct Bad {
    std::function<void(TlsOptions&)> change;
    std::string error;
  };
  const std::vector<Bad> cases = {
      {[&](TlsOptions& t) { t.ca_file = File("missing.pem"); },
       "cannot read TlsOptions::ca_file \"" + File("missing.pem") + "\": No such file"},
      {[&](TlsOptions& t) { t.ca_file = dir_.path(); }, "not a regular file"},
      {[&](TlsOptions& t) { t.ca_file = File("node.key"); },
       "ca_file \"" + File("node.key") + "\" holds no PEM certificate"},
      {[&](TlsOptions& t) { t.key_file = File("node-encrypted.key"); },
       "holds no unencrypted PEM private key"},
      {[&](TlsOptions& t) { t.key_file = ""; }, "both cert_file and key_file"},
      {[&](TlsOptions& t) { t.ca_file = ""; }, "TlsOptions::ca_file is empty"},
      {[&](TlsOptions& t) { t.ca_pem = testing::ReadFile(File("ca.pem")); }, "not both"},
      {[&](TlsOptions& t) { t.reload_interval = absl::Milliseconds(500); }, "at least 1s"},
      {[&](TlsOptions& t) { t.ca_file = File("fifo"); }, "not a regular file"},
      {[&](TlsOptions& t) { t.enabled = false; }, "TlsOptions::enabled is false"},
      // PEM contents instead of files, with TLS left off: refused as well, not plaintext.
      {[&](TlsOptions& t) {
         t = TlsOptions{};
         t.ca_pem = testing::ReadFile(File("ca.pem"));
       },
       "holds PEM contents but TlsOptions::enabled is false"},
  };
  ASSERT_EQ(mkfifo(File("fifo").c_str(), 0600), 0);  // opening it for reading must not block
  for (const Bad& bad : cases) {
    ClientOptions options;
    options.endpoints = {"127.0.0.1:1"};
    options.tls.enabled = true;
    options.tls.ca_file = File("ca.pem");
    options.tls.cert_file = File("client.pem");
    options.tls.key_file = File("client.key");
    ASSERT_TRUE(Client::Create(options).ok());
    bad.change(options.tls);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(absl::IsInvalidArgument(client.status())) << bad.error << ": " << client.status();
    EXPECT_THAT(client.status().message(), HasSubstr(bad.error));
  }
}

TEST_F(TlsProcessTest, KvprobeSpeaksTlsWithTheNodesOwnFiles) {
  const std::vector<int> ports = {testing::PickFreePort()};
  ASSERT_NO_FATAL_FAILURE(StartNodes(ports, NodeTlsFlags(), KvctlTls()));
  const std::string n1 = absl::StrCat("127.0.0.1:", ports[0]);
  // The variables the image's entrypoint turns into the node's --listen and --tls_* flags.
  const std::map<std::string, std::string> image_env = {
      {"KVNODE_LISTEN", absl::StrCat("0.0.0.0:", ports[0])},
      {"KVNODE_TLS_CA_FILE", File("ca.pem")},
      {"KVNODE_TLS_CERT_FILE", File("node.pem")},
      {"KVNODE_TLS_KEY_FILE", File("node.key")}};
  testing::CommandResult probe = Probe({KVPROBE_PATH, "--timeout=10"}, image_env);
  EXPECT_EQ(probe.exit_code, 0) << probe.err;
  EXPECT_EQ(probe.out, n1 + " SERVING\n");
  // With the node's data directory it uses the set the node installed and serves with, even when
  // the configured files changed into something the node refused (here: another CA's).
  std::map<std::string, std::string> refused_env = image_env;
  refused_env["KVNODE_TLS_CA_FILE"] = File("other-ca.pem");
  refused_env["KVNODE_TLS_CERT_FILE"] = File("stranger.pem");
  refused_env["KVNODE_TLS_KEY_FILE"] = File("stranger.key");
  testing::CommandResult stale = Probe({KVPROBE_PATH, "--timeout=10"}, refused_env);
  EXPECT_EQ(stale.exit_code, 1) << stale.out << stale.err;
  refused_env["KVNODE_DATA_DIR"] = File("data-n1");
  testing::CommandResult installed = Probe({KVPROBE_PATH, "--timeout=10"}, refused_env);
  EXPECT_EQ(installed.exit_code, 0) << installed.out << installed.err;
  EXPECT_EQ(installed.out, n1 + " SERVING\n");

  // Refused like any client: plaintext, no client certificate, a CA that did not sign the node's.
  struct Refused {
    const char* what;
    std::vector<std::string> flags;
  };
  for (const Refused& refused : std::vector<Refused>{
           {"plaintext", {"--plaintext"}},
           {"no client certificate", {"--tls-ca=" + File("ca.pem")}},
           {"node's CA not trusted",
            {"--tls-ca=" + File("other-ca.pem"), "--tls-cert=" + File("client.pem"),
             "--tls-key=" + File("client.key")}},
       }) {
    std::vector<std::string> argv = {KVPROBE_PATH, "--addr=" + n1, "--timeout=10"};
    argv.insert(argv.end(), refused.flags.begin(), refused.flags.end());
    testing::CommandResult r = Probe(argv, {});
    EXPECT_EQ(r.exit_code, 1) << refused.what << ": " << r.out << r.err;
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr("SERVING"))) << refused.what;
  }
  // Its own bad TLS settings are usage errors (exit 2), before anything is sent.
  for (const auto& [flags, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--tls-ca=" + File("absent.pem")}, "cannot read: No such file"},
           {{"--tls-ca=" + dir_.path()}, "cannot read: not a regular file"},
           {{"--tls-ca=" + File("node.ext")}, "is not PEM"},
           {{"--tls-ca=" + File("ca.pem"), "--tls-cert=" + File("client.pem")}, "go together"},
           {{"--tls-cert=" + File("client.pem"), "--tls-key=" + File("client.key")},
            "needs --tls-ca"},
           {{"--plaintext", "--tls-ca=" + File("ca.pem")}, "contradict"},
       }) {
    std::vector<std::string> argv = {KVPROBE_PATH, "--addr=" + n1};
    argv.insert(argv.end(), flags.begin(), flags.end());
    testing::CommandResult r = Probe(argv, {});
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(flags, " ") << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(message)) << absl::StrJoin(flags, " ");
  }
  StopNodes();
}

TEST_F(TlsProcessTest, BadTlsSettingsStopTheNodeBeforeItTouchesItsData) {
  const std::string listen = absl::StrCat("--listen=127.0.0.1:", testing::PickFreePort());
  struct Case {
    std::vector<std::string> flags;
    int exit_code;
    std::string message;
  };
  const std::string cert = "--tls_cert_file=" + File("node.pem");
  const std::string key = "--tls_key_file=" + File("node.key");
  const std::string ca = "--tls_ca_file=" + File("ca.pem");
  for (const Case& c : std::vector<Case>{
           {{cert}, 2, "TLS needs all of --tls_cert_file, --tls_key_file and --tls_ca_file"},
           {{cert, key}, 2, "TLS needs all of"},
           {{cert, "--tls_key_file=" + File("absent.key"), ca}, 1, "cannot read --tls_key_file"},
           {{cert, "--tls_key_file=" + File("client.key"), ca}, 1, "is not the key of"},
           {{"--tls_cert_file=" + File("node.key"), key, ca},
            1,
            "--tls_cert_file \\\"" + File("node.key") + "\\\" holds no PEM certificate"},
           {{cert, key, "--tls_ca_file=" + File("node.ext")}, 1, "holds no PEM certificate"},
           {{cert, "--tls_key_file=" + File("node.pem"), ca}, 1, "holds no unencrypted PEM"},
           {{cert, "--tls_key_file=" + File("node-encrypted.key"), ca},
            1,
            "holds no unencrypted PEM"},
           {{cert, "--tls_key_file=" + dir_.path(), ca}, 1, "not a regular file"},
           {{"--tls_cert_file=" + File("stranger.pem"), "--tls_key_file=" + File("stranger.key"),
             ca},
            1,
            "is not verified by --tls_ca_file"},
           {{"--tls_cert_file=" + File("expired.pem"), "--tls_key_file=" + File("expired.key"), ca},
            1,
            "expired at"},
           {{cert, key, ca, "--tls_reload_interval=500ms"}, 2, "0 (never) or a duration"},
           {{cert, key, ca, "--tls_peer_names=no/de"}, 2, "may hold only"},
           {{cert, key, ca, "--tls_peer_names=,"}, 2, "patterns separated by commas"},
           {{cert, key, ca, "--tls_admin_names=a b"}, 2, "may hold only"},
           {{cert, key, ca, "--tls_admin_names=kv-admin"},
            2,
            "--tls_admin_names needs --tls_peer_names"},
           {{"--tls_admin_names=kv-admin"}, 2, "--tls_admin_names needs mutual TLS"},
           {{cert, key, ca, "--tls_client_auth=false", "--tls_peer_names=node*"},
            2,
            "--tls_peer_names needs mutual TLS"},
           {{"--tls_peer_names=node*"}, 2, "--tls_peer_names needs mutual TLS"},
       }) {
    const std::string data_dir = File("never");
    std::vector<std::string> argv = {KVNODE_PATH, "--data_dir=" + data_dir, listen};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    testing::CommandResult r = testing::RunCommand(argv);
    const std::string what = absl::StrJoin(c.flags, " ");
    EXPECT_EQ(r.exit_code, c.exit_code) << what << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << what;
    EXPECT_FALSE(std::filesystem::exists(data_dir)) << what;
  }
  // kvctl: its own TLS flags are checked before anything is sent.
  const std::string endpoint = "127.0.0.1:1";
  for (const auto& [flags, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--tls-cert=" + File("client.pem"), "--tls-key=" + File("client.key")},
            "need --tls-ca"},
           {{"--tls-ca=" + File("ca.pem"), "--tls-cert=" + File("client.pem")}, "go together"},
           {{"--tls-ca=" + File("absent.pem")}, "cannot read"},
           {{"--tls-ca=" + File("node.key")},
            "--tls-ca: \"" + File("node.key") + "\" holds no PEM certificate"},
           {{"--tls-ca=" + File("ca.pem"), "--tls-cert=" + File("client.key"),
             "--tls-key=" + File("client.key")},
            "--tls-cert: \"" + File("client.key") + "\" holds no PEM certificate"},
           {{"--tls-ca=" + File("ca.pem"), "--tls-cert=" + File("client.pem"),
             "--tls-key=" + File("node-encrypted.key")},
            "--tls-key: \"" + File("node-encrypted.key") +
                "\" holds no unencrypted PEM private key"},
       }) {
    testing::CommandResult r = Kvctl(endpoint, flags, {"get", "k"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr(message));
  }
}

}  // namespace
}  // namespace kv

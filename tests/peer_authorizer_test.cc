// PeerAuthorizer's patterns (node/peer_authorizer.h): what `*` matches, case, validation. The
// check of a real caller's certificate is in tests/tls_process_test.cc.
#include "node/peer_authorizer.h"

#include "gtest/gtest.h"

namespace kv {
namespace {

TEST(PeerAuthorizerTest, StarMatchesWithinOneLabel) {
  EXPECT_TRUE(PeerAuthorizer::Matches("node*", "node1"));
  EXPECT_TRUE(PeerAuthorizer::Matches("node*", "node"));
  EXPECT_FALSE(PeerAuthorizer::Matches("node*", "node1.example"));
  EXPECT_FALSE(PeerAuthorizer::Matches("node*", "kvctl"));
  EXPECT_TRUE(PeerAuthorizer::Matches("*.kvnode.prod.svc.cluster.local",
                                      "kvnode-0.kvnode.prod.svc.cluster.local"));
  EXPECT_FALSE(PeerAuthorizer::Matches("*.kvnode.prod.svc.cluster.local",
                                       "a.b.kvnode.prod.svc.cluster.local"));
  EXPECT_FALSE(PeerAuthorizer::Matches("*.kvnode.prod.svc.cluster.local",
                                       "kvnode-0.kvnode.staging.svc.cluster.local"));
  EXPECT_TRUE(PeerAuthorizer::Matches("10.0.0.*", "10.0.0.17"));
  EXPECT_FALSE(PeerAuthorizer::Matches("10.0.0.*", "10.0.1.17"));
  EXPECT_TRUE(PeerAuthorizer::Matches("a*b*c", "axxbyyc"));
  EXPECT_FALSE(PeerAuthorizer::Matches("a*b*c", "axxbyy"));
  EXPECT_TRUE(PeerAuthorizer::Matches("*", "anything"));
  EXPECT_FALSE(PeerAuthorizer::Matches("*", "two.labels"));
}

TEST(PeerAuthorizerTest, ExactNamesAndCase) {
  EXPECT_TRUE(PeerAuthorizer::Matches("127.0.0.1", "127.0.0.1"));
  EXPECT_FALSE(PeerAuthorizer::Matches("127.0.0.1", "127.0.0.10"));
  EXPECT_FALSE(PeerAuthorizer::Matches("127.0.0.10", "127.0.0.1"));
  EXPECT_TRUE(PeerAuthorizer::Matches("Node1.Example", "node1.example"));
  EXPECT_FALSE(PeerAuthorizer::Matches("node1", ""));
}

TEST(PeerAuthorizerTest, ValidatesPatterns) {
  EXPECT_TRUE(PeerAuthorizer::ValidatePattern("node*").ok());
  EXPECT_TRUE(PeerAuthorizer::ValidatePattern("fd00::1").ok());
  EXPECT_TRUE(PeerAuthorizer::ValidatePattern("*.kvnode.prod.svc.cluster.local").ok());
  EXPECT_FALSE(PeerAuthorizer::ValidatePattern("").ok());
  EXPECT_FALSE(PeerAuthorizer::ValidatePattern("no/de").ok());
  EXPECT_FALSE(PeerAuthorizer::ValidatePattern("node 1").ok());
  EXPECT_FALSE(PeerAuthorizer::ValidatePattern(std::string(254, 'a')).ok());
}

}  // namespace
}  // namespace kv

// CertificateAuthorizer's patterns (node/certificate_authorizer.h): what `*` matches, case,
// validation. The check of a real caller's certificate is in tests/tls_process_test.cc.
#include "node/certificate_authorizer.h"

#include "gtest/gtest.h"

namespace kv {
namespace {

TEST(CertificateAuthorizerTest, StarMatchesWithinOneLabel) {
  EXPECT_TRUE(CertificateAuthorizer::Matches("node*", "node1"));
  EXPECT_TRUE(CertificateAuthorizer::Matches("node*", "node"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("node*", "node1.example"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("node*", "kvctl"));
  EXPECT_TRUE(CertificateAuthorizer::Matches("*.kvnode.prod.svc.cluster.local",
                                             "kvnode-0.kvnode.prod.svc.cluster.local"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("*.kvnode.prod.svc.cluster.local",
                                              "a.b.kvnode.prod.svc.cluster.local"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("*.kvnode.prod.svc.cluster.local",
                                              "kvnode-0.kvnode.staging.svc.cluster.local"));
  EXPECT_TRUE(CertificateAuthorizer::Matches("10.0.0.*", "10.0.0.17"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("10.0.0.*", "10.0.1.17"));
  EXPECT_TRUE(CertificateAuthorizer::Matches("a*b*c", "axxbyyc"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("a*b*c", "axxbyy"));
  EXPECT_TRUE(CertificateAuthorizer::Matches("*", "anything"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("*", "two.labels"));
}

TEST(CertificateAuthorizerTest, ExactNamesAndCase) {
  EXPECT_TRUE(CertificateAuthorizer::Matches("127.0.0.1", "127.0.0.1"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("127.0.0.1", "127.0.0.10"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("127.0.0.10", "127.0.0.1"));
  EXPECT_TRUE(CertificateAuthorizer::Matches("Node1.Example", "node1.example"));
  EXPECT_FALSE(CertificateAuthorizer::Matches("node1", ""));
}

TEST(CertificateAuthorizerTest, ValidatesPatterns) {
  EXPECT_TRUE(CertificateAuthorizer::ValidatePattern("node*").ok());
  EXPECT_TRUE(CertificateAuthorizer::ValidatePattern("fd00::1").ok());
  EXPECT_TRUE(CertificateAuthorizer::ValidatePattern("*.kvnode.prod.svc.cluster.local").ok());
  EXPECT_FALSE(CertificateAuthorizer::ValidatePattern("").ok());
  EXPECT_FALSE(CertificateAuthorizer::ValidatePattern("no/de").ok());
  EXPECT_FALSE(CertificateAuthorizer::ValidatePattern("node 1").ok());
  EXPECT_FALSE(CertificateAuthorizer::ValidatePattern(std::string(254, 'a')).ok());
}

}  // namespace
}  // namespace kv

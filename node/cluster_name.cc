#include "node/cluster_name.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node/ring.h"

namespace kv {
namespace {

class ClusterNameInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ClusterNameInterceptor(const std::string* name) : name_(name) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kClusterNameMetadata, *name_);
    }
    methods->Proceed();
  }

 private:
  const std::string* const name_;  // the factory's, which the channel keeps
};

class ClusterNameInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ClusterNameInterceptorFactory(std::string name) : name_(std::move(name)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new ClusterNameInterceptor(&name_);
  }

 private:
  const std::string name_;
};

}  // namespace

bool IsValidClusterName(absl::string_view name) { return IsWellFormedNodeId(name); }

std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
ClusterNameInterceptors(std::string name) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<ClusterNameInterceptorFactory>(std::move(name)));
  return factories;
}

absl::Status RefuseOtherCluster(grpc::ServerContextBase* context, absl::string_view own) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(kClusterNameMetadata);
  if (it == metadata.end()) return absl::OkStatus();
  const absl::string_view theirs(it->second.data(), it->second.size());
  if (theirs == own) return absl::OkStatus();
  context->AddTrailingMetadata(kClusterMismatchMetadata, std::string(own));
  return absl::UnavailableError(
      absl::StrCat("the calling node belongs to cluster \"", absl::CHexEscape(theirs.substr(0, 64)),
                   "\" and this node to cluster \"", own,
                   "\": nodes of different clusters do not exchange data or membership (check the "
                   "callers' --peers and --seeds, and --cluster_name on both)"));
}

}  // namespace kv

#include "node/history_check.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "node/membership.h"
#include "storage/steady_timer.h"

namespace kv {
namespace {

// What the callbacks fill in; shared with them, as some may run after the call returned.
struct Tally {
  absl::Mutex mu;
  PeerGenerations result ABSL_GUARDED_BY(mu);
  size_t pending ABSL_GUARDED_BY(mu) = 0;
  SteadyCondition all_answered;  // notified when `pending` reaches 0
};

}  // namespace

PeerGenerations AskPeerGenerations(GossipTransport* transport, const std::string& node_id,
                                   const std::vector<std::string>& self_addresses,
                                   const std::vector<std::string>& addresses,
                                   absl::Duration timeout) {
  auto tally = std::make_shared<Tally>();
  {
    absl::MutexLock lock(&tally->mu);
    tally->pending = addresses.size();
    tally->result.asked = addresses.size();
  }
  for (const std::string& address : addresses) {
    GossipDigest ask;  // an empty table: the peer keeps the entry of this node's last run
    ask.from_id = node_id;
    transport->Gossip(
        address, std::move(ask),
        [tally, node_id, self_addresses, address](absl::StatusOr<GossipDigest> reply) {
          absl::MutexLock lock(&tally->mu);
          if (--tally->pending == 0) tally->all_answered.Notify();
          if (!reply.ok()) return;
          ++tally->result.answered;
          for (const MemberEntry& entry : reply->members) {
            const bool mine = entry.member.id == node_id &&
                              std::find(self_addresses.begin(), self_addresses.end(),
                                        entry.member.address) != self_addresses.end();
            if (!mine) continue;
            for (const uint64_t generation : {entry.generation, entry.earlier_generation}) {
              if (generation > kMaxPeerGeneration) continue;
              if (generation > tally->result.highest) {
                tally->result.highest = generation;
                tally->result.highest_from = address;
              }
            }
          }
        });
  }
  absl::MutexLock lock(&tally->mu);
  tally->all_answered.AwaitWithTimeout(
      &tally->mu,
      absl::Condition(
          +[](size_t* pending) { return *pending == 0; }, &tally->pending),
      timeout);
  return tally->result;
}

}  // namespace kv

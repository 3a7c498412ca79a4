// FailureDetector: judges members UP or DOWN from when their gossiped heartbeat last advanced.
//
// A heartbeat-timeout detector: a watched member is DOWN once `timeout` has passed since its
// heartbeat last advanced (or since watching began, if it never did), and UP again as soon as its
// heartbeat advances. Members start UNKNOWN. Time comes only from the arguments, so the detector
// runs unchanged on a manual clock or in the simulation. With gossip every `interval` to one
// random peer, news of a heartbeat reaches every node in O(log n) rounds; the timeout should be
// several intervals (the node's settings require at least 3) so that one lost exchange does not
// mark a live member down.
//
// Every change of judgement is recorded as a Transition, taken by TakeTransitions, so that the
// owner can act on changes outside its lock. Not thread-safe: the owner serialises calls.
#ifndef KV_NODE_FAILURE_DETECTOR_H_
#define KV_NODE_FAILURE_DETECTOR_H_

#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "node/membership.h"

namespace kv {

class FailureDetector {
 public:
  struct Transition {
    std::string member_id;
    Liveness from;
    Liveness to;
  };

  explicit FailureDetector(absl::Duration timeout) : timeout_(timeout) {}

  // Starts watching `member_id` (UNKNOWN) if not watched yet; its timeout runs from `now`.
  void Watch(absl::string_view member_id, absl::Time now);
  // The member's heartbeat advanced at `now`: it is UP (watched first if needed).
  void Heard(absl::string_view member_id, absl::Time now);
  // Members never heard from get their timeout restarted at `now` (for a node whose start-up
  // took longer than the timeout after it began watching).
  void RestartUnheard(absl::Time now);
  // Marks DOWN every watched member not heard from for the timeout.
  void Evaluate(absl::Time now);
  // Stops watching `member_id`, recording no transition (a member forgotten by its owner).
  void Forget(absl::string_view member_id);

  // kUnknown for members that are not watched.
  Liveness Get(absl::string_view member_id) const;
  // When the member's heartbeat last advanced; InfinitePast if never (or not watched).
  absl::Time LastHeard(absl::string_view member_id) const;
  // When its silence began: the later of LastHeard and when watching began; InfinitePast if not
  // watched.
  absl::Time SilentSince(absl::string_view member_id) const;
  // The changes of judgement since the last call, in the order they happened.
  std::vector<Transition> TakeTransitions();

  absl::Duration timeout() const { return timeout_; }

 private:
  struct State {
    Liveness liveness = Liveness::kUnknown;
    absl::Time watched_since;
    absl::Time last_heard = absl::InfinitePast();
  };
  void Set(const std::string& member_id, State* state, Liveness to);

  const absl::Duration timeout_;
  std::map<std::string, State, std::less<>> members_;
  std::vector<Transition> transitions_;
};

}  // namespace kv

#endif  // KV_NODE_FAILURE_DETECTOR_H_

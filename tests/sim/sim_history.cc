#include "tests/sim/sim_history.h"

namespace kv::sim {

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kPending:
      return "pending";
    case Outcome::kOk:
      return "ok";
    case Outcome::kNotFound:
      return "not-found";
    case Outcome::kGaveUp:
      return "gave-up";
    case Outcome::kFailed:
      return "failed";
  }
  return "?";
}

}  // namespace kv::sim

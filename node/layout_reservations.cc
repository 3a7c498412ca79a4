#include "node/layout_reservations.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "storage/status_macros.h"

namespace kv {
namespace {

// Why this member's layout `current` cannot take a layout of `version`; OK if it can: the version
// after it (during a transition, its completion or a removal of members down, as Accept checks).
absl::Status CheckFollows(uint64_t version, const ClusterLayout& current, const char* what) {
  if (current.version + 1 < version) {
    return absl::UnavailableError(absl::StrCat("this member has not learned layout version ",
                                               version - 1, " yet (it is at ", current.version,
                                               "); gossip brings it within seconds, retry"));
  }
  if (current.version + 1 > version) {
    return absl::FailedPreconditionError(absl::StrCat("this member's cluster layout is at version ",
                                                      current.version, ", so version ", version,
                                                      " cannot be ", what, " here; plan again"));
  }
  return absl::OkStatus();
}

bool SameState(const LayoutAcceptorState& a, const LayoutAcceptorState& b) {
  return a.version == b.version && a.promised == b.promised &&
         a.accepted_ballot == b.accepted_ballot &&
         a.accepted.has_value() == b.accepted.has_value() &&
         (!a.accepted.has_value() || SameLayout(*a.accepted, *b.accepted));
}

}  // namespace

LayoutQuorum::LayoutQuorum(const ClusterLayout& current) {
  transition_ = current.in_transition();
  for (const Member& m : current.members) {
    if (current.NamesDown(m.id)) {
      down_.push_back(m.id);
      continue;
    }
    asked_.push_back(m);
    weights_.push_back(!transition_ ? 1 : current.IsNextOwner(m.id) ? 2 : 1);
  }
  if (transition_) {
    for (const Member& m : current.next) {
      if (current.IsOwner(m.id)) continue;
      asked_.push_back(m);
      weights_.push_back(1);
    }
  }
  for (const size_t w : weights_) total_ += w;
}

bool LayoutQuorum::Granted(const std::vector<bool>& granted) const {
  return 2 * Weight(granted) > total_;
}

bool LayoutQuorum::Lost(const std::vector<bool>& refused) const {
  return 2 * (total_ - Weight(refused)) <= total_;
}

std::string LayoutQuorum::Describe(const std::vector<bool>& granted) const {
  size_t count = 0;
  for (size_t i = 0; i < asked_.size() && i < granted.size(); ++i) count += granted[i] ? 1 : 0;
  std::string text = absl::StrCat(count, " of ", asked_.size(), " members");
  if (transition_) {
    absl::StrAppend(&text, " (", Weight(granted), " of ", total_,
                    " votes: a member that stays has two, one joining or leaving one");
    if (!down_.empty()) absl::StrAppend(&text, ", ", absl::StrJoin(down_, ", "), " down: none");
    absl::StrAppend(&text, ")");
  }
  return text;
}

size_t LayoutQuorum::Weight(const std::vector<bool>& flags) const {
  size_t weight = 0;
  for (size_t i = 0; i < asked_.size() && i < flags.size(); ++i)
    weight += flags[i] ? weights_[i] : 0;
  return weight;
}

LayoutPromise LayoutReservations::Reserve(const LayoutBallot& ballot, uint64_t version,
                                          absl::string_view change, const ClusterLayout& current) {
  LayoutPromise promise;
  if (!IsWellFormedNodeId(ballot.proposer) || ballot.round == 0 || ballot.round > kMaxLayoutRound) {
    promise.status = absl::InvalidArgumentError(
        "a reservation needs a proposer (a node id) and a round (at most 2^62)");
    return promise;
  }
  promise.status = CheckFollows(version, current, "reserved");
  if (!promise.status.ok()) return promise;
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  promise.status = CheckNotBehindState(version);
  if (!promise.status.ok()) return promise;
  LayoutAcceptorState next = StateFor(version);
  const bool leased = state_.version == version && now < expiry_;
  promise.promised_round = next.promised.round;
  if (leased && next.promised.proposer != ballot.proposer) {
    promise.status = absl::FailedPreconditionError(absl::StrFormat(
        "layout version %d is reserved by %s for \"%s\" for %s more: another membership change "
        "is being committed (kvctl cluster status shows it once it is), or failed without "
        "releasing it (this member did not hear the release); plan again after that",
        version, next.promised.proposer, change_,
        absl::FormatDuration(absl::Ceil(expiry_ - now, absl::Seconds(1)))));
    return promise;
  }
  if (ballot < next.promised) {
    promise.status = absl::AbortedError(
        absl::StrCat("layout version ", version, " was promised to round ", next.promised.round,
                     " of ", next.promised.proposer, "; retry with a later round"));
    return promise;
  }
  next.promised = ballot;
  promise.status = Store(next);
  if (!promise.status.ok()) return promise;
  change_ = std::string(change);
  expiry_ = now + options_.lease;
  promise.promised_round = ballot.round;
  promise.accepted = state_.accepted;
  promise.accepted_ballot = state_.accepted_ballot;
  return promise;
}

absl::Status LayoutReservations::Accept(const LayoutBallot& ballot, const ClusterLayout& layout,
                                        const ClusterLayout& current) {
  if (!IsWellFormedNodeId(ballot.proposer) || ballot.round == 0 || ballot.round > kMaxLayoutRound) {
    return absl::InvalidArgumentError(
        "an accept needs a proposer (a node id) and a round (at most 2^62)");
  }
  if (current.version == layout.version) {
    if (SameLayout(current, layout)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("this member holds another layout of version ", layout.version, ": ",
                     DescribeLayout(current)));
  }
  KV_RETURN_IF_ERROR(CheckFollows(layout.version, current, "accepted"));
  if (current.in_transition() && !SameLayout(layout, CompleteTransition(current)) &&
      !IsRemovalDuring(current, layout)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this member's cluster layout (", DescribeLayout(current),
        ") is a membership change under way: only its completion or a cluster remove of a "
        "member down for good may follow it, not ",
        DescribeLayout(layout), "; commit the next change once it completes"));
  }
  if (!current.in_transition() && !SameMembers(layout.members, current.members)) {
    // Every change starts from the current owners.
    return absl::FailedPreconditionError(absl::StrCat("layout ", DescribeLayout(layout),
                                                      " does not start from this member's (",
                                                      DescribeLayout(current), "); plan again"));
  }
  absl::MutexLock lock(&mu_);
  KV_RETURN_IF_ERROR(CheckNotBehindState(layout.version));
  LayoutAcceptorState next = StateFor(layout.version);
  if (ballot < next.promised) {
    return absl::AbortedError(absl::StrCat("layout version ", layout.version,
                                           " was promised to round ", next.promised.round, " of ",
                                           next.promised.proposer, " since; nothing accepted"));
  }
  const bool new_promise = !(next.promised == ballot);  // accepting promises the ballot too
  next.promised = ballot;
  next.accepted = layout;
  next.accepted_ballot = ballot;
  KV_RETURN_IF_ERROR(Store(std::move(next)));
  if (new_promise) {
    change_ = layout.change;
    expiry_ = clock_->Now() + options_.lease;
  }
  return absl::OkStatus();
}

void LayoutReservations::Release(const LayoutBallot& ballot, uint64_t version) {
  absl::MutexLock lock(&mu_);
  if (state_.version == version && state_.promised == ballot) expiry_ = absl::InfinitePast();
}

absl::Status LayoutReservations::CheckNotBehindState(uint64_t version) const {
  if (state_.version <= version) return absl::OkStatus();
  // The layout the caller checked against is older than what this member promised already (a
  // restart before the newer layout was stored, or a request that stalled): never go back.
  return absl::FailedPreconditionError(
      absl::StrCat("this member has promised layout version ", state_.version, " already, so ",
                   version, " cannot be reserved or accepted here; plan again"));
}

LayoutAcceptorState LayoutReservations::StateFor(uint64_t version) const {
  if (state_.version == version) return state_;
  LayoutAcceptorState fresh;  // nothing promised or accepted of this version here yet
  fresh.version = version;
  return fresh;
}

void LayoutReservations::Restore(LayoutAcceptorState state) {
  absl::MutexLock lock(&mu_);
  state_ = std::move(state);
  change_.clear();
  expiry_ = absl::InfinitePast();
}

bool LayoutReservations::LeasedToAnother(absl::string_view proposer) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  return state_.promised.proposer != proposer && now < expiry_;
}

LayoutAcceptorState LayoutReservations::State() {
  absl::MutexLock lock(&mu_);
  return state_;
}

absl::Status LayoutReservations::Store(LayoutAcceptorState next) {
  if (SameState(next, state_)) return absl::OkStatus();
  if (options_.persist) {
    if (absl::Status stored = options_.persist(next); !stored.ok()) {
      return absl::UnavailableError(
          absl::StrCat("this member could not store its promise: ", stored.message()));
    }
  }
  state_ = std::move(next);
  return absl::OkStatus();
}

}  // namespace kv

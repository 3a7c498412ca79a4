#include "node/layout_reservations.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kv {

absl::Status LayoutReservations::Reserve(absl::string_view proposer, uint64_t version,
                                         absl::string_view change, uint64_t current,
                                         bool in_transition) {
  if (proposer.empty()) return absl::InvalidArgumentError("a reservation needs a proposer id");
  if (current + 1 < version) {
    return absl::UnavailableError(absl::StrCat("this member has not learned layout version ",
                                               version - 1, " yet (it is at ", current,
                                               "); gossip brings it within seconds, retry"));
  }
  if (current + 1 > version) {
    return absl::FailedPreconditionError(absl::StrCat("this member's cluster layout is at version ",
                                                      current, ", so version ", version,
                                                      " cannot be reserved here; plan again"));
  }
  if (in_transition) {
    return absl::FailedPreconditionError(
        absl::StrCat("this member's cluster layout (version ", current,
                     ") is a membership change under way; commit the next one once it completes"));
  }
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  if (version_ == version && holder_ != proposer && now < expiry_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "layout version %d is reserved by %s for \"%s\" for %s more: another membership change "
        "is being committed (kvctl cluster status shows it once it is), or failed and holds the "
        "version until then; plan again after that",
        version, holder_, change_,
        absl::FormatDuration(absl::Ceil(expiry_ - now, absl::Seconds(1)))));
  }
  version_ = version;
  holder_ = std::string(proposer);
  change_ = std::string(change);
  expiry_ = now + options_.lease;
  return absl::OkStatus();
}

}  // namespace kv

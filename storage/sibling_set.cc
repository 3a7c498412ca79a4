#include "storage/sibling_set.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kv {
namespace {

bool DotLess(const Sibling& a, const Sibling& b) { return a.dot < b.dot; }

// Two replicas holding the same dot hold the same write, so the copies are equal. Should they
// differ anyway (a bug elsewhere), pick by content so that Merge stays commutative.
const Sibling& PickCopy(const Sibling& a, const Sibling& b) {
  auto rank = [](const Sibling& s) {
    return std::tie(s.tombstone, s.value, s.timestamp_micros, s.idempotency_token);
  };
  return rank(b) < rank(a) ? b : a;
}

// Keeps, among siblings sharing a non-empty idempotency token, only the one with the smallest
// dot. `siblings` is sorted by dot, so that is the first one met.
void DedupByToken(std::vector<Sibling>* siblings) {
  std::set<absl::string_view> tokens;  // views into *siblings, which is not modified meanwhile
  std::vector<bool> keep(siblings->size());
  bool any_dropped = false;
  for (size_t i = 0; i < siblings->size(); ++i) {
    const std::string& token = (*siblings)[i].idempotency_token;
    keep[i] = token.empty() || tokens.insert(token).second;
    any_dropped |= !keep[i];
  }
  if (!any_dropped) return;
  std::vector<Sibling> kept;
  kept.reserve(siblings->size());
  for (size_t i = 0; i < siblings->size(); ++i) {
    if (keep[i]) kept.push_back(std::move((*siblings)[i]));
  }
  *siblings = std::move(kept);
}

}  // namespace

bool SiblingSet::AllTombstones() const {
  return std::all_of(siblings_.begin(), siblings_.end(),
                     [](const Sibling& s) { return s.tombstone; });
}

std::vector<Sibling> SiblingSet::LiveSiblings() const {
  std::vector<Sibling> live;
  for (const Sibling& s : siblings_) {
    if (!s.tombstone) live.push_back(s);
  }
  DedupByToken(&live);
  return live;
}

Dot SiblingSet::ApplyWrite(absl::string_view actor, const CausalContext& seen, Sibling sibling,
                           uint64_t min_counter) {
  siblings_.erase(std::remove_if(siblings_.begin(), siblings_.end(),
                                 [&seen](const Sibling& s) { return seen.Covers(s.dot); }),
                  siblings_.end());
  const uint64_t counter = std::max({context_.Get(actor), seen.MaxCounter(actor), min_counter}) + 1;
  Dot dot{std::string(actor), counter};
  context_.Merge(seen.vv());
  context_.Advance(actor, counter);
  sibling.dot = dot;
  auto pos = std::upper_bound(siblings_.begin(), siblings_.end(), sibling, DotLess);
  siblings_.insert(pos, std::move(sibling));
  return dot;
}

CausalContext SiblingSet::ContextAfterWrite(const CausalContext& seen, const Dot& new_dot) const {
  // Only the new version is left: every other dot this set has seen was replaced, so claiming
  // all of them replaces nothing live that the writer has not seen.
  if (siblings_.size() == 1 && siblings_[0].dot == new_dot) return CausalContext(context_);
  CausalContext result = seen;
  result.PruneCoveredBy(context_);
  // AddDot skips only dots covered by result.vv() (== seen.vv()); new_dot is above every counter
  // of its actor in `seen`, so it is kept even though context_ covers it.
  result.AddDot(new_dot);
  return result;
}

void SiblingSet::Merge(const SiblingSet& other) {
  if (&other == this) {  // the loop below moves from siblings_
    const SiblingSet copy = other;
    Merge(copy);
    return;
  }
  std::vector<Sibling> merged;
  merged.reserve(siblings_.size() + other.siblings_.size());
  auto mine = siblings_.begin();
  auto theirs = other.siblings_.begin();
  while (mine != siblings_.end() || theirs != other.siblings_.end()) {
    if (theirs == other.siblings_.end() || (mine != siblings_.end() && mine->dot < theirs->dot)) {
      // Only we hold it: it survives unless the other side saw it and replaced it.
      if (!other.context_.Covers(mine->dot)) merged.push_back(std::move(*mine));
      ++mine;
    } else if (mine == siblings_.end() || theirs->dot < mine->dot) {
      if (!context_.Covers(theirs->dot)) merged.push_back(*theirs);
      ++theirs;
    } else {
      merged.push_back(PickCopy(*mine, *theirs));
      ++mine;
      ++theirs;
    }
  }
  siblings_ = std::move(merged);
  context_.Merge(other.context_);
}

absl::Status SiblingSet::CheckInvariants() const {
  for (size_t i = 0; i < siblings_.size(); ++i) {
    const Dot& dot = siblings_[i].dot;
    if (dot.counter == 0) {
      return absl::DataLossError(absl::StrCat("sibling ", i, " has counter 0 in ", ToString()));
    }
    if (i > 0 && !(siblings_[i - 1].dot < dot)) {
      return absl::DataLossError(
          absl::StrCat("siblings not sorted by unique dot at ", i, " in ", ToString()));
    }
    if (!context_.Covers(dot)) {
      return absl::DataLossError(absl::StrCat("sibling ", dot.ToString(),
                                              " is not covered by the context in ", ToString()));
    }
  }
  return absl::OkStatus();
}

std::string SiblingSet::ToString() const {
  return absl::StrCat("{context=", context_.ToString(), ", siblings=[",
                      absl::StrJoin(siblings_, ", ",
                                    [](std::string* out, const Sibling& s) {
                                      absl::StrAppend(out, s.dot.ToString(), "=");
                                      if (s.tombstone) {
                                        out->append("<tombstone>");
                                      } else {
                                        absl::StrAppend(out, "\"", absl::CHexEscape(s.value), "\"");
                                      }
                                      if (!s.idempotency_token.empty()) {
                                        absl::StrAppend(
                                            out, " token=", absl::CHexEscape(s.idempotency_token));
                                      }
                                    }),
                      "]}");
}

}  // namespace kv

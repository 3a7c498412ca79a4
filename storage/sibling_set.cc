#include "storage/sibling_set.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/coding.h"
#include "xxhash.h"

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

// Keeps, among live siblings sharing a non-empty idempotency token and a value (copies of one
// logical write), only the one with the smallest dot. `siblings` is sorted by dot, so that is
// the first one met.
void DedupCopies(std::vector<Sibling>* siblings) {
  // Views into *siblings, which is not modified meanwhile.
  std::set<std::pair<absl::string_view, absl::string_view>> writes;
  std::vector<bool> keep(siblings->size());
  bool any_dropped = false;
  for (size_t i = 0; i < siblings->size(); ++i) {
    const Sibling& s = (*siblings)[i];
    keep[i] = s.idempotency_token.empty() || writes.emplace(s.idempotency_token, s.value).second;
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

ReplacedWrite Remember(const Sibling& s) {
  return ReplacedWrite{s.dot, s.timestamp_micros, TokenFingerprint(s)};
}

bool WithinWindow(int64_t a_micros, int64_t b_micros, absl::Duration window) {
  return absl::AbsDuration(absl::Microseconds(a_micros) - absl::Microseconds(b_micros)) <= window;
}

}  // namespace

uint64_t TokenFingerprint(const Sibling& sibling) {
  std::string header;
  header.push_back(sibling.tombstone ? 'D' : 'P');
  PutLengthPrefixed(&header, sibling.idempotency_token);
  const uint64_t seed = XXH3_64bits(header.data(), header.size());
  const absl::string_view value = sibling.tombstone ? absl::string_view() : sibling.value;
  return XXH3_64bits_withSeed(value.data(), value.size(), seed);
}

const ReplacedWrite* SiblingSet::ReplacedCopyOf(const Sibling& sibling,
                                                absl::Duration retry_window) const {
  if (sibling.idempotency_token.empty() || replaced_.empty()) return nullptr;
  const uint64_t fingerprint = TokenFingerprint(sibling);
  for (const ReplacedWrite& w : replaced_) {
    if (w.fingerprint == fingerprint && w.dot != sibling.dot &&
        WithinWindow(w.timestamp_micros, sibling.timestamp_micros, retry_window)) {
      return &w;
    }
  }
  return nullptr;
}

void SiblingSet::SettleReplaced(const std::vector<Sibling>& removed,
                                const std::vector<ReplacedWrite>& more_replaced,
                                absl::Duration retry_window) {
  const bool removed_any = std::any_of(removed.begin(), removed.end(), [](const Sibling& s) {
    return !s.idempotency_token.empty();
  });
  if (!removed_any && more_replaced.empty() && replaced_.empty()) return;  // the common case

  // One per fingerprint: the most recent (a deterministic choice, so Merge commutes).
  std::map<uint64_t, ReplacedWrite> by_fingerprint;
  auto remember = [&by_fingerprint](const ReplacedWrite& w) {
    auto [it, inserted] = by_fingerprint.emplace(w.fingerprint, w);
    if (!inserted && MoreRecent(w, it->second)) it->second = w;
  };
  for (const ReplacedWrite& w : replaced_) remember(w);
  for (const ReplacedWrite& w : more_replaced) remember(w);
  for (const Sibling& s : removed) {
    if (!s.idempotency_token.empty()) remember(Remember(s));
  }

  // Copies of replaced writes were replaced with them. Judged against the memory as it was
  // before this pass, so that the order of siblings does not matter.
  std::vector<ReplacedWrite> dropped;
  std::vector<Sibling> kept;
  kept.reserve(siblings_.size());
  for (Sibling& s : siblings_) {
    if (!s.idempotency_token.empty()) {
      ReplacedWrite w = Remember(s);
      auto it = by_fingerprint.find(w.fingerprint);
      if (it != by_fingerprint.end() && it->second.dot != s.dot &&
          WithinWindow(it->second.timestamp_micros, s.timestamp_micros, retry_window)) {
        dropped.push_back(std::move(w));
        continue;
      }
    }
    kept.push_back(std::move(s));
  }
  siblings_ = std::move(kept);
  for (const ReplacedWrite& w : dropped) remember(w);

  std::vector<ReplacedWrite> all;
  all.reserve(by_fingerprint.size());
  for (auto& [fingerprint, w] : by_fingerprint) all.push_back(std::move(w));
  // One per dot as well. A forged context can name a dot with a made-up fingerprint, while the
  // dot's true payload is remembered by another replica or arrives as a removed sibling. Of the
  // entries of one dot the larger (timestamp, fingerprint) is kept, as CausalContext::AddTokened
  // does, so that the choice does not depend on the order of merges. A live version's dot is
  // never a replaced write.
  std::sort(all.begin(), all.end(), [](const ReplacedWrite& a, const ReplacedWrite& b) {
    if (a.dot != b.dot) return a.dot < b.dot;
    return std::tie(b.timestamp_micros, b.fingerprint) <
           std::tie(a.timestamp_micros, a.fingerprint);
  });
  all.erase(
      std::unique(all.begin(), all.end(),
                  [](const ReplacedWrite& a, const ReplacedWrite& b) { return a.dot == b.dot; }),
      all.end());
  std::vector<Dot> live;  // sorted, so that the check below is not siblings x replaced writes
  live.reserve(siblings_.size());
  for (const Sibling& s : siblings_) live.push_back(s.dot);
  std::sort(live.begin(), live.end());
  all.erase(std::remove_if(all.begin(), all.end(),
                           [&live](const ReplacedWrite& w) {
                             return std::binary_search(live.begin(), live.end(), w.dot);
                           }),
            all.end());
  if (all.size() > kMaxReplacedWrites) {
    std::nth_element(all.begin(), all.begin() + kMaxReplacedWrites - 1, all.end(), MoreRecent);
    std::move(all.begin() + kMaxReplacedWrites, all.end(), std::back_inserter(forgotten_));
    all.resize(kMaxReplacedWrites);
  }
  std::sort(all.begin(), all.end(),
            [](const ReplacedWrite& a, const ReplacedWrite& b) { return a.dot < b.dot; });
  replaced_ = std::move(all);
}

bool SiblingSet::AllTombstones() const {
  return std::all_of(siblings_.begin(), siblings_.end(),
                     [](const Sibling& s) { return s.tombstone; });
}

std::vector<Sibling> SiblingSet::LiveSiblings() const {
  std::vector<Sibling> live;
  for (const Sibling& s : siblings_) {
    if (!s.tombstone) live.push_back(s);
  }
  DedupCopies(&live);
  return live;
}

Dot SiblingSet::ApplyWrite(absl::string_view actor, const CausalContext& seen, Sibling sibling,
                           uint64_t min_counter, absl::Duration retry_window) {
  std::vector<Sibling> removed;
  auto replaced = std::stable_partition(siblings_.begin(), siblings_.end(),
                                        [&seen](const Sibling& s) { return !seen.Covers(s.dot); });
  std::move(replaced, siblings_.end(), std::back_inserter(removed));
  siblings_.erase(replaced, siblings_.end());
  // Versions the writer saw, perhaps on another replica, that this write replaces. Only those
  // this set's context covers once the write is applied (it absorbs seen.vv(), not seen.dots()):
  // a replaced write must be covered (CheckInvariants), and a forged context must not make the
  // record invalid.
  // Skipped too: dots this set already knows as a sibling (live, or just removed: remembered
  // from its own content) or as a replaced write, so a forged payload cannot contradict them;
  // and timestamps further ahead of this write's than any clock skew, which would otherwise
  // outrank every genuine replaced write in the bounded memory.
  std::vector<ReplacedWrite> seen_replaced;
  auto has_dot = [](const auto& list, const Dot& dot) {
    return std::any_of(list.begin(), list.end(), [&dot](const auto& x) { return x.dot == dot; });
  };
  for (const TokenedVersion& version : seen.tokened()) {
    if (!seen.vv().Covers(version.dot) && !context_.Covers(version.dot)) continue;
    if (has_dot(siblings_, version.dot) || has_dot(removed, version.dot) ||
        has_dot(replaced_, version.dot)) {
      continue;
    }
    if (absl::Microseconds(version.timestamp_micros) >
        absl::Microseconds(sibling.timestamp_micros) + kTokenedClockSlack) {
      continue;
    }
    seen_replaced.push_back(version);
  }
  const uint64_t counter = std::max({context_.Get(actor), seen.MaxCounter(actor), min_counter}) + 1;
  Dot dot{std::string(actor), counter};
  context_.Merge(seen.vv());
  context_.Advance(actor, counter);
  sibling.dot = dot;
  auto pos = std::upper_bound(siblings_.begin(), siblings_.end(), sibling, DotLess);
  siblings_.insert(pos, std::move(sibling));
  SettleReplaced(removed, seen_replaced, retry_window);
  return dot;
}

CausalContext SiblingSet::ContextAfterWrite(const CausalContext& seen, const Dot& new_dot) const {
  CausalContext result;
  if (siblings_.size() == 1 && siblings_[0].dot == new_dot) {
    // Only the new version is left: every other dot this set has seen was replaced, so claiming
    // all of them replaces nothing live that the writer has not seen. The writer's own dots this
    // set has not received (versions of another replica) stay claimed, with their tokens: the
    // writer saw them, and its next write must replace them wherever they are.
    result = CausalContext(context_);
    for (const Dot& d : seen.dots()) {
      if (!context_.Covers(d)) result.AddDot(d);
    }
    for (const TokenedVersion& version : seen.tokened()) {
      if (!context_.Covers(version.dot) && result.Covers(version.dot)) {
        result.AddTokened(version);
      }
    }
  } else {
    result = seen;
    result.PruneCoveredBy(context_);
    // AddDot skips only dots covered by result.vv() (== seen.vv()); new_dot is above every
    // counter of its actor in `seen`, so it is kept even though context_ covers it.
    result.AddDot(new_dot);
  }
  // The new version is named whatever else the writer's context brought (a read's context may
  // fill the bound with replaced writes: ClientContext).
  for (const Sibling& s : siblings_) {
    if (s.dot == new_dot && !s.idempotency_token.empty()) result.AddTokenedKept(Remember(s));
  }
  return result;
}

CausalContext SiblingSet::ClientContext() const {
  CausalContext result(context_);
  for (const Sibling& s : siblings_) {
    if (!s.idempotency_token.empty()) result.AddTokened(Remember(s));
  }
  // Then the replaced writes, the most recent first, while there is room: the reader's next write
  // replaces them again wherever it lands, so a replica that never held this record still drops
  // their retry copies (the only replica that remembered them may be gone by then). A live
  // sibling is never crowded out by them.
  std::vector<ReplacedWrite> replaced = replaced_;
  std::sort(replaced.begin(), replaced.end(), MoreRecent);
  for (const ReplacedWrite& w : replaced) {
    if (result.tokened().size() >= CausalContext::kMaxTokenedVersions) break;
    result.AddTokened(w);
  }
  return result;
}

void SiblingSet::Merge(const SiblingSet& other, absl::Duration retry_window) {
  if (&other == this) {  // the loop below moves from siblings_
    const SiblingSet copy = other;
    Merge(copy, retry_window);
    return;
  }
  std::vector<Sibling> removed;  // siblings the other side replaced; only tokened ones matter
  std::vector<Sibling> merged;
  merged.reserve(siblings_.size() + other.siblings_.size());
  auto mine = siblings_.begin();
  auto theirs = other.siblings_.begin();
  while (mine != siblings_.end() || theirs != other.siblings_.end()) {
    if (theirs == other.siblings_.end() || (mine != siblings_.end() && mine->dot < theirs->dot)) {
      // Only we hold it: it survives unless the other side saw it and replaced it.
      if (!other.context_.Covers(mine->dot)) {
        merged.push_back(std::move(*mine));
      } else if (!mine->idempotency_token.empty()) {
        removed.push_back(std::move(*mine));
      }
      ++mine;
    } else if (mine == siblings_.end() || theirs->dot < mine->dot) {
      if (!context_.Covers(theirs->dot)) {
        merged.push_back(*theirs);
      } else if (!theirs->idempotency_token.empty()) {
        removed.push_back(*theirs);
      }
      ++theirs;
    } else {
      merged.push_back(PickCopy(*mine, *theirs));
      ++mine;
      ++theirs;
    }
  }
  siblings_ = std::move(merged);
  context_.Merge(other.context_);
  SettleReplaced(removed, other.replaced_, retry_window);
}

void SiblingSet::Recall(const std::vector<ReplacedWrite>& writes, absl::Duration retry_window) {
  std::vector<ReplacedWrite> covered;
  std::vector<Sibling> removed;
  for (const ReplacedWrite& w : writes) {
    const auto live =
        std::lower_bound(siblings_.begin(), siblings_.end(), w.dot,
                         [](const Sibling& s, const Dot& dot) { return s.dot < dot; });
    if (live != siblings_.end() && live->dot == w.dot) {
      continue;  // still live here: not a replaced write of this set
    }
    if (context_.Covers(w.dot)) {
      covered.push_back(w);
      continue;
    }
    // The set no longer covers the write (its record was purged since): its copies are
    // replaced, and remembered in its place (their own dots are covered).
    auto copy = siblings_.begin();
    while (copy != siblings_.end()) {
      if (!copy->idempotency_token.empty() && copy->dot != w.dot &&
          WithinWindow(w.timestamp_micros, copy->timestamp_micros, retry_window) &&
          TokenFingerprint(*copy) == w.fingerprint) {
        removed.push_back(std::move(*copy));
        copy = siblings_.erase(copy);
      } else {
        ++copy;
      }
    }
  }
  if (!covered.empty() || !removed.empty()) SettleReplaced(removed, covered, retry_window);
}

std::vector<ReplacedWrite> SiblingSet::TokenedHistory() const {
  std::vector<ReplacedWrite> history = replaced_;
  for (const Sibling& s : siblings_) {
    if (!s.idempotency_token.empty()) history.push_back(Remember(s));
  }
  return history;
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
  std::set<uint64_t> fingerprints;
  for (size_t i = 0; i < replaced_.size(); ++i) {
    const Dot& dot = replaced_[i].dot;
    if (i > 0 && !(replaced_[i - 1].dot < dot)) {
      return absl::DataLossError(
          absl::StrCat("replaced writes not sorted by unique dot at ", i, " in ", ToString()));
    }
    if (!context_.Covers(dot)) {
      return absl::DataLossError(absl::StrCat("replaced write ", dot.ToString(),
                                              " is not covered by the context in ", ToString()));
    }
    // The siblings were found sorted by dot above: a binary search keeps a hostile record of
    // many siblings and replaced writes from costing their product.
    auto sibling = std::lower_bound(siblings_.begin(), siblings_.end(), dot,
                                    [](const Sibling& s, const Dot& d) { return s.dot < d; });
    if (sibling != siblings_.end() && sibling->dot == dot) {
      return absl::DataLossError(
          absl::StrCat("replaced write ", dot.ToString(), " is still a sibling in ", ToString()));
    }
    if (!fingerprints.insert(replaced_[i].fingerprint).second) {
      return absl::DataLossError(
          absl::StrCat("two replaced writes share a fingerprint in ", ToString()));
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
                      "]", replaced_.empty() ? "" : ", replaced=[",
                      absl::StrJoin(replaced_, ", ",
                                    [](std::string* out, const ReplacedWrite& w) {
                                      absl::StrAppend(out, w.dot.ToString(), "#",
                                                      absl::Hex(w.fingerprint, absl::kZeroPad16));
                                    }),
                      replaced_.empty() ? "" : "]", "}");
}

}  // namespace kv

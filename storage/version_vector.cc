#include "storage/version_vector.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/coding.h"
#include "storage/crc32c.h"
#include "xxhash.h"

namespace kv {
namespace {

// Causal-context wire format (storage/FORMAT.md, "Causal context").
constexpr char kContextMagic = static_cast<char>(0xc7);
constexpr char kContextFormatVersion1 = 1;     // no tokened versions
constexpr char kContextFormatVersion2 = 2;     // tokened versions appended
constexpr char kContextFormatVersion3 = 3;     // bound to its key; tokened versions, maybe none
constexpr size_t kContextHeaderBytes = 2 + 4;  // magic, version, masked CRC-32C

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed causal context: ", what,
                   " (pass back the context bytes exactly as a read or write returned them, or "
                   "none)"));
}

std::string CounterTooLarge(uint64_t counter) {
  return absl::StrCat("counter ", counter, " is above the maximum ", kMaxContextCounter);
}

std::string ActorTooLong(absl::string_view actor) {
  return absl::StrCat("an actor of ", actor.size(), " bytes (at most ", kMaxActorBytes, ")");
}

}  // namespace

std::string Dot::ToString() const { return absl::StrCat(actor, ":", counter); }

uint64_t VersionVector::Get(absl::string_view actor) const {
  auto it = entries_.find(actor);
  return it == entries_.end() ? 0 : it->second;
}

void VersionVector::Advance(absl::string_view actor, uint64_t counter) {
  if (counter == 0) return;  // no entry is ever 0
  auto it = entries_.find(actor);
  if (it == entries_.end()) {
    entries_.emplace(std::string(actor), counter);
  } else if (it->second < counter) {
    it->second = counter;
  }
}

void VersionVector::Merge(const VersionVector& other) {
  for (const auto& [actor, counter] : other.entries_) Advance(actor, counter);
}

bool VersionVector::Descends(const VersionVector& other) const {
  for (const auto& [actor, counter] : other.entries_) {
    if (Get(actor) < counter) return false;
  }
  return true;
}

std::string VersionVector::ToString() const {
  return absl::StrCat("{",
                      absl::StrJoin(entries_, ", ",
                                    [](std::string* out, const auto& e) {
                                      absl::StrAppend(out, e.first, ":", e.second);
                                    }),
                      "}");
}

bool CausalContext::Covers(const Dot& dot) const {
  return vv_.Covers(dot) || std::binary_search(dots_.begin(), dots_.end(), dot);
}

void CausalContext::AddDot(const Dot& dot) {
  if (dot.counter == 0 || vv_.Covers(dot)) return;
  auto it = std::lower_bound(dots_.begin(), dots_.end(), dot);
  if (it != dots_.end() && *it == dot) return;
  dots_.insert(it, dot);
}

void CausalContext::AddTokened(const TokenedVersion& version) {
  if (!Covers(version.dot)) return;
  auto it = std::lower_bound(
      tokened_.begin(), tokened_.end(), version,
      [](const TokenedVersion& a, const TokenedVersion& b) { return a.dot < b.dot; });
  if (it != tokened_.end() && it->dot == version.dot) {
    // One version has one payload; if two disagree (a forged context), keep the larger, so
    // that the result does not depend on the order of merges.
    if (std::tie(version.timestamp_micros, version.fingerprint) >
        std::tie(it->timestamp_micros, it->fingerprint)) {
      *it = version;
    }
    return;
  }
  tokened_.insert(it, version);
  TrimTokened();
}

void CausalContext::AddTokenedKept(const TokenedVersion& version) {
  if (!Covers(version.dot)) return;
  const bool present = std::any_of(tokened_.begin(), tokened_.end(),
                                   [&](const TokenedVersion& v) { return v.dot == version.dot; });
  if (!present && tokened_.size() >= kMaxTokenedVersions) {
    // The one TrimTokened would drop first: the last in MoreRecent order.
    tokened_.erase(std::max_element(tokened_.begin(), tokened_.end(), MoreRecent));
  }
  AddTokened(version);
}

void CausalContext::TrimTokened() {
  if (tokened_.size() <= kMaxTokenedVersions) return;
  std::vector<TokenedVersion> kept = tokened_;
  std::nth_element(kept.begin(), kept.begin() + kMaxTokenedVersions - 1, kept.end(), MoreRecent);
  kept.resize(kMaxTokenedVersions);
  std::sort(kept.begin(), kept.end(),
            [](const TokenedVersion& a, const TokenedVersion& b) { return a.dot < b.dot; });
  tokened_ = std::move(kept);
}

void CausalContext::Merge(const CausalContext& other) {
  vv_.Merge(other.vv_);
  std::vector<Dot> merged;
  merged.reserve(dots_.size() + other.dots_.size());
  std::set_union(dots_.begin(), dots_.end(), other.dots_.begin(), other.dots_.end(),
                 std::back_inserter(merged));
  dots_ = std::move(merged);
  PruneCoveredBy(vv_);
  for (const TokenedVersion& version : other.tokened_) AddTokened(version);
}

void CausalContext::PruneCoveredBy(const VersionVector& vv) {
  dots_.erase(
      std::remove_if(dots_.begin(), dots_.end(), [&vv](const Dot& dot) { return vv.Covers(dot); }),
      dots_.end());
  tokened_.erase(std::remove_if(tokened_.begin(), tokened_.end(),
                                [this](const TokenedVersion& v) { return !Covers(v.dot); }),
                 tokened_.end());
}

uint64_t CausalContext::MaxCounter(absl::string_view actor) const {
  uint64_t max = vv_.Get(actor);
  for (const Dot& dot : dots_) {
    if (dot.actor == actor) max = std::max(max, dot.counter);
  }
  return max;
}

std::string CausalContext::Encode() const {
  if (empty()) return std::string();
  const bool bound = key_hash_ != 0;
  std::string payload;
  if (bound) PutFixed64(&payload, key_hash_);
  PutVarint32(&payload, static_cast<uint32_t>(vv_.size()));
  for (const auto& [actor, counter] : vv_.entries()) {
    PutLengthPrefixed(&payload, actor);
    PutVarint64(&payload, counter);
  }
  PutVarint32(&payload, static_cast<uint32_t>(dots_.size()));
  for (const Dot& dot : dots_) {
    PutLengthPrefixed(&payload, dot.actor);
    PutVarint64(&payload, dot.counter);
  }
  if (bound || !tokened_.empty()) {
    PutVarint32(&payload, static_cast<uint32_t>(tokened_.size()));
    for (const TokenedVersion& version : tokened_) {
      PutLengthPrefixed(&payload, version.dot.actor);
      PutVarint64(&payload, version.dot.counter);
      PutFixed64(&payload, static_cast<uint64_t>(version.timestamp_micros));
      PutFixed64(&payload, version.fingerprint);
    }
  }
  std::string out;
  out.reserve(kContextHeaderBytes + payload.size());
  out.push_back(kContextMagic);
  out.push_back(bound              ? kContextFormatVersion3
                : tokened_.empty() ? kContextFormatVersion1
                                   : kContextFormatVersion2);
  PutFixed32(&out, crc32c::Mask(crc32c::Extend(crc32c::Value(out), payload)));
  out.append(payload);
  return out;
}

absl::StatusOr<CausalContext> CausalContext::Decode(absl::string_view bytes) {
  if (bytes.empty()) return CausalContext();
  if (bytes.size() < kContextHeaderBytes) return Malformed("shorter than its header");
  if (bytes[0] != kContextMagic) return Malformed("wrong magic byte");
  if (bytes[1] != kContextFormatVersion1 && bytes[1] != kContextFormatVersion2 &&
      bytes[1] != kContextFormatVersion3) {
    return Malformed(absl::StrCat("unknown format version ", static_cast<uint8_t>(bytes[1])));
  }
  absl::string_view input = bytes.substr(2);
  uint32_t masked_crc = 0;
  GetFixed32(&input, &masked_crc);
  if (crc32c::Unmask(masked_crc) != crc32c::Extend(crc32c::Value(bytes.substr(0, 2)), input)) {
    return Malformed("checksum mismatch");
  }
  CausalContext context;
  const bool bound = bytes[1] == kContextFormatVersion3;
  if (bound && (!GetFixed64(&input, &context.key_hash_) || context.key_hash_ == 0)) {
    return Malformed("truncated or zero key hash");
  }
  if (absl::Status status = context.DecodeVersionVector(&input); !status.ok()) return status;
  if (absl::Status status = context.DecodeDots(&input); !status.ok()) return status;
  if (bytes[1] == kContextFormatVersion2 || bound) {
    if (absl::Status status = context.DecodeTokenedVersions(&input, /*allow_none=*/bound);
        !status.ok()) {
      return status;
    }
  }
  if (!input.empty()) return Malformed("trailing bytes");
  // The empty context has one encoding, the empty string (Encode writes nothing else for it).
  if (context.empty()) return Malformed("an empty context in a non-empty encoding");
  return context;
}

absl::StatusOr<CausalContext> CausalContext::DecodeForKey(absl::string_view bytes,
                                                          absl::string_view key) {
  absl::StatusOr<CausalContext> context = Decode(bytes);
  if (!context.ok()) return context;
  if (absl::Status same = context->CheckKey(key); !same.ok()) return same;
  context->key_hash_ = 0;
  return context;
}

absl::Status CausalContext::CheckKey(absl::string_view key) const {
  if (key_hash_ == 0 || key_hash_ == KeyHash(key)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "the causal context was returned for another key: pass the context that a read or a write "
      "of this key returned (or none)");
}

uint64_t CausalContext::KeyHash(absl::string_view key) {
  const uint64_t hash = XXH3_64bits(key.data(), key.size());
  return hash != 0 ? hash : 1;
}

// Counts are bounded by the remaining input (every entry takes at least two bytes), so a hostile
// count cannot make us allocate more than the input's size.
absl::Status CausalContext::DecodeVersionVector(absl::string_view* input) {
  uint32_t num_entries = 0;
  if (!GetVarint32(input, &num_entries) || num_entries > input->size() / 2) {
    return Malformed("bad version vector size");
  }
  absl::string_view prev_actor;
  for (uint32_t i = 0; i < num_entries; ++i) {
    absl::string_view actor;
    uint64_t counter = 0;
    if (!GetLengthPrefixed(input, &actor) || !GetVarint64(input, &counter)) {
      return Malformed("truncated version vector entry");
    }
    if (counter == 0) return Malformed("version vector entry with counter 0");
    if (actor.size() > kMaxActorBytes) return Malformed(ActorTooLong(actor));
    if (counter > kMaxContextCounter) return Malformed(CounterTooLarge(counter));
    if (i > 0 && actor <= prev_actor) return Malformed("version vector actors out of order");
    vv_.Advance(actor, counter);
    prev_actor = actor;
  }
  return absl::OkStatus();
}

absl::Status CausalContext::DecodeDots(absl::string_view* input) {
  uint32_t num_dots = 0;
  if (!GetVarint32(input, &num_dots) || num_dots > input->size() / 2) {
    return Malformed("bad dot count");
  }
  // A count is a claim until its dots decode: reserve no more than a few ahead of them.
  dots_.reserve(std::min<uint32_t>(num_dots, 64));
  for (uint32_t i = 0; i < num_dots; ++i) {
    absl::string_view actor;
    Dot dot;
    if (!GetLengthPrefixed(input, &actor) || !GetVarint64(input, &dot.counter)) {
      return Malformed("truncated dot");
    }
    if (actor.size() > kMaxActorBytes) return Malformed(ActorTooLong(actor));
    dot.actor = std::string(actor);
    if (dot.counter == 0) return Malformed("dot with counter 0");
    if (dot.counter > kMaxContextCounter) return Malformed(CounterTooLarge(dot.counter));
    if (vv_.Covers(dot)) return Malformed("dot already covered by the version vector");
    if (!dots_.empty() && !(dots_.back() < dot)) return Malformed("dots out of order");
    dots_.push_back(std::move(dot));
  }
  return absl::OkStatus();
}

absl::Status CausalContext::DecodeTokenedVersions(absl::string_view* input, bool allow_none) {
  // Each entry takes at least 18 bytes (two length/varint bytes and two fixed64).
  constexpr size_t kMinTokenedBytes = 18;
  uint32_t num_tokened = 0;
  if (!GetVarint32(input, &num_tokened) || (num_tokened == 0 && !allow_none) ||
      num_tokened > kMaxTokenedVersions || num_tokened > input->size() / kMinTokenedBytes) {
    return Malformed("bad tokened version count");
  }
  tokened_.reserve(num_tokened);
  for (uint32_t i = 0; i < num_tokened; ++i) {
    absl::string_view actor;
    TokenedVersion version;
    uint64_t timestamp = 0;
    if (!GetLengthPrefixed(input, &actor) || !GetVarint64(input, &version.dot.counter) ||
        !GetFixed64(input, &timestamp) || !GetFixed64(input, &version.fingerprint)) {
      return Malformed("truncated tokened version");
    }
    if (actor.size() > kMaxActorBytes) return Malformed(ActorTooLong(actor));
    version.dot.actor = std::string(actor);
    version.timestamp_micros = static_cast<int64_t>(timestamp);
    if (version.dot.counter == 0) return Malformed("tokened version with counter 0");
    if (version.dot.counter > kMaxContextCounter) {
      return Malformed(CounterTooLarge(version.dot.counter));
    }
    if (!Covers(version.dot)) return Malformed("tokened version not covered");
    if (!tokened_.empty() && !(tokened_.back().dot < version.dot)) {
      return Malformed("tokened versions out of order");
    }
    tokened_.push_back(std::move(version));
  }
  return absl::OkStatus();
}

std::string CausalContext::ToString() const {
  std::string out = absl::StrCat(
      "{vv=", vv_.ToString(), ", dots=[",
      absl::StrJoin(dots_, ", ", [](std::string* out, const Dot& d) { out->append(d.ToString()); }),
      "]");
  if (!tokened_.empty()) {
    absl::StrAppend(&out, ", tokened=[",
                    absl::StrJoin(tokened_, ", ",
                                  [](std::string* out, const TokenedVersion& v) {
                                    absl::StrAppend(out, v.dot.ToString(), "#",
                                                    absl::Hex(v.fingerprint));
                                  }),
                    "]");
  }
  out.append("}");
  return out;
}

}  // namespace kv

#include "storage/version_vector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/coding.h"
#include "storage/crc32c.h"

namespace kv {
namespace {

// Causal-context wire format (storage/FORMAT.md, "Causal context").
constexpr char kContextMagic = static_cast<char>(0xc7);
constexpr char kContextFormatVersion = 1;
constexpr size_t kContextHeaderBytes = 2 + 4;  // magic, version, masked CRC-32C

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed causal context: ", what,
                   " (pass back the context bytes exactly as a read or write returned them, or "
                   "none)"));
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

void CausalContext::Merge(const CausalContext& other) {
  vv_.Merge(other.vv_);
  std::vector<Dot> merged;
  merged.reserve(dots_.size() + other.dots_.size());
  std::set_union(dots_.begin(), dots_.end(), other.dots_.begin(), other.dots_.end(),
                 std::back_inserter(merged));
  dots_ = std::move(merged);
  PruneCoveredBy(vv_);
}

void CausalContext::PruneCoveredBy(const VersionVector& vv) {
  dots_.erase(
      std::remove_if(dots_.begin(), dots_.end(), [&vv](const Dot& dot) { return vv.Covers(dot); }),
      dots_.end());
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
  std::string payload;
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
  std::string out;
  out.reserve(kContextHeaderBytes + payload.size());
  out.push_back(kContextMagic);
  out.push_back(kContextFormatVersion);
  PutFixed32(&out, crc32c::Mask(crc32c::Extend(crc32c::Value(out), payload)));
  out.append(payload);
  return out;
}

absl::StatusOr<CausalContext> CausalContext::Decode(absl::string_view bytes) {
  if (bytes.empty()) return CausalContext();
  if (bytes.size() < kContextHeaderBytes) return Malformed("shorter than its header");
  if (bytes[0] != kContextMagic) return Malformed("wrong magic byte");
  if (bytes[1] != kContextFormatVersion) {
    return Malformed(absl::StrCat("unknown format version ", static_cast<uint8_t>(bytes[1])));
  }
  absl::string_view input = bytes.substr(2);
  uint32_t masked_crc = 0;
  GetFixed32(&input, &masked_crc);
  if (crc32c::Unmask(masked_crc) != crc32c::Extend(crc32c::Value(bytes.substr(0, 2)), input)) {
    return Malformed("checksum mismatch");
  }

  // Counts are bounded by the remaining input (every entry takes at least two bytes), so a
  // hostile count cannot make us allocate more than the input's size.
  CausalContext context;
  uint32_t num_entries = 0;
  if (!GetVarint32(&input, &num_entries) || num_entries > input.size() / 2) {
    return Malformed("bad version vector size");
  }
  absl::string_view prev_actor;
  for (uint32_t i = 0; i < num_entries; ++i) {
    absl::string_view actor;
    uint64_t counter = 0;
    if (!GetLengthPrefixed(&input, &actor) || !GetVarint64(&input, &counter)) {
      return Malformed("truncated version vector entry");
    }
    if (counter == 0) return Malformed("version vector entry with counter 0");
    if (i > 0 && actor <= prev_actor) return Malformed("version vector actors out of order");
    context.vv_.Advance(actor, counter);
    prev_actor = actor;
  }
  uint32_t num_dots = 0;
  if (!GetVarint32(&input, &num_dots) || num_dots > input.size() / 2) {
    return Malformed("bad dot count");
  }
  context.dots_.reserve(num_dots);
  for (uint32_t i = 0; i < num_dots; ++i) {
    absl::string_view actor;
    Dot dot;
    if (!GetLengthPrefixed(&input, &actor) || !GetVarint64(&input, &dot.counter)) {
      return Malformed("truncated dot");
    }
    dot.actor = std::string(actor);
    if (dot.counter == 0) return Malformed("dot with counter 0");
    if (context.vv_.Covers(dot)) return Malformed("dot already covered by the version vector");
    if (!context.dots_.empty() && !(context.dots_.back() < dot)) {
      return Malformed("dots out of order");
    }
    context.dots_.push_back(std::move(dot));
  }
  if (!input.empty()) return Malformed("trailing bytes");
  return context;
}

std::string CausalContext::ToString() const {
  return absl::StrCat(
      "{vv=", vv_.ToString(), ", dots=[",
      absl::StrJoin(dots_, ", ", [](std::string* out, const Dot& d) { out->append(d.ToString()); }),
      "]}");
}

}  // namespace kv

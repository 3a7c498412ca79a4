// Record layout: storage/FORMAT.md, "Data column records".
#include "storage/record_codec.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/coding.h"
#include "storage/crc32c.h"

namespace kv {
namespace {

constexpr char kRecordMagic = static_cast<char>(0xd5);
// Version 1 has no replaced writes; version 2 appends them. A set without replaced writes is
// written as version 1, so records (and their Merkle digests) that do not use them are unchanged.
constexpr char kRecordFormatVersion1 = 1;
constexpr char kRecordFormatVersion2 = 2;
constexpr size_t kHeaderBytes = 2 + 4;  // magic, version, masked CRC-32C
constexpr uint8_t kFlagTombstone = 0x01;
// Smallest encodings, used to bound counts by the bytes that remain.
constexpr size_t kMinActorEntryBytes = 2;  // empty actor, one-byte counter
constexpr size_t kMinSiblingBytes = 13;    // index, counter, flags, fixed64, two empty strings
constexpr size_t kMinReplacedBytes = 18;   // index, counter, two fixed64
// Entries reserved ahead of decoding them: a count is only a claim until its entries have
// decoded, and an entry takes several times its smallest encoding in memory, so memory beyond
// this grows with the entries that did decode.
constexpr uint32_t kMaxReservedEntries = 64;

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt sibling-set record: ", what));
}

// The causal context: its counters into `*context`, its actors, in the (strictly increasing)
// order that the dots' actor indexes refer to, into `*actors` (views into the input).
absl::Status DecodeContext(absl::string_view* input, VersionVector* context,
                           std::vector<absl::string_view>* actors) {
  uint32_t num_actors = 0;
  if (!GetVarint32(input, &num_actors) || num_actors > input->size() / kMinActorEntryBytes) {
    return Corrupt("bad context size");
  }
  actors->reserve(std::min(num_actors, kMaxReservedEntries));
  for (uint32_t i = 0; i < num_actors; ++i) {
    absl::string_view actor;
    uint64_t counter = 0;
    if (!GetLengthPrefixed(input, &actor) || !GetVarint64(input, &counter)) {
      return Corrupt("truncated context entry");
    }
    if (counter == 0) return Corrupt("context entry with counter 0");
    if (!actors->empty() && actor <= actors->back()) return Corrupt("context actors out of order");
    context->Advance(actor, counter);
    actors->push_back(actor);
  }
  return absl::OkStatus();
}

// A dot: the index of its actor in `actors`, then its counter.
absl::Status DecodeDot(absl::string_view* input, const std::vector<absl::string_view>& actors,
                       absl::string_view what, Dot* dot) {
  uint32_t actor_index = 0;
  if (!GetVarint32(input, &actor_index) || !GetVarint64(input, &dot->counter)) {
    return Corrupt(absl::StrCat("truncated ", what));
  }
  if (actor_index >= actors.size()) return Corrupt(absl::StrCat(what, " actor index out of range"));
  dot->actor = std::string(actors[actor_index]);
  return absl::OkStatus();
}

absl::Status DecodeSiblings(absl::string_view* input, const std::vector<absl::string_view>& actors,
                            std::vector<Sibling>* siblings) {
  uint32_t num_siblings = 0;
  if (!GetVarint32(input, &num_siblings) || num_siblings > input->size() / kMinSiblingBytes) {
    return Corrupt("bad sibling count");
  }
  siblings->clear();
  siblings->reserve(std::min(num_siblings, kMaxReservedEntries));
  for (uint32_t i = 0; i < num_siblings; ++i) {
    Sibling& s = siblings->emplace_back();
    if (absl::Status status = DecodeDot(input, actors, "sibling", &s.dot); !status.ok()) {
      return status;
    }
    uint64_t timestamp = 0;
    absl::string_view value;
    absl::string_view token;
    if (input->empty()) return Corrupt("truncated sibling");
    const auto flags = static_cast<uint8_t>((*input)[0]);
    input->remove_prefix(1);
    if (!GetFixed64(input, &timestamp) || !GetLengthPrefixed(input, &value) ||
        !GetLengthPrefixed(input, &token)) {
      return Corrupt("truncated sibling");
    }
    if ((flags & ~kFlagTombstone) != 0) return Corrupt("unknown sibling flags");
    s.tombstone = (flags & kFlagTombstone) != 0;
    s.timestamp_micros = static_cast<int64_t>(timestamp);
    s.value = std::string(value);
    s.idempotency_token = std::string(token);
  }
  return absl::OkStatus();
}

// Format version 2's memory of replaced tokened writes.
absl::Status DecodeReplacedWrites(absl::string_view* input,
                                  const std::vector<absl::string_view>& actors,
                                  std::vector<ReplacedWrite>* replaced) {
  uint32_t num_replaced = 0;
  if (!GetVarint32(input, &num_replaced) || num_replaced > input->size() / kMinReplacedBytes) {
    return Corrupt("bad replaced-write count");
  }
  // Version 2 is written only when there are replaced writes: one encoding per record.
  if (num_replaced == 0) return Corrupt("version 2 record without replaced writes");
  replaced->clear();
  replaced->reserve(std::min(num_replaced, kMaxReservedEntries));
  for (uint32_t i = 0; i < num_replaced; ++i) {
    ReplacedWrite& w = replaced->emplace_back();
    if (absl::Status status = DecodeDot(input, actors, "replaced write", &w.dot); !status.ok()) {
      return status;
    }
    uint64_t timestamp = 0;
    if (!GetFixed64(input, &timestamp) || !GetFixed64(input, &w.fingerprint)) {
      return Corrupt("truncated replaced write");
    }
    w.timestamp_micros = static_cast<int64_t>(timestamp);
  }
  return absl::OkStatus();
}

}  // namespace

std::string EncodeSiblingSet(const SiblingSet& set) {
  const auto& entries = set.context().entries();
  // Header first with a placeholder checksum, then the payload, in one buffer.
  std::string out;
  size_t estimate = kHeaderBytes + 10;
  for (const auto& entry : entries) estimate += entry.first.size() + 12;
  for (const Sibling& s : set.siblings()) {
    estimate += s.value.size() + s.idempotency_token.size() + 30;
  }
  estimate += set.replaced_writes().size() * 35;
  out.reserve(estimate);
  out.push_back(kRecordMagic);
  out.push_back(set.replaced_writes().empty() ? kRecordFormatVersion1 : kRecordFormatVersion2);
  PutFixed32(&out, 0);

  PutVarint32(&out, static_cast<uint32_t>(entries.size()));
  for (const auto& [actor, counter] : entries) {
    PutLengthPrefixed(&out, actor);
    PutVarint64(&out, counter);
  }
  PutVarint32(&out, static_cast<uint32_t>(set.siblings().size()));
  // The actor of a dot is stored as its index in the context's (sorted) actor list. A dot whose
  // actor is missing from the context violates the invariants; it gets an out-of-range index so
  // that decoding reports it rather than this function inventing something.
  auto put_dot = [&out, &entries](const Dot& dot) {
    auto it = entries.find(dot.actor);
    PutVarint32(&out, static_cast<uint32_t>(std::distance(entries.begin(), it)));
    PutVarint64(&out, dot.counter);
  };
  for (const Sibling& s : set.siblings()) {
    put_dot(s.dot);
    out.push_back(static_cast<char>(s.tombstone ? kFlagTombstone : 0));
    PutFixed64(&out, static_cast<uint64_t>(s.timestamp_micros));
    PutLengthPrefixed(&out, s.value);
    PutLengthPrefixed(&out, s.idempotency_token);
  }
  if (!set.replaced_writes().empty()) {
    PutVarint32(&out, static_cast<uint32_t>(set.replaced_writes().size()));
    for (const ReplacedWrite& w : set.replaced_writes()) {
      put_dot(w.dot);
      PutFixed64(&out, static_cast<uint64_t>(w.timestamp_micros));
      PutFixed64(&out, w.fingerprint);
    }
  }

  const absl::string_view view(out);
  const uint32_t crc = crc32c::Extend(crc32c::Value(view.substr(0, 2)), view.substr(kHeaderBytes));
  std::string masked;
  PutFixed32(&masked, crc32c::Mask(crc));
  out.replace(2, 4, masked);
  return out;
}

absl::StatusOr<SiblingSet> DecodeSiblingSet(absl::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return Corrupt(absl::StrCat("only ", bytes.size(), " bytes, shorter than the header"));
  }
  if (bytes[0] != kRecordMagic) return Corrupt("wrong magic byte");
  if (bytes[1] != kRecordFormatVersion1 && bytes[1] != kRecordFormatVersion2) {
    return Corrupt(absl::StrCat("unknown format version ", static_cast<uint8_t>(bytes[1])));
  }
  absl::string_view input = bytes.substr(2);
  uint32_t masked_crc = 0;
  GetFixed32(&input, &masked_crc);
  if (crc32c::Unmask(masked_crc) != crc32c::Extend(crc32c::Value(bytes.substr(0, 2)), input)) {
    return Corrupt("checksum mismatch");
  }

  VersionVector context;
  std::vector<absl::string_view> actors;
  std::vector<Sibling> siblings;
  std::vector<ReplacedWrite> replaced;
  if (absl::Status status = DecodeContext(&input, &context, &actors); !status.ok()) return status;
  if (absl::Status status = DecodeSiblings(&input, actors, &siblings); !status.ok()) return status;
  if (bytes[1] == kRecordFormatVersion2) {
    if (absl::Status status = DecodeReplacedWrites(&input, actors, &replaced); !status.ok()) {
      return status;
    }
  }
  if (!input.empty()) return Corrupt(absl::StrCat(input.size(), " trailing bytes"));

  SiblingSet set(std::move(context), std::move(siblings), std::move(replaced));
  if (absl::Status status = set.CheckInvariants(); !status.ok()) {
    return Corrupt(status.message());
  }
  return set;
}

}  // namespace kv

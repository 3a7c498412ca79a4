#include "node/ring.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "storage/host_port.h"
#include "xxhash.h"

namespace kv {
namespace {

bool ValidZone(absl::string_view zone) {
  if (zone.empty() || zone.size() > 64) return false;
  return std::all_of(zone.begin(), zone.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

}  // namespace

bool IsWellFormedNodeId(absl::string_view id) { return ValidZone(id); }

bool IsValidNodeId(absl::string_view id) {
  // Not "." or "..", nor anything else a path or a command line would read otherwise: the
  // default data directory is ./kvdata/<id>.
  return IsWellFormedNodeId(id) &&
         (absl::ascii_isalnum(static_cast<unsigned char>(id[0])) || id[0] == '_');
}

absl::Status CheckMember(const Member& m) {
  // The rules of every earlier version: stored layouts and gossip from older nodes must pass.
  if (!IsWellFormedNodeId(m.id)) {
    return absl::InvalidArgumentError("node id must be 1-64 characters of [A-Za-z0-9_.-]");
  }
  const size_t colon = m.address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(m.address).substr(colon + 1), &port) || port <= 0 ||
      port > 65535) {
    return absl::InvalidArgumentError("address must be HOST:PORT");
  }
  if (!m.zone.empty() && !ValidZone(m.zone)) {
    return absl::InvalidArgumentError("zone must be [A-Za-z0-9_.-]");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Member>> ParseMembers(absl::string_view spec) {
  std::vector<Member> members;
  std::set<std::string> ids;
  std::set<std::string> addresses;
  if (absl::StripAsciiWhitespace(spec).empty()) return members;
  for (absl::string_view entry : absl::StrSplit(spec, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("empty peer entry in '", spec,
                       "' (two commas in a row, or one at either end); expected ID=HOST:PORT,..."));
    }
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad peer entry '", entry, "': ", why, " (expected ID=HOST:PORT or ID=HOST:PORT@ZONE)"));
    };
    if (std::count(entry.begin(), entry.end(), '=') != 1) return bad("one '=' per entry");
    if (std::count(entry.begin(), entry.end(), '@') > 1) return bad("at most one '@ZONE'");
    std::pair<absl::string_view, absl::string_view> id_rest = absl::StrSplit(entry, '=');
    std::pair<absl::string_view, absl::string_view> addr_zone = absl::StrSplit(id_rest.second, '@');
    Member m{std::string(id_rest.first), std::string(addr_zone.first),
             std::string(addr_zone.second)};
    if (absl::Status valid = CheckMember(m); !valid.ok()) return bad(valid.message());
    // New configuration: the stricter rules of a new node id and address.
    if (!IsValidNodeId(m.id)) return bad(kNodeIdRule);
    std::string host;
    int port = 0;
    if (absl::Status address = ParseHostPort(m.address, &host, &port); !address.ok()) {
      return bad(absl::StrCat("address: ", address.message()));
    }
    if (m.zone.empty() && absl::StrContains(id_rest.second, '@'))
      return bad("empty zone after '@'");
    if (!ids.insert(m.id).second) return bad("node id listed twice");
    if (!addresses.insert(m.address).second) return bad("address listed twice");
    members.push_back(std::move(m));
  }
  return members;
}

std::string FormatMembers(const std::vector<Member>& members) {
  return absl::StrJoin(members, ",", [](std::string* out, const Member& m) {
    absl::StrAppend(out, m.id, "=", m.address, m.zone.empty() ? "" : "@", m.zone);
  });
}

uint64_t HashRing::KeyHash(absl::string_view key) { return XXH64(key.data(), key.size(), 0); }

absl::StatusOr<HashRing> HashRing::Build(std::vector<Member> members, int vnodes_per_member) {
  if (members.empty()) return absl::InvalidArgumentError("a ring needs at least one member");
  if (vnodes_per_member < 1) return absl::InvalidArgumentError("vnodes_per_member must be >= 1");
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  std::set<std::string> zones;
  for (size_t i = 0; i < members.size(); ++i) {
    if (i > 0 && members[i].id == members[i - 1].id) {
      return absl::InvalidArgumentError(absl::StrCat("member id '", members[i].id, "' repeats"));
    }
    if (!members[i].zone.empty()) zones.insert(members[i].zone);
  }
  HashRing ring;
  ring.members_ = std::move(members);
  ring.zones_ = zones.size();
  ring.points_.reserve(ring.members_.size() * vnodes_per_member);
  for (uint32_t m = 0; m < ring.members_.size(); ++m) {
    for (int v = 0; v < vnodes_per_member; ++v) {
      std::string label = absl::StrCat(ring.members_[m].id, "/", v);
      ring.points_.push_back({XXH64(label.data(), label.size(), 0), m});
    }
  }
  std::sort(ring.points_.begin(), ring.points_.end(), [](const Point& a, const Point& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.member < b.member;
  });
  return ring;
}

std::vector<const Member*> HashRing::PreferenceList(absl::string_view key, size_t n) const {
  return PreferenceListAt(KeyHash(key), n);
}

std::vector<uint64_t> HashRing::PointHashes() const {
  std::vector<uint64_t> hashes;
  hashes.reserve(points_.size());
  for (const Point& p : points_) hashes.push_back(p.hash);
  return hashes;
}

std::vector<const Member*> HashRing::PreferenceListAt(uint64_t h, size_t n) const {
  n = std::min(n, members_.size());
  std::vector<const Member*> result;
  if (n == 0) return result;
  auto start = std::lower_bound(points_.begin(), points_.end(), h,
                                [](const Point& p, uint64_t value) { return p.hash < value; });
  const size_t first = static_cast<size_t>(start - points_.begin());
  const bool zone_aware = zones_ >= n;
  std::vector<bool> taken(members_.size(), false);
  std::set<absl::string_view> used_zones;
  // Zone-aware placement first; members skipped for their zone fill any remaining slots after.
  for (int pass = zone_aware ? 0 : 1; pass < 2 && result.size() < n; ++pass) {
    for (size_t i = 0; i < points_.size() && result.size() < n; ++i) {
      const Point& p = points_[(first + i) % points_.size()];
      if (taken[p.member]) continue;
      const Member& m = members_[p.member];
      if (pass == 0 && (m.zone.empty() || used_zones.count(m.zone) > 0)) continue;
      taken[p.member] = true;
      used_zones.insert(m.zone);
      result.push_back(&m);
    }
  }
  return result;
}

bool HashRing::IsReplica(absl::string_view key, size_t n, absl::string_view member_id) const {
  for (const Member* m : PreferenceList(key, n)) {
    if (m->id == member_id) return true;
  }
  return false;
}

const Member* HashRing::Find(absl::string_view member_id) const {
  auto it = std::lower_bound(members_.begin(), members_.end(), member_id,
                             [](const Member& m, absl::string_view id) { return m.id < id; });
  return it != members_.end() && it->id == member_id ? &*it : nullptr;
}

}  // namespace kv

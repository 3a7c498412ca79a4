// Membership: what gossip says about each member of the cluster, and the interface through which
// the rest of the node asks whether a member is down.
//
// A MemberEntry is one member's gossiped state. Its (incarnation, heartbeat) pair orders versions
// of the entry: only the member itself advances it (heartbeat every gossip round; a new
// incarnation at every process start, so a restarted member's heartbeat may start again from 0),
// and every other node keeps the greatest version it has seen. Liveness is not gossiped: each
// node judges it locally (node/failure_detector.h) from whether the heartbeat it sees advances.
//
// RingStatus: a member is part of the cluster layout (kNormal: an owner now or after the running
// transition) or only known to gossip (kNone: e.g. a node started with --seeds that waits to be
// joined, or one that has left). The layout itself (node/cluster_layout.h) travels in every
// digest; the highest version wins.
//
// Handoff progress: during a transition each current owner streams the keys the new owners gain
// (node/handoff.h) and reports its progress in its own entry, so the node running the
// membership-change operation, and the other sources waiting for phase 1 to end everywhere, see
// every source's progress through gossip.
//
// Plain values; no shared state. Thread-compatible.
#ifndef KV_NODE_MEMBERSHIP_H_
#define KV_NODE_MEMBERSHIP_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "node/cluster_layout.h"
#include "node/ring.h"

namespace kv {

enum class Liveness {
  kUnknown = 0,  // not heard from since this node started watching it
  kUp = 1,       // its heartbeat advanced within the failure timeout
  kDown = 2,     // its heartbeat has not advanced for the failure timeout
};
absl::string_view LivenessName(Liveness liveness);  // "UNKNOWN", "UP", "DOWN"

enum class RingStatus {
  kNone = 0,    // known to gossip, not placed on the ring
  kNormal = 1,  // owns its share of the ring
};

// Where a source is in the handoff of one transition (node/handoff.h).
enum class HandoffPhase : uint32_t {
  kNone = 0,       // not started (or a member of an earlier version that does not say)
  kStreaming = 1,  // phase 1: streaming the records it is the designated source of
  kComparing = 2,  // phase 1 done: waiting for the other sources, then comparing digests
};

// One member's handoff progress for the transition at `layout_version` (0: none yet).
// HandoffProgress::last_error is cut to this many bytes (it travels in every gossip message).
inline constexpr size_t kMaxHandoffErrorBytes = 300;

struct HandoffProgress {
  uint64_t layout_version = 0;
  HandoffPhase phase = HandoffPhase::kNone;
  uint64_t keys = 0;            // full records sent so far, both phases
  uint64_t bytes = 0;           // their encoded bytes
  uint64_t digests = 0;         // phase 2: (key, digest) pairs sent for comparison
  uint64_t compared_keys = 0;   // phase 2: records the gainers lacked or held otherwise, sent
  uint64_t compared_bytes = 0;  // their bytes (included in `bytes`)
  bool done = false;            // both phases complete: every gained key is durable on its gainers
  // Why the job is waiting to retry: the call that failed last, its peer and its error (at most
  // kMaxHandoffErrorBytes); empty once a call succeeds again. A stalled change says why.
  std::string last_error;

  // Phase 1 is over for this transition: the member streamed everything it is the designated
  // source of (members of an earlier version stream every key and report only `done`).
  bool Streamed(uint64_t version) const {
    return layout_version == version && (done || phase == HandoffPhase::kComparing);
  }
};

// Bounds on an entry learned from a peer (Gossiper ignores one beyond them). Incarnations are
// microseconds since 1970 and heartbeats count gossip rounds, so no member comes near them; an
// entry at 2^64 - 1 could never be refuted or superseded.
inline constexpr uint64_t kMaxIncarnation = uint64_t{1} << 62;
inline constexpr uint64_t kMaxHeartbeat = uint64_t{1} << 62;
// A member's settings (MemberEntry::settings) are a few hundred bytes; an entry with more is
// ignored rather than stored, logged and gossiped on by every node.
inline constexpr size_t kMaxMemberSettingsBytes = 4096;

struct MemberEntry {
  Member member;
  uint64_t incarnation = 0;
  uint64_t heartbeat = 0;
  RingStatus ring_status = RingStatus::kNone;
  HandoffProgress handoff;
  // The storage/FORMAT.md level the member reads (storage/format_level.h); 0 when its entry does
  // not say (a member built before levels were gossiped, or one not heard from yet).
  uint32_t format_level = 0;
  // The member is outside the layout and its data directory holds records (Gossiper::Options::
  // holds_records): it may not join until its directory is emptied.
  bool holds_records = false;
  // The layout version the member held when it made this entry (0: an older node that does not
  // say). A join is planned only on an entry made under the planner's layout version.
  uint64_t layout_version = 0;
  // The member honours ClusterLayout::down (it hands off nothing for a member removed down for
  // good, and waits for nothing from it). False from older nodes, which would drop the mark.
  bool knows_members_down = false;
  // The member agrees on a transition's completion with the other owners (Paxos, as a change)
  // instead of installing it at once, so a remove during the transition can compete with it for
  // the same version. False from older nodes, which install the completion unagreed.
  bool agrees_completions = false;
  // The settings every member must share, as the member runs with them (Gossiper::Options::
  // settings); empty from older nodes and until heard from.
  std::string settings;
  // The stable layout version on whose ring the member's last clean-up pass ended keeping
  // nothing (node/unowned_record_cleaner.h): it then held no copy of a key it does not own there.
  // 0 until such a pass ends in this incarnation, and from older nodes. Tombstones are purged on
  // a ring only once every owner says so (StraysCleared).
  uint64_t clean_layout_version = 0;
  // The member's history generation (node/local_store.h, "History generations"): never above
  // what its disk held when it sent the entry. 0 from older nodes and until heard from.
  uint64_t generation = 0;
  // The highest generation of the member's earlier runs (incarnations) at the same address that
  // gossip has seen, and the incarnation it came from: when a member's entry of a new run
  // replaces one of an earlier run, the receiver keeps the earlier run's generation here. The
  // member's own run then learns what an earlier run reached, whichever side gossips first
  // (node/gossip.h, HistoryConflict); the incarnation lets it tell a value of its own run apart
  // (a clock that went back makes a later run's incarnation the lower one). Merged by the highest
  // generation; reset when a restart changes the address; 0 from older nodes.
  uint64_t earlier_generation = 0;
  uint64_t earlier_incarnation = 0;

  // True if this entry is a later version of the same member's state than `other`.
  bool NewerThan(const MemberEntry& other) const {
    return std::tie(incarnation, heartbeat) > std::tie(other.incarnation, other.heartbeat);
  }
};

// One side of a push-pull exchange: the sender's whole table, itself included.
struct GossipDigest {
  std::string from_id;
  std::vector<MemberEntry> members;
  ClusterLayout layout;  // the sender's layout (version 0: it knows none)
};

// A member as this node sees it now.
struct MemberView {
  MemberEntry entry;
  Liveness liveness = Liveness::kUnknown;
  bool self = false;
  // How long ago its heartbeat last advanced here (zero for this node); infinite if never.
  absl::Duration since_heard = absl::InfiniteDuration();
};

// Asked by coordinators and senders to route around dead members. Thread-safe.
class MemberLiveness {
 public:
  virtual ~MemberLiveness() = default;
  // True only when the failure detector judges the member DOWN; unknown members are not down.
  virtual bool IsDown(absl::string_view member_id) const = 0;
};

// What the members read (storage/format_level.h), as gossip tells, so that nothing is sent to a
// member, or handed to a client who may take it to any member, in a format that member refuses
// (a rolling upgrade). Thread-safe.
class FormatLevels {
 public:
  virtual ~FormatLevels() = default;
  // The level `member_id` reads, as its own gossip entry says: kLegacyFormatLevel when the entry
  // does not say (a member built before levels) or no entry of it has been heard yet (until then
  // it may be such a member; a node learns every known member's entry in its first exchange).
  // This node's own level for itself.
  virtual uint32_t MemberFormatLevel(absl::string_view member_id) const = 0;
  // The lowest MemberFormatLevel among the members of the layout (current and next owners).
  virtual uint32_t ClusterFormatLevel() const = 0;
};

}  // namespace kv

#endif  // KV_NODE_MEMBERSHIP_H_

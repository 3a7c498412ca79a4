#include "node/gossip.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "node/history_check.h"
#include "node/log.h"

namespace kv {
namespace {

// The level a member's entry says it reads (FormatLevels).
uint32_t LevelOf(const MemberEntry& entry) {
  if (entry.format_level != 0) return entry.format_level;
  // Not said: built before levels were gossiped, or not heard from yet (it may be such a node).
  return kLegacyFormatLevel;
}

// The pairs of `theirs` whose values differ from `ours` ("name=value" lists joined by ','), as
// "name=their value" and "name=our value" lists; both empty when they agree on every name.
std::pair<std::string, std::string> DifferingSettings(absl::string_view ours,
                                                      absl::string_view theirs) {
  std::map<std::string, std::string> mine;
  for (absl::string_view pair : absl::StrSplit(ours, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    mine[kv.first] = kv.second;
  }
  std::vector<std::string> their_diff, our_diff;
  for (absl::string_view pair : absl::StrSplit(theirs, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    auto it = mine.find(kv.first);
    if (it == mine.end() || it->second == kv.second) continue;  // unknown here, or the same
    their_diff.push_back(absl::StrCat(kv.first, "=", kv.second));
    our_diff.push_back(absl::StrCat(kv.first, "=", it->second));
  }
  return {absl::StrJoin(their_diff, ","), absl::StrJoin(our_diff, ",")};
}

}  // namespace

Gossiper::Gossiper(Member self, const std::vector<Member>& members, GossipTransport* transport,
                   Scheduler* scheduler, const Clock* clock, absl::BitGenRef rng, Options options)
    : self_id_(self.id),
      transport_(transport),
      scheduler_(scheduler),
      clock_(clock),
      options_(std::move(options)),
      detector_(options_.failure_timeout),
      rng_(rng) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  for (const Member& m : members) {
    MemberEntry entry;
    entry.member = m;
    entry.ring_status = RingStatus::kNormal;
    members_[m.id] = std::move(entry);
    if (m.id != self_id_) detector_.Watch(m.id, now);
  }
  MemberEntry& me = members_[self_id_];
  if (me.member.id.empty()) me.member = self;  // not on the ring: known to gossip only
  me.incarnation = options_.incarnation != 0 ? options_.incarnation
                                             : static_cast<uint64_t>(absl::ToUnixMicros(now));
  me.format_level = options_.format_level != 0 ? options_.format_level : kFormatLevel;
  me.knows_members_down = true;
  me.agrees_completions = true;
  me.settings = options_.settings;
  me.generation = options_.generation;
  run_incarnations_.push_back(me.incarnation);
  if (options_.layout.version != 0) {
    AdoptLayout(options_.layout);
  } else {
    layout_.version = 1;
    layout_.members = members;
  }
  layout_changed_ = false;  // the starting layout is not a change
  UpdateClusterFormatLevel();
}

Gossiper::~Gossiper() { Shutdown(); }

void Gossiper::SetListener(Listener listener) { listener_ = std::move(listener); }

void Gossiper::SetLayoutListener(LayoutListener listener) {
  layout_listener_ = std::move(listener);
}

void Gossiper::SetHistoryListener(HistoryListener listener) {
  history_listener_ = std::move(listener);
}

void Gossiper::AdoptLayout(const ClusterLayout& layout) {
  if (layout.version <= layout_.version || layout.members.empty()) return;
  layout_ = layout;
  layout_changed_ = true;
  layout_conflict_.clear();
  const absl::Time now = clock_->Now();
  auto add = [&](const Member& m) {
    auto [it, inserted] = members_.try_emplace(m.id);
    if (inserted) {
      it->second.member = m;
      detector_.Watch(m.id, now);
      // A member the cluster took (back) in: no longer a forgotten node whose stale entries are
      // held off. Its entries, relayed or its own, now update the one in the table; a quarantine
      // left in place would keep it DOWN here while its heartbeat advances.
      forgotten_.erase(m.id);
    }
  };
  for (const Member& m : layout_.members) add(m);
  for (const Member& m : layout_.next) add(m);
  for (auto& [id, entry] : members_) {
    entry.ring_status = layout_.Contains(id) ? RingStatus::kNormal : RingStatus::kNone;
  }
  UpdateClusterFormatLevel();
}

void Gossiper::UpdateClusterFormatLevel() {
  uint32_t level = kFormatLevel;
  for (const auto& [id, entry] : members_) {
    if (entry.ring_status == RingStatus::kNormal) level = std::min(level, LevelOf(entry));
  }
  cluster_format_level_.store(level, std::memory_order_relaxed);
}

uint32_t Gossiper::MemberFormatLevel(absl::string_view member_id) const {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(member_id);
  // A member never heard of may be of any version (a joiner whose entry has not arrived yet):
  // as the header says, the legacy level until its entry says otherwise.
  if (it == members_.end()) return member_id == self_id_ ? kFormatLevel : kLegacyFormatLevel;
  return LevelOf(it->second);
}

uint32_t Gossiper::ClusterFormatLevel() const {
  return cluster_format_level_.load(std::memory_order_relaxed);
}

void Gossiper::NotifyListeners() {
  absl::MutexLock serial(&notify_mu_);
  std::optional<ClusterLayout> layout;
  std::optional<std::string> history_conflict;
  {
    absl::MutexLock lock(&mu_);
    if (layout_changed_) {
      layout_changed_ = false;
      layout = layout_;
    }
    if (!history_conflict_.empty() && !history_conflict_reported_) {
      history_conflict_reported_ = true;
      history_conflict = history_conflict_;
    }
  }
  if (layout && layout_listener_) layout_listener_(*layout);
  if (history_conflict && history_listener_) history_listener_(*history_conflict);
}

ClusterLayout Gossiper::Layout() const {
  absl::MutexLock lock(&mu_);
  return layout_;
}

std::string Gossiper::LayoutConflict() const {
  absl::MutexLock lock(&mu_);
  return layout_conflict_;
}

std::string Gossiper::HistoryConflict() const {
  absl::MutexLock lock(&mu_);
  return history_conflict_;
}

uint64_t Gossiper::SelfGenerationSeen() const {
  absl::MutexLock lock(&mu_);
  return self_generation_seen_;
}

std::string Gossiper::SettingsConflict() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> conflicts;
  for (const auto& [id, entry] : members_) {
    if (id == self_id_) continue;
    // Nodes outside the layout count while they are up: one waiting to be joined should be told
    // before the join, and one that left and stopped should not be reported for good.
    const bool member = entry.ring_status == RingStatus::kNormal;
    if (!member && detector_.Get(id) != Liveness::kUp) continue;
    auto [theirs, ours] = DifferingSettings(options_.settings, entry.settings);
    if (theirs.empty()) continue;
    conflicts.push_back(absl::StrCat(absl::CHexEscape(absl::string_view(id).substr(0, 64)),
                                     member ? "" : " (not a member)", " runs with ",
                                     absl::CHexEscape(theirs), " (this node: ", ours, ")"));
  }
  return absl::StrJoin(conflicts, "; ");
}

void Gossiper::WarnOfSettings(const MemberEntry& entry) {
  if (entry.settings.empty()) return;
  std::string& warned = settings_warned_[entry.member.id];
  if (warned == entry.settings) return;
  warned = entry.settings;
  auto [theirs, ours] = DifferingSettings(options_.settings, entry.settings);
  if (theirs.empty()) return;
  LogWarn(
      "a member runs with other settings than this node; every member must share them (a write "
      "within one node's limits but beyond another's is refused by it for good, and members "
      "with another replication_factor place keys differently; one that forgets silent nodes "
      "later, or never, keeps gossiping them, and the others' quarantine of them never ends)",
      {{"member", absl::CHexEscape(absl::string_view(entry.member.id).substr(0, 64))},
       {"member_settings", absl::CHexEscape(theirs)},
       {"this_node", ours}});
}

absl::Status Gossiper::ProposeLayout(ClusterLayout layout) {
  if (absl::Status valid = CheckLayout(layout); !valid.ok()) return valid;
  {
    absl::MutexLock lock(&mu_);
    if (layout.version <= layout_.version) {
      return absl::FailedPreconditionError(
          absl::StrCat("layout version ", layout.version, " is not newer than this node's ",
                       layout_.version, " (", layout_.change.empty() ? "stable" : layout_.change,
                       "); another change may have won; plan again"));
    }
    AdoptLayout(layout);
  }
  NotifyListeners();
  return absl::OkStatus();
}

void Gossiper::SetHandoffProgress(const HandoffProgress& progress) {
  {
    absl::MutexLock lock(&mu_);
    MemberEntry& me = members_[self_id_];
    const bool milestone = me.handoff.layout_version != progress.layout_version ||
                           me.handoff.phase != progress.phase || me.handoff.done != progress.done;
    me.handoff = progress;
    if (!milestone || stopped_ || !started_) return;
  }
  PushToAll();
}

void Gossiper::SetCleanLayoutVersion(uint64_t version) {
  {
    absl::MutexLock lock(&mu_);
    MemberEntry& me = members_[self_id_];
    // Never back: a pass of an older layout may report after one of a newer layout.
    if (version <= me.clean_layout_version) return;
    me.clean_layout_version = version;
    if (stopped_ || !started_) return;
  }
  PushToAll();  // the owners' reapers wait for it
}

void Gossiper::SetGeneration(uint64_t generation) {
  absl::MutexLock lock(&mu_);
  MemberEntry& me = members_[self_id_];
  me.generation = std::max(me.generation, generation);
}

void Gossiper::PushToAll() {
  std::vector<std::string> targets;
  GossipDigest digest;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    // A newer version of our entry: receivers keep only entries newer than theirs.
    BumpSelfLocked();
    for (const auto& [id, entry] : members_) {
      if (id != self_id_ && !entry.member.address.empty()) targets.push_back(entry.member.address);
    }
    digest = Digest();
  }
  for (const std::string& target : targets) {
    transport_->Gossip(target, digest, [this, target](absl::StatusOr<GossipDigest> reply) {
      OnReply(target, std::move(reply));
    });
  }
}

void Gossiper::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || stopped_) return;
    started_ = true;
    // The node may have spent longer than the timeout starting up (recovering its outbox, say)
    // since the constructor began watching: nobody could have been heard meanwhile.
    detector_.RestartUnheard(clock_->Now());
    // Under the lock, as in ScheduleRound.
    scheduler_->RunAfter(absl::ZeroDuration(), [this] {
      RunRound();
      ScheduleRound();
    });
  }
}

void Gossiper::ScheduleRound() {
  // Under the lock: once Shutdown has returned, no round is scheduled any more, so the node may
  // destroy the scheduler (checked and then scheduled outside the lock, a round finishing on the
  // gossip executor during the node's stop scheduled its next one on a freed scheduler). The
  // scheduler only queues the task here; it never runs it inside RunAfter.
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  scheduler_->RunAfter(options_.interval, [this] {
    RunRound();
    ScheduleRound();
  });
}

void Gossiper::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

void Gossiper::RunRound() {
  std::string target;
  GossipDigest digest;
  std::vector<FailureDetector::Transition> transitions;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    BumpSelfLocked();
    detector_.Evaluate(clock_->Now());
    ForgetSilentLocked(clock_->Now());
    transitions = detector_.TakeTransitions();
    // The members of the layout are the candidates, DOWN ones included (talking to them is how
    // they are found to be back), and nodes outside it while UP (one waiting to be joined).
    // Entries of nodes that left, or never joined, stay until they are forgotten (forget_after):
    // if they were candidates like the others, every one of them would take a share of the
    // rounds, heartbeats would spread too slowly and live members would be judged DOWN. They are
    // asked one round in 16 (any entry then), so that one that comes back is heard from.
    const bool any = absl::Uniform<int>(rng_, 0, 16) == 0;
    std::vector<const std::string*> candidates;
    for (const auto& [id, entry] : members_) {
      if (id == self_id_) continue;
      if (any || layout_.Contains(id) || detector_.Get(id) == Liveness::kUp) {
        candidates.push_back(&entry.member.address);
      }
    }
    if (candidates.empty()) {
      for (const std::string& seed : options_.seeds) candidates.push_back(&seed);
    }
    if (!candidates.empty()) {
      target = *candidates[absl::Uniform<size_t>(rng_, 0, candidates.size())];
      digest = Digest();
    }
  }
  Notify(std::move(transitions));
  if (target.empty()) return;
  transport_->Gossip(target, std::move(digest), [this, target](absl::StatusOr<GossipDigest> reply) {
    OnReply(target, std::move(reply));
  });
}

void Gossiper::OnReply(const std::string& target, absl::StatusOr<GossipDigest> reply) {
  std::vector<FailureDetector::Transition> transitions;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    if (!reply.ok()) {
      // The failure detector notices silence. A peer that answered with a refusal (a node of
      // another cluster, node/cluster_name.h, or one whose TLS peer names leave this node out)
      // is only silent to it, so the reason is logged, once per peer until an exchange with it
      // succeeds.
      if (absl::IsFailedPrecondition(reply.status()) || absl::IsPermissionDenied(reply.status())) {
        std::string refusal(reply.status().message());
        std::string& logged = exchange_refusals_[target];
        if (refusal != logged) {
          LogWarn("a peer refused a gossip exchange", {{"peer", target}, {"error", refusal}});
          logged = std::move(refusal);
        }
      }
      return;
    }
    exchange_refusals_.erase(target);
    Merge(*reply);
    transitions = detector_.TakeTransitions();
  }
  Notify(std::move(transitions));
  NotifyListeners();
}

GossipDigest Gossiper::HandleGossip(const GossipDigest& incoming) {
  GossipDigest answer;
  std::vector<FailureDetector::Transition> transitions;
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) Merge(incoming);
    transitions = detector_.TakeTransitions();
    answer = Digest();
  }
  Notify(std::move(transitions));
  NotifyListeners();
  return answer;
}

void Gossiper::LogRefusal(const GossipDigest& digest, absl::string_view what,
                          const absl::Status& why) {
  std::string refusal = absl::StrCat(what, ": ", why.message());
  if (refusal == last_refusal_) return;
  LogWarn("ignoring gossip from a peer",
          {{"from", absl::CHexEscape(absl::string_view(digest.from_id).substr(0, 64))},
           {"ignored", std::string(what)},
           {"error", std::string(why.message())}});
  last_refusal_ = std::move(refusal);
}

namespace {

// True if `layout` has a member with `id` (at `address`, unless null) as an owner now or next.
bool Holds(const ClusterLayout& layout, absl::string_view id, const std::string* address) {
  auto same = [&](const Member& x) {
    return x.id == id && (address == nullptr || x.address == *address);
  };
  return std::any_of(layout.members.begin(), layout.members.end(), same) ||
         std::any_of(layout.next.begin(), layout.next.end(), same);
}

// Keeps (generation, incarnation) as `entry`'s earlier-run generation if it is higher (on a tie,
// the lower incarnation: the earlier run, unless a clock went back).
void KeepHigherEarlier(uint64_t generation, uint64_t incarnation, MemberEntry* entry) {
  if (generation == 0) return;
  if (generation > entry->earlier_generation ||
      (generation == entry->earlier_generation && incarnation < entry->earlier_incarnation)) {
    entry->earlier_generation = generation;
    entry->earlier_incarnation = incarnation;
  }
}

}  // namespace

bool Gossiper::FromAnotherCluster(const GossipDigest& digest) const {
  // A node that knows no layout (an earlier version's joiner) sends none; kvnode itself always
  // has one, from its --peers, its stored layout or a seed.
  if (layout_.version == 0 || digest.layout.version == 0) return false;
  const auto sender =
      std::find_if(digest.members.begin(), digest.members.end(),
                   [&digest](const MemberEntry& e) { return e.member.id == digest.from_id; });
  const auto me = members_.find(self_id_);
  if (sender == digest.members.end() || me == members_.end()) return false;  // nothing to compare
  // This node's own id at another address: another node (a node never gossips with itself
  // under two addresses).
  if (digest.from_id == self_id_) return sender->member.address != me->second.member.address;
  // Nodes of one cluster are in each other's layout, or one of them is behind and the other's
  // layout has it: a node that was removed still has this node in its older layout, a joiner is
  // in the newer one (it starts from a seed's).
  const Member& them = sender->member;
  const Member& self = me->second.member;
  if (Holds(layout_, them.id, &them.address) || Holds(digest.layout, self.id, &self.address)) {
    return false;
  }
  // Each in the other's layout by id, at addresses written differently (a --peers list changed
  // from addresses to names during a rolling restart): the same cluster; a layout conflict shows
  // it if the versions are equal.
  return !(Holds(layout_, them.id, nullptr) && Holds(digest.layout, self.id, nullptr));
}

void Gossiper::Merge(const GossipDigest& digest) {
  if (FromAnotherCluster(digest)) {
    LogRefusal(digest, "its layout and members",
               absl::FailedPreconditionError(absl::StrCat(
                   "a node of another cluster (neither this node's layout nor its layout ",
                   DescribeLayout(digest.layout),
                   " holds the other node): an address of this cluster's gossip reached it")));
    return;
  }
  const absl::Time now = clock_->Now();
  // A layout that is not newer is not looked at (every digest carries one).
  if (digest.layout.version > layout_.version) {
    if (absl::Status valid = CheckLayout(digest.layout); valid.ok()) {
      AdoptLayout(digest.layout);
    } else {
      LogRefusal(digest, absl::StrCat("layout version ", digest.layout.version), valid);
    }
  } else if (digest.layout.version == layout_.version && layout_conflict_.empty() &&
             !SameLayout(digest.layout, layout_) && CheckLayout(digest.layout).ok()) {
    // Two membership changes installed one version (layout agreement, node/layout_reservations.h,
    // rules this out between nodes that have it; a node from before it, or one whose stored
    // promises were lost, could still do it): the cluster is split until a newer layout
    // reaches both sides.
    layout_conflict_ = absl::StrCat(
        absl::CHexEscape(absl::string_view(digest.from_id).substr(0, 64)), " gossips layout ",
        DescribeLayout(digest.layout), ", this node holds ", DescribeLayout(layout_),
        ": two membership changes installed the same version, and the nodes on each side place "
        "keys differently");
    LogError("cluster layout conflict", {{"detail", layout_conflict_}});
  }
  for (const MemberEntry& in : digest.members) {
    if (in.member.id.empty()) continue;
    absl::Status valid = CheckMember(in.member);
    if (valid.ok() && (in.incarnation > kMaxIncarnation || in.heartbeat > kMaxHeartbeat ||
                       in.generation > kMaxHeartbeat || in.earlier_generation > kMaxHeartbeat)) {
      valid = absl::InvalidArgumentError(absl::StrCat(
          "incarnation ", in.incarnation, ", heartbeat ", in.heartbeat, ", generation ",
          in.generation, " or earlier generation ", in.earlier_generation, " is above 2^62"));
    }
    if (valid.ok() && in.settings.size() > kMaxMemberSettingsBytes) {
      valid = absl::InvalidArgumentError(absl::StrCat(
          "its settings are ", in.settings.size(), " bytes, more than ", kMaxMemberSettingsBytes));
    }
    if (!valid.ok()) {
      LogRefusal(digest,
                 absl::StrCat("the entry of member '",
                              absl::CHexEscape(absl::string_view(in.member.id).substr(0, 64)), "'"),
                 valid);
      continue;
    }
    if (in.member.id == self_id_) {
      MemberEntry& me = members_[self_id_];
      // The generation an earlier run reached, as far as this entry shows: its own field if the
      // entry is of another run (an incarnation other than this run's), and what the sender kept
      // of earlier runs unless that came from this run. Only at this node's address, and within
      // the bound, as the start's check counts them (node/history_check.h): an entry of this id
      // elsewhere is another node's (another cluster's, say).
      auto of_this_run = [this](uint64_t incarnation) {
        return std::find(run_incarnations_.begin(), run_incarnations_.end(), incarnation) !=
               run_incarnations_.end();
      };
      uint64_t earlier_run = 0;
      if (in.member.address == me.member.address) {
        if (!of_this_run(in.incarnation)) earlier_run = in.generation;
        if (!of_this_run(in.earlier_incarnation)) {
          earlier_run = std::max(earlier_run, in.earlier_generation);
        }
      }
      if (earlier_run > kMaxPeerGeneration) earlier_run = 0;
      // Someone holds a newer version of us than we do (our clock went back across a restart):
      // move past it, or our heartbeats would be ignored until we caught up.
      if (in.NewerThan(me)) {
        me.incarnation = in.incarnation + 1;
        run_incarnations_.push_back(me.incarnation);
      }
      // Only a run with a new epoch moves past it (SelfGenerationSeen); any other run must leave
      // it above its own, for the next start's check to see.
      if (options_.new_epoch) self_generation_seen_ = std::max(self_generation_seen_, earlier_run);
      // An earlier run of this node reached the generation this one started from (one above the
      // directory's): the start found no peer that remembered it (node/history_check.h), and the
      // data directory is older than that run. Too late for a new epoch here; say so, once.
      if (earlier_run >= options_.generation && options_.generation > 0 && !options_.new_epoch &&
          history_conflict_.empty()) {
        history_conflict_ = absl::StrCat(
            absl::CHexEscape(absl::string_view(digest.from_id).substr(0, 64)),
            " holds history generation ", earlier_run, " of an earlier run of ", self_id_,
            "; this run started from ", options_.generation,
            ": the data directory is older than that run (restored from a backup or a "
            "snapshot?), so new writes could reuse the dots of writes it lacks. Restart the node: "
            "it takes a new actor epoch");
        LogError(
            "another node holds an entry of an earlier run of this node with a later history "
            "generation than this run's: this data directory is older than that run (restored "
            "from a backup or a snapshot?), so new writes could reuse the dots of writes it lacks "
            "and be lost. Restart this node: it takes a new actor epoch",
            {{"from", digest.from_id},
             {"their_generation", absl::StrCat(earlier_run)},
             {"this_run_started_from", absl::StrCat(options_.generation)}});
      }
      continue;
    }
    auto it = members_.find(in.member.id);
    if (it == members_.end()) {
      // A forgotten node's entry as a peer that has not forgotten it yet holds it: not news, and
      // the quarantine goes on. A newer one, or one from the node itself, shows it came back.
      bool came_back = false;
      if (auto gone = forgotten_.find(in.member.id); gone != forgotten_.end()) {
        if (digest.from_id != in.member.id &&
            std::tie(in.incarnation, in.heartbeat) <=
                std::tie(gone->second.incarnation, gone->second.heartbeat)) {
          gone->second.at = now;
          continue;
        }
        forgotten_.erase(gone);
        came_back = true;
      }
      MemberEntry entry = in;
      // Only the layout places a member on the ring.
      entry.ring_status = layout_.Contains(in.member.id) ? RingStatus::kNormal : RingStatus::kNone;
      auto added = members_.emplace(in.member.id, std::move(entry)).first;
      if (came_back) {
        detector_.Heard(in.member.id, now);  // its heartbeat advanced since it was forgotten
      } else {
        detector_.Watch(in.member.id, now);
      }
      WarnOfSettings(added->second);
      continue;
    }
    if (!in.NewerThan(it->second)) continue;
    const bool restarted = in.incarnation > it->second.incarnation;
    const bool moved = in.member.address != it->second.member.address;
    const uint64_t held_incarnation = it->second.incarnation;  // the run this entry replaces
    if (restarted) {
      // A restart may come with another address (a joiner whose port was taken, say): a join
      // is planned with the address of the member's entry.
      it->second.member.address = in.member.address;
      it->second.member.zone = in.member.zone;
    }
    it->second.incarnation = in.incarnation;
    it->second.heartbeat = in.heartbeat;
    it->second.handoff = in.handoff;
    it->second.format_level = in.format_level;
    it->second.holds_records = in.holds_records;
    it->second.layout_version = in.layout_version;
    it->second.knows_members_down = in.knows_members_down;
    it->second.agrees_completions = in.agrees_completions;
    it->second.clean_layout_version = in.clean_layout_version;
    // An earlier run's generation is kept apart: a run that starts below it learns it from there
    // (HistoryConflict). Within a run it never goes back (an older node relaying the entry drops
    // the field). A run at another address is another node's history as far as the start's
    // check goes (node/history_check.h): it starts over.
    if (restarted && moved) {
      it->second.earlier_generation = 0;
      it->second.earlier_incarnation = 0;
    } else if (restarted) {
      KeepHigherEarlier(it->second.generation, held_incarnation, &it->second);
    }
    it->second.generation =
        restarted ? in.generation : std::max(it->second.generation, in.generation);
    KeepHigherEarlier(in.earlier_generation, in.earlier_incarnation, &it->second);
    // An older node relaying the entry drops the field: keep what the member itself said (a
    // restarted member's entry replaces it, empty or not).
    if (!in.settings.empty() || restarted) it->second.settings = in.settings;
    WarnOfSettings(it->second);
    detector_.Heard(in.member.id, now);
  }
  UpdateClusterFormatLevel();
}

void Gossiper::ForgetSilentLocked(absl::Time now) {
  for (auto it = forgotten_.begin(); it != forgotten_.end();) {
    it = now - it->second.at >= options_.forget_after ? forgotten_.erase(it) : std::next(it);
  }
  if (options_.forget_after == absl::InfiniteDuration()) return;
  for (auto it = members_.begin(); it != members_.end();) {
    const std::string& id = it->first;
    const absl::Time silent_since = detector_.SilentSince(id);
    if (id == self_id_ || layout_.Contains(id) || silent_since == absl::InfinitePast() ||
        now - silent_since < options_.forget_after) {
      ++it;
      continue;
    }
    LogInfo(
        "forgetting a member: it is outside the cluster layout and its heartbeat has not "
        "advanced for forget_after",
        {{"member", absl::CHexEscape(absl::string_view(id).substr(0, 64))},
         {"address", absl::CHexEscape(absl::string_view(it->second.member.address).substr(0, 300))},
         {"silent_for", absl::FormatDuration(now - silent_since)}});
    forgotten_[id] = Forgotten{it->second.incarnation, it->second.heartbeat, now};
    detector_.Forget(id);
    settings_warned_.erase(id);
    exchange_refusals_.erase(it->second.member.address);
    it = members_.erase(it);
  }
}

void Gossiper::BumpSelfLocked() {
  MemberEntry& me = members_[self_id_];
  ++me.heartbeat;
  me.layout_version = layout_.version;
  if (!options_.holds_records || layout_.Contains(self_id_)) {
    me.holds_records = false;
    return;
  }
  // Asked again after a layout change, else at most every 10 s: the engine seek runs under the
  // lock, and a directory full of deletion markers makes it slow until compaction.
  const absl::Time now = clock_->Now();
  if (holds_records_checked_version_ != layout_.version ||
      now - holds_records_checked_at_ >= absl::Seconds(10)) {
    me.holds_records = options_.holds_records();
    holds_records_checked_version_ = layout_.version;
    holds_records_checked_at_ = now;
  }
}

GossipDigest Gossiper::Digest() const {
  GossipDigest digest;
  digest.from_id = self_id_;
  digest.layout = layout_;
  digest.members.reserve(members_.size());
  for (const auto& [id, entry] : members_) digest.members.push_back(entry);
  return digest;
}

void Gossiper::Notify(std::vector<FailureDetector::Transition> transitions) {
  if (!listener_) return;
  for (const FailureDetector::Transition& t : transitions) listener_(t.member_id, t.from, t.to);
}

bool Gossiper::IsDown(absl::string_view member_id) const {
  return LivenessOf(member_id) == Liveness::kDown;
}

Liveness Gossiper::LivenessOf(absl::string_view member_id) const {
  absl::MutexLock lock(&mu_);
  if (member_id == self_id_) return Liveness::kUp;
  // A forgotten node was silent for forget_after: DOWN, also for a coordinator whose placement
  // still lists it (a removal being installed).
  if (forgotten_.find(member_id) != forgotten_.end()) return Liveness::kDown;
  return detector_.Get(member_id);
}

std::vector<MemberView> Gossiper::Members() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<MemberView> views;
  views.reserve(members_.size());
  for (const auto& [id, entry] : members_) {
    MemberView view;
    view.entry = entry;
    view.self = id == self_id_;
    view.liveness = view.self ? Liveness::kUp : detector_.Get(id);
    const absl::Time heard = view.self ? now : detector_.LastHeard(id);
    if (heard != absl::InfinitePast()) view.since_heard = now - heard;
    views.push_back(std::move(view));
  }
  return views;
}

}  // namespace kv

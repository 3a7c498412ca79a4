#include "node/gossip.h"

#include <utility>

#include "absl/random/distributions.h"

namespace kv {

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
}

Gossiper::~Gossiper() { Shutdown(); }

void Gossiper::SetListener(Listener listener) { listener_ = std::move(listener); }

void Gossiper::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || stopped_) return;
    started_ = true;
    // The node may have spent longer than the timeout starting up (recovering its outbox, say)
    // since the constructor began watching: nobody could have been heard meanwhile.
    detector_.RestartUnheard(clock_->Now());
  }
  scheduler_->RunAfter(absl::ZeroDuration(), [this] {
    RunRound();
    ScheduleRound();
  });
}

void Gossiper::ScheduleRound() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
  }
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
    ++members_[self_id_].heartbeat;
    detector_.Evaluate(clock_->Now());
    transitions = detector_.TakeTransitions();
    // Every other member is a candidate, DOWN ones included: talking to them is how they are
    // found to be back (a random choice reaches a down member only now and then).
    std::vector<const std::string*> candidates;
    for (const auto& [id, entry] : members_) {
      if (id != self_id_) candidates.push_back(&entry.member.address);
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
  transport_->Gossip(target, std::move(digest), [this](absl::StatusOr<GossipDigest> reply) {
    if (!reply.ok()) return;  // the failure detector notices silence; nothing else to do
    std::vector<FailureDetector::Transition> transitions;
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
      Merge(*reply);
      transitions = detector_.TakeTransitions();
    }
    Notify(std::move(transitions));
  });
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
  return answer;
}

void Gossiper::Merge(const GossipDigest& digest) {
  const absl::Time now = clock_->Now();
  for (const MemberEntry& in : digest.members) {
    if (in.member.id.empty()) continue;
    if (in.member.id == self_id_) {
      MemberEntry& me = members_[self_id_];
      // Someone holds a newer version of us than we do (our clock went back across a restart):
      // move past it, or our heartbeats would be ignored until we caught up.
      if (in.NewerThan(me)) me.incarnation = in.incarnation + 1;
      continue;
    }
    auto it = members_.find(in.member.id);
    if (it == members_.end()) {
      MemberEntry entry = in;
      entry.ring_status = RingStatus::kNone;  // gossip alone never places a member on the ring
      members_.emplace(in.member.id, std::move(entry));
      detector_.Watch(in.member.id, now);
      continue;
    }
    if (!in.NewerThan(it->second)) continue;
    it->second.incarnation = in.incarnation;
    it->second.heartbeat = in.heartbeat;
    detector_.Heard(in.member.id, now);
  }
}

GossipDigest Gossiper::Digest() const {
  GossipDigest digest;
  digest.from_id = self_id_;
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
  return detector_.Get(member_id);
}

std::vector<MemberView> Gossiper::Members() const {
  absl::MutexLock lock(&mu_);
  std::vector<MemberView> views;
  views.reserve(members_.size());
  for (const auto& [id, entry] : members_) {
    MemberView view;
    view.entry = entry;
    view.self = id == self_id_;
    view.liveness = view.self ? Liveness::kUp : detector_.Get(id);
    view.last_heard = view.self ? clock_->Now() : detector_.LastHeard(id);
    views.push_back(std::move(view));
  }
  return views;
}

}  // namespace kv

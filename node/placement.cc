#include "node/placement.h"

#include <algorithm>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node/peer_transport.h"

namespace kv {

absl::StatusOr<std::shared_ptr<const Placement>> Placement::Create(ClusterLayout layout) {
  absl::StatusOr<HashRing> current = HashRing::Build(layout.members);
  if (!current.ok()) return current.status();
  std::shared_ptr<Placement> p(new Placement());
  p->current_ = std::make_shared<const HashRing>(*std::move(current));
  if (layout.in_transition()) {
    absl::StatusOr<HashRing> next = HashRing::Build(layout.next);
    if (!next.ok()) return next.status();
    p->next_ = std::make_shared<const HashRing>(*std::move(next));
  }
  p->layout_ = std::move(layout);
  return std::shared_ptr<const Placement>(std::move(p));
}

std::shared_ptr<const Placement> Placement::Fixed(std::shared_ptr<const HashRing> ring) {
  std::shared_ptr<Placement> p(new Placement());
  p->layout_.version = 1;
  p->layout_.members = ring->members();
  p->current_ = std::move(ring);
  return p;
}

std::vector<const Member*> Placement::Replicas(absl::string_view key, size_t n) const {
  std::vector<const Member*> replicas = current_->PreferenceList(key, n);
  if (next_ == nullptr) return replicas;
  for (const Member* m : next_->PreferenceList(key, n)) {
    if (std::none_of(replicas.begin(), replicas.end(),
                     [&](const Member* r) { return r->id == m->id; })) {
      replicas.push_back(m);
    }
  }
  return replicas;
}

absl::Status Placement::CheckMayHold(absl::string_view self_id, absl::string_view key,
                                     size_t n) const {
  if (!layout_.Contains(self_id)) return absl::OkStatus();
  for (const Member* m : Replicas(key, n)) {
    if (m->id == self_id) return absl::OkStatus();
  }
  return MarkNotAReplica(
      absl::FailedPreconditionError(
          absl::StrCat(self_id, " is not a replica of key \"", absl::CHexEscape(key),
                       "\" in cluster layout version ", layout_.version,
                       " and keeps no copy of it (the sender's layout may be older or newer)")),
      layout_.version);
}

absl::Status Placement::CheckSender(absl::string_view self_id, absl::string_view sender_id) const {
  if (sender_id.empty() || !layout_.Contains(self_id) || layout_.Contains(sender_id)) {
    return absl::OkStatus();
  }
  return MarkNotAReplica(
      absl::FailedPreconditionError(absl::StrCat(
          "\"", absl::CHexEscape(sender_id), "\" is not a member of cluster layout version ",
          layout_.version, " on ", self_id,
          ", which takes no records from it (a member removed from the cluster must not bring "
          "back what was deleted since; the sender's layout may be older or newer)")),
      layout_.version);
}

std::vector<const Member*> Placement::AllMembers() const {
  std::map<std::string, const Member*> all;
  for (const Member& m : current_->members()) all.emplace(m.id, &m);
  if (next_ != nullptr) {
    for (const Member& m : next_->members()) all.emplace(m.id, &m);
  }
  std::vector<const Member*> result;
  for (const auto& [id, m] : all) result.push_back(m);
  return result;
}

PlacementHolder::PlacementHolder(std::shared_ptr<const Placement> initial) {
  history_.push_back(initial);
  current_ = std::move(initial);
}

std::shared_ptr<const Placement> PlacementHolder::Get() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

bool PlacementHolder::Set(std::shared_ptr<const Placement> placement) {
  absl::MutexLock lock(&mu_);
  if (placement->layout().version <= current_->layout().version) return false;
  history_.push_back(placement);
  current_ = std::move(placement);
  return true;
}

}  // namespace kv

// Coordinator, write path: W acknowledgements per ring, coordination and forwarding (see
// node/coordinator.h).
#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "node/coordinator.h"
#include "storage/message_size_limit.h"
#include "storage/version_vector.h"

namespace kv {
namespace {

// Whether a forwarded write that a replica answered with `status` goes to the next replica. Only
// a replica that could not be reached, or that shed a first attempt of the write (its storage
// is behind: RESOURCE_EXHAUSTED, nothing applied; no replica can hold the write under its token
// yet), is skipped; any other answer, including a W failure reported by the replica, goes back
// to the client as it is. A retry that a replica shed goes back too: another replica might not
// hold the stored attempt yet and would make a second copy; the client retries it after a
// backoff. `first_attempt`: the client's first attempt of the write, or a write without a token.
bool GoesToTheNextReplica(const absl::Status& status, bool first_attempt) {
  if (IsWriteStored(status)) return false;
  if (absl::IsUnavailable(status)) return true;
  return first_attempt && absl::IsResourceExhausted(status) &&
         !IsMessageSizeLimitMessage(status.message());
}

// A failure of this node's storage (a full disk, an I/O error, an unwritable directory) is not the
// request's fault, and another node may take the same write: UNAVAILABLE, which clients retry
// (elsewhere), rather than the engine's INTERNAL or PERMISSION_DENIED, which they do not.
absl::Status ForClient(const absl::Status& status) {
  return StorageFailureAsUnavailable(
      status,
      "the write is not acknowledged here (a retry with the same idempotency token is safe, and "
      "another node can coordinate it)");
}

}  // namespace

// W acknowledgements among one set of owners of the key.
struct Coordinator::AckGroup {
  int needed = 0;                    // W
  std::vector<std::string> members;  // the owners' ids
  int acks = 0;                      // owners that hold the write durably
  int pending = 0;                   // owners whose answer has not come back
  bool Contains(absl::string_view id) const {
    return std::find(members.begin(), members.end(), id) != members.end();
  }
};

// One coordinated write: the client is answered once every group has its W acknowledgements,
// or as soon as one group cannot reach them any more.
struct Coordinator::WriteState {
  absl::Mutex mu;
  std::string key;
  QuorumSpec w;
  uint64_t layout_version = 0;         // of the placement `groups` were made for
  std::vector<AckGroup> groups;        // the owners; during a transition the old and the new ones
  std::vector<std::string> confirmed;  // peers that hold it durably
  std::vector<std::string> pending;    // peers whose answer has not come back
  int total_peers = 0;                 // replicas other than this one
  bool responded = false;
  absl::Status last_error;
  absl::Time committed_at;
  WriteReply reply;
  std::function<void(absl::StatusOr<WriteReply>)> done;

  // Replicas that hold the write: this one and the peers that confirmed.
  size_t Holders() const { return 1 + confirmed.size(); }
};

absl::StatusOr<std::vector<Coordinator::AckGroup>> Coordinator::OwnerGroups(
    const Placement& placement, absl::string_view key, QuorumSpec w, bool clamp) const {
  const size_t n = static_cast<size_t>(options_.replication_factor);
  // W counts within each set of owners: during a transition W old owners and W new owners must
  // hold the write, so that it survives whichever side of the change a reader or the final
  // layout stands on (a leaving node or a losing owner alone never holds an acknowledged write).
  std::vector<std::vector<const Member*>> owner_sets = {placement.current().PreferenceList(key, n)};
  if (placement.next() != nullptr) owner_sets.push_back(placement.next()->PreferenceList(key, n));
  std::vector<AckGroup> groups;
  for (const std::vector<const Member*>& owners : owner_sets) {
    absl::StatusOr<int> needed =
        ResolveQuorum(w, static_cast<int>(owners.size()), options_.default_w, "w");
    if (!needed.ok() && clamp) needed = static_cast<int>(owners.size());
    if (!needed.ok() && owners.size() < n) {
      needed = absl::InvalidArgumentError(absl::StrCat(
          needed.status().message(), "; this key has ", owners.size(), " owner(s)",
          owner_sets.size() > 1 ? (&owners == &owner_sets[0] ? " before the membership change"
                                                             : " after the membership change")
                                : "",
          ": the replication factor is ", n, " but the cluster has fewer members"));
    }
    if (!needed.ok()) return needed.status();
    AckGroup group;
    group.needed = *needed;
    for (const Member* m : owners) group.members.push_back(m->id);
    groups.push_back(std::move(group));
  }
  return groups;
}

void Coordinator::CountAcks(WriteState* s) const {
  const std::shared_ptr<const Placement> placement = placement_->Get();
  if (placement->layout().version != s->layout_version) {
    // With `clamp` a W always fits, so this cannot fail.
    s->groups = *OwnerGroups(*placement, s->key, s->w, /*clamp=*/true);
    s->layout_version = placement->layout().version;
  }
  auto count_in = [](const AckGroup& g, const std::vector<std::string>& ids) {
    return static_cast<int>(std::count_if(ids.begin(), ids.end(),
                                          [&g](const std::string& id) { return g.Contains(id); }));
  };
  for (AckGroup& g : s->groups) {
    g.acks = (g.Contains(options_.self_id) ? 1 : 0) + count_in(g, s->confirmed);
    g.pending = count_in(g, s->pending);
  }
}

void Coordinator::Write(WriteCommand command, QuorumSpec w,
                        std::function<void(absl::StatusOr<WriteReply>)> done) {
  // Also when this node only forwards the write: bad input is the client's error, whichever node
  // it reaches and whether or not the replicas can be reached.
  if (absl::Status valid = store_->ValidateWrite(command); !valid.ok()) {
    done(valid);
    return;
  }
  // A malformed context (or another key's) is the client's error here too, not only at a
  // replica: with the replicas unreachable it would come back UNAVAILABLE, which the client
  // retries; and a replica would hand it to the maker of a version it names before refusing it.
  // A forwarded write was checked by the node that forwarded it (and is checked by the store).
  CausalContext seen;
  if (!command.forwarded) {
    absl::StatusOr<CausalContext> decoded =
        CausalContext::DecodeForKey(command.context, command.key);
    if (!decoded.ok()) {
      done(decoded.status());
      return;
    }
    seen = *std::move(decoded);
  }
  const std::shared_ptr<const Placement> placement = placement_->Get();
  const size_t n = static_cast<size_t>(options_.replication_factor);
  std::vector<const Member*> replicas = placement->Replicas(command.key, n);
  absl::StatusOr<std::vector<AckGroup>> groups = OwnerGroups(*placement, command.key, w);
  if (!groups.ok()) {
    done(groups.status());
    return;
  }
  const bool is_replica = std::any_of(replicas.begin(), replicas.end(),
                                      [&](const Member* m) { return m->id == options_.self_id; });
  if (is_replica) {
    const uint64_t layout_version = placement->layout().version;
    if (const Member* maker = MakerToCoordinate(seen, replicas)) {
      WriteCommand copy = command;
      // The maker may store the write before its answer is lost.
      command.first_attempt = false;
      transport_->ForwardWrite(
          *maker, std::move(copy), w,
          [this, command = std::move(command), w, groups = *std::move(groups), layout_version,
           replicas = std::move(replicas),
           done = std::move(done)](absl::StatusOr<WriteReply> reply) mutable {
            if (reply.ok() || !absl::IsUnavailable(reply.status()) ||
                IsWriteStored(reply.status())) {
              done(std::move(reply));
              return;
            }
            // The maker is unreachable: coordinate here (on the executor, not on the
            // transport's thread), as if the context named no version.
            executor_->Schedule([this, command = std::move(command), w, groups = std::move(groups),
                                 layout_version, replicas = std::move(replicas),
                                 done = std::move(done)]() mutable {
              CoordinateWrite(std::move(command), w, std::move(groups), layout_version,
                              std::move(replicas), std::move(done));
            });
          });
      return;
    }
    CoordinateWrite(std::move(command), w, *std::move(groups), layout_version, std::move(replicas),
                    std::move(done));
  } else {
    if (command.forwarded) {
      // The forwarding node's layout makes this node a replica and this node's does not: one
      // of the two has not yet learned the latest membership. Handing the write on again could
      // pass it back and forth; the forwarding node tries its next replica instead, and the
      // client's retry (same token) meets layouts that agree.
      done(absl::UnavailableError(absl::StrCat(
          "node ", options_.self_id, " is not a replica of the key in layout version ",
          placement->layout().version,
          " and does not hand on a write another node forwarded to it; the nodes' layouts "
          "differ while a membership change spreads, retry with the same idempotency token")));
      return;
    }
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.writes_forwarded;
    }
    LiveFirst(&replicas);
    if (const Member* maker = MakerToCoordinate(seen, replicas)) {
      std::stable_partition(replicas.begin(), replicas.end(),
                            [maker](const Member* m) { return m == maker; });
    }
    ForwardWrite(std::move(command), w, std::move(replicas), 0,
                 absl::UnavailableError("the key has no replicas"), std::move(done));
  }
}

const Member* Coordinator::MakerToCoordinate(const CausalContext& seen,
                                             const std::vector<const Member*>& replicas) const {
  const Member* maker = nullptr;
  for (const Dot& dot : seen.dots()) {
    // An actor is "<node id>#<epoch>".
    const absl::string_view node_id = absl::string_view(dot.actor).substr(0, dot.actor.rfind('#'));
    if (node_id == options_.self_id) return nullptr;  // this node made one of them
    if (maker != nullptr) continue;
    for (const Member* m : replicas) {
      if (m->id == node_id && !IsDown(*m)) maker = m;
    }
  }
  return maker;
}

void Coordinator::CoordinateWrite(WriteCommand command, QuorumSpec w, std::vector<AckGroup> groups,
                                  uint64_t layout_version, std::vector<const Member*> replicas,
                                  std::function<void(absl::StatusOr<WriteReply>)> done) {
  auto peer_ids = std::make_shared<std::vector<std::string>>();
  for (const Member* m : replicas) {
    if (m->id != options_.self_id) peer_ids->push_back(m->id);
  }
  auto entries = std::make_shared<std::vector<OutboxEntry>>();
  std::string key = command.key;
  store_->WriteAsync(
      std::move(command),
      [this, peer_ids, entries](absl::string_view key, WriteBatch* batch) {
        *entries = outbox_->AddEntries(key, *peer_ids, batch);
      },
      [this, key = std::move(key), w, groups = std::move(groups), layout_version, peer_ids, entries,
       done = std::move(done)](absl::StatusOr<WriteOutcome> outcome) mutable {
        if (!outcome.ok()) {
          // The batch did not commit (nothing fails after the hook ran but the group write), so
          // its outbox entries are on no disk.
          if (!entries->empty()) outbox_->Abandon(*entries);
          done(ForClient(outcome.status()));
          return;
        }
        FinishCoordinatedWrite(std::move(key), w, std::move(groups), layout_version,
                               static_cast<int>(peer_ids->size()), std::move(*entries),
                               *std::move(outcome), std::move(done));
      });
}

std::string Coordinator::DescribeQuorum(const std::vector<AckGroup>& groups) {
  if (groups.size() == 1) return absl::StrCat("W=", groups[0].needed);
  return absl::StrCat("W=", groups[0].needed, " of the old owners (",
                      absl::StrJoin(groups[0].members, ", "), ") and W=", groups[1].needed,
                      " of the new owners (", absl::StrJoin(groups[1].members, ", "),
                      ") during the membership change");
}

std::optional<absl::StatusOr<WriteReply>> Coordinator::Decide(WriteState* s) const {
  if (s->responded) return std::nullopt;
  CountAcks(s);
  if (std::all_of(s->groups.begin(), s->groups.end(),
                  [](const AckGroup& g) { return g.acks >= g.needed; })) {
    s->responded = true;
    return absl::StatusOr<WriteReply>(s->reply);
  }
  if (std::any_of(s->groups.begin(), s->groups.end(),
                  [](const AckGroup& g) { return g.acks + g.pending < g.needed; })) {
    s->responded = true;
    return absl::StatusOr<WriteReply>(MarkWriteStored(absl::UnavailableError(absl::StrCat(
        "the write is durable on ", s->Holders(), " replica(s) but ", DescribeQuorum(s->groups),
        " were required; it keeps replicating in the background. Retry with the same "
        "idempotency token. Last replica error: ",
        s->last_error.message()))));
  }
  return std::nullopt;
}

std::optional<absl::StatusOr<WriteReply>> Coordinator::DecideWithDownPeers(
    WriteState* s, const std::vector<OutboxEntry>& entries) const {
  std::optional<absl::StatusOr<WriteReply>> answer = Decide(s);
  if (answer || liveness_ == nullptr) return answer;
  std::vector<std::string> down;
  for (const OutboxEntry& entry : entries) {
    if (liveness_->IsDown(entry.peer_id)) down.push_back(entry.peer_id);
  }
  const bool unreachable =
      !down.empty() && std::any_of(s->groups.begin(), s->groups.end(), [&](const AckGroup& g) {
        const int down_in_group = static_cast<int>(std::count_if(
            down.begin(), down.end(), [&](const std::string& id) { return g.Contains(id); }));
        return g.acks + g.pending - down_in_group < g.needed;
      });
  if (!unreachable) return std::nullopt;
  s->responded = true;
  return absl::StatusOr<WriteReply>(MarkWriteStored(absl::UnavailableError(absl::StrCat(
      DescribeQuorum(s->groups), " cannot be reached now: replica(s) ", absl::StrJoin(down, ", "),
      " DOWN (gossip heartbeat stopped). The write is durable on ", s->Holders(),
      " replica(s) and replicates to the others when they return. Retry with the same "
      "idempotency token, or use a smaller W."))));
}

void Coordinator::FinishCoordinatedWrite(std::string key, QuorumSpec w,
                                         std::vector<AckGroup> groups, uint64_t layout_version,
                                         int total_peers, std::vector<OutboxEntry> entries,
                                         WriteOutcome outcome,
                                         std::function<void(absl::StatusOr<WriteReply>)> done) {
  {
    absl::MutexLock lock(&stats_mu_);
    ++stats_.writes_coordinated;
  }
  // Not make_shared: the ack sweep holds weak pointers for ack_timeout, which would keep the
  // whole state allocated until then.
  std::shared_ptr<WriteState> state(new WriteState());
  state->key = std::move(key);
  state->w = w;
  state->layout_version = layout_version;
  state->groups = std::move(groups);
  for (const OutboxEntry& entry : entries) state->pending.push_back(entry.peer_id);
  state->total_peers = total_peers;
  state->committed_at = clock_->Now();
  state->reply = WriteReply{outcome.write_id, outcome.context, outcome.deduplicated};
  state->done = std::move(done);
  state->last_error = absl::UnavailableError("replication queue full");

  std::optional<absl::StatusOr<WriteReply>> answer;
  {
    absl::MutexLock lock(&state->mu);
    answer = DecideWithDownPeers(state.get(), entries);
  }
  if (answer) state->done(*std::move(answer));
  if (entries.empty()) return;
  if (!answer && ack_timer_ != nullptr && options_.ack_timeout > absl::ZeroDuration()) {
    absl::MutexLock lock(&ack_mu_);
    ack_waits_.push_back(AckWait{state->committed_at + options_.ack_timeout, state});
  }

  // The write's replication lag is sampled once every peer holds it, however many attempts that
  // took: a peer whose first delivery failed counts when a later batch is confirmed (`on_late`,
  // which holds only the countdown, not the write's state).
  auto lag = std::make_shared<LagCountdown>();
  lag->remaining.store(total_peers);
  lag->committed_at = state->committed_at;
  lag->sampled = !outcome.deduplicated;
  auto on_result = [this, state, lag](const OutboxEntry& entry, absl::Status status) {
    std::optional<absl::StatusOr<WriteReply>> answer;
    {
      absl::MutexLock lock(&state->mu);
      auto pending = std::find(state->pending.begin(), state->pending.end(), entry.peer_id);
      if (pending != state->pending.end()) state->pending.erase(pending);
      if (status.ok()) {
        state->confirmed.push_back(entry.peer_id);
      } else {
        state->last_error = status;
      }
      answer = Decide(state.get());
    }
    if (answer) state->done(*std::move(answer));
    if (status.ok()) CountDownLag(*lag);
  };
  auto on_late = [this, lag](const OutboxEntry&, absl::Status) { CountDownLag(*lag); };
  outbox_->Submit(std::move(entries), std::move(on_result), std::move(on_late));
}

void Coordinator::CountDownLag(LagCountdown& lag) {
  if (lag.remaining.fetch_sub(1) == 1 && lag.sampled) {
    RecordReplicationLag(clock_->Now() - lag.committed_at);
  }
}

void Coordinator::SetAckTimer(Scheduler* scheduler) {
  ack_timer_ = scheduler;
  if (ack_timer_ != nullptr && options_.ack_timeout > absl::ZeroDuration()) ScheduleAckSweep();
}

void Coordinator::ScheduleAckSweep() {
  ack_timer_->RunAfter(AckSweepPeriod(options_.ack_timeout),
                       ack_guard_.Wrap([this] { SweepAckWaits(); }));
}

void Coordinator::SweepAckWaits() {
  const absl::Time now = clock_->Now();
  std::vector<std::shared_ptr<WriteState>> overdue;
  {
    absl::MutexLock lock(&ack_mu_);
    // In commit order, so deadlines only grow along the queue.
    while (!ack_waits_.empty() && ack_waits_.front().deadline <= now) {
      if (std::shared_ptr<WriteState> state = ack_waits_.front().state.lock()) {
        overdue.push_back(std::move(state));
      }
      ack_waits_.pop_front();
    }
  }
  for (const std::shared_ptr<WriteState>& state : overdue) {
    std::optional<absl::StatusOr<WriteReply>> late;
    {
      absl::MutexLock lock(&state->mu);
      if (state->responded) continue;
      state->responded = true;
      late = absl::StatusOr<WriteReply>(MarkWriteStored(absl::UnavailableError(absl::StrCat(
          "the write is durable on ", state->Holders(), " replica(s) but ",
          DescribeQuorum(state->groups), " were required and not all confirmed it within ",
          absl::FormatDuration(options_.ack_timeout), " (still waiting on ",
          absl::StrJoin(state->pending, ", "),
          "); it keeps replicating in the background. Retry with the same idempotency token."))));
    }
    state->done(*std::move(late));
  }
  ScheduleAckSweep();
}

void Coordinator::ForwardWrite(WriteCommand command, QuorumSpec w,
                               std::vector<const Member*> replicas, size_t next,
                               absl::Status last_error,
                               std::function<void(absl::StatusOr<WriteReply>)> done) {
  if (next >= replicas.size()) {
    // `last_error` is another cluster's refusal only if every replica's was (see below). Still
    // UNAVAILABLE: this node's own --cluster_name may be the wrong one, and a client with other
    // endpoints then succeeds through them (a final error would also hide that an earlier
    // attempt of the write may have been stored).
    if (!replicas.empty() && IsOtherCluster(last_error)) {
      done(absl::UnavailableError(absl::StrCat(
          "no replica of the key could coordinate the write: every one of its ", replicas.size(),
          " replica(s) in this node's membership answered as a node of another cluster; this "
          "node's --cluster_name or its --peers may be wrong. Last answer: ",
          last_error.message())));
      return;
    }
    // Every replica shed it (only a first attempt is sent on after one does, below): the
    // client backs off and retries here, as a replica's own RESOURCE_EXHAUSTED tells it to.
    if (absl::IsResourceExhausted(last_error)) {
      done(absl::ResourceExhaustedError(
          absl::StrCat("no replica of the key could take the write now: ", last_error.message())));
      return;
    }
    done(absl::UnavailableError(
        absl::StrCat("no replica of the key could coordinate the write: ", last_error.message())));
    return;
  }
  const Member& target = *replicas[next];
  WriteCommand copy = command;
  const bool first_attempt = command.first_attempt || command.idempotency_token.empty();
  transport_->ForwardWrite(
      target, std::move(copy), w,
      [this, command = std::move(command), w, replicas = std::move(replicas), next,
       all_other_cluster = next == 0 || IsOtherCluster(last_error), first_attempt,
       done = std::move(done)](absl::StatusOr<WriteReply> reply) mutable {
        if (reply.ok() || !GoesToTheNextReplica(reply.status(), first_attempt)) {
          done(std::move(reply));
          return;
        }
        absl::Status error = reply.status();
        // Kept marked only while every replica so far was another cluster's.
        if (!all_other_cluster) error.ErasePayload(kOtherClusterPayload);
        ForwardWrite(std::move(command), w, std::move(replicas), next + 1, std::move(error),
                     std::move(done));
      });
}

}  // namespace kv

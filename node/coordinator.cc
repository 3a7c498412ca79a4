#include "node/coordinator.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "storage/record_codec.h"

namespace kv {
namespace {

constexpr size_t kLagSamples = 4096;

}  // namespace

// Counts replica confirmations of one coordinated write until W is reached or cannot be.
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
  std::vector<AckGroup> groups;  // the owners; during a transition the old and the new ones
  int acks = 1;                  // replicas that hold it (this one already does)
  int confirmed_peers = 0;
  int total_peers = 0;  // replicas other than this one
  bool responded = false;
  absl::Status last_error;
  absl::Time committed_at;
  WriteReply reply;
  std::function<void(absl::StatusOr<WriteReply>)> done;
};

// Gathers replica answers for one read.
struct Coordinator::ReadState {
  absl::Mutex mu;
  std::string key;
  int needed = 0;                    // R
  std::vector<const Member*> order;  // replicas, this node first when it is one
  size_t next = 0;                   // next replica of `order` to ask
  int outstanding = 0;
  int succeeded = 0;
  bool widened = false;  // asked every replica because the first ones knew nothing
  bool finished = false;
  absl::Status last_error;
  std::vector<std::pair<const Member*, std::optional<SiblingSet>>> answers;
  std::function<void(absl::StatusOr<SiblingSet>)> done;
};

Coordinator::Coordinator(ClusterOptions options, std::shared_ptr<const HashRing> ring,
                         LocalStore* store, ReplicationOutbox* outbox, PeerTransport* transport,
                         Executor* executor, const Clock* clock, const MemberLiveness* liveness)
    : Coordinator(std::move(options), new PlacementHolder(Placement::Fixed(std::move(ring))), store,
                  outbox, transport, executor, clock, liveness) {
  owned_placement_.reset(placement_);
}

Coordinator::Coordinator(ClusterOptions options, PlacementHolder* placement, LocalStore* store,
                         ReplicationOutbox* outbox, PeerTransport* transport, Executor* executor,
                         const Clock* clock, const MemberLiveness* liveness)
    : options_(std::move(options)),
      placement_(placement),
      store_(store),
      outbox_(outbox),
      transport_(transport),
      executor_(executor),
      clock_(clock),
      liveness_(liveness) {}

Coordinator::~Coordinator() = default;

std::vector<const Member*> Coordinator::Replicas(absl::string_view key) const {
  return placement_->Get()->Replicas(key, static_cast<size_t>(options_.replication_factor));
}

bool Coordinator::IsDown(const Member& member) const {
  return liveness_ != nullptr && member.id != options_.self_id && liveness_->IsDown(member.id);
}

void Coordinator::LiveFirst(std::vector<const Member*>* members) const {
  if (liveness_ == nullptr) return;
  std::stable_partition(members->begin(), members->end(),
                        [this](const Member* m) { return !IsDown(*m); });
}

void Coordinator::Write(WriteCommand command, QuorumSpec w,
                        std::function<void(absl::StatusOr<WriteReply>)> done) {
  if (absl::Status valid = store_->ValidateKey(command.key); !valid.ok()) {
    done(valid);
    return;
  }
  const std::shared_ptr<const Placement> placement = placement_->Get();
  const size_t n = static_cast<size_t>(options_.replication_factor);
  std::vector<const Member*> replicas = placement->Replicas(command.key, n);
  // W counts within each set of owners: during a transition W old owners and W new owners must
  // hold the write, so that it survives whichever side of the change a reader or the final
  // layout stands on (a leaving node or a losing owner alone never holds an acknowledged write).
  std::vector<std::vector<const Member*>> owner_sets = {
      placement->current().PreferenceList(command.key, n)};
  if (placement->next() != nullptr) {
    owner_sets.push_back(placement->next()->PreferenceList(command.key, n));
  }
  std::vector<AckGroup> groups;
  for (const std::vector<const Member*>& owners : owner_sets) {
    absl::StatusOr<int> needed =
        ResolveQuorum(w, static_cast<int>(owners.size()), options_.default_w, "w");
    if (!needed.ok() && owners.size() < n) {
      needed = absl::InvalidArgumentError(absl::StrCat(
          "w=", w.count, " is more than the ", owners.size(), " owners this key has",
          owner_sets.size() > 1 ? (&owners == &owner_sets[0] ? " before the membership change"
                                                             : " after the membership change")
                                : "",
          " (replication factor N=", n, ", but fewer members)"));
    }
    if (!needed.ok()) {
      done(needed.status());
      return;
    }
    AckGroup group;
    group.needed = *needed;
    for (const Member* m : owners) group.members.push_back(m->id);
    groups.push_back(std::move(group));
  }
  const bool is_replica = std::any_of(replicas.begin(), replicas.end(),
                                      [&](const Member* m) { return m->id == options_.self_id; });
  if (is_replica) {
    CoordinateWrite(std::move(command), std::move(groups), std::move(replicas), std::move(done));
  } else {
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.writes_forwarded;
    }
    LiveFirst(&replicas);
    ForwardWrite(std::move(command), w, std::move(replicas), 0,
                 absl::UnavailableError("the key has no replicas"), std::move(done));
  }
}

void Coordinator::CoordinateWrite(WriteCommand command, std::vector<AckGroup> groups,
                                  std::vector<const Member*> replicas,
                                  std::function<void(absl::StatusOr<WriteReply>)> done) {
  auto peer_ids = std::make_shared<std::vector<std::string>>();
  for (const Member* m : replicas) {
    if (m->id != options_.self_id) peer_ids->push_back(m->id);
  }
  auto entries = std::make_shared<std::vector<OutboxEntry>>();
  store_->WriteAsync(
      std::move(command),
      [this, peer_ids, entries](absl::string_view key, WriteBatch* batch) {
        *entries = outbox_->AddEntries(key, *peer_ids, batch);
      },
      [this, groups = std::move(groups), peer_ids, entries,
       done = std::move(done)](absl::StatusOr<WriteOutcome> outcome) mutable {
        if (!outcome.ok()) {
          done(outcome.status());
          return;
        }
        FinishCoordinatedWrite(std::move(groups), static_cast<int>(peer_ids->size()),
                               std::move(*entries), *std::move(outcome), std::move(done));
      });
}

std::string Coordinator::DescribeQuorum(const std::vector<AckGroup>& groups) {
  if (groups.size() == 1) return absl::StrCat("W=", groups[0].needed);
  return absl::StrCat("W=", groups[0].needed, " of the old owners (",
                      absl::StrJoin(groups[0].members, ", "), ") and W=", groups[1].needed,
                      " of the new owners (", absl::StrJoin(groups[1].members, ", "),
                      ") during the membership change");
}

void Coordinator::FinishCoordinatedWrite(std::vector<AckGroup> groups, int total_peers,
                                         std::vector<OutboxEntry> entries,
                                         WriteOutcome outcome_value,
                                         std::function<void(absl::StatusOr<WriteReply>)> done) {
  WriteOutcome* outcome = &outcome_value;
  {
    absl::MutexLock lock(&stats_mu_);
    ++stats_.writes_coordinated;
  }
  auto state = std::make_shared<WriteState>();
  for (AckGroup& group : groups) {
    group.acks = group.Contains(options_.self_id) ? 1 : 0;
    for (const OutboxEntry& entry : entries) {
      if (group.Contains(entry.peer_id)) ++group.pending;
    }
  }
  state->groups = std::move(groups);
  state->total_peers = total_peers;
  state->committed_at = clock_->Now();
  state->reply = WriteReply{outcome->write_id, outcome->context, outcome->deduplicated};
  state->done = std::move(done);
  state->last_error = absl::UnavailableError("replication queue full");

  // Decides, under state->mu, whether the client can be answered; returns the answer to send.
  // Called with s->mu held.
  auto decide = [](WriteState* s)
                    ABSL_NO_THREAD_SAFETY_ANALYSIS -> std::optional<absl::StatusOr<WriteReply>> {
    if (s->responded) return std::nullopt;
    if (std::all_of(s->groups.begin(), s->groups.end(),
                    [](const AckGroup& g) { return g.acks >= g.needed; })) {
      s->responded = true;
      return absl::StatusOr<WriteReply>(s->reply);
    }
    if (std::any_of(s->groups.begin(), s->groups.end(),
                    [](const AckGroup& g) { return g.acks + g.pending < g.needed; })) {
      s->responded = true;
      return absl::StatusOr<WriteReply>(MarkWriteStored(absl::UnavailableError(absl::StrCat(
          "the write is durable on ", s->acks, " replica(s) but ", DescribeQuorum(s->groups),
          " were required; it keeps replicating in the background. Retry with the same "
          "idempotency token. Last replica error: ",
          s->last_error.message()))));
    }
    return std::nullopt;
  };

  // Replicas gossip reports DOWN will not confirm soon: when W needs them, answer now (the write
  // is stored here and replicates to them when they return) instead of at the deadline.
  std::vector<std::string> down;
  for (const OutboxEntry& entry : entries) {
    if (liveness_ != nullptr && liveness_->IsDown(entry.peer_id)) down.push_back(entry.peer_id);
  }
  std::optional<absl::StatusOr<WriteReply>> answer;
  {
    absl::MutexLock lock(&state->mu);
    answer = decide(state.get());
    const bool unreachable =
        !down.empty() &&
        std::any_of(state->groups.begin(), state->groups.end(), [&](const AckGroup& g) {
          const int down_in_group = static_cast<int>(std::count_if(
              down.begin(), down.end(), [&](const std::string& id) { return g.Contains(id); }));
          return g.acks + g.pending - down_in_group < g.needed;
        });
    if (!answer && unreachable) {
      state->responded = true;
      answer = absl::StatusOr<WriteReply>(MarkWriteStored(absl::UnavailableError(absl::StrCat(
          DescribeQuorum(state->groups), " cannot be reached now: replica(s) ",
          absl::StrJoin(down, ", "), " DOWN (gossip heartbeat stopped). The write is durable on ",
          state->acks,
          " replica(s) and replicates to the others when they return. Retry with the same "
          "idempotency token, or use a smaller W."))));
    }
  }
  if (answer) state->done(*std::move(answer));
  if (entries.empty()) return;

  outbox_->Submit(std::move(entries),
                  [this, state, decide](const OutboxEntry& entry, absl::Status status) {
                    std::optional<absl::StatusOr<WriteReply>> answer;
                    bool all_confirmed = false;
                    {
                      absl::MutexLock lock(&state->mu);
                      for (AckGroup& group : state->groups) {
                        if (!group.Contains(entry.peer_id)) continue;
                        --group.pending;
                        if (status.ok()) ++group.acks;
                      }
                      if (status.ok()) {
                        ++state->acks;
                        all_confirmed = ++state->confirmed_peers == state->total_peers;
                      } else {
                        state->last_error = status;
                      }
                      answer = decide(state.get());
                    }
                    if (answer) state->done(*std::move(answer));
                    if (all_confirmed) RecordReplicationLag(clock_->Now() - state->committed_at);
                  });
}

void Coordinator::ForwardWrite(WriteCommand command, QuorumSpec w,
                               std::vector<const Member*> replicas, size_t next,
                               absl::Status last_error,
                               std::function<void(absl::StatusOr<WriteReply>)> done) {
  if (next >= replicas.size()) {
    done(absl::UnavailableError(
        absl::StrCat("no replica of the key could coordinate the write: ", last_error.message())));
    return;
  }
  const Member& target = *replicas[next];
  WriteCommand copy = command;
  transport_->ForwardWrite(
      target, std::move(copy), w,
      [this, command = std::move(command), w, replicas = std::move(replicas), next,
       done = std::move(done)](absl::StatusOr<WriteReply> reply) mutable {
        // Only a replica that could not be reached is skipped; any other answer, including a
        // W failure reported by the replica, goes back to the client as it is.
        if (reply.ok() || !absl::IsUnavailable(reply.status()) || IsWriteStored(reply.status())) {
          done(std::move(reply));
          return;
        }
        ForwardWrite(std::move(command), w, std::move(replicas), next + 1, reply.status(),
                     std::move(done));
      });
}

void Coordinator::ReadReplica(const Member& member, const std::string& key,
                              std::function<void(absl::StatusOr<SiblingSet>)> done) {
  if (member.id == options_.self_id) {
    executor_->Schedule([this, key, done = std::move(done)] { done(store_->ReadRecord(key)); });
    return;
  }
  transport_->ReadRecord(member, key, [done = std::move(done)](absl::StatusOr<std::string> bytes) {
    if (!bytes.ok()) {
      done(bytes.status());
      return;
    }
    done(DecodeSiblingSet(*bytes));
  });
}

void Coordinator::Read(std::string key, QuorumSpec r,
                       std::function<void(absl::StatusOr<SiblingSet>)> done) {
  if (absl::Status valid = store_->ValidateKey(key); !valid.ok()) {
    done(valid);
    return;
  }
  std::vector<const Member*> replicas = Replicas(key);
  absl::StatusOr<int> needed =
      ResolveQuorum(r, static_cast<int>(replicas.size()), options_.default_r, "r");
  if (!needed.ok()) {
    done(needed.status());
    return;
  }
  auto state = std::make_shared<ReadState>();
  state->key = std::move(key);
  state->needed = *needed;
  state->done = std::move(done);
  state->last_error = absl::UnavailableError("no replica answered");
  // This node's own replica first: it answers without a network hop. Then live replicas.
  LiveFirst(&replicas);
  std::stable_partition(replicas.begin(), replicas.end(),
                        [&](const Member* m) { return m->id == options_.self_id; });
  state->order = std::move(replicas);
  ContinueRead(state);
}

bool Coordinator::TryReadFromMemory(absl::string_view key, const QuorumSpec& r,
                                    SiblingSet* record) {
  std::vector<const Member*> replicas = Replicas(key);
  absl::StatusOr<int> needed =
      ResolveQuorum(r, static_cast<int>(replicas.size()), options_.default_r, "r");
  if (!needed.ok() || *needed != 1) return false;
  if (std::none_of(replicas.begin(), replicas.end(),
                   [&](const Member* m) { return m->id == options_.self_id; })) {
    return false;
  }
  absl::StatusOr<SiblingSet> local;
  if (!store_->ReadRecordFromMemory(key, &local) || !local.ok()) return false;
  *record = *std::move(local);
  return true;
}

void Coordinator::ContinueRead(const std::shared_ptr<ReadState>& state) {
  std::vector<const Member*> to_ask;
  bool finish = false;
  {
    absl::MutexLock lock(&state->mu);
    if (state->finished) return;
    const bool found_any = std::any_of(state->answers.begin(), state->answers.end(),
                                       [](const auto& a) { return a.second.has_value(); });
    const bool enough = state->succeeded >= state->needed;
    if (enough && found_any) {
      finish = true;
    } else {
      // Not enough answers yet: replace failed replicas with the next ones. Enough answers but
      // none knows the key: ask every replica before answering NOT_FOUND.
      if (enough) state->widened = true;
      const int target = state->widened ? static_cast<int>(state->order.size()) : state->needed;
      while (state->next < state->order.size() && state->succeeded + state->outstanding < target) {
        to_ask.push_back(state->order[state->next]);
        ++state->next;
        ++state->outstanding;
      }
      finish = state->outstanding == 0 && state->next >= state->order.size();
    }
    state->finished = finish;
  }
  for (const Member* m : to_ask) {
    ReadReplica(*m, state->key, [this, state, m](absl::StatusOr<SiblingSet> record) {
      {
        absl::MutexLock lock(&state->mu);
        --state->outstanding;
        if (record.ok()) {
          ++state->succeeded;
          state->answers.emplace_back(m, *std::move(record));
        } else if (absl::IsNotFound(record.status())) {
          ++state->succeeded;
          state->answers.emplace_back(m, std::nullopt);
        } else {
          state->last_error = record.status();
        }
      }
      ContinueRead(state);
    });
  }
  if (finish) FinishRead(state);
}

void Coordinator::FinishRead(const std::shared_ptr<ReadState>& state) {
  std::vector<std::pair<const Member*, std::optional<SiblingSet>>> answers;
  int succeeded;
  absl::Status last_error;
  {
    absl::MutexLock lock(&state->mu);
    answers = state->answers;
    succeeded = state->succeeded;
    last_error = state->last_error;
  }
  std::optional<SiblingSet> merged;
  for (const auto& [member, record] : answers) {
    if (!record) continue;
    if (!merged) {
      merged = *record;
    } else {
      merged->Merge(*record, store_->options().idempotency_ttl);
    }
  }
  const int n = static_cast<int>(state->order.size());
  if (succeeded < state->needed) {
    state->done(absl::UnavailableError(
        absl::StrCat("only ", succeeded, " of R=", state->needed,
                     " replicas answered; last error: ", last_error.message())));
    return;
  }
  if (merged) {
    state->done(*merged);
    ReadRepair(state->key, *merged, answers);
    return;
  }
  // No replica that answered knows the key. An acknowledged write is on at least W replicas, so
  // N - W + 1 empty answers rule it out; fewer do not.
  const int default_w = std::min(options_.default_w, n);
  if (succeeded >= n - default_w + 1) {
    state->done(absl::NotFoundError("key not found"));
  } else {
    state->done(absl::UnavailableError(
        absl::StrCat("key not found on the ", succeeded, " replica(s) that answered, but ",
                     n - succeeded, " could not be asked; last error: ", last_error.message())));
  }
}

void Coordinator::ReadRepair(
    const std::string& key, const SiblingSet& merged,
    const std::vector<std::pair<const Member*, std::optional<SiblingSet>>>& answers) {
  std::string encoded;
  for (const auto& [member, record] : answers) {
    if (record && *record == merged) continue;
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.read_repairs;
    }
    if (member->id == options_.self_id) {
      executor_->Schedule([this, key, merged] { store_->MergeRecord(key, merged).IgnoreError(); });
      continue;
    }
    if (encoded.empty()) encoded = EncodeSiblingSet(merged);
    transport_->MergeRecords(*member, {EncodedRecord{key, encoded}},
                             [](absl::Status) { /* best effort; anti-entropy backs it up */ });
  }
}

void Coordinator::GatherReplicas(std::string key,
                                 std::function<void(std::vector<ReplicaRecordView>)> done) {
  std::vector<const Member*> replicas = Replicas(key);
  struct Gather {
    absl::Mutex mu;
    std::vector<ReplicaRecordView> views;
    size_t remaining;
    std::function<void(std::vector<ReplicaRecordView>)> done;
  };
  auto gather = std::make_shared<Gather>();
  gather->views.resize(replicas.size());
  gather->remaining = replicas.size();
  gather->done = std::move(done);
  if (replicas.empty()) {
    gather->done({});
    return;
  }
  for (size_t i = 0; i < replicas.size(); ++i) {
    gather->views[i].member = *replicas[i];
    auto on_record = [gather, i](absl::StatusOr<SiblingSet> record) {
      bool last;
      {
        absl::MutexLock lock(&gather->mu);
        ReplicaRecordView& view = gather->views[i];
        if (record.ok()) {
          view.record = *std::move(record);
        } else if (!absl::IsNotFound(record.status())) {
          view.status = record.status();
        }
        last = --gather->remaining == 0;
      }
      if (last) gather->done(std::move(gather->views));
    };
    // A replica gossip reports DOWN is not asked (its answer would only be a timeout).
    if (IsDown(*replicas[i])) {
      on_record(absl::UnavailableError(
          "DOWN: its gossip heartbeat stopped advancing; not asked (failure detector)"));
    } else {
      ReadReplica(*replicas[i], key, std::move(on_record));
    }
  }
}

void Coordinator::DescribeKey(std::string key,
                              std::function<void(std::vector<ReplicaRecordView>)> done) {
  if (absl::Status valid = store_->ValidateKey(key); !valid.ok()) {
    ReplicaRecordView error;
    error.status = valid;
    done({error});
    return;
  }
  GatherReplicas(std::move(key), std::move(done));
}

void Coordinator::DescribeWrite(std::string write_id,
                                std::function<void(absl::StatusOr<WriteStatus>)> done) {
  Dot dot;
  std::string key;
  if (absl::Status parsed = ParseWriteId(write_id, &dot, &key); !parsed.ok()) {
    done(parsed);
    return;
  }
  if (absl::Status valid = store_->ValidateKey(key); !valid.ok()) {
    done(valid);
    return;
  }
  GatherReplicas(key, [key, dot, done = std::move(done)](std::vector<ReplicaRecordView> views) {
    WriteStatus status;
    status.key = key;
    status.dot = dot;
    bool all = !views.empty();
    for (ReplicaRecordView& view : views) {
      WriteStatus::Replica replica;
      replica.member = view.member;
      replica.status = view.status;
      // Applied: the replica has seen the dot (it holds it, or a version that replaced it).
      replica.applied = view.record && view.record->context().Covers(dot);
      all = all && replica.applied;
      status.replicas.push_back(std::move(replica));
    }
    status.state = all ? WriteStatus::State::kReplicated : WriteStatus::State::kPending;
    done(std::move(status));
  });
}

void Coordinator::List(std::string prefix, std::string page_token, uint32_t limit,
                       std::function<void(absl::StatusOr<ListPage>)> done) {
  const Limits& limits = store_->options().limits;
  if (limit == 0) limit = limits.default_list_limit;
  if (limit > limits.max_list_limit) limit = limits.max_list_limit;
  struct Gather {
    absl::Mutex mu;
    size_t remaining = 0;
    size_t answered = 0;
    absl::Status first_error;
    std::set<std::string> keys;
    // The smallest last-scanned key among members that have more: the merged page may only
    // include keys up to it, or keys of that member beyond its page would be skipped.
    std::optional<std::string> bound;
    std::function<void(absl::StatusOr<ListPage>)> done;
  };
  auto gather = std::make_shared<Gather>();
  const std::vector<const Member*> members = placement_->Get()->AllMembers();
  gather->remaining = members.size();
  gather->done = std::move(done);
  auto on_page = [gather, limit](absl::StatusOr<ListPage> page) {
    bool last;
    {
      absl::MutexLock lock(&gather->mu);
      if (page.ok()) {
        ++gather->answered;
        gather->keys.insert(page->keys.begin(), page->keys.end());
        std::string scanned;
        if (!page->next_page_token.empty() &&
            absl::WebSafeBase64Unescape(page->next_page_token, &scanned) &&
            (!gather->bound || scanned < *gather->bound)) {
          gather->bound = std::move(scanned);
        }
      } else if (gather->first_error.ok()) {
        gather->first_error = page.status();
      }
      last = --gather->remaining == 0;
    }
    if (!last) return;
    if (gather->answered == 0) {
      gather->done(gather->first_error);
      return;
    }
    ListPage merged;
    for (const std::string& key : gather->keys) {
      if (gather->bound && key > *gather->bound) break;
      if (merged.keys.size() == limit) break;
      merged.keys.push_back(key);
    }
    const bool more = gather->bound.has_value() || merged.keys.size() < gather->keys.size();
    if (more) {
      merged.next_page_token =
          absl::WebSafeBase64Escape(merged.keys.empty() ? *gather->bound : merged.keys.back());
    }
    gather->done(std::move(merged));
  };
  for (const Member* m : members) {
    const Member& member = *m;
    if (IsDown(member)) {
      executor_->Schedule([on_page, id = member.id] {
        on_page(absl::UnavailableError(absl::StrCat("member ", id, " is down")));
      });
    } else if (member.id == options_.self_id) {
      executor_->Schedule([this, prefix, page_token, limit, on_page] {
        on_page(store_->List(prefix, page_token, limit));
      });
    } else {
      transport_->ListKeys(member, prefix, page_token, limit, on_page);
    }
  }
}

void Coordinator::RecordReplicationLag(absl::Duration lag) {
  absl::MutexLock lock(&stats_mu_);
  if (stats_.recent_replication_lag_us.size() >= kLagSamples) {
    stats_.recent_replication_lag_us.erase(
        stats_.recent_replication_lag_us.begin(),
        stats_.recent_replication_lag_us.begin() + kLagSamples / 4);
  }
  stats_.recent_replication_lag_us.push_back(absl::ToInt64Microseconds(lag));
}

CoordinatorStats Coordinator::Stats() const {
  absl::MutexLock lock(&stats_mu_);
  return stats_;
}

}  // namespace kv

#include "node/coordinator.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "storage/format_level.h"
#include "storage/record_codec.h"

namespace kv {
namespace {

// About 40 s of the writes of a coordinator at 1,600 Put/s (half the 3-node load of the
// benchmarks): a whole measured run, not its last second or two; 512 KiB.
constexpr size_t kLagSamples = 65536;

}  // namespace

// Gathers replica answers for one read.
struct Coordinator::ReadState {
  absl::Mutex mu;
  std::string key;
  int needed = 0;                    // R
  std::vector<const Member*> order;  // replicas, this node first when it is one
  size_t next = 0;                   // next replica of `order` to ask
  int outstanding = 0;
  int outstanding_down = 0;  // of those, replicas gossip judged DOWN when they were asked
  int succeeded = 0;
  // Of those, the records of replicas that are catching up (QuorumRecord::catching_up): they
  // count toward R, not toward NotFoundQuorum (they may lack a write they acknowledged).
  int catching_up = 0;
  bool widened = false;  // asked every replica because the first ones knew nothing
  bool finished = false;
  absl::Status last_error;
  std::vector<std::pair<const Member*, std::optional<SiblingSet>>> answers;
  // The answers' records merged so far. Whether the key has a live version is decided on it,
  // not on any one answer: a stale live version is gone once merged with a tombstone that
  // replaced it.
  std::optional<SiblingSet> merged;
  absl::Time started;  // before the first replica was asked
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

Coordinator::~Coordinator() { StopAckTimer(); }

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

void Coordinator::ReadReplica(
    const Member& member, const std::string& key, bool for_quorum,
    std::function<void(absl::StatusOr<SiblingSet>, bool catching_up)> done) {
  if (member.id == options_.self_id) {
    executor_->Schedule([this, key, for_quorum, done = std::move(done)] {
      absl::StatusOr<LocalStore::QuorumRead> read = store_->ReadRecordAs(key, for_quorum);
      if (!read.ok()) {
        done(read.status(), /*catching_up=*/false);
        return;
      }
      done(std::move(read->record), read->catching_up);
    });
    return;
  }
  if (for_quorum) {
    transport_->ReadRecordForQuorum(member, key,
                                    [done = std::move(done)](absl::StatusOr<QuorumRecord> answer) {
                                      if (!answer.ok()) {
                                        done(answer.status(), /*catching_up=*/false);
                                        return;
                                      }
                                      done(DecodeSiblingSet(answer->record), answer->catching_up);
                                    });
  } else {
    transport_->ReadRecord(member, key,
                           [done = std::move(done)](absl::StatusOr<std::string> bytes) {
                             if (!bytes.ok()) {
                               done(bytes.status(), /*catching_up=*/false);
                               return;
                             }
                             done(DecodeSiblingSet(*bytes), /*catching_up=*/false);
                           });
  }
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
  state->started = clock_->Now();
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
  // A record without a live version goes the long way: another replica may hold a newer Put
  // (Read, "no live version").
  if (!store_->ReadRecordFromMemory(key, &local) || !local.ok() || local->AllTombstones()) {
    return false;
  }
  *record = *std::move(local);
  return true;
}

void Coordinator::ContinueRead(const std::shared_ptr<ReadState>& state) {
  std::vector<std::pair<const Member*, bool>> to_ask;  // and whether it was judged DOWN
  bool finish = false;
  {
    absl::MutexLock lock(&state->mu);
    if (state->finished) return;
    const bool found_live = state->merged.has_value() && !state->merged->AllTombstones();
    const bool enough = state->succeeded >= state->needed;
    if (enough && found_live) {
      finish = true;
    } else {
      // Not enough answers yet: replace failed replicas with the next ones. Enough answers but
      // none holds a live version (the key is new or deleted here): ask every replica before
      // answering NOT_FOUND, since a Put acknowledged by the others may not have reached these.
      if (enough) state->widened = true;
      const int target = state->widened ? static_cast<int>(state->order.size()) : state->needed;
      while (state->next < state->order.size() && state->succeeded + state->outstanding < target) {
        const Member* m = state->order[state->next];
        const bool down = IsDown(*m);
        to_ask.emplace_back(m, down);
        ++state->next;
        ++state->outstanding;
        if (down) ++state->outstanding_down;
      }
      // Every replica was asked. Done once all answered, or, with no live version found, once
      // enough answered to rule one out (NotFoundQuorum) and only replicas judged DOWN are left:
      // they would hold the answer to their timeout.
      const bool conclusive = state->succeeded - state->catching_up >=
                              NotFoundQuorum(static_cast<int>(state->order.size()));
      finish = state->next >= state->order.size() &&
               (state->outstanding == 0 ||
                (state->widened && conclusive && state->outstanding == state->outstanding_down));
    }
    state->finished = finish;
  }
  for (const std::pair<const Member*, bool>& ask : to_ask) {
    const Member* m = ask.first;
    const bool down = ask.second;
    ReadReplica(*m, state->key, /*for_quorum=*/true,
                [this, state, m, down](absl::StatusOr<SiblingSet> record, bool catching_up) {
                  {
                    absl::MutexLock lock(&state->mu);
                    --state->outstanding;
                    if (down) --state->outstanding_down;
                    if (record.ok()) {
                      ++state->succeeded;
                      if (catching_up) ++state->catching_up;
                      if (!state->merged) {
                        state->merged = *record;
                      } else {
                        state->merged->Merge(*record, store_->options().idempotency_ttl);
                      }
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

int Coordinator::NotFoundQuorum(int n) const {
  // An acknowledged write is on at least W replicas, so N - W + 1 answers without a live version
  // rule out a live version elsewhere; fewer do not.
  return n - std::min(options_.default_w, n) + 1;
}

void Coordinator::FinishRead(const std::shared_ptr<ReadState>& state) {
  std::vector<std::pair<const Member*, std::optional<SiblingSet>>> answers;
  std::optional<SiblingSet> merged;
  int succeeded;
  int catching_up;
  absl::Status last_error;
  {
    // Finished: answers that arrive later change nothing here, so this one takes them.
    absl::MutexLock lock(&state->mu);
    answers = std::move(state->answers);
    merged = std::move(state->merged);
    state->merged.reset();
    succeeded = state->succeeded;
    catching_up = state->catching_up;
    last_error = state->last_error;
  }
  const int n = static_cast<int>(state->order.size());
  // Answers gathered too long ago are not sent back as a repair (ClusterOptions).
  const bool repair = clock_->Now() - state->started <= options_.read_repair_max_age;
  if (succeeded < state->needed) {
    state->done(absl::UnavailableError(
        absl::StrCat("only ", succeeded, " of R=", state->needed,
                     " replicas answered; last error: ", last_error.message())));
    return;
  }
  // Only the answers of replicas that kept every write they acknowledged rule out a live version.
  const bool conclusive = succeeded - catching_up >= NotFoundQuorum(n);
  if (merged && (!merged->AllTombstones() || conclusive)) {
    state->done(*merged);  // a live version, or the key is deleted (Get answers NOT_FOUND)
    if (repair) ReadRepair(state->key, *merged, answers);
    return;
  }
  if (merged) {
    if (repair) ReadRepair(state->key, *merged, answers);
    std::string catching_up_note;
    if (catching_up > 0) {
      catching_up_note = absl::StrCat(
          " (", catching_up,
          " of them catching up after a start that may have lost writes they acknowledged, so "
          "their answers rule out no newer write)");
    }
    std::string unasked;
    if (n > succeeded) {
      unasked = absl::StrCat(
          ", but ", n - succeeded,
          " could not be asked and may hold a newer write; last error: ", last_error.message());
    }
    state->done(absl::UnavailableError(absl::StrCat("the key has no live version on the ",
                                                    succeeded, " replica(s) that answered",
                                                    catching_up_note, unasked)));
    return;
  }
  if (conclusive) {
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
    // A replica of an older format level cannot hold the replaced writes (storage/format_level.h).
    const uint32_t level = levels_ == nullptr || member->id == options_.self_id
                               ? kFormatLevel
                               : levels_->MemberFormatLevel(member->id);
    if (record && HoldsAllItCan(*record, merged, level)) continue;
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

void Coordinator::GatherReplicas(std::string key, absl::Time answer_by,
                                 std::function<void(std::vector<ReplicaRecordView>)> done) {
  std::vector<const Member*> replicas = Replicas(key);
  struct Gather {
    absl::Mutex mu;
    std::vector<ReplicaRecordView> views ABSL_GUARDED_BY(mu);
    std::vector<bool> answered ABSL_GUARDED_BY(mu);
    size_t remaining ABSL_GUARDED_BY(mu);
    bool finished ABSL_GUARDED_BY(mu) = false;
    std::function<void(std::vector<ReplicaRecordView>)> done;
  };
  auto gather = std::make_shared<Gather>();
  gather->done = std::move(done);
  if (replicas.empty()) {
    gather->done({});
    return;
  }
  {
    absl::MutexLock lock(&gather->mu);
    gather->views.resize(replicas.size());
    gather->answered.assign(replicas.size(), false);
    gather->remaining = replicas.size();
    for (size_t i = 0; i < replicas.size(); ++i) gather->views[i].member = *replicas[i];
  }
  const absl::Duration left = answer_by - clock_->Now();
  // Beyond 30 s a peer's own read deadline always answers first: no timer to hold memory.
  if (ack_timer_ != nullptr && left <= absl::Seconds(30)) {
    // Leave a quarter of the time left (at most 1 s) to carry the answer back.
    const absl::Duration margin = std::min(left / 4, absl::Seconds(1));
    ack_timer_->RunAfter(std::max(left - margin, absl::ZeroDuration()), ack_guard_.Wrap([gather] {
      std::vector<ReplicaRecordView> views;
      {
        absl::MutexLock lock(&gather->mu);
        if (gather->finished) return;
        gather->finished = true;
        for (size_t i = 0; i < gather->views.size(); ++i) {
          if (gather->answered[i]) continue;
          gather->views[i].status = absl::DeadlineExceededError(
              "did not answer before the caller's deadline (hung, or cut off and not yet "
              "DOWN)");
        }
        views = std::move(gather->views);
      }
      gather->done(std::move(views));
    }));
  }
  for (size_t i = 0; i < replicas.size(); ++i) {
    auto on_record = [gather, i](absl::StatusOr<SiblingSet> record, bool /*catching_up*/) {
      std::vector<ReplicaRecordView> views;
      {
        absl::MutexLock lock(&gather->mu);
        if (gather->finished) return;  // answered at the deadline without this one
        ReplicaRecordView& view = gather->views[i];
        if (record.ok()) {
          view.record = *std::move(record);
        } else if (!absl::IsNotFound(record.status())) {
          view.status = record.status();
        }
        gather->answered[i] = true;
        if (--gather->remaining != 0) return;
        gather->finished = true;
        views = std::move(gather->views);
      }
      gather->done(std::move(views));
    };
    // A replica gossip reports DOWN is not asked (its answer would only be a timeout).
    if (IsDown(*replicas[i])) {
      on_record(absl::UnavailableError(
                    "DOWN: its gossip heartbeat stopped advancing; not asked (failure detector)"),
                /*catching_up=*/false);
    } else {
      // What the replica holds, also while it catches up (DescribeKey shows each replica).
      ReadReplica(*replicas[i], key, /*for_quorum=*/false, std::move(on_record));
    }
  }
}

void Coordinator::DescribeKey(std::string key, absl::Time answer_by,
                              std::function<void(std::vector<ReplicaRecordView>)> done) {
  if (absl::Status valid = store_->ValidateKey(key); !valid.ok()) {
    ReplicaRecordView error;
    error.status = valid;
    done({error});
    return;
  }
  GatherReplicas(std::move(key), answer_by, std::move(done));
}

void Coordinator::DescribeWrite(std::string write_id, absl::Time answer_by,
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
  // This node made the dot if it names this node's current actor. It stored the write before
  // any other replica saw it, and under the same actor it has lost nothing since (a start that may
  // have lost writes takes a new epoch); unless it is catching up, a restore put it behind, or
  // the record moved away and back with a membership change.
  const bool made_here =
      dot.actor == store_->actor() && !store_->catching_up() && store_->history_conflict().empty();
  GatherReplicas(
      key, answer_by,
      [this, key, dot, made_here, done = std::move(done)](std::vector<ReplicaRecordView> views) {
        WriteStatus status;
        status.key = key;
        status.dot = dot;
        bool all = !views.empty();
        bool any = false;
        bool every_answered = !views.empty();
        bool maker_lacks_it = false;
        for (ReplicaRecordView& view : views) {
          WriteStatus::Replica replica;
          replica.member = view.member;
          replica.status = view.status;
          // Applied: the replica has seen the dot (it holds it, or a version that replaced it).
          replica.applied = view.record && view.record->context().Covers(dot);
          all = all && replica.applied;
          any = any || replica.applied;
          every_answered = every_answered && view.status.ok();
          if (made_here && view.member.id == options_.self_id && view.status.ok() &&
              !replica.applied) {
            maker_lacks_it = true;
          }
          status.replicas.push_back(std::move(replica));
        }
        // A write is acknowledged only once replicas hold it, so when every replica answers and
        // none has seen it, the id was not issued for this key (or its versions were purged since).
        // The node that made the dot knows as much alone, whoever else does not answer.
        if ((every_answered || maker_lacks_it) && !any) {
          const std::string who =
              every_answered
                  ? "no replica of the key holds"
                  : absl::StrCat("node ", options_.self_id, ", whose actor the id names, holds no");
          done(absl::NotFoundError(absl::StrCat(
              who, " write ", dot.ToString(),
              " or a version that replaced it: the id was never issued, or the key's versions were "
              "purged (or lost) since")));
          return;
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

#include "tests/sim/sim_checkers.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kv::sim {
namespace {

std::string Seconds(absl::Time t) {
  return absl::StrCat(absl::ToDoubleSeconds(t - SimLoop::Start()), "s");
}

std::string Describe(const WriteOp& op) {
  return absl::StrCat(op.is_delete ? "Delete" : "Put", " #", op.id, " by client ", op.client,
                      op.is_delete ? "" : absl::StrCat(" value=", op.value), " token=", op.token,
                      " context=", op.has_context ? op.context.ToString() : "none", " issued at ",
                      Seconds(op.issued));
}

bool HasSibling(const SiblingSet& set, const Dot& dot) {
  return std::any_of(set.siblings().begin(), set.siblings().end(),
                     [&](const Sibling& s) { return s.dot == dot; });
}

// A sibling with `dot` that holds what `op` wrote: a version of another write under the same dot
// (a dot handed out twice) does not count.
bool HasVersionOf(const SiblingSet& set, const Dot& dot, const WriteOp& op) {
  return std::any_of(set.siblings().begin(), set.siblings().end(), [&](const Sibling& s) {
    return s.dot == dot && s.tombstone == op.is_delete && (op.is_delete || s.value == op.value);
  });
}

bool HasToken(const SiblingSet& set, const std::string& token) {
  return std::any_of(set.siblings().begin(), set.siblings().end(),
                     [&](const Sibling& s) { return s.idempotency_token == token; });
}

std::string Show(const std::optional<SiblingSet>& record) {
  return record ? record->ToString() : "<none>";
}

}  // namespace

FinalState CollectFinalState(SimCluster* cluster, const History& history) {
  std::set<std::string> keys;
  for (const WriteOp& op : history.writes) keys.insert(op.key);
  for (const ReadOp& op : history.reads) keys.insert(op.key);
  FinalState state;
  for (const std::string& key : keys) {
    KeyState& ks = state[key];
    ks.replicas = cluster->ReplicasOf(key);
    for (int node : ks.replicas) {
      LocalStore* store = cluster->store(node);
      absl::StatusOr<SiblingSet> record =
          store != nullptr ? store->ReadRecord(key) : absl::UnavailableError("node is down");
      if (!record.ok() && !absl::IsNotFound(record.status())) {
        ks.errors.push_back(absl::StrCat(cluster->NodeId(node), ": ", record.status().ToString()));
      }
      ks.records.push_back(record.ok() ? std::optional<SiblingSet>(*std::move(record))
                                       : std::nullopt);
    }
  }
  return state;
}

Checkers::Checkers(uint64_t seed, std::string replay, const History& history,
                   const FinalState& state, SimCluster* cluster)
    : seed_(seed), replay_(std::move(replay)), history_(history), state_(state), cluster_(cluster) {
  auto note = [&](const Sibling& s) {
    if (s.idempotency_token.empty()) return;
    std::vector<Dot>& dots = dots_by_token_[s.idempotency_token];
    if (std::find(dots.begin(), dots.end(), s.dot) == dots.end()) dots.push_back(s.dot);
  };
  for (const WriteOp& op : history_.writes) {
    writes_by_key_[op.key].push_back(&op);
    if (op.outcome != Outcome::kOk) continue;
    Sibling s;
    s.dot = op.dot;
    s.idempotency_token = op.token;
    note(s);
  }
  for (const ReadOp& op : history_.reads) {
    for (const Sibling& s : op.record.siblings()) note(s);
  }
  for (const auto& [key, ks] : state_) {
    for (const std::optional<SiblingSet>& record : ks.records) {
      if (!record) continue;
      for (const Sibling& s : record->siblings()) note(s);
    }
  }
}

void Checkers::Fail(const std::string& key, const std::string& what) {
  failures_.push_back(
      absl::StrCat("seed ", seed_, ", key \"", key, "\": ", what, " (replay: ", replay_, ")"));
}

std::optional<SiblingSet> Checkers::Final(const std::string& key) const {
  auto it = state_.find(key);
  if (it == state_.end()) return std::nullopt;
  for (const std::optional<SiblingSet>& record : it->second.records) {
    if (record) return record;
  }
  return std::nullopt;
}

bool Checkers::Saw(const WriteOp& op, const Dot& dot, const WriteOp* version_of) {
  if (op.has_context) return std::find(op.seen.begin(), op.seen.end(), dot) != op.seen.end();
  if (!op.is_delete) return false;  // a blind Put replaces nothing
  if (op.outcome != Outcome::kOk || op.attempts != 1) return true;
  if (op.reply_context.Covers(dot)) return true;
  // A retried write may have left copies under dots the history never saw (an attempt that
  // stored the write and then failed): this Delete may have replaced one of them.
  return version_of != nullptr && version_of->attempts > 1 && op.acked >= version_of->issued;
}

bool Checkers::SomeWriteSaw(const std::string& key, const Dot& dot,
                            const WriteOp* version_of) const {
  auto it = writes_by_key_.find(key);
  if (it == writes_by_key_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(),
                     [&](const WriteOp* op) { return Saw(*op, dot, version_of); });
}

bool Checkers::SomeLastingWriteSaw(const std::string& key, const Dot& dot,
                                   const SiblingSet& final_record) const {
  auto it = writes_by_key_.find(key);
  if (it == writes_by_key_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(), [&](const WriteOp* op) {
    if (!Saw(*op, dot, nullptr)) return false;
    if (op->outcome == Outcome::kOk) return true;
    auto dots = dots_by_token_.find(op->token);
    if (dots == dots_by_token_.end()) return false;
    return std::any_of(dots->second.begin(), dots->second.end(),
                       [&](const Dot& d) { return final_record.context().Covers(d); });
  });
}

const WriteOp* Checkers::DeleteThatReplaced(const std::string& key, const Dot& dot) const {
  auto it = writes_by_key_.find(key);
  if (it == writes_by_key_.end()) return nullptr;
  for (const WriteOp* op : it->second) {
    if (op->is_delete && op->outcome == Outcome::kOk && op->dot != dot &&
        op->reply_context.Covers(dot)) {
      return op;
    }
  }
  return nullptr;
}

bool Checkers::PurgedOver(const std::string& key, const Dot& dot) const {
  const VersionVector* purged = cluster_->PurgedContext(key);
  return purged != nullptr && purged->Covers(dot);
}

void Checkers::CheckConvergence() {
  for (const auto& [key, ks] : state_) {
    for (size_t i = 1; i < ks.records.size(); ++i) {
      if (ks.records[i] == ks.records[0]) continue;
      Fail(key,
           absl::StrCat("replicas diverged after quiescence: ", cluster_->NodeId(ks.replicas[0]),
                        " holds ", Show(ks.records[0]), " but ", cluster_->NodeId(ks.replicas[i]),
                        " holds ", Show(ks.records[i])));
    }
  }
}

void Checkers::CheckNoAcknowledgedWriteLost() {
  for (const WriteOp& op : history_.writes) {
    if (op.outcome != Outcome::kOk) continue;
    const std::optional<SiblingSet> final_record = Final(op.key);
    // The versions of this logical write: its own dot and any other carrying its token.
    std::vector<Dot> versions{op.dot};
    auto known = dots_by_token_.find(op.token);
    if (known != dots_by_token_.end()) {
      versions.insert(versions.end(), known->second.begin(), known->second.end());
    }
    // A tombstone may be purged once every replica holds it, and with it the versions it
    // replaced (each replaced by a write that saw it).
    const bool purged = std::any_of(versions.begin(), versions.end(), [&](const Dot& dot) {
      return PurgedOver(op.key, dot) && (op.is_delete || SomeWriteSaw(op.key, dot, &op));
    });
    if (purged) continue;
    if (!final_record) {
      Fail(op.key, absl::StrCat("acknowledged write lost: no replica knows the key; ", Describe(op),
                                " acknowledged at ", Seconds(op.acked), " via ",
                                cluster_->NodeId(op.node), " as ", op.dot.ToString()));
      continue;
    }
    bool kept = HasToken(*final_record, op.token);
    for (const Dot& dot : versions) {
      if (kept) break;
      kept = HasVersionOf(*final_record, dot, op) ||
             (final_record->context().Covers(dot) && SomeWriteSaw(op.key, dot, &op));
    }
    if (!kept) {
      Fail(op.key, absl::StrCat("acknowledged write lost: ", Describe(op), " acknowledged at ",
                                Seconds(op.acked), " via ", cluster_->NodeId(op.node), " as ",
                                op.dot.ToString(),
                                " is neither a sibling nor replaced by a write that saw it; "
                                "final record ",
                                final_record->ToString()));
    }
  }
}

void Checkers::CheckReadAfterWrite() {
  // Per key: its acknowledged Puts (issued, acked) and its Deletes.
  std::map<std::string, std::vector<std::pair<absl::Time, absl::Time>>> puts;
  std::map<std::string, std::vector<const WriteOp*>> deletes;
  for (const WriteOp& op : history_.writes) {
    if (op.is_delete) {
      deletes[op.key].push_back(&op);
    } else if (op.outcome == Outcome::kOk) {
      puts[op.key].emplace_back(op.issued, op.acked);
    }
  }
  for (const ReadOp& read : history_.reads) {
    if (read.outcome != Outcome::kNotFound) continue;
    auto key_puts = puts.find(read.key);
    if (key_puts == puts.end()) continue;
    // A Put acknowledged before the Get was issued stays live until a Delete that may cover it:
    // one issued (by the time the Get answered) after the Put was, since its context may have
    // seen the Put; or one without a context (it covers what its coordinator holds) that was
    // still unanswered when the Put was issued. A Delete with a context issued before the Put
    // cannot cover it. The key may have been deleted before the Put: that is the read-after-write
    // of a Put of a key with no live version.
    const std::vector<const WriteOp*>& key_deletes = deletes[read.key];
    // The wipe matters to keys the wiped node replicates; after a membership change, to any key
    // (the node may have been a replica of it under an earlier layout).
    auto wipe_concerns = [this](const std::string& key) {
      if (cluster_->layout().version > 1) return true;
      const std::vector<int> replicas = cluster_->ReplicasOf(key);
      return std::find(replicas.begin(), replicas.end(), cluster_->first_wiped_node()) !=
             replicas.end();
    };
    const std::pair<absl::Time, absl::Time>* violated = nullptr;
    for (const auto& put : key_puts->second) {
      if (put.second > read.issued) continue;
      const bool deleted_since =
          std::any_of(key_deletes.begin(), key_deletes.end(), [&](const WriteOp* d) {
            if (d->issued > read.completed) return false;
            if (d->issued >= put.first) return true;
            return !d->has_context && (d->outcome != Outcome::kOk || d->acked >= put.first);
          });
      // C3 holds while a replica that acknowledged the Put is reachable; a wiped disk may have
      // been the only one reachable, until anti-entropy restores it. The answer counts, not the
      // issue time: a Get retried across the wipe may be answered after it.
      const bool wiped_since = put.second <= cluster_->first_wipe() &&
                               read.completed >= cluster_->first_wipe() && wipe_concerns(read.key);
      if (!deleted_since && !wiped_since) {
        violated = &put;
        break;
      }
    }
    if (violated == nullptr) continue;
    Fail(read.key,
         absl::StrCat("read-after-write violated: Get #", read.id, " by client ", read.client,
                      " issued at ", Seconds(read.issued), " answered NOT_FOUND via ",
                      cluster_->NodeId(read.node), " at ", Seconds(read.completed), " (",
                      read.record.ToString(), "), but a Put of the key issued at ",
                      Seconds(violated->first), " was acknowledged at ", Seconds(violated->second),
                      " and no Delete was issued since"));
  }
}

void Checkers::CheckTokens() {
  for (const auto& [key, ks] : state_) {
    const std::optional<SiblingSet> final_record = Final(key);
    if (!final_record) continue;
    // Retry copies coordinated by two different nodes may be stored (Merge is a join), but one
    // coordinator must never apply a token twice, and a read must show one version per token.
    std::map<std::pair<std::string, std::string>, int> per_coordinator;
    for (const Sibling& s : final_record->siblings()) {
      if (s.idempotency_token.empty()) continue;
      if (++per_coordinator[{s.idempotency_token, s.dot.actor}] == 2) {
        Fail(key, absl::StrCat("token ", s.idempotency_token, " applied twice by ", s.dot.actor,
                               " in ", final_record->ToString()));
      }
    }
    std::map<std::string, int> visible;
    for (const Sibling& s : final_record->LiveSiblings()) {
      if (s.idempotency_token.empty() || ++visible[s.idempotency_token] != 2) continue;
      Fail(key, absl::StrCat("token ", s.idempotency_token,
                             " applied twice: a read shows two versions carrying it in ",
                             final_record->ToString()));
    }
  }
}

void Checkers::CheckTokenResurrection() {
  for (const auto& [key, ks] : state_) {
    const std::optional<SiblingSet> final_record = Final(key);
    if (!final_record) continue;
    for (const Sibling& s : final_record->siblings()) {
      if (s.idempotency_token.empty() || SomeWriteSaw(key, s.dot)) continue;
      for (const Dot& other : dots_by_token_[s.idempotency_token]) {
        if (other == s.dot || HasSibling(*final_record, other) ||
            !SomeLastingWriteSaw(key, other, *final_record)) {
          continue;
        }
        Fail(key, absl::StrCat("token ", s.idempotency_token,
                               " applied twice: a client saw its version ", other.ToString(),
                               " and overwrote it, yet its version ", s.dot.ToString(),
                               " (the same logical write, retried through another node) "
                               "survives in ",
                               final_record->ToString()));
        break;
      }
    }
  }
}

void Checkers::CheckNoUnexpectedErrors() {
  for (const WriteOp& op : history_.writes) {
    if (op.outcome != Outcome::kFailed) continue;
    Fail(op.key, absl::StrCat("unexpected non-retryable error for ", Describe(op), ": ",
                              op.last_error.ToString()));
  }
  for (const ReadOp& op : history_.reads) {
    if (op.outcome != Outcome::kFailed) continue;
    Fail(op.key, absl::StrCat("unexpected non-retryable error for Get #", op.id, ": ",
                              op.last_error.ToString()));
  }
}

void Checkers::CheckInvariants() {
  for (const auto& [key, ks] : state_) {
    for (const std::string& error : ks.errors) {
      Fail(key, absl::StrCat("a replica's record cannot be read: ", error));
    }
    for (size_t i = 0; i < ks.records.size(); ++i) {
      if (!ks.records[i]) continue;
      if (absl::Status s = ks.records[i]->CheckInvariants(); !s.ok()) {
        Fail(key, absl::StrCat("record on ", cluster_->NodeId(ks.replicas[i]),
                               " breaks the SiblingSet invariants: ", s.message()));
      }
    }
  }
}

void Checkers::CheckNoDeletedKeyResurrected() {
  for (const auto& [key, ks] : state_) {
    for (size_t i = 0; i < ks.records.size(); ++i) {
      if (!ks.records[i]) continue;
      for (const Sibling& s : ks.records[i]->LiveSiblings()) {
        const WriteOp* del = DeleteThatReplaced(key, s.dot);
        if (del == nullptr && !PurgedOver(key, s.dot)) continue;
        const std::string by =
            del != nullptr ? absl::StrCat(Describe(*del), ", acknowledged at ", Seconds(del->acked),
                                          " as ", del->dot.ToString(), ",")
                           : std::string("a tombstone record purged during the run");
        Fail(key, absl::StrCat("deleted key resurrected: ", cluster_->NodeId(ks.replicas[i]),
                               " holds the live version ", s.dot.ToString(), " (value ", s.value,
                               ") that ", by, " had replaced; record ", ks.records[i]->ToString()));
        break;
      }
    }
  }
}

void Checkers::RunAll(bool strict_tokens) {
  CheckInvariants();
  CheckNoDeletedKeyResurrected();
  CheckConvergence();
  CheckNoAcknowledgedWriteLost();
  CheckReadAfterWrite();
  CheckTokens();
  if (strict_tokens) CheckTokenResurrection();
  CheckNoUnexpectedErrors();
}

}  // namespace kv::sim

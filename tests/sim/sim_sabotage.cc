#include "tests/sim/sim_sabotage.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "storage/record_codec.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_history.h"

namespace kv::sim {
namespace {

// An acknowledged Put that is the only write of its key (a new key nobody overwrote).
const WriteOp* SoleAcknowledgedPut(const History& history) {
  std::map<std::string, int> writes_per_key;
  for (const WriteOp& op : history.writes) ++writes_per_key[op.key];
  for (const WriteOp& op : history.writes) {
    if (op.outcome == Outcome::kOk && !op.is_delete && writes_per_key[op.key] == 1) return &op;
  }
  return nullptr;
}

// An acknowledged Put, answered on its first attempt, whose version is still a sibling of its
// key on every replica, on a key with at least one Delete without context, each of them
// acknowledged on its first attempt (the checker takes a retried or unanswered one for a write
// that saw every version).
const WriteOp* SurvivingPutOnSharedKey(SimCluster* cluster, const History& history) {
  std::map<std::string, int> blind_deletes;
  for (const WriteOp& op : history.writes) {
    if (!op.is_delete || op.has_context) continue;
    const bool clear = op.outcome == Outcome::kOk && op.attempts == 1;
    // A key with an unclear one never qualifies.
    blind_deletes[op.key] = clear && blind_deletes[op.key] >= 0 ? blind_deletes[op.key] + 1 : -1;
  }
  for (const WriteOp& op : history.writes) {
    if (op.outcome != Outcome::kOk || op.is_delete || op.attempts != 1 ||
        blind_deletes[op.key] <= 0) {
      continue;
    }
    absl::StatusOr<SiblingSet> record =
        cluster->store(cluster->ReplicasOf(op.key)[0])->ReadRecord(op.key);
    if (!record.ok()) continue;
    const bool live = std::any_of(record->siblings().begin(), record->siblings().end(),
                                  [&](const Sibling& s) { return s.dot == op.dot; });
    if (live) return &op;
  }
  return nullptr;
}

void Store(SimCluster* cluster, int node, const std::string& key, const SiblingSet& record) {
  WriteBatch batch;
  batch.Put(Column::kData, key, EncodeSiblingSet(record));
  cluster->engine(node)->Write(batch, WriteOptions{true}).IgnoreError();
}

// Rewrites `victim`'s key on its first `replicas` replicas with `edit` applied.
template <typename Edit>
void EditReplicas(SimCluster* cluster, const WriteOp& victim, size_t replicas, Edit edit) {
  std::vector<int> nodes = cluster->ReplicasOf(victim.key);
  for (size_t i = 0; i < nodes.size() && i < replicas; ++i) {
    absl::StatusOr<SiblingSet> record = cluster->store(nodes[i])->ReadRecord(victim.key);
    if (!record.ok()) continue;
    VersionVector context = record->context();
    std::vector<Sibling> siblings = record->siblings();
    edit(&context, &siblings);
    Store(cluster, nodes[i], victim.key, SiblingSet(context, siblings));
  }
}

void DropVersion(const WriteOp& victim, VersionVector*, std::vector<Sibling>* siblings) {
  std::vector<Sibling> kept;
  for (const Sibling& s : *siblings) {
    if (s.dot != victim.dot) kept.push_back(s);
  }
  *siblings = kept;
}

void FakeNotFound(History* history) {
  std::map<std::string, absl::Time> first_ack;
  std::map<std::string, bool> deleted;
  for (const WriteOp& op : history->writes) {
    if (op.is_delete) deleted[op.key] = true;
    if (op.outcome == Outcome::kOk && !op.is_delete && first_ack.count(op.key) == 0) {
      first_ack[op.key] = op.acked;
    }
  }
  for (ReadOp& read : history->reads) {
    auto ack = first_ack.find(read.key);
    if (read.outcome != Outcome::kOk || deleted[read.key] || ack == first_ack.end() ||
        read.issued < ack->second) {
      continue;
    }
    read.outcome = Outcome::kNotFound;
    return;
  }
}

void ResurrectDeletedValue(SimCluster* cluster, const History& history) {
  for (const WriteOp& del : history.writes) {
    if (!del.is_delete || del.outcome != Outcome::kOk) continue;
    for (const WriteOp& put : history.writes) {
      if (put.is_delete || put.outcome != Outcome::kOk || put.key != del.key ||
          !del.reply_context.Covers(put.dot)) {
        continue;
      }
      VersionVector context;
      context.Advance(put.dot.actor, put.dot.counter);
      Sibling live;
      live.dot = put.dot;
      live.value = put.value;
      live.idempotency_token = put.token;
      for (int node : cluster->ReplicasOf(put.key)) {
        Store(cluster, node, put.key, SiblingSet(context, {live}));
      }
      return;
    }
  }
}

void ResurrectRetryCopy(SimCluster* cluster, const History& history) {
  for (const WriteOp& put : history.writes) {
    if (put.is_delete || put.outcome != Outcome::kOk || put.token.empty()) continue;
    const bool overwritten =
        std::any_of(history.writes.begin(), history.writes.end(), [&](const WriteOp& op) {
          return op.key == put.key && op.has_context && op.context.Covers(put.dot);
        });
    // A Delete without context replaces everything, the copy too (the checker excuses those).
    const bool blind_delete = std::any_of(
        history.writes.begin(), history.writes.end(),
        [&](const WriteOp& op) { return op.key == put.key && op.is_delete && !op.has_context; });
    if (!overwritten || blind_delete) continue;
    std::vector<int> nodes = cluster->ReplicasOf(put.key);
    absl::StatusOr<SiblingSet> first = cluster->store(nodes[0])->ReadRecord(put.key);
    if (!first.ok()) continue;
    // A coordinator other than the first attempt's.
    std::string actor;
    for (const auto& [a, counter] : first->context().entries()) {
      if (a != put.dot.actor) actor = a;
    }
    if (actor.empty()) continue;
    for (int node : nodes) {
      absl::StatusOr<SiblingSet> record = cluster->store(node)->ReadRecord(put.key);
      if (!record.ok()) continue;
      VersionVector context = record->context();
      std::vector<Sibling> siblings = record->siblings();
      Sibling copy;
      copy.dot = Dot{actor, context.Get(actor) + 1};
      copy.value = put.value;
      copy.idempotency_token = put.token;
      context.Advance(actor, copy.dot.counter);
      siblings.push_back(copy);
      std::sort(siblings.begin(), siblings.end(),
                [](const Sibling& a, const Sibling& b) { return a.dot < b.dot; });
      Store(cluster, node, put.key, SiblingSet(context, siblings, record->replaced_writes()));
    }
    return;
  }
}

}  // namespace

void ApplySabotage(Sabotage sabotage, SimCluster* cluster, History* history) {
  if (sabotage == Sabotage::kNone || sabotage == Sabotage::kDropHandoffKeys ||
      sabotage == Sabotage::kKeepEpochAfterLostWrites) {
    return;
  }
  if (sabotage == Sabotage::kFakeNotFound) return FakeNotFound(history);
  if (sabotage == Sabotage::kResurrectDeletedValue) return ResurrectDeletedValue(cluster, *history);
  if (sabotage == Sabotage::kResurrectRetryCopy) return ResurrectRetryCopy(cluster, *history);
  if (sabotage == Sabotage::kDropAcknowledgedWriteOnSharedKey) {
    const WriteOp* victim = SurvivingPutOnSharedKey(cluster, *history);
    if (victim == nullptr) return;
    return EditReplicas(cluster, *victim, SIZE_MAX, [&](VersionVector* c, std::vector<Sibling>* s) {
      DropVersion(*victim, c, s);
    });
  }
  const WriteOp* victim = SoleAcknowledgedPut(*history);
  if (victim == nullptr) return;
  switch (sabotage) {
    case Sabotage::kNone:
    case Sabotage::kFakeNotFound:
    case Sabotage::kResurrectDeletedValue:
    case Sabotage::kResurrectRetryCopy:
    case Sabotage::kDropAcknowledgedWriteOnSharedKey:
    case Sabotage::kDropHandoffKeys:
    case Sabotage::kKeepEpochAfterLostWrites:
      return;
    case Sabotage::kDropAcknowledgedWrite:
      return EditReplicas(
          cluster, *victim, SIZE_MAX,
          [&](VersionVector* c, std::vector<Sibling>* s) { DropVersion(*victim, c, s); });
    case Sabotage::kDivergeOneReplica:
      return EditReplicas(cluster, *victim, 1, [&](VersionVector* c, std::vector<Sibling>* s) {
        DropVersion(*victim, c, s);
      });
    case Sabotage::kDuplicateToken:
      return EditReplicas(
          cluster, *victim, SIZE_MAX, [&](VersionVector* context, std::vector<Sibling>* siblings) {
            Sibling copy;
            for (const Sibling& s : *siblings) {
              if (s.dot == victim->dot) copy = s;
            }
            // The same coordinator applying the token a second time.
            copy.dot = Dot{victim->dot.actor, context->Get(victim->dot.actor) + 1};
            context->Advance(copy.dot.actor, copy.dot.counter);
            siblings->push_back(copy);
            std::sort(siblings->begin(), siblings->end(),
                      [](const Sibling& a, const Sibling& b) { return a.dot < b.dot; });
          });
  }
}

}  // namespace kv::sim

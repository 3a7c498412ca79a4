#include "node/membership_change.h"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "node/log.h"
#include "node/ring.h"
#include "storage/status_macros.h"
#include "storage/steady_timer.h"

namespace kv {

MembershipChanger::MembershipChanger(Gossiper* gossiper, OperationRegistry* operations,
                                     Scheduler* scheduler, const Clock* clock, Options options)
    : gossiper_(gossiper),
      operations_(operations),
      scheduler_(scheduler),
      clock_(clock),
      options_(options) {}

MembershipChanger::~MembershipChanger() { Shutdown(); }

namespace {

// How many members of `transition` hand off (those it names down do not).
uint64_t Sources(const ClusterLayout& transition) {
  return transition.members.size() - transition.down.size();
}

// How a transition's operation ends when the node shuts down.
absl::Status ShutdownCancelled() {
  return absl::CancelledError(
      "the node is shutting down; the transition stays in place until completed (by the "
      "other nodes' takeover watch if this one does not come back)");
}

// The progress message of an operation left RUNNING at Shutdown, to go on after a restart.
constexpr absl::string_view kSuspended =
    "the node is shutting down; this operation goes on when it restarts, and the other nodes' "
    "takeover watch completes the transition if it does not come back";

// An accept's answer in the shape of a promise's (MembershipChanger::AskMembers).
LayoutPromise Answer(absl::Status status) {
  LayoutPromise answer;
  answer.status = std::move(status);
  return answer;
}

}  // namespace

struct MembershipChanger::Answers {
  absl::Mutex mu;
  std::vector<std::optional<LayoutPromise>> promises ABSL_GUARDED_BY(mu);
  std::vector<bool> granted ABSL_GUARDED_BY(mu);  // per asked member
  std::vector<bool> failed ABSL_GUARDED_BY(mu);
  bool stopped ABSL_GUARDED_BY(mu) = false;  // Shutdown: stop waiting
  // Notified at every answer and at Shutdown. The wait is on the monotonic clock: a step of
  // the wall clock must neither stretch nor cut reserve_timeout.
  SteadyCondition changed;
};

void MembershipChanger::Shutdown() {
  std::set<std::string> running;
  std::set<std::shared_ptr<Answers>> waiting;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
    running.swap(running_);
    waiting = waiting_;
  }
  for (const std::shared_ptr<Answers>& answers : waiting) {
    absl::MutexLock lock(&answers->mu);
    answers->stopped = true;
    answers->changed.Notify();
  }
  guard_.Close();
  for (const std::string& id : running) Suspend(id);
}

void MembershipChanger::Suspend(const std::string& id) {
  if (!operations_->durable()) {
    operations_->Finish(id, ShutdownCancelled()).IgnoreError();
    return;
  }
  operations_->Update(id, [](OperationInfo& op) { op.message = std::string(kSuspended); })
      .IgnoreError();
}

void MembershipChanger::Resume(const std::vector<OperationInfo>& interrupted) {
  const ClusterLayout layout = gossiper_->Layout();
  for (const OperationInfo& op : interrupted) {
    Job job;
    job.id = op.id;
    if (!absl::SimpleAtoi(op.checkpoint, &job.transition.version) || job.transition.version == 0) {
      operations_
          ->Finish(op.id, absl::DataLossError(
                              absl::StrCat("cannot go on after a restart: the stored checkpoint \"",
                                           op.checkpoint, "\" names no layout version")))
          .IgnoreError();
      continue;
    }
    // Poll takes the transition from the layout once this node holds its version again (and
    // refuses a layout of that version that is no transition).
    if (layout.version == job.transition.version && layout.in_transition()) job.transition = layout;
    // Gossip has not told this run the sources' progress yet: no progress is reported, and the
    // job does not time out, before the grace ends.
    job.quiet_until = clock_->Now() + options_.resume_grace;
    job.deadline = std::max(op.started + options_.timeout, job.quiet_until);
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      running_.insert(job.id);
      running_versions_.insert(job.transition.version);
    }
    operations_
        ->Update(op.id,
                 [](OperationInfo& o) {
                   o.message = "the node restarted; going on from the layout it holds now";
                 })
        .IgnoreError();
    LogInfo("resuming a membership change operation after a restart",
            {{"operation", op.id}, {"layout_version", absl::StrCat(job.transition.version)}});
    scheduler_->RunAfter(absl::ZeroDuration(), guard_.Wrap([this, job] { Poll(job); }));
  }
}

absl::StatusOr<MembershipChanger::Plan> MembershipChanger::MakePlan(
    Action action, const std::string& node_id) const {
  // The rule ids have always had: a member an earlier version let in can still be removed.
  if (!IsWellFormedNodeId(node_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", node_id, "' is not a node id: 1 to 64 characters of A-Z a-z 0-9 _ . -"));
  }
  Plan plan;
  plan.current = gossiper_->Layout();
  absl::StatusOr<ClusterLayout> transition;
  if (action == Action::kLeave) {
    transition = PlanLeave(plan.current, node_id);
  } else if (action == Action::kRemoveDown) {
    transition = PlanRemoveDown(plan.current, node_id);
    // Only a member this node's failure detector has down (a member only partitioned away from
    // this node passes: it keeps its copies and compares them in phase 2 if it learns the change,
    // but nobody waits for it). And only while every node this node hears from honours the mark:
    // an older node, member or not, would drop it from the layout it adopts and gossips, and the
    // members that take that copy would wait for the member down for good.
    // During a transition, only while some source has not finished (otherwise the change
    // completes by itself) and while every node heard from agrees on completions: an older node
    // installs the completion unagreed, and the removal takes the completion's version.
    const std::vector<MemberView> views = gossiper_->Members();
    if (transition.ok() && plan.current.in_transition() &&
        SourcesWaiting(plan.current, views).empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("every source of the running change (", plan.current.change,
                       ") has finished its handoff, so it completes once a majority of the "
                       "members' votes agree; remove ",
                       node_id, " after that, if it is still a member then"));
    }
    if (transition.ok()) {
      for (const MemberView& view : views) {
        if (plan.current.in_transition() && !view.self && view.liveness == Liveness::kUp &&
            !view.entry.agrees_completions) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node ", view.entry.member.id,
              " runs a version that completes a change without agreeing on it, so a remove "
              "during the change could split the cluster; upgrade it first, or remove ",
              node_id, " once the change has completed"));
        }
        if (view.entry.member.id == node_id) {
          if (view.liveness != Liveness::kDown || view.self) {
            return absl::FailedPreconditionError(absl::StrCat(
                "node ", node_id, " is ",
                view.self ? "this node" : absl::StrCat(LivenessName(view.liveness), " here"),
                "; cluster remove is for a member that is down for good (its disk lost or never "
                "coming back) once the failure detector has it DOWN; a member that runs leaves "
                "with cluster leave"));
          }
        } else if (!view.self && view.liveness == Liveness::kUp && !view.entry.knows_members_down) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node ", view.entry.member.id,
              " runs a version that does not know removals of members down (it would drop the "
              "mark and wait for the handoff of ",
              node_id, " for good); upgrade it first"));
        }
      }
      if (plan.current.in_transition() && !AllAgreeCompletions(plan.current)) {
        // Down members count too (the one removed included): a node completing the change asks
        // every member of it, and if one of them does not agree on completions it installs the
        // completion unagreed, at the version the removal takes.
        return absl::FailedPreconditionError(absl::StrCat(
            "a member of the running change (", plan.current.change,
            ") runs a version that completes a change without agreeing on it, or was never heard "
            "from, so a remove during the change could split the cluster; remove ",
            node_id, " once the change has completed"));
      }
    }
  } else {
    const Member* joining = nullptr;
    const MemberView* joining_view = nullptr;
    const std::vector<MemberView> views = gossiper_->Members();
    for (const MemberView& view : views) {
      if (view.entry.member.id == node_id) {
        joining = &view.entry.member;
        joining_view = &view;
      }
    }
    if (joining == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          "node ", node_id,
          " is not known to gossip on this node; start it with --node_id=", node_id,
          " --seeds=<a member's address> and retry once it shows in kvctl cluster status"));
    }
    transition = PlanJoin(plan.current, *joining);
    // Whether the joiner holds records is known only from an entry it made while up under this
    // layout: an older entry (say from before it left) would say nothing true about that.
    if (transition.ok() && joining_view->liveness != Liveness::kUp) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", node_id, " is not up (", LivenessName(joining_view->liveness),
                       "); start it with --seeds and retry once kvctl cluster status shows it "
                       "UP"));
    }
    if (transition.ok() && joining_view->entry.layout_version != 0 &&
        joining_view->entry.layout_version != plan.current.version) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", node_id, " has not yet gossiped under layout version ",
                       plan.current.version, " (its last entry was made under version ",
                       joining_view->entry.layout_version, "); retry in a few seconds"));
    }
    if (transition.ok() && joining_view->entry.holds_records) {
      // Cassandra refuses a decommissioned node the same way: its versions of keys deleted and
      // purged since it left would come back through anti-entropy and reads (C8).
      return absl::FailedPreconditionError(absl::StrCat(
          "node ", node_id,
          " holds records from before (it was a member, or its data directory came from one); "
          "a node joins with an empty data directory, or its old versions could bring back keys "
          "deleted since: stop it, empty its data directory (or start it with a new --data_dir) "
          "and start it again"));
    }
  }
  if (!transition.ok()) return transition.status();
  plan.transition = *std::move(transition);
  absl::StatusOr<MovementPlan> movement =
      PlanMovement(plan.transition.members, plan.transition.next, options_.replication_factor);
  if (!movement.ok()) return movement.status();
  plan.movement = *std::move(movement);
  return plan;
}

absl::StatusOr<std::pair<MembershipChanger::Plan, std::string>> MembershipChanger::Commit(
    Action action, const std::string& node_id, uint64_t expected_version) {
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the node is shutting down");
  }
  absl::StatusOr<Plan> plan = MakePlan(action, node_id);
  if (!plan.ok()) return plan.status();
  if (expected_version != 0 && expected_version != plan->current.version) {
    return absl::FailedPreconditionError(absl::StrCat("the layout is at version ",
                                                      plan->current.version, ", not ",
                                                      expected_version, " as planned; plan again"));
  }
  {
    absl::MutexLock lock(&mu_);
    ++agreeing_;
  }
  absl::Status agreed = Agree(*plan);
  if (agreed.ok()) agreed = Install(plan->transition);
  {
    absl::MutexLock lock(&mu_);
    --agreeing_;
  }
  if (!agreed.ok()) return agreed;
  Job job;
  job.transition = plan->transition;
  job.deadline = clock_->Now() + options_.timeout;
  job.id = operations_->Start(
      action == Action::kJoin    ? "join"
      : action == Action::kLeave ? "leave"
                                 : "remove",
      absl::StrCat(plan->transition.change, " (layout version ", plan->transition.version, ")"),
      Sources(plan->transition), "sources", absl::StrCat(plan->transition.version));
  bool stopped = false;
  {
    absl::MutexLock lock(&mu_);
    stopped = shutdown_;
    if (!stopped) {
      running_.insert(job.id);
      running_versions_.insert(job.transition.version);
    }
  }
  std::string id = job.id;
  if (stopped) {
    // Shutdown came while the transition was installed: its operation ends as those running at
    // Shutdown do (the takeover watch of the other nodes completes the transition).
    Suspend(id);
  } else {
    scheduler_->RunAfter(options_.poll, guard_.Wrap([this, job] { Poll(job); }));
  }
  return std::make_pair(*std::move(plan), std::move(id));
}

void MembershipChanger::SetReservations(std::string self_id, LayoutReservations* local,
                                        PeerTransport* transport) {
  self_id_ = std::move(self_id);
  reservations_ = local;
  reservation_transport_ = transport;
}

uint64_t MembershipChanger::NextRound(uint64_t above) {
  absl::MutexLock lock(&mu_);
  const uint64_t now =
      static_cast<uint64_t>(std::max<int64_t>(absl::ToUnixMicros(clock_->Now()), 0));
  // Rounds above kMaxLayoutRound are refused by every member, so one answered above it cannot be
  // beaten: stay at the bound (the ballot is then refused, not wrapped to 0).
  last_round_ = std::min(std::max({now, last_round_ + 1, std::min(above, kMaxLayoutRound) + 1}),
                         kMaxLayoutRound);
  return last_round_;
}

std::vector<std::optional<LayoutPromise>> MembershipChanger::AskMembers(
    const LayoutQuorum& quorum,
    const std::function<void(const Member&, std::function<void(LayoutPromise)>)>& ask) {
  const std::vector<Member>& members = quorum.asked();
  const size_t n = members.size();
  {
    absl::MutexLock lock(&mu_);
    // Asked now, members would promise (and lease) the version to a node that has stopped.
    if (shutdown_) return std::vector<std::optional<LayoutPromise>>(n);
  }
  auto answers = std::make_shared<Answers>();
  {
    absl::MutexLock lock(&answers->mu);
    answers->promises.resize(n);
    answers->granted.resize(n);
    answers->failed.resize(n);
  }
  for (size_t i = 0; i < n; ++i) {
    ask(members[i], [answers, i](LayoutPromise promise) {
      absl::MutexLock lock(&answers->mu);
      (promise.status.ok() ? answers->granted : answers->failed)[i] = true;
      answers->promises[i] = std::move(promise);
      answers->changed.Notify();
    });
  }
  bool stopped = false;
  {
    absl::MutexLock lock(&mu_);
    stopped = shutdown_;
    if (!stopped) waiting_.insert(answers);
  }
  std::vector<std::optional<LayoutPromise>> result;
  {
    absl::MutexLock lock(&answers->mu);
    if (stopped) answers->stopped = true;
    // Until a majority granted, or can no longer grant, or the time is up, or Shutdown.
    auto decided = [&answers, &quorum]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(answers->mu) {
      return quorum.Granted(answers->granted) || quorum.Lost(answers->failed) || answers->stopped;
    };
    answers->changed.AwaitWithTimeout(&answers->mu, absl::Condition(&decided),
                                      options_.reserve_timeout);
    result = answers->promises;
  }
  if (!stopped) {
    absl::MutexLock lock(&mu_);
    waiting_.erase(answers);
  }
  return result;
}

absl::Status MembershipChanger::Refused(absl::string_view what, absl::string_view outcome,
                                        const LayoutQuorum& quorum,
                                        const std::vector<std::optional<LayoutPromise>>& answers) {
  const std::vector<Member>& members = quorum.asked();
  std::vector<bool> granted(members.size());
  // Why members did not grant: refusals that planning again or waiting for another change
  // answers (and codes a retry cannot change), and members that may grant on a retry.
  std::vector<std::string> refusals;
  std::vector<std::string> transient;
  for (size_t i = 0; i < members.size(); ++i) {
    if (!answers[i].has_value()) {
      transient.push_back(absl::StrCat(members[i].id, ": no answer yet"));
      continue;
    }
    const absl::Status& status = answers[i]->status;
    if (status.ok()) {
      granted[i] = true;
    } else if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
               absl::IsAborted(status)) {
      transient.push_back(absl::StrCat(members[i].id, ": ", status.ToString()));
    } else if (absl::IsFailedPrecondition(status)) {
      refusals.push_back(absl::StrCat(members[i].id, ": ", status.message()));
    } else {
      refusals.push_back(absl::StrCat(members[i].id, ": ", status.ToString()));
    }
  }
  const std::string why = absl::StrCat(
      what, " by ", quorum.Describe(granted), ", and a membership change needs a majority; ",
      outcome, refusals.empty() ? "" : "; refused by ", absl::StrJoin(refusals, "; "),
      transient.empty() ? "" : "; not granted by ", absl::StrJoin(transient, "; "));
  // A refusal is not undone by retrying the same commit at once: another commit holds the
  // version, this node's plan is behind, or a member cannot take reservations. Otherwise members
  // are unreachable, behind or promised a later round, and a retry may succeed.
  return refusals.empty() ? absl::UnavailableError(why) : absl::FailedPreconditionError(why);
}

absl::Status MembershipChanger::Agree(const Plan& plan) {
  if (reservations_ == nullptr) return absl::OkStatus();
  const uint64_t version = plan.transition.version;
  const std::string& change = plan.transition.change;
  // More than half of the votes of the current members (LayoutQuorum).
  const LayoutQuorum quorum(plan.current);
  const std::vector<Member>& members = quorum.asked();
  auto granted = [&quorum](const std::vector<std::optional<LayoutPromise>>& answers) {
    std::vector<bool> flags(answers.size());
    for (size_t i = 0; i < answers.size(); ++i) {
      flags[i] = answers[i].has_value() && answers[i]->status.ok();
    }
    return quorum.Granted(flags);
  };

  // The ballots this agreement asked with. A failed agreement releases their leases on every
  // member (a promise that came too late to count, or one taken by an accept, holds one too; a
  // member holding none ignores the release), so that other proposers need not wait for them.
  std::vector<LayoutBallot> ballots;
  auto failed = [&](absl::Status status) {
    for (const LayoutBallot& asked : ballots) {
      for (const Member& member : members) {
        if (member.id == self_id_) {
          reservations_->Release(asked, version);
        } else {
          reservation_transport_->ReleaseLayout(member, version, asked);
        }
      }
    }
    return status;
  };

  // Phase 1: promises, retried once with a round above any promised one.
  LayoutBallot ballot{NextRound(0), self_id_};
  std::vector<std::optional<LayoutPromise>> promises;
  for (int attempt = 0; attempt < 2; ++attempt) {
    ballots.push_back(ballot);
    promises =
        AskMembers(quorum, [&](const Member& member, std::function<void(LayoutPromise)> done) {
          if (member.id == self_id_) {
            done(reservations_->Reserve(ballot, version, change, gossiper_->Layout()));
          } else {
            reservation_transport_->ReserveLayout(member, version, ballot, change, std::move(done));
          }
        });
    if (granted(promises)) break;
    uint64_t beat = 0;
    for (const std::optional<LayoutPromise>& promise : promises) {
      if (promise.has_value() && absl::IsAborted(promise->status)) {
        beat = std::max(beat, promise->promised_round);
      }
    }
    if (beat < ballot.round) break;  // no member promised a later round: retrying cannot help
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) {
        return failed(absl::UnavailableError("the node is shutting down; nothing changed"));
      }
    }
    ballot.round = NextRound(beat);
  }
  if (!granted(promises)) {
    absl::Status refused =
        Refused(absl::StrCat("layout version ", version, " (", change, ") was reserved"),
                "nothing changed", quorum, promises);
    {
      absl::MutexLock lock(&mu_);
      // A refusal stands; members that had not answered yet were cut short by Shutdown.
      if (shutdown_ && absl::IsUnavailable(refused)) {
        refused = absl::UnavailableError("the node is shutting down; nothing changed");
      }
    }
    return failed(std::move(refused));
  }
  // The layout a majority may have accepted already: the one of the highest ballot among the
  // grants. Any layout a majority accepted is among them.
  const ClusterLayout* accepted = nullptr;
  LayoutBallot accepted_ballot;
  for (const std::optional<LayoutPromise>& promise : promises) {
    if (promise.has_value() && promise->status.ok() && promise->accepted.has_value() &&
        (accepted == nullptr || accepted_ballot < promise->accepted_ballot)) {
      accepted = &*promise->accepted;
      accepted_ballot = promise->accepted_ballot;
    }
  }
  const ClusterLayout layout = accepted != nullptr ? *accepted : plan.transition;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) {
      return failed(absl::UnavailableError("the node is shutting down; nothing changed"));
    }
  }

  // Phase 2.
  const std::vector<std::optional<LayoutPromise>> accepts =
      AskMembers(quorum, [&](const Member& member, std::function<void(LayoutPromise)> done) {
        if (member.id == self_id_) {
          done(Answer(reservations_->Accept(ballot, layout, gossiper_->Layout())));
          return;
        }
        reservation_transport_->AcceptLayout(
            member, ballot, layout,
            [done = std::move(done)](absl::Status status) { done(Answer(std::move(status))); });
      });
  if (!granted(accepts)) {
    absl::Status refused =
        Refused(absl::StrCat("layout version ", version, " (", layout.change, ") was accepted"),
                "it is not installed yet: the members that accepted it install it once a majority "
                "answers them again (within seconds of that), and the next commit of this version "
                "installs it instead of its own change; see kvctl cluster status",
                quorum, accepts);
    {
      absl::MutexLock lock(&mu_);
      // As in phase 1; but something may have been accepted, so it does not say nothing changed.
      if (shutdown_ && absl::IsUnavailable(refused)) {
        refused = absl::UnavailableError(absl::StrCat(
            "the node is shutting down while layout version ", version, " (", layout.change,
            ") was being accepted; the members that accepted it install it once a majority "
            "answers them again: see kvctl cluster status"));
      }
    }
    return failed(std::move(refused));
  }
  if (SameLayout(layout, plan.transition)) return absl::OkStatus();
  // Finish the layout an earlier commit got accepted but did not install (it stopped, or its
  // layout never left it): installing any other of that version could split the cluster.
  LogInfo("installing a layout an earlier membership change got accepted but did not install",
          {{"layout_version", absl::StrCat(version)},
           {"layout", DescribeLayout(layout)},
           {"accepted_by", accepted_ballot.proposer},
           {"instead_of", change}});
  KV_RETURN_IF_ERROR(Install(layout));
  return absl::FailedPreconditionError(
      absl::StrCat("the members had accepted layout version ", version, " (",
                   DescribeLayout(layout), ") from an earlier commit by ", accepted_ballot.proposer,
                   " that had not reached this node; this node installed it instead of \"", change,
                   "\": plan again once it completes (kvctl cluster status)"));
}

bool MembershipChanger::AllAgreeCompletions(const ClusterLayout& transition) const {
  std::map<std::string, bool> agrees;
  for (const MemberView& view : gossiper_->Members()) {
    // A member not heard from since this node started may be of any version; only one whose own
    // entry said it installs completions unagreed (an older node) counts against (otherwise a
    // change whose dead member this node never heard from could never be completed by a remove).
    agrees[view.entry.member.id] =
        view.self || view.entry.agrees_completions || view.since_heard == absl::InfiniteDuration();
  }
  const LayoutQuorum quorum(transition);
  for (const Member& m : quorum.asked()) {
    auto it = agrees.find(m.id);
    if (it == agrees.end() || !it->second) return false;
  }
  return true;
}

absl::Status MembershipChanger::InstallCompletion(const ClusterLayout& transition) {
  const ClusterLayout completion = CompleteTransition(transition);
  if (reservations_ != nullptr && AllAgreeCompletions(transition)) {
    Plan plan;
    plan.current = transition;
    plan.transition = completion;
    {
      absl::MutexLock lock(&mu_);
      // One agreement at a time on this node (a commit, the watch's recovery, another
      // completion): two would only abort each other's ballots.
      if (agreeing_ > 0) {
        return absl::UnavailableError("another agreement on a layout runs on this node");
      }
      ++agreeing_;
    }
    const absl::Status agreed = Agree(plan);
    {
      absl::MutexLock lock(&mu_);
      --agreeing_;
    }
    KV_RETURN_IF_ERROR(agreed);
  }
  return Install(completion);
}

absl::Status MembershipChanger::Install(const ClusterLayout& layout) {
  absl::Status proposed = gossiper_->ProposeLayout(layout);
  if (!proposed.ok() && SameLayout(gossiper_->Layout(), layout)) return absl::OkStatus();
  return proposed;
}

void MembershipChanger::Poll(Job job) {
  const ClusterLayout layout = gossiper_->Layout();
  const uint64_t version = job.transition.version;
  if (layout.version < version) {
    // Resumed after a restart that lost the transition's install: gossip brings it back.
    if (clock_->Now() < job.deadline) {
      scheduler_->RunAfter(options_.poll, guard_.Wrap([this, job] { Poll(job); }));
      return;
    }
    Finish(job, absl::DeadlineExceededError(absl::StrCat(
                    "this node restarted before it stored layout version ", version,
                    ", and gossip has not brought it back (the node holds version ", layout.version,
                    "); kvctl cluster status on another node shows the layout")));
    return;
  }
  if (layout.version > version + 1) {
    // This node was down (a resumed job) or its polls stalled while the layout moved on by
    // more than one version: which layout followed the transition is not kept.
    Finish(job, absl::UnknownError(absl::StrCat(
                    "the layout moved on to version ", layout.version,
                    " while this node was down or not looking; whether the transition at version ",
                    version,
                    " completed or was replaced is not known here (kvctl cluster status "
                    "shows the members now)")));
    return;
  }
  if (layout.version != version) {
    const bool completed = layout.version == version + 1 && !layout.in_transition();
    Finish(job, completed ? absl::OkStatus()
                          : absl::AbortedError(
                                absl::StrCat("layout version ", layout.version, " (", layout.change,
                                             ") replaced the transition at version ", version)));
    return;
  }
  // A job resumed before this node held its transition (Resume) takes it now: a layout's version
  // names it (every member installs the one layout agreed on for it).
  if (job.transition.members.empty()) {
    if (!layout.in_transition()) {
      Finish(job, absl::DataLossError(absl::StrCat("the stored operation names layout version ",
                                                   version, ", which is not a transition here")));
      return;
    }
    job.transition = layout;
  }
  std::map<std::string, MemberEntry> entries;
  const std::vector<MemberView> members = gossiper_->Members();
  for (const MemberView& view : members) entries[view.entry.member.id] = view.entry;
  const std::vector<std::string> waiting = SourcesWaiting(job.transition, members);
  const uint64_t done = Sources(job.transition) - waiting.size();
  std::map<std::string, uint64_t> counters;
  auto count = [&](const std::string& name, const std::string& source, uint64_t value) {
    counters[absl::StrCat(name, "_from_", source)] = value;
    counters[absl::StrCat(name, "_total")] += value;
  };
  std::vector<std::string> errors;  // why sources wait to retry
  for (const Member& source : job.transition.members) {
    if (job.transition.NamesDown(source.id)) continue;
    const HandoffProgress& p = entries[source.id].handoff;
    const HandoffProgress none;
    const HandoffProgress& current = p.layout_version == version ? p : none;
    if (!current.done && !current.last_error.empty()) {
      errors.push_back(absl::StrCat(source.id, " retries after: ", current.last_error));
    }
    count("keys", source.id, current.keys);
    count("bytes", source.id, current.bytes);
    count("digests", source.id, current.digests);
    count("compared_keys", source.id, current.compared_keys);
    count("compared_bytes", source.id, current.compared_bytes);
  }
  const bool all_done = waiting.empty();
  // Past Options::timeout the operation stays RUNNING and says so: the transition stays in
  // place, and the takeover watch may still complete it, so only the layout ends the operation
  // (completed, or replaced: a remove of the member that holds it up).
  const bool overdue = clock_->Now() >= job.deadline;
  if (all_done || clock_->Now() >= job.quiet_until) {
    operations_
        ->Update(
            job.id,
            [&](OperationInfo& op) {
              op.done = done;
              op.counters = counters;
              op.message = absl::StrCat(
                  overdue ? "overdue (running longer than expected; the transition stays in "
                            "place until it completes or a remove replaces it): "
                          : "",
                  all_done
                      ? (job.completion_error.empty()
                             ? "every source handed off; completing the transition"
                             : absl::StrCat("every source handed off; the completion is not "
                                            "agreed on yet (retrying): ",
                                            job.completion_error))
                      : absl::StrCat("waiting for the handoff of ", absl::StrJoin(waiting, ", "),
                                     errors.empty() ? "" : "; ", absl::StrJoin(errors, "; ")));
            })
        .IgnoreError();
  }
  if (all_done && clock_->Now() >= job.retry_completion_at) {
    const absl::Status completed = InstallCompletion(job.transition);
    if (completed.ok()) {
      Finish(job, completed);
      return;
    }
    // Members unreachable or busy with another proposer, or another layout of the version was
    // agreed on (a remove during the change; the next poll says the transition was replaced).
    // Retried after a lease, staggered, as the watch's recovery is.
    if (job.completion_error != completed.ToString()) {
      job.completion_error = completed.ToString();
      LogInfo("the completion of a membership change was not agreed on now; retrying",
              {{"layout_version", absl::StrCat(version)}, {"detail", job.completion_error}});
    }
    job.retry_completion_at =
        clock_->Now() + RecoveryStagger() +
        (reservations_ != nullptr ? reservations_->options().lease : absl::ZeroDuration());
  }
  scheduler_->RunAfter(options_.poll, guard_.Wrap([this, job] { Poll(job); }));
}

std::vector<std::string> MembershipChanger::SourcesWaiting(const ClusterLayout& transition,
                                                           const std::vector<MemberView>& members) {
  std::map<std::string, const HandoffProgress*> progress;
  for (const MemberView& view : members) progress[view.entry.member.id] = &view.entry.handoff;
  std::vector<std::string> waiting;
  for (const Member& source : transition.members) {
    if (transition.NamesDown(source.id)) continue;  // hands off nothing: nobody waits for it
    auto it = progress.find(source.id);
    const bool current = it != progress.end() && it->second->layout_version == transition.version;
    if (current && it->second->done) continue;
    waiting.push_back(absl::StrCat(
        source.id,
        current && it->second->phase == HandoffPhase::kComparing ? " (phase 2)" : " (phase 1)"));
  }
  return waiting;
}

void MembershipChanger::StartWatching() {
  scheduler_->RunAfter(options_.watch_interval, guard_.Wrap([this] { Watch(); }));
}

void MembershipChanger::Watch() {
  const ClusterLayout layout = gossiper_->Layout();
  const bool sources_done =
      layout.in_transition() && SourcesWaiting(layout, gossiper_->Members()).empty();
  bool take_over = false;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    const bool ours = running_versions_.count(layout.version) > 0;
    if (!sources_done || ours) {
      done_version_ = 0;
    } else if (done_version_ != layout.version) {
      done_version_ = layout.version;
      done_since_ = clock_->Now();
    } else if (clock_->Now() - done_since_ >= options_.takeover_after) {
      take_over = true;
      done_version_ = 0;
    }
  }
  // Not while another proposer's promise here runs: it may be completing the transition, or
  // committing a remove during it.
  if (take_over && reservations_ != nullptr && reservations_->LeasedToAnother(self_id_)) {
    take_over = false;
  }
  if (take_over) {
    LogInfo(
        "completing a transition whose sources are all done but that nobody completed "
        "(the node that committed it may have stopped)",
        {{"layout_version", absl::StrCat(layout.version)}, {"change", layout.change}});
    absl::Status proposed = InstallCompletion(layout);
    if (!proposed.ok()) {
      LogInfo("the transition was not completed now (another layout may have won)",
              {{"detail", std::string(proposed.message())}});
    }
  }
  FinishAcceptedLayout(gossiper_->Layout());
  scheduler_->RunAfter(options_.watch_interval, guard_.Wrap([this] { Watch(); }));
}

void MembershipChanger::FinishAcceptedLayout(const ClusterLayout& layout) {
  if (reservations_ == nullptr) return;
  const LayoutAcceptorState state = reservations_->State();
  // (During a transition, the accepted layout is its completion or a removal during it.)
  const bool pending = state.accepted.has_value() && state.accepted->version == layout.version + 1;
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    if (!pending) {
      accepted_ballot_ = LayoutBallot();
      return;
    }
    // A layout accepted under a new ballot has a proposer at work again: wait from scratch.
    if (!(accepted_ballot_ == state.accepted_ballot) ||
        accepted_version_ != state.accepted->version) {
      accepted_version_ = state.accepted->version;
      accepted_ballot_ = state.accepted_ballot;
      recover_at_ = now + options_.takeover_after;
      return;
    }
    // Not while a commit of this node agrees, nor while another proposer's promise here runs
    // (it may still be installing the layout).
    if (now < recover_at_ || agreeing_ > 0 || reservations_->LeasedToAnother(self_id_)) return;
    ++agreeing_;
  }
  LogInfo(
      "finishing a cluster layout this node accepted but nobody installed (the node that "
      "committed it may have stopped, or lost its majority before installing it)",
      {{"layout_version", absl::StrCat(state.accepted->version)},
       {"layout", DescribeLayout(*state.accepted)},
       {"accepted_from", state.accepted_ballot.proposer}});
  Plan plan;
  plan.current = layout;
  plan.transition = *state.accepted;
  absl::Status agreed = Agree(plan);
  if (agreed.ok()) agreed = Install(plan.transition);
  const bool finished = gossiper_->Layout().version >= plan.transition.version;
  bool stopping = false;
  {
    absl::MutexLock lock(&mu_);
    --agreeing_;
    stopping = shutdown_;
    // Retry after a lease (another member's attempt may hold one meanwhile; this one released
    // its own), staggered by node so that two members finishing the same layout do not keep
    // taking the majority from each other.
    recover_at_ = clock_->Now() + reservations_->options().lease + RecoveryStagger();
  }
  if (finished) {
    LogInfo("the accepted cluster layout is in place",
            {{"layout_version", absl::StrCat(plan.transition.version)}});
  } else {
    LogInfo(stopping ? "the accepted layout was not finished: the node is shutting down"
                     : "the accepted layout was not finished now; the watch retries",
            {{"detail", std::string(agreed.message())}});
  }
}

absl::Duration MembershipChanger::RecoveryStagger() const {
  if (reservations_ == nullptr) return absl::ZeroDuration();
  // Between no delay and one lease, fixed per node id.
  const uint64_t slot = std::hash<std::string>()(self_id_) % 1000;
  return reservations_->options().lease * (static_cast<double>(slot) / 1000);
}

void MembershipChanger::Finish(const Job& job, absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (running_.erase(job.id) == 0) return;
    running_versions_.erase(job.transition.version);
  }
  if (status.ok()) {
    operations_
        ->Update(job.id,
                 [&](OperationInfo& op) {
                   op.message = absl::StrCat("completed: layout version ",
                                             job.transition.version + 1, " is in place");
                 })
        .IgnoreError();
  }
  operations_->Finish(job.id, status).IgnoreError();
}

}  // namespace kv

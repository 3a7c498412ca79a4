#include "tests/sim/sim_network.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kv::sim {

SimNetwork::SimNetwork(SimLoop* loop, int num_endpoints) : loop_(loop), endpoints_(num_endpoints) {}

void SimNetwork::SetUp(int endpoint, Guard guard) {
  endpoints_[endpoint] = Endpoint{true, std::move(guard)};
}

void SimNetwork::SetDown(int endpoint) {
  endpoints_[endpoint] = Endpoint{};
  for (auto it = pending_.begin(); it != pending_.end();) {
    it = it->second.from == endpoint ? pending_.erase(it) : std::next(it);
  }
}

bool SimNetwork::IsUp(int endpoint) const {
  const Endpoint& e = endpoints_[endpoint];
  return e.up && (!e.guard || *e.guard);
}

void SimNetwork::Partition(int a, int b) {
  if (a != b) partitions_.emplace(std::min(a, b), std::max(a, b));
}

void SimNetwork::Heal(int a, int b) { partitions_.erase({std::min(a, b), std::max(a, b)}); }

bool SimNetwork::Reachable(int a, int b) const {
  return partitions_.count({std::min(a, b), std::max(a, b)}) == 0;
}

bool SimNetwork::StartCall(uint64_t id, const CallSpec& spec,
                           std::function<void(absl::Status)> fail) {
  pending_.emplace(id, PendingCall{spec.from, endpoints_[spec.from].guard, std::move(fail)});
  loop_->Post(
      spec.timeout,
      [this, id, spec] {
        if (pending_.count(id) != 0) ++stats_.deadlines;
        Fail(id, absl::DeadlineExceededError(
                     absl::StrCat("simulated ", spec.kind, " call to ", spec.to, " timed out")));
      },
      endpoints_[spec.from].guard, "deadline", spec.from, spec.key);
  if (IsUp(spec.to) && Reachable(spec.from, spec.to)) return true;
  if (loop_->Chance(faults_.refuse)) {
    ++stats_.refused;
    const std::string why = IsUp(spec.to) ? "partitioned from" : "cannot connect to";
    loop_->Post(
        loop_->UniformDuration(absl::Milliseconds(1), absl::Milliseconds(20)),
        [this, id, why, spec] {
          Fail(id, absl::UnavailableError(
                       absl::StrCat("simulated ", spec.kind, ": ", why, " endpoint ", spec.to)));
        },
        endpoints_[spec.from].guard, "refused", spec.from, spec.key);
  }
  return false;
}

void SimNetwork::Send(int from, int to, const std::string& kind, const std::string& key, bool reply,
                      std::function<void()> deliver) {
  ++stats_.sent;
  const double loss = reply ? faults_.response_loss : faults_.request_loss;
  if (!Reachable(from, to) || loop_->Chance(loss)) {
    ++stats_.lost;
    return;
  }
  const int copies = loop_->Chance(faults_.duplicate) ? 2 : 1;
  if (copies == 2) ++stats_.duplicated;
  auto shared_deliver = std::make_shared<std::function<void()>>(std::move(deliver));
  for (int i = 0; i < copies; ++i) {
    const absl::Duration delay = loop_->Chance(faults_.slow)
                                     ? loop_->UniformDuration(faults_.max_delay, faults_.slow_delay)
                                     : loop_->UniformDuration(faults_.min_delay, faults_.max_delay);
    ++in_flight_;
    loop_->Post(
        delay,
        [this, from, to, shared_deliver] {
          --in_flight_;
          if (!IsUp(to) || !Reachable(from, to)) {
            ++stats_.lost;
            return;
          }
          ++stats_.delivered;
          (*shared_deliver)();
        },
        nullptr, kind, to, key);
  }
}

void SimNetwork::Finish(uint64_t id, const std::function<void()>& finish) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // answered, failed or timed out already
  const bool alive = !it->second.guard || *it->second.guard;
  pending_.erase(it);
  if (alive) finish();
}

void SimNetwork::Fail(uint64_t id, absl::Status status) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  std::function<void(absl::Status)> fail = std::move(it->second.fail);
  const bool alive = !it->second.guard || *it->second.guard;
  pending_.erase(it);
  if (alive) fail(std::move(status));
}

SimPeerTransport::SimPeerTransport(SimNetwork* network, SimReplicaServer* server,
                                   const std::map<std::string, int>* endpoints, int self,
                                   TransportTimeouts timeouts)
    : network_(network), server_(server), endpoints_(endpoints), self_(self), timeouts_(timeouts) {}

SimNetwork::CallSpec SimPeerTransport::Spec(const Member& peer, const char* kind, std::string key,
                                            absl::Duration timeout) const {
  SimNetwork::CallSpec spec;
  spec.from = self_;
  auto it = endpoints_->find(peer.id);
  // An unknown member cannot happen with a static membership; route it to ourselves so the bug
  // shows up as a checker failure rather than a crash.
  spec.to = it == endpoints_->end() ? self_ : it->second;
  spec.kind = kind;
  spec.key = std::move(key);
  spec.timeout = timeout;
  return spec;
}

void SimPeerTransport::MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                                    std::function<void(absl::Status)> done) {
  SimNetwork::CallSpec spec =
      Spec(peer, "merge", records.empty() ? std::string() : records.front().key, timeouts_.merge);
  const int to = spec.to;
  const int from = spec.from;
  network_->Call<absl::Status>(
      std::move(spec),
      [server = server_, from, to,
       records = std::move(records)](std::function<void(absl::Status)> reply) {
        server->ServeMergeRecords(from, to, records, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::ReadRecord(const Member& peer, std::string key,
                                  std::function<void(absl::StatusOr<std::string>)> done) {
  Read(peer, std::move(key), /*for_quorum=*/false, RecordOnly(std::move(done)));
}

void SimPeerTransport::ReadRecordForQuorum(const Member& peer, std::string key,
                                           std::function<void(absl::StatusOr<QuorumRecord>)> done) {
  Read(peer, std::move(key), /*for_quorum=*/true, std::move(done));
}

void SimPeerTransport::Read(const Member& peer, std::string key, bool for_quorum,
                            std::function<void(absl::StatusOr<QuorumRecord>)> done) {
  SimNetwork::CallSpec spec = Spec(peer, "read", key, timeouts_.read);
  const int to = spec.to;
  network_->Call<absl::StatusOr<QuorumRecord>>(
      std::move(spec),
      [server = server_, to, key = std::move(key),
       for_quorum](std::function<void(absl::StatusOr<QuorumRecord>)> reply) {
        server->ServeReadRecord(to, key, for_quorum, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::ForwardWrite(const Member& peer, WriteCommand command, QuorumSpec w,
                                    std::function<void(absl::StatusOr<WriteReply>)> done) {
  SimNetwork::CallSpec spec = Spec(peer, "forward", command.key, timeouts_.forward);
  const int to = spec.to;
  network_->Call<absl::StatusOr<WriteReply>>(
      std::move(spec),
      [server = server_, to, command = std::move(command),
       w](std::function<void(absl::StatusOr<WriteReply>)> reply) {
        server->ServeForwardWrite(to, command, w, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::ListKeys(const Member& peer, std::string prefix, std::string page_token,
                                uint32_t limit,
                                std::function<void(absl::StatusOr<ListPage>)> done) {
  SimNetwork::CallSpec spec = Spec(peer, "list", prefix, timeouts_.read);
  const int to = spec.to;
  network_->Call<absl::StatusOr<ListPage>>(
      std::move(spec),
      [server = server_, to, prefix = std::move(prefix), page_token = std::move(page_token),
       limit](std::function<void(absl::StatusOr<ListPage>)> reply) {
        server->ServeListKeys(to, prefix, page_token, limit, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::MerkleNodes(
    const Member& peer, MerkleLevel level, std::vector<uint32_t> indexes,
    std::function<void(absl::StatusOr<std::vector<uint64_t>>)> done) {
  SimNetwork::CallSpec spec = Spec(peer, "merkle-nodes", "", timeouts_.read);
  const int to = spec.to;
  network_->Call<absl::StatusOr<std::vector<uint64_t>>>(
      std::move(spec),
      [server = server_, to, from = self_, level, indexes = std::move(indexes)](
          std::function<void(absl::StatusOr<std::vector<uint64_t>>)> reply) {
        server->ServeMerkleNodes(to, from, level, indexes, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::SegmentKeys(const Member& peer, std::vector<uint32_t> segments,
                                   size_t max_bytes,
                                   std::function<void(absl::StatusOr<SegmentKeyList>)> done) {
  SimNetwork::CallSpec spec = Spec(peer, "segment-keys", "", timeouts_.read);
  const int to = spec.to;
  network_->Call<absl::StatusOr<SegmentKeyList>>(
      std::move(spec),
      [server = server_, to, from = self_, segments = std::move(segments),
       max_bytes](std::function<void(absl::StatusOr<SegmentKeyList>)> reply) {
        server->ServeSegmentKeys(to, from, segments, max_bytes, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::PurgeRecord(const Member& peer, std::string key, std::string expected_record,
                                   uint64_t layout_version,
                                   std::function<void(absl::Status)> done) {
  SimNetwork::CallSpec spec = Spec(peer, "purge", key, timeouts_.merge);
  const int to = spec.to;
  network_->Call<absl::Status>(
      std::move(spec),
      [server = server_, to, key = std::move(key), expected = std::move(expected_record),
       layout_version](std::function<void(absl::Status)> reply) {
        server->ServePurgeRecord(to, key, expected, layout_version, std::move(reply));
      },
      std::move(done));
}

void SimPeerTransport::CompareDigests(
    const Member& peer, std::vector<KeyDigest> digests,
    std::function<void(absl::StatusOr<std::vector<std::string>>)> done) {
  SimNetwork::CallSpec spec =
      Spec(peer, "compare-digests", digests.empty() ? std::string() : digests.front().key,
           timeouts_.read);
  const int to = spec.to;
  network_->Call<absl::StatusOr<std::vector<std::string>>>(
      std::move(spec),
      [server = server_, to, digests = std::move(digests)](
          std::function<void(absl::StatusOr<std::vector<std::string>>)> reply) {
        server->ServeCompareDigests(to, digests, std::move(reply));
      },
      std::move(done));
}

}  // namespace kv::sim

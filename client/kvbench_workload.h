// The operation sources of kvbench: the YCSB-style workloads, the preload that writes every key
// once, and Ping for the transport ceiling. All issue asynchronous calls through one kv::Client.
//
// Keys are "kvbench/" followed by a zero-padded index in [0, keys). Writes carry the newest causal
// context this process has seen for the key (from the preload, earlier writes or reads), so a
// long run overwrites values instead of piling up siblings; concurrent writes to one key still
// create siblings, bounded by the number of concurrent writers, as they would for real clients.
//
// Randomness is per chain, seeded from --seed and the chain index, so a run's sequence of
// operations is reproducible (their interleaving is not).
#ifndef KV_CLIENT_KVBENCH_WORKLOAD_H_
#define KV_CLIENT_KVBENCH_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "client/kv_client.h"
#include "client/kvbench_loop.h"

namespace kv::bench {

struct WorkloadSpec {
  std::string name;          // a, b, c, put or delete
  double read_fraction = 0;  // the rest are updates (puts or deletes)
  bool preload_by_default = false;
  std::string description;
  double delete_fraction = 0;  // of the updates
};

// INVALID_ARGUMENT for anything but a, b, c, put or delete.
absl::StatusOr<WorkloadSpec> ParseWorkload(absl::string_view name);

enum class KeyDistribution { kUniform, kZipfian };
absl::StatusOr<KeyDistribution> ParseDistribution(absl::string_view name);

std::string BenchKey(uint64_t index);

// Draws key indexes in [0, keys). Zipfian follows YCSB's request distribution (constant 0.99,
// index 0 hottest), using the closed-form method of Gray et al., "Quickly generating
// billion-record synthetic databases" (SIGMOD 1994): O(keys) setup, O(1) memory and time per
// draw. Immutable after construction, so thread-safe.
class KeyChooser {
 public:
  KeyChooser(uint64_t keys, KeyDistribution distribution);
  uint64_t Next(std::mt19937_64& rng) const;

 private:
  uint64_t keys_;
  KeyDistribution distribution_;
  double theta_ = 0.99;
  double zeta_n_ = 0;
  double alpha_ = 0;
  double eta_ = 0;
  double half_pow_theta_ = 0;
};

// The newest causal context seen for each key. Thread-safe (striped locks).
class ContextCache {
 public:
  explicit ContextCache(uint64_t keys);
  std::string Get(uint64_t index) const;
  void Set(uint64_t index, std::string context);

 private:
  static constexpr size_t kStripes = 64;
  // Holds the contexts of the keys written so far only: memory follows the keys a run touches,
  // not --keys (up to 10^9).
  struct Stripe {
    mutable absl::Mutex mu;
    absl::flat_hash_map<uint64_t, std::string> contexts ABSL_GUARDED_BY(mu);
  };
  std::unique_ptr<Stripe[]> stripes_;  // key i in stripes_[i % kStripes]
};

struct WorkloadConfig {
  WorkloadSpec spec;
  uint64_t keys = 10000;
  size_t value_size = 100;
  KeyDistribution distribution = KeyDistribution::kZipfian;
  uint64_t seed = 1;
  int concurrency = 64;
};

// Reads (Get) and updates (Put or Delete with the cached context) in the workload's proportions.
class WorkloadSource : public OpSource {
 public:
  // `client` and `contexts` must outlive the calls this source starts.
  WorkloadSource(Client& client, const WorkloadConfig& config, ContextCache& contexts);
  bool Start(int chain, std::function<void(OpResult)> done) override;

 private:
  struct Chain {
    std::mt19937_64 rng;
    std::string value;
    uint64_t writes = 0;
  };
  Client& client_;
  const double read_fraction_;
  const double delete_fraction_;
  KeyChooser chooser_;
  const uint64_t keys_;
  ContextCache& contexts_;
  std::vector<Chain> chains_;
};

// Writes every key once, in index order, spread over the chains: reads the key, then writes it
// with the read's context, so that a key an earlier run (or process) wrote is replaced rather
// than given one more sibling. Stops issuing after the first failure (NOT_FOUND of the read
// aside), which first_error() then reports.
class PreloadSource : public OpSource {
 public:
  PreloadSource(Client& client, const WorkloadConfig& config, ContextCache& contexts);
  bool Start(int chain, std::function<void(OpResult)> done) override;
  absl::Status first_error() const;

 private:
  void Fail(const absl::Status& status);

  Client& client_;
  const uint64_t keys_;
  const std::string value_;
  ContextCache& contexts_;
  std::atomic<uint64_t> next_{0};
  std::atomic<bool> failed_{false};
  mutable absl::Mutex mu_;
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
};

// Admin.Ping round trips, chain i pinging endpoint i modulo the number of endpoints.
class PingSource : public OpSource {
 public:
  explicit PingSource(Client& client);
  bool Start(int chain, std::function<void(OpResult)> done) override;

 private:
  Client& client_;
  const size_t endpoints_;
};

}  // namespace kv::bench

#endif  // KV_CLIENT_KVBENCH_WORKLOAD_H_

#include "client/kvbench_workload.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kv::bench {
namespace {

std::string RandomValue(size_t size, std::mt19937_64& rng) {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string value(size, 'x');
  for (char& c : value) c = kAlphabet[pick(rng)];
  return value;
}

// Makes each write's value distinct by stamping a counter over its first bytes.
void StampCounter(std::string& value, uint64_t counter) {
  const std::string stamp = absl::StrCat(absl::Hex(counter, absl::kZeroPad16));
  std::copy_n(stamp.begin(), std::min(stamp.size(), value.size()), value.begin());
}

}  // namespace

absl::StatusOr<WorkloadSpec> ParseWorkload(absl::string_view name) {
  if (name == "a") return WorkloadSpec{"a", 0.5, true, "YCSB A: 50% reads, 50% updates"};
  if (name == "b") return WorkloadSpec{"b", 0.95, true, "YCSB B: 95% reads, 5% updates"};
  if (name == "c") return WorkloadSpec{"c", 1.0, true, "YCSB C: 100% reads"};
  if (name == "put") return WorkloadSpec{"put", 0.0, false, "put only: 100% updates"};
  if (name == "delete") {
    return WorkloadSpec{"delete", 0.0, false, "put and delete: 50% puts, 50% deletes", 0.5};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--workload=", name, " is not a workload; use a, b, c, put or delete"));
}

absl::StatusOr<KeyDistribution> ParseDistribution(absl::string_view name) {
  if (name == "uniform") return KeyDistribution::kUniform;
  if (name == "zipfian") return KeyDistribution::kZipfian;
  return absl::InvalidArgumentError(
      absl::StrCat("--distribution=", name, " is not a distribution; use uniform or zipfian"));
}

std::string BenchKey(uint64_t index) {
  return absl::StrCat("kvbench/", absl::Dec(index, absl::kZeroPad10));
}

KeyChooser::KeyChooser(uint64_t keys, KeyDistribution distribution)
    : keys_(std::max<uint64_t>(keys, 1)), distribution_(distribution) {
  if (distribution_ != KeyDistribution::kZipfian || keys_ < 3) {
    distribution_ = KeyDistribution::kUniform;
    return;
  }
  for (uint64_t i = 1; i <= keys_; ++i) zeta_n_ += 1.0 / std::pow(static_cast<double>(i), theta_);
  half_pow_theta_ = std::pow(0.5, theta_);
  const double zeta_2 = 1.0 + half_pow_theta_;
  alpha_ = 1.0 / (1.0 - theta_);
  eta_ =
      (1.0 - std::pow(2.0 / static_cast<double>(keys_), 1.0 - theta_)) / (1.0 - zeta_2 / zeta_n_);
}

uint64_t KeyChooser::Next(std::mt19937_64& rng) const {
  if (distribution_ == KeyDistribution::kUniform) {
    return std::uniform_int_distribution<uint64_t>(0, keys_ - 1)(rng);
  }
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const double uz = u * zeta_n_;
  if (uz < 1.0) return 0;
  if (uz < 1.0 + half_pow_theta_) return 1;
  const double rank = static_cast<double>(keys_) * std::pow(eta_ * u - eta_ + 1.0, alpha_);
  return std::min<uint64_t>(static_cast<uint64_t>(rank), keys_ - 1);
}

ContextCache::ContextCache(uint64_t /*keys*/) : stripes_(new Stripe[kStripes]) {}

std::string ContextCache::Get(uint64_t index) const {
  const Stripe& stripe = stripes_[index % kStripes];
  absl::MutexLock lock(&stripe.mu);
  auto it = stripe.contexts.find(index);
  return it == stripe.contexts.end() ? std::string() : it->second;
}

void ContextCache::Set(uint64_t index, std::string context) {
  Stripe& stripe = stripes_[index % kStripes];
  absl::MutexLock lock(&stripe.mu);
  stripe.contexts[index] = std::move(context);
}

WorkloadSource::WorkloadSource(Client& client, const WorkloadConfig& config, ContextCache& contexts)
    : client_(client),
      read_fraction_(config.spec.read_fraction),
      delete_fraction_(config.spec.delete_fraction),
      chooser_(config.keys, config.distribution),
      keys_(config.keys),
      contexts_(contexts) {
  chains_.resize(config.concurrency);
  for (int i = 0; i < config.concurrency; ++i) {
    // Distinct, reproducible streams per chain.
    std::seed_seq seq{config.seed, static_cast<uint64_t>(i)};
    chains_[i].rng.seed(seq);
    chains_[i].value = RandomValue(config.value_size, chains_[i].rng);
  }
}

bool WorkloadSource::Start(int chain, std::function<void(OpResult)> done) {
  Chain& state = chains_[chain];
  const uint64_t index = chooser_.Next(state.rng);
  const bool read = std::uniform_real_distribution<double>(0.0, 1.0)(state.rng) < read_fraction_;
  ContextCache* contexts = &contexts_;
  if (read) {
    client_.GetAsync(BenchKey(index), ReadOptions{},
                     [contexts, index, done = std::move(done)](absl::StatusOr<GetResult> result) {
                       if (result.ok()) contexts->Set(index, std::move(result->context));
                       done({OpKind::kRead, result.status().code()});
                     });
    return true;
  }
  // Each request slot writes only the keys congruent to it modulo the slot count, so two
  // outstanding writes never race on one key: concurrent blind writes to a key are siblings by
  // design (no write is lost), and piling them up would measure sibling growth, not throughput.
  // The chosen rank picks the chain's rank-th key, so that each chain's writes keep the key
  // distribution's shape (mapping ranks to the nearest owned key would send the 64 hottest ranks,
  // half of a zipfian's writes, to one key per chain).
  const uint64_t slots = chains_.size();
  const uint64_t per_slot = std::max<uint64_t>(keys_ / slots, 1);
  uint64_t owned = (index % per_slot) * slots + static_cast<uint64_t>(chain);
  if (owned >= keys_) owned = static_cast<uint64_t>(chain) % keys_;
  const uint64_t write_index = owned;
  WriteOptions options;
  options.context = contexts_.Get(write_index);
  // Drawn only by workloads with deletes, so the others' sequences stay as they were.
  if (delete_fraction_ > 0 &&
      std::uniform_real_distribution<double>(0.0, 1.0)(state.rng) < delete_fraction_) {
    // With the key's context: the tombstone replaces the value, and the next Put the tombstone.
    client_.DeleteAsync(
        BenchKey(write_index), std::move(options),
        [contexts, write_index, done = std::move(done)](absl::StatusOr<WriteResult> result) {
          if (result.ok()) contexts->Set(write_index, std::move(result->context));
          done({OpKind::kDelete, result.status().code()});
        });
    return true;
  }
  StampCounter(state.value, ++state.writes);
  client_.PutAsync(
      BenchKey(write_index), state.value, std::move(options),
      [contexts, write_index, done = std::move(done)](absl::StatusOr<WriteResult> result) {
        if (result.ok()) contexts->Set(write_index, std::move(result->context));
        done({OpKind::kWrite, result.status().code()});
      });
  return true;
}

PreloadSource::PreloadSource(Client& client, const WorkloadConfig& config, ContextCache& contexts)
    : client_(client),
      keys_(config.keys),
      value_([&config] {
        std::mt19937_64 rng(config.seed);
        return RandomValue(config.value_size, rng);
      }()),
      contexts_(contexts) {}

bool PreloadSource::Start(int chain, std::function<void(OpResult)> done) {
  if (failed_.load(std::memory_order_relaxed)) return false;
  const uint64_t index = next_.fetch_add(1, std::memory_order_relaxed);
  if (index >= keys_) return false;
  // Read first and write with the read's context: a key an earlier run wrote is replaced, not
  // given one more sibling (a blind write is concurrent with every version it did not see).
  client_.GetAsync(BenchKey(index), ReadOptions{},
                   [this, index, done = std::move(done)](absl::StatusOr<GetResult> read) mutable {
                     if (!read.ok() && !absl::IsNotFound(read.status())) {
                       Fail(read.status());
                       done({OpKind::kRead, read.status().code()});
                       return;
                     }
                     WriteOptions options;
                     options.context = read.ok() ? std::move(read->context) : contexts_.Get(index);
                     client_.PutAsync(
                         BenchKey(index), value_, std::move(options),
                         [this, index, done = std::move(done)](absl::StatusOr<WriteResult> result) {
                           if (result.ok()) {
                             contexts_.Set(index, std::move(result->context));
                           } else {
                             Fail(result.status());
                           }
                           done({OpKind::kWrite, result.status().code()});
                         });
                   });
  return true;
}

void PreloadSource::Fail(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (first_error_.ok()) first_error_ = status;
  failed_.store(true, std::memory_order_relaxed);
}

absl::Status PreloadSource::first_error() const {
  absl::MutexLock lock(&mu_);
  return first_error_;
}

PingSource::PingSource(Client& client)
    : client_(client), endpoints_(client.options().endpoints.size()) {}

bool PingSource::Start(int chain, std::function<void(OpResult)> done) {
  client_.PingAsync(static_cast<size_t>(chain) % endpoints_,
                    [done = std::move(done)](absl::Status status) {
                      done({OpKind::kPing, status.code()});
                    });
  return true;
}

}  // namespace kv::bench

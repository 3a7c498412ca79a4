#include "client/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kv {
namespace {

// Index of the highest set bit of a non-zero value.
int HighestBit(uint64_t value) { return 63 - __builtin_clzll(value); }

// Values below kSubBucketCount get one bucket each; each of the remaining exponents
// (kSubBucketBits .. 63) gets kSubBucketCount buckets.
constexpr size_t kBucketCount =
    LatencyHistogram::kSubBucketCount +
    (64 - LatencyHistogram::kSubBucketBits) * LatencyHistogram::kSubBucketCount;

}  // namespace

LatencyHistogram::LatencyHistogram() : buckets_(kBucketCount, 0) {}

size_t LatencyHistogram::BucketIndex(uint64_t value) {
  if (value < kSubBucketCount) return static_cast<size_t>(value);
  const int exponent = HighestBit(value);
  const int shift = exponent - kSubBucketBits;
  // (value >> shift) lies in [kSubBucketCount, 2 * kSubBucketCount).
  const uint64_t sub = (value >> shift) - kSubBucketCount;
  return static_cast<size_t>(kSubBucketCount + static_cast<uint64_t>(shift) * kSubBucketCount +
                             sub);
}

uint64_t LatencyHistogram::BucketLowest(size_t index) {
  if (index < kSubBucketCount) return index;
  const uint64_t shift = (index - kSubBucketCount) / kSubBucketCount;
  const uint64_t sub = (index - kSubBucketCount) % kSubBucketCount;
  return (kSubBucketCount + sub) << shift;
}

uint64_t LatencyHistogram::BucketHighest(size_t index) {
  if (index < kSubBucketCount) return index;
  const uint64_t shift = (index - kSubBucketCount) / kSubBucketCount;
  // Written so that the last bucket ends at UINT64_MAX without overflowing.
  return BucketLowest(index) + ((uint64_t{1} << shift) - 1);
}

void LatencyHistogram::Record(uint64_t value) {
  ++buckets_[BucketIndex(value)];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += static_cast<long double>(value);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

void LatencyHistogram::Clear() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  min_ = 0;
  max_ = 0;
  sum_ = 0;
}

double LatencyHistogram::Mean() const {
  if (count_ == 0) return 0;
  return static_cast<double>(sum_ / static_cast<long double>(count_));
}

double LatencyHistogram::ValueAtQuantile(double q) const {
  if (count_ == 0) return 0;
  if (!(q > 0)) return static_cast<double>(min_);  // also catches NaN
  if (q >= 1) return static_cast<double>(max_);
  // Rank (1-based) of the sample that answers the query.
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      const double low = static_cast<double>(std::max(BucketLowest(i), min_));
      const double high = static_cast<double>(std::min(BucketHighest(i), max_));
      return low + (high - low) / 2;
    }
  }
  return static_cast<double>(max_);  // unreachable: the buckets hold count_ samples
}

}  // namespace kv

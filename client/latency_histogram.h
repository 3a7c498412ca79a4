// LatencyHistogram: a fixed-size, log-linear histogram of non-negative integer samples (kvbench
// records latencies in nanoseconds) that answers quantile queries with a bounded relative error.
//
// Buckets follow the HDR histogram idea: values below 2^kSubBucketBits are counted exactly; above
// that, every power-of-two range [2^e, 2^(e+1)) is split into 2^kSubBucketBits equal buckets, so
// a bucket is never wider than 1/128 of its lower bound. Quantiles are reported as the midpoint of
// the bucket holding the sample of that rank (clamped to the observed min and max), so the
// relative error of any reported quantile is below 0.4%. Memory is fixed (~59 KiB) whatever the
// number of samples or their range (the full uint64_t range is covered).
//
// Not thread-safe: callers that record from several threads hold their own lock, or keep one
// histogram per thread and Merge() them.
#ifndef KV_CLIENT_LATENCY_HISTOGRAM_H_
#define KV_CLIENT_LATENCY_HISTOGRAM_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kv {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kSubBucketCount = uint64_t{1} << kSubBucketBits;

  LatencyHistogram();

  void Record(uint64_t value);
  // Adds every sample of `other` to this histogram.
  void Merge(const LatencyHistogram& other);
  void Clear();

  uint64_t count() const { return count_; }
  // Smallest / largest recorded value, exact; 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  // Exact mean of the recorded values; 0 when empty.
  double Mean() const;

  // The value at quantile `q` in [0, 1] (clamped): the smallest recorded value v such that at
  // least q * count() samples are <= v, within the relative error above. q = 0 gives min(),
  // q = 1 gives max(). Returns 0 when empty.
  double ValueAtQuantile(double q) const;

  // Bucket layout, exposed for tests: the index of the bucket holding `value`, and the smallest
  // and largest value that bucket holds.
  static size_t BucketIndex(uint64_t value);
  static uint64_t BucketLowest(size_t index);
  static uint64_t BucketHighest(size_t index);

 private:
  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  long double sum_ = 0;
};

}  // namespace kv

#endif  // KV_CLIENT_LATENCY_HISTOGRAM_H_

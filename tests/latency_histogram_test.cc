// Unit tests of kv::LatencyHistogram: exact small values, bounded relative error against exact
// percentiles of random samples, the bucket layout at its edges, and merging.
#include "client/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kv {
namespace {

// The exact answer ValueAtQuantile promises: the smallest sample with at least q * n samples at
// or below it.
uint64_t ExactQuantile(std::vector<uint64_t> samples, double q) {
  std::sort(samples.begin(), samples.end());
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size())));
  rank = std::clamp<size_t>(rank, 1, samples.size());
  return samples[rank - 1];
}

TEST(LatencyHistogramTest, EmptyHistogramAnswersZero) {
  LatencyHistogram histogram;
  EXPECT_EQ(histogram.count(), 0u);
  EXPECT_EQ(histogram.ValueAtQuantile(0.5), 0);
  EXPECT_EQ(histogram.Mean(), 0);
  EXPECT_EQ(histogram.min(), 0u);
  EXPECT_EQ(histogram.max(), 0u);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram histogram;
  for (uint64_t v = 1; v <= 100; ++v) histogram.Record(v);
  EXPECT_EQ(histogram.count(), 100u);
  EXPECT_EQ(histogram.ValueAtQuantile(0.5), 50);
  EXPECT_EQ(histogram.ValueAtQuantile(0.99), 99);
  EXPECT_EQ(histogram.ValueAtQuantile(0.0), 1);
  EXPECT_EQ(histogram.ValueAtQuantile(1.0), 100);
  EXPECT_DOUBLE_EQ(histogram.Mean(), 50.5);
}

TEST(LatencyHistogramTest, SingleValueIsReportedExactlyAtEveryQuantile) {
  LatencyHistogram histogram;
  histogram.Record(123456789);
  for (double q : {0.0, 0.5, 0.99, 0.999, 1.0}) {
    EXPECT_EQ(histogram.ValueAtQuantile(q), 123456789) << q;
  }
}

TEST(LatencyHistogramTest, QuantilesOfRandomSamplesAreWithinOnePercent) {
  std::mt19937_64 rng(42);
  // Log-normal latencies spanning microseconds to seconds, in nanoseconds.
  std::lognormal_distribution<double> latency(std::log(200'000.0), 1.5);
  std::vector<uint64_t> samples;
  LatencyHistogram histogram;
  for (int i = 0; i < 200'000; ++i) {
    const auto value = static_cast<uint64_t>(latency(rng));
    samples.push_back(value);
    histogram.Record(value);
  }
  for (double q : {0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999}) {
    const double exact = static_cast<double>(ExactQuantile(samples, q));
    EXPECT_NEAR(histogram.ValueAtQuantile(q), exact, exact * 0.01) << "q=" << q;
  }
  EXPECT_EQ(histogram.min(), *std::min_element(samples.begin(), samples.end()));
  EXPECT_EQ(histogram.max(), *std::max_element(samples.begin(), samples.end()));
}

TEST(LatencyHistogramTest, QuantilesAreMonotonic) {
  std::mt19937_64 rng(7);
  std::exponential_distribution<double> latency(1e-5);
  LatencyHistogram histogram;
  for (int i = 0; i < 50'000; ++i) histogram.Record(static_cast<uint64_t>(latency(rng)));
  double previous = 0;
  for (double q = 0; q <= 1.0; q += 0.001) {
    const double value = histogram.ValueAtQuantile(q);
    EXPECT_GE(value, previous) << "q=" << q;
    previous = value;
  }
}

TEST(LatencyHistogramTest, BucketsCoverTheWholeRangeWithBoundedWidth) {
  const uint64_t probes[] = {0,          1,
                             127,        128,
                             129,        255,
                             256,        1000,
                             1 << 20,    123456789,
                             1ull << 40, (1ull << 63) - 1,
                             1ull << 63, std::numeric_limits<uint64_t>::max()};
  for (uint64_t value : probes) {
    const size_t index = LatencyHistogram::BucketIndex(value);
    const uint64_t low = LatencyHistogram::BucketLowest(index);
    const uint64_t high = LatencyHistogram::BucketHighest(index);
    EXPECT_LE(low, value) << value;
    EXPECT_GE(high, value) << value;
    // Width relative to the lower bound stays below 1/128 (relative error < 1%).
    EXPECT_LE(static_cast<double>(high - low), static_cast<double>(low) / 128.0) << value;
  }
  // Adjacent buckets tile the range without gaps.
  for (size_t index = 0; index + 1 < 2000; ++index) {
    EXPECT_EQ(LatencyHistogram::BucketHighest(index) + 1, LatencyHistogram::BucketLowest(index + 1))
        << index;
  }
  EXPECT_EQ(LatencyHistogram::BucketHighest(
                LatencyHistogram::BucketIndex(std::numeric_limits<uint64_t>::max())),
            std::numeric_limits<uint64_t>::max());
}

TEST(LatencyHistogramTest, ExtremeValuesAreRecorded) {
  LatencyHistogram histogram;
  histogram.Record(0);
  histogram.Record(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(histogram.count(), 2u);
  EXPECT_EQ(histogram.ValueAtQuantile(0.5), 0);
  EXPECT_EQ(histogram.ValueAtQuantile(1.0),
            static_cast<double>(std::numeric_limits<uint64_t>::max()));
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<uint64_t> latency(50, 5'000'000);
  LatencyHistogram a, b, all;
  for (int i = 0; i < 10'000; ++i) {
    const uint64_t value = latency(rng);
    (i % 3 == 0 ? a : b).Record(value);
    all.Record(value);
  }
  LatencyHistogram merged;
  merged.Merge(a);
  merged.Merge(b);
  merged.Merge(LatencyHistogram());  // merging an empty histogram changes nothing
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.min(), all.min());
  EXPECT_EQ(merged.max(), all.max());
  EXPECT_DOUBLE_EQ(merged.Mean(), all.Mean());
  for (double q : {0.5, 0.99, 0.999}) {
    EXPECT_EQ(merged.ValueAtQuantile(q), all.ValueAtQuantile(q)) << q;
  }
  merged.Clear();
  EXPECT_EQ(merged.count(), 0u);
  EXPECT_EQ(merged.ValueAtQuantile(0.5), 0);
}

}  // namespace
}  // namespace kv

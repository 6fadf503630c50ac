/*
 * tools/bench/hist.h — a log-bucketed latency histogram in the style of
 * HdrHistogram.
 *
 * Values (nanoseconds in practice) below 128 are counted exactly; above,
 * each power of two is split into 64 equal sub-buckets, so every recorded
 * value is known to within 1/64 (1.6 %) of itself, over the whole 64-bit
 * range, in a fixed 3,776-bucket array (30 KiB). Recording is an index
 * computation and an increment: no allocation, no search. Each load
 * generator thread owns one histogram; they are merged (bucket-wise sums)
 * at the end, which is exact. The trade-off against a sorted sample array:
 * bounded memory and O(1) recording for 1.6 % precision; min and max are
 * kept exactly besides.
 */
#ifndef IOTHUBD_BENCH_HIST_H
#define IOTHUBD_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_LINEAR (2u * HIST_SUB)
#define HIST_BUCKETS (HIST_LINEAR + (64u - HIST_SUB_BITS - 1u) * HIST_SUB)

typedef struct bench_hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    uint64_t sum; /* for the mean; 2^64 ns is 584 years */
    uint64_t buckets[HIST_BUCKETS];
} bench_hist;

void hist_init(bench_hist *h);
void hist_record(bench_hist *h, uint64_t value);
/* Adds every count of src into dst. */
void hist_merge(bench_hist *dst, const bench_hist *src);
/* The value at percentile p (0 < p <= 100): the smallest bucket value with
 * at least ceil(p% of count) values at or below it, clamped to [min, max].
 * 0 for an empty histogram. */
uint64_t hist_percentile(const bench_hist *h, double p);
double hist_mean(const bench_hist *h);

/* Exposed for tests: bucket index of a value, and the value a bucket
 * stands for (its midpoint). */
unsigned hist_bucket_of(uint64_t value);
uint64_t hist_bucket_value(unsigned index);

#endif

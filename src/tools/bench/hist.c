/*
 * tools/bench/hist.c — see hist.h. The layout: buckets [0, 128) hold the
 * values 0..127 exactly; from 128 on, a value with its highest set bit at
 * position m (m >= 7) is shifted right by m - 6 so that its top 7 bits, a
 * number in [64, 128), select one of 64 sub-buckets of the group m - 6.
 */
#include "tools/bench/hist.h"

#include <string.h>

void hist_init(bench_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

unsigned hist_bucket_of(uint64_t value)
{
    if (value < HIST_LINEAR)
        return (unsigned)value;
    unsigned msb = 63u - (unsigned)__builtin_clzll(value);
    unsigned shift = msb - HIST_SUB_BITS;
    unsigned mantissa = (unsigned)(value >> shift); /* in [64, 128) */
    return HIST_LINEAR + (shift - 1u) * HIST_SUB + (mantissa - HIST_SUB);
}

uint64_t hist_bucket_value(unsigned index)
{
    if (index < HIST_LINEAR)
        return index;
    unsigned k = index - HIST_LINEAR;
    unsigned shift = k / HIST_SUB + 1u;
    uint64_t mantissa = HIST_SUB + k % HIST_SUB;
    uint64_t low = mantissa << shift;
    uint64_t width = (uint64_t)1 << shift;
    return low + (width - 1u) / 2u;
}

void hist_record(bench_hist *h, uint64_t value)
{
    h->buckets[hist_bucket_of(value)]++;
    h->count++;
    h->sum += value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void hist_merge(bench_hist *dst, const bench_hist *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_percentile(const bench_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    double exact_rank = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)exact_rank;
    if ((double)rank < exact_rank)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_value(i);
            if (v < h->min)
                return h->min;
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double hist_mean(const bench_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

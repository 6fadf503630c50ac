/* Unit tests for the load generator's latency histogram
 * (src/tools/bench/hist.c, compiled into this test): exact small values,
 * the 1/64 precision bound over the whole range, percentiles of known
 * distributions, and that merging per-thread histograms equals recording
 * everything in one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../src/tools/bench/hist.c"

static bench_hist hist_a, hist_b, hist_all;

static void assert_within(uint64_t got, uint64_t want, double rel)
{
    double diff = (double)got - (double)want;
    if (diff < 0)
        diff = -diff;
    if (diff > rel * (double)want)
        fail_msg("got %llu, want %llu within %.2f%%", (unsigned long long)got,
                 (unsigned long long)want, rel * 100);
}

static void test_empty(void **state)
{
    (void)state;
    hist_init(&hist_a);
    assert_int_equal(hist_percentile(&hist_a, 50), 0);
    assert_int_equal(hist_percentile(&hist_a, 100), 0);
    assert_true(hist_mean(&hist_a) == 0.0);
}

static void test_small_values_exact(void **state)
{
    (void)state;
    hist_init(&hist_a);
    for (uint64_t v = 0; v < 100; v++)
        hist_record(&hist_a, v);
    assert_int_equal(hist_percentile(&hist_a, 50), 49);  /* rank 50 */
    assert_int_equal(hist_percentile(&hist_a, 90), 89);
    assert_int_equal(hist_percentile(&hist_a, 1), 0);
    assert_int_equal(hist_percentile(&hist_a, 100), 99);
    assert_int_equal(hist_a.min, 0);
    assert_int_equal(hist_a.count, 100);
}

static void test_bucket_precision(void **state)
{
    (void)state;
    for (uint64_t v = 1; v < (UINT64_MAX >> 1); v = v * 3 + 7) {
        unsigned b = hist_bucket_of(v);
        assert_true(b < HIST_BUCKETS);
        assert_within(hist_bucket_value(b), v, 1.0 / 64);
    }
    assert_true(hist_bucket_of(UINT64_MAX) < HIST_BUCKETS);
    /* buckets are ordered like the values */
    assert_true(hist_bucket_of(127) < hist_bucket_of(128));
    assert_true(hist_bucket_of(1000000) < hist_bucket_of(1100000));
}

static void test_uniform_distribution(void **state)
{
    (void)state;
    hist_init(&hist_a);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&hist_a, v);
    assert_within(hist_percentile(&hist_a, 50), 50000, 1.0 / 64);
    assert_within(hist_percentile(&hist_a, 90), 90000, 1.0 / 64);
    assert_within(hist_percentile(&hist_a, 99), 99000, 1.0 / 64);
    assert_within(hist_percentile(&hist_a, 99.9), 99900, 1.0 / 64);
    assert_int_equal(hist_percentile(&hist_a, 100), 100000);
    assert_int_equal(hist_a.max, 100000);
    assert_within((uint64_t)hist_mean(&hist_a), 50000, 0.001);
}

static void test_long_tail(void **state)
{
    (void)state;
    /* 990 fast values (1 ms) and 10 slow ones (1 s): p99 is fast, p99.9 slow */
    hist_init(&hist_a);
    for (int i = 0; i < 990; i++)
        hist_record(&hist_a, 1000000);
    for (int i = 0; i < 10; i++)
        hist_record(&hist_a, 1000000000);
    assert_within(hist_percentile(&hist_a, 50), 1000000, 1.0 / 64);
    assert_within(hist_percentile(&hist_a, 99), 1000000, 1.0 / 64);
    assert_within(hist_percentile(&hist_a, 99.9), 1000000000, 1.0 / 64);
    /* clamped to the exact extremes */
    assert_true(hist_percentile(&hist_a, 0.001) >= hist_a.min);
    assert_int_equal(hist_percentile(&hist_a, 100), 1000000000);
}

static void test_merge_equals_single(void **state)
{
    (void)state;
    hist_init(&hist_a);
    hist_init(&hist_b);
    hist_init(&hist_all);
    for (uint64_t v = 5; v < 2000000; v = v * 11 / 10 + 1) {
        hist_record((v & 1) ? &hist_a : &hist_b, v);
        hist_record(&hist_all, v);
    }
    hist_merge(&hist_a, &hist_b);
    assert_int_equal(hist_a.count, hist_all.count);
    assert_int_equal(hist_a.min, hist_all.min);
    assert_int_equal(hist_a.max, hist_all.max);
    assert_int_equal(hist_a.sum, hist_all.sum);
    assert_memory_equal(hist_a.buckets, hist_all.buckets, sizeof hist_all.buckets);
    assert_int_equal(hist_percentile(&hist_a, 99), hist_percentile(&hist_all, 99));
    /* merging an empty histogram changes nothing */
    hist_init(&hist_b);
    hist_merge(&hist_a, &hist_b);
    assert_int_equal(hist_a.count, hist_all.count);
    assert_int_equal(hist_a.min, hist_all.min);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_bucket_precision),
        cmocka_unit_test(test_uniform_distribution),
        cmocka_unit_test(test_long_tail),
        cmocka_unit_test(test_merge_equals_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

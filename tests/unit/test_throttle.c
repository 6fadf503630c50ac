/*
 * test_throttle.c — hub/throttle.c on an injected clock: a full bucket
 * admits one second's worth and no more; refill is continuous (one token
 * per 1/rate s, fractional time kept); a long pause never stores more
 * than a second's worth; 0 = unlimited; kinds are independent; the daily
 * quota counts telemetry and C2D only, is said before the rate, is not
 * used by throttled messages, resets at 00:00 UTC and does not reset when
 * the wall clock goes back; NULL admits everything; concurrent callers
 * never get more than the bucket holds.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "hub/throttle.h"
#include "util/log.h"

#define NS_PER_S 1000000000ull
#define MS_PER_DAY 86400000ull

typedef struct fake_clock {
    uint64_t mono_ns;
    uint64_t wall_ms;
} fake_clock;

static uint64_t fake_mono(void *ctx)
{
    return ((fake_clock *)ctx)->mono_ns;
}

static uint64_t fake_wall(void *ctx)
{
    return ((fake_clock *)ctx)->wall_ms;
}

/* A throttle on `clock` with `rate` for every kind and `quota`. */
static hub_throttle *make(fake_clock *clock, uint32_t rate, uint32_t quota)
{
    hub_throttle_config cfg = {.daily_message_quota = quota, .mono_ns = fake_mono,
                               .wall_ms = fake_wall, .clock_ctx = clock};
    for (int k = 0; k < HUB_THROTTLE_KIND_COUNT; k++)
        cfg.per_second[k] = rate;
    hub_throttle *t = hub_throttle_new(&cfg);
    assert_non_null(t);
    return t;
}

/* How many of n back-to-back operations of `kind` are admitted. */
static int admitted(hub_throttle *t, hub_throttle_kind kind, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += hub_throttle_admit(t, kind) == HUB_OK;
    return ok;
}

static void test_full_bucket_admits_one_second(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 5 * NS_PER_S, .wall_ms = 1000};
    hub_throttle *t = make(&clock, 10, 0);
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 10), 10);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_THROTTLED);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_THROTTLED);
    hub_throttle_free(t);
}

static void test_refill_is_continuous(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0};
    hub_throttle *t = make(&clock, 4, 0); /* one token per 250 ms */
    assert_int_equal(admitted(t, HUB_THROTTLE_CONNECT, 4), 4);
    clock.mono_ns += 249 * 1000000ull;
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_CONNECT), HUB_THROTTLED);
    clock.mono_ns += 1000000ull; /* 250 ms: exactly one token */
    assert_int_equal(admitted(t, HUB_THROTTLE_CONNECT, 3), 1);
    clock.mono_ns += 600 * 1000000ull; /* 600 ms: two tokens, 100 ms kept */
    assert_int_equal(admitted(t, HUB_THROTTLE_CONNECT, 3), 2);
    clock.mono_ns += 150 * 1000000ull; /* 100 + 150 = 250 ms: one more */
    assert_int_equal(admitted(t, HUB_THROTTLE_CONNECT, 3), 1);
    hub_throttle_free(t);
}

static void test_pause_stores_at_most_one_second(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = NS_PER_S};
    hub_throttle *t = make(&clock, 3, 0);
    assert_int_equal(admitted(t, HUB_THROTTLE_TWIN_READ, 5), 3);
    clock.mono_ns += 3600 * NS_PER_S;
    assert_int_equal(admitted(t, HUB_THROTTLE_TWIN_READ, 10), 3);
    hub_throttle_free(t);
}

static void test_steady_rate_over_ten_seconds(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0};
    hub_throttle *t = make(&clock, 7, 0);
    int ok = 0;
    for (int ms = 0; ms < 10000; ms++) { /* asks 1000/s for 10 s */
        ok += hub_throttle_admit(t, HUB_THROTTLE_METHOD) == HUB_OK;
        clock.mono_ns += 1000000ull;
    }
    /* the first second's burst of 7, then 7/s for the rest */
    assert_in_range(ok, 7 + 7 * 10 - 1, 7 + 7 * 10);
    hub_throttle_free(t);
}

static void test_zero_is_unlimited_and_kinds_are_independent(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0};
    hub_throttle_config cfg = {.mono_ns = fake_mono, .wall_ms = fake_wall, .clock_ctx = &clock};
    cfg.per_second[HUB_THROTTLE_TWIN_UPDATE] = 2;
    hub_throttle *t = hub_throttle_new(&cfg);
    assert_non_null(t);
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 100000), 100000);
    assert_int_equal(admitted(t, HUB_THROTTLE_TWIN_UPDATE, 5), 2);
    assert_int_equal(admitted(t, HUB_THROTTLE_C2D, 1000), 1000);
    assert_int_equal(admitted(t, HUB_THROTTLE_TWIN_UPDATE, 5), 0);
    hub_throttle_free(t);
}

static void test_null_throttle_admits_everything(void **state)
{
    (void)state;
    for (int k = 0; k < HUB_THROTTLE_KIND_COUNT; k++)
        assert_int_equal(hub_throttle_admit(NULL, (hub_throttle_kind)k), HUB_OK);
    char text[128];
    hub_throttle_describe(NULL, HUB_THROTTLE_C2D, HUB_THROTTLED, text, sizeof text);
    assert_string_equal(text, "cloud-to-device sends over the hub's rate");
}

static void test_describe(void **state)
{
    (void)state;
    fake_clock clock = {0};
    hub_throttle *t = make(&clock, 5, 9);
    char text[128];
    hub_throttle_describe(t, HUB_THROTTLE_TELEMETRY, HUB_THROTTLED, text, sizeof text);
    assert_string_equal(text, "telemetry over the hub's rate of 5/s");
    hub_throttle_describe(t, HUB_THROTTLE_TELEMETRY, HUB_QUOTA_EXCEEDED, text, sizeof text);
    assert_string_equal(text, "telemetry: the hub's daily message quota (9) is used up");
    assert_string_equal(hub_throttle_kind_name(HUB_THROTTLE_TWIN_READ), "twin reads");
    hub_throttle_free(t);
}

static void test_quota_counts_messages_only(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0, .wall_ms = 20000 * MS_PER_DAY + 5};
    hub_throttle *t = make(&clock, 0, 3);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_OK);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_C2D), HUB_OK);
    assert_int_equal(admitted(t, HUB_THROTTLE_TWIN_READ, 50), 50); /* not messages */
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_OK);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_QUOTA_EXCEEDED);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_C2D), HUB_QUOTA_EXCEEDED);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_CONNECT), HUB_OK);
    hub_throttle_free(t);
}

static void test_quota_resets_at_utc_midnight_not_backwards(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0, .wall_ms = 20000 * MS_PER_DAY + MS_PER_DAY - 1};
    hub_throttle *t = make(&clock, 0, 2);
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 5), 2);
    clock.wall_ms += 1; /* 00:00:00.000 UTC */
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 1), 1);
    clock.wall_ms -= 10; /* the clock steps back into yesterday */
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 5), 1); /* still today's count */
    clock.wall_ms += 2 * MS_PER_DAY;
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 5), 2);
    hub_throttle_free(t);
}

static void test_quota_refund_gives_one_unit_back_the_same_day(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0, .wall_ms = 20000 * MS_PER_DAY + 5};
    hub_throttle *t = make(&clock, 0, 2);
    assert_int_equal(admitted(t, HUB_THROTTLE_C2D, 3), 2);
    hub_throttle_refund(t, HUB_THROTTLE_C2D); /* the send was not accepted after all */
    assert_int_equal(admitted(t, HUB_THROTTLE_C2D, 3), 1);
    hub_throttle_refund(t, HUB_THROTTLE_TWIN_READ); /* not a message: nothing */
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 1), 0);
    clock.wall_ms += MS_PER_DAY; /* a new day: yesterday's unit is not today's */
    assert_int_equal(admitted(t, HUB_THROTTLE_C2D, 1), 1);
    clock.wall_ms += MS_PER_DAY;
    hub_throttle_refund(t, HUB_THROTTLE_C2D);
    assert_int_equal(admitted(t, HUB_THROTTLE_C2D, 3), 2);
    hub_throttle_refund(NULL, HUB_THROTTLE_C2D);
    hub_throttle_free(t);
    /* without a quota: a no-op */
    t = make(&clock, 0, 0);
    hub_throttle_refund(t, HUB_THROTTLE_C2D);
    assert_int_equal(admitted(t, HUB_THROTTLE_C2D, 5), 5);
    hub_throttle_free(t);
}

static void test_quota_before_rate_and_throttled_not_counted(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 0, .wall_ms = 1};
    hub_throttle *t = make(&clock, 2, 3);
    assert_int_equal(admitted(t, HUB_THROTTLE_TELEMETRY, 2), 2);
    /* throttled: no quota used */
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_THROTTLED);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_THROTTLED);
    clock.mono_ns += NS_PER_S;
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_OK); /* third */
    /* quota used up while the bucket still has a token: 0502, not 0501 */
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_QUOTA_EXCEEDED);
    assert_int_equal(hub_throttle_admit(t, HUB_THROTTLE_TELEMETRY), HUB_QUOTA_EXCEEDED);
    hub_throttle_free(t);
}

/* ---- concurrency ---------------------------------------------------------- */

#define THREADS 8
#define TRIES_PER_THREAD 20000

typedef struct race {
    hub_throttle *t;
    hub_throttle_kind kind;
    atomic_int admitted;
    atomic_int quota_refused;
} race;

static void *race_thread(void *arg)
{
    race *r = arg;
    for (int i = 0; i < TRIES_PER_THREAD; i++) {
        hub_status st = hub_throttle_admit(r->t, r->kind);
        if (st == HUB_OK)
            atomic_fetch_add(&r->admitted, 1);
        else if (st == HUB_QUOTA_EXCEEDED)
            atomic_fetch_add(&r->quota_refused, 1);
    }
    return NULL;
}

static void run_race(race *r)
{
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, r), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
}

static void test_concurrent_callers_share_one_bucket(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 42}; /* frozen: no refill during the race */
    hub_throttle *t = make(&clock, 1000, 0);
    race r = {.t = t, .kind = HUB_THROTTLE_TELEMETRY};
    run_race(&r);
    assert_int_equal(atomic_load(&r.admitted), 1000);
    hub_throttle_free(t);
}

static void test_concurrent_callers_share_one_quota(void **state)
{
    (void)state;
    fake_clock clock = {.mono_ns = 42, .wall_ms = 77};
    hub_throttle *t = make(&clock, 0, 5000);
    race r = {.t = t, .kind = HUB_THROTTLE_C2D};
    run_race(&r);
    assert_int_equal(atomic_load(&r.admitted), 5000);
    assert_int_equal(atomic_load(&r.quota_refused), THREADS * TRIES_PER_THREAD - 5000);
    hub_throttle_free(t);
}

int main(void)
{
    log_set_level(LOG_ERROR); /* refusals are logged at warn */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_bucket_admits_one_second),
        cmocka_unit_test(test_refill_is_continuous),
        cmocka_unit_test(test_pause_stores_at_most_one_second),
        cmocka_unit_test(test_steady_rate_over_ten_seconds),
        cmocka_unit_test(test_zero_is_unlimited_and_kinds_are_independent),
        cmocka_unit_test(test_null_throttle_admits_everything),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_quota_counts_messages_only),
        cmocka_unit_test(test_quota_resets_at_utc_midnight_not_backwards),
        cmocka_unit_test(test_quota_refund_gives_one_unit_back_the_same_day),
        cmocka_unit_test(test_quota_before_rate_and_throttled_not_counted),
        cmocka_unit_test(test_concurrent_callers_share_one_bucket),
        cmocka_unit_test(test_concurrent_callers_share_one_quota),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

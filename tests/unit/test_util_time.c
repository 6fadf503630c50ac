/* Unit tests for util/time's ISO 8601 stamps and util/fmt's digit
 * writers: the hand-written date and format agree byte for byte with
 * gmtime_r, strftime and snprintf (what they replaced) at the edges, on
 * every day from 1970 to 2498 and over random times up to INT64_MAX
 * milliseconds, and "never" stays IoT Hub's. The parser reads back every
 * stamp the writer makes, agrees with timegm on valid dates, and refuses
 * what is not exactly the format (signs, spaces, impossible dates). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/fmt.h"
#include "util/time.h"

/* The former implementation, kept here as the reference. */
static void reference_iso8601_ms(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static void assert_matches_reference(int64_t ms)
{
    char got[32], want[32];
    memset(got, 'x', sizeof got);
    time_iso8601_ms(ms, got);
    reference_iso8601_ms(ms, want);
    if (strcmp(got, want) != 0)
        fail_msg("%lld ms: got %s, want %s", (long long)ms, got, want);
}

static void test_never(void **state)
{
    (void)state;
    char out[32];
    time_iso8601_ms(0, out);
    assert_string_equal(out, "0001-01-01T00:00:00Z");
    time_iso8601_ms(-5, out);
    assert_string_equal(out, "0001-01-01T00:00:00Z");
}

/* A message's times are always real ones: the epoch is shown, not "never". */
static void test_utc_keeps_the_epoch(void **state)
{
    (void)state;
    char out[32];
    time_iso8601_utc_ms(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    time_iso8601_utc_ms(-5, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    time_iso8601_utc_ms(5, out);
    assert_string_equal(out, "1970-01-01T00:00:00.005Z");
    time_iso8601_utc_ms(1600987195320, out);
    assert_string_equal(out, "2020-09-24T22:39:55.320Z");
    char other[32];
    time_iso8601_ms(TIME_ISO8601_MAX_MS, other);
    time_iso8601_utc_ms(TIME_ISO8601_MAX_MS, out);
    assert_string_equal(out, other);
}

static void test_edges(void **state)
{
    (void)state;
    const int64_t edges[] = {
        1, 999, 1000, 59999, 60000, 86399999, 86400000,
        951782400000,    /* 2000-02-29, a leap day of a century year */
        4107542400000,   /* 2100-03-01, after a century year without one */
        1796083199999,   /* 2026-11-30T23:59:59.999 */
        253402300799999, /* the last millisecond of year 9999 */
        253402300800000, /* year 10000: five digits */
        INT64_MAX,       /* year 292278994: nine digits, 29 bytes in all */
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        assert_matches_reference(edges[i]);
    char out[32];
    time_iso8601_ms(1796083199999, out);
    assert_string_equal(out, "2026-11-30T23:59:59.999Z");
}

static void test_every_day_matches_strftime(void **state)
{
    (void)state;
    const int64_t day_ms = 86400000;
    for (int64_t day = 0; day < 193000; day++) /* 1970-01-01 to mid-2498 */
        assert_matches_reference(day * day_ms + (day % 2 ? day_ms - 1 : 1));
}

static void test_random_times_match_strftime(void **state)
{
    (void)state;
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        /* Half up to year 9999, half anywhere below INT64_MAX. */
        int64_t ms = (int64_t)(i % 2 ? x % 253402300800000u : x >> 1);
        assert_matches_reference(ms ? ms : 1);
    }
}

static void test_fmt_u64(void **state)
{
    (void)state;
    const uint64_t values[] = {0, 7, 10, 99, 100, 4294967295u, 4294967296u, UINT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char got[FMT_U64_MAX], want[32];
        size_t n = fmt_u64(got, values[i]);
        snprintf(want, sizeof want, "%llu", (unsigned long long)values[i]);
        assert_string_equal(got, want);
        assert_int_equal(n, strlen(want));
    }
    char d[4] = "xxx";
    assert_ptr_equal(fmt_digits(d, 7, 3), d + 3);
    assert_memory_equal(d, "007", 3);
}

static void assert_parses(const char *s, int64_t want)
{
    int64_t got = -1;
    if (!time_parse_iso8601_ms(s, &got))
        fail_msg("%s: refused", s);
    if (got != want)
        fail_msg("%s: got %lld, want %lld", s, (long long)got, (long long)want);
}

static void test_parse_reads_back_every_stamp(void **state)
{
    (void)state;
    uint64_t x = 0x2545f4914f6cdd1du;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        int64_t ms = (int64_t)(x % 253402300800000u); /* up to the end of 9999 */
        if (ms == 0)
            continue; /* 0 is written as "never", year 1 */
        char text[32];
        time_iso8601_ms(ms, text);
        assert_parses(text, ms);
    }
    for (int64_t day = 0; day < 193000; day += 7) { /* day by day through leap years */
        char text[32];
        time_iso8601_ms(day * 86400000 + 1, text);
        assert_parses(text, day * 86400000 + 1);
    }
}

static void test_parse_forms(void **state)
{
    (void)state;
    assert_parses("1970-01-01T00:00:00Z", 0);
    assert_parses("2026-11-30T23:59:59.999Z", 1796083199999);
    assert_parses("2026-11-30T23:59:59+00:00", 1796083199000);
    assert_parses("2026-11-30T23:59:59.9Z", 1796083199900);
    assert_parses("2026-11-30T23:59:59.12Z", 1796083199120);
    assert_parses("2026-11-30T23:59:59.1239999Z", 1796083199123); /* .NET's 7 digits */
    assert_parses("2000-02-29T00:00:00Z", 951782400000);           /* leap century */
    assert_parses("2024-02-29T12:00:00Z", 1709208000000);
    assert_parses("2026-12-31T23:59:60Z", 1798761600000); /* a leap second: the next minute */
    /* agrees with timegm on the first day of every month for two centuries */
    for (int year = 1970; year < 2170; year++)
        for (int month = 1; month <= 12; month++) {
            struct tm tm = {.tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = 1};
            char text[48]; /* room for any int, as the format check wants */
            snprintf(text, sizeof text, "%04d-%02d-01T00:00:00Z", year, month);
            assert_parses(text, (int64_t)timegm(&tm) * 1000);
        }
}

static void test_parse_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "Z", "2026-11-30", "2026-11-30T23:59:59", "2026-11-30T23:59:59ZZ",
        "2026-11-30T23:59:59z", "2026-11-30 23:59:59Z", "2026-11-30t23:59:59Z",
        "2026-11-30T23:59:59+01:00", "2026-11-30T23:59:59.Z", "2026-11-30T23:59:59.5",
        "2026-11-30T-1:00:00Z",  /* signs and spaces, which sscanf's %2d took */
        "2026-11-30T+1:00:00Z", "2026-11-30T 1:00:00Z", "2026-11-30T00:-1:00Z",
        "2026-11-30T00:00:-1Z", "2026-+1-30T00:00:00Z", " 2026-11-30T00:00:00Z",
        "+2026-11-30T00:00:00Z", "20261-11-30T00:00:00Z", "2026-1-30T00:00:00Z",
        "2026-00-10T00:00:00Z", "2026-13-10T00:00:00Z", "2026-11-00T00:00:00Z",
        "2026-11-31T00:00:00Z", "2026-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
        "2026-11-30T24:00:00Z", "2026-11-30T23:60:00Z", "2026-11-30T23:59:61Z",
        "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", /* before the epoch */
        "2026-11-30T23:59:59\xc2\xa0Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t got = 42;
        if (time_parse_iso8601_ms(bad[i], &got))
            fail_msg("\"%s\" accepted as %lld", bad[i], (long long)got);
        assert_int_equal(got, 42); /* untouched */
    }
}

/* Decimal milliseconds: 1 to 20 digits, leading zeros allowed, at most
 * the last millisecond of year 9999. */
static void test_parse_epoch_ms(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ms;
    } good[] = {
        {"0", 0}, {"1", 1}, {"0000000000000001", 1}, {"00000000000000000042", 42},
        {"1600987195320", 1600987195320LL}, {"253402300799999", TIME_ISO8601_MAX_MS},
        {"0253402300799999", TIME_ISO8601_MAX_MS},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t got = -1;
        assert_true(time_parse_epoch_ms(good[i].s, strlen(good[i].s), &got));
        assert_int_equal(got, good[i].ms);
    }
    static const char *const bad[] = {"", "-1", "+1", " 1", "1 ", "1.5", "1e3", "0x10",
                                      "253402300800000", "99999999999999999999999999",
                                      "000000000000000000042",
                                      "18446744073709551616"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t got = 42;
        if (time_parse_epoch_ms(bad[i], strlen(bad[i]), &got))
            fail_msg("\"%s\" accepted as %lld", bad[i], (long long)got);
        assert_int_equal(got, 42); /* untouched */
    }
    char stamp[32]; /* the bound is what the writer shows as the last stamp */
    time_iso8601_ms(TIME_ISO8601_MAX_MS, stamp);
    assert_string_equal(stamp, "9999-12-31T23:59:59.999Z");
    int64_t back = 0;
    assert_true(time_parse_iso8601_ms(stamp, &back));
    assert_int_equal(back, TIME_ISO8601_MAX_MS);
    assert_true(time_parse_epoch_ms("12", 1, &back)); /* only len bytes are read */
    assert_int_equal(back, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never),
        cmocka_unit_test(test_utc_keeps_the_epoch),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_every_day_matches_strftime),
        cmocka_unit_test(test_random_times_match_strftime),
        cmocka_unit_test(test_fmt_u64),
        cmocka_unit_test(test_parse_reads_back_every_stamp),
        cmocka_unit_test(test_parse_forms),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_parse_epoch_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * util/time.c — timestamps as text (see time.h).
 *
 * Every twin write stamps "$lastUpdated", so the format is written digit
 * by digit (util/fmt.h) instead of through strftime and snprintf, which
 * cost ~1,700 instructions a stamp; tests/unit/test_util_time.c checks it
 * against strftime over the whole range.
 */
#include "util/time.h"

#include <string.h>

#include "util/fmt.h"

void time_iso8601_ms(int64_t ms, char out[32])
{
    static const char never[] = "0001-01-01T00:00:00Z";
    if (ms <= 0) {
        memcpy(out, never, sizeof never);
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm); /* cannot fail: the year of INT64_MAX ms fits an int */
    /* The year has 4 digits until 9999 and up to 9 for INT64_MAX ms: at
     * most 29 bytes with the terminator. */
    char *p = out + fmt_u64(out, (uint64_t)tm.tm_year + 1900);
    *p++ = '-';
    p = fmt_digits(p, (unsigned)tm.tm_mon + 1, 2);
    *p++ = '-';
    p = fmt_digits(p, (unsigned)tm.tm_mday, 2);
    *p++ = 'T';
    p = fmt_digits(p, (unsigned)tm.tm_hour, 2);
    *p++ = ':';
    p = fmt_digits(p, (unsigned)tm.tm_min, 2);
    *p++ = ':';
    p = fmt_digits(p, (unsigned)tm.tm_sec, 2);
    *p++ = '.';
    p = fmt_digits(p, (unsigned)(ms % 1000), 3);
    memcpy(p, "Z", 2);
}

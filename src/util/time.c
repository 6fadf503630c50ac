/*
 * util/time.c — timestamps as text (see time.h).
 *
 * Every twin write stamps "$lastUpdated", so the stamp is computed and
 * written here instead of through gmtime_r, strftime and snprintf, which
 * cost ~2,400 instructions a stamp (glibc's gmtime_r alone takes the
 * time-zone lock and ~700). The date comes from the day count with the
 * proleptic Gregorian calendar's 400-year cycle (civil_from_days);
 * tests/unit/test_util_time.c checks the result against gmtime_r and
 * strftime over the whole range.
 */
#include "util/time.h"

#include <string.h>

#include "util/fmt.h"

typedef struct civil_date {
    int64_t year;
    unsigned month; /* 1..12 */
    unsigned day;   /* 1..31 */
} civil_date;

/* The date `days` days after 1970-01-01 (days >= 0). Counts from
 * 0000-03-01, so that the leap day ends each year, in eras of 400 years
 * (146,097 days, the calendar's full cycle). */
static civil_date civil_from_days(int64_t days)
{
    int64_t z = days + 719468; /* days from 0000-03-01 to 1970-01-01 */
    int64_t era = z / 146097;
    int64_t day_of_era = z - era * 146097;                               /* [0, 146096] */
    int64_t year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 -
                           day_of_era / 146096) / 365;                   /* [0, 399] */
    int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    int64_t month_from_march = (5 * day_of_year + 2) / 153;              /* [0, 11] */
    civil_date d;
    d.day = (unsigned)(day_of_year - (153 * month_from_march + 2) / 5 + 1);
    d.month = (unsigned)(month_from_march < 10 ? month_from_march + 3 : month_from_march - 9);
    d.year = year_of_era + era * 400 + (d.month <= 2);
    return d;
}

void time_iso8601_ms(int64_t ms, char out[32])
{
    static const char never[] = "0001-01-01T00:00:00Z";
    if (ms <= 0) {
        memcpy(out, never, sizeof never);
        return;
    }
    int64_t secs = ms / 1000;
    civil_date d = civil_from_days(secs / 86400);
    unsigned second_of_day = (unsigned)(secs % 86400);
    /* The year has 4 digits until 9999 and 9 for INT64_MAX ms: at most
     * 29 bytes with the terminator. */
    char *p = out + fmt_u64(out, (uint64_t)d.year);
    *p++ = '-';
    p = fmt_digits(p, d.month, 2);
    *p++ = '-';
    p = fmt_digits(p, d.day, 2);
    *p++ = 'T';
    p = fmt_digits(p, second_of_day / 3600, 2);
    *p++ = ':';
    p = fmt_digits(p, second_of_day / 60 % 60, 2);
    *p++ = ':';
    p = fmt_digits(p, second_of_day % 60, 2);
    *p++ = '.';
    p = fmt_digits(p, (unsigned)(ms % 1000), 3);
    memcpy(p, "Z", 2);
}

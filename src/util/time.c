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
 *
 * The parser is the writer's inverse (days_from_civil) and reads only the
 * digits it expects: sscanf's %2d, which it replaced in the C2D send
 * headers, also took "-1", "+1" and " 1", so "T-1:00:00Z" passed as a
 * time and timegm quietly moved it to the day before.
 */
#include "util/time.h"

#include <stdbool.h>
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
    if (ms <= 0)
        memcpy(out, never, sizeof never);
    else
        time_iso8601_utc_ms(ms, out);
}

void time_iso8601_utc_ms(int64_t ms, char out[32])
{
    if (ms < 0)
        ms = 0;
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

/* Days from 1970-01-01 to year-month-day (a valid date of year >= 1970);
 * civil_from_days' inverse, on the same March-based eras. */
static int64_t days_from_civil(int64_t year, unsigned month, unsigned day)
{
    year -= month <= 2;
    int64_t era = year / 400;
    int64_t year_of_era = year - era * 400;                              /* [0, 399] */
    int64_t month_from_march = month > 2 ? month - 3 : month + 9;        /* [0, 11] */
    int64_t day_of_year = (153 * month_from_march + 2) / 5 + day - 1;    /* [0, 365] */
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

static bool is_leap_year(int64_t year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static unsigned days_in_month(int64_t year, unsigned month)
{
    static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && is_leap_year(year) ? 29 : days[month - 1];
}

/* n decimal digits at *p into *out, advancing *p; false at a non-digit. */
static bool take_digits(const char **p, unsigned n, unsigned *out)
{
    unsigned v = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Digit fields and their separators, in the order they come: "YYYY-MM-DD"
 * "THH:MM:SS"; field i is followed by sep[i] ('\0': nothing). */
static bool take_fields(const char **p, unsigned f[6])
{
    static const unsigned width[6] = {4, 2, 2, 2, 2, 2};
    static const char sep[6] = {'-', '-', 'T', ':', ':', '\0'};
    for (unsigned i = 0; i < 6; i++) {
        if (!take_digits(p, width[i], &f[i]))
            return false;
        if (sep[i] && *(*p)++ != sep[i])
            return false;
    }
    return true;
}

bool time_parse_iso8601_ms(const char *s, int64_t *out)
{
    unsigned f[6]; /* year, month, day, hour, minute, second */
    const char *p = s;
    if (!take_fields(&p, f))
        return false;
    unsigned ms = 0, scale = 100;
    if (*p == '.') {
        if (p[1] < '0' || p[1] > '9')
            return false;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (unsigned)(*p - '0') * scale; /* scale reaches 0 after 3 digits */
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return false;
    if (f[0] < 1970 || f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > days_in_month(f[0], f[1]) ||
        f[3] > 23 || f[4] > 59 || f[5] > 60)
        return false;
    int64_t secs = days_from_civil(f[0], f[1], f[2]) * 86400 + f[3] * 3600 + f[4] * 60 + f[5];
    *out = secs * 1000 + ms;
    return true;
}

bool time_parse_epoch_ms(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
        if (v > TIME_ISO8601_MAX_MS)
            return false; /* checked per digit: no overflow */
    }
    *out = v;
    return true;
}

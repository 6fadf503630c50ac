/*
 * util/time.c — timestamps as text (see time.h).
 */
#include "util/time.h"

#include <stdio.h>

void time_iso8601_ms(int64_t ms, char out[32])
{
    if (ms <= 0) {
        snprintf(out, 32, "0001-01-01T00:00:00Z");
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

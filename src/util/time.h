/*
 * util/time.h — clocks. Monotonic milliseconds for timeouts, wall-clock
 * milliseconds since the Unix epoch for timestamps that leave the process,
 * and those timestamps as ISO 8601 text, both ways.
 */
#ifndef IOTHUBD_UTIL_TIME_H
#define IOTHUBD_UTIL_TIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "2026-11-29T08:00:00.123Z" (UTC); ms <= 0 gives IoT Hub's "never",
 * "0001-01-01T00:00:00Z", as the registry and twins show a time that
 * never was. (time.c) */
void time_iso8601_ms(int64_t ms, char out[32]);

/* The same for a moment that is always a real one, the epoch included
 * (a message's creation or enqueued time): "1970-01-01T00:00:00.000Z"
 * for 0, a negative ms counts as 0. (time.c) */
void time_iso8601_utc_ms(int64_t ms, char out[32]);

/* The reverse, strictly: "YYYY-MM-DDTHH:MM:SS", an optional fraction of
 * one or more digits (milliseconds kept, the rest dropped), then "Z" or
 * "+00:00". Every field is exactly its digits (no sign, no space), the
 * date must exist (2100-02-29 does not) and be 1970 or later; second 60
 * (a leap second) counts as the next minute's first. False for anything
 * else, *out untouched. (time.c) */
bool time_parse_iso8601_ms(const char *s, int64_t *out);

/* The last millisecond an ISO 8601 stamp with a four-digit year can show. */
#define TIME_ISO8601_MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */

/* A time given as decimal milliseconds since the epoch (the device API's
 * `time`, iothub-mqtt5.md §5): 1 to 20 ASCII digits (leading zeros
 * allowed, as many as in any u64 the hub reads), worth at most
 * TIME_ISO8601_MAX_MS (the hub shows such times as ISO 8601). False for
 * anything else, *out untouched. */
bool time_parse_epoch_ms(const char *s, size_t len, int64_t *out);

#endif

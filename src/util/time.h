/*
 * util/time.h — clocks. Monotonic milliseconds for timeouts, wall-clock
 * milliseconds since the Unix epoch for timestamps that leave the process.
 */
#ifndef IOTHUBD_UTIL_TIME_H
#define IOTHUBD_UTIL_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#endif

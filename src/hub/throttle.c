/*
 * hub/throttle.c — per-hub rate limits and the daily message quota (see
 * throttle.h for the contract).
 *
 * Rate limits: one token bucket per kind, kept as the Generic Cell Rate
 * Algorithm's single number, the "theoretical arrival time" (TAT) on the
 * monotonic clock in nanoseconds. With rate R an operation costs
 * interval = 1e9 / R ns, and the bucket holds `burst` = R operations (one
 * second's worth): an operation at time `now` is admitted when
 *
 *     max(TAT, now) + interval - now <= burst * interval
 *
 * and then TAT becomes max(TAT, now) + interval. TAT - now is how much of
 * the bucket is used, so this is exactly a token bucket of R tokens
 * refilled at R per second, with fractional refill for free and no timer.
 *
 * Why one atomic and not a mutex: the check runs on every telemetry
 * message from every loop, so it must be cheap and must not serialise the
 * loops. One 64-bit word updated by compare-and-swap is lock-free, has no
 * lock to hold across a preemption, and a contended retry costs a few
 * nanoseconds. A refused operation changes nothing. The price is that the
 * state is a single number, which GCRA makes sufficient.
 *
 * Daily quota: one 64-bit word holding (UTC day number << 32) | count,
 * also updated by compare-and-swap, so the day roll-over and the count
 * can never be seen half-updated. A wall clock that moves back across
 * midnight keeps counting in the later day rather than granting a second
 * quota. Only admitted operations count: a message refused for its rate
 * does not use quota, and one refused after admission (a C2D send to an
 * unknown device or a full queue) gives its unit back (hub_throttle_refund).
 *
 * Refusals are logged at warn at most once a minute per kind (one more
 * compare-and-swap on a timestamp), so a device flood cannot flood the
 * log, yet an operator learns that the hub is refusing work.
 */
#include "hub/throttle.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "util/log.h"

#define NS_PER_S 1000000000ull
#define MS_PER_DAY 86400000ull
#define WARN_INTERVAL_NS (60ull * NS_PER_S)

typedef struct rate_bucket {
    _Atomic uint64_t tat_ns;       /* theoretical arrival time (monotonic ns) */
    _Atomic uint64_t last_warn_ns; /* when a refusal was last logged; 0 = never */
    uint64_t interval_ns;          /* cost of one operation; 0 = unlimited */
    uint64_t burst_ns;             /* bucket size: burst * interval */
    uint32_t per_second;           /* as configured, for texts */
} rate_bucket;

struct hub_throttle {
    rate_bucket buckets[HUB_THROTTLE_KIND_COUNT];
    _Atomic uint64_t day_count; /* (UTC day << 32) | messages counted that day */
    _Atomic uint64_t quota_last_warn_ns;
    uint32_t daily_quota;       /* 0 = unlimited */
    hub_throttle_config cfg;
};

static const char *const kind_names[HUB_THROTTLE_KIND_COUNT] = {
    [HUB_THROTTLE_CONNECT] = "connects",
    [HUB_THROTTLE_TELEMETRY] = "telemetry",
    [HUB_THROTTLE_TWIN_READ] = "twin reads",
    [HUB_THROTTLE_TWIN_UPDATE] = "twin updates",
    [HUB_THROTTLE_METHOD] = "method invocations",
    [HUB_THROTTLE_C2D] = "cloud-to-device sends",
};

const char *hub_throttle_kind_name(hub_throttle_kind kind)
{
    return (unsigned)kind < HUB_THROTTLE_KIND_COUNT ? kind_names[kind] : "operations";
}

/* Whether messages of this kind count toward the daily quota. */
static bool counts_toward_quota(hub_throttle_kind kind)
{
    return kind == HUB_THROTTLE_TELEMETRY || kind == HUB_THROTTLE_C2D;
}

/* ---- clocks --------------------------------------------------------------- */

static uint64_t real_mono_ns(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t real_wall_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_ns(const hub_throttle *t)
{
    return t->cfg.mono_ns(t->cfg.clock_ctx);
}

/* ---- token buckets -------------------------------------------------------- */

/* Sets a bucket up for `per_second` operations (0, or more than one per
 * nanosecond, = unlimited). The bucket starts full. */
static void bucket_init(rate_bucket *b, uint32_t per_second)
{
    b->per_second = per_second;
    b->interval_ns = per_second ? NS_PER_S / per_second : 0;
    b->burst_ns = b->interval_ns * per_second;
    atomic_init(&b->tat_ns, 0);
    atomic_init(&b->last_warn_ns, 0);
}

/* Takes one token if the bucket has one at `now`; see the file comment. */
static bool bucket_take(rate_bucket *b, uint64_t now)
{
    if (b->interval_ns == 0)
        return true;
    uint64_t tat = atomic_load_explicit(&b->tat_ns, memory_order_relaxed);
    for (;;) {
        uint64_t next = (tat > now ? tat : now) + b->interval_ns;
        if (next - now > b->burst_ns)
            return false;
        if (atomic_compare_exchange_weak_explicit(&b->tat_ns, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

/* True for one caller at most once per WARN_INTERVAL_NS: that caller logs. */
static bool warn_due(_Atomic uint64_t *last, uint64_t now)
{
    uint64_t prev = atomic_load_explicit(last, memory_order_relaxed);
    if (prev != 0 && now - prev < WARN_INTERVAL_NS)
        return false;
    return atomic_compare_exchange_strong_explicit(last, &prev, now ? now : 1,
                                                   memory_order_relaxed, memory_order_relaxed);
}

/* ---- daily quota ---------------------------------------------------------- */

#define QUOTA_DAY(word) ((word) >> 32)
#define QUOTA_COUNT(word) ((word) & 0xffffffffull)

/* The count that applies on `day` given the stored word: the stored count
 * for the same (or, after the clock went back, a later) day, else 0. */
static uint64_t quota_count_on(uint64_t word, uint64_t day)
{
    return day > QUOTA_DAY(word) ? 0 : QUOTA_COUNT(word);
}

static bool quota_exhausted(hub_throttle *t, uint64_t day)
{
    if (t->daily_quota == 0)
        return false;
    uint64_t word = atomic_load_explicit(&t->day_count, memory_order_relaxed);
    return quota_count_on(word, day) >= t->daily_quota;
}

/* Counts one message on `day` unless the quota is used up. */
static bool quota_take(hub_throttle *t, uint64_t day)
{
    if (t->daily_quota == 0)
        return true;
    uint64_t word = atomic_load_explicit(&t->day_count, memory_order_relaxed);
    for (;;) {
        uint64_t count = quota_count_on(word, day);
        if (count >= t->daily_quota)
            return false;
        uint64_t keep_day = day > QUOTA_DAY(word) ? day : QUOTA_DAY(word);
        uint64_t next = (keep_day << 32) | (count + 1);
        if (atomic_compare_exchange_weak_explicit(&t->day_count, &word, next,
                                                  memory_order_relaxed, memory_order_relaxed))
            return true;
    }
}

/* ---- the interface -------------------------------------------------------- */

hub_throttle *hub_throttle_new(const hub_throttle_config *cfg)
{
    hub_throttle *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cfg = *cfg;
    if (!t->cfg.mono_ns)
        t->cfg.mono_ns = real_mono_ns;
    if (!t->cfg.wall_ms)
        t->cfg.wall_ms = real_wall_ms;
    for (int k = 0; k < HUB_THROTTLE_KIND_COUNT; k++)
        bucket_init(&t->buckets[k], cfg->per_second[k]);
    t->daily_quota = cfg->daily_message_quota;
    atomic_init(&t->day_count, 0);
    atomic_init(&t->quota_last_warn_ns, 0);
    return t;
}

void hub_throttle_free(hub_throttle *t)
{
    free(t);
}

static void log_refusal(hub_throttle *t, hub_throttle_kind kind, hub_status st, uint64_t now)
{
    _Atomic uint64_t *last = st == HUB_QUOTA_EXCEEDED ? &t->quota_last_warn_ns
                                                      : &t->buckets[kind].last_warn_ns;
    if (!warn_due(last, now))
        return;
    char text[128];
    hub_throttle_describe(t, kind, st, text, sizeof text);
    log_warn("throttle: refusing %s (logged at most once a minute)", text);
}

hub_status hub_throttle_admit(hub_throttle *t, hub_throttle_kind kind)
{
    if (!t || (unsigned)kind >= HUB_THROTTLE_KIND_COUNT)
        return HUB_OK;
    rate_bucket *b = &t->buckets[kind];
    bool quota = counts_toward_quota(kind) && t->daily_quota != 0;
    if (b->interval_ns == 0 && !quota)
        return HUB_OK; /* the common case of the defaults: no clock read */
    uint64_t now = now_ns(t);
    uint64_t day = quota ? t->cfg.wall_ms(t->cfg.clock_ctx) / MS_PER_DAY : 0;
    hub_status st = HUB_OK;
    /* A used-up quota is said first: retrying soon will not help. */
    if (quota && quota_exhausted(t, day))
        st = HUB_QUOTA_EXCEEDED;
    else if (!bucket_take(b, now))
        st = HUB_THROTTLED;
    else if (quota && !quota_take(t, day))
        st = HUB_QUOTA_EXCEEDED; /* another loop took the last one meanwhile */
    if (st != HUB_OK)
        log_refusal(t, kind, st, now);
    return st;
}

void hub_throttle_refund(hub_throttle *t, hub_throttle_kind kind)
{
    if (!t || !counts_toward_quota(kind) || t->daily_quota == 0)
        return;
    uint64_t day = t->cfg.wall_ms(t->cfg.clock_ctx) / MS_PER_DAY;
    uint64_t word = atomic_load_explicit(&t->day_count, memory_order_relaxed);
    for (;;) {
        /* a new day started since (or the count is not this day's): the
         * unit was yesterday's, nothing to give back today */
        if (QUOTA_DAY(word) != day || QUOTA_COUNT(word) == 0)
            return;
        if (atomic_compare_exchange_weak_explicit(&t->day_count, &word, word - 1,
                                                  memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

void hub_throttle_describe(const hub_throttle *t, hub_throttle_kind kind, hub_status st,
                           char *out, size_t cap)
{
    const char *name = hub_throttle_kind_name(kind);
    if (st == HUB_QUOTA_EXCEEDED && t)
        snprintf(out, cap, "%s: the hub's daily message quota (%u) is used up", name,
                 (unsigned)t->daily_quota);
    else if (st == HUB_QUOTA_EXCEEDED)
        snprintf(out, cap, "%s: the hub's daily message quota is used up", name);
    else if (t && (unsigned)kind < HUB_THROTTLE_KIND_COUNT)
        snprintf(out, cap, "%s over the hub's rate of %u/s", name,
                 (unsigned)t->buckets[kind].per_second);
    else
        snprintf(out, cap, "%s over the hub's rate", name);
}

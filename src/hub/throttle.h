/*
 * hub/throttle.h — the hub's throttles and daily message quota
 * (../shared/spec/iothub-mqtt5.md §7 "Throttling and quotas").
 *
 * One throttle object per hub, shared by every event loop and by the
 * service API: a token bucket per kind of operation (connects, telemetry,
 * twin reads, twin updates, method invocations, C2D sends) and one counter
 * of messages per UTC day. The caller asks before it starts the operation
 * and answers a refusal in its own protocol:
 *
 *   HUB_THROTTLED       MQTT: CONNACK 0x9F (connects), else status 0501 /
 *                       reason code 151; HTTP: 429 ThrottlingException
 *   HUB_QUOTA_EXCEEDED  MQTT: status 0502 / reason code 151;
 *                       HTTP: 403 IotHubQuotaExceeded
 *
 * Buckets refill continuously at the configured rate and hold at most one
 * second's worth of tokens (so a burst of up to `rate` operations passes
 * after a quiet second). The quota counts the messages IoT Hub counts:
 * telemetry accepted from devices and C2D messages accepted for devices;
 * it resets at 00:00 UTC.
 *
 * A NULL throttle admits everything, so code and tests that do not care
 * need not make one.
 */
#ifndef IOTHUBD_HUB_THROTTLE_H
#define IOTHUBD_HUB_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

#include "hub/status.h"

typedef enum hub_throttle_kind {
    HUB_THROTTLE_CONNECT,     /* device CONNECTs that authenticated */
    HUB_THROTTLE_TELEMETRY,   /* device-to-cloud messages (also count toward the quota) */
    HUB_THROTTLE_TWIN_READ,   /* device Get twin, service GET /twins */
    HUB_THROTTLE_TWIN_UPDATE, /* device Patch reported, service PATCH/PUT /twins */
    HUB_THROTTLE_METHOD,      /* direct method invocations */
    HUB_THROTTLE_C2D,         /* cloud-to-device sends (also count toward the quota) */
    HUB_THROTTLE_KIND_COUNT,
} hub_throttle_kind;

typedef struct hub_throttle_config {
    /* operations per second for each kind; 0 = unlimited */
    uint32_t per_second[HUB_THROTTLE_KIND_COUNT];
    /* messages (telemetry + C2D) per UTC day; 0 = unlimited */
    uint32_t daily_message_quota;
    /* Clocks, injectable for tests; NULL = CLOCK_MONOTONIC in ns and the
     * wall clock in ms since the epoch. clock_ctx is passed to both. */
    uint64_t (*mono_ns)(void *clock_ctx);
    uint64_t (*wall_ms)(void *clock_ctx);
    void *clock_ctx;
} hub_throttle_config;

typedef struct hub_throttle hub_throttle;

/* A throttle with the given limits (copied). NULL when out of memory. */
hub_throttle *hub_throttle_new(const hub_throttle_config *cfg);
void hub_throttle_free(hub_throttle *t);

/*
 * Asks to start one operation of `kind` now. Returns HUB_OK (a token was
 * taken, and for telemetry and C2D one message counted toward today's
 * quota), HUB_THROTTLED (over the rate: nothing was taken) or
 * HUB_QUOTA_EXCEEDED (today's quota is used up). Thread-safe and
 * lock-free; t NULL admits everything. Refusals are logged at most once a
 * minute per kind.
 */
hub_status hub_throttle_admit(hub_throttle *t, hub_throttle_kind kind);

/*
 * Gives back the quota unit an admitted message of `kind` took when the
 * message was not accepted after all (a C2D send to an unknown device or a
 * full queue, a failed commit): the quota counts accepted messages only.
 * The rate token stays used (an attempt is an operation). Nothing happens
 * for kinds outside the quota, without a quota, or once the UTC day the
 * unit was taken on has ended. Thread-safe and lock-free; t NULL is a
 * no-op.
 */
void hub_throttle_refund(hub_throttle *t, hub_throttle_kind kind);

/* "connects", "telemetry", ... for logs and error texts. */
const char *hub_throttle_kind_name(hub_throttle_kind kind);

/* The text of a refusal `st` (HUB_THROTTLED or HUB_QUOTA_EXCEEDED) of
 * `kind`, for a reason property or an HTTP error, e.g. "telemetry over
 * the hub's rate of 100/s". t NULL gives a text without the numbers. */
void hub_throttle_describe(const hub_throttle *t, hub_throttle_kind kind, hub_status st,
                           char *out, size_t cap);

#endif

/*
 * hub/telemetry.h — device-to-cloud messages (../shared/spec/iothub-mqtt5.md
 * §6 "Send telemetry") into the durable telemetry log, and reading it back
 * (../shared/spec/service-rest.md "Telemetry").
 *
 * An accepted message becomes a stored event: partition chosen by device
 * id (store_partition_of), a sequence number, enqueued time, the system
 * properties (content-type, content-encoding, message-id, user-id,
 * correlation-id), the application properties (the `@name` user properties
 * with the '@' removed, plus iothub-creation-time-utc from creation-time)
 * and the hub's stamps (iothub-connection-device-id,
 * iothub-connection-module-id, iothub-connection-auth-method,
 * iothub-enqueuedtime), and the body. The PUBACK waits for the commit.
 *
 * Live readers (the service's Server-Sent Events stream) are told of each
 * appended event on their own loop.
 */
#ifndef IOTHUBD_HUB_TELEMETRY_H
#define IOTHUBD_HUB_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/status.h"
#include "net/loop.h"

struct store;
typedef struct hub_telemetry hub_telemetry;

#define TELEMETRY_MAX_BODY (256u * 1024u)

typedef struct telemetry_prop {
    const char *name;  /* NUL-terminated */
    const char *value;
} telemetry_prop;

/* One message as the MQTT side hands it over (already validated: the
 * property names are the spec's or '@'-prefixed, creation-time a valid
 * time). Everything is copied before telemetry_accept returns. */
typedef struct telemetry_msg {
    const char *device_id;
    const char *module_id;       /* "" for a device */
    const char *auth_method;     /* "sas" or "x509" */
    const char *content_type;    /* NULL when absent */
    const telemetry_prop *props; /* content-encoding, message-id, user-id,
                                    correlation-id, creation-time, @name... */
    size_t nprops;
    const uint8_t *body;
    size_t body_len;
} telemetry_msg;

hub_telemetry *telemetry_new(struct store *st);
void telemetry_free(hub_telemetry *t);

typedef void (*telemetry_done_fn)(net_loop *loop, void *arg, hub_status st);
/* Appends to the log; `done` on `loop` after the commit (HUB_OK), or with
 * HUB_SERVER_ERROR. */
void telemetry_accept(hub_telemetry *t, const telemetry_msg *m, net_loop *loop,
                      telemetry_done_fn done, void *arg);

/* ---- additions (compatible with the interface above) -------------------- */

/* The stored properties blob is compact JSON text:
 *   {"sys":{"content-type":..,"content-encoding":..,"message-id":..,
 *           "user-id":..,"correlation-id":..,
 *           "iothub-connection-device-id":..,"iothub-connection-module-id":..,
 *           "iothub-connection-auth-method":..},
 *    "app":{"name":"value",...,"iothub-creation-time-utc":"2020-09-24T22:39:55.320Z"}}
 * Absent optional properties are left out; iothub-connection-module-id only
 * for modules. iothub-enqueuedtime is not stored twice: it is the event's
 * own enqueued_ms, added when decoding. */

/* Decodes a stored event's properties into two new JSON objects (the
 * caller owns them): system properties (with iothub-enqueuedtime as ISO
 * 8601 UTC) and application properties. False for a blob that is not this
 * encoding (both set to NULL). */
struct store_event;
struct json_t;
bool telemetry_event_properties(const struct store_event *ev, struct json_t **system,
                                struct json_t **application);

/* Live readers. A subscriber is told, on its own loop and never
 * re-entrantly, that events were appended to some partitions; it then reads
 * them with store_telemetry_read. Notifications are coalesced (one pending
 * task per subscriber at a time), so a burst of appends costs one wake-up;
 * `partitions` has bit p set for partition p < 63 and bit 63 for any
 * partition >= 63. The notice is a hint: a reader that keeps its own
 * position per partition and re-reads while the store returns full pages
 * never misses or repeats an event. */
#define TELEMETRY_ALL_PARTITIONS (~0u)
#define TELEMETRY_PARTITION_BIT(p) ((p) < 63 ? (uint64_t)1 << (p) : (uint64_t)1 << 63)
typedef struct telemetry_sub telemetry_sub;
typedef void (*telemetry_notify_fn)(net_loop *loop, void *arg, uint64_t partitions);
/* Subscribes to one partition or TELEMETRY_ALL_PARTITIONS. Thread-safe.
 * NULL only when out of memory. */
telemetry_sub *telemetry_subscribe(hub_telemetry *t, unsigned partition, net_loop *loop,
                                   telemetry_notify_fn fn, void *arg);
/* Must be called on the subscriber's loop; fn is never called after it
 * returns. NULL is allowed. */
void telemetry_unsubscribe(hub_telemetry *t, telemetry_sub *sub);

#endif

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

#endif

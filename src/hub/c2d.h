/*
 * hub/c2d.h — cloud-to-device commands (../shared/spec/iothub-mqtt5.md §6
 * "Receive commands", §7 "Commands"): per-device durable queues, delivery
 * on `$iothub/commands` at QoS 1, settlement by the device's PUBACK,
 * locks, expiry, dead-lettering and feedback.
 *
 * Who calls what:
 *   main      c2d_open (loads every queue from the store), c2d_start
 *             (arms the timer on a loop), c2d_free after the loops stopped.
 *   service   c2d_send, c2d_purge, c2d_feedback_take (any loop).
 *   hub       c2d_deliver, c2d_settled, c2d_connection_gone on the device's
 *             loop; c2d_device_deleted from the registry listener. The hub
 *             installs a ready listener: "this device may have something
 *             to deliver", which it answers by posting c2d_deliver to the
 *             device's loop when the device is connected.
 *
 * Everything is in memory behind one mutex (queues hold ≤ 50 messages of
 * ≤ 64 KB) and written through the store; a send is answered only after
 * its commit. See c2d.c for the trade-offs.
 */
#ifndef IOTHUBD_HUB_C2D_H
#define IOTHUBD_HUB_C2D_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"
#include "hub/registry.h"
#include "net/loop.h"

struct store;

#define C2D_MESSAGE_ID_MAX 128 /* message ids, correlation ids, user ids */

typedef struct c2d_config {
    uint32_t lock_ms;            /* lock of a delivered, unsettled message; 60 s */
    uint32_t max_depth;          /* messages per device queue; 50 */
    uint32_t max_delivery_count; /* abandons before dead-lettering; 10 (1-100) */
    uint32_t default_ttl_ms;     /* 1 h */
    uint32_t min_ttl_ms;         /* 1 min (tests lower it) */
    uint32_t max_ttl_ms;         /* 2 days */
    size_t max_message_bytes;    /* body + properties; 64 KiB */
    size_t max_feedback;         /* feedback records kept; 1000 */
} c2d_config;

void c2d_config_defaults(c2d_config *cfg);

typedef enum c2d_ack { C2D_ACK_NONE, C2D_ACK_POSITIVE, C2D_ACK_NEGATIVE, C2D_ACK_FULL } c2d_ack;
/* "none", "positive", "negative", "full" (case-insensitive); false otherwise. */
bool c2d_ack_parse(const char *text, c2d_ack *out);

typedef struct c2d_app_prop {
    const char *name;  /* without the '@' */
    const char *value;
} c2d_app_prop;

/* A command as a sender gives it. NULL strings are "not set". */
typedef struct c2d_message {
    const char *device_id;
    const char *message_id;       /* NULL: one is generated (not sent to the device) */
    const char *correlation_id;
    const char *user_id;
    const char *content_type;
    const char *content_encoding;
    int64_t creation_time_ms;     /* 0 = not set */
    int64_t expiry_ms;            /* wall clock; 0 = now + default TTL */
    c2d_ack ack;
    const c2d_app_prop *app;
    size_t app_count;
    const void *body;
    size_t body_len;
} c2d_message;

typedef enum c2d_result {
    C2D_OK,
    C2D_DEVICE_NOT_FOUND, /* 404 DeviceNotFound */
    C2D_QUEUE_FULL,       /* 403 DeviceMaximumQueueDepthExceeded */
    C2D_TOO_LARGE,        /* 413 MessageTooLarge */
    C2D_INVALID,          /* 400 ArgumentInvalid (TTL out of range, field too long) */
    C2D_ERROR,            /* 500 (store failure, out of memory) */
    C2D_BUSY,             /* 503 ServerBusy (the store's disk is full) */
} c2d_result;

typedef struct hub_c2d hub_c2d;

/* Loads every stored queue (synchronously, before the loops run) and sets
 * each device's cloudToDeviceMessageCount. NULL with a reason in err. */
hub_c2d *c2d_open(const c2d_config *cfg, struct store *st, hub_registry *reg, char *err,
                  size_t errlen);
/* Arms the expiry and lock timer on `loop` (posted: call before or after
 * the loops start). */
void c2d_start(hub_c2d *c, net_loop *loop);
/* After the loops have stopped. */
void c2d_free(hub_c2d *c);

/* ---- service side ------------------------------------------------------- */

/* The outcome of a send: on C2D_OK the assigned sequence number, the
 * enqueued time and the message id (the sender's or the generated one). */
typedef void (*c2d_sent_fn)(net_loop *loop, void *arg, c2d_result r, uint64_t seq,
                            int64_t enqueued_ms, const char *message_id, const char *err);
/* Checks and enqueues; `done` runs on `loop` after the commit (or at once
 * for a refusal, still on `loop`, from this call). */
void c2d_send(hub_c2d *c, const c2d_message *m, net_loop *loop, c2d_sent_fn done, void *arg);

typedef void (*c2d_purged_fn)(net_loop *loop, void *arg, c2d_result r, uint64_t purged,
                              const char *err);
/* Removes every queued message of a device (locked ones too: their
 * settlement then finds nothing), with `Purged` feedback where asked. */
void c2d_purge(hub_c2d *c, const char *device_id, net_loop *loop, c2d_purged_fn done, void *arg);

typedef enum c2d_outcome {
    C2D_OUTCOME_SUCCESS,
    C2D_OUTCOME_EXPIRED,
    C2D_OUTCOME_DELIVERY_COUNT_EXCEEDED,
    C2D_OUTCOME_REJECTED,
    C2D_OUTCOME_PURGED,
} c2d_outcome;
const char *c2d_outcome_name(c2d_outcome o);        /* "Success", ... */
const char *c2d_outcome_description(c2d_outcome o); /* human text */

typedef struct c2d_feedback {
    char message_id[C2D_MESSAGE_ID_MAX + 1];
    char device_id[HUB_ID_MAX + 1];
    c2d_outcome outcome;
    int64_t time_ms; /* when the outcome happened */
} c2d_feedback;
/* Moves up to `cap` of the oldest feedback records into out (reading
 * consumes them); returns how many. */
size_t c2d_feedback_take(hub_c2d *c, c2d_feedback *out, size_t cap);

/* ---- hub side ------------------------------------------------------------ */

typedef void (*c2d_ready_fn)(void *arg, const char *device_id);
void c2d_set_ready_listener(hub_c2d *c, c2d_ready_fn fn, void *arg);

/* On the client's loop: sends what is available to a connected device
 * (device_id) that holds a `$iothub/commands` subscription. */
void c2d_deliver(hub_c2d *c, broker_client *bc, const char *device_id);
/* On the client's loop: the device's PUBACK for delivery `app_tag`. */
void c2d_settled(hub_c2d *c, broker_client *bc, const char *device_id, uint64_t app_tag,
                 const mqtt_ack *ack);
/* The connection `handle` of device_id ended: its locks are released. */
void c2d_connection_gone(hub_c2d *c, const char *device_id, broker_client_handle handle);
/* The device was deleted (its stored queue with it): forget the queue. */
void c2d_device_deleted(hub_c2d *c, const char *device_id);

#endif

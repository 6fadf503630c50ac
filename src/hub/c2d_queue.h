/*
 * hub/c2d_queue.h — the pure part of cloud-to-device commands: one
 * device's queue in memory, its locks and settlements, and the encoding of
 * a message's properties as the store keeps them. No store, no broker, no
 * lock, no clock of its own (every call is given `now`), so the rules of
 * ../shared/spec/iothub-mqtt5.md §6-7 can be unit-tested here.
 *
 * A queue is a list in sequence order. A message is *available* (waiting),
 * or *locked* by one delivery: the connection it went to (`locked_by`, a
 * broker client handle), the delivery's tag (the broker's app_tag, unique
 * per delivery, so a stale acknowledgement of an earlier delivery finds
 * nothing) and the lock's end. Wall-clock milliseconds throughout, as the
 * store keeps them.
 */
#ifndef IOTHUBD_HUB_C2D_QUEUE_H
#define IOTHUBD_HUB_C2D_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/c2d.h"
#include "mqtt/packet.h"

typedef struct c2d_msg {
    struct c2d_msg *next;
    uint64_t seq;
    int64_t enqueued_ms;
    int64_t expiry_ms;
    uint32_t delivery_count;  /* abandons so far */
    uint64_t locked_by;       /* connection handle; 0 = available */
    uint64_t tag;             /* app_tag of the current delivery */
    int64_t lock_until_ms;    /* while locked */
    uint8_t *props;           /* the encoded properties (c2d_props_encode) */
    size_t props_len;
    uint8_t *body;            /* props and body share one allocation */
    size_t body_len;
} c2d_msg;

typedef struct c2d_queue {
    c2d_msg *head;
    c2d_msg *tail;
    uint32_t len;
    uint32_t reserved;  /* sends accepted, waiting for their store commit */
    uint32_t locked;    /* messages locked by a delivery */
} c2d_queue;

/* A message with copies of props and body; NULL when out of memory. */
c2d_msg *c2d_msg_new(uint64_t seq, int64_t enqueued_ms, int64_t expiry_ms,
                     uint32_t delivery_count, const void *props, size_t props_len,
                     const void *body, size_t body_len);
void c2d_msg_free(c2d_msg *m);

/* Inserts in sequence order (commits may complete out of order). */
void c2d_queue_insert(c2d_queue *q, c2d_msg *m);
/* Unlinks m (which must be in q) and returns it. */
c2d_msg *c2d_queue_unlink(c2d_queue *q, c2d_msg *m);
/* Frees every message. */
void c2d_queue_clear(c2d_queue *q);

/* The first available message that has not expired at now; NULL if none. */
c2d_msg *c2d_queue_next_available(const c2d_queue *q, int64_t now_ms);
void c2d_queue_lock(c2d_queue *q, c2d_msg *m, uint64_t owner, uint64_t tag, int64_t until_ms);
/* Makes m available again (its delivery count unchanged). */
void c2d_queue_unlock(c2d_queue *q, c2d_msg *m);
/* The message locked by the delivery `tag`, or NULL (a stale tag). */
c2d_msg *c2d_queue_find_tag(const c2d_queue *q, uint64_t tag);
/* Unlocks every message that `owner` holds; returns how many. */
unsigned c2d_queue_unlock_owner(c2d_queue *q, uint64_t owner);
/* Unlocks every message whose lock ended at or before now; returns how many. */
unsigned c2d_queue_unlock_expired(c2d_queue *q, int64_t now_ms);
/* The first message expired at now (locked or not), still linked; NULL if none. */
c2d_msg *c2d_queue_find_expired(const c2d_queue *q, int64_t now_ms);
/* The earliest expiry or lock end in the queue; INT64_MAX when none. */
int64_t c2d_queue_next_deadline(const c2d_queue *q);

/* How a device's PUBACK settles a command (spec §6): reason code below
 * 0x80 → complete; 131 with `status` 0100 → reject; anything else
 * (131 with 0603, or any other failure) → abandon. */
typedef enum c2d_settlement { C2D_COMPLETE, C2D_ABANDON, C2D_REJECT } c2d_settlement;
c2d_settlement c2d_settlement_of(uint8_t reason_code, mqtt_bytes status);

/* ---- the properties blob ------------------------------------------------ */

/*
 * Layout (integers big-endian): u8 version (1), u8 ack, u16 length +
 * Content Type, u16 length + message id (the sender's or the generated
 * one: feedback needs it), u8 flag (1 = the sender set the id), u32 count
 * of user properties, then those user properties MQTT-encoded (0x26,
 * name, value), ready to be sent: creation-time, message-id (only when
 * the sender set it), user-id, correlation-id, content-encoding, @name.
 */
typedef struct c2d_props_view {
    c2d_ack ack;
    mqtt_bytes content_type;  /* len 0 = none */
    mqtt_bytes message_id;
    bool message_id_from_sender;
    mqtt_bytes users;         /* encoded user properties */
    uint32_t user_count;
} c2d_props_view;

/* Encodes the properties of `in` with message id `message_id` (generated
 * when in->message_id is NULL) into a malloc'd blob. False when out of
 * memory or a field is longer than 65535 bytes. */
bool c2d_props_encode(const c2d_message *in, const char *message_id, uint8_t **out,
                      size_t *out_len);
/* Reads a blob back (views into it); false for a damaged one. */
bool c2d_props_decode(const uint8_t *blob, size_t len, c2d_props_view *out);

#endif

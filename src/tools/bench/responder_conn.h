/*
 * tools/bench/responder_conn.h — what responder.c (the loops, the MQTT
 * acknowledgements) and responder_hub.c (the hub-shaped routes) share:
 * one connection and the two ways bytes are queued on it.
 *
 * Plain mode (neither --http-port nor --route) is single-owner: a connection is read,
 * answered and flushed by the loop that accepted it, with no lock, as
 * before the hub routes existed. Hub mode relays between connections
 * that may sit on different loops (a method call comes in on an HTTP
 * connection and goes out on a device's), so there every connection's
 * output queue and descriptor are guarded by its mutex, and a connection
 * is never freed while the responder runs: a relay may still hold a
 * pointer to one that has just closed, and finds it marked closed
 * instead. A run holds at most a few thousand connections, so keeping
 * the closed ones costs little. Routing (--route) is the same shared
 * mode: a publisher's loop queues on subscribers that other loops own.
 */
#ifndef IOTHUBD_BENCH_RESPONDER_CONN_H
#define IOTHUBD_BENCH_RESPONDER_CONN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mqtt/codec.h"
#include "tools/bench/proto.h"

#define RESPONDER_CLIENT_ID_MAX 128

typedef struct responder_hub responder_hub;

typedef struct responder_conn {
    int fd;                 /* -1 once closed (hub mode keeps the struct) */
    int epfd;               /* the owning loop's epoll, for EPOLLOUT */
    uint8_t version;
    bool is_http;           /* accepted on the --http-port listener */
    bool want_out;          /* EPOLLOUT armed: the socket was full */
    bool locked;            /* hub mode: `lock` guards fd, out and want_out */
    pthread_mutex_t lock;
    uint8_t *tail;
    size_t tail_len;
    bench_buf out;
    /* hub mode */
    uint32_t id;            /* index in the hub's connection table */
    uint32_t call_seq;      /* HTTP: the method call waiting for a device, 0 = none */
    uint16_t next_packet_id;/* device: QoS 1 commands sent */
    uint64_t dirty_mark;    /* routing: the last loop batch that queued for it */
    char client_id[RESPONDER_CLIENT_ID_MAX];
} responder_conn;

/* Routing: the connections one loop batch queued messages for, flushed
 * once each when the batch ends (as a broker batches a subscriber's
 * deliveries), and the batch's mark, unique across loops. */
typedef struct responder_dirty {
    responder_conn **conns;
    size_t count;
    size_t cap;
    uint64_t mark;
} responder_dirty;

/* items (count elements of `size` bytes, room for *cap) with room for one
 * more: the same array, or a grown one (doubling) and *cap updated; NULL
 * when out of memory, items then untouched. */
static inline void *responder_grow(void *items, size_t count, size_t *cap, size_t size)
{
    if (count < *cap)
        return items;
    size_t more = *cap ? 2 * *cap : 64;
    void *grown = realloc(items, more * size);
    if (grown)
        *cap = more;
    return grown;
}

/* Queues bytes for the end of the owner's read batch (the owner's flush
 * sends them). False when out of memory. */
bool responder_reply(responder_conn *c, const uint8_t *bytes, size_t n);

/* Queues an encoded packet or response from another connection's handler
 * and sends it now; with call_seq non-zero only if c still waits for that
 * method call (which it then no longer does). False when c is closed, not
 * waiting, or out of memory. Hub mode only. */
bool responder_relay(responder_conn *c, const bench_buf *bytes, uint32_t call_seq);

/* Queues bytes on subscriber c from any loop and notes c in `dirty`
 * for that loop to flush; false when c is closed or out of memory. */
bool responder_queue_routed(responder_conn *c, const uint8_t *bytes, size_t n,
                            responder_dirty *dirty);

/* ---- the hub-shaped routes (responder_hub.c) ------------------------------ */

responder_hub *responder_hub_new(bool route);
void responder_hub_free(responder_hub *h);

/* A new connection (MQTT or HTTP); false when out of memory. */
bool responder_hub_add(responder_hub *h, responder_conn *c);

/* c closed: forget it as a device. */
void responder_hub_closed(responder_hub *h, responder_conn *c);

/* An MQTT CONNECT (c becomes the device named by its client id), a
 * PUBLISH (a twin request or method reply on `$iothub/`; with routing,
 * any other topic goes to the subscribers it matches, queued through
 * `dirty`), or, with routing, a SUBSCRIBE (c's filters are noted); p is
 * the whole frame. False: close c. */
bool responder_hub_mqtt(responder_hub *h, responder_conn *c, const uint8_t *p, size_t len,
                        responder_dirty *dirty);

/* Answers the complete HTTP requests in buf[0..len); returns how many
 * bytes they took, or -1 to close c (a request this responder cannot
 * read). */
long responder_hub_http(responder_hub *h, responder_conn *c, const uint8_t *buf, size_t len);

#endif

/*
 * net/conn.h — non-blocking stream connections (TCP or TLS) owned by a loop.
 *
 * Input: each loop has one shared read buffer. Bytes read are offered to the
 * protocol layer straight from it (on_input); only an incomplete tail (a
 * partial packet) is copied into a per-connection buffer, which is freed
 * again once consumed. An idle connection therefore holds no input memory.
 *
 * Output: net_conn_reserve/commit (or net_conn_write) append to a
 * per-connection queue, allocated on demand and released when empty. Queued
 * output is flushed once per loop iteration, so many small packets produced
 * while handling one read go out in one send(). When the queue passes the
 * high-water mark the connection stops being read (back-pressure) until it
 * drains below the low-water mark; when it passes the hard cap the
 * connection is closed (a client that never reads cannot grow our memory).
 *
 * Lifetime: a connection is created by a listener on accept, and freed by
 * the loop after on_close has run, with the upper layer's state when that
 * lives in the connection's block (net_conn_handler.user_size). Upper
 * layers must not touch either after on_close. net_conn_close() never
 * calls on_close re-entrantly: closing is deferred to the end of the
 * current iteration.
 */
#ifndef IOTHUBD_NET_CONN_H
#define IOTHUBD_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/loop.h"

typedef struct net_conn net_conn;
typedef struct x509_st X509; /* OpenSSL's type, without its headers */

typedef struct net_conn_handler {
    /* The upper layer's per-connection state (`user` below). With a
     * user_size, that many bytes in the connection's own block — one
     * allocation per connection instead of two, and no pointer between
     * them — zeroed, 8-byte aligned, set up in place by on_open and freed
     * with the connection after on_close. With 0, whatever on_open
     * returns (state that may outlive the connection). */
    size_t user_size;
    /* A connection was accepted (and, for TLS, its handshake finished).
     * `area` is the user_size bytes (NULL without). Returns the state:
     * `area` itself, or with user_size 0 a pointer of its own; NULL
     * refuses (the connection is closed without on_close). */
    void *(*on_open)(net_conn *c, void *area, void *listener_arg);
    /* Unconsumed input (old tail + new bytes). Returns how many bytes from
     * the start were consumed; the rest is kept and offered again when more
     * arrives. Not called again while input is paused. */
    size_t (*on_input)(net_conn *c, void *user, const uint8_t *data, size_t len);
    /* The output queue drained below the low-water mark after having been
     * above the high-water mark. Optional. */
    void (*on_drain)(net_conn *c, void *user);
    /* The connection is closed (peer closed, I/O error, cap exceeded, or
     * net_conn_close). `user` is what on_open returned. */
    void (*on_close)(net_conn *c, void *user);
} net_conn_handler;

typedef struct net_conn_limits {
    size_t max_input;   /* largest buffered incomplete input; 0 = no limit */
    size_t out_high;    /* stop reading above this much queued output */
    size_t out_low;     /* resume reading below this */
    size_t out_cap;     /* close the connection above this */
} net_conn_limits;

/* Output. reserve returns space for at least n bytes at the end of the
 * output queue (NULL only on allocation failure); commit appends the first
 * `used` bytes of it. */
uint8_t *net_conn_reserve(net_conn *c, size_t n);
void net_conn_commit(net_conn *c, size_t used);
bool net_conn_write(net_conn *c, const void *data, size_t len);
size_t net_conn_out_queued(const net_conn *c);

/* Stops (or resumes) offering input; bytes keep arriving in the socket. */
void net_conn_pause_input(net_conn *c, bool paused);

/* Closes the connection at the end of this iteration, after flushing what
 * is queued if `flush` (best effort, non-blocking). Idempotent. */
void net_conn_close(net_conn *c, bool flush);
bool net_conn_closing(const net_conn *c);

net_loop *net_conn_loop(const net_conn *c);
void *net_conn_user(const net_conn *c);
/* The connection whose state `area` is (a handler with a user_size: the
 * state lives in the connection's block at a fixed offset). */
net_conn *net_conn_of_user(void *area);
/* "127.0.0.1:5555" style, for logs; valid until the next call on the same
 * thread. */
const char *net_conn_peer_str(const net_conn *c);

/*
 * Moves the connection to another loop: it is detached from this loop's
 * epoll at once (no more callbacks here), then `done(target, c, arg)` runs
 * on the target loop's thread after it has been attached there, with its
 * buffered input and queued output intact and input paused (resume with
 * net_conn_pause_input(c, false), which offers any buffered input at once).
 * Used by the broker to bring a connection to the loop that owns its
 * session. Must be called on the connection's own loop.
 */
void net_conn_migrate(net_conn *c, net_loop *target,
                      void (*done)(net_loop *target, net_conn *c, void *arg),
                      void *arg);

/* TLS only (NULL/false otherwise): the client certificate (borrowed, valid
 * while the connection is), whether it chained to a configured CA, and the
 * SNI host name the client sent. */
bool net_conn_is_tls(const net_conn *c);
X509 *net_conn_peer_cert(const net_conn *c);
bool net_conn_peer_cert_verified(const net_conn *c);
const char *net_conn_sni(const net_conn *c);

#endif

/*
 * net/internal.h — private to src/net/: the structs behind the opaque types
 * of loop.h, conn.h and server.h, and the calls between the net files.
 * Nothing outside src/net/ may include it.
 *
 * Ownership map:
 *   net_server   owns N net_loop (one thread each) and the listener configs.
 *   net_loop     owns its epoll fd, mailbox, timer heap, read buffer, its
 *                net_listener sockets (one per configured address) and the
 *                net_conn it accepted.
 *   net_conn     owns its fd, its input tail, its output queue and, for TLS,
 *                a separately allocated net_tls, whose pointer only TLS
 *                connections carry (plain ones do not pay for TLS state).
 *
 * epoll_event.data.ptr always points at an `int kind` that is the first
 * member of what was registered (a conn, a listener, or a loop's wake /
 * signal slot), so one dispatch switch serves all.
 */
#ifndef IOTHUBD_NET_INTERNAL_H
#define IOTHUBD_NET_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "net/conn.h"
#include "net/loop.h"
#include "net/server.h"

typedef struct ssl_ctx_st SSL_CTX; /* OpenSSL's type, without its headers */

enum net_kind {
    NET_K_CONN = 1,
    NET_K_LISTENER = 2,
    NET_K_WAKE = 3,
    NET_K_SIGNAL = 4,
};

/* Tuning. */
#define NET_RBUF_SIZE (64u * 1024u)       /* per-loop shared read buffer */
#define NET_READ_BUDGET (256u * 1024u)    /* bytes per connection per iteration */
#define NET_TAIL_COPY_MAX (16u * 1024u)   /* larger tails accumulate in place */
#define NET_ACCEPT_BURST 64               /* accepts per listener event */
#define NET_MAX_EVENTS 256
#define NET_TLS_HANDSHAKE_MS 30000u

/* ---- listeners ---------------------------------------------------------- */

/* One per net_server_listen() call, shared read-only by every loop. */
typedef struct net_listen_cfg {
    net_conn_handler handler;
    void *arg;
    net_conn_limits limits;
    SSL_CTX *ssl_ctx; /* NULL for plain TCP */
    char *name;       /* "host:port" as configured, for logs */
    struct net_listen_cfg *next;
} net_listen_cfg;

/* One socket per (address, loop). */
typedef struct net_listener {
    int kind; /* NET_K_LISTENER; must be first */
    int fd;
    bool paused; /* EMFILE back-off */
    net_loop *loop;
    const net_listen_cfg *cfg;
    net_timer retry;
    struct net_listener *next;
} net_listener;

/* ---- loop --------------------------------------------------------------- */

typedef struct net_task {
    net_task_fn fn;
    void *arg;
} net_task;

typedef struct net_taskq {
    net_task *v;
    size_t len, cap;
} net_taskq;

struct net_loop {
    unsigned index;
    int epfd;
    int wake_fd;   /* eventfd: mailbox posts and stop requests */
    int wake_kind; /* NET_K_WAKE: epoll data for wake_fd */
    int sig_kind;  /* NET_K_SIGNAL: epoll data for the server's signalfd */
    net_server *server;
    uint64_t now_ms;

    /* timers (timer.c): 0-based array, net_timer.heap_index is 1-based */
    net_timer **heap;
    uint32_t heap_len, heap_cap;

    /* mailbox */
    pthread_mutex_t mbox_lock;
    net_taskq mbox;       /* guarded by mbox_lock */
    bool mbox_signalled;  /* guarded by mbox_lock: a wake-up is on its way
                           * (wake_fd written, or mbox_ready set by the loop
                           * posting to itself) */
    net_taskq mbox_spare; /* loop thread only: recycled array */
    bool mbox_ready;      /* loop thread only: drain the mailbox */
    bool wake_readable;   /* loop thread only: epoll reported wake_fd */

    void (*hook)(net_loop *, void *);
    void *hook_arg;
    void *user;

    uint8_t *rbuf; /* NET_RBUF_SIZE, shared by all connections of the loop */

    /* connections */
    net_conn *conns; /* the open ones, doubly linked */
    size_t nconns;   /* open and closing ones (those not yet freed) */
    net_conn *dirty;   /* output to flush at the end of the iteration */
    net_conn *pending; /* input to (re)offer without waiting for epoll */
    net_conn *closing; /* to close at the end of the iteration (by next) */
    struct net_migration *migrations; /* to hand to other loops, ditto */

    net_listener *listeners;

    bool hook_due;    /* callbacks ran after the hook: iterate again at once */
    bool stopping;    /* shutdown hook ran, connections are being closed */
    bool stop_done;   /* all connections closed; waiting for other loops */
    pthread_t thread;
};

/* loop.c */
net_loop *net_loop_new(net_server *s, unsigned index, char *err, size_t errlen);
void net_loop_free(net_loop *l);
/* Runs what is left in a stopped loop's mailbox (a few rounds, with the
 * end-of-iteration work), on the calling thread. */
void net_loop_run_late_tasks(net_loop *l);
void net_loop_run(net_loop *l);
void net_loop_wake(net_loop *l);
/* server.c, called by loop.c */
bool net_server_stop_requested(const net_server *s);
void net_server_loop_started(net_server *s, net_loop *l);
void net_server_loop_stopping(net_server *s, net_loop *l);
bool net_server_loop_finished(net_server *s, net_loop *l);
void net_server_on_signal(net_server *s);

/* timer.c */
int net_timers_timeout(net_loop *l); /* epoll_wait timeout: -1, 0 or ms */
void net_timers_run(net_loop *l);

/* listener.c */
net_listener *net_listener_new(net_loop *l, int fd, const net_listen_cfg *cfg);
void net_listener_event(net_listener *ln);
void net_listener_close_all(net_loop *l);

/* ---- connections -------------------------------------------------------- */

enum net_conn_flag {
    NC_OPENED = 1u << 0,      /* on_open returned non-NULL: on_close is owed */
    NC_USER_PAUSED = 1u << 1, /* net_conn_pause_input(c, true) */
    NC_BP_PAUSED = 1u << 2,   /* output above the high-water mark */
    NC_CLOSING = 1u << 3,
    NC_CLOSE_FLUSH = 1u << 4,
    NC_IN_DIRTY = 1u << 5,
    NC_IN_PENDING = 1u << 6,
    NC_REOFFER = 1u << 7,      /* offer the buffered tail again */
    NC_OUT_BLOCKED = 1u << 8,  /* last write hit EAGAIN: wait for EPOLLOUT */
    NC_HANDSHAKE = 1u << 9,    /* TLS handshake in progress */
    NC_HS_WANT_READ = 1u << 10,
    NC_HS_WANT_WRITE = 1u << 11,
    NC_RD_WANT_WR = 1u << 12, /* SSL_read wants the socket writable */
    NC_WR_WANT_RD = 1u << 13, /* SSL_write wants the socket readable */
    NC_DISCARD = 1u << 14,    /* closing without flush: drop output */
    NC_MIGRATING = 1u << 15,  /* net_conn_migrate: owned by no loop's epoll */
    NC_EV_IN = 1u << 16,      /* EPOLLIN is registered */
    NC_EV_OUT = 1u << 17,     /* EPOLLOUT is registered */
    NC_TLS = 1u << 18,        /* a TLS listener's: the net_tls slot follows */
    NC_IN_WHILE_PAUSED = 1u << 19, /* input arrived while paused: EPOLLIN is
                                    * dropped until input resumes */
};

/* A connection in transit between loops (net_conn_migrate). */
typedef struct net_migration {
    net_conn *c;
    void (*done)(net_loop *target, net_conn *c, void *arg);
    void *arg;
    net_loop *target;
    struct net_migration *next;
} net_migration;

typedef struct net_tls net_tls;

/* A connection's input tail or output queue, allocated only while it holds
 * bytes: an idle connection carries one pointer for each (the positions
 * live in the buffer, not in every net_conn). */
typedef struct net_buf {
    size_t head; /* output: bytes already sent; input: always 0 */
    size_t len;  /* bytes in data[] (output: [head, len) still queued) */
    size_t cap;
    uint8_t data[];
} net_buf;

/* Kept small because one is held per connection (96 bytes, in the same
 * block as the upper layer's state, net_conn_user_area, instead of hanging
 * on a pointer): the registered epoll interest is two flag bits, only a TLS
 * connection carries a net_tls pointer (last in the block, net_conn_tls),
 * there is no id (logs name a connection by its peer, the broker numbers
 * its clients itself), and the open and closing lists share one pair of
 * links. */
struct net_conn {
    int kind; /* NET_K_CONN; must be first */
    int fd;
    uint32_t flags;
    /* The peer's address, kept only for logs: family, port (network
     * order) and the 4 or 16 address bytes — 20 bytes instead of a 28-byte
     * sockaddr_in6, and formatted when a log line asks (an idle connection
     * should not carry its text). */
    struct {
        uint16_t family;
        uint16_t port;
        uint8_t addr[16];
    } peer;
    net_loop *loop;
    const net_listen_cfg *cfg;
    /* Behind the struct: the upper layer's state (net_conn_user), then the
     * net_tls pointer (NC_TLS); see net_conn_user_area. */
    /* loop->conns while open; once closing, next links loop->closing
     * (net_conn_close moves it: never on both, and on neither only while
     * it moves between loops) */
    net_conn *prev, *next;
    net_conn *dirty_next, *pending_next; /* work lists */

    net_buf *in;  /* incomplete input tail; NULL when none */
    net_buf *out; /* output queue; NULL when empty */
};

/* A connection's block: the struct, the upper layer's state (or the
 * pointer to it) right behind it — at a fixed offset, so the upper layer
 * can find the connection from its state (net_conn_of_user) — and, on a
 * TLS listener's connections only, the net_tls pointer last. */

/* The bytes kept for the upper layer: its handler's user_size, or a
 * pointer's worth; rounded to 8 so the TLS slot after them is aligned. */
static inline size_t net_conn_user_bytes(const net_listen_cfg *cfg)
{
    size_t n = cfg->handler.user_size ? cfg->handler.user_size : sizeof(void *);
    return (n + 7) & ~(size_t)7;
}

static inline void *net_conn_user_area(const net_conn *c) { return (void *)(c + 1); }

/* The TLS state's slot of a connection accepted on a TLS listener. */
static inline net_tls **net_conn_tls_slot(const net_conn *c)
{
    return (net_tls **)((char *)(c + 1) + net_conn_user_bytes(c->cfg));
}

/* The connection's TLS state; NULL for plain TCP (and once freed). */
static inline net_tls *net_conn_tls(const net_conn *c)
{
    return (c->flags & NC_TLS) ? *net_conn_tls_slot(c) : NULL;
}

/* The epoll events registered for c (NC_EV_IN / NC_EV_OUT). */
static inline uint32_t net_conn_registered_events(const net_conn *c)
{
    return ((c->flags & NC_EV_IN) ? (uint32_t)EPOLLIN : 0) |
           ((c->flags & NC_EV_OUT) ? (uint32_t)EPOLLOUT : 0);
}

static inline void net_conn_set_registered_events(net_conn *c, uint32_t ev)
{
    c->flags = (c->flags & ~(uint32_t)(NC_EV_IN | NC_EV_OUT)) |
               ((ev & EPOLLIN) ? NC_EV_IN : 0) | ((ev & EPOLLOUT) ? NC_EV_OUT : 0);
}

/* conn.c */
void net_conn_accepted(net_loop *l, int fd, const net_listen_cfg *cfg,
                       const struct sockaddr_storage *peer);
void net_conn_event(net_conn *c, uint32_t events);
void net_conns_run_pending(net_loop *l);
void net_conns_flush(net_loop *l);
void net_conns_close_pending(net_loop *l);
void net_conns_close_all(net_loop *l);
bool net_conns_have_work(const net_loop *l);
void net_conn_open(net_conn *c);            /* calls on_open */
void net_conn_update_events(net_conn *c);
void net_conn_add_pending(net_conn *c);
/* Queues c's output for this iteration's flush (the dirty list). */
void net_conn_mark_dirty(net_conn *c);
/* The epoll events c needs now (handshake, back-pressure, blocked output). */
uint32_t net_conn_wanted_events(const net_conn *c);
/* Puts c on loop l's connection list / takes it off its loop's lists. */
void net_conn_link(net_loop *l, net_conn *c);
void net_conn_unlink(net_conn *c);
/* Frees c and its buffers and TLS state (the socket is already closed). */
void net_conn_release(net_conn *c);

/* migrate.c */
void net_conns_hand_off(net_loop *l);
void net_conn_migrate_attach(net_loop *l, void *arg); /* a mailbox task */
void net_conn_migrate_abandon(net_migration *m);      /* its loop is gone */

/* tls.c. I/O results: >0 bytes, 0 end of stream, NET_IO_AGAIN, NET_IO_ERROR. */
#define NET_IO_AGAIN (-1)
#define NET_IO_ERROR (-2)
SSL_CTX *net_tls_ctx_new(const net_tls_config *cfg, char *err, size_t errlen);
void net_tls_ctx_free(SSL_CTX *ctx);
bool net_tls_conn_start(net_conn *c, SSL_CTX *ctx);
void net_tls_conn_free(net_conn *c);
int net_tls_handshake(net_conn *c); /* 1 done, 0 in progress, -1 failed */
ssize_t net_tls_read(net_conn *c, uint8_t *buf, size_t len);
ssize_t net_tls_write(net_conn *c, const uint8_t *buf, size_t len);
bool net_tls_has_pending(const net_conn *c);
void net_tls_shutdown(net_conn *c);

#endif

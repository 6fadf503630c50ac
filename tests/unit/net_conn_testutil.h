/*
 * net_conn_testutil.h — what the plain TCP connection tests
 * (test_net_conn.c, test_net_conn_lifecycle.c) share: blocking clients and
 * a test server whose connections obey a small line protocol.
 *
 * The server is a net_server on 127.0.0.1, port 0, run on a thread of its
 * own (start_server, add_listener, run_server, stop_server). A test talks to
 * it through plain blocking sockets with a 10 s send and receive timeout, so
 * a missing reply fails the test instead of hanging it. A listener's mode
 * says what its connections do: echo (MODE_ECHO), flood (MODE_FLOOD), or
 * echo complete lines and obey the commands among them (MODE_LINES: bye,
 * quit, pause, longpause, move, movequit, watch, memcheck), so a test drives
 * the server's side of a connection from the client's side.
 *
 * The callbacks run on loop threads, where a failing cmocka assert would
 * jump out of the wrong thread, so they count what they see in the global
 * state S and any problem in S.errors or S.double_close; stop_server checks
 * those and one on_close per on_open. on_open also checks what every connection should
 * have: TCP_NODELAY inherited from the listener, no TLS, a 127.0.0.1 peer.
 * S is static and each test binary is one file that includes this header,
 * so each binary has exactly one. The functions are static inline so that a
 * file using only some of them is not warned about the rest.
 */
#ifndef IOTHUBD_TESTS_NET_CONN_TESTUTIL_H
#define IOTHUBD_TESTS_NET_CONN_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/internal.h"
#include "net/server.h"
#include "socket_testutil.h"
#include "util/time.h"

/* ---- client helpers ----------------------------------------------------- */

static inline int client_connect(int port, int rcvbuf)
{
    return loopback_connect(port, 10, rcvbuf);
}

static inline void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static inline void send_str(int fd, const char *s) { send_all(fd, s, strlen(s)); }

static inline void read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail_msg("read_exact: %s", n == 0 ? "EOF" : strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static inline void expect_str(int fd, const char *s)
{
    size_t n = strlen(s);
    char *buf = calloc(1, n + 1);
    read_exact(fd, buf, n);
    assert_string_equal(buf, s);
    free(buf);
}

/* true if the peer closed (EOF or reset) within the receive timeout */
static inline bool expect_eof(int fd)
{
    char c;
    for (;;) {
        ssize_t n = recv(fd, &c, 1, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0 && errno == EINTR)
            continue;
        return false;
    }
}

/* ---- server fixture ----------------------------------------------------- */

typedef struct tconn {
    net_conn *c;
    net_timer timer;
    int mode;
    bool listed;
    bool in_place; /* in the connection's block (handler_in_place) */
    struct tconn *next, *prev;
} tconn;

enum { MODE_ECHO, MODE_LINES, MODE_FLOOD };

static struct {
    net_server *s;
    pthread_t thread;
    intptr_t rc;
    int port;
    atomic_int opened, closed, drains, inputs, shutdowns, inits;
    atomic_int opened_on[4];
    atomic_size_t max_queued, max_tail;
    tconn *per_loop[4]; /* touched only by that loop */
    atomic_int double_close, errors, migrated, closed_on[4];
    atomic_int resumes, iterations;
    atomic_bool in_interest_at_resume; /* EPOLLIN still registered then */
    tconn *watcher;    /* single-loop test only: told about closes by the hook */
    int outbox;        /* closes not yet reported; loop thread only */
} S;

static inline size_t lines_input(net_conn *c, tconn *t, const uint8_t *data, size_t len);

static inline void list_add(tconn *t, unsigned li)
{
    t->prev = NULL;
    t->next = S.per_loop[li];
    if (t->next)
        t->next->prev = t;
    S.per_loop[li] = t;
    t->listed = true;
}

static inline void list_remove(tconn *t, unsigned li)
{
    if (!t->listed)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        S.per_loop[li] = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->listed = false;
}

static inline bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* With handler_in_place the state is `area`, zeroed, in the connection's
 * own block; otherwise a block of our own. */
static inline void *on_open(net_conn *c, void *area, void *arg)
{
    if (area && !all_zero(area, sizeof(tconn)))
        atomic_fetch_add(&S.errors, 1);
    tconn *t = area ? area : calloc(1, sizeof *t);
    t->in_place = area != NULL;
    t->c = c;
    t->mode = (int)(intptr_t)arg;
    unsigned li = net_loop_index(net_conn_loop(c));
    list_add(t, li);
    atomic_fetch_add(&S.opened, 1);
    atomic_fetch_add(&S.opened_on[li], 1);
    /* no cmocka asserts on loop threads: count problems instead */
    int nodelay = 0;
    socklen_t optlen = sizeof nodelay;
    if (getsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &optlen) != 0 || !nodelay)
        atomic_fetch_add(&S.errors, 1); /* inherited from the listener */
    if (net_conn_is_tls(c) || net_conn_peer_cert(c) || net_conn_sni(c) ||
        net_conn_peer_cert_verified(c) ||
        strncmp(net_conn_peer_str(c), "127.0.0.1:", 10) != 0)
        atomic_fetch_add(&S.errors, 1);
    return t;
}

static inline void note_queued(net_conn *c)
{
    size_t q = net_conn_out_queued(c), m = atomic_load(&S.max_queued);
    while (q > m && !atomic_compare_exchange_weak(&S.max_queued, &m, q))
        ;
}

static inline size_t on_input(net_conn *c, void *user, const uint8_t *data, size_t len)
{
    tconn *t = user;
    atomic_fetch_add(&S.inputs, 1);
    switch (t->mode) {
    case MODE_ECHO:
        if (!net_conn_write(c, data, len))
            atomic_fetch_add(&S.errors, 1);
        note_queued(c);
        return len;
    case MODE_FLOOD: {
        uint8_t *p = net_conn_reserve(c, 256 * 1024);
        if (!p) {
            atomic_fetch_add(&S.errors, 1);
            return len;
        }
        memset(p, 'x', 256 * 1024);
        net_conn_commit(c, 256 * 1024);
        return len;
    }
    default:
        return lines_input(c, t, data, len);
    }
}

static inline void on_drain(net_conn *c, void *user)
{
    (void)c;
    (void)user;
    atomic_fetch_add(&S.drains, 1);
}

static inline void on_close(net_conn *c, void *user)
{
    tconn *t = user;
    if (t->c != c)
        atomic_fetch_add(&S.double_close, 1);
    if (S.watcher == t)
        S.watcher = NULL;
    else if (S.watcher)
        S.outbox++; /* like a broker queuing a Will: delivered by the hook */
    t->c = NULL;
    net_timer_stop(net_conn_loop(c), &t->timer);
    unsigned li = net_loop_index(net_conn_loop(c));
    list_remove(t, li);
    if (net_conn_user(c) != t)
        atomic_fetch_add(&S.errors, 1);
    if (!t->in_place)
        free(t); /* else it goes with the connection */
    atomic_fetch_add(&S.closed_on[li], 1);
    atomic_fetch_add(&S.closed, 1);
}

static const net_conn_handler handler = {
    .on_open = on_open, .on_input = on_input, .on_drain = on_drain, .on_close = on_close};
static const net_conn_handler handler_in_place = {
    .user_size = sizeof(tconn),
    .on_open = on_open, .on_input = on_input, .on_drain = on_drain, .on_close = on_close};

/* Line protocol: complete lines are echoed; commands change behaviour. */
static inline void resume_cb(net_loop *l, net_timer *tm)
{
    (void)l;
    tconn *t = (tconn *)((char *)tm - offsetof(tconn, timer));
    atomic_store(&S.in_interest_at_resume, (t->c->flags & NC_EV_IN) != 0);
    atomic_fetch_add(&S.resumes, 1);
    net_conn_pause_input(t->c, false);
}

static inline void memcheck_cb(net_loop *l, net_timer *tm)
{
    (void)l;
    tconn *t = (tconn *)((char *)tm - offsetof(tconn, timer));
    net_conn *c = t->c;
    bool idle = c->in == NULL && c->out == NULL;
    net_conn_write(c, idle ? "idle\n" : "busy\n", 5);
}

static inline void moved_cb(net_loop *l, net_conn *c, void *arg)
{
    tconn *t = arg;
    if (net_conn_loop(c) != l || t->c != c)
        atomic_fetch_add(&S.errors, 1);
    list_add(t, net_loop_index(l));
    char buf[32];
    int n = snprintf(buf, sizeof buf, "moved %u\n", net_loop_index(l));
    net_conn_write(c, buf, (size_t)n);
    atomic_fetch_add(&S.migrated, 1);
    net_conn_pause_input(c, false); /* offers the kept "after" at once */
}

static inline net_loop *other_loop(net_conn *c)
{
    unsigned li = net_loop_index(net_conn_loop(c));
    return net_server_loop(S.s, (li + 1) % net_server_loop_count(S.s));
}

static inline size_t lines_input(net_conn *c, tconn *t, const uint8_t *data, size_t len)
{
    size_t used = 0;
    size_t tail = len;
    if (tail > atomic_load(&S.max_tail))
        atomic_store(&S.max_tail, tail);
    while (used < len) {
        const uint8_t *nl = memchr(data + used, '\n', len - used);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (data + used)) + 1;
        const char *line = (const char *)data + used;
        used += n;
        if (n == 4 && memcmp(line, "bye\n", 4) == 0) {
            net_conn_write(c, "goodbye\n", 8);
            net_conn_close(c, true);
            net_conn_close(c, true); /* idempotent */
            return used;
        }
        if (n == 5 && memcmp(line, "quit\n", 5) == 0) {
            net_conn_write(c, "never seen\n", 11);
            net_conn_close(c, false);
            return used;
        }
        if ((n == 6 && memcmp(line, "pause\n", 6) == 0) ||
            (n == 10 && memcmp(line, "longpause\n", 10) == 0)) {
            net_conn_write(c, line, n);
            net_conn_pause_input(c, true);
            net_timer_start(net_conn_loop(c), &t->timer, n == 6 ? 50 : 500, resume_cb);
            return used; /* the rest is offered again after the resume */
        }
        if (n == 5 && memcmp(line, "move\n", 5) == 0) {
            net_conn_write(c, "moving\n", 7);
            list_remove(t, net_loop_index(net_conn_loop(c)));
            net_conn_migrate(c, other_loop(c), moved_cb, t);
            return used; /* the rest travels with it */
        }
        if (n == 9 && memcmp(line, "movequit\n", 9) == 0) {
            net_conn_migrate(c, other_loop(c), moved_cb, t);
            net_conn_close(c, false); /* before the hand-off: closes here */
            return used;
        }
        if (n == 6 && memcmp(line, "watch\n", 6) == 0) {
            S.watcher = t;
            net_conn_write(c, "watching\n", 9);
            continue;
        }
        if (n == 9 && memcmp(line, "memcheck\n", 9) == 0) {
            net_timer_start(net_conn_loop(c), &t->timer, 30, memcheck_cb);
            continue;
        }
        net_conn_write(c, line, n);
    }
    return used;
}

static inline void loop_init(net_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    atomic_fetch_add(&S.inits, 1);
}

static inline void loop_shutdown(net_loop *l, void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.shutdowns, 1);
    for (tconn *t = S.per_loop[net_loop_index(l)]; t; t = t->next)
        net_conn_write(t->c, "shutdown\n", 9);
}

static inline void iteration_hook(net_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    atomic_fetch_add(&S.iterations, 1);
    for (; S.outbox > 0 && S.watcher; S.outbox--)
        net_conn_write(S.watcher->c, "peer closed\n", 12);
}

static inline void init_with_hook(net_loop *l, void *arg)
{
    loop_init(l, arg);
    net_loop_set_iteration_hook(l, iteration_hook, NULL);
}

static inline void *server_thread(void *arg)
{
    (void)arg;
    S.rc = net_server_run(S.s);
    return NULL;
}

static inline int add_listener_with(const net_conn_handler *h, int mode, const net_conn_limits *lim)
{
    char err[256];
    int port = 0;
    if (!net_server_listen(S.s, "127.0.0.1:0", NULL, h, (void *)(intptr_t)mode, lim, &port, err,
                           sizeof err))
        fail_msg("listen: %s", err);
    assert_true(port > 0);
    return port;
}

static inline int add_listener(int mode, const net_conn_limits *lim)
{
    return add_listener_with(&handler, mode, lim);
}

static inline void start_server(unsigned loops)
{
    memset(&S, 0, sizeof S);
    char err[256];
    S.s = net_server_new(loops, err, sizeof err);
    assert_non_null(S.s);
    net_server_set_loop_hooks(S.s, loop_init, loop_shutdown, NULL);
}

static inline void run_server(void) { pthread_create(&S.thread, NULL, server_thread, NULL); }

static inline void wait_for(atomic_int *v, int want)
{
    uint64_t end = time_mono_ms() + 10000;
    while (atomic_load(v) < want && time_mono_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(v), want);
}

static inline void stop_server(void)
{
    net_server_stop(S.s);
    pthread_join(S.thread, NULL);
    assert_int_equal(S.rc, 0);
    assert_int_equal(atomic_load(&S.opened), atomic_load(&S.closed));
    assert_int_equal(atomic_load(&S.double_close), 0);
    assert_int_equal(atomic_load(&S.errors), 0);
    net_server_free(S.s);
}

#endif

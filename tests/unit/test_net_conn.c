/*
 * test_net_conn.c — plain TCP connections over real 127.0.0.1 sockets:
 * partial input, max_input, back-pressure with on_drain, out_cap, pause and
 * re-offer, lazy dropping of input interest, TCP_NODELAY inherited, deferred close with flush, idle memory, shutdown (net_server_stop
 * and SIGTERM), SO_REUSEPORT across two loops, bind errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/internal.h"
#include "net/server.h"
#include "util/log.h"
#include "util/time.h"

/* ---- client helpers ----------------------------------------------------- */

static int client_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
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

static void send_str(int fd, const char *s) { send_all(fd, s, strlen(s)); }

static void read_exact(int fd, void *buf, size_t len)
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

static void expect_str(int fd, const char *s)
{
    size_t n = strlen(s);
    char *buf = calloc(1, n + 1);
    read_exact(fd, buf, n);
    assert_string_equal(buf, s);
    free(buf);
}

/* true if the peer closed (EOF or reset) within the receive timeout */
static bool expect_eof(int fd)
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

static size_t lines_input(net_conn *c, tconn *t, const uint8_t *data, size_t len);

static void list_add(tconn *t, unsigned li)
{
    t->prev = NULL;
    t->next = S.per_loop[li];
    if (t->next)
        t->next->prev = t;
    S.per_loop[li] = t;
    t->listed = true;
}

static void list_remove(tconn *t, unsigned li)
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

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* With handler_in_place the state is `area`, zeroed, in the connection's
 * own block; otherwise a block of our own. */
static void *on_open(net_conn *c, void *area, void *arg)
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

static void note_queued(net_conn *c)
{
    size_t q = net_conn_out_queued(c), m = atomic_load(&S.max_queued);
    while (q > m && !atomic_compare_exchange_weak(&S.max_queued, &m, q))
        ;
}

static size_t on_input(net_conn *c, void *user, const uint8_t *data, size_t len)
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

static void on_drain(net_conn *c, void *user)
{
    (void)c;
    (void)user;
    atomic_fetch_add(&S.drains, 1);
}

static void on_close(net_conn *c, void *user)
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
static void resume_cb(net_loop *l, net_timer *tm)
{
    (void)l;
    tconn *t = (tconn *)((char *)tm - offsetof(tconn, timer));
    atomic_store(&S.in_interest_at_resume, (t->c->flags & NC_EV_IN) != 0);
    atomic_fetch_add(&S.resumes, 1);
    net_conn_pause_input(t->c, false);
}

static void memcheck_cb(net_loop *l, net_timer *tm)
{
    (void)l;
    tconn *t = (tconn *)((char *)tm - offsetof(tconn, timer));
    net_conn *c = t->c;
    bool idle = c->in == NULL && c->out == NULL;
    net_conn_write(c, idle ? "idle\n" : "busy\n", 5);
}

static void moved_cb(net_loop *l, net_conn *c, void *arg)
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

static net_loop *other_loop(net_conn *c)
{
    unsigned li = net_loop_index(net_conn_loop(c));
    return net_server_loop(S.s, (li + 1) % net_server_loop_count(S.s));
}

static size_t lines_input(net_conn *c, tconn *t, const uint8_t *data, size_t len)
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

static void loop_init(net_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    atomic_fetch_add(&S.inits, 1);
}

static void loop_shutdown(net_loop *l, void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.shutdowns, 1);
    for (tconn *t = S.per_loop[net_loop_index(l)]; t; t = t->next)
        net_conn_write(t->c, "shutdown\n", 9);
}

static void iteration_hook(net_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    atomic_fetch_add(&S.iterations, 1);
    for (; S.outbox > 0 && S.watcher; S.outbox--)
        net_conn_write(S.watcher->c, "peer closed\n", 12);
}

static void init_with_hook(net_loop *l, void *arg)
{
    loop_init(l, arg);
    net_loop_set_iteration_hook(l, iteration_hook, NULL);
}

static void *server_thread(void *arg)
{
    (void)arg;
    S.rc = net_server_run(S.s);
    return NULL;
}

static int add_listener_with(const net_conn_handler *h, int mode, const net_conn_limits *lim)
{
    char err[256];
    int port = 0;
    if (!net_server_listen(S.s, "127.0.0.1:0", NULL, h, (void *)(intptr_t)mode, lim, &port, err,
                           sizeof err))
        fail_msg("listen: %s", err);
    assert_true(port > 0);
    return port;
}

static int add_listener(int mode, const net_conn_limits *lim)
{
    return add_listener_with(&handler, mode, lim);
}

static void start_server(unsigned loops)
{
    memset(&S, 0, sizeof S);
    char err[256];
    S.s = net_server_new(loops, err, sizeof err);
    assert_non_null(S.s);
    net_server_set_loop_hooks(S.s, loop_init, loop_shutdown, NULL);
}

static void run_server(void) { pthread_create(&S.thread, NULL, server_thread, NULL); }

static void wait_for(atomic_int *v, int want)
{
    uint64_t end = time_mono_ms() + 10000;
    while (atomic_load(v) < want && time_mono_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(v), want);
}

static void stop_server(void)
{
    net_server_stop(S.s);
    pthread_join(S.thread, NULL);
    assert_int_equal(S.rc, 0);
    assert_int_equal(atomic_load(&S.opened), atomic_load(&S.closed));
    assert_int_equal(atomic_load(&S.double_close), 0);
    assert_int_equal(atomic_load(&S.errors), 0);
    net_server_free(S.s);
}

/* ---- tests -------------------------------------------------------------- */

static void test_partial_reads_and_max_input(void **state)
{
    (void)state;
    start_server(1);
    net_conn_limits lim = {.max_input = 64, .out_high = 1 << 20, .out_low = 1 << 18,
                           .out_cap = 8 << 20};
    int port = add_listener(MODE_LINES, &lim);
    run_server();

    int fd = client_connect(port, 0);
    const char *msg = "hello, one byte at a time\n";
    for (const char *p = msg; *p; p++) {
        send_all(fd, p, 1);
        usleep(2000);
    }
    expect_str(fd, msg);
    assert_true(atomic_load(&S.inputs) >= 10); /* really arrived in pieces */

    /* several lines in one write, one split across writes */
    send_str(fd, "a\nbb\ncc");
    usleep(10000);
    send_str(fd, "c\n");
    expect_str(fd, "a\nbb\nccc\n");

    /* an incomplete "packet" over max_input closes the connection */
    char big[100];
    memset(big, 'z', sizeof big);
    send_all(fd, big, sizeof big);
    assert_true(expect_eof(fd));
    close(fd);
    wait_for(&S.closed, 1);
    stop_server();
}

static void test_pause_reoffer_and_memory(void **state)
{
    (void)state;
    start_server(1);
    int port = add_listener(MODE_LINES, NULL);
    run_server();
    int fd = client_connect(port, 0);

    uint64_t t0 = time_mono_ms();
    send_str(fd, "pause\nafter\n");
    expect_str(fd, "pause\n");
    expect_str(fd, "after\n"); /* kept while paused, offered again on resume */
    assert_true(time_mono_ms() - t0 >= 40);

    /* after traffic, an idle connection holds no buffers */
    send_str(fd, "x\nmemcheck\n");
    expect_str(fd, "x\n");
    expect_str(fd, "idle\n");
    print_message("sizeof(struct net_conn) = %zu bytes; idle buffers: none\n",
                  sizeof(struct net_conn));
    assert_true(sizeof(struct net_conn) <= 512);
    close(fd);
    wait_for(&S.closed, 1);
    stop_server();
}

/* A pause drops the interest in input only once input arrives while it
 * lasts: a pause nothing interrupts costs no epoll_ctl (EPOLLIN is still
 * registered when it ends), and one that input interrupts does not make
 * the level-triggered loop spin on the unread bytes. */
static void test_pause_drops_interest_lazily(void **state)
{
    (void)state;
    start_server(1);
    net_server_set_loop_hooks(S.s, init_with_hook, loop_shutdown, NULL);
    int port = add_listener(MODE_LINES, NULL);
    run_server();
    int fd = client_connect(port, 0);

    send_str(fd, "pause\n");
    expect_str(fd, "pause\n");
    wait_for(&S.resumes, 1);
    assert_true(atomic_load(&S.in_interest_at_resume));
    send_str(fd, "x\n");
    expect_str(fd, "x\n");

    send_str(fd, "longpause\n"); /* 500 ms: "later" surely comes within */
    expect_str(fd, "longpause\n");
    int before = atomic_load(&S.iterations);
    send_str(fd, "later\n"); /* arrives while paused */
    expect_str(fd, "later\n");
    assert_int_equal(atomic_load(&S.resumes), 2);
    assert_false(atomic_load(&S.in_interest_at_resume));
    int spent = atomic_load(&S.iterations) - before;
    print_message("loop iterations while paused with input waiting: %d\n", spent);
    assert_true(spent < 20); /* a spinning loop makes thousands in 500 ms */
    close(fd);
    wait_for(&S.closed, 1);
    stop_server();
}

typedef struct {
    int fd;
    size_t total;
} writer_arg;

static uint8_t pattern_at(size_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static void *writer(void *arg)
{
    writer_arg *w = arg;
    uint8_t buf[32768];
    size_t off = 0;
    while (off < w->total) {
        size_t n = w->total - off < sizeof buf ? w->total - off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_at(off + i);
        send_all(w->fd, buf, n);
        off += n;
    }
    return NULL;
}

static void test_backpressure_and_drain(void **state)
{
    (void)state;
    start_server(1);
    net_conn_limits lim = {.out_high = 64 * 1024, .out_low = 16 * 1024,
                           .out_cap = 64 << 20};
    int port = add_listener(MODE_ECHO, &lim);
    run_server();

    int fd = client_connect(port, 64 * 1024);
    writer_arg w = {fd, 6u << 20};
    pthread_t th;
    pthread_create(&th, NULL, writer, &w);
    uint8_t buf[16384];
    size_t got = 0;
    bool ok = true;
    int reads = 0;
    while (got < w.total) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            fail_msg("recv after %zu bytes: %s", got, n ? strerror(errno) : "EOF");
        for (ssize_t i = 0; i < n; i++)
            ok &= buf[i] == pattern_at(got + (size_t)i);
        got += (size_t)n;
        if (++reads % 8 == 0)
            usleep(1000); /* a slow reader */
    }
    pthread_join(th, NULL);
    assert_true(ok);
    print_message("echoed %zu bytes; drains %d; max queued %zu\n", got,
                  atomic_load(&S.drains), atomic_load(&S.max_queued));
    assert_true(atomic_load(&S.drains) > 0);
    assert_true(atomic_load(&S.max_queued) <= lim.out_high + NET_RBUF_SIZE);
    close(fd);
    wait_for(&S.closed, 1);
    stop_server();
}

static void test_out_cap_closes_non_reader(void **state)
{
    (void)state;
    start_server(1);
    net_conn_limits lim = {.out_high = 0, .out_low = 0, .out_cap = 1 << 20};
    int port = add_listener(MODE_FLOOD, &lim);
    run_server();

    int fd = client_connect(port, 4096);
    uint64_t end = time_mono_ms() + 10000;
    while (atomic_load(&S.closed) == 0 && time_mono_ms() < end) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) < 0)
            break;
        usleep(2000);
    }
    wait_for(&S.closed, 1);
    close(fd);
    stop_server();
}

static void test_deferred_close(void **state)
{
    (void)state;
    start_server(1);
    int port = add_listener(MODE_LINES, NULL);
    run_server();

    /* close with flush: the last bytes arrive, then EOF */
    int fd = client_connect(port, 0);
    send_str(fd, "one\nbye\nignored\n");
    expect_str(fd, "one\ngoodbye\n");
    assert_true(expect_eof(fd));
    close(fd);

    /* close without flush: EOF, nothing queued is sent */
    fd = client_connect(port, 0);
    send_str(fd, "quit\n");
    assert_true(expect_eof(fd));
    close(fd);

    /* the peer goes away: on_close exactly once */
    fd = client_connect(port, 0);
    send_str(fd, "x\n");
    expect_str(fd, "x\n");
    close(fd);
    wait_for(&S.closed, 3);
    assert_int_equal(atomic_load(&S.opened), 3);
    stop_server();
}

static void test_shutdown_two_loops_reuseport(void **state)
{
    (void)state;
    enum { N = 40 };
    start_server(2);
    int port = add_listener(MODE_LINES, NULL);
    run_server();
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = client_connect(port, 0);
    for (int i = 0; i < N; i++) {
        send_str(fds[i], "hi\n");
        expect_str(fds[i], "hi\n");
    }
    wait_for(&S.opened, N);
    print_message("loop 0: %d connections, loop 1: %d\n", atomic_load(&S.opened_on[0]),
                  atomic_load(&S.opened_on[1]));
    assert_true(atomic_load(&S.opened_on[0]) > 0);
    assert_true(atomic_load(&S.opened_on[1]) > 0);

    /* stop from this (another) thread: the shutdown hook's goodbye is
     * flushed, every connection closed with on_close */
    net_server_stop(S.s);
    pthread_join(S.thread, NULL);
    assert_int_equal(S.rc, 0);
    assert_int_equal(atomic_load(&S.inits), 2);
    assert_int_equal(atomic_load(&S.shutdowns), 2);
    assert_int_equal(atomic_load(&S.closed), N);
    for (int i = 0; i < N; i++) {
        expect_str(fds[i], "shutdown\n");
        assert_true(expect_eof(fds[i]));
        close(fds[i]);
    }
    /* nothing listens any more */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), -1);
    close(fd);
    net_server_free(S.s);
}

static void run_migrate(const net_conn_handler *h)
{
    start_server(2);
    int port = add_listener_with(h, MODE_LINES, NULL);
    run_server();
    int fd = client_connect(port, 0);
    send_str(fd, "x\n");
    expect_str(fd, "x\n");
    wait_for(&S.opened, 1);
    int from = atomic_load(&S.opened_on[0]) ? 0 : 1;

    /* queued output and kept input travel; input resumes on the new loop */
    char want[64];
    send_str(fd, "a\nmove\nafter\n");
    snprintf(want, sizeof want, "a\nmoving\nmoved %d\nafter\n", 1 - from);
    expect_str(fd, want);
    /* and back, with input arriving while in transit */
    send_str(fd, "move\nb");
    usleep(5000);
    send_str(fd, "c\n");
    snprintf(want, sizeof want, "moving\nmoved %d\nbc\n", from);
    expect_str(fd, want);
    assert_int_equal(atomic_load(&S.migrated), 2);

    /* a close before the hand-off wins: on_close on the old loop */
    int fd2 = client_connect(port, 0);
    send_str(fd2, "y\n");
    expect_str(fd2, "y\n");
    send_str(fd2, "movequit\n");
    assert_true(expect_eof(fd2));
    close(fd2);
    wait_for(&S.closed, 1);
    assert_int_equal(atomic_load(&S.migrated), 2);

    /* the migrated connection is closed by its new loop */
    close(fd);
    wait_for(&S.closed, 2);
    stop_server();
}

static void test_migrate(void **state)
{
    (void)state;
    run_migrate(&handler);
}

/* The same with the upper layer's state in the connection's own block (a
 * handler with a user_size): zeroed at open, the same bytes in every
 * callback and through net_conn_user (on_open and on_close count any
 * difference as an error, which stop_server checks), across moves between
 * loops, and freed with the connection (ASan: no leak, no use after
 * free). */
static void test_migrate_state_in_place(void **state)
{
    (void)state;
    run_migrate(&handler_in_place);
}

/* Connections bouncing between loops while the server stops: every one
 * still gets exactly one on_close, nothing leaks (ASan). */
static void test_migrate_during_shutdown(void **state)
{
    (void)state;
    enum { N = 16, MOVES = 200 };
    start_server(2);
    int port = add_listener(MODE_LINES, NULL);
    run_server();
    int fds[N];
    char buf[MOVES * 5];
    for (int i = 0; i < MOVES; i++)
        memcpy(buf + i * 5, "move\n", 5);
    for (int i = 0; i < N; i++)
        fds[i] = client_connect(port, 0);
    wait_for(&S.opened, N);
    for (int i = 0; i < N; i++)
        send_all(fds[i], buf, sizeof buf);
    usleep(2000);
    net_server_stop(S.s);
    pthread_join(S.thread, NULL);
    assert_int_equal(S.rc, 0);
    print_message("%d migrations before the stop\n", atomic_load(&S.migrated));
    assert_int_equal(atomic_load(&S.closed), N);
    assert_int_equal(atomic_load(&S.errors), 0);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    net_server_free(S.s);
}

/* What on_close leaves for the iteration hook goes out without waiting for
 * another event (the hook ran before on_close in that iteration). */
static void test_hook_after_on_close(void **state)
{
    (void)state;
    start_server(1);
    net_server_set_loop_hooks(S.s, init_with_hook, loop_shutdown, NULL);
    int port = add_listener(MODE_LINES, NULL);
    run_server();
    int w = client_connect(port, 0);
    send_str(w, "watch\n");
    expect_str(w, "watching\n");
    struct timeval tv = {.tv_sec = 1}; /* must not need a later wake-up */
    setsockopt(w, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 20; i++) {
        int fd = client_connect(port, 0);
        send_str(fd, "x\n");
        expect_str(fd, "x\n");
        close(fd);
        expect_str(w, "peer closed\n");
    }
    /* and one closed by the server itself */
    int fd = client_connect(port, 0);
    send_str(fd, "quit\n");
    expect_str(w, "peer closed\n");
    close(fd);
    close(w);
    wait_for(&S.closed, 22);
    stop_server();
}

static void test_sigterm(void **state)
{
    (void)state;
    start_server(2);
    int port = add_listener(MODE_LINES, NULL);
    run_server();
    wait_for(&S.inits, 2); /* signals are blocked by now */
    int fd = client_connect(port, 0);
    send_str(fd, "hi\n");
    expect_str(fd, "hi\n");
    pthread_kill(S.thread, SIGTERM);
    pthread_join(S.thread, NULL);
    assert_int_equal(S.rc, 0);
    assert_int_equal(atomic_load(&S.closed), 1);
    expect_str(fd, "shutdown\n");
    assert_true(expect_eof(fd));
    close(fd);
    net_server_free(S.s);
}

static void test_bind_errors(void **state)
{
    (void)state;
    /* a port someone else holds */
    int other = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(other, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(other, 1), 0);
    socklen_t al = sizeof a;
    getsockname(other, (struct sockaddr *)&a, &al);
    int taken = ntohs(a.sin_port);

    char err[256], hp[64], want[128];
    net_server *s = net_server_new(2, err, sizeof err);
    assert_non_null(s);
    snprintf(hp, sizeof hp, "127.0.0.1:%d", taken);
    assert_false(net_server_listen(s, hp, NULL, &handler, NULL, NULL, NULL, err, sizeof err));
    snprintf(want, sizeof want, "127.0.0.1:%d: Address already in use", taken);
    assert_string_equal(err, want);
    close(other);

    /* another server of ours (SO_REUSEPORT) must not be joined silently */
    int port = 0;
    assert_true(net_server_listen(s, "127.0.0.1:0", NULL, &handler, NULL, NULL, &port, err,
                                  sizeof err));
    net_server *s2 = net_server_new(1, err, sizeof err);
    snprintf(hp, sizeof hp, "127.0.0.1:%d", port);
    assert_false(net_server_listen(s2, hp, NULL, &handler, NULL, NULL, NULL, err, sizeof err));
    snprintf(want, sizeof want, "127.0.0.1:%d: Address already in use", port);
    assert_string_equal(err, want);

    assert_false(net_server_listen(s2, "nonsense", NULL, &handler, NULL, NULL, NULL, err,
                                   sizeof err));
    assert_false(net_server_listen(s2, "127.0.0.1:http", NULL, &handler, NULL, NULL, NULL,
                                   err, sizeof err));
    /* IPv6 form parses (binding may fail where IPv6 is off: either is fine) */
    net_server_listen(s2, "[::1]:0", NULL, &handler, NULL, NULL, NULL, err, sizeof err);
    net_server_free(s2);
    net_server_free(s);
}

static void test_stop_before_run(void **state)
{
    (void)state;
    start_server(2);
    add_listener(MODE_LINES, NULL);
    net_server_stop(S.s);
    assert_int_equal(net_server_run(S.s), 0);
    assert_int_equal(atomic_load(&S.shutdowns), 2);
    net_server_free(S.s);
}

int main(void)
{
    alarm(120);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partial_reads_and_max_input),
        cmocka_unit_test(test_pause_reoffer_and_memory),
        cmocka_unit_test(test_pause_drops_interest_lazily),
        cmocka_unit_test(test_backpressure_and_drain),
        cmocka_unit_test(test_out_cap_closes_non_reader),
        cmocka_unit_test(test_deferred_close),
        cmocka_unit_test(test_shutdown_two_loops_reuseport),
        cmocka_unit_test(test_migrate),
        cmocka_unit_test(test_migrate_during_shutdown),
        cmocka_unit_test(test_migrate_state_in_place),
        cmocka_unit_test(test_hook_after_on_close),
        cmocka_unit_test(test_sigterm),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_stop_before_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

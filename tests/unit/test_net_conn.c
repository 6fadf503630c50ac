/*
 * test_net_conn.c — what goes in and out of a plain TCP connection, over
 * real 127.0.0.1 sockets: partial input, max_input, pause and re-offer, lazy
 * dropping of input interest, idle memory, back-pressure with on_drain,
 * out_cap, deferred close with flush.
 *
 * The clients and the test server are net_conn_testutil.h's (which says why
 * the callbacks count instead of asserting); how connections and servers
 * end, move between loops and fail to bind is test_net_conn_lifecycle.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/internal.h"
#include "net/server.h"
#include "net_conn_testutil.h"
#include "util/log.h"
#include "util/time.h"

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

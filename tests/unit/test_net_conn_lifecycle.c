/*
 * test_net_conn_lifecycle.c — how plain TCP connections and the server
 * around them end and move, over real 127.0.0.1 sockets: shutdown by
 * net_server_stop and by SIGTERM (the shutdown hook's last words flushed,
 * every connection closed with on_close), SO_REUSEPORT across two loops,
 * migration between loops (with the upper layer's state in the
 * connection's own block, and while the server stops), the iteration hook
 * after on_close, bind errors, and a stop before the server runs.
 *
 * The clients and the test server are net_conn_testutil.h's (which says why
 * the callbacks count instead of asserting); what goes in and out of a
 * connection is test_net_conn.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/server.h"
#include "net_conn_testutil.h"
#include "util/log.h"

/* ---- tests -------------------------------------------------------------- */

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

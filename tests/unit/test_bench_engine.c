/* Unit tests for the load generator's connection engine
 * (src/tools/bench/engine.c) against a scripted server on loopback: what
 * the engine reads from an edge-triggered socket. A read shorter than the
 * buffer ends the read loop (the socket is drained; new data raises a new
 * edge), so these check the two cases that must still be read to the end:
 * a burst larger than the read buffer, and data that arrives together
 * with the server's FIN, after which no further edge comes.
 *
 * The scripted server knows the engine handled everything when the
 * engine's client closes its end: it waits for that EOF (5 s at most), so
 * a client that stopped reading too early fails the test instead of
 * hanging it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <poll.h>

#include "../../src/tools/bench/engine.c"
#include "../../src/tools/bench/hist.c"
#include "../../src/tools/bench/httpload.c"
#include "../../src/tools/bench/hub.c"
#include "../../src/tools/bench/options.c"
#include "../../src/tools/bench/procs.c"
#include "../../src/tools/bench/proto.c"
#include "../../src/tools/bench/scenarios.c"
#include "../../src/tools/bench/scenarios_hub.c"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* One connection's script: CONNACK, then, once told to go, `burst` bytes
 * of PINGRESPs and either a DISCONNECT or a FIN. */
typedef struct scripted_server {
    int listen_fd;
    uint16_t port;
    size_t burst;
    bool end_with_fin;      /* else a DISCONNECT, socket left open */
    _Atomic bool go;
    bool saw_client_close;  /* the engine closed its end within 5 s */
    pthread_t thread;
} scripted_server;

/* True when the peer closes fd within timeout_ms. */
static bool wait_for_eof(int fd, int timeout_ms)
{
    uint8_t buf[4096];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            return false;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return true;
    }
}

static void *scripted_server_main(void *arg)
{
    scripted_server *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    uint8_t connect[512];
    static const uint8_t connack[] = {0x20, 0x03, 0x00, 0x00, 0x00};
    if (read(fd, connect, sizeof connect) > 0 && bench_write_all(fd, connack, sizeof connack)) {
        for (int i = 0; i < 5000 && !atomic_load(&s->go); i++)
            usleep(1000);
        uint8_t *burst = malloc(s->burst + 2);
        for (size_t i = 0; i + 1 < s->burst; i += 2) {
            burst[i] = 0xd0; /* PINGRESP */
            burst[i + 1] = 0x00;
        }
        size_t len = s->burst;
        if (!s->end_with_fin) {
            burst[len++] = 0xe0; /* DISCONNECT, reason 0 */
            burst[len++] = 0x00;
        }
        bool sent = bench_write_all(fd, burst, len);
        free(burst);
        if (sent && s->end_with_fin)
            shutdown(fd, SHUT_WR);
        s->saw_client_close = sent && wait_for_eof(fd, 5000);
    }
    close(fd);
    return NULL;
}

static void scripted_server_start(scripted_server *s)
{
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, scripted_server_main, s), 0);
}

/* One idle client against s: connects, tells s to go once the client is
 * ready, and returns the engine's statistics after s saw the client close. */
static void run_one_client(scripted_server *s, bench_stats *out)
{
    static bench_options opts;
    char err[4096], port[8];
    snprintf(port, sizeof port, "%u", s->port);
    char *args[] = {"iothub-bench", "idle", "--port", port, "--clients", "1",
                    "--threads", "1", "--sources", "1", "--duration", "1"};
    assert_int_equal(bench_options_parse(&opts, ARGC(args), args, err, sizeof err), 0);
    bench_run run = {0};
    assert_true(bench_run_init(&run, &opts, NULL, err, sizeof err));
    assert_true(bench_run_start(&run, err, sizeof err));
    for (int i = 0; i < 5000 && atomic_load(&run.ready) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&run.ready), 1);
    atomic_store(&run.phase, PHASE_RUN);
    atomic_store(&s->go, true);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    bench_run_finish(&run, out);
    bench_run_free(&run);
}

/* Three read buffers of PINGRESPs, then a DISCONNECT: every byte is read,
 * the last packet included. */
static void test_reads_a_burst_to_the_end(void **state)
{
    (void)state;
    scripted_server s = {.burst = 3 * READ_BUFFER_SIZE};
    scripted_server_start(&s);
    bench_stats st;
    run_one_client(&s, &st);
    assert_true(s.saw_client_close);
    assert_int_equal(st.reasons[REASON_DISCONNECT][0], 1);
    assert_int_equal(st.disconnects, 1);
}

/* A packet and the FIN behind it: the engine reads past the packet to the
 * end of the stream and counts the close. */
static void test_sees_a_close_that_came_with_data(void **state)
{
    (void)state;
    scripted_server s = {.burst = 2, .end_with_fin = true};
    scripted_server_start(&s);
    bench_stats st;
    run_one_client(&s, &st);
    assert_true(s.saw_client_close);
    assert_int_equal(st.errors[ERR_CLOSED_BY_SERVER], 1);
    assert_int_equal(st.disconnects, 1);
}

/* A connected loopback pair: out[0] receives with stamps, out[1] sends. */
static void stamped_pair(int out[2])
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    out[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bench_stamp_receives(out[0]);
    assert_int_equal(connect(out[0], (struct sockaddr *)&a, sizeof a), 0);
    out[1] = accept(lfd, NULL, NULL);
    assert_true(out[1] >= 0);
    close(lfd);
    /* The kernel turns receive stamping on for the first socket that asks
     * from a work queue, so the first segments may come unstamped: wait
     * (2 s at most) until one is stamped. */
    for (int i = 0; i < 200; i++) {
        char c;
        uint64_t arrival, read_at;
        assert_int_equal(write(out[1], "w", 1), 1);
        usleep(2000);
        assert_int_equal(bench_recv_stamped(out[0], &c, 1, &arrival, &read_at), 1);
        if (arrival != read_at)
            return;
        usleep(8000);
    }
    fail_msg("no receive stamp in 2 s");
}

/* Bytes that waited in the socket before the read: the arrival time is
 * when they came (after the send, well before the read), so that wait is
 * not part of a latency. The margins are wide (50 ms of waiting against
 * 10 ms allowed) and only bound the stamp from both sides. */
static void test_receive_time_is_the_arrival(void **state)
{
    (void)state;
    int fd[2];
    stamped_pair(fd);
    uint64_t before_send = bench_now_ns();
    assert_int_equal(write(fd[1], "x", 1), 1);
    usleep(50000);
    char c;
    uint64_t arrival, read_at;
    assert_int_equal(bench_recv_stamped(fd[0], &c, 1, &arrival, &read_at), 1);
    assert_true(arrival >= before_send);
    assert_true(read_at - arrival >= 40000000u);
    assert_true(arrival - before_send <= 10000000u);

    /* Nothing to read: both times are the read's. */
    assert_int_equal(fcntl(fd[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(bench_recv_stamped(fd[0], &c, 1, &arrival, &read_at), -1);
    assert_int_equal(arrival, read_at);
    close(fd[0]);
    close(fd[1]);
}

/* An answer stamped before what it answers (a clock that stepped) counts
 * as no time rather than as 2^64 ns. */
static void test_latency_never_negative(void **state)
{
    (void)state;
    bench_thread t = {.arrival_ns = 1000};
    assert_int_equal(bench_latency_ns(&t, 400), 600);
    assert_int_equal(bench_latency_ns(&t, 1500), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_a_burst_to_the_end),
        cmocka_unit_test(test_sees_a_close_that_came_with_data),
        cmocka_unit_test(test_receive_time_is_the_arrival),
        cmocka_unit_test(test_latency_never_negative),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

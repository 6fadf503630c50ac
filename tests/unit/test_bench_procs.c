/* Unit tests for splitting an iothub-bench run over processes
 * (src/tools/bench/procs.c): the --processes option, how many processes a
 * run needs, each worker's share of the clients, rate and concurrency, and
 * the statistics a worker sends back through a pipe and the parent merges
 * (the merge must equal one process having seen everything). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sys/wait.h>

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

static bench_options opts;
static char err[4096];

static void test_processes_option(void **state)
{
    (void)state;
    char *dflt[] = {"iothub-bench", "idle"};
    assert_int_equal(bench_options_parse(&opts, ARGC(dflt), dflt, err, sizeof err), 0);
    assert_int_equal(opts.processes, 0);
    assert_int_equal(opts.first_client, 0);

    char *three[] = {"iothub-bench", "idle", "--clients", "30000", "--processes", "3"};
    assert_int_equal(bench_options_parse(&opts, ARGC(three), three, err, sizeof err), 0);
    assert_int_equal(opts.processes, 3);

    char *one_fanout[] = {"iothub-bench", "fanout", "--processes=1"};
    assert_int_equal(bench_options_parse(&opts, ARGC(one_fanout), one_fanout, err, sizeof err), 0);

    char *fanout[] = {"iothub-bench", "fanout", "--processes", "2"};
    assert_int_equal(bench_options_parse(&opts, ARGC(fanout), fanout, err, sizeof err), -1);
    assert_non_null(strstr(err, "--processes"));

    char *too_many[] = {"iothub-bench", "telemetry", "--clients", "3", "--processes", "4"};
    assert_int_equal(bench_options_parse(&opts, ARGC(too_many), too_many, err, sizeof err), -1);
    assert_non_null(strstr(err, "exceed --clients"));

    char *over_max[] = {"iothub-bench", "idle", "--clients", "1000", "--processes", "65"};
    assert_int_equal(bench_options_parse(&opts, ARGC(over_max), over_max, err, sizeof err), -1);
    assert_string_equal(err, "--processes: bad or missing value");

    char *negative[] = {"iothub-bench", "idle", "--processes", "-1"};
    assert_int_equal(bench_options_parse(&opts, ARGC(negative), negative, err, sizeof err), -1);
}

static void test_process_count(void **state)
{
    (void)state;
    /* 19,000 fit under a 20,000 limit with the margin: one process. */
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 19000, 0, 20000), 1);
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 20000 - BENCH_FD_MARGIN, 0, 20000), 1);
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 20000 - BENCH_FD_MARGIN + 1, 0, 20000), 2);
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 50000, 0, 20000), 3);
    assert_int_equal(bench_procs_count(SCENARIO_TELEMETRY, 19000, 0, 1024), 20);
    /* Capped at 64 workers, and at one when nothing fits. */
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 1000000, 0, 1000), 64);
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 100, 0, 10), 1);
    /* Asked for explicitly: as asked, never more than the clients. */
    assert_int_equal(bench_procs_count(SCENARIO_IDLE, 100, 4, 20000), 4);
    assert_int_equal(bench_procs_count(SCENARIO_TWIN, 3, 8, 20000), 3);
    /* Scenarios with shared state never split. */
    assert_int_equal(bench_procs_count(SCENARIO_FANOUT, 50000, 0, 20000), 1);
    assert_int_equal(bench_procs_count(SCENARIO_METHODS, 50000, 4, 20000), 1);
    assert_int_equal(bench_procs_count(SCENARIO_C2D, 50000, 0, 1000), 1);
}

static void test_shares_cover_every_client_once(void **state)
{
    (void)state;
    unsigned first, count;
    bench_procs_share(10, 3, 0, &first, &count);
    assert_int_equal(first, 0);
    assert_int_equal(count, 4);
    bench_procs_share(10, 3, 1, &first, &count);
    assert_int_equal(first, 4);
    assert_int_equal(count, 3);
    bench_procs_share(10, 3, 2, &first, &count);
    assert_int_equal(first, 7);
    assert_int_equal(count, 3);
    const unsigned cases[][2] = {{1, 1}, {7, 7}, {19000, 2}, {50000, 3}, {100003, 64}, {65, 64}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unsigned clients = cases[k][0], n = cases[k][1], next = 0;
        for (unsigned i = 0; i < n; i++) {
            bench_procs_share(clients, n, i, &first, &count);
            assert_int_equal(first, next); /* contiguous, no gap, no overlap */
            assert_true(count == clients / n || count == clients / n + 1);
            next = first + count;
        }
        assert_int_equal(next, clients);
    }
}

static void test_worker_options(void **state)
{
    (void)state;
    char *argv[] = {"iothub-bench", "telemetry", "--clients", "10", "--rate", "1000",
                    "--concurrency", "5", "--threads", "3", "--processes", "3"};
    assert_int_equal(bench_options_parse(&opts, ARGC(argv), argv, err, sizeof err), 0);
    bench_options w0 = bench_procs_worker_options(&opts, 3, 0);
    bench_options w2 = bench_procs_worker_options(&opts, 3, 2);
    assert_int_equal(w0.clients, 4);
    assert_int_equal(w0.first_client, 0);
    assert_int_equal(w2.clients, 3);
    assert_int_equal(w2.first_client, 7);
    assert_true(w0.rate == 400.0 && w2.rate == 300.0);
    assert_int_equal(w0.concurrency, 2);
    assert_int_equal(w2.concurrency, 1);
    assert_int_equal(w0.threads, 1);
    assert_int_equal(w0.processes, 1);
    assert_int_equal(w2.port, opts.port);
    assert_int_equal(w2.scenario, SCENARIO_TELEMETRY);
    /* Each worker's first client is also what its engine numbers from. */
    bench_run run;
    assert_true(bench_run_init(&run, &w2, NULL, err, sizeof err));
    assert_int_equal(run.total_clients, 3);
    assert_int_equal(run.threads[0].clients[0].index, 7);
    assert_int_equal(run.threads[0].clients[2].index, 9);
    bench_run_free(&run);
}

/* Statistics as one worker might have them: latencies v, v+step, ... */
static void fill_stats(bench_stats *s, uint64_t v, uint64_t step, unsigned n, uint64_t scale)
{
    bench_stats_init(s);
    for (unsigned i = 0; i < n; i++)
        hist_record(&s->latency, v + i * step);
    hist_record(&s->latency2, 1000 * scale);
    s->sent = 10 * scale;
    s->acked = 9 * scale;
    s->held = scale;
    s->pings = 3 * scale;
    s->errors[ERR_KEEPALIVE_MISS] = scale;
    s->reasons[REASON_CONNACK][0x87] = 2 * scale;
    s->http_status[503] = scale;
}

/* Two workers' statistics through a real pipe (each is larger than a pipe
 * buffer, so the reads and writes are partial), merged by the parent,
 * equal one histogram that saw every value. */
static void test_stats_through_a_pipe_merge_exactly(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_true(sizeof(bench_stats) > 65536);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        static bench_stats a, b;
        fill_stats(&a, 1000, 7, 5000, 1);
        fill_stats(&b, 900000, 13, 3000, 2);
        _exit(bench_write_all(fds[1], &a, sizeof a) && bench_write_all(fds[1], &b, sizeof b) ? 0
                                                                                         : 1);
    }
    close(fds[1]);
    static bench_stats part, merged, want;
    bench_stats_init(&merged);
    for (int i = 0; i < 2; i++) {
        assert_true(bench_read_all(fds[0], &part, sizeof part));
        bench_stats_merge(&merged, &part);
    }
    assert_false(bench_read_all(fds[0], &part, 1)); /* end of file after both */
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    bench_stats_init(&want);
    for (unsigned i = 0; i < 5000; i++)
        hist_record(&want.latency, 1000 + i * 7);
    for (unsigned i = 0; i < 3000; i++)
        hist_record(&want.latency, 900000 + i * 13);
    assert_int_equal(merged.latency.count, 8000);
    assert_int_equal(merged.latency.min, want.latency.min);
    assert_int_equal(merged.latency.max, want.latency.max);
    assert_int_equal(merged.latency.sum, want.latency.sum);
    const double ps[] = {50, 90, 99, 99.9, 100};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        assert_int_equal(hist_percentile(&merged.latency, ps[i]),
                         hist_percentile(&want.latency, ps[i]));
    assert_int_equal(merged.latency2.count, 2);
    assert_int_equal(merged.sent, 30);
    assert_int_equal(merged.acked, 27);
    assert_int_equal(merged.held, 3);
    assert_int_equal(merged.pings, 9);
    assert_int_equal(merged.errors[ERR_KEEPALIVE_MISS], 3);
    assert_int_equal(merged.reasons[REASON_CONNACK][0x87], 6);
    assert_int_equal(merged.http_status[503], 3);
}

static void test_read_all_stops_at_end_of_file(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    bench_proc_hello hello = {19000, 0}, got;
    assert_true(bench_write_all(fds[1], &hello, 3)); /* a worker dying mid-message */
    close(fds[1]);
    assert_false(bench_read_all(fds[0], &got, sizeof got));
    close(fds[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_processes_option),
        cmocka_unit_test(test_process_count),
        cmocka_unit_test(test_shares_cover_every_client_once),
        cmocka_unit_test(test_worker_options),
        cmocka_unit_test(test_stats_through_a_pipe_merge_exactly),
        cmocka_unit_test(test_read_all_stops_at_end_of_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

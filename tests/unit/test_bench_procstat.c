/* Unit tests for what iothub-bench samples from /proc
 * (src/tools/bench/procstat.c) and how the report prints it
 * (src/tools/bench/report.c): a process's RSS, CPU time and run-queue wait
 * summed over its threads, the machine's CPU time by kind, and the
 * difference of two samples. Each parser runs on a fake /proc written
 * into a temporary directory, then once on the real one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../../src/tools/bench/engine.c"
#include "../../src/tools/bench/hist.c"
#include "../../src/tools/bench/httpload.c"
#include "../../src/tools/bench/hub.c"
#include "../../src/tools/bench/options.c"
#include "../../src/tools/bench/procs.c"
#include "../../src/tools/bench/procstat.c"
#include "../../src/tools/bench/proto.c"
#include "../../src/tools/bench/report.c"
#include "../../src/tools/bench/scenarios.c"
#include "../../src/tools/bench/scenarios_hub.c"

static char root[64];

static void write_file(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    assert_int_equal(mkdir(path, 0700), 0);
}

static int setup_root(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/iothubd-procstat-XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int remove_root(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

/* A process whose name holds ") (" and spaces: fields are counted from the
 * last ')', so utime and stime are still read right. */
static void write_fake_process(int pid, const char *utime_stime)
{
    char rel[64], stat[512];
    snprintf(rel, sizeof rel, "%d", pid);
    make_dir(rel);
    snprintf(rel, sizeof rel, "%d/status", pid);
    write_file(rel, "Name:\tweird\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\n");
    snprintf(stat, sizeof stat,
             "%d (a) (b c) S 1 2 3 4 5 6 7 8 9 10 %s 0 0 20 0 3 0 100 2000 500\n", pid,
             utime_stime);
    snprintf(rel, sizeof rel, "%d/stat", pid);
    write_file(rel, stat);
}

static void test_process_sample(void **state)
{
    (void)state;
    long hz = sysconf(_SC_CLK_TCK);
    char times[64];
    snprintf(times, sizeof times, "%ld %ld", 3 * hz, hz / 2); /* 3 s user, 0.5 s system */
    write_fake_process(41, times);
    make_dir("41/task");
    make_dir("41/task/41");
    make_dir("41/task/42");
    make_dir("41/task/43"); /* a thread whose schedstat is gone: skipped */
    write_file("41/task/41/schedstat", "900000000 1500000000 77\n");
    write_file("41/task/42/schedstat", "100 250000000 3\n");

    proc_sample s = proc_sample_take_at(root, 41);
    assert_true(s.ok);
    assert_int_equal(s.rss_kb, 4321);
    assert_true(s.cpu_s > 3.49 && s.cpu_s < 3.51);
    assert_true(s.cpu_sys_s > 0.49 && s.cpu_sys_s < 0.51);
    assert_true(s.wait_ok);
    assert_true(s.wait_s > 1.749 && s.wait_s < 1.751);
}

static void test_process_without_schedstat(void **state)
{
    (void)state;
    write_fake_process(51, "100 100");
    proc_sample s = proc_sample_take_at(root, 51);
    assert_true(s.ok);
    assert_false(s.wait_ok); /* no task directory: the wait is unknown, not 0 */
}

static void test_process_gone_or_garbled(void **state)
{
    (void)state;
    assert_false(proc_sample_take_at(root, 0).ok);
    assert_false(proc_sample_take_at(root, 99999).ok);
    make_dir("61");
    write_file("61/status", "VmRSS:\t 10 kB\n");
    write_file("61/stat", "61 (short) S 1 2 3\n"); /* cut before utime */
    assert_false(proc_sample_take_at(root, 61).ok);
    make_dir("62");
    write_file("62/status", "VmRSS:\t 10 kB\n");
    write_file("62/stat", "62 no parenthesis at all 1 2 3 4 5 6 7 8 9 10 11 12 13\n");
    assert_false(proc_sample_take_at(root, 62).ok);
}

static void test_machine_sample_and_delta(void **state)
{
    (void)state;
    long hz = sysconf(_SC_CLK_TCK);
    char text[512];
    /* user nice system idle iowait irq softirq steal guest guest_nice */
    snprintf(text, sizeof text,
             "cpu  %ld %ld %ld %ld %ld %ld %ld %ld 0 0\n"
             "cpu0 1 1 1 1 1 1 1 1 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n"
             "intr 12345 6 7\nctxt 999\ncpus_allowed 3\n",
             10 * hz, 2 * hz, 5 * hz, 100 * hz, hz, hz / 2, 3 * hz / 2, hz / 4);
    write_file("stat", text);
    machine_sample a = machine_sample_take_at(root);
    assert_true(a.ok);
    assert_int_equal(a.cpus, 2); /* "cpus_allowed" is not a CPU */
    assert_true(a.user_s > 11.99 && a.user_s < 12.01); /* user + nice */
    assert_true(a.system_s > 4.99 && a.system_s < 5.01);
    assert_true(a.softirq_s > 1.99 && a.softirq_s < 2.01); /* irq + softirq */
    assert_true(a.iowait_s > 0.99 && a.iowait_s < 1.01);
    assert_true(a.steal_s > 0.24 && a.steal_s < 0.26);
    assert_true(a.idle_s > 99.99 && a.idle_s < 100.01);

    snprintf(text, sizeof text, "cpu  %ld %ld %ld %ld %ld %ld %ld %ld 0 0\ncpu0 1\ncpu1 1\n",
             11 * hz, 2 * hz, 6 * hz, 101 * hz, hz, hz / 2, 2 * hz, hz / 4);
    write_file("stat", text);
    machine_sample b = machine_sample_take_at(root);
    machine_sample d = machine_sample_delta(&a, &b);
    assert_true(d.ok);
    assert_int_equal(d.cpus, 2);
    /* 1 s user + 1 s system + 0.5 s softirq busy, 1 s idle */
    assert_true(machine_busy_s(&d) > 2.49 && machine_busy_s(&d) < 2.51);
    assert_true(d.idle_s > 0.99 && d.idle_s < 1.01);
    assert_true(d.steal_s > -0.01 && d.steal_s < 0.01);

    machine_sample none = {0};
    assert_false(machine_sample_delta(&none, &b).ok);
}

static void test_machine_sample_garbled(void **state)
{
    (void)state;
    write_file("stat", "cpu  1 2 3\ncpu0 1 2 3\n"); /* an old kernel's short line */
    assert_false(machine_sample_take_at(root).ok);
    write_file("stat", "cpu  1 2 3 4 5 6 7 8\n"); /* no per-CPU line */
    assert_false(machine_sample_take_at(root).ok);
    assert_false(machine_sample_take_at("/nonexistent-proc").ok);
}

static void test_live_samples(void **state)
{
    (void)state;
    proc_sample s = proc_sample_take(getpid());
    assert_true(s.ok);
    assert_true(s.rss_kb > 0);
    assert_true(s.cpu_s >= 0);
    machine_sample m = machine_sample_take();
    assert_true(m.ok);
    assert_true(m.cpus >= 1);
    assert_true(machine_busy_s(&m) > 0);
}

/* What bench_report_text prints for r; the caller frees it. */
static char *report_text(const bench_report *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    bench_report_text(r, out);
    fclose(out);
    return text;
}

/* The report's server and machine lines, from two samples a phase apart. */
static void test_report_lines(void **state)
{
    (void)state;
    bench_options o = {.scenario = SCENARIO_TELEMETRY, .qos = 1};
    bench_report r = {.opt = &o, .duration_s = 10.0};
    bench_stats_init(&r.stats);
    r.server_start = (proc_sample){.ok = true, .cpu_s = 1, .wait_ok = true, .wait_s = 2};
    r.server_end = (proc_sample){.ok = true, .rss_kb = 5, .cpu_s = 6, .cpu_sys_s = 4,
                                 .wait_ok = true, .wait_s = 9.5};
    r.machine_start = (machine_sample){.ok = true, .cpus = 2, .user_s = 1, .idle_s = 10};
    r.machine_end = (machine_sample){.ok = true, .cpus = 2, .user_s = 6, .system_s = 8,
                                     .softirq_s = 3, .idle_s = 13};
    char *text = report_text(&r);
    assert_non_null(strstr(text, "CPU 5.00 s in the measured phase"));
    assert_non_null(strstr(text, "its threads waited 7.50 s for a CPU"));
    assert_non_null(strstr(text, "machine: 1.60 of 2 CPUs busy in the measured phase "
                                 "(user 0.50, system 0.80, irq+softirq 0.30; iowait 0.00, "
                                 "steal 0.00, idle 0.30)"));
    free(text);

    r.server_end.wait_ok = false; /* unknown: said nothing about, not 0 */
    r.machine_end.ok = false;
    text = report_text(&r);
    assert_null(strstr(text, "waited"));
    assert_null(strstr(text, "machine:"));
    free(text);
}

/* The same in the JSON report: CPU-seconds, and nothing where unknown. */
static void test_report_json(void **state)
{
    (void)state;
    bench_options o = {.scenario = SCENARIO_TWIN, .host = "127.0.0.1"};
    bench_report r = {.opt = &o, .duration_s = 10.0};
    bench_stats_init(&r.stats);
    r.server_start = (proc_sample){.ok = true, .wait_ok = true, .wait_s = 1};
    r.server_end = (proc_sample){.ok = true, .cpu_s = 3, .wait_ok = true, .wait_s = 4};
    r.machine_start = (machine_sample){.ok = true, .cpus = 2};
    r.machine_end = (machine_sample){.ok = true, .cpus = 2, .user_s = 2, .system_s = 3,
                                     .softirq_s = 1, .steal_s = 0.5, .idle_s = 13.5};
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/report.json", root);
    assert_true(bench_report_json(&r, path, err, sizeof err));
    json_t *j = json_load_file(path, 0, NULL);
    assert_non_null(j);
    json_t *m = json_object_get(j, "machine");
    assert_int_equal(json_integer_value(json_object_get(m, "cpus")), 2);
    assert_true(json_real_value(json_object_get(m, "busy_s")) == 6.0);
    assert_true(json_real_value(json_object_get(m, "steal_s")) == 0.5);
    assert_true(json_real_value(json_object_get(m, "idle_s")) == 13.5);
    json_t *srv = json_object_get(j, "server");
    assert_true(json_real_value(json_object_get(srv, "cpu_wait_s")) == 3.0);
    json_decref(j);

    r.server_start.wait_ok = false;
    r.machine_start.ok = false;
    assert_true(bench_report_json(&r, path, err, sizeof err));
    j = json_load_file(path, 0, NULL);
    assert_non_null(j);
    assert_null(json_object_get(j, "machine"));
    assert_null(json_object_get(json_object_get(j, "server"), "cpu_wait_s"));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process_sample),
        cmocka_unit_test(test_process_without_schedstat),
        cmocka_unit_test(test_process_gone_or_garbled),
        cmocka_unit_test(test_machine_sample_and_delta),
        cmocka_unit_test(test_machine_sample_garbled),
        cmocka_unit_test(test_live_samples),
        cmocka_unit_test(test_report_lines),
        cmocka_unit_test(test_report_json),
    };
    return cmocka_run_group_tests(tests, setup_root, remove_root);
}

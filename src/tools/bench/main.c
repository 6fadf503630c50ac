/*
 * tools/bench/main.c — the iothub-bench program: parse the options, raise
 * the open-file limit, provision hub devices when asked, run the scenario
 * (connect everyone, measure for the duration, stop), report. The methods
 * and c2d scenarios also open their service-API connections once every
 * device is subscribed. When one process may not hold every client's
 * socket (or --processes says so), the run is split over forked workers
 * (procs.h) and this process only coordinates, samples and reports.
 *
 * Only this file defines main(); the unit tests include the other files.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/bench/engine.h"
#include "tools/bench/httpload.h"
#include "tools/bench/hub.h"
#include "tools/bench/procs.h"
#include "tools/bench/report.h"
#include "tools/bench/responder.h"
#include "tools/bench/scenarios.h"

/* Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit. */
static rlim_t raise_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

static double seconds_since(uint64_t start_ns)
{
    return (double)(bench_now_ns() - start_ns) / 1e9;
}

static void sleep_s(double s)
{
    if (s > 0)
        usleep((useconds_t)(s * 1e6));
}

/* Hub mode: creates the devices and fills creds. */
static bool prepare_hub(const bench_options *o, bench_connstr *cs, bench_credentials *creds)
{
    char err[512];
    if (!bench_connstr_parse(o->connstr, cs)) {
        fprintf(stderr, "iothub-bench: --connstr needs HostName and SharedAccessKey\n");
        return false;
    }
    unsigned devices = o->clients;
    creds->host = cs->host;
    creds->keys = calloc(devices, sizeof *creds->keys);
    if (!creds->keys) {
        fprintf(stderr, "iothub-bench: out of memory\n");
        return false;
    }
    if (!bench_hub_provision(o, cs, devices, creds->keys, err, sizeof err)) {
        fprintf(stderr, "iothub-bench: creating devices: %s\n", err);
        return false;
    }
    return true;
}

/* SETUP until every client is ready (or gave up) or the setup time ends. */
static void wait_for_setup(bench_run *run)
{
    unsigned target = scenario_ready_target(run->opt);
    uint64_t start = bench_now_ns();
    while (atomic_load(&run->ready) + atomic_load(&run->failed) < target &&
           seconds_since(start) < run->opt->setup_timeout_s)
        sleep_s(0.02);
}

static int run_scenario(const bench_options *o, const bench_connstr *cs,
                        const bench_credentials *creds, bench_report *r)
{
    char err[512];
    bench_run run;
    bench_http_load http;
    bool with_http = bench_scenario_uses_http(o->scenario);
    uint64_t setup_start = bench_now_ns();
    r->server_baseline = proc_sample_take(o->server_pid);
    if (!bench_run_init(&run, o, creds, err, sizeof err) || !bench_run_start(&run, err, sizeof err)) {
        fprintf(stderr, "iothub-bench: %s\n", err);
        bench_run_free(&run);
        return 1;
    }
    wait_for_setup(&run);
    r->setup_s = seconds_since(setup_start);
    r->ready = atomic_load(&run.ready);
    r->failed = atomic_load(&run.failed);
    if (with_http && !bench_http_load_start(&http, &run, cs, err, sizeof err)) {
        fprintf(stderr, "iothub-bench: service API: %s\n", err);
        bench_run_finish(&run, &r->stats);
        bench_http_load_finish(&http, NULL);
        bench_run_free(&run);
        return 1;
    }
    r->server_start = proc_sample_take(o->server_pid);
    r->machine_start = machine_sample_take();
    run.run_start_ns = bench_now_ns();
    atomic_store(&run.phase, PHASE_RUN);
    sleep_s(o->duration_s);
    run.run_end_ns = bench_now_ns();
    r->server_end = proc_sample_take(o->server_pid);
    r->machine_end = machine_sample_take();
    bench_run_finish(&run, &r->stats);
    if (with_http)
        bench_http_load_finish(&http, &r->stats);
    r->duration_s = (double)(run.run_end_ns - run.run_start_ns) / 1e9;
    bench_run_free(&run);
    return 0;
}

/* ---- a run split over processes (procs.h) ------------------------------ */

typedef struct bench_worker {
    pid_t pid;
    int up;   /* worker → parent */
    int down; /* parent → worker */
} bench_worker;

/* In the child: runs worker i's share, answering the parent over the
 * pipes. Returns the exit status. */
static int worker_main(const bench_options *o, const bench_credentials *creds, unsigned n,
                       unsigned i, int up, int down)
{
    char err[512];
    bench_options w = bench_procs_worker_options(o, n, i);
    bench_credentials wc;
    if (creds)
        wc = (bench_credentials){creds->host, creds->keys + (w.first_client - o->first_client)};
    bench_run run;
    if (!bench_run_init(&run, &w, creds ? &wc : NULL, err, sizeof err) ||
        !bench_run_start(&run, err, sizeof err)) {
        fprintf(stderr, "iothub-bench worker %u: %s\n", i, err);
        bench_run_free(&run);
        return 1;
    }
    wait_for_setup(&run);
    bench_proc_hello hello = {atomic_load(&run.ready), atomic_load(&run.failed)};
    char cmd = 0;
    bool go = bench_write_all(up, &hello, sizeof hello) && bench_read_all(down, &cmd, 1) &&
              cmd == 'g';
    if (go) {
        atomic_store(&run.phase, PHASE_RUN);
        go = bench_read_all(down, &cmd, 1) && cmd == 's';
    }
    bench_stats stats;
    bench_run_finish(&run, &stats);
    bench_run_free(&run);
    return go && bench_write_all(up, &stats, sizeof stats) ? 0 : 1;
}

/* Forks n workers; false (those started are reaped) when one cannot be. */
static bool start_workers(const bench_options *o, const bench_credentials *creds, unsigned n,
                          bench_worker *w)
{
    for (unsigned i = 0; i < n; i++) {
        int up[2], down[2];
        if (pipe(up) != 0 || pipe(down) != 0) {
            perror("iothub-bench: pipe");
            return false;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            close(up[0]);
            close(down[1]);
            for (unsigned j = 0; j < i; j++) {
                close(w[j].up);
                close(w[j].down);
            }
            _exit(worker_main(o, creds, n, i, up[1], down[0]));
        }
        close(up[1]);
        close(down[0]);
        w[i] = (bench_worker){pid, up[0], down[1]};
        if (pid < 0) {
            perror("iothub-bench: fork");
            return false;
        }
    }
    return true;
}

/* Closes the pipes and waits for the workers; false if one failed. */
static bool reap_workers(bench_worker *w, unsigned n)
{
    bool ok = true;
    for (unsigned i = 0; i < n; i++) {
        close(w[i].up);
        close(w[i].down); /* a worker still waiting for 'g' or 's' stops */
    }
    for (unsigned i = 0; i < n; i++) {
        int status = 0;
        if (w[i].pid > 0 && (waitpid(w[i].pid, &status, 0) < 0 || !WIFEXITED(status) ||
                             WEXITSTATUS(status) != 0))
            ok = false;
        if (w[i].pid <= 0)
            ok = false;
    }
    return ok;
}

/* Sends one command byte to every worker. */
static bool tell_workers(bench_worker *w, unsigned n, char cmd)
{
    bool ok = true;
    for (unsigned i = 0; i < n; i++)
        ok &= bench_write_all(w[i].down, &cmd, 1);
    return ok;
}

/* The split run: same phases and samples as run_scenario, the clients in
 * n workers. */
static int run_processes(const bench_options *o, const bench_credentials *creds, unsigned n,
                         bench_report *r)
{
    bench_worker *w = calloc(n, sizeof *w);
    bench_stats *part = malloc(sizeof *part);
    bool ok = w && part;
    uint64_t setup_start = bench_now_ns();
    r->server_baseline = proc_sample_take(o->server_pid);
    ok = ok && start_workers(o, creds, n, w);
    for (unsigned i = 0; ok && i < n; i++) {
        bench_proc_hello hello;
        ok = bench_read_all(w[i].up, &hello, sizeof hello);
        r->ready += ok ? hello.ready : 0;
        r->failed += ok ? hello.failed : 0;
    }
    r->setup_s = seconds_since(setup_start);
    uint64_t start = bench_now_ns(), end = start;
    if (ok) {
        r->server_start = proc_sample_take(o->server_pid);
        r->machine_start = machine_sample_take();
        start = bench_now_ns();
        ok = tell_workers(w, n, 'g');
        sleep_s(o->duration_s);
        end = bench_now_ns();
        r->server_end = proc_sample_take(o->server_pid);
        r->machine_end = machine_sample_take();
        ok = tell_workers(w, n, 's') && ok;
    }
    bench_stats_init(&r->stats);
    for (unsigned i = 0; ok && i < n; i++) {
        ok = bench_read_all(w[i].up, part, sizeof *part);
        if (ok)
            bench_stats_merge(&r->stats, part);
    }
    r->duration_s = (double)(end - start) / 1e9;
    ok = w && reap_workers(w, n) && ok;
    free(part);
    free(w);
    if (!ok)
        fprintf(stderr, "iothub-bench: a worker process failed\n");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    bench_options o;
    char err[4096];
    int rc = bench_options_parse(&o, argc, argv, err, sizeof err);
    if (rc != 0) {
        fprintf(rc > 0 ? stdout : stderr, "%s%s", rc > 0 ? "" : "iothub-bench: ", err);
        if (rc < 0 && err[strlen(err) - 1] != '\n')
            fputc('\n', stderr);
        return rc > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rlim_t files = raise_file_limit();
    if (o.scenario == SCENARIO_RESPONDER)
        return bench_responder_run(&o);
    unsigned procs = bench_procs_count(o.scenario, scenario_client_count(&o), o.processes,
                                       (unsigned long)files);
    if ((rlim_t)(scenario_client_count(&o) + procs - 1) / procs + BENCH_FD_MARGIN > files)
        fprintf(stderr, "iothub-bench: warning: %u connections but only %lu open files allowed\n",
                scenario_client_count(&o), (unsigned long)files);
    if (procs > 1)
        fprintf(stderr, "iothub-bench: %u clients in %u processes (open-file limit %lu each)\n",
                scenario_client_count(&o), procs, (unsigned long)files);
    bench_connstr cs;
    bench_credentials creds = {0};
    if (bench_options_hub_mode(&o) && !prepare_hub(&o, &cs, &creds))
        return 1;
    bench_report report = {.opt = &o};
    const bench_credentials *cp = bench_options_hub_mode(&o) ? &creds : NULL;
    rc = procs > 1 ? run_processes(&o, cp, procs, &report) : run_scenario(&o, &cs, cp, &report);
    free(creds.keys);
    if (rc != 0)
        return rc;
    bench_report_text(&report, stdout);
    if (o.json_path && !bench_report_json(&report, o.json_path, err, sizeof err)) {
        fprintf(stderr, "iothub-bench: %s\n", err);
        return 1;
    }
    return 0;
}

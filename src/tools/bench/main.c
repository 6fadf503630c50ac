/*
 * tools/bench/main.c — the iothub-bench program: parse the options, raise
 * the open-file limit, provision hub devices when asked, run the scenario
 * (connect everyone, measure for the duration, stop), report. The methods
 * and c2d scenarios also open their service-API connections once every
 * device is subscribed.
 *
 * Only this file defines main(); the unit tests include the other files.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tools/bench/engine.h"
#include "tools/bench/httpload.h"
#include "tools/bench/hub.h"
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
    run.run_start_ns = bench_now_ns();
    atomic_store(&run.phase, PHASE_RUN);
    sleep_s(o->duration_s);
    run.run_end_ns = bench_now_ns();
    r->server_end = proc_sample_take(o->server_pid);
    bench_run_finish(&run, &r->stats);
    if (with_http)
        bench_http_load_finish(&http, &r->stats);
    r->duration_s = (double)(run.run_end_ns - run.run_start_ns) / 1e9;
    bench_run_free(&run);
    return 0;
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
    if ((rlim_t)scenario_client_count(&o) + 64 > files)
        fprintf(stderr, "iothub-bench: warning: %u connections but only %lu open files allowed\n",
                scenario_client_count(&o), (unsigned long)files);
    bench_connstr cs;
    bench_credentials creds = {0};
    if (bench_options_hub_mode(&o) && !prepare_hub(&o, &cs, &creds))
        return 1;
    bench_report report = {.opt = &o};
    rc = run_scenario(&o, &cs, bench_options_hub_mode(&o) ? &creds : NULL, &report);
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

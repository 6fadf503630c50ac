/*
 * tools/bench/report.h — one run's result, as human text and as JSON.
 *
 * The JSON is what scripts/run-bench aggregates, so its keys are stable:
 * scenario, label, config{...}, duration_s, clients_ready, clients_failed,
 * throughput_per_s (acknowledged messages for telemetry QoS 1, sent for
 * QoS 0, delivered for fanout, CONNACKs for connect, successful round
 * trips for twin, 200 answers for methods, commands delivered for c2d), sent, acked,
 * delivered, connects, held, pings, pongs, latency_us{p50,p90,p99,p999,
 * max,mean,count}, latency2_us{...} (twin: patch reported; c2d: send →
 * delivery), latency_name, latency2_name, http_connections,
 * errors{name: count} (reason-coded errors are named
 * "connack:0x87" etc.), server{rss_kb_baseline, rss_kb_start, rss_kb_end,
 * cpu_s} when a server pid was given.
 */
#ifndef IOTHUBD_BENCH_REPORT_H
#define IOTHUBD_BENCH_REPORT_H

#include <stdio.h>

#include "tools/bench/engine.h"
#include "tools/bench/procstat.h"

typedef struct bench_report {
    const bench_options *opt;
    bench_stats stats;
    double duration_s;        /* measured phase, actual */
    double setup_s;           /* time to connect everyone (and provision) */
    unsigned ready;
    unsigned failed;
    proc_sample server_baseline; /* before any client connected */
    proc_sample server_start;    /* when RUN began */
    proc_sample server_end;      /* when RUN ended */
    machine_sample machine_start; /* the whole machine, when RUN began */
    machine_sample machine_end;   /* ... and when it ended */
} bench_report;

/* The scenario's headline figure, per second. */
double bench_report_throughput(const bench_report *r);
void bench_report_text(const bench_report *r, FILE *out);
/* False (reason in err) when the file cannot be written. */
bool bench_report_json(const bench_report *r, const char *path, char *err, size_t errlen);

#endif

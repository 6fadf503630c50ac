/*
 * tools/bench/report.c — see report.h. Latencies are kept in nanoseconds
 * and reported in microseconds with one decimal; JSON is built with
 * jansson (already a project dependency) so escaping is never hand-made.
 */
#include "tools/bench/report.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

double bench_report_throughput(const bench_report *r)
{
    const bench_stats *s = &r->stats;
    double d = r->duration_s > 0 ? r->duration_s : 1;
    switch (r->opt->scenario) {
    case SCENARIO_TELEMETRY:
        return (double)(r->opt->qos == 1 ? s->acked : s->sent) / d;
    case SCENARIO_FANOUT:
        return (double)s->delivered / d;
    case SCENARIO_CONNECT:
        return (double)s->connects_in_run / d;
    case SCENARIO_TWIN:
    case SCENARIO_METHODS:
        return (double)s->acked / d;
    case SCENARIO_C2D:
        return (double)s->delivered / d;
    default:
        return 0;
    }
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

/* Calls fn(name, count, ctx) for every non-zero error counter. */
static void each_error(const bench_stats *s, void (*fn)(const char *, uint64_t, void *), void *ctx)
{
    for (unsigned e = 0; e < ERR_COUNT; e++)
        if (s->errors[e])
            fn(bench_error_name((bench_error)e), s->errors[e], ctx);
    for (unsigned k = 0; k < REASON_KIND_COUNT; k++)
        for (unsigned r = 0; r < 256; r++)
            if (s->reasons[k][r]) {
                char name[64];
                snprintf(name, sizeof name, "%s:0x%02X", bench_reason_kind_name((bench_reason_kind)k),
                         r);
                fn(name, s->reasons[k][r], ctx);
            }
    for (unsigned h = 0; h < BENCH_HTTP_STATUS_MAX; h++)
        if (s->http_status[h]) {
            char name[32];
            snprintf(name, sizeof name, "http:%u", h);
            fn(name, s->http_status[h], ctx);
        }
}

/* What `latency` and `latency2` measure in this scenario (NULL: unused). */
static const char *latency_name(bench_scenario s, int which)
{
    switch (s) {
    case SCENARIO_TWIN:
        return which == 1 ? "get twin" : "patch reported";
    case SCENARIO_METHODS:
        return which == 1 ? "HTTP call" : NULL;
    case SCENARIO_C2D:
        return which == 1 ? "HTTP send" : "send to delivery";
    default:
        return which == 1 ? "latency" : NULL;
    }
}

static void print_hist(FILE *out, const char *name, const bench_hist *h)
{
    if (h->count)
        fprintf(out, "%s us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (%llu samples)\n",
                name, us(hist_percentile(h, 50)), us(hist_percentile(h, 90)),
                us(hist_percentile(h, 99)), us(hist_percentile(h, 99.9)), us(h->max),
                (unsigned long long)h->count);
}

static void print_error_count(const char *name, uint64_t count, void *ctx)
{
    fprintf((FILE *)ctx, "  error %-24s %llu\n", name, (unsigned long long)count);
}

static bool server_wait_known(const bench_report *r)
{
    return r->server_start.wait_ok && r->server_end.wait_ok;
}

static void print_server(const bench_report *r, FILE *out)
{
    if (!r->server_end.ok)
        return;
    double cpu = r->server_end.cpu_s - r->server_start.cpu_s;
    double sys = r->server_end.cpu_sys_s - r->server_start.cpu_sys_s;
    fprintf(out, "server: RSS %llu kB before clients, %llu kB at start, %llu kB at end; "
                 "CPU %.2f s in the measured phase (%.0f %% of one core; %.2f s in the kernel)",
            (unsigned long long)r->server_baseline.rss_kb, (unsigned long long)r->server_start.rss_kb,
            (unsigned long long)r->server_end.rss_kb, cpu,
            r->duration_s > 0 ? 100.0 * cpu / r->duration_s : 0, sys);
    if (server_wait_known(r))
        fprintf(out, "; its threads waited %.2f s for a CPU",
                r->server_end.wait_s - r->server_start.wait_s);
    fputc('\n', out);
}

/* Averages over the measured phase, in CPUs: how much of the machine the
 * server, the generator and the kernel's loopback work left idle. */
static void print_machine(const bench_report *r, FILE *out)
{
    machine_sample m = machine_sample_delta(&r->machine_start, &r->machine_end);
    if (!m.ok || r->duration_s <= 0)
        return;
    double d = r->duration_s;
    fprintf(out, "machine: %.2f of %u CPUs busy in the measured phase (user %.2f, system %.2f, "
                 "irq+softirq %.2f; iowait %.2f, steal %.2f, idle %.2f)\n",
            machine_busy_s(&m) / d, m.cpus, m.user_s / d, m.system_s / d, m.softirq_s / d,
            m.iowait_s / d, m.steal_s / d, m.idle_s / d);
}

void bench_report_text(const bench_report *r, FILE *out)
{
    const bench_options *o = r->opt;
    const bench_stats *s = &r->stats;
    const bench_hist *h = &s->latency;
    fprintf(out, "%s%s%s: %u clients ready, %u failed, setup %.2f s, measured %.2f s\n",
            bench_scenario_name(o->scenario), o->label ? " @ " : "", o->label ? o->label : "",
            r->ready, r->failed, r->setup_s, r->duration_s);
    fprintf(out, "throughput: %.0f /s (sent %llu, acked %llu, delivered %llu, connects %llu)\n",
            bench_report_throughput(r), (unsigned long long)s->sent, (unsigned long long)s->acked,
            (unsigned long long)s->delivered, (unsigned long long)s->connects_in_run);
    print_hist(out, latency_name(o->scenario, 1), h);
    if (latency_name(o->scenario, 2))
        print_hist(out, latency_name(o->scenario, 2), &s->latency2);
    print_hist(out, "generator read delay", &s->read_delay);
    if (o->scenario == SCENARIO_IDLE)
        fprintf(out, "held %llu connections at the end; pings %llu, pongs %llu, lost %llu\n",
                (unsigned long long)s->held, (unsigned long long)s->pings,
                (unsigned long long)s->pongs, (unsigned long long)s->disconnects);
    print_server(r, out);
    print_machine(r, out);
    each_error(s, print_error_count, out);
}

static void json_error(const char *name, uint64_t count, void *ctx)
{
    json_object_set_new((json_t *)ctx, name, json_integer((json_int_t)count));
}

static json_t *config_json(const bench_options *o)
{
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:i, s:i, s:b, s:i}",
                     "host", o->host, "port", o->port, "clients", o->clients, "subscribers",
                     o->subscribers, "threads", o->threads, "qos", o->qos, "payload", o->payload,
                     "rate", o->rate, "window", o->window, "mqtt", o->mqtt_version, "keepalive",
                     o->keepalive_s, "sas", o->hub_url != NULL, "sources", o->sources);
}

static json_t *latency_json(const bench_hist *h)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:I}", "p50", us(hist_percentile(h, 50)),
                     "p90", us(hist_percentile(h, 90)), "p99", us(hist_percentile(h, 99)), "p999",
                     us(hist_percentile(h, 99.9)), "max", us(h->count ? h->max : 0), "mean",
                     hist_mean(h) / 1000.0, "count", (json_int_t)h->count);
}

static json_t *server_json(const bench_report *r)
{
    json_t *j = json_pack("{s:I, s:I, s:I, s:f, s:f}", "rss_kb_baseline",
                          (json_int_t)r->server_baseline.rss_kb, "rss_kb_start",
                          (json_int_t)r->server_start.rss_kb, "rss_kb_end",
                          (json_int_t)r->server_end.rss_kb, "cpu_s",
                          r->server_end.cpu_s - r->server_start.cpu_s, "cpu_sys_s",
                          r->server_end.cpu_sys_s - r->server_start.cpu_sys_s);
    if (j && server_wait_known(r))
        json_object_set_new(j, "cpu_wait_s",
                            json_real(r->server_end.wait_s - r->server_start.wait_s));
    return j;
}

/* CPU-seconds over the measured phase, summed over the machine's CPUs. */
static json_t *machine_json(const machine_sample *m)
{
    return json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "cpus", (int)m->cpus, "busy_s",
                     machine_busy_s(m), "user_s", m->user_s, "system_s", m->system_s,
                     "softirq_s", m->softirq_s, "iowait_s", m->iowait_s, "steal_s", m->steal_s,
                     "idle_s", m->idle_s);
}

bool bench_report_json(const bench_report *r, const char *path, char *err, size_t errlen)
{
    const bench_stats *s = &r->stats;
    json_t *errors = json_object();
    each_error(s, json_error, errors);
    json_t *root = json_pack(
        "{s:s, s:s, s:o, s:f, s:f, s:i, s:i, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
        "scenario", bench_scenario_name(r->opt->scenario), "label", r->opt->label ? r->opt->label : "",
        "config", config_json(r->opt), "duration_s", r->duration_s, "setup_s", r->setup_s,
        "clients_ready", r->ready, "clients_failed", r->failed, "throughput_per_s",
        bench_report_throughput(r), "sent", (json_int_t)s->sent, "acked", (json_int_t)s->acked,
        "delivered", (json_int_t)s->delivered, "connects", (json_int_t)s->connects_in_run, "held",
        (json_int_t)s->held, "pings", (json_int_t)s->pings, "pongs", (json_int_t)s->pongs,
        "disconnects", (json_int_t)s->disconnects, "latency_us", latency_json(&s->latency),
        "errors", errors);
    if (!root) {
        snprintf(err, errlen, "out of memory building the JSON report");
        return false;
    }
    if (r->server_end.ok)
        json_object_set_new(root, "server", server_json(r));
    machine_sample m = machine_sample_delta(&r->machine_start, &r->machine_end);
    if (m.ok)
        json_object_set_new(root, "machine", machine_json(&m));
    json_object_set_new(root, "latency2_us", latency_json(&s->latency2));
    json_object_set_new(root, "read_delay_us", latency_json(&s->read_delay));
    json_object_set_new(root, "latency_name",
                        json_string(latency_name(r->opt->scenario, 1)));
    if (latency_name(r->opt->scenario, 2))
        json_object_set_new(root, "latency2_name",
                            json_string(latency_name(r->opt->scenario, 2)));
    json_object_set_new(root, "http_connections", json_integer(r->opt->http_connections));
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (rc != 0) {
        snprintf(err, errlen, "cannot write %s", path);
        return false;
    }
    return true;
}

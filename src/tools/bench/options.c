/*
 * tools/bench/options.c — see options.h. One table gives every flag its
 * type, field and help line, so parsing and the usage text cannot drift
 * apart. Numbers are parsed strictly (the whole text, within range); a
 * scenario-specific check at the end rejects combinations that would make
 * a meaningless run rather than silently adjusting them.
 */
#include "tools/bench/options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum flag_type { FLAG_STR, FLAG_UINT, FLAG_DOUBLE, FLAG_PORT, FLAG_PID, FLAG_BOOL } flag_type;

typedef struct flag_spec {
    const char *name;
    flag_type type;
    size_t offset;
    unsigned long max; /* FLAG_UINT: largest value accepted */
    const char *help;
} flag_spec;

#define OFF(field) offsetof(bench_options, field)

static const flag_spec flags[] = {
    {"--host", FLAG_STR, OFF(host), 0, "MQTT server IPv4 address (default 127.0.0.1)"},
    {"--port", FLAG_PORT, OFF(port), 0, "MQTT server port (default 1883)"},
    {"--http-port", FLAG_PORT, OFF(http_port), 0, "responder: also answer the hub's device, method and C2D routes (the hub-shaped ceiling)"},
    {"--route", FLAG_BOOL, OFF(route), 0, "responder: forward each PUBLISH to the subscribers it matches, at QoS 0 (the fan-out ceiling)"},
    {"--clients", FLAG_UINT, OFF(clients), 1000000, "connections (connect: concurrent connectors)"},
    {"--subscribers", FLAG_UINT, OFF(subscribers), 1000000, "fanout: subscribers (default 100)"},
    {"--threads", FLAG_UINT, OFF(threads), 256, "client threads (default: CPUs, at most 4)"},
    {"--sources", FLAG_UINT, OFF(sources), 254, "source addresses 127.0.0.1..N (default 16)"},
    {"--duration", FLAG_DOUBLE, OFF(duration_s), 0, "measured seconds (default 10)"},
    {"--setup-timeout", FLAG_DOUBLE, OFF(setup_timeout_s), 0, "seconds to connect everyone (default 60)"},
    {"--connect-timeout", FLAG_DOUBLE, OFF(connect_timeout_s), 0, "seconds for one CONNACK (default 10)"},
    {"--qos", FLAG_UINT, OFF(qos), 1, "0 or 1 (default 1; fanout 0)"},
    {"--mqtt", FLAG_UINT, OFF(mqtt_version), 5, "protocol: 4 (3.1.1) or 5 (default 5)"},
    {"--payload", FLAG_UINT, OFF(payload), 262144, "payload bytes (default 256; fanout 64)"},
    {"--rate", FLAG_DOUBLE, OFF(rate), 0, "messages (twin, methods, c2d: requests) per second in total (default 0: as fast as the window allows)"},
    {"--window", FLAG_UINT, OFF(window), 65535, "in-flight messages per client (default 16)"},
    {"--keepalive", FLAG_UINT, OFF(keepalive_s), 65535, "Keep Alive seconds (default 30)"},
    {"--concurrency", FLAG_UINT, OFF(concurrency), 1000000, "connection attempts at once (default 256)"},
    {"--http-connections", FLAG_UINT, OFF(http_connections), 4096, "methods, c2d: HTTP/1.1 keep-alive connections (default 32)"},
    {"--hub", FLAG_STR, OFF(hub_url), 0, "service API URL http://HOST:PORT: create devices, SAS auth"},
    {"--connstr", FLAG_STR, OFF(connstr), 0, "service connection string with registry write"},
    {"--device-prefix", FLAG_STR, OFF(device_prefix), 0, "device id prefix (default bench-)"},
    {"--topic-prefix", FLAG_STR, OFF(topic_prefix), 0, "open-broker topic prefix (default bench)"},
    {"--json", FLAG_STR, OFF(json_path), 0, "also write the report as JSON to FILE"},
    {"--label", FLAG_STR, OFF(label), 0, "a name for the target, echoed in the report"},
    {"--server-pid", FLAG_PID, OFF(server_pid), 0, "sample this server process's RSS and CPU"},
    {"--processes", FLAG_UINT, OFF(processes), 64, "processes sharing the clients (default: as the open-file limit needs)"},
};

#define FLAG_COUNT (sizeof flags / sizeof flags[0])

static const char *const scenario_names[] = {"telemetry", "fanout", "connect", "idle",
                                             "responder", "twin",  "methods", "c2d"};

const char *bench_scenario_name(bench_scenario s)
{
    return (unsigned)s < sizeof scenario_names / sizeof *scenario_names ? scenario_names[s] : "?";
}

static void set_defaults(bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 1883;
    o->clients = 100;
    o->subscribers = 100;
    o->threads = 0; /* decided after parsing */
    o->sources = 16;
    o->duration_s = 10;
    o->setup_timeout_s = 60;
    o->connect_timeout_s = 10;
    o->qos = 1;
    o->mqtt_version = 5;
    o->payload = 256;
    o->window = 16;
    o->keepalive_s = 30;
    o->concurrency = 256;
    o->http_connections = 32;
    o->device_prefix = "bench-";
    o->topic_prefix = "bench";
}

static void usage(char *err, size_t errlen)
{
    size_t n = (size_t)snprintf(err, errlen, "usage: iothub-bench telemetry|fanout|connect|idle|"
                                             "responder|twin|methods|c2d [flags]\n");
    for (size_t i = 0; i < FLAG_COUNT && n < errlen; i++)
        n += (size_t)snprintf(err + n, errlen - n, "  %-18s %s\n", flags[i].name, flags[i].help);
}

/* Strict unsigned decimal: digits only, no overflow, at most max. */
static bool parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_nonneg_double(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < 0)
        return false;
    *out = v;
    return true;
}

/* Stores one flag's value into the options; false when it does not parse. */
static bool apply_flag(bench_options *o, const flag_spec *f, const char *value)
{
    char *field = (char *)o + f->offset;
    unsigned long v;
    switch (f->type) {
    case FLAG_STR:
        *(const char **)field = value;
        return value[0] != '\0';
    case FLAG_UINT:
        if (!parse_ulong(value, f->max, &v))
            return false;
        if (f->max <= 255)
            *(uint8_t *)field = (uint8_t)v;
        else
            *(unsigned *)field = (unsigned)v;
        return true;
    case FLAG_PORT:
        if (!parse_ulong(value, 65535, &v) || v == 0)
            return false;
        *(uint16_t *)field = (uint16_t)v;
        return true;
    case FLAG_PID:
        if (!parse_ulong(value, 0x7fffffff, &v))
            return false;
        *(int *)field = (int)v;
        return true;
    case FLAG_DOUBLE:
        return parse_nonneg_double(value, (double *)field);
    case FLAG_BOOL:
        *(bool *)field = true;
        return true;
    }
    return false;
}

static const flag_spec *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < FLAG_COUNT; i++)
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static bool parse_scenario(const char *word, bench_scenario *out)
{
    for (unsigned i = 0; i < sizeof scenario_names / sizeof *scenario_names; i++)
        if (strcmp(word, scenario_names[i]) == 0) {
            *out = (bench_scenario)i;
            return true;
        }
    return false;
}

/* Flags whose default depends on the scenario, when not given. */
static void scenario_defaults(bench_options *o, bool qos_given, bool payload_given)
{
    if (o->scenario == SCENARIO_FANOUT) {
        if (!qos_given)
            o->qos = 0;
        if (!payload_given)
            o->payload = 64;
    }
    if (o->threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        o->threads = cpus < 1 ? 1 : cpus > 4 ? 4 : (unsigned)cpus;
    }
}

/* Combinations that make no sense; false with the reason in err. */
static bool check_combinations(const bench_options *o, char *err, size_t errlen)
{
    const char *why = NULL;
    if (o->clients == 0)
        why = "--clients must be at least 1";
    else if (o->mqtt_version != 4 && o->mqtt_version != 5)
        why = "--mqtt must be 4 or 5";
    else if (o->sources == 0)
        why = "--sources must be at least 1";
    else if (o->window == 0)
        why = "--window must be at least 1";
    else if (o->concurrency == 0)
        why = "--concurrency must be at least 1";
    else if (o->duration_s <= 0)
        why = "--duration must be positive";
    else if (o->scenario == SCENARIO_FANOUT && o->payload < 8)
        why = "fanout needs --payload of at least 8 (a send timestamp)";
    else if (o->scenario == SCENARIO_FANOUT && o->subscribers == 0)
        why = "--subscribers must be at least 1";
    else if (o->hub_url && !o->connstr)
        why = "--hub needs --connstr";
    else if (o->hub_url && strncmp(o->hub_url, "http://", 7) != 0)
        why = "--hub must be an http:// URL";
    else if (o->hub_url && o->mqtt_version != 5)
        why = "--hub (SAS authentication) needs --mqtt 5";
    else if (o->hub_url && o->scenario == SCENARIO_FANOUT)
        why = "fanout runs on the open topic space, not with --hub";
    else if (!o->hub_url && bench_scenario_hub_only(o->scenario))
        why = "twin, methods and c2d need --hub and --connstr (the hub's device API)";
    else if (o->processes > 1 && !bench_scenario_splits(o->scenario))
        why = "--processes above 1 works for telemetry, connect, idle and twin only";
    else if (o->processes > 1 && o->processes > o->clients)
        why = "--processes cannot exceed --clients";
    else if (o->rate > 0 && !bench_scenario_paced(o->scenario))
        why = "--rate paces telemetry, fanout, twin, methods and c2d only";
    else if ((o->http_port || o->route) && o->scenario != SCENARIO_RESPONDER)
        why = "--http-port and --route are the responder's";
    else if (bench_scenario_uses_http(o->scenario) && o->http_connections == 0)
        why = "--http-connections must be at least 1";
    if (why)
        snprintf(err, errlen, "%s", why);
    return why == NULL;
}

int bench_options_parse(bench_options *o, int argc, char **argv, char *err, size_t errlen)
{
    set_defaults(o);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(err, errlen);
        return argc < 2 ? -1 : 1;
    }
    if (!parse_scenario(argv[1], &o->scenario)) {
        snprintf(err, errlen,
                 "unknown scenario '%s' (telemetry, fanout, connect, idle, responder, twin, "
                 "methods, c2d)",
                 argv[1]);
        return -1;
    }
    bool qos_given = false, payload_given = false;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(err, errlen);
            return 1;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const flag_spec *f = find_flag(arg, name_len);
        if (!f) {
            snprintf(err, errlen, "unknown flag '%.*s'", (int)name_len, arg);
            return -1;
        }
        const char *value = f->type == FLAG_BOOL ? (eq ? NULL : "")
                            : eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value || !apply_flag(o, f, value)) {
            snprintf(err, errlen, "%s: bad or missing value", f->name);
            return -1;
        }
        qos_given |= f->offset == OFF(qos);
        payload_given |= f->offset == OFF(payload);
    }
    scenario_defaults(o, qos_given, payload_given);
    return check_combinations(o, err, errlen) ? 0 : -1;
}

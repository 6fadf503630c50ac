/*
 * tools/bench/options.h — what one iothub-bench run does, from its command
 * line: `iothub-bench SCENARIO [--flag value]...`.
 *
 * The options are plain data, checked once by bench_options_parse, so the
 * engine and the scenarios can trust them (a positive client count, a
 * payload large enough for the timestamp the fan-out scenario embeds, ...).
 * String options point into argv; nothing is allocated.
 */
#ifndef IOTHUBD_BENCH_OPTIONS_H
#define IOTHUBD_BENCH_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum bench_scenario {
    SCENARIO_TELEMETRY,
    SCENARIO_FANOUT,
    SCENARIO_CONNECT,
    SCENARIO_IDLE,
    SCENARIO_RESPONDER,
    SCENARIO_TWIN,
    SCENARIO_METHODS,
    SCENARIO_C2D,
} bench_scenario;

typedef struct bench_options {
    bench_scenario scenario;
    const char *host;        /* MQTT server address (IPv4 dotted) */
    uint16_t port;
    uint16_t http_port;      /* responder: also serve the hub's HTTP routes here; 0 = no */
    bool route;              /* responder: forward PUBLISHes to matching subscribers */
    unsigned clients;        /* telemetry/idle: connections; connect: concurrent connectors */
    unsigned subscribers;    /* fanout */
    unsigned threads;
    unsigned sources;        /* source addresses 127.0.0.1 .. 127.0.0.N */
    double duration_s;       /* measured phase */
    double setup_timeout_s;  /* time allowed to connect everyone */
    double connect_timeout_s;/* one CONNECT → CONNACK */
    uint8_t qos;
    uint8_t mqtt_version;    /* 4 (3.1.1) or 5 */
    unsigned payload;        /* bytes */
    double rate;             /* messages/s in total; 0 = as fast as the window allows */
    unsigned window;         /* in-flight messages per client (QoS 1; fanout: per subscriber) */
    unsigned keepalive_s;
    unsigned concurrency;    /* connection attempts in progress at once, in total */
    unsigned http_connections; /* methods, c2d: keep-alive connections to the service API */
    const char *hub_url;     /* http://HOST:PORT of the service API: hub mode */
    const char *connstr;     /* service connection string (needs registry write) */
    const char *device_prefix;
    const char *topic_prefix;
    const char *json_path;
    const char *label;       /* free text echoed in the report (e.g. "iothubd") */
    int server_pid;          /* sample this process's RSS and CPU time; 0 = none */
    unsigned processes;      /* load-generator processes; 0 = as the open-file limit needs */
    unsigned first_client;   /* not a flag: the global number of this process's first
                                client when the clients are split over processes */
} bench_options;

/* Fills defaults, then parses argv (argv[1] is the scenario). Returns 0 when
 * the options are valid, 1 when help was asked (usage written to err), -1
 * on an error described in err. */
int bench_options_parse(bench_options *o, int argc, char **argv, char *err, size_t errlen);

const char *bench_scenario_name(bench_scenario s);

/* Scenarios that only exist on the hub's device API (need --hub). */
static inline bool bench_scenario_hub_only(bench_scenario s)
{
    return s == SCENARIO_TWIN || s == SCENARIO_METHODS || s == SCENARIO_C2D;
}

/* Scenarios that drive the service API over HTTP while devices answer. */
static inline bool bench_scenario_uses_http(bench_scenario s)
{
    return s == SCENARIO_METHODS || s == SCENARIO_C2D;
}

/* Scenarios that --rate paces (the others ignore it, so it is refused). */
static inline bool bench_scenario_paced(bench_scenario s)
{
    return s == SCENARIO_TELEMETRY || s == SCENARIO_FANOUT || s == SCENARIO_TWIN ||
           s == SCENARIO_METHODS || s == SCENARIO_C2D;
}

/* Scenarios whose clients are independent of each other, so they can be
 * split over several processes (fanout shares one publisher's counters,
 * methods and c2d one set of service-API connections). */
static inline bool bench_scenario_splits(bench_scenario s)
{
    return s == SCENARIO_TELEMETRY || s == SCENARIO_CONNECT || s == SCENARIO_IDLE ||
           s == SCENARIO_TWIN;
}

/* Whether the run authenticates with the hub's MQTT 5 SAS scheme. */
static inline bool bench_options_hub_mode(const bench_options *o)
{
    return o->hub_url != NULL;
}

#endif

/*
 * config.c — see config.h. One table maps each setting's name to its type,
 * its field and a one-line help; parsing, the file format and --help all
 * come from it, so a new setting is one line here.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum opt_type { OPT_STR, OPT_BOOL, OPT_U16, OPT_U32, OPT_UINT, OPT_LEVEL, OPT_QOS } opt_type;

typedef struct opt {
    const char *name;
    opt_type type;
    size_t offset;
    const char *help;
} opt;

#define F(field) offsetof(iothubd_config, field)
#define L(field) (offsetof(iothubd_config, limits) + offsetof(broker_limits, field))
#define T(kind) (offsetof(iothubd_config, throttle) + offsetof(hub_throttle_config, per_second) + \
                 (kind) * sizeof(uint32_t))
#define THROTTLE_DEFAULT_PER_S 100000u
#define MAX_TELEMETRY_PARTITIONS 128

static const opt options[] = {
    {"config", OPT_STR, F(config_file), "read settings from FILE (flags override it)"},
    {"data", OPT_STR, F(data_dir), "data directory (created if missing; default ./data)"},
    {"mqtt", OPT_STR, F(mqtt), "plain MQTT listener HOST:PORT"},
    {"mqtts", OPT_STR, F(mqtts), "MQTT over TLS listener HOST:PORT (needs --cert, --key)"},
    {"http", OPT_STR, F(http), "service API listener HOST:PORT"},
    {"https", OPT_STR, F(https), "service API over TLS HOST:PORT"},
    {"cert", OPT_STR, F(cert_file), "TLS certificate chain (PEM)"},
    {"key", OPT_STR, F(key_file), "TLS private key (PEM)"},
    {"ca", OPT_STR, F(ca_file), "CA bundle for client certificates (PEM)"},
    {"hostname", OPT_STR, F(hostname), "hub host name (default localhost)"},
    {"threads", OPT_UINT, F(threads), "event loops (default: one per CPU)"},
    {"open-topics", OPT_BOOL, F(open_topics), "serve the open MQTT topic space"},
    {"allow-anonymous", OPT_BOOL, F(allow_anonymous), "accept clients without credentials"},
    {"acl-file", OPT_STR, F(acl_file), "topic ACLs, Mosquitto acl_file syntax"},
    {"password-file", OPT_STR, F(password_file), "user:password lines for the open broker"},
    {"log-level", OPT_LEVEL, F(log_level), "error, warn, info or debug"},
    {"durability", OPT_STR, F(durability), "store commits: fsync (default), os or none"},
    {"commit-interval-us", OPT_U32, F(commit_interval_us), "shortest time between two group commits of telemetry, µs (default 1000; 0: none)"},
    {"telemetry-partitions", OPT_UINT, F(telemetry_partitions), "telemetry log partitions, 1..128 (default 4)"},
    {"telemetry-retention-s", OPT_U32, F(telemetry_retention_s), "keep telemetry this long (default 1 day; 0 = forever)"},
    {"telemetry-retention-mb", OPT_U32, F(telemetry_retention_mb), "cap on stored telemetry, MiB (0 = none)"},
    {"max-keepalive", OPT_U16, L(max_keepalive), "largest Keep Alive granted, seconds (0 = any)"},
    {"max-packet-size", OPT_U32, L(maximum_packet_size), "largest packet accepted, bytes"},
    {"receive-maximum", OPT_U16, L(receive_maximum), "inbound QoS 1/2 window per client"},
    {"maximum-qos", OPT_QOS, L(maximum_qos), "highest QoS offered (1 or 2)"},
    {"topic-alias-maximum", OPT_U16, L(topic_alias_maximum), "inbound topic aliases per client"},
    {"max-session-expiry", OPT_U32, L(max_session_expiry), "cap on Session Expiry, seconds"},
    {"max-subscriptions", OPT_U32, L(max_subscriptions), "subscriptions per client"},
    {"max-queued-messages", OPT_U32, L(max_queued_messages), "QoS 1/2 messages queued per session"},
    {"max-queued-bytes", OPT_U32, L(max_queued_bytes), "their bytes per session (default 64 MiB; 0 = no cap)"},
    {"connect-timeout-ms", OPT_U32, L(connect_timeout_ms), "time allowed for CONNECT"},
    {"throttle-connects-per-s", OPT_U32, T(HUB_THROTTLE_CONNECT), "device connects per second, hub-wide (default 100000; 0 = unlimited)"},
    {"throttle-telemetry-per-s", OPT_U32, T(HUB_THROTTLE_TELEMETRY), "telemetry messages per second (default 100000; 0 = unlimited)"},
    {"throttle-twin-reads-per-s", OPT_U32, T(HUB_THROTTLE_TWIN_READ), "twin reads per second, device + service (default 100000; 0 = unlimited)"},
    {"throttle-twin-updates-per-s", OPT_U32, T(HUB_THROTTLE_TWIN_UPDATE), "twin updates per second, device + service (default 100000; 0 = unlimited)"},
    {"throttle-methods-per-s", OPT_U32, T(HUB_THROTTLE_METHOD), "direct method invocations per second (default 100000; 0 = unlimited)"},
    {"throttle-c2d-per-s", OPT_U32, T(HUB_THROTTLE_C2D), "cloud-to-device sends per second (default 100000; 0 = unlimited)"},
    {"c2d-max-delivery-count", OPT_U32, F(c2d.max_delivery_count), "deliveries of a command before it is dead-lettered (default 10; 1-100)"},
    {"c2d-default-ttl-s", OPT_U32, F(c2d_default_ttl_s), "command time to live without iothub-expiry, seconds (default 3600; 60-172800)"},
    {"c2d-lock-ms", OPT_U32, F(c2d.lock_ms), "lock of a delivered, unsettled command, ms (default 60000; for tests)"},
    {"c2d-min-ttl-ms", OPT_U32, F(c2d.min_ttl_ms), "shortest iothub-expiry accepted, ms (default 60000; for tests)"},
    {"http-request-timeout-ms", OPT_U32, F(http_request_timeout_ms), "service API: time for a whole request to arrive, ms (default 30000)"},
    {"http-idle-timeout-ms", OPT_U32, F(http_idle_timeout_ms), "service API: idle keep-alive connection closed after, ms (default 120000)"},
    {"daily-message-quota", OPT_U32, F(throttle.daily_message_quota), "telemetry + C2D messages per UTC day (default 0 = unlimited)"},
};

static const opt *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof options / sizeof *options; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* Applies one setting; `value` NULL means a bare boolean flag. */
static bool apply(iothubd_config *cfg, const opt *o, const char *value, char *err, size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    unsigned long v;
    switch (o->type) {
    case OPT_STR:
        *(const char **)field = value;
        return true;
    case OPT_BOOL:
        if (!value || !strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes")) {
            *(bool *)field = true;
            return true;
        }
        if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no")) {
            *(bool *)field = false;
            return true;
        }
        break;
    case OPT_U16:
        if (parse_uint(value, UINT16_MAX, &v)) {
            *(uint16_t *)field = (uint16_t)v;
            return true;
        }
        break;
    case OPT_U32:
        if (parse_uint(value, UINT32_MAX, &v)) {
            *(uint32_t *)field = (uint32_t)v;
            return true;
        }
        break;
    case OPT_UINT:
        if (parse_uint(value, 1024, &v)) {
            *(unsigned *)field = (unsigned)v;
            return true;
        }
        break;
    case OPT_QOS:
        if (parse_uint(value, 2, &v) && v >= 1) {
            *(uint8_t *)field = (uint8_t)v;
            return true;
        }
        break;
    case OPT_LEVEL:
        if (log_level_parse(value, (enum log_level *)field))
            return true;
        break;
    }
    snprintf(err, errlen, "--%s: invalid value '%s'", o->name, value ? value : "");
    return false;
}

/* Config-file values must outlive parsing: the config keeps them. */
struct config_string {
    struct config_string *next;
    char text[];
};

static const char *keep(iothubd_config *cfg, const char *s)
{
    size_t n = strlen(s);
    struct config_string *k = malloc(sizeof *k + n + 1);
    if (!k)
        return NULL;
    memcpy(k->text, s, n + 1);
    k->next = cfg->strings;
    cfg->strings = k;
    return k->text;
}

static bool load_file(iothubd_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    char line[4096];
    int lineno = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *key = line + strspn(line, " \t\r\n");
        if (!*key)
            continue;
        char *eq = strchr(key, '=');
        char *kend = eq ? eq : key + strcspn(key, " \t\r\n");
        while (kend > key && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        const opt *o = find_option(key, (size_t)(kend - key));
        if (!o || o == &options[0]) {
            snprintf(err, errlen, "%s:%d: unknown setting '%.*s'", path, lineno,
                     (int)(kend - key), key);
            ok = false;
            break;
        }
        const char *value = NULL;
        if (eq) {
            char *v = eq + 1 + strspn(eq + 1, " \t");
            v[strcspn(v, "\r\n")] = '\0';
            for (char *e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t');)
                *--e = '\0';
            value = keep(cfg, v);
        }
        if (!apply(cfg, o, value, err, errlen)) {
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " (%s:%d)", path, lineno);
            ok = false;
        }
    }
    fclose(f);
    return ok;
}

void config_usage(const char *prog)
{
    fprintf(stderr, "usage: %s [options]\n\nEvery option is also a config-file key (name = value).\n\n",
            prog);
    for (size_t i = 0; i < sizeof options / sizeof *options; i++) {
        const opt *o = &options[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s", o->name, o->type == OPT_BOOL ? "" : " VALUE");
        fprintf(stderr, "  %-34s %s\n", flag, o->help);
    }
}

static bool parse_args(iothubd_config *cfg, int argc, char **argv, bool only_config,
                       char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s'", arg);
            return false;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_option(name, nlen);
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return false;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value && o->type != OPT_BOOL) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", o->name);
                return false;
            }
            value = argv[++i];
        }
        if ((o == &options[0]) == only_config && !apply(cfg, o, value, err, errlen))
            return false;
    }
    return true;
}

int config_load(iothubd_config *cfg, int argc, char **argv, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->hostname = "localhost";
    cfg->data_dir = "data";
    cfg->durability = "fsync";
    cfg->telemetry_partitions = 4;
    cfg->telemetry_retention_s = 86400;
    cfg->commit_interval_us = 1000;
    cfg->log_level = LOG_INFO;
    broker_limits_default(&cfg->limits);
    c2d_config_defaults(&cfg->c2d);
    cfg->c2d_default_ttl_s = cfg->c2d.default_ttl_ms / 1000;
    for (int k = 0; k < HUB_THROTTLE_KIND_COUNT; k++)
        cfg->throttle.per_second[k] = THROTTLE_DEFAULT_PER_S;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_usage(argv[0]);
            return 1;
        }
    }
    if (!parse_args(cfg, argc, argv, true, errbuf, errlen))
        return -1;
    if (cfg->config_file && !load_file(cfg, cfg->config_file, errbuf, errlen))
        return -1;
    if (!parse_args(cfg, argc, argv, false, errbuf, errlen))
        return -1;
    if (cfg->mqtts && (!cfg->cert_file || !cfg->key_file)) {
        snprintf(errbuf, errlen, "--mqtts needs --cert and --key");
        return -1;
    }
    if (cfg->limits.maximum_packet_size < 128) {
        snprintf(errbuf, errlen, "--max-packet-size must be at least 128");
        return -1;
    }
    if (cfg->https && (!cfg->cert_file || !cfg->key_file)) {
        snprintf(errbuf, errlen, "--https needs --cert and --key");
        return -1;
    }
    /* IoT Hub's own range tops out at 128; each partition is a table with
     * five prepared statements, a counter row and a consumer-visible id. */
    if (cfg->telemetry_partitions == 0 || cfg->telemetry_partitions > MAX_TELEMETRY_PARTITIONS) {
        snprintf(errbuf, errlen, "--telemetry-partitions must be between 1 and %d",
                 MAX_TELEMETRY_PARTITIONS);
        return -1;
    }
    if (cfg->limits.receive_maximum == 0) {
        snprintf(errbuf, errlen, "--receive-maximum must be at least 1");
        return -1;
    }
    return 0;
}

void config_free(iothubd_config *cfg)
{
    while (cfg->strings) {
        struct config_string *k = cfg->strings;
        cfg->strings = k->next;
        free(k);
    }
}

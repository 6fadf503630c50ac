/*
 * config.h — iothubd's configuration: defaults, a config file, flags.
 *
 * Every setting has one name, used both as a command-line flag (--name
 * VALUE, or --name alone for booleans) and as a config-file key
 * (`name = value`, '#' starts a comment). The file is read first and flags
 * override it (../shared/spec/cli.md). The table in config.c is the single
 * list of settings; `iothubd --help` prints it.
 */
#ifndef IOTHUBD_CONFIG_H
#define IOTHUBD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"
#include "hub/c2d.h"
#include "hub/throttle.h"
#include "util/log.h"

typedef struct iothubd_config {
    const char *config_file;
    const char *data_dir;
    const char *mqtt;          /* plain listener, NULL = none */
    const char *mqtts;         /* TLS listener, NULL = none */
    const char *http;
    const char *https;
    const char *cert_file;
    const char *key_file;
    const char *ca_file;
    const char *hostname;
    unsigned threads;          /* 0 = one per CPU */
    bool open_topics;
    bool allow_anonymous;
    const char *acl_file;
    const char *password_file;
    enum log_level log_level;
    const char *durability;    /* fsync (default), os or none */
    unsigned telemetry_partitions;
    uint32_t telemetry_retention_s; /* 0 = keep forever */
    uint32_t telemetry_retention_mb; /* 0 = no size limit */
    uint32_t commit_interval_us; /* shortest time between group commits */
    broker_limits limits;
    hub_throttle_config throttle; /* rates and the daily quota; 0 = unlimited */
    c2d_config c2d;            /* command queues (main sets default_ttl_ms) */
    uint32_t c2d_default_ttl_s;
    uint32_t http_request_timeout_ms; /* service API: whole request must arrive (0 = default) */
    uint32_t http_idle_timeout_ms;    /* service API: idle keep-alive connection (0 = default) */
    struct config_string *strings; /* values read from the file */
} iothubd_config;

/*
 * Fills `cfg` from defaults, then the config file named by --config (if
 * any), then the flags. Returns 0 on success, 1 if --help was printed, or
 * -1 with a one-line reason in errbuf. Strings point into argv or into
 * storage owned by the config (freed by config_free).
 */
int config_load(iothubd_config *cfg, int argc, char **argv, char *errbuf, size_t errlen);
void config_free(iothubd_config *cfg);
void config_usage(const char *prog);

#endif

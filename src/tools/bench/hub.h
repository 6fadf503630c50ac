/*
 * tools/bench/hub.h — hub mode: the devices a run connects as.
 *
 * Each device's key is derived locally (base64 of HMAC-SHA256 over the
 * device id with a fixed label), then the device is created — or replaced,
 * so its keys are ours — through the service API: PUT /devices/{id} with a
 * classic SAS token made from the connection string. Deriving keys
 * locally means the load generator never parses a device JSON and a rerun
 * against the same hub reproduces the same keys.
 *
 * The HTTP client is deliberately tiny: blocking sockets, HTTP/1.1
 * keep-alive, Content-Length bodies only (what iothubd sends), several
 * connections in parallel threads so the store's group commit sees many
 * writes at once.
 */
#ifndef IOTHUBD_BENCH_HUB_H
#define IOTHUBD_BENCH_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tools/bench/options.h"

typedef struct bench_connstr {
    char host[256];    /* HostName */
    char policy[128];  /* SharedAccessKeyName ("" if absent) */
    char key[128];     /* SharedAccessKey */
} bench_connstr;

/* Parses "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..." (any
 * order; unknown fields ignored). False when HostName or the key is
 * missing or a value too long. */
bool bench_connstr_parse(const char *text, bench_connstr *out);

/* "http://HOST:PORT[/]" → IPv4 host and port. */
bool bench_url_parse(const char *url, char *host, size_t cap, uint16_t *port);

/* The key of device `id`: base64(HMAC-SHA256("iothub-bench", id)), 44
 * characters and a NUL. */
void bench_device_key(const char *id, char out[48]);

/* Creates (or replaces) `count` devices named "{prefix}{index:06}" with
 * their derived keys; keys[i] receives device i's key. False with the
 * first failure (HTTP status or socket error) in err. */
bool bench_hub_provision(const bench_options *o, const bench_connstr *cs, unsigned count,
                         char (*keys)[48], char *err, size_t errlen);

#endif

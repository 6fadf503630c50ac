/*
 * service/service.c — the service context: configuration with defaults and
 * the listeners. Everything per request lives in http_conn.c and below; the
 * context is read-only once the loops run, so loops share it without locks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/internal.h"

#define DEFAULT_HOSTNAME "localhost"
#define DEFAULT_MAX_HEADER_BYTES (16u * 1024u)
#define DEFAULT_MAX_HEADERS 100u
#define DEFAULT_MAX_BODY_BYTES (1024u * 1024u)
#define DEFAULT_IDLE_TIMEOUT_MS 120000u
#define DEFAULT_REQUEST_TIMEOUT_MS 30000u

void service_config_defaults(service_config *cfg)
{
    cfg->hostname = DEFAULT_HOSTNAME;
    cfg->max_header_bytes = DEFAULT_MAX_HEADER_BYTES;
    cfg->max_headers = DEFAULT_MAX_HEADERS;
    cfg->max_body_bytes = DEFAULT_MAX_BODY_BYTES;
    cfg->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    cfg->request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
}

service *service_new(net_server *server, hub_registry *registry, const service_config *cfg)
{
    service *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    service_config d;
    service_config_defaults(&d);
    s->server = server;
    s->registry = registry;
    s->cfg = d;
    if (cfg) {
        if (cfg->hostname && *cfg->hostname)
            s->cfg.hostname = cfg->hostname;
        if (cfg->max_header_bytes)
            s->cfg.max_header_bytes = cfg->max_header_bytes;
        if (cfg->max_headers)
            s->cfg.max_headers = cfg->max_headers;
        if (cfg->max_body_bytes)
            s->cfg.max_body_bytes = cfg->max_body_bytes;
        if (cfg->idle_timeout_ms)
            s->cfg.idle_timeout_ms = cfg->idle_timeout_ms;
        if (cfg->request_timeout_ms)
            s->cfg.request_timeout_ms = cfg->request_timeout_ms;
    }
    s->hostname = strdup(s->cfg.hostname);
    if (!s->hostname) {
        free(s);
        return NULL;
    }
    s->cfg.hostname = s->hostname;
    return s;
}

bool service_listen(service *s, const char *hostport, const net_tls_config *tls,
                    int *bound_port, char *err, size_t errlen)
{
    net_conn_limits limits = {
        /* input is only buffered while a request waits for its handler */
        .max_input = s->cfg.max_header_bytes + s->cfg.max_body_bytes + 256u * 1024u,
        .out_high = 1024u * 1024u,
        .out_low = 256u * 1024u,
        .out_cap = 64u * 1024u * 1024u,
    };
    return net_server_listen(s->server, hostport, tls, &http_conn_handler, s, &limits,
                             bound_port, err, errlen);
}

void service_free(service *s)
{
    if (!s)
        return;
    free(s->hostname);
    free(s);
}

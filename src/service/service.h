/*
 * service/service.h — the HTTP service API (../shared/spec/service-rest.md):
 * device identities, statistics and iothubd's own calls, served over
 * HTTP/1.1 (and HTTPS, with the same TLS configuration as MQTT) on the
 * server's event loops.
 *
 * Lifetime: create after the registry and the net_server, add listeners
 * with service_listen() before net_server_run(), free after it returned.
 * The service holds no per-loop state of its own; each connection's state
 * lives and dies with the connection on its loop.
 */
#ifndef IOTHUBD_SERVICE_SERVICE_H
#define IOTHUBD_SERVICE_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "hub/registry.h"
#include "net/server.h"

typedef struct service service;

typedef struct service_config {
    const char *hostname;        /* host in SAS resources; default "localhost" */
    size_t max_header_bytes;     /* request line + headers; default 16 KiB */
    unsigned max_headers;        /* default 100 */
    size_t max_body_bytes;       /* default 1 MiB */
    unsigned idle_timeout_ms;    /* keep-alive connection with no request; default 120 s */
    unsigned request_timeout_ms; /* a started request must be complete by then; default 30 s */
} service_config;

/* Fills in the defaults above. */
void service_config_defaults(service_config *cfg);

/* cfg may be NULL (all defaults); zero fields take their default. The
 * strings are copied. Returns NULL only when out of memory. */
service *service_new(net_server *server, hub_registry *registry, const service_config *cfg);

/* Serves the API on "host:port" (port 0 picks one, returned in
 * *bound_port when non-NULL); tls NULL = plain HTTP. */
bool service_listen(service *s, const char *hostport, const net_tls_config *tls,
                    int *bound_port, char *err, size_t errlen);

/* Enables the events endpoint (/events..., service-rest.md "Telemetry";
 * see events.c): t tells live readers of new events, st holds the log and
 * the consumer-group checkpoints. Call before net_server_run(); both must
 * outlive the service's loops. Without it /events answers 500. */
struct hub_telemetry;
struct store;
void service_set_telemetry(service *s, struct hub_telemetry *t, struct store *st);
/* The interval of the stream's keep-alive comments (default 15 s; tests). */
void service_set_events_keepalive_ms(service *s, unsigned ms);

/* Enables /twins/... (service-rest.md "Twins"; see twins.c). Call before
 * net_server_run(); t must outlive the service's loops. Without it the
 * twin routes answer 500. */
struct hub_twins;
void service_set_twins(service *s, struct hub_twins *t);

/* Applies the hub's rate limits and daily quota to the service calls that
 * start throttled operations (twins; methods and C2D call service_admit):
 * 429 ThrottlingException, 403 IotHubQuotaExceeded. Call before
 * net_server_run(); t must outlive the service's loops. Without it
 * nothing is throttled. */
struct hub_throttle;
void service_set_throttle(service *s, struct hub_throttle *t);

/* Enables POST /twins/{id}[/modules/{m}]/methods (service-rest.md "Direct
 * methods"; see methods.c) through the hub's method engine
 * (hub_methods_of). Call before net_server_run(); m must outlive the
 * service's loops. Without it the method routes answer 500. */
struct hub_methods;
void service_set_methods(service *s, struct hub_methods *m);

/* Enables the cloud-to-device calls (service-rest.md "Cloud-to-device
 * commands"; see c2d.c) over the hub's queues. Call before
 * net_server_run(); c must outlive the service's loops. Without it those
 * routes answer 500. */
struct hub_c2d;
void service_set_c2d(service *s, struct hub_c2d *c);

/* After net_server_run() has returned. NULL is allowed. */
void service_free(service *s);

#endif

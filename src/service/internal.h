/*
 * service/internal.h — private to src/service/: the service context, one
 * HTTP request as handlers see it, and the calls between the files:
 *
 *   http_conn.c   bytes -> requests (http_parser), keep-alive, limits,
 *                 timeouts, one request at a time; hands each complete
 *                 request to router.c and writes what response.c formats.
 *   router.c      method + path -> route (with its rights), path and query
 *                 decoding; runs auth.c, then the route's handler.
 *   auth.c        the Authorization header (classic SAS) -> policy rights.
 *   response.c    status line, headers, JSON and error bodies.
 *   devices.c     device and module identity calls, statistics, policies.
 *   identity_json.c  hub_identity <-> Device JSON.
 *
 * Handler contract: a handler receives a complete request and must answer
 * it exactly once with one of the http_reply_* calls, either before it
 * returns or later from a callback on the same loop (the connection stops
 * reading meanwhile). The request stays valid until it is answered, even
 * if the client goes away: answering an abandoned request just frees it.
 */
#ifndef IOTHUBD_SERVICE_INTERNAL_H
#define IOTHUBD_SERVICE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/registry.h"
#include "hub/throttle.h"
#include "service/service.h"

#define HTTP_MAX_SEGMENTS 8  /* path segments a route may have */
#define HTTP_MAX_QUERY 16    /* query parameters kept */
#define HTTP_REQUEST_ID_LEN 36

struct service {
    net_server *server;
    hub_registry *registry;
    service_config cfg; /* cfg.hostname points at hostname below */
    char *hostname;
    /* the events endpoint (events.c); NULL until service_set_telemetry */
    struct hub_telemetry *telemetry;
    struct store *store;
    unsigned events_keepalive_ms; /* SSE comment interval; 0 = 15 s */
    struct hub_twins *twins; /* twins.c; NULL until service_set_twins */
    struct hub_methods *methods; /* methods.c; NULL until service_set_methods */
    struct hub_throttle *throttle; /* throttling.c; NULL = no limits */
    struct hub_c2d *c2d; /* c2d.c; NULL until service_set_c2d */
};

typedef struct http_header {
    const char *name; /* as sent; compare case-insensitively */
    const char *value;
} http_header;

typedef struct http_param {
    char *name; /* decoded */
    char *value;
} http_param;

typedef struct http_conn http_conn;

typedef struct http_request {
    service *svc;
    http_conn *conn;   /* owner; opaque to handlers */
    net_loop *loop;    /* where callbacks for this request must run */
    const char *method; /* "GET", "PUT", ... */
    const char *target; /* request target as sent */
    http_header *headers;
    size_t header_count;
    const uint8_t *body; /* NUL-terminated for convenience; may hold NULs */
    size_t body_len;
    char request_id[HTTP_REQUEST_ID_LEN + 1];
    /* filled by the router */
    char *segments[HTTP_MAX_SEGMENTS]; /* decoded path segments */
    size_t segment_count;
    http_param query[HTTP_MAX_QUERY];
    size_t query_count;
    char policy[64]; /* authenticated policy name */
    unsigned rights; /* its rights (enum hub_right bits) */
} http_request;

/* ---- http_strict.c ------------------------------------------------------ */

/* Strict framing scanner run over the bytes libhttp-parser consumed (which,
 * built without HTTP_PARSER_STRICT, accepts any byte where a CRLF's LF
 * belongs): every CR must be followed by LF and a chunked body's sizes,
 * data and CRLFs must add up. See http_strict.c. */
typedef struct http_strict {
    uint8_t state;
    uint8_t digits;   /* hex digits of the current chunk size */
    bool cr;          /* the last byte was a CR */
    bool line_empty;  /* nothing but the line end so far on this line */
    bool started;     /* the request line has begun */
    bool chunked;     /* the body is chunked (known once the head is) */
    uint64_t left;    /* chunk data bytes still to come */
} http_strict;

/* Starts a new message. */
void http_strict_reset(http_strict *s);
/* Scans the next `len` consumed bytes of the message; `chunked` is whether
 * the parser found Transfer-Encoding: chunked. False on a framing error. */
bool http_strict_scan(http_strict *s, const uint8_t *p, size_t len, bool chunked);

/* ---- http_conn.c -------------------------------------------------------- */

extern const net_conn_handler http_conn_handler; /* listener_arg: service * */

/* Queues a formatted response for req and ends the request: the connection
 * resumes reading (keep-alive) or closes. Frees req's storage. Used by
 * response.c only. */
void http_conn_finish(http_request *req, int status, const char *etag, const char *body,
                      size_t body_len);

/* Streaming responses (Server-Sent Events). http_stream_begin answers req
 * with a 200 head carrying content_type, no Content-Length and
 * "Connection: close" (the body ends when the connection does, so
 * pipelined requests after this one are never answered: the client sees
 * the close and retries them elsewhere, as HTTP allows). It frees req's
 * storage (copy what you need first) and returns the stream, or NULL when
 * the client already went away (on_close is then never called). From then
 * on the connection's input is read and discarded, so a client that leaves
 * is noticed at once; on_close(arg) runs exactly once when the connection
 * closes for any reason (the stream is invalid after it), on_drain(arg)
 * when queued output fell back below the low-water mark. */
typedef struct http_stream_handler {
    void (*on_close)(void *arg);
    void (*on_drain)(void *arg);
} http_stream_handler;
http_conn *http_stream_begin(http_request *req, const char *content_type,
                             const http_stream_handler *h, void *arg);
/* Queues bytes; false when the connection is closing (or out of memory). */
bool http_stream_write(http_conn *s, const void *data, size_t len);
size_t http_stream_queued(const http_conn *s);
/* Ends the stream: flushes, closes; on_close follows. */
void http_stream_close(http_conn *s);

/* ---- response.c --------------------------------------------------------- */

const char *http_reason(int status);

/* Appends a whole response to out (status line, x-ms-request-id,
 * Content-Type/Length, ETag when non-NULL, Connection when asked).
 * connection_header: NULL, "close" or "keep-alive". */
bool http_write_response(net_conn *c, int status, const char *request_id, const char *etag,
                         const char *connection_header, const char *body, size_t body_len);

/* A JSON error body; returns a malloc'd string (NULL when out of memory). */
char *http_error_body(const char *code, const char *text, const char *request_id);

/* Fresh random request id (UUID v4 text). */
void http_new_request_id(char out[HTTP_REQUEST_ID_LEN + 1]);

/* Answers: a JSON value (stolen; NULL = no body), an empty body, an error. */
void http_reply_json(http_request *req, int status, json_t *body, const char *etag);
void http_reply_empty(http_request *req, int status);
void http_reply_error(http_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 404 DeviceNotFound for a device (module NULL) or a module of one. */
void http_reply_not_found(http_request *req, const char *device, const char *module);

/* ---- router.c ----------------------------------------------------------- */

/* Routes a complete request; always ends in exactly one reply. */
void router_dispatch(http_request *req);

const char *http_header_get(const http_request *req, const char *name);
const char *http_query_get(const http_request *req, const char *name);
/* The If-Match header as an etag condition: *out is NULL when absent,
 * "*" or the etag unquoted (quotes and a weak "W/" prefix tolerated) in
 * buf. False after answering 400 for an empty or half-quoted value, or 412
 * for one longer than cap, which no etag can match. */
bool http_if_match(http_request *req, char *buf, size_t cap, const char **out);

/* ---- auth.c ------------------------------------------------------------- */

/* The last token on a connection whose signature checked out. A back end
 * sends the same token with every request of a keep-alive connection, and
 * the memo spares it the HMAC each time; the expiry, the resource and the
 * rights are still checked on every request. Each http_conn holds one. */
typedef struct auth_memo {
    char *header;      /* the Authorization value as sent; NULL: none */
    size_t header_len;
    char *resource;    /* sr, decoded; in the same block as header */
    uint64_t expiry;   /* se, seconds since the epoch */
    char policy[64];
    unsigned rights;
} auth_memo;

void auth_memo_clear(auth_memo *m);
/* The memo of req's connection (http_conn.c). */
auth_memo *http_conn_auth_memo(http_request *req);

/* Checks the request's SAS token and that its policy has every right in
 * `needed`. On success fills req->policy/rights and returns true; otherwise
 * answers 401 or 403 and returns false. */
bool auth_check(http_request *req, unsigned needed);

/* "RegistryRead, ServiceConnect" style, in the fixed order of enum hub_right. */
const char *service_rights_text(unsigned rights, char *buf, size_t cap);

/* ---- identity_json.c ---------------------------------------------------- */

json_t *identity_to_json(const hub_identity *id);

/* Parses a Device (or Module) JSON body for the identity named by the
 * path. Fields the server owns (etag, generationId, connection state...)
 * are ignored. False with a reason for invalid JSON, wrong types or ids
 * that contradict the path. */
bool identity_from_json(const uint8_t *body, size_t len, const char *device_id,
                        const char *module_id, hub_identity *out, char *err, size_t errlen);


/* ---- events.c ----------------------------------------------------------- */

void events_list(http_request *req);
void events_partitions(http_request *req);
void events_stream(http_request *req);
void events_checkpoint_get(http_request *req);
void events_checkpoint_put(http_request *req);

/* Exposed for unit tests: one stored event as served ({"partition",
 * "sequenceNumber","offset","enqueuedTime","systemProperties","properties",
 * "body"|"bodyBase64"}); NULL when its properties cannot be decoded. */
struct store_event;
json_t *events_event_json(const struct store_event *ev);
/* A decimal u64 query value within max; false for anything else. */
bool events_parse_u64(const char *text, uint64_t max, uint64_t *out);
/* "P:SEQ" (an SSE event id) into its parts. */
bool events_parse_event_id(const char *text, unsigned *partition, uint64_t *seq);
/* Consumer group names: 1..64 of letters, digits, '-', '.', '_'. */
bool events_valid_group(const char *name);
/* True when service_set_telemetry was called; otherwise answers 500. */
bool events_enabled(http_request *req);
/* The `partition` query parameter (or path segment) checked against the
 * store's count; false after answering 400. */
bool events_partition_arg(http_request *req, const char *text, unsigned *out);

/* ---- devices.c ---------------------------------------------------------- */

void devices_list(http_request *req);
void devices_get(http_request *req);
void devices_put(http_request *req);
void devices_delete(http_request *req);
void modules_list(http_request *req);
void statistics_devices(http_request *req);
void policies_list(http_request *req);

/* ---- throttling.c ------------------------------------------------------- */

/* Asks the hub's throttle for one operation of `kind` (hub/throttle.h).
 * True when admitted; otherwise answers 429 ThrottlingException or 403
 * IotHubQuotaExceeded and returns false (the handler must stop). */
bool service_admit(http_request *req, hub_throttle_kind kind);

/* ---- methods.c ---------------------------------------------------------- */

void methods_invoke(http_request *req); /* POST .../methods */

/* ---- c2d.c -------------------------------------------------------------- */

void c2d_http_send(http_request *req);     /* POST /devices/{id}/messages/deviceBound */
void c2d_http_purge(http_request *req);    /* DELETE /devices/{id}/commands */
void c2d_http_feedback(http_request *req); /* GET /messages/serviceBound/feedback */

/* ---- twins.c ------------------------------------------------------------ */

void twins_get(http_request *req);
void twins_patch(http_request *req);   /* merge */
void twins_replace(http_request *req); /* PUT */

#endif

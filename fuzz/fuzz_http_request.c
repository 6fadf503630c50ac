/*
 * fuzz/fuzz_http_request.c — libFuzzer target for the HTTP request path of
 * the service API: service/http_conn.c (framing with libhttp-parser, the
 * header/body limits, keep-alive, pipelining, Expect: 100-continue,
 * asynchronous answers, the request timeout, streaming responses),
 * service/router.c (path and query decoding, routing, 404/405),
 * service/auth.c (the Authorization header) and service/response.c.
 *
 * No socket: the net layer is replaced by stubs below that behave like
 * net/conn.h promises (unconsumed input offered again with what follows, no
 * input while paused, close deferred to the end of the "iteration", the
 * connection freed after on_close), and the route handlers by stubs that
 * check the request and answer it, at once or later.
 *
 * Input: byte 0 configures the run —
 *   bits 0-1  how input arrives: all at once, 1 byte, 7 bytes or 61 bytes
 *             at a time;
 *   bit 2     small limits (512 header bytes, 8 headers, 1 KiB body)
 *             instead of the defaults (16 KiB, 100, 1 MiB);
 *   bit 3     handlers answer later (after on_input returned) rather than
 *             at once;
 *   bit 4     the request timer fires after the last byte (408 path);
 *   bit 5     the peer closes while a late answer is still pending;
 * the rest is the byte stream the client sends.
 * Checked: every request a handler sees is well formed (method, target
 * starting with '/', at most max_headers NUL-terminated headers within
 * max_header_bytes, a NUL-terminated body within max_body_bytes, decoded
 * path segments, rights granted by auth); the bytes written back parse as a
 * sequence of HTTP/1.1 responses (http_parser in response mode), each
 * carrying x-ms-request-id, and the handlers' answers come out in request
 * order. Broken invariants abort; memory errors are ASan's and UBSan's.
 *
 * The handler stubs follow service/internal.h: a route added to router.c
 * with a new handler needs a stub here.
 */
#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/conn.h"
#include "service/internal.h"
#include "util/log.h"

#define HOST "fuzz.azure-devices.net"
#define KEY "aW90aHViZC1mdXp6LWtleS0wMTIzNDU2Nzg5YWJjZGVm" /* as in the seeds */
#define OUT_CAP (4u << 20)

/* A broken invariant: say which one, then abort (libFuzzer saves the input). */
#define check(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    abort();
}

/* ---- the net layer --------------------------------------------------------- */

struct net_conn {
    uint8_t *out;
    size_t out_len, out_cap;
    bool closing, paused;
};

static net_timer *armed; /* the connection's timer while armed */

net_loop *net_conn_loop(const net_conn *c)
{
    (void)c;
    return NULL;
}

void net_timer_start(net_loop *loop, net_timer *t, uint64_t delay_ms, net_timer_fn fn)
{
    (void)loop;
    check(delay_ms > 0);
    t->fn = fn;
    t->heap_index = 1;
    armed = t;
}

void net_timer_stop(net_loop *loop, net_timer *t)
{
    (void)loop;
    t->heap_index = 0;
    if (armed == t)
        armed = NULL;
}

uint8_t *net_conn_reserve(net_conn *c, size_t n)
{
    if (c->out_len + n > OUT_CAP)
        return NULL;
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + n)
            cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p)
            return NULL;
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

void net_conn_commit(net_conn *c, size_t used)
{
    check(c->out_len + used <= c->out_cap);
    c->out_len += used;
}

bool net_conn_write(net_conn *c, const void *data, size_t len)
{
    uint8_t *p = net_conn_reserve(c, len);
    if (!p)
        return false;
    memcpy(p, data, len);
    net_conn_commit(c, len);
    return true;
}

size_t net_conn_out_queued(const net_conn *c)
{
    return c->out_len;
}

void net_conn_pause_input(net_conn *c, bool paused)
{
    c->paused = paused;
}

void net_conn_close(net_conn *c, bool flush)
{
    (void)flush;
    c->closing = true;
}

bool net_conn_closing(const net_conn *c)
{
    return c->closing;
}

const char *net_conn_peer_str(const net_conn *c)
{
    (void)c;
    return "fuzz:1";
}

/* ---- what the router needs besides the handlers ---------------------------- */

bool registry_policy_get(hub_registry *r, const char *name, hub_policy *out)
{
    (void)r;
    memset(out, 0, sizeof *out);
    unsigned rights = 0;
    if (strcmp(name, "iothubowner") == 0)
        rights = HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE |
                 HUB_RIGHT_SERVICE_CONNECT | HUB_RIGHT_DEVICE_CONNECT;
    else if (strcmp(name, "registryRead") == 0)
        rights = HUB_RIGHT_REGISTRY_READ;
    else
        return false;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->rights = rights;
    snprintf(out->primary_key, sizeof out->primary_key, "%s", KEY);
    return true;
}

/* ---- handlers ---------------------------------------------------------------- */

static struct {
    size_t max_header_bytes, max_body_bytes;
    unsigned max_headers;
    bool late;                 /* answer after on_input returns */
    http_request *pending;     /* a late answer still owed */
    unsigned seq;              /* answers given by handlers */
    http_conn *stream;         /* an open event stream */
    bool stream_closed;
} run;

static void check_request(const http_request *req)
{
    check(req->method && req->method[0]);
    check(req->target && req->target[0] == '/');
    check(req->header_count <= run.max_headers);
    size_t head = strlen(req->target);
    for (size_t i = 0; i < req->header_count; i++) {
        check(req->headers[i].name && req->headers[i].value);
        head += strlen(req->headers[i].name) + strlen(req->headers[i].value);
    }
    check(head <= run.max_header_bytes);
    check(req->body && req->body_len <= run.max_body_bytes && req->body[req->body_len] == '\0');
    check(req->segment_count >= 1 && req->segment_count <= HTTP_MAX_SEGMENTS);
    for (size_t i = 0; i < req->segment_count; i++)
        check(req->segments[i] && req->segments[i][0]);
    check(req->query_count <= HTTP_MAX_QUERY);
    check(strcmp(req->policy, "iothubowner") == 0 || strcmp(req->policy, "registryRead") == 0);
    check(req->rights != 0);
    const char *auth = http_header_get(req, "authorization");
    check(auth && strncmp(auth, "SharedAccessSignature ", 22) == 0);
    check(strlen(req->request_id) == HTTP_REQUEST_ID_LEN);
}

static void answer(http_request *req)
{
    char body[64];
    int n = snprintf(body, sizeof body, "{\"seq\":%u}", run.seq++);
    switch (run.seq % 3) {
    case 0:
        http_reply_json(req, 200, json_loadb(body, (size_t)n, 0, NULL), "etag-1");
        break;
    case 1:
        http_reply_error(req, 409, "Conflict", "seq %u", run.seq - 1);
        break;
    default:
        http_conn_finish(req, 200, NULL, body, (size_t)n);
        break;
    }
}

static void handle(http_request *req)
{
    check_request(req);
    if (run.late) {
        check(run.pending == NULL);
        run.pending = req;
        return;
    }
    answer(req);
}

static void stream_closed(void *arg)
{
    (void)arg;
    check(!run.stream_closed);
    run.stream_closed = true;
    run.stream = NULL;
}

static void stream_drain(void *arg)
{
    (void)arg;
}

void events_stream(http_request *req)
{
    static const http_stream_handler h = {stream_closed, stream_drain};
    check_request(req);
    run.seq++;
    http_conn *s = http_stream_begin(req, "text/event-stream", &h, NULL);
    if (!s)
        return;
    run.stream = s;
    static const char ev[] = ": hello\n\n";
    check(http_stream_write(s, ev, sizeof ev - 1));
    check(http_stream_queued(s) > 0);
}

void devices_list(http_request *req) { handle(req); }
void devices_get(http_request *req) { handle(req); }
void devices_put(http_request *req) { handle(req); }
void devices_delete(http_request *req) { handle(req); }
void modules_list(http_request *req) { handle(req); }
void statistics_devices(http_request *req) { handle(req); }
void policies_list(http_request *req) { handle(req); }
void twins_get(http_request *req) { handle(req); }
void twins_patch(http_request *req) { handle(req); }
void twins_replace(http_request *req) { handle(req); }
void methods_invoke(http_request *req) { handle(req); }
void c2d_http_send(http_request *req) { handle(req); }
void c2d_http_purge(http_request *req) { handle(req); }
void c2d_http_feedback(http_request *req) { handle(req); }
void events_list(http_request *req) { handle(req); }
void events_partitions(http_request *req) { handle(req); }
void events_checkpoint_get(http_request *req) { handle(req); }
void events_checkpoint_put(http_request *req) { handle(req); }

/* ---- checking the output ----------------------------------------------------- */

static struct {
    bool in_rid, in_field, saw_rid;
    int last_seq;
    unsigned responses;
    char body[64];
    size_t body_len;
} out;

static int out_header_field(http_parser *p, const char *at, size_t n)
{
    (void)p;
    out.in_field = true;
    out.in_rid = n == 15 && strncasecmp(at, "x-ms-request-id", 15) == 0;
    return 0;
}

static int out_header_value(http_parser *p, const char *at, size_t n)
{
    (void)p;
    (void)at;
    if (out.in_rid && n == HTTP_REQUEST_ID_LEN)
        out.saw_rid = true;
    return 0;
}

static int out_body(http_parser *p, const char *at, size_t n)
{
    (void)p;
    size_t room = sizeof out.body - 1 - out.body_len;
    size_t take = n < room ? n : room;
    memcpy(out.body + out.body_len, at, take);
    out.body_len += take;
    return 0;
}

static int out_begin(http_parser *p)
{
    (void)p;
    out.saw_rid = false;
    out.body_len = 0;
    return 0;
}

static int out_complete(http_parser *p)
{
    if (p->status_code != 100) {
        check(out.saw_rid);
        out.responses++;
    }
    out.body[out.body_len] = '\0';
    unsigned seq;
    if (sscanf(out.body, "{\"seq\":%u}", &seq) == 1 ||
        sscanf(out.body, "{\"Message\":\"ErrorCode:Conflict;seq %u\"", &seq) == 1) {
        check((int)seq > out.last_seq);
        out.last_seq = (int)seq;
    }
    return 0;
}

static void check_output(const net_conn *c)
{
    static const http_parser_settings s = {
        .on_message_begin = out_begin,
        .on_header_field = out_header_field,
        .on_header_value = out_header_value,
        .on_body = out_body,
        .on_message_complete = out_complete,
    };
    memset(&out, 0, sizeof out);
    out.last_seq = -1;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    size_t n = http_parser_execute(&p, &s, (const char *)c->out, c->out_len);
    check(n == c->out_len && HTTP_PARSER_ERRNO(&p) == HPE_OK);
    http_parser_execute(&p, &s, NULL, 0); /* EOF ends a streamed body */
    check(HTTP_PARSER_ERRNO(&p) == HPE_OK);
}

/* ---- driving one connection -------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const size_t slices[4] = {SIZE_MAX, 1, 7, 61};
    uint8_t ctl = data[0];
    size_t slice = slices[ctl & 3];
    bool small = ctl & 4, fire_timer = ctl & 16, early_close = ctl & 32;
    data++, size--;

    memset(&run, 0, sizeof run);
    run.max_header_bytes = small ? 512 : 16 * 1024;
    run.max_headers = small ? 8 : 100;
    run.max_body_bytes = small ? 1024 : 1024 * 1024;
    run.late = ctl & 8;
    armed = NULL;

    service svc = {0};
    svc.cfg.hostname = HOST;
    svc.hostname = (char *)HOST;
    svc.cfg.max_header_bytes = run.max_header_bytes;
    svc.cfg.max_headers = run.max_headers;
    svc.cfg.max_body_bytes = run.max_body_bytes;
    svc.cfg.idle_timeout_ms = 120000;
    svc.cfg.request_timeout_ms = 30000;

    net_conn *c = calloc(1, sizeof *c);
    check(c != NULL);
    void *user = http_conn_handler.on_open(c, NULL, &svc); /* no user_size: no area */
    check(user != NULL);

    /* net_conn's input: what arrived and was not consumed yet */
    uint8_t *in = malloc(size ? size : 1);
    check(in != NULL);
    size_t in_len = 0, sent = 0;
    bool closed = false;
    while (!closed) {
        if (sent < size && !c->paused) {
            size_t n = size - sent < slice ? size - sent : slice;
            memcpy(in + in_len, data + sent, n);
            in_len += n;
            sent += n;
        }
        if (in_len && !c->paused && !c->closing) {
            /* exactly the unconsumed bytes, in a buffer of their size */
            uint8_t *view = malloc(in_len);
            check(view != NULL);
            memcpy(view, in, in_len);
            size_t used = http_conn_handler.on_input(c, user, view, in_len);
            free(view);
            check(used <= in_len);
            memmove(in, in + used, in_len - used);
            in_len -= used;
        }
        if (run.pending && !(early_close && sent == size)) {
            http_request *req = run.pending;
            run.pending = NULL;
            answer(req);
            continue;
        }
        if (c->closing)
            closed = true;
        else if (sent == size) {
            if (fire_timer && armed && !run.pending) {
                net_timer *t = armed;
                armed = NULL;
                t->heap_index = 0;
                t->fn(NULL, t);
                check(c->closing || run.stream);
            }
            closed = true; /* the peer is done: EOF */
        }
    }
    if (run.stream && !c->closing)
        http_stream_close(run.stream);
    http_conn_handler.on_close(c, user);
    check_output(c);
    free(c->out);
    free(c);
    if (run.pending) { /* the handler answers after the client left */
        http_request *req = run.pending;
        run.pending = NULL;
        answer(req);
    }
    free(in);
    return 0;
}

/*
 * service/http_conn.c — one HTTP/1.1 connection: bytes in, requests out.
 *
 * Parsing is libhttp-parser's (streaming, no copies of its own). We collect
 * the request target and header fields into one growable buffer `head`
 * (NUL-separated, referenced by offset because it may move while it grows)
 * and the body into `body`; both are bounded by the configured limits, which
 * is also the only memory a request can make us hold.
 *
 * One request at a time. The parser is paused from on_message_complete, so
 * http_parser_execute() stops right after each request and what follows (a
 * pipelined request) stays unconsumed in net_conn's input buffer. The
 * request then goes to the router. If it is answered at once we go on
 * parsing the same input; if the handler answers later (a registry write
 * waiting for the store), input is paused with net_conn_pause_input and
 * resumed when the answer is queued, at which point net_conn re-offers the
 * buffered bytes. Responses therefore always leave in request order.
 *
 * Strict framing: Debian's libhttp-parser is built lenient (any byte is
 * taken where a CRLF's LF belongs, also around chunk data), and it accepts
 * whitespace between a field name and its colon. Either would let a
 * front end and us disagree on where a request ends (request smuggling).
 * So every byte the parser consumed is re-scanned by http_strict.c, and
 * field names with whitespace are refused: both -> 400 and close. Content-
 * Length together with Transfer-Encoding, or two Content-Lengths, are
 * refused by the parser itself (-> 400 and close, RFC 9112 §6.3).
 *
 * Limits: request line + headers <= max_header_bytes (fed to the parser in
 * slices no larger than what is left of that budget, so an endless header
 * is caught at the limit and not at the parser's own 80 KiB), at most
 * max_headers fields (both -> 431), body <= max_body_bytes by Content-Length
 * before reading it or by counting chunked data (-> 413), anything the
 * parser rejects -> 400. Each of these answers with the spec's error body
 * and "Connection: close" and closes after the flush.
 *
 * Timeouts: one timer per connection. Idle (between requests) it closes the
 * connection silently after idle_timeout_ms; from the first byte of a
 * request it bounds the whole request's arrival to request_timeout_ms (a
 * slowloris client cannot keep it open by trickling), answering 408. While
 * a handler is working the timer is off: handlers own their own timeouts.
 *
 * Expect: 100-continue is answered with "100 Continue" once the headers
 * passed the limits (and with the final error otherwise, without reading
 * the body). HTTP/1.0 is served; keep-alive follows http_should_keep_alive.
 *
 * Lifetime: the http_conn is freed in on_close unless a handler still owns
 * its request; then it is marked orphaned and freed when the handler
 * answers (the answer itself goes nowhere).
 *
 * Streaming (Server-Sent Events, events.c): a handler may answer with
 * http_stream_begin instead: a head without Content-Length and with
 * "Connection: close", after which the connection is in HC_STREAM until it
 * closes. That is the smallest departure from one-response-per-request that
 * keeps HTTP's rules: the body is delimited by the close, so no later
 * response could follow it anyway, and input (a pipelined request, or
 * anything else) is read and discarded rather than paused, so that the
 * peer's close is seen at once and the stream's owner freed in on_close.
 */
#include <http_parser.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/conn.h"
#include "service/internal.h"
#include "util/log.h"

enum hc_phase {
    HC_IDLE,    /* waiting for the first byte of a request */
    HC_READING, /* request line, headers or body arriving */
    HC_HANDLER, /* complete request given to a handler, not yet answered */
    HC_STREAM,  /* answered with a streaming body that ends with the connection */
};

typedef struct hc_header {
    size_t name_off, value_off; /* into head; NUL-terminated there */
} hc_header;

struct http_conn {
    service *svc;
    net_conn *c; /* NULL once closed */
    http_parser parser;
    net_timer timer;
    enum hc_phase phase;
    bool orphaned;       /* closed while a handler owns the request */
    bool close_after;    /* close once the current response is queued */
    bool headers_done;   /* of the request being read */
    bool message_done;
    bool in_value;       /* last header callback was a value */
    bool expect_continue;
    bool http10;
    size_t head_bytes;   /* raw bytes of request line + headers so far */
    http_strict strict;  /* framing re-checked strictly (http_strict.c) */
    /* error found while parsing (answered after execute returns) */
    int fail_status;
    const char *fail_code;
    const char *fail_text;
    /* request storage */
    char *head;
    size_t head_len, head_cap;
    size_t url_len; /* target = head[0 .. url_len) */
    hc_header *fields;
    size_t field_count;
    uint8_t *body;
    size_t body_len, body_cap;
    http_header *views; /* handed to the request */
    http_request req;
    auth_memo auth; /* outlives requests: see auth.c */
    /* HC_STREAM only */
    http_stream_handler stream;
    void *stream_arg;
};

/* ---- storage ------------------------------------------------------------- */

static bool grow_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n,
                        size_t limit)
{
    if (*len + n + 1 > limit + 1)
        return false;
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 256;
        while (ncap < *len + n + 1)
            ncap *= 2;
        if (ncap > limit + 1)
            ncap = limit + 1;
        char *p = realloc(*buf, ncap);
        if (!p)
            return false;
        *buf = p;
        *cap = ncap;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

static void request_reset(http_conn *hc)
{
    for (size_t i = 0; i < hc->req.segment_count; i++)
        free(hc->req.segments[i]);
    for (size_t i = 0; i < hc->req.query_count; i++) {
        free(hc->req.query[i].name);
        free(hc->req.query[i].value);
    }
    free(hc->head);
    free(hc->fields);
    free(hc->body);
    free(hc->views);
    hc->head = NULL;
    hc->fields = NULL;
    hc->body = NULL;
    hc->views = NULL;
    hc->head_len = hc->head_cap = hc->url_len = hc->field_count = 0;
    hc->body_len = hc->body_cap = 0;
    hc->head_bytes = 0;
    hc->headers_done = hc->message_done = hc->in_value = false;
    hc->expect_continue = false;
    memset(&hc->req, 0, sizeof hc->req);
}

static void conn_free(http_conn *hc)
{
    request_reset(hc);
    auth_memo_clear(&hc->auth);
    free(hc);
}

auth_memo *http_conn_auth_memo(http_request *req)
{
    return &req->conn->auth;
}

/* Records a parse-time failure; the parser callback then returns non-zero. */
static int set_fail(http_conn *hc, int status, const char *code, const char *text)
{
    if (!hc->fail_status) {
        hc->fail_status = status;
        hc->fail_code = code;
        hc->fail_text = text;
    }
    return 1;
}

/* ---- parser callbacks ---------------------------------------------------- */

static void timeout_fired(net_loop *loop, net_timer *t);

static int on_message_begin(http_parser *p)
{
    http_conn *hc = p->data;
    request_reset(hc);
    hc->phase = HC_READING;
    net_timer_start(net_conn_loop(hc->c), &hc->timer, hc->svc->cfg.request_timeout_ms,
                    timeout_fired);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    if (!grow_append(&hc->head, &hc->head_len, &hc->head_cap, at, n,
                     hc->svc->cfg.max_header_bytes))
        return set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "request line too long");
    hc->url_len = hc->head_len;
    return 0;
}

/* Starts a new header entry: terminates the previous value (or the URL). */
static int start_field(http_conn *hc)
{
    if (hc->field_count == hc->svc->cfg.max_headers)
        return set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "too many header fields");
    if (hc->field_count == 0) {
        hc->fields = calloc(hc->svc->cfg.max_headers, sizeof *hc->fields);
        if (!hc->fields)
            return set_fail(hc, 500, "ServerError", "out of memory");
    }
    size_t limit = hc->svc->cfg.max_header_bytes;
    if (!grow_append(&hc->head, &hc->head_len, &hc->head_cap, "", 1, limit))
        return set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "request headers too large");
    hc->fields[hc->field_count].name_off = hc->head_len;
    hc->fields[hc->field_count].value_off = SIZE_MAX;
    hc->field_count++;
    hc->in_value = false;
    return 0;
}

/* Header callbacks after on_headers_complete are a chunked body's trailer
 * fields: they are ignored. Storing them would grow (and move) the buffer
 * the request's header views already point into. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    if (hc->headers_done)
        return 0;
    if ((hc->field_count == 0 || hc->in_value) && start_field(hc))
        return 1;
    if (!grow_append(&hc->head, &hc->head_len, &hc->head_cap, at, n,
                     hc->svc->cfg.max_header_bytes))
        return set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "request headers too large");
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    if (hc->headers_done)
        return 0;
    size_t limit = hc->svc->cfg.max_header_bytes;
    hc_header *f = &hc->fields[hc->field_count - 1];
    if (!hc->in_value) {
        /* a NUL ends the name; the value starts after it */
        if (!grow_append(&hc->head, &hc->head_len, &hc->head_cap, "", 1, limit))
            return set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "request headers too large");
        f->value_off = hc->head_len;
        hc->in_value = true;
    }
    if (!grow_append(&hc->head, &hc->head_len, &hc->head_cap, at, n, limit))
        return set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "request headers too large");
    return 0;
}

/* Builds the request's header views (after the last value is terminated). */
static bool build_views(http_conn *hc)
{
    if (hc->field_count == 0)
        return true;
    hc->views = calloc(hc->field_count, sizeof *hc->views);
    if (!hc->views)
        return false;
    for (size_t i = 0; i < hc->field_count; i++) {
        hc_header *f = &hc->fields[i];
        hc->views[i].name = hc->head + f->name_off;
        hc->views[i].value = f->value_off == SIZE_MAX ? "" : hc->head + f->value_off;
    }
    return true;
}

/* RFC 9112 §5.1: no whitespace between a field name and the colon (the
 * lenient parser keeps it as part of the name, or worse, still recognises
 * "Content-Length " as Content-Length). */
static bool field_names_valid(const http_conn *hc)
{
    for (size_t i = 0; i < hc->field_count; i++) {
        const char *name = hc->views[i].name;
        if (!*name || strpbrk(name, " \t"))
            return false;
    }
    return true;
}

static const char *find_header(http_conn *hc, const char *name)
{
    for (size_t i = 0; i < hc->field_count; i++)
        if (strcasecmp(hc->views[i].name, name) == 0)
            return hc->views[i].value;
    return NULL;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *hc = p->data;
    hc->headers_done = true;
    if (!build_views(hc))
        return set_fail(hc, 500, "ServerError", "out of memory");
    if (!field_names_valid(hc))
        return set_fail(hc, 400, "ArgumentInvalid", "whitespace in a header field name");
    hc->http10 = p->http_major == 1 && p->http_minor == 0;
    bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
    if (has_length && p->content_length > hc->svc->cfg.max_body_bytes)
        return set_fail(hc, 413, "MessageTooLarge", "request body too large");
    const char *expect = find_header(hc, "Expect");
    hc->expect_continue = expect && strcasecmp(expect, "100-continue") == 0 && !hc->http10;
    bool body_follows = (p->flags & F_CHUNKED) || (has_length && p->content_length > 0);
    if (hc->expect_continue && body_follows) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        net_conn_write(hc->c, cont, sizeof cont - 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_conn *hc = p->data;
    if (!grow_append((char **)&hc->body, &hc->body_len, &hc->body_cap, at, n,
                     hc->svc->cfg.max_body_bytes))
        return set_fail(hc, 413, "MessageTooLarge", "request body too large");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn *hc = p->data;
    hc->message_done = true;
    if (!http_should_keep_alive(p) || p->upgrade)
        hc->close_after = true;
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- answering ----------------------------------------------------------- */

static void arm_idle(http_conn *hc)
{
    net_timer_start(net_conn_loop(hc->c), &hc->timer, hc->svc->cfg.idle_timeout_ms,
                    timeout_fired);
}

/* Answers a protocol-level error (no handler involved) and closes. */
static void fail_and_close(http_conn *hc, int status, const char *code, const char *text)
{
    char rid[HTTP_REQUEST_ID_LEN + 1];
    http_new_request_id(rid);
    log_info("service: %s: %d %s: %s", net_conn_peer_str(hc->c), status, code, text);
    char *body = http_error_body(code, text, rid);
    http_write_response(hc->c, status, rid, NULL, "close", body, body ? strlen(body) : 0);
    free(body);
    net_timer_stop(net_conn_loop(hc->c), &hc->timer);
    net_conn_close(hc->c, true);
    hc->close_after = true;
}

void http_conn_finish(http_request *req, int status, const char *etag, const char *body,
                      size_t body_len)
{
    http_conn *hc = req->conn;
    if (hc->orphaned) {
        conn_free(hc);
        return;
    }
    const char *connection = hc->close_after ? "close" : hc->http10 ? "keep-alive" : NULL;
    if (!http_write_response(hc->c, status, req->request_id, etag, connection, body, body_len))
        hc->close_after = true; /* out of memory: nothing sane left to say */
    hc->phase = HC_IDLE;
    request_reset(hc);
    if (hc->close_after) {
        net_conn_close(hc->c, true);
        return;
    }
    arm_idle(hc);
    net_conn_pause_input(hc->c, false); /* no-op if it was answered at once */
}

/* Turns the parsed message into a request and routes it. */
static void dispatch(http_conn *hc)
{
    http_request *req = &hc->req;
    req->svc = hc->svc;
    req->conn = hc;
    req->loop = net_conn_loop(hc->c);
    req->method = http_method_str((enum http_method)hc->parser.method);
    req->target = hc->head ? hc->head : "";
    req->headers = hc->views;
    req->header_count = hc->field_count;
    if (!hc->body && !grow_append((char **)&hc->body, &hc->body_len, &hc->body_cap, "", 0, 0)) {
        fail_and_close(hc, 500, "ServerError", "out of memory");
        return;
    }
    req->body = hc->body;
    req->body_len = hc->body_len;
    http_new_request_id(req->request_id);
    net_timer_stop(req->loop, &hc->timer);
    hc->phase = HC_HANDLER;
    router_dispatch(req); /* may answer at once: phase is HC_IDLE again then */
}

/* ---- net_conn callbacks -------------------------------------------------- */

static void timeout_fired(net_loop *loop, net_timer *t)
{
    (void)loop;
    http_conn *hc = (http_conn *)((char *)t - offsetof(http_conn, timer));
    if (hc->phase == HC_READING) {
        fail_and_close(hc, 408, "RequestTimeout", "request not received in time");
        return;
    }
    log_debug("service: %s: idle, closing", net_conn_peer_str(hc->c));
    net_conn_close(hc->c, true);
}

/* The http_conn is a block of its own (the handler has no user_size): a
 * handler may still own it after the connection closed. */
static void *hc_open(net_conn *c, void *area, void *listener_arg)
{
    (void)area;
    http_conn *hc = calloc(1, sizeof *hc);
    if (!hc) {
        log_error("service: out of memory accepting %s", net_conn_peer_str(c));
        return NULL;
    }
    hc->svc = listener_arg;
    hc->c = c;
    http_parser_init(&hc->parser, HTTP_REQUEST);
    hc->parser.data = hc;
    arm_idle(hc);
    return hc;
}

/* Feeds the parser at most what is left of the header budget while the
 * headers are still arriving; returns the bytes consumed. */
static size_t feed(http_conn *hc, const uint8_t *data, size_t len)
{
    size_t chunk = len;
    bool in_head = !hc->headers_done;
    if (in_head) {
        size_t room = hc->svc->cfg.max_header_bytes - hc->head_bytes;
        if (room == 0) {
            set_fail(hc, 431, "RequestHeaderFieldsTooLarge", "request headers too large");
            return 0;
        }
        if (chunk > room)
            chunk = room;
    }
    size_t n = http_parser_execute(&hc->parser, &parser_settings, (const char *)data, chunk);
    if (in_head)
        hc->head_bytes += n;
    if (!http_strict_scan(&hc->strict, data, n, (hc->parser.flags & F_CHUNKED) != 0))
        set_fail(hc, 400, "ArgumentInvalid", "malformed framing: CR without LF, or a bad chunk");
    return n;
}

static size_t hc_input(net_conn *c, void *user, const uint8_t *data, size_t len)
{
    http_conn *hc = user;
    size_t used = 0;
    if (hc->phase == HC_STREAM)
        return len; /* nothing more is served on a stream's connection */
    while (used < len && !hc->close_after && hc->phase != HC_HANDLER) {
        if (hc->phase == HC_IDLE) {
            hc->head_bytes = 0, hc->headers_done = false;
            http_strict_reset(&hc->strict);
        }
        size_t n = feed(hc, data + used, len - used);
        used += n;
        enum http_errno err = HTTP_PARSER_ERRNO(&hc->parser);
        if (hc->fail_status) {
            fail_and_close(hc, hc->fail_status, hc->fail_code, hc->fail_text);
            return len;
        }
        if (err == HPE_PAUSED && hc->message_done) {
            http_parser_pause(&hc->parser, 0);
            dispatch(hc);
            continue;
        }
        if (err != HPE_OK) {
            fail_and_close(hc, 400, "ArgumentInvalid", http_errno_description(err));
            return len;
        }
        if (n == 0)
            break; /* nothing consumed without an error: wait for more */
    }
    if (hc->phase == HC_HANDLER && !net_conn_closing(c))
        net_conn_pause_input(c, true); /* resumed by http_conn_finish */
    if (hc->close_after)
        return len; /* closing: whatever follows is discarded */
    return used;
}

static void hc_close(net_conn *c, void *user)
{
    http_conn *hc = user;
    net_timer_stop(net_conn_loop(c), &hc->timer);
    hc->c = NULL;
    if (hc->phase == HC_HANDLER) {
        hc->orphaned = true; /* freed by http_conn_finish */
        return;
    }
    if (hc->phase == HC_STREAM && hc->stream.on_close)
        hc->stream.on_close(hc->stream_arg);
    conn_free(hc);
}

static void hc_drain(net_conn *c, void *user)
{
    (void)c;
    http_conn *hc = user;
    if (hc->phase == HC_STREAM && hc->stream.on_drain)
        hc->stream.on_drain(hc->stream_arg);
}

const net_conn_handler http_conn_handler = {
    .on_open = hc_open,
    .on_input = hc_input,
    .on_drain = hc_drain,
    .on_close = hc_close,
};

/* ---- streaming responses -------------------------------------------------- */

http_conn *http_stream_begin(http_request *req, const char *content_type,
                             const http_stream_handler *h, void *arg)
{
    http_conn *hc = req->conn;
    if (hc->orphaned) {
        conn_free(hc);
        return NULL;
    }
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nx-ms-request-id: %s\r\nContent-Type: %s\r\n"
                     "Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
                     req->request_id, content_type);
    hc->close_after = true;
    hc->phase = HC_STREAM;
    hc->stream = *h;
    hc->stream_arg = arg;
    request_reset(hc);
    if (n < 0 || (size_t)n >= sizeof head || !net_conn_write(hc->c, head, (size_t)n))
        net_conn_close(hc->c, false); /* on_close still follows */
    else
        net_conn_pause_input(hc->c, false); /* read (and drop) input: see EOF */
    return hc;
}

bool http_stream_write(http_conn *s, const void *data, size_t len)
{
    if (!s->c || net_conn_closing(s->c))
        return false;
    return net_conn_write(s->c, data, len);
}

size_t http_stream_queued(const http_conn *s)
{
    return s->c ? net_conn_out_queued(s->c) : 0;
}

void http_stream_close(http_conn *s)
{
    if (s->c)
        net_conn_close(s->c, true);
}

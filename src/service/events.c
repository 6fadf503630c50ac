/*
 * service/events.c — iothubd's built-in events endpoint
 * (service-rest.md "Telemetry"): paging through the telemetry log,
 * partition bounds and consumer-group checkpoints. The live stream
 * (Server-Sent Events) is in events_stream.c. Every route needs
 * ServiceConnect (checked by the router).
 *
 *   GET /events?partition=P[&from=SEQ][&max=N][&consumerGroup=G]
 *       200 {"partition":P,"events":[EVENT...],"firstSequenceNumber":F,
 *            "nextSequenceNumber":N}
 *       `from` absent: the group's checkpoint when a group is named and has
 *       one, else the oldest retained event. max 1..1000 (default 100); a
 *       page also stops after ~4 MiB of bodies. nextSequenceNumber is where
 *       the next page starts (asking from there never skips or repeats).
 *   GET /events/partitions
 *       200 {"partitionCount":N,"partitions":[{"partition","firstSequenceNumber",
 *            "lastSequenceNumber","nextSequenceNumber","empty"}...]}
 *   GET|PUT /events/checkpoints/{group}/{partition}   (PUT body {"sequenceNumber":N})
 *       200 {"consumerGroup":G,"partition":P,"sequenceNumber":N}; GET 404
 *       NotFound when the group has none there. A checkpoint is the next
 *       sequence number the group will read (the store's meaning), so a
 *       reader PUTs the nextSequenceNumber of the last page it processed.
 *       Paging never moves a checkpoint by itself: explicit is safer for
 *       at-least-once readers. (The stream does advance its group's
 *       checkpoints; see events_stream.c.)
 *
 *   EVENT = {"partition","sequenceNumber","offset","enqueuedTime",
 *            "systemProperties":{...},"properties":{...},"body"|"bodyBase64"}
 *   offset is the sequence number as a string (Event Hubs' offsets are
 *   opaque strings; ours has no other position to give). The body is a JSON
 *   string when it is valid UTF-8, whatever its content type (a consumer
 *   that wants JSON parses it; guessing would change types under it), and
 *   base64 in "bodyBase64" otherwise.
 *
 * Requests wait for the store on the request's loop; the http layer keeps
 * the request alive even if the client leaves meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/telemetry.h"
#include "service/internal.h"
#include "store/store.h"
#include "util/crypto.h"
#include "util/json_load.h"
#include "util/log.h"
#include "util/time.h"

#define EVENTS_MAX_DEFAULT 100
#define EVENTS_MAX_LIMIT 1000
#define EVENTS_PAGE_BYTES (4u * 1024u * 1024u)
#define EVENTS_KEEPALIVE_DEFAULT_MS 15000u
#define GROUP_NAME_MAX 64

/* ---- configuration -------------------------------------------------------- */

void service_set_telemetry(service *s, hub_telemetry *t, struct store *st)
{
    s->telemetry = t;
    s->store = st;
    if (!s->events_keepalive_ms)
        s->events_keepalive_ms = EVENTS_KEEPALIVE_DEFAULT_MS;
}

void service_set_events_keepalive_ms(service *s, unsigned ms)
{
    s->events_keepalive_ms = ms ? ms : EVENTS_KEEPALIVE_DEFAULT_MS;
}

bool events_enabled(http_request *req)
{
    if (req->svc->telemetry && req->svc->store)
        return true;
    http_reply_error(req, 500, "ServerError", "the events endpoint is not enabled");
    return false;
}

/* ---- parsing -------------------------------------------------------------- */

bool events_parse_u64(const char *text, uint64_t max, uint64_t *out)
{
    size_t n = text ? strlen(text) : 0;
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        unsigned d = (unsigned)(text[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool events_parse_event_id(const char *text, unsigned *partition, uint64_t *seq)
{
    const char *colon = text ? strchr(text, ':') : NULL;
    if (!colon || colon == text || colon - text > 10)
        return false;
    char part[12];
    memcpy(part, text, (size_t)(colon - text));
    part[colon - text] = '\0';
    uint64_t p;
    if (!events_parse_u64(part, UINT32_MAX - 1, &p) ||
        !events_parse_u64(colon + 1, INT64_MAX, seq))
        return false;
    *partition = (unsigned)p;
    return true;
}

bool events_valid_group(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > GROUP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

bool events_partition_arg(http_request *req, const char *text, unsigned *out)
{
    unsigned count = store_partitions(req->svc->store);
    uint64_t p;
    if (!events_parse_u64(text, UINT32_MAX, &p) || p >= count) {
        http_reply_error(req, 400, "ArgumentInvalid", "partition must be 0..%u", count - 1);
        return false;
    }
    *out = (unsigned)p;
    return true;
}

/* ---- rendering ------------------------------------------------------------ */

/* "body" as a JSON string when UTF-8, else "bodyBase64". */
static bool add_body(json_t *o, const store_event *ev)
{
    json_t *text = json_stringn(ev->body_len ? ev->body : "", ev->body_len);
    if (text)
        return json_object_set_new(o, "body", text) == 0;
    size_t cap = (ev->body_len + 2) / 3 * 4 + 1;
    char *b64 = malloc(cap);
    if (!b64)
        return false;
    crypto_b64_encode(ev->body, ev->body_len, b64, cap);
    bool ok = json_object_set_new(o, "bodyBase64", json_string(b64)) == 0;
    free(b64);
    return ok;
}

json_t *events_event_json(const store_event *ev)
{
    json_t *sys, *app;
    if (!telemetry_event_properties(ev, &sys, &app))
        return NULL;
    char when[32], offset[24];
    time_iso8601_utc_ms(ev->enqueued_ms, when);
    snprintf(offset, sizeof offset, "%llu", (unsigned long long)ev->seq);
    json_t *o = json_pack("{s:I, s:I, s:s, s:s, s:o, s:o}", "partition",
                          (json_int_t)ev->partition, "sequenceNumber", (json_int_t)ev->seq,
                          "offset", offset, "enqueuedTime", when, "systemProperties", sys,
                          "properties", app);
    if (o && !add_body(o, ev)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* ---- GET /events ----------------------------------------------------------- */

typedef struct list_call {
    http_request *req;
    unsigned partition;
    uint64_t from;
    size_t max;
    char group[GROUP_NAME_MAX + 1];
} list_call;

/* Where the next page starts when this one returned no events. */
static uint64_t empty_page_next(uint64_t from, const store_read_result *res)
{
    if (from < res->first_seq)
        return res->first_seq;
    return from > res->next_seq ? res->next_seq : from;
}

static void list_read_done(net_loop *loop, void *arg, store_status st,
                           const store_read_result *res, const char *err)
{
    (void)loop;
    list_call *c = arg;
    http_request *req = c->req;
    if (st != STORE_OK) {
        http_reply_error(req, 500, "ServerError", "reading the telemetry log: %s", err);
        free(c);
        return;
    }
    json_t *events = json_array();
    uint64_t next = empty_page_next(c->from, res);
    size_t bytes = 0;
    for (size_t i = 0; events && i < res->n && (i == 0 || bytes < EVENTS_PAGE_BYTES); i++) {
        const store_event *ev = &res->events[i];
        json_t *e = events_event_json(ev);
        next = ev->seq + 1;
        if (!e) { /* a blob we cannot decode: skip it rather than stall readers */
            log_warn("events: event %u:%llu has undecodable properties, skipped", ev->partition,
                     (unsigned long long)ev->seq);
            continue;
        }
        json_array_append_new(events, e);
        bytes += ev->body_len + ev->props_len;
    }
    json_t *body = json_pack("{s:I, s:o, s:I, s:I}", "partition", (json_int_t)c->partition,
                             "events", events ? events : json_array(), "firstSequenceNumber",
                             (json_int_t)res->first_seq, "nextSequenceNumber", (json_int_t)next);
    free(c);
    if (!body) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    http_reply_json(req, 200, body, NULL);
}

static void list_read(list_call *c)
{
    store_telemetry_read(c->req->svc->store, c->partition, c->from, c->max, c->req->loop,
                         list_read_done, c);
}

static void list_checkpoint_done(net_loop *loop, void *arg, store_status st, uint64_t seq,
                                 const char *err)
{
    (void)loop;
    list_call *c = arg;
    if (st != STORE_OK && st != STORE_NOT_FOUND) {
        http_reply_error(c->req, 500, "ServerError", "reading the checkpoint: %s", err);
        free(c);
        return;
    }
    c->from = st == STORE_OK ? seq : 0;
    list_read(c);
}

/* Parses GET /events's query into c; false after answering 400. */
static bool list_args(http_request *req, list_call *c, bool *from_given)
{
    const char *part = http_query_get(req, "partition");
    const char *from = http_query_get(req, "from");
    const char *max = http_query_get(req, "max");
    const char *group = http_query_get(req, "consumerGroup");
    uint64_t v;
    if (!part) {
        http_reply_error(req, 400, "ArgumentInvalid", "the partition parameter is required");
        return false;
    }
    if (!events_partition_arg(req, part, &c->partition))
        return false;
    *from_given = from != NULL;
    if (from && !events_parse_u64(from, INT64_MAX, &c->from)) {
        http_reply_error(req, 400, "ArgumentInvalid", "from must be a sequence number");
        return false;
    }
    c->max = EVENTS_MAX_DEFAULT;
    if (max && (!events_parse_u64(max, EVENTS_MAX_LIMIT, &v) || v == 0)) {
        http_reply_error(req, 400, "ArgumentInvalid", "max must be 1..%d", EVENTS_MAX_LIMIT);
        return false;
    }
    if (max)
        c->max = (size_t)v;
    if (group && !events_valid_group(group)) {
        http_reply_error(req, 400, "ArgumentInvalid", "invalid consumer group name");
        return false;
    }
    snprintf(c->group, sizeof c->group, "%s", group ? group : "");
    return true;
}

void events_list(http_request *req)
{
    if (!events_enabled(req))
        return;
    list_call *c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    c->req = req;
    bool from_given;
    if (!list_args(req, c, &from_given)) {
        free(c);
        return;
    }
    if (!from_given && c->group[0])
        store_checkpoint_get(req->svc->store, c->group, c->partition, req->loop,
                             list_checkpoint_done, c);
    else
        list_read(c);
}

/* ---- GET /events/partitions ------------------------------------------------ */

typedef struct bounds_call {
    http_request *req;
    unsigned count, waiting;
    bool failed;
    json_t *parts; /* array, filled in partition order */
} bounds_call;

typedef struct bounds_slot {
    bounds_call *call;
    unsigned partition;
} bounds_slot;

static void bounds_finish(bounds_call *b)
{
    http_request *req = b->req;
    if (b->failed) {
        json_decref(b->parts);
        http_reply_error(req, 500, "ServerError", "reading the telemetry log failed");
    } else {
        http_reply_json(req, 200,
                        json_pack("{s:I, s:o}", "partitionCount", (json_int_t)b->count,
                                  "partitions", b->parts),
                        NULL);
    }
    free(b);
}

static void bounds_done(net_loop *loop, void *arg, store_status st, const store_read_result *res,
                        const char *err)
{
    (void)loop;
    (void)err;
    bounds_slot *slot = arg;
    bounds_call *b = slot->call;
    if (st != STORE_OK) {
        b->failed = true;
    } else {
        json_t *p = json_pack("{s:I, s:I, s:I, s:I, s:b}", "partition",
                              (json_int_t)slot->partition, "firstSequenceNumber",
                              (json_int_t)res->first_seq, "lastSequenceNumber",
                              (json_int_t)(res->next_seq - 1), "nextSequenceNumber",
                              (json_int_t)res->next_seq, "empty",
                              res->first_seq >= res->next_seq);
        json_array_set_new(b->parts, slot->partition, p ? p : json_null());
    }
    free(slot);
    if (--b->waiting == 0)
        bounds_finish(b);
}

void events_partitions(http_request *req)
{
    if (!events_enabled(req))
        return;
    store *st = req->svc->store;
    bounds_call *b = calloc(1, sizeof *b);
    if (b)
        b->parts = json_array();
    if (!b || !b->parts) {
        free(b);
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    b->req = req;
    b->count = store_partitions(st);
    for (unsigned p = 0; p < b->count; p++)
        json_array_append_new(b->parts, json_null()); /* placeholders, set in order */
    b->waiting = b->count;
    for (unsigned p = 0; p < b->count; p++) {
        bounds_slot *slot = malloc(sizeof *slot);
        if (!slot) { /* abort() is the store's answer to OOM; be as blunt */
            b->failed = true;
            if (--b->waiting == 0)
                bounds_finish(b);
            continue;
        }
        slot->call = b;
        slot->partition = p;
        /* from INT64_MAX: no events, just the bounds */
        store_telemetry_read(st, p, INT64_MAX, 1, req->loop, bounds_done, slot);
    }
}

/* ---- checkpoints ------------------------------------------------------------ */

typedef struct checkpoint_call {
    http_request *req;
    char group[GROUP_NAME_MAX + 1];
    unsigned partition;
    uint64_t seq;
} checkpoint_call;

/* The {group}/{partition} path segments into a new call; NULL after
 * answering 400 (or 500). */
static checkpoint_call *checkpoint_args(http_request *req)
{
    if (!events_enabled(req))
        return NULL;
    const char *group = req->segments[2];
    if (!events_valid_group(group)) {
        http_reply_error(req, 400, "ArgumentInvalid", "invalid consumer group name");
        return NULL;
    }
    unsigned partition;
    if (!events_partition_arg(req, req->segments[3], &partition))
        return NULL;
    checkpoint_call *c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return NULL;
    }
    c->req = req;
    snprintf(c->group, sizeof c->group, "%s", group);
    c->partition = partition;
    return c;
}

static void checkpoint_reply(checkpoint_call *c)
{
    http_reply_json(c->req, 200,
                    json_pack("{s:s, s:I, s:I}", "consumerGroup", c->group, "partition",
                              (json_int_t)c->partition, "sequenceNumber", (json_int_t)c->seq),
                    NULL);
    free(c);
}

static void checkpoint_got(net_loop *loop, void *arg, store_status st, uint64_t seq,
                           const char *err)
{
    (void)loop;
    checkpoint_call *c = arg;
    if (st == STORE_OK) {
        c->seq = seq;
        checkpoint_reply(c);
        return;
    }
    if (st == STORE_NOT_FOUND)
        http_reply_error(c->req, 404, "NotFound", "consumer group '%s' has no checkpoint on "
                         "partition %u", c->group, c->partition);
    else
        http_reply_error(c->req, 500, "ServerError", "reading the checkpoint: %s", err);
    free(c);
}

static void checkpoint_set(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    checkpoint_call *c = arg;
    if (st == STORE_OK) {
        checkpoint_reply(c);
        return;
    }
    http_reply_error(c->req, 500, "ServerError", "writing the checkpoint: %s", err);
    free(c);
}

void events_checkpoint_get(http_request *req)
{
    checkpoint_call *c = checkpoint_args(req);
    if (c)
        store_checkpoint_get(req->svc->store, c->group, c->partition, req->loop, checkpoint_got,
                             c);
}

/* {"sequenceNumber":N} with 0 <= N <= INT64_MAX; false with a reason. */
static bool parse_checkpoint_body(const http_request *req, uint64_t *out, const char **why)
{
    json_t *root = json_load_untrusted(req->body, req->body_len, 0, NULL);
    json_t *n = json_object_get(root, "sequenceNumber");
    bool ok = json_is_integer(n) && json_integer_value(n) >= 0;
    if (ok)
        *out = (uint64_t)json_integer_value(n);
    *why = !root ? "the body is not JSON" : "sequenceNumber must be a non-negative integer";
    json_decref(root);
    return ok;
}

void events_checkpoint_put(http_request *req)
{
    checkpoint_call *c = checkpoint_args(req);
    if (!c)
        return;
    const char *why;
    if (!parse_checkpoint_body(req, &c->seq, &why)) {
        http_reply_error(req, 400, "ArgumentInvalid", "%s", why);
        free(c);
        return;
    }
    store_checkpoint_set(req->svc->store, c->group, c->partition, c->seq, req->loop,
                         checkpoint_set, c);
}

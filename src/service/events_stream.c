/*
 * service/events_stream.c — GET /events/stream: the telemetry log followed
 * live as Server-Sent Events (iothubd's own call; ServiceConnect).
 *
 *   GET /events/stream[?partition=P][&from=SEQ|start|end][&consumerGroup=G]
 *                     [&deviceId=D]        (header Last-Event-ID: P:SEQ)
 *   200, Content-Type: text/event-stream, then for each event
 *       id: {partition}:{sequenceNumber}
 *       data: {EVENT JSON, one line, as GET /events renders it}
 *       (blank line)
 *   and a comment line ": keep-alive" every 15 s. The body ends only when
 *   the connection does.
 *
 * Where each followed partition starts, first rule that applies:
 *   1. Last-Event-ID "P:S" (an EventSource reconnecting): P after S. It
 *      names one partition only, so following several partitions the others
 *      start by the later rules; a lossless multi-partition resume uses a
 *      consumer group (or one stream per partition).
 *   2. from=SEQ (needs partition), from=start (oldest retained), from=end.
 *   3. consumerGroup=G with a checkpoint on that partition.
 *   4. the end: only events appended from now on (like
 *      `az iot hub monitor-events`).
 * deviceId=D sends only D's events and, unless a partition is named, follows
 * only D's partition. With a consumer group, the stream advances the group's
 * checkpoint past each batch it has queued to the client (at most once: an
 * event queued but never read by a client that dies is not sent again to
 * the group).
 *
 * Mechanics: the stream subscribes to the hub's telemetry notices before it
 * looks up its start positions, keeps its own next sequence number per
 * partition, and reads the store in batches while a partition is marked
 * dirty (a notice arrived, or the last read was a full batch). The notice is
 * only a wake-up, so nothing is missed or repeated however notices and reads
 * interleave. One store request at a time; none while the client's output
 * queue is above SSE_OUT_HIGH (resumed by on_drain), so a slow client holds
 * a bounded amount of memory and costs the store nothing.
 *
 * Lifetime: the stream is freed once the connection has closed (on_close)
 * and no store request of its own is in flight; both are tracked here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/telemetry.h"
#include "net/loop.h"
#include "service/internal.h"
#include "store/store.h"
#include "util/log.h"

#define SSE_BATCH 64
#define SSE_OUT_HIGH (512u * 1024u)

enum start_rule { START_END, START_BEGINNING, START_SEQ, START_GROUP };

typedef struct sse_stream sse_stream;

typedef struct sse_part {
    sse_stream *s;
    unsigned partition;
    bool followed;
    bool ready;   /* next is known */
    bool dirty;   /* there may be events at or after next */
    uint64_t next;
} sse_part;

struct sse_stream {
    http_conn *out; /* NULL once the connection closed */
    net_loop *loop;
    store *st;
    hub_telemetry *tel;
    telemetry_sub *sub;
    net_timer keepalive;
    unsigned keepalive_ms;
    unsigned inflight; /* store requests not yet completed */
    bool reading;      /* a telemetry read is in flight */
    bool blocked;      /* waiting for the client to drain output */
    unsigned cursor;   /* round robin over partitions */
    unsigned nparts;
    char group[65];
    char device[HUB_ID_MAX + 1];
    sse_part parts[]; /* nparts */
};

static void pump(sse_stream *s);

/* ---- lifetime ----------------------------------------------------------------- */

static void free_if_done(sse_stream *s)
{
    if (!s->out && s->inflight == 0)
        free(s);
}

/* Ends the stream from our side (error): on_close follows. */
static void stream_fail(sse_stream *s, const char *why)
{
    log_warn("events: stream closed: %s", why);
    if (s->out)
        http_stream_close(s->out);
}

static void on_stream_close(void *arg)
{
    sse_stream *s = arg;
    s->out = NULL;
    telemetry_unsubscribe(s->tel, s->sub);
    s->sub = NULL;
    net_timer_stop(s->loop, &s->keepalive);
    free_if_done(s);
}

static void on_stream_drain(void *arg)
{
    sse_stream *s = arg;
    s->blocked = false;
    pump(s);
}

static void keepalive_fired(net_loop *loop, net_timer *t)
{
    sse_stream *s = (sse_stream *)((char *)t - offsetof(sse_stream, keepalive));
    static const char comment[] = ": keep-alive\n\n";
    if (s->out && http_stream_write(s->out, comment, sizeof comment - 1))
        net_timer_start(loop, &s->keepalive, s->keepalive_ms, keepalive_fired);
}

/* ---- sending -------------------------------------------------------------------- */

/* True when the event passes the deviceId filter. */
static bool wanted(const sse_stream *s, const json_t *event)
{
    if (!s->device[0])
        return true;
    const json_t *sys = json_object_get(event, "systemProperties");
    const char *dev = json_string_value(json_object_get(sys, "iothub-connection-device-id"));
    return dev && strcmp(dev, s->device) == 0;
}

/* Queues one event as an SSE message; false when the connection is gone. */
static bool send_event(sse_stream *s, const store_event *ev)
{
    json_t *e = events_event_json(ev);
    if (!e) {
        log_warn("events: event %u:%llu has undecodable properties, skipped", ev->partition,
                 (unsigned long long)ev->seq);
        return true;
    }
    bool ok = true;
    if (wanted(s, e)) {
        char *data = json_dumps(e, JSON_COMPACT); /* one line: newlines are escaped */
        size_t len = data ? strlen(data) : 0;
        char *msg = data ? malloc(len + 64) : NULL;
        if (msg) {
            int n = snprintf(msg, len + 64, "id: %u:%llu\ndata: %s\n\n", ev->partition,
                             (unsigned long long)ev->seq, data);
            ok = http_stream_write(s->out, msg, (size_t)n);
        } else {
            ok = false;
        }
        free(msg);
        free(data);
    }
    json_decref(e);
    return ok;
}

/* The answer to one of the stream's store calls came back. False when it
 * is of no use any more: the client went away (the stream is freed once
 * no call is in flight) or the store failed (the stream ends with err). */
static bool answer_usable(sse_stream *s, store_status st, const char *err)
{
    s->inflight--;
    if (!s->out) {
        free_if_done(s);
        return false;
    }
    if (st != STORE_OK) {
        stream_fail(s, err);
        return false;
    }
    return true;
}

static void read_done(net_loop *loop, void *arg, store_status st, const store_read_result *res,
                      const char *err)
{
    (void)loop;
    sse_part *p = arg;
    sse_stream *s = p->s;
    s->reading = false;
    if (!answer_usable(s, st, err))
        return;
    for (size_t i = 0; i < res->n; i++) {
        if (!send_event(s, &res->events[i])) {
            stream_fail(s, "cannot queue output");
            return;
        }
        p->next = res->events[i].seq + 1;
    }
    p->dirty = res->n == SSE_BATCH;
    if (res->n && s->group[0]) /* fire and forget: see the file comment */
        store_checkpoint_set(s->st, s->group, p->partition, p->next, NULL, NULL, NULL);
    pump(s);
}

/* Starts the next read if nothing is in flight and the client keeps up. */
static void pump(sse_stream *s)
{
    if (!s->out || s->reading)
        return;
    if (http_stream_queued(s->out) > SSE_OUT_HIGH) {
        s->blocked = true; /* on_drain resumes */
        return;
    }
    if (s->blocked)
        return;
    for (unsigned k = 0; k < s->nparts; k++) {
        sse_part *p = &s->parts[(s->cursor + k) % s->nparts];
        if (!p->followed || !p->ready || !p->dirty)
            continue;
        s->cursor = (p->partition + 1) % s->nparts;
        s->reading = true;
        s->inflight++;
        store_telemetry_read(s->st, p->partition, p->next, SSE_BATCH, s->loop, read_done, p);
        return;
    }
}

/* A telemetry notice: mark the partitions it names. */
static void notified(net_loop *loop, void *arg, uint64_t partitions)
{
    (void)loop;
    sse_stream *s = arg;
    for (unsigned i = 0; i < s->nparts; i++)
        if (s->parts[i].followed && (partitions & TELEMETRY_PARTITION_BIT(i)))
            s->parts[i].dirty = true;
    pump(s);
}

/* ---- start positions ------------------------------------------------------------ */

static void part_ready(sse_part *p, uint64_t next)
{
    p->next = next;
    p->ready = true;
    p->dirty = true;
}

static void end_found(net_loop *loop, void *arg, store_status st, const store_read_result *res,
                      const char *err)
{
    (void)loop;
    sse_part *p = arg;
    if (!answer_usable(p->s, st, err))
        return;
    part_ready(p, res->next_seq);
    pump(p->s);
}

static void look_up_end(sse_part *p)
{
    p->s->inflight++;
    store_telemetry_read(p->s->st, p->partition, INT64_MAX, 1, p->s->loop, end_found, p);
}

static void checkpoint_found(net_loop *loop, void *arg, store_status st, uint64_t seq,
                             const char *err)
{
    (void)loop;
    sse_part *p = arg;
    bool none_yet = st == STORE_NOT_FOUND; /* the group has no checkpoint here yet */
    if (!answer_usable(p->s, none_yet ? STORE_OK : st, err))
        return;
    if (none_yet) {
        look_up_end(p);
        return;
    }
    part_ready(p, seq);
    pump(p->s);
}

/* ---- the request ----------------------------------------------------------------- */

typedef struct stream_args {
    unsigned only; /* partition, or TELEMETRY_ALL_PARTITIONS */
    enum start_rule rule;
    uint64_t from;
    bool has_last_id;
    unsigned last_partition;
    uint64_t last_seq;
    const char *group;
    const char *device;
} stream_args;

/* Parses the query and Last-Event-ID; false after answering 400. */
static bool stream_parse(http_request *req, stream_args *a)
{
    const char *part = http_query_get(req, "partition");
    const char *from = http_query_get(req, "from");
    const char *last = http_header_get(req, "Last-Event-ID");
    memset(a, 0, sizeof *a);
    a->only = TELEMETRY_ALL_PARTITIONS;
    a->group = http_query_get(req, "consumerGroup");
    a->device = http_query_get(req, "deviceId");
    if (part && !events_partition_arg(req, part, &a->only))
        return false;
    const char *why = NULL;
    if (a->group && !events_valid_group(a->group))
        why = "invalid consumer group name";
    else if (a->device && !registry_valid_id(a->device))
        why = "invalid device id";
    else if (last && *last &&
             !events_parse_event_id(last, &a->last_partition, &a->last_seq))
        why = "Last-Event-ID must be {partition}:{sequenceNumber}";
    a->has_last_id = last && *last && !why;
    a->rule = a->group ? START_GROUP : START_END;
    if (!why && from) {
        if (strcmp(from, "start") == 0)
            a->rule = START_BEGINNING;
        else if (strcmp(from, "end") == 0)
            a->rule = START_END;
        else if (!events_parse_u64(from, INT64_MAX, &a->from))
            why = "from must be a sequence number, start or end";
        else if (!part)
            why = "from=SEQ needs a partition";
        else
            a->rule = START_SEQ;
    }
    if (why) {
        http_reply_error(req, 400, "ArgumentInvalid", "%s", why);
        return false;
    }
    if (a->device && a->only == TELEMETRY_ALL_PARTITIONS)
        a->only = store_partition_of(req->svc->store, a->device);
    return true;
}

static sse_stream *stream_new(http_request *req, const stream_args *a)
{
    unsigned n = store_partitions(req->svc->store);
    sse_stream *s = calloc(1, sizeof *s + n * sizeof s->parts[0]);
    if (!s)
        return NULL;
    s->loop = req->loop;
    s->st = req->svc->store;
    s->tel = req->svc->telemetry;
    s->nparts = n;
    s->keepalive_ms = req->svc->events_keepalive_ms;
    snprintf(s->group, sizeof s->group, "%s", a->group ? a->group : "");
    snprintf(s->device, sizeof s->device, "%s", a->device ? a->device : "");
    for (unsigned i = 0; i < n; i++) {
        s->parts[i].s = s;
        s->parts[i].partition = i;
        s->parts[i].followed = a->only == TELEMETRY_ALL_PARTITIONS || a->only == i;
    }
    return s;
}

/* Resolves (or starts looking up) where each followed partition begins. */
static void stream_position(sse_stream *s, const stream_args *a)
{
    for (unsigned i = 0; i < s->nparts; i++) {
        sse_part *p = &s->parts[i];
        if (!p->followed)
            continue;
        if (a->has_last_id && a->last_partition == i)
            part_ready(p, a->last_seq + 1);
        else if (a->rule == START_SEQ)
            part_ready(p, a->from);
        else if (a->rule == START_BEGINNING)
            part_ready(p, 0);
        else if (a->rule == START_GROUP) {
            s->inflight++;
            store_checkpoint_get(s->st, s->group, i, s->loop, checkpoint_found, p);
        } else {
            look_up_end(p);
        }
    }
}

void events_stream(http_request *req)
{
    if (!events_enabled(req))
        return;
    stream_args a;
    if (!stream_parse(req, &a))
        return;
    sse_stream *s = stream_new(req, &a);
    if (!s) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    s->sub = telemetry_subscribe(s->tel, a.only, s->loop, notified, s);
    if (!s->sub) {
        free(s);
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    /* the query strings live in req: take what we need before it goes */
    stream_position(s, &a);
    static const http_stream_handler handler = {on_stream_close, on_stream_drain};
    s->out = http_stream_begin(req, "text/event-stream", &handler, s);
    if (!s->out) { /* the client left before we answered */
        telemetry_unsubscribe(s->tel, s->sub);
        s->sub = NULL;
        free_if_done(s);
        return;
    }
    net_timer_start(s->loop, &s->keepalive, s->keepalive_ms, keepalive_fired);
    pump(s);
}

/*
 * hub/telemetry.c — device-to-cloud telemetry into the durable log, and
 * live notification of readers (see telemetry.h).
 *
 * Accepting a message: the MQTT side hands over a validated telemetry_msg;
 * we map its properties (spec §6 "Send telemetry") into one compact JSON
 * text, {"sys":{...},"app":{...}}, and append it with the body to the
 * device's partition (store_partition_of). JSON because the only reader is
 * the events endpoint, which serves JSON: decoding is one json_loadb, and
 * the blob stays readable with the sqlite3 shell. Short member names keep
 * the per-event overhead small; the enqueued time is the event's own column
 * and is not stored twice. The caller's `done` runs on its loop after the
 * store's commit, so a PUBACK never runs ahead of the disk. Although the
 * MQTT side validates first, a property we do not know, a creation-time
 * that is not a time, a value that is not UTF-8 or an oversized body is
 * refused here too (HUB_BAD_REQUEST): defence in depth costs a few compares.
 *
 * Live readers: subscribers live in a list under one mutex. After each
 * committed append, the appender's completion marks the partition in every
 * matching subscriber's pending mask and posts one task to the subscriber's
 * loop unless one is already pending (coalescing: a burst of appends costs
 * one wake-up per reader, and the appender never waits for a reader). The
 * task swaps the mask out under the mutex and calls the subscriber. An
 * unsubscribed subscriber with a task in flight stays in the list marked
 * dead and is freed by that task; both run on the subscriber's loop, so
 * there is no race between them. telemetry_free frees whatever is left
 * (tasks dropped at shutdown never run).
 */
#include "hub/telemetry.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"
#include "store/store.h"
#include "util/json_escape.h"
#include "util/log.h"
#include "util/time.h"

struct telemetry_sub {
    telemetry_sub *next;
    hub_telemetry *owner;
    net_loop *loop;
    unsigned partition; /* or TELEMETRY_ALL_PARTITIONS */
    telemetry_notify_fn fn;
    void *arg;
    uint64_t pending;   /* partition bits not yet told; guarded by owner->lock */
    bool posted;        /* a notify task is in flight; guarded by owner->lock */
    bool dead;          /* unsubscribed; the in-flight task frees it */
};

struct hub_telemetry {
    store *st;
    pthread_mutex_t lock;
    telemetry_sub *subs;
    /* live (not unsubscribed) subscribers; written under lock, read
     * without it so that appends skip the lock when nobody listens */
    atomic_uint live;
};

/* One append in flight. */
typedef struct accept_ctx {
    hub_telemetry *t;
    unsigned partition;
    telemetry_done_fn done;
    void *arg;
    hub_status early; /* for refusals before the store: the status to report */
} accept_ctx;

hub_telemetry *telemetry_new(struct store *st)
{
    hub_telemetry *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->st = st;
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void telemetry_free(hub_telemetry *t)
{
    if (!t)
        return;
    for (telemetry_sub *s = t->subs, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ---- encoding ------------------------------------------------------------ */

/* The spec's optional properties that become system properties as named. */
static bool is_system_property(const char *name)
{
    static const char *const names[] = {"content-encoding", "message-id", "user-id",
                                        "correlation-id"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/*
 * The blob is written directly rather than built as jansson objects and
 * dumped: that cost some thirty allocations and most of the instructions
 * of a telemetry message (objects, hash tables, a string and a key copy per
 * member, the dump's growing buffer). The text is what json_dumps(root,
 * JSON_COMPACT) made of the same objects, byte for byte: members in
 * insertion order, a repeated name keeps its first position and its last
 * value, strings escaped as jansson escapes them.
 */

enum { OBJ_SYS, OBJ_APP };

/* One member of sys or app; value points into the message or into iso. */
typedef struct member {
    int obj;
    const char *key;
    const char *value;
} member;

/* Output text, starting in the caller's buffer and moving to the heap only
 * for unusually large property sets. */
typedef struct text_buf {
    char *p;
    size_t len, cap;
    bool heap, oom;
} text_buf;

static void put(text_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        char *np = b->heap ? realloc(b->p, cap) : malloc(cap);
        if (!np) {
            b->oom = true;
            return;
        }
        if (!b->heap)
            memcpy(np, b->p, b->len);
        b->p = np;
        b->cap = cap;
        b->heap = true;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A JSON string as jansson's compact dump writes it (util/json_escape.h). */
static void put_string(text_buf *b, const char *s)
{
    put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        char esc[6];
        size_t n = json_escape_byte((unsigned char)*s, esc);
        if (n == 0)
            continue;
        put(b, run, (size_t)(s - run));
        put(b, esc, n);
        run = s + 1;
    }
    put(b, run, (size_t)(s - run));
    put(b, "\"", 1);
}

static bool utf8(const char *s) { return mqtt_utf8_valid((const uint8_t *)s, strlen(s)); }

/* Maps one user property to a member; false with a reason when it is not
 * one telemetry may carry. */
static bool map_property(const telemetry_prop *p, member *out, char iso[32], const char **why)
{
    if (p->name[0] == '@') {
        if (!p->name[1] || !utf8(p->name + 1) || !utf8(p->value)) {
            *why = "invalid application property";
            return false;
        }
        *out = (member){OBJ_APP, p->name + 1, p->value};
        return true;
    }
    if (is_system_property(p->name)) {
        if (!utf8(p->value)) {
            *why = "property value is not UTF-8";
            return false;
        }
        *out = (member){OBJ_SYS, p->name, p->value};
        return true;
    }
    if (strcmp(p->name, "creation-time") == 0) {
        int64_t ms;
        if (!time_parse_epoch_ms(p->value, strlen(p->value), &ms)) {
            *why = "creation-time is not a time";
            return false;
        }
        time_iso8601_utc_ms(ms, iso);
        *out = (member){OBJ_APP, "iothub-creation-time-utc", iso};
        return true;
    }
    *why = "unknown property";
    return false;
}

/* Writes one object's members: each name once, where it first appeared,
 * with the value it was last given. */
static void put_object(text_buf *b, const member *mv, size_t n, int obj)
{
    put(b, "{", 1);
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (mv[i].obj != obj)
            continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = mv[j].obj == obj && strcmp(mv[j].key, mv[i].key) == 0;
        if (seen)
            continue;
        const char *value = mv[i].value;
        for (size_t j = i + 1; j < n; j++)
            if (mv[j].obj == obj && strcmp(mv[j].key, mv[i].key) == 0)
                value = mv[j].value;
        if (!first)
            put(b, ",", 1);
        first = false;
        put_string(b, mv[i].key);
        put(b, ":", 1);
        put_string(b, value);
    }
    put(b, "}", 1);
}

/* Encodes the properties blob for m into b; false with a reason when m
 * carries something telemetry may not (or memory ran out). */
static bool encode_properties(const telemetry_msg *m, text_buf *b, const char **why)
{
    /* content-type, the user properties, three identity members */
    size_t cap = m->nprops + 4, n = 0;
    member stack_mv[32];
    member *mv = cap <= 32 ? stack_mv : malloc(cap * sizeof *mv);
    if (!mv) {
        *why = "out of memory";
        return false;
    }
    /* Every creation-time maps to the same name, and only the last value
     * of a name is written: one buffer, holding the last one, serves all. */
    char iso[32];
    bool ok = true;
    if (m->content_type) {
        if ((ok = utf8(m->content_type)))
            mv[n++] = (member){OBJ_SYS, "content-type", m->content_type};
        else
            *why = "content type is not UTF-8";
    }
    for (size_t i = 0; ok && i < m->nprops; i++)
        if ((ok = map_property(&m->props[i], &mv[n], iso, why)))
            n++;
    if (ok) {
        const char *module = m->module_id && *m->module_id ? m->module_id : NULL;
        const char *method = m->auth_method ? m->auth_method : "sas";
        ok = utf8(m->device_id) && (!module || utf8(module)) && utf8(method);
        if (ok) {
            mv[n++] = (member){OBJ_SYS, "iothub-connection-device-id", m->device_id};
            if (module)
                mv[n++] = (member){OBJ_SYS, "iothub-connection-module-id", module};
            mv[n++] = (member){OBJ_SYS, "iothub-connection-auth-method", method};
        } else {
            *why = "identity is not UTF-8";
        }
    }
    if (ok) {
        put(b, "{\"sys\":", 7);
        put_object(b, mv, n, OBJ_SYS);
        put(b, ",\"app\":", 7);
        put_object(b, mv, n, OBJ_APP);
        put(b, "}", 1);
        if (b->oom) {
            *why = "out of memory";
            ok = false;
        }
    }
    if (mv != stack_mv)
        free(mv);
    return ok;
}

bool telemetry_event_properties(const store_event *ev, json_t **system, json_t **application)
{
    *system = *application = NULL;
    json_t *root = json_loadb(ev->props, ev->props_len, 0, NULL);
    json_t *sys = json_object_get(root, "sys"), *app = json_object_get(root, "app");
    if (!json_is_object(sys) || !json_is_object(app)) {
        json_decref(root);
        return false;
    }
    char iso[32];
    time_iso8601_utc_ms(ev->enqueued_ms, iso);
    json_object_set_new(sys, "iothub-enqueuedtime", json_string(iso));
    *system = json_incref(sys);
    *application = json_incref(app);
    json_decref(root);
    return true;
}

/* ---- notifying subscribers ----------------------------------------------- */

/* On the subscriber's loop: hands it what accumulated, or frees a dead one. */
static void notify_task(net_loop *loop, void *arg)
{
    telemetry_sub *s = arg;
    hub_telemetry *t = s->owner;
    pthread_mutex_lock(&t->lock);
    uint64_t parts = s->pending;
    s->pending = 0;
    s->posted = false;
    bool dead = s->dead;
    if (dead) { /* unlink: it stayed in the list only for this task */
        telemetry_sub **pp = &t->subs;
        while (*pp != s)
            pp = &(*pp)->next;
        *pp = s->next;
    }
    pthread_mutex_unlock(&t->lock);
    if (dead)
        free(s);
    else if (parts)
        s->fn(loop, s->arg, parts);
}

/* After a committed append to `partition`: tells every live subscriber of
 * it, at most one task in flight each. Never blocks on a reader. */
static void notify_subscribers(hub_telemetry *t, unsigned partition)
{
    /* No reader: nothing to tell, and no lock per message. A subscriber
     * added concurrently is no worse off than one added just after the
     * lock was released: it reads the log's bounds after subscribing. */
    if (!atomic_load_explicit(&t->live, memory_order_acquire))
        return;
    uint64_t bit = TELEMETRY_PARTITION_BIT(partition);
    pthread_mutex_lock(&t->lock);
    for (telemetry_sub *s = t->subs; s; s = s->next) {
        if (s->dead || (s->partition != TELEMETRY_ALL_PARTITIONS && s->partition != partition))
            continue;
        s->pending |= bit;
        if (!s->posted) {
            s->posted = true;
            net_loop_post(s->loop, notify_task, s);
        }
    }
    pthread_mutex_unlock(&t->lock);
}

telemetry_sub *telemetry_subscribe(hub_telemetry *t, unsigned partition, net_loop *loop,
                                   telemetry_notify_fn fn, void *arg)
{
    telemetry_sub *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->owner = t;
    s->loop = loop;
    s->partition = partition;
    s->fn = fn;
    s->arg = arg;
    pthread_mutex_lock(&t->lock);
    s->next = t->subs;
    t->subs = s;
    atomic_fetch_add_explicit(&t->live, 1, memory_order_release);
    pthread_mutex_unlock(&t->lock);
    return s;
}

void telemetry_unsubscribe(hub_telemetry *t, telemetry_sub *sub)
{
    if (!sub)
        return;
    pthread_mutex_lock(&t->lock);
    atomic_fetch_sub_explicit(&t->live, 1, memory_order_release);
    bool in_flight = sub->posted;
    if (in_flight) {
        sub->dead = true; /* notify_task unlinks and frees it */
    } else {
        telemetry_sub **pp = &t->subs;
        while (*pp != sub)
            pp = &(*pp)->next;
        *pp = sub->next;
    }
    pthread_mutex_unlock(&t->lock);
    if (!in_flight)
        free(sub);
}

/* ---- accepting ------------------------------------------------------------ */

static void appended(net_loop *loop, void *arg, store_status st, uint64_t seq,
                     int64_t enqueued_ms, const char *err)
{
    accept_ctx *a = arg;
    (void)seq;
    (void)enqueued_ms;
    hub_status result = HUB_OK;
    if (st == STORE_OK) {
        notify_subscribers(a->t, a->partition);
    } else {
        log_warn("telemetry: append to partition %u failed: %s: %s", a->partition,
                 store_status_name(st), err);
        /* a full disk is temporary: "busy, retry" rather than a server fault */
        result = st == STORE_NO_SPACE ? HUB_SERVER_BUSY : HUB_SERVER_ERROR;
    }
    a->done(loop, a->arg, result);
    free(a);
}

static void refused_task(net_loop *loop, void *arg)
{
    accept_ctx *a = arg;
    a->done(loop, a->arg, a->early);
    free(a);
}

/* Reports a refusal the same way as a store outcome: later, on `loop`
 * (directly when loop is NULL, as the store does for NULL loops). */
static void refuse(accept_ctx *a, net_loop *loop, hub_status st)
{
    a->early = st;
    if (loop)
        net_loop_post(loop, refused_task, a);
    else
        refused_task(NULL, a);
}

void telemetry_accept(hub_telemetry *t, const telemetry_msg *m, net_loop *loop,
                      telemetry_done_fn done, void *arg)
{
    accept_ctx *a = calloc(1, sizeof *a);
    if (!a) {
        log_error("telemetry: out of memory");
        done(loop, arg, HUB_SERVER_ERROR); /* nothing else can be done */
        return;
    }
    a->t = t;
    a->done = done;
    a->arg = arg;
    if (!m->device_id || !*m->device_id || m->body_len > TELEMETRY_MAX_BODY) {
        log_debug("telemetry: refused: %s", m->body_len > TELEMETRY_MAX_BODY ? "body too large"
                                                                             : "no device id");
        refuse(a, loop, HUB_BAD_REQUEST);
        return;
    }
    /* The store copies the blob into its request, so it is built here on
     * the stack (the heap only for unusually many or long properties). */
    char stack[1024];
    text_buf props = {.p = stack, .cap = sizeof stack};
    const char *why;
    if (!encode_properties(m, &props, &why)) {
        if (props.heap)
            free(props.p);
        log_debug("telemetry: refused from %s: %s", m->device_id, why);
        refuse(a, loop, strcmp(why, "out of memory") ? HUB_BAD_REQUEST : HUB_SERVER_ERROR);
        return;
    }
    a->partition = store_partition_of(t->st, m->device_id);
    store_telemetry_append(t->st, a->partition, 0, props.p, props.len, m->body, m->body_len,
                           loop, appended, a);
    if (props.heap)
        free(props.p);
}

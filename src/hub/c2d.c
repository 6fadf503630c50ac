/*
 * hub/c2d.c — cloud-to-device command queues: state, durability, the
 * service side (send, purge, feedback) and the timer (see c2d.h; the MQTT
 * side is c2d_deliver.c).
 *
 * Model: every device's queue lives in memory (loaded at start-up with
 * store_load_c2d) and every change is written through the store:
 *   send      checked against the in-memory depth (queued + reserved for
 *             sends still committing), then store_c2d_enqueue (which checks
 *             the depth again in its transaction); the message joins the
 *             queue and the sender hears 201 only after the commit.
 *   complete, reject, expiry, dead-letter, purge
 *             removed from memory at once, store_c2d_delete/purge behind.
 *   abandon   delivery count + 1 in memory, store_c2d_update behind.
 *   locks     memory only: they die with the connection, and after a
 *             restart no connection holds one.
 * Trade-offs: write-behind removals mean a crash inside one group-commit
 * window after a device's PUBACK redelivers that command once after the
 * restart (at least once, as MQTT QoS 1 is); an accepted send is never
 * lost. Bodies stay in memory (≤ 50 × 64 KiB per device).
 *
 * Time: wall clock (ms since the epoch) for expiry and locks, as stored.
 * One timer on one loop looks every C2D_TICK_MS at the earliest deadline
 * of all queues and only then walks them (expiring, unlocking, kicking),
 * so an idle hub costs a comparison per tick; a heap per deadline would
 * avoid the walk, at a cost not worth paying at ≤ 50 messages per device.
 *
 * Feedback: a ring of cfg.max_feedback records in memory (the oldest is
 * dropped when full; a restart loses them): cheap, and feedback is
 * advisory in IoT Hub too. Reading consumes.
 */
#include "hub/c2d_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mqtt/codec.h"
#include "util/crypto.h"
#include "util/log.h"
#include "util/time.h"

#define C2D_TICK_MS 100

void c2d_config_defaults(c2d_config *cfg)
{
    *cfg = (c2d_config){
        .lock_ms = 60000,
        .max_depth = 50,
        .max_delivery_count = 10,
        .default_ttl_ms = 3600 * 1000,
        .min_ttl_ms = 60 * 1000,
        .max_ttl_ms = 2u * 24 * 3600 * 1000,
        .max_message_bytes = 64 * 1024,
        .max_feedback = 1000,
    };
}

bool c2d_ack_parse(const char *text, c2d_ack *out)
{
    static const char *const names[] = {"none", "positive", "negative", "full"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, names[i]) == 0) {
            *out = (c2d_ack)i;
            return true;
        }
    }
    return false;
}

const char *c2d_outcome_name(c2d_outcome o)
{
    switch (o) {
    case C2D_OUTCOME_SUCCESS: return "Success";
    case C2D_OUTCOME_EXPIRED: return "Expired";
    case C2D_OUTCOME_DELIVERY_COUNT_EXCEEDED: return "DeliveryCountExceeded";
    case C2D_OUTCOME_REJECTED: return "Rejected";
    case C2D_OUTCOME_PURGED: return "Purged";
    }
    return "Unknown";
}

const char *c2d_outcome_description(c2d_outcome o)
{
    switch (o) {
    case C2D_OUTCOME_SUCCESS: return "Success";
    case C2D_OUTCOME_EXPIRED: return "Message expired";
    case C2D_OUTCOME_DELIVERY_COUNT_EXCEEDED: return "Message delivery count exceeded";
    case C2D_OUTCOME_REJECTED: return "Message rejected";
    case C2D_OUTCOME_PURGED: return "Message purged";
    }
    return "Unknown";
}

/* ---- queues (lock held) --------------------------------------------------- */

static hmap_key queue_key(const void *value, const void *ctx)
{
    (void)ctx;
    const device_queue *dq = value;
    return (hmap_key){dq->device_id, strlen(dq->device_id)};
}

device_queue *c2d_queue_of(hub_c2d *c, const char *device_id, bool create)
{
    size_t len = strlen(device_id);
    device_queue *dq = hmap_get(&c->queues, device_id, len);
    if (dq || !create || len > HUB_ID_MAX)
        return dq;
    dq = calloc(1, sizeof *dq);
    if (!dq)
        return NULL;
    memcpy(dq->device_id, device_id, len + 1);
    if (hmap_put(&c->queues, dq->device_id, len, dq) == dq) {
        free(dq);
        return NULL;
    }
    return dq;
}

static void update_count(hub_c2d *c, device_queue *dq)
{
    registry_set_c2d_count(c->reg, dq->device_id, dq->q.len);
}

/* Whether the sender asked for feedback on this outcome. */
static bool wants_feedback(c2d_ack ack, c2d_outcome o)
{
    if (ack == C2D_ACK_FULL)
        return true;
    if (o == C2D_OUTCOME_SUCCESS)
        return ack == C2D_ACK_POSITIVE;
    return ack == C2D_ACK_NEGATIVE;
}

static void record_feedback(hub_c2d *c, const char *device_id, const c2d_msg *m, c2d_outcome o)
{
    c2d_props_view v;
    if (!c->feedback || !c2d_props_decode(m->props, m->props_len, &v) || !wants_feedback(v.ack, o))
        return;
    size_t cap = c->cfg.max_feedback;
    if (c->fb_len == cap) { /* full: the oldest goes */
        c->fb_first = (c->fb_first + 1) % cap;
        c->fb_len--;
    }
    c2d_feedback *f = &c->feedback[(c->fb_first + c->fb_len++) % cap];
    uint32_t n = v.message_id.len < C2D_MESSAGE_ID_MAX ? v.message_id.len : C2D_MESSAGE_ID_MAX;
    if (n)
        memcpy(f->message_id, v.message_id.p, n);
    f->message_id[n] = '\0';
    snprintf(f->device_id, sizeof f->device_id, "%s", device_id);
    f->outcome = o;
    f->time_ms = (int64_t)time_wall_ms();
}

static void store_done_logged(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    (void)arg;
    if (st != STORE_OK && st != STORE_NOT_FOUND)
        log_warn("c2d: store write failed: %s", err && *err ? err : store_status_name(st));
}

void c2d_finish(hub_c2d *c, device_queue *dq, c2d_msg *m, c2d_outcome outcome)
{
    c2d_queue_unlink(&dq->q, m);
    store_c2d_delete(c->st, dq->device_id, m->seq, NULL, store_done_logged, NULL);
    record_feedback(c, dq->device_id, m, outcome);
    log_debug("c2d: %s #%llu: %s", dq->device_id, (unsigned long long)m->seq,
              c2d_outcome_name(outcome));
    c2d_msg_free(m);
    update_count(c, dq);
}

void c2d_store_count(hub_c2d *c, device_queue *dq, c2d_msg *m)
{
    store_c2d_update(c->st, dq->device_id, m->seq, m->delivery_count, 0, NULL, store_done_logged,
                     NULL);
}

void c2d_note_deadline(hub_c2d *c, int64_t when_ms)
{
    if (when_ms < c->next_deadline_ms)
        c->next_deadline_ms = when_ms;
}

void c2d_kick(hub_c2d *c, const char *device_id)
{
    if (c->ready)
        c->ready(c->ready_arg, device_id);
}

/* ---- open and close ------------------------------------------------------- */

typedef struct load_ctx {
    hub_c2d *c;
    size_t loaded;
    bool failed;
} load_ctx;

static void load_one(void *arg, const store_c2d_msg *sm)
{
    load_ctx *lc = arg;
    hub_c2d *c = lc->c;
    device_queue *dq = c2d_queue_of(c, sm->device_id, true);
    c2d_msg *m = dq ? c2d_msg_new(sm->seq, sm->enqueued_ms, sm->expiry_ms, sm->delivery_count,
                                  sm->props, sm->props_len, sm->body, sm->body_len)
                    : NULL;
    if (!m) {
        lc->failed = true;
        return;
    }
    c2d_queue_insert(&dq->q, m); /* locks are not restored: no connection holds one */
    c2d_note_deadline(c, sm->expiry_ms ? sm->expiry_ms : INT64_MAX);
    lc->loaded++;
}

/* The settings the spec bounds (§7); false with a reason. */
static bool config_ok(const c2d_config *cfg, char *err, size_t errlen)
{
    if (cfg->max_delivery_count < 1 || cfg->max_delivery_count > 100)
        snprintf(err, errlen, "--c2d-max-delivery-count: expected 1 to 100");
    else if (cfg->default_ttl_ms < 60000 || cfg->default_ttl_ms > cfg->max_ttl_ms)
        snprintf(err, errlen, "--c2d-default-ttl-s: expected 60 to 172800");
    else if (cfg->lock_ms < 1 || cfg->min_ttl_ms > cfg->max_ttl_ms)
        snprintf(err, errlen, "--c2d-lock-ms and --c2d-min-ttl-ms must be 1 to 172800000");
    else
        return true;
    return false;
}

hub_c2d *c2d_open(const c2d_config *cfg, struct store *st, hub_registry *reg, char *err,
                  size_t errlen)
{
    if (!config_ok(cfg, err, errlen))
        return NULL;
    hub_c2d *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    c->st = st;
    c->reg = reg;
    c->next_tag = 1;
    c->next_deadline_ms = INT64_MAX;
    pthread_mutex_init(&c->lock, NULL);
    hmap_init(&c->queues, queue_key, NULL);
    c->feedback = cfg->max_feedback ? calloc(cfg->max_feedback, sizeof *c->feedback) : NULL;
    load_ctx lc = {.c = c};
    if ((cfg->max_feedback && !c->feedback) || !store_load_c2d(st, load_one, &lc) || lc.failed) {
        snprintf(err, errlen, "cannot load the command queues (store error or out of memory)");
        c2d_free(c);
        return NULL;
    }
    size_t pos = 0;
    void *v;
    while (hmap_next(&c->queues, &pos, &v))
        update_count(c, v);
    log_info("c2d: %zu queued command%s loaded", lc.loaded, lc.loaded == 1 ? "" : "s");
    return c;
}

void c2d_free(hub_c2d *c)
{
    if (!c)
        return;
    size_t pos = 0;
    void *v;
    while (hmap_next(&c->queues, &pos, &v)) {
        c2d_queue_clear(&((device_queue *)v)->q);
        free(v);
    }
    hmap_free(&c->queues);
    free(c->feedback);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void c2d_set_ready_listener(hub_c2d *c, c2d_ready_fn fn, void *arg)
{
    c->ready = fn;
    c->ready_arg = arg;
}

/* ---- the timer -------------------------------------------------------------- */

/* Expires, dead-letters and unlocks what is due in one queue; kicks the
 * device when something became available again. */
static void sweep_queue(hub_c2d *c, device_queue *dq, int64_t now)
{
    c2d_msg *m;
    while ((m = c2d_queue_find_expired(&dq->q, now)))
        c2d_finish(c, dq, m, C2D_OUTCOME_EXPIRED);
    if (c2d_queue_unlock_expired(&dq->q, now))
        c2d_kick(c, dq->device_id);
    c2d_note_deadline(c, c2d_queue_next_deadline(&dq->q));
}

static void on_tick(net_loop *loop, net_timer *t)
{
    hub_c2d *c = (hub_c2d *)((char *)t - offsetof(hub_c2d, timer));
    int64_t now = (int64_t)time_wall_ms();
    pthread_mutex_lock(&c->lock);
    if (now >= c->next_deadline_ms) {
        c->next_deadline_ms = INT64_MAX;
        size_t pos = 0;
        void *v;
        while (hmap_next(&c->queues, &pos, &v))
            sweep_queue(c, v, now);
    }
    pthread_mutex_unlock(&c->lock);
    net_timer_start(loop, t, C2D_TICK_MS, on_tick);
}

static void start_timer(net_loop *loop, void *arg)
{
    hub_c2d *c = arg;
    net_timer_start(loop, &c->timer, C2D_TICK_MS, on_tick);
}

void c2d_start(hub_c2d *c, net_loop *loop)
{
    c->timer_loop = loop;
    net_loop_post(loop, start_timer, c);
}

/* ---- send ------------------------------------------------------------------- */

typedef struct send_op {
    hub_c2d *c;
    c2d_sent_fn done;
    void *arg;
    int64_t expiry_ms;
    char device_id[HUB_ID_MAX + 1];
    char message_id[C2D_MESSAGE_ID_MAX + 1];
    uint8_t *props;
    size_t props_len;
    const void *body; /* copied by the store; kept for the in-memory queue */
    size_t body_len;
    uint8_t body_copy[];
} send_op;

/* The absolute expiry of a send, or C2D_INVALID when out of range. */
static c2d_result expiry_of(const hub_c2d *c, const c2d_message *m, int64_t now, int64_t *out)
{
    if (!m->expiry_ms) {
        *out = now + c->cfg.default_ttl_ms;
        return C2D_OK;
    }
    int64_t ttl = m->expiry_ms - now;
    if (ttl < (int64_t)c->cfg.min_ttl_ms || ttl > (int64_t)c->cfg.max_ttl_ms)
        return C2D_INVALID;
    *out = m->expiry_ms;
    return C2D_OK;
}

static bool id_ok(const char *s)
{
    return !s || strlen(s) <= C2D_MESSAGE_ID_MAX;
}

static bool utf8_ok(const char *s)
{
    return !s || mqtt_utf8_valid((const uint8_t *)s, strlen(s));
}

/* Every text the device will see as an MQTT user property must be
 * well-formed UTF-8 (MQTT 5 §1.5.4): the device would take a PUBLISH
 * carrying anything else for a malformed packet and drop the connection,
 * and the command would come back on every redelivery. HTTP headers may
 * carry any bytes, so this is checked at send. */
static bool texts_utf8(const c2d_message *m)
{
    if (!utf8_ok(m->message_id) || !utf8_ok(m->correlation_id) || !utf8_ok(m->user_id) ||
        !utf8_ok(m->content_type) || !utf8_ok(m->content_encoding))
        return false;
    for (size_t i = 0; i < m->app_count; i++)
        if (!utf8_ok(m->app[i].name) || !utf8_ok(m->app[i].value))
            return false;
    return true;
}

/* Checks what can be checked without the lock; C2D_OK or the refusal. */
static c2d_result check_message(hub_c2d *c, const c2d_message *m, const char **why)
{
    hub_identity id;
    if (!registry_get(c->reg, m->device_id, NULL, &id)) {
        *why = "no such device";
        return C2D_DEVICE_NOT_FOUND;
    }
    if (!id_ok(m->message_id) || !id_ok(m->correlation_id) || !id_ok(m->user_id)) {
        *why = "message, correlation and user ids are at most 128 characters";
        return C2D_INVALID;
    }
    if (!texts_utf8(m)) {
        *why = "a property is not valid UTF-8";
        return C2D_INVALID;
    }
    return C2D_OK;
}

static void random_message_id(char out[C2D_MESSAGE_ID_MAX + 1])
{
    uint8_t r[16] = {0};
    crypto_random_id(r, sizeof r);
    crypto_uuid_format(r, out);
}

static void send_committed(net_loop *loop, void *arg, store_status st, uint64_t seq,
                           int64_t enqueued_ms, const char *err)
{
    send_op *op = arg;
    hub_c2d *c = op->c;
    c2d_result r = st == STORE_OK ? C2D_OK : st == STORE_FULL ? C2D_QUEUE_FULL
                 : st == STORE_NO_SPACE ? C2D_BUSY : C2D_ERROR;
    pthread_mutex_lock(&c->lock);
    device_queue *dq = c2d_queue_of(c, op->device_id, true);
    if (dq && dq->q.reserved)
        dq->q.reserved--;
    if (r == C2D_OK) {
        c2d_msg *m = dq ? c2d_msg_new(seq, enqueued_ms, op->expiry_ms, 0, op->props,
                                      op->props_len, op->body, op->body_len)
                        : NULL;
        if (m) {
            c2d_queue_insert(&dq->q, m);
            c2d_note_deadline(c, op->expiry_ms);
            update_count(c, dq);
            c2d_kick(c, op->device_id);
        } else {
            log_warn("c2d: %s #%llu stored but out of memory: delivered after a restart",
                     op->device_id, (unsigned long long)seq);
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (r == C2D_ERROR || r == C2D_BUSY)
        log_warn("c2d: %s: enqueue failed: %s", op->device_id, err && *err ? err : "store error");
    op->done(loop, op->arg, r, seq, enqueued_ms, op->message_id,
             r == C2D_QUEUE_FULL ? "queue full" : err);
    free(op->props);
    free(op);
}

/* Reserves a slot in the device's queue; false when it is full. */
static bool reserve_slot(hub_c2d *c, const char *device_id, bool *oom)
{
    pthread_mutex_lock(&c->lock);
    device_queue *dq = c2d_queue_of(c, device_id, true);
    bool ok = dq && dq->q.len + dq->q.reserved < c->cfg.max_depth;
    if (ok)
        dq->q.reserved++;
    *oom = !dq;
    pthread_mutex_unlock(&c->lock);
    return ok;
}

void c2d_send(hub_c2d *c, const c2d_message *m, net_loop *loop, c2d_sent_fn done, void *arg)
{
    const char *why = "";
    int64_t now = (int64_t)time_wall_ms(), expiry = 0;
    c2d_result r = check_message(c, m, &why);
    if (r == C2D_OK && (r = expiry_of(c, m, now, &expiry)) != C2D_OK)
        why = "the expiry must lie between 1 minute and 2 days from now";
    send_op *op = r == C2D_OK ? calloc(1, sizeof *op + m->body_len + 1) : NULL;
    if (r == C2D_OK && !op) {
        r = C2D_ERROR;
        why = "out of memory";
    }
    if (op) {
        op->c = c;
        op->done = done;
        op->arg = arg;
        op->expiry_ms = expiry;
        snprintf(op->device_id, sizeof op->device_id, "%s", m->device_id);
        if (m->message_id)
            snprintf(op->message_id, sizeof op->message_id, "%s", m->message_id);
        else
            random_message_id(op->message_id);
        if (!c2d_props_encode(m, op->message_id, &op->props, &op->props_len)) {
            r = C2D_INVALID;
            why = "a property is too long";
        } else if (op->props_len + m->body_len > c->cfg.max_message_bytes) {
            r = C2D_TOO_LARGE;
            why = "body and properties exceed 65536 bytes";
        }
    }
    bool oom = false;
    if (r == C2D_OK && !reserve_slot(c, m->device_id, &oom)) {
        r = oom ? C2D_ERROR : C2D_QUEUE_FULL;
        why = oom ? "out of memory" : "the device's queue is full";
    }
    if (r != C2D_OK) {
        if (op)
            free(op->props);
        free(op);
        done(loop, arg, r, 0, 0, NULL, why);
        return;
    }
    if (m->body_len)
        memcpy(op->body_copy, m->body, m->body_len);
    op->body = op->body_copy;
    op->body_len = m->body_len;
    store_c2d_msg sm = {.device_id = m->device_id, .expiry_ms = expiry, .props = op->props,
                        .props_len = op->props_len, .body = m->body, .body_len = m->body_len};
    store_c2d_enqueue(c->st, &sm, c->cfg.max_depth, loop, send_committed, op);
}

/* ---- purge, deletion, feedback ---------------------------------------------- */

typedef struct purge_op {
    c2d_purged_fn done;
    void *arg;
} purge_op;

static void purge_committed(net_loop *loop, void *arg, store_status st, uint64_t n,
                            const char *err)
{
    purge_op *op = arg;
    if (st == STORE_OK)
        op->done(loop, op->arg, C2D_OK, n, "");
    else
        op->done(loop, op->arg, C2D_ERROR, 0, err);
    free(op);
}

void c2d_purge(hub_c2d *c, const char *device_id, net_loop *loop, c2d_purged_fn done, void *arg)
{
    if (!registry_get(c->reg, device_id, NULL, &(hub_identity){0})) {
        done(loop, arg, C2D_DEVICE_NOT_FOUND, 0, "no such device");
        return;
    }
    purge_op *op = malloc(sizeof *op);
    if (!op) {
        done(loop, arg, C2D_ERROR, 0, "out of memory");
        return;
    }
    *op = (purge_op){done, arg};
    pthread_mutex_lock(&c->lock);
    device_queue *dq = c2d_queue_of(c, device_id, false);
    while (dq && dq->q.head) {
        c2d_msg *m = c2d_queue_unlink(&dq->q, dq->q.head);
        record_feedback(c, device_id, m, C2D_OUTCOME_PURGED);
        c2d_msg_free(m);
    }
    if (dq)
        update_count(c, dq);
    store_c2d_purge(c->st, device_id, loop, purge_committed, op);
    pthread_mutex_unlock(&c->lock);
}

void c2d_device_deleted(hub_c2d *c, const char *device_id)
{
    pthread_mutex_lock(&c->lock);
    device_queue *dq = hmap_del(&c->queues, device_id, strlen(device_id));
    pthread_mutex_unlock(&c->lock);
    if (dq) {
        c2d_queue_clear(&dq->q);
        free(dq);
    }
}

size_t c2d_feedback_take(hub_c2d *c, c2d_feedback *out, size_t cap)
{
    pthread_mutex_lock(&c->lock);
    size_t n = 0;
    while (n < cap && c->fb_len) {
        out[n++] = c->feedback[c->fb_first];
        c->fb_first = (c->fb_first + 1) % c->cfg.max_feedback;
        c->fb_len--;
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}

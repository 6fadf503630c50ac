/*
 * broker/deliver.c — outbound messages: routing to subscribers, the
 * per-session queue and in-flight window, and the client's acknowledgements.
 *
 * Routing (route_message) matches the topic once in the shared trie; each
 * match on this loop is delivered at once, each match on another loop is
 * appended to that loop's batch in our outbox. The batches are posted once
 * per loop iteration (flush_outboxes), so fan-out across loops costs one
 * mailbox post per destination loop per iteration, not per message.
 *
 * Delivery to a session: QoS 0 is written straight to the connection
 * (dropped if the client is offline or its output is backed up — QoS 0
 * promises nothing more). QoS 1 and 2 join the session's queue; the pump
 * moves them into flight while the window allows: the client's Receive
 * Maximum, capped by OUT_WINDOW_MAX so that finding a packet id stays cheap,
 * and only while the connection's output is below its high-water mark. The
 * queue is bounded by max_queued_messages and max_queued_bytes (topic +
 * payload; each list keeps its byte total): a message that would pass
 * either is dropped for this session, like Mosquitto's max_queued_*. So a
 * client that never reads pins at most the queue bound plus what the
 * kernel's socket buffers and the output high-water mark took in flight.
 * In-flight messages are kept in send order; acknowledgements usually
 * arrive in that order, so finding one is O(1) in practice.
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define OUT_WINDOW_MAX 256

typedef enum send_result { SEND_OK, SEND_TOO_LARGE, SEND_FAILED } send_result;

/* ---- out lists -------------------------------------------------------- */

/* What a listed message counts toward max_queued_bytes: its topic and
 * payload (the message is shared among subscribers; this is a per-session
 * bound on what the session pins, not an exact memory figure). */
static size_t out_msg_bytes(const out_msg *o)
{
    return (size_t)o->msg->topic.len + o->msg->payload.len;
}

static void out_append(out_list *l, out_msg *o)
{
    l->bytes += out_msg_bytes(o);
    o->next = NULL;
    if (l->tail)
        l->tail->next = o;
    else
        l->head = o;
    l->tail = o;
    l->len++;
}

static out_msg *out_pop(out_list *l)
{
    out_msg *o = l->head;
    if (o) {
        l->head = o->next;
        if (!l->head)
            l->tail = NULL;
        l->len--;
        l->bytes -= out_msg_bytes(o);
    }
    return o;
}

/* Removes and returns the in-flight entry with this packet id. */
static out_msg *out_take(out_list *l, uint16_t packet_id)
{
    out_msg *prev = NULL;
    for (out_msg *o = l->head; o; prev = o, o = o->next) {
        if (o->packet_id != packet_id)
            continue;
        if (prev)
            prev->next = o->next;
        else
            l->head = o->next;
        if (l->tail == o)
            l->tail = prev;
        l->len--;
        l->bytes -= out_msg_bytes(o);
        return o;
    }
    return NULL;
}

static out_msg *out_find(out_list *l, uint16_t packet_id)
{
    for (out_msg *o = l->head; o; o = o->next)
        if (o->packet_id == packet_id)
            return o;
    return NULL;
}

static void out_free(out_msg *o)
{
    broker_msg_unref(o->msg);
    free(o);
}

void session_drop_messages(session *s)
{
    if (!s->x)
        return;
    out_msg *o;
    while ((o = out_pop(&s->x->inflight)))
        out_free(o);
    while ((o = out_pop(&s->x->queue)))
        out_free(o);
    s->x->resends_due = 0;
}

/* Removes the messages of one list that the application sent itself. */
static void drop_app_messages(out_list *l)
{
    out_list keep = {0};
    out_msg *o;
    while ((o = out_pop(l))) {
        if (o->app_tag)
            out_free(o);
        else
            out_append(&keep, o);
    }
    *l = keep;
}

/* The connection ended: messages the application sent with
 * broker_client_send belong to that connection (the application keeps
 * its own queue and is told by disconnected()), so a resumed session must
 * not send them again. */
void session_drop_app_messages(session *s)
{
    if (!s->x)
        return;
    drop_app_messages(&s->x->inflight);
    drop_app_messages(&s->x->queue);
    s->x->resends_due = 0;
    for (const out_msg *o = s->x->inflight.head; o; o = o->next)
        s->x->resends_due += o->resend_due;
}

/* ---- encoding one PUBLISH for one client ------------------------------ */

/* Chooses the Topic Alias for `topic`: an existing one (then the topic is
 * left out), or a new one while the client allows more. *is_new says the
 * mapping must be recorded once the packet is really sent. */
static uint16_t pick_alias(broker_client *c, mqtt_bytes topic, bool *is_new)
{
    *is_new = false;
    if (c->client_alias_max == 0)
        return 0;
    const alias_out_map *a = c->x ? c->x->alias_out : NULL;
    void *v = a ? hmap_get(&a->map, topic.p, topic.len) : NULL;
    if (v)
        return (uint16_t)(uintptr_t)v;
    uint16_t used = a ? a->used : 0;
    if (used >= c->client_alias_max)
        return 0;
    *is_new = true;
    return (uint16_t)(used + 1);
}

static hmap_key alias_key(const void *value, const void *ctx)
{
    const alias_out_map *a = ctx;
    mqtt_bytes k = a->keys[(uintptr_t)value - 1];
    return (hmap_key){k.p, k.len};
}

/* The client's outbound alias map, allocated with its first alias; NULL
 * when memory runs out (the alias is then not recorded, as if unsent). */
static alias_out_map *alias_out_of(broker_client *c)
{
    client_ext *x = client_extra(c);
    if (!x || x->alias_out)
        return x ? x->alias_out : NULL;
    x->alias_out = calloc(1, sizeof *x->alias_out +
                                 (size_t)c->client_alias_max * sizeof x->alias_out->keys[0]);
    if (!x->alias_out) {
        client_trim_extra(c);
        return NULL;
    }
    hmap_init(&x->alias_out->map, alias_key, x->alias_out);
    return x->alias_out;
}

static void record_alias(broker_client *c, mqtt_bytes topic, uint16_t alias)
{
    alias_out_map *a = alias_out_of(c);
    if (!a)
        return;
    uint8_t *key = malloc(topic.len ? topic.len : 1);
    if (!key)
        return;
    if (topic.len)
        memcpy(key, topic.p, topic.len);
    a->keys[a->used++] = (mqtt_bytes){key, topic.len};
    hmap_put(&a->map, key, topic.len, (void *)(uintptr_t)alias);
}

static send_result send_publish(broker_client *c, const broker_msg *msg, uint8_t qos,
                                bool retain, uint32_t sub_id, uint16_t packet_id, bool dup)
{
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    mqtt_publish *p = &pkt.u.publish;
    p->qos = qos;
    p->retain = retain;
    p->dup = dup;
    p->packet_id = packet_id;
    p->topic = msg->topic;
    p->payload = msg->payload;
    p->props = msg->props;
    if (msg->has_expiry) {
        p->props.message_expiry_interval =
            broker_msg_expiry_left(msg, net_loop_now_ms(c->bl->loop));
        MQTT_SET(&p->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL);
    }
    if (sub_id) {
        p->props.subscription_identifier[0] = sub_id;
        p->props.subscription_identifier_count = 1;
        MQTT_SET(&p->props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER);
    }
    bool new_alias = false;
    uint16_t alias = c->info.protocol_version == MQTT_V5 ? pick_alias(c, msg->topic, &new_alias) : 0;
    if (alias) {
        p->props.topic_alias = alias;
        MQTT_SET(&p->props, MQTT_PROP_TOPIC_ALIAS);
        if (!new_alias)
            p->topic = (mqtt_bytes){0};
    }
    size_t n = mqtt_encoded_size(&pkt, c->info.protocol_version);
    if (n == 0)
        return SEND_FAILED;
    if (c->info.max_packet && n > c->info.max_packet)
        return SEND_TOO_LARGE; /* [MQTT-3.1.2-24]: discard, as if sent */
    net_conn *conn = client_conn(c);
    uint8_t *out = net_conn_reserve(conn, n);
    if (!out)
        return SEND_FAILED;
    net_conn_commit(conn, mqtt_encode(&pkt, c->info.protocol_version, out));
    if (new_alias)
        record_alias(c, msg->topic, alias);
    return SEND_OK;
}

/* ---- the session's queue and window ----------------------------------- */

static bool connected(const session *s)
{
    return s->client && s->client->state == CLIENT_CONNECTED;
}

static uint16_t next_packet_id(session_ext *x)
{
    for (;;) {
        uint16_t id = x->next_packet_id++;
        if (x->next_packet_id == 0)
            x->next_packet_id = 1;
        if (id != 0 && !out_find(&x->inflight, id))
            return id;
    }
}

/* The client's Receive Maximum, capped by OUT_WINDOW_MAX: how many QoS 1
 * and 2 PUBLISHes may await their acknowledgement [MQTT-3.3.4-9]. A
 * message awaiting PUBCOMP still counts (its quota returns with the
 * PUBCOMP), one whose resend is due does not (it was sent on an earlier
 * connection, whose quota ended with it). */
static bool window_open(const session *s)
{
    const session_ext *x = s->x;
    const broker_client *c = s->client;
    uint32_t window = c->client_receive_max < OUT_WINDOW_MAX ? c->client_receive_max : OUT_WINDOW_MAX;
    return x->inflight.len - x->resends_due < window &&
           net_conn_out_queued(client_conn(c)) < s->bl->b->conn_limits.out_high;
}

/* o is no longer waiting to be sent again: acknowledged, or about to be. */
static void resend_done(session_ext *x, out_msg *o)
{
    if (o->resend_due) {
        o->resend_due = false;
        x->resends_due--;
    }
}

/* The in-flight message o is settled without an acknowledgement: it was
 * too large for the client [MQTT-3.1.2-25]. */
static void inflight_discard(session *s, out_msg *o)
{
    resend_done(s->x, o);
    out_take(&s->x->inflight, o->packet_id);
    persist_message_gone(s, o);
    out_free(o);
}

/* Sends the in-flight message o again: DUP set, its packet id kept. */
static void resend(session *s, out_msg *o)
{
    resend_done(s->x, o);
    if (send_publish(s->client, o->msg, o->qos, o->retain, o->sub_id, o->packet_id, true) ==
        SEND_TOO_LARGE) {
        log_debug("%s: message on %.*s larger than the client's maximum, dropped",
                  s->client_id, (int)o->msg->topic.len, (const char *)o->msg->topic.p);
        inflight_discard(s, o);
    }
}

/* Sends again, in their original order, the in-flight messages whose
 * resend is due, while the window allows. */
static void resend_due_messages(session *s)
{
    session_ext *x = s->x;
    out_msg *next;
    for (out_msg *o = x->inflight.head; o && x->resends_due && window_open(s); o = next) {
        next = o->next;
        if (o->resend_due)
            resend(s, o);
    }
}

/* Moves queued messages into flight while the window and the socket
 * allow, after the resends that are due: a queued message never overtakes
 * one sent before it [MQTT-4.6.0-2, -3]. */
void session_resume_delivery(session *s)
{
    session_ext *x = s->x;
    if (!connected(s) || !x)
        return;
    resend_due_messages(s);
    uint64_t now = net_loop_now_ms(s->bl->loop);
    while (!x->resends_due && x->queue.head && window_open(s)) {
        out_msg *o = out_pop(&x->queue);
        if (broker_msg_expired(o->msg, now)) {
            persist_message_gone(s, o);
            out_free(o);
            continue;
        }
        o->packet_id = next_packet_id(x);
        send_result r = send_publish(s->client, o->msg, o->qos, o->retain, o->sub_id,
                                     o->packet_id, false);
        if (r == SEND_OK) {
            out_append(&x->inflight, o);
            persist_message(s, o); /* now with its packet id */
        } else {
            if (r == SEND_TOO_LARGE)
                log_debug("%s: message on %.*s larger than the client's maximum, dropped",
                          s->client_id, (int)o->msg->topic.len, (const char *)o->msg->topic.p);
            persist_message_gone(s, o);
            out_free(o);
        }
    }
}

/* A resumed session: everything in flight is sent again with its original
 * packet id [MQTT-4.4.0-1], PUBREL for those already received and PUBLISH
 * with DUP set for the rest. The PUBLISHes go out as the new connection's
 * Receive Maximum allows [MQTT-3.3.4-9]: it may be smaller than the old
 * one's, so the rest wait (resend_due) until acknowledgements free room. */
void session_redeliver(session *s)
{
    session_ext *x = s->x;
    if (!connected(s) || !x)
        return;
    x->resends_due = 0;
    for (out_msg *o = x->inflight.head; o; o = o->next) {
        o->resend_due = !o->awaiting_pubcomp;
        x->resends_due += o->resend_due;
    }
    out_msg *next;
    for (out_msg *o = x->inflight.head; o; o = next) { /* in the order first sent */
        next = o->next;
        if (o->awaiting_pubcomp)
            send_ack(s->client, MQTT_PUBREL, o->packet_id, MQTT_RC_SUCCESS, NULL);
        else if (window_open(s))
            resend(s, o);
    }
    session_resume_delivery(s);
}

void session_deliver(session *s, broker_msg *msg, uint8_t qos, bool retain, uint32_t sub_id,
                     uint64_t app_tag)
{
    if (s->dead || broker_msg_expired(msg, net_loop_now_ms(s->bl->loop)))
        return;
    if (qos == 0) {
        if (connected(s) &&
            net_conn_out_queued(client_conn(s->client)) < s->bl->b->conn_limits.out_high)
            send_publish(s->client, msg, 0, retain, sub_id, 0, false);
        return;
    }
    if (!session_queue_has_room(s, &s->bl->b->limits, msg)) {
        log_debug("%s: queue full, message on %.*s dropped", s->client_id,
                  (int)msg->topic.len, (const char *)msg->topic.p);
        return;
    }
    session_ext *x = session_extra(s);
    out_msg *o = x ? calloc(1, sizeof *o) : NULL;
    if (!o)
        return;
    o->msg = broker_msg_ref(msg);
    o->qos = qos;
    o->retain = retain;
    o->sub_id = sub_id;
    o->app_tag = app_tag;
    out_append(&x->queue, o);
    persist_message(s, o);
    session_resume_delivery(s);
}

bool session_queue_has_room(const session *s, const broker_limits *l, const broker_msg *msg)
{
    size_t add = (size_t)msg->topic.len + msg->payload.len;
    const out_list *q = &session_ext_of(s)->queue;
    return q->len < l->max_queued_messages &&
           (l->max_queued_bytes == 0 || q->bytes + add <= l->max_queued_bytes);
}

/* A message read back from the store at start-up: in flight if it had been
 * sent (redelivered with DUP when the client returns), else queued. */
bool session_restore_message(session *s, out_msg *o)
{
    session_ext *x = session_extra(s);
    if (!x)
        return false;
    out_append(o->packet_id ? &x->inflight : &x->queue, o);
    return true;
}

/* ---- routing ---------------------------------------------------------- */

static void outbox_add(broker_loop *bl, session *s, broker_msg *msg, uint8_t qos, bool retain,
                       uint32_t sub_id)
{
    delivery_batch *b = &bl->outbox[s->bl->index];
    if (b->len == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        delivery *n = realloc(b->items, ncap * sizeof *n);
        if (!n) {
            session_unref(s);
            return;
        }
        b->items = n;
        b->cap = ncap;
    }
    b->items[b->len++] = (delivery){s, broker_msg_ref(msg), qos, retain, sub_id};
}

void route_message(broker_loop *bl, broker_msg *msg, size_t *matched)
{
    broker *b = bl->b;
    if (msg->retain && b->limits.retain_available)
        retain_store_set(b->retained, msg);
    bl->matches.len = 0;
    if (!topic_tree_match(b->subs, msg->topic, &bl->matches))
        log_warn("out of memory matching %.*s", (int)msg->topic.len, (const char *)msg->topic.p);
    if (matched)
        *matched = bl->matches.len;
    for (size_t i = 0; i < bl->matches.len; i++) {
        topic_match *m = &bl->matches.items[i];
        session *s = m->subscriber;
        if ((m->options & MQTT_SUBOPT_NO_LOCAL) && msg->origin == s && !m->shared) {
            session_unref(s);
            continue;
        }
        uint8_t qos = msg->qos < MQTT_SUBOPT_QOS(m->options) ? msg->qos : MQTT_SUBOPT_QOS(m->options);
        bool retain = (m->options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) ? msg->retain : false;
        if (s->bl == bl) {
            session_deliver(s, msg, qos, retain, m->sub_id, 0);
            session_unref(s);
        } else {
            outbox_add(bl, s, msg, qos, retain, m->sub_id); /* keeps the session ref */
        }
    }
}

static void run_batch(net_loop *loop, void *arg)
{
    (void)loop;
    delivery_batch *batch = arg;
    for (size_t i = 0; i < batch->len; i++) {
        delivery *d = &batch->items[i];
        session_deliver(d->target, d->msg, d->qos, d->retain, d->sub_id, 0);
        broker_msg_unref(d->msg);
        session_unref(d->target);
    }
    free(batch->items);
    free(batch);
}

void flush_outboxes(net_loop *loop, void *arg)
{
    (void)loop;
    broker_loop *bl = arg;
    for (unsigned i = 0; i < bl->b->nloops; i++) {
        delivery_batch *ob = &bl->outbox[i];
        if (ob->len == 0)
            continue;
        delivery_batch *batch = malloc(sizeof *batch);
        if (!batch)
            continue; /* retried next iteration */
        *batch = *ob;
        *ob = (delivery_batch){0};
        net_loop_post(bl->b->loops[i]->loop, run_batch, batch);
    }
}

/* ---- acknowledgements from the client --------------------------------- */

static void settle(broker_client *c, out_msg *o, const mqtt_ack *ack)
{
    broker *b = c->bl->b;
    persist_message_gone(c->session, o);
    if (o->app_tag && b->app.settled)
        b->app.settled(b->app.ctx, c, o->app_tag, ack);
    out_free(o);
}

/* The session's in-flight message with this packet id, or NULL. */
static out_msg *inflight_find(session *s, uint16_t packet_id)
{
    return s->x ? out_find(&s->x->inflight, packet_id) : NULL;
}

void handle_puback(broker_client *c, const mqtt_ack *ack)
{
    session *s = c->session;
    out_msg *o = inflight_find(s, ack->packet_id);
    if (!o || o->qos != 1) {
        log_debug("%s: PUBACK for unknown packet id %u", client_id_of(c), ack->packet_id);
        return;
    }
    resend_done(s->x, o); /* received on an earlier connection */
    out_take(&s->x->inflight, ack->packet_id);
    settle(c, o, ack);
    session_resume_delivery(s);
}

void handle_pubrec(broker_client *c, const mqtt_ack *ack)
{
    session *s = c->session;
    out_msg *o = inflight_find(s, ack->packet_id);
    if (!o || o->qos != 2) {
        send_ack(c, MQTT_PUBREL, ack->packet_id, MQTT_RC_PACKET_ID_NOT_FOUND, NULL);
        return;
    }
    resend_done(s->x, o); /* received on an earlier connection */
    if (ack->reason >= 0x80) { /* the client refused it: the flow ends here */
        out_take(&s->x->inflight, ack->packet_id);
        settle(c, o, ack);
        session_resume_delivery(s);
        return;
    }
    o->awaiting_pubcomp = true;
    persist_message(s, o);
    send_ack(c, MQTT_PUBREL, ack->packet_id, MQTT_RC_SUCCESS, NULL);
}

void handle_pubcomp(broker_client *c, const mqtt_ack *ack)
{
    session *s = c->session;
    out_msg *o = inflight_find(s, ack->packet_id);
    if (!o || !o->awaiting_pubcomp) {
        log_debug("%s: PUBCOMP for unknown packet id %u", client_id_of(c), ack->packet_id);
        return;
    }
    out_take(&s->x->inflight, ack->packet_id);
    settle(c, o, ack);
    session_resume_delivery(s);
}

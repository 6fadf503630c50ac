/*
 * broker/session.c — sessions: creation, detachment, expiry, and Wills.
 *
 * A session is the state that outlives a connection: subscriptions, QoS>0
 * messages queued or in flight, inbound QoS 2 packet ids awaiting PUBREL,
 * and a delayed Will. It belongs to one loop (see broker.c) and is touched
 * only there, except for its reference count: the subscription trie hands
 * out references to sessions matched on other loops' threads, so `refs` is
 * atomic and the struct is freed by whoever drops the last one. Everything
 * else is released when the session ends (session_end), on its own loop;
 * a late delivery finds it `dead` and is dropped.
 *
 * Most sessions are a connected device's clean session that never holds
 * any of that, so the struct is split: the core (identity, owner, client,
 * expiry interval) and a session_ext allocated the first time the session
 * needs a list, a timer or a Will. It stays until the session is freed
 * (an emptied part is not worth the churn of freeing and re-allocating),
 * and the threads that may drop the last reference only ever see it empty
 * with its timers stopped.
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

session *session_find(broker_loop *bl, const char *id, size_t len)
{
    return hmap_get(&bl->sessions, id, len);
}

session *session_create(broker_loop *bl, const char *id, size_t len)
{
    if (len > UINT16_MAX)
        return NULL;
    session *s = calloc(1, sizeof *s + len + 1);
    if (!s)
        return NULL;
    memcpy(s->client_id, id, len);
    s->client_id[len] = '\0';
    s->client_id_len = (uint16_t)len;
    s->bl = bl;
    atomic_init(&s->refs, 1); /* the table's reference */
    if (hmap_put(&bl->sessions, s->client_id, len, s) == s) {
        free(s);
        return NULL;
    }
    return s;
}

session_ext *session_extra(session *s)
{
    if (!s->x) {
        s->x = calloc(1, sizeof *s->x);
        if (!s->x)
            return NULL;
        s->x->s = s;
        s->x->next_packet_id = 1;
    }
    return s->x;
}

const session_ext *session_ext_of(const session *s)
{
    static const session_ext none;
    return s->x ? s->x : &none;
}

void session_ref(session *s) { atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed); }

void session_unref(session *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        free(s->x);
        free(s);
    }
}

void session_publish_will(broker_loop *bl, broker_msg *will, uint8_t qos)
{
    (void)qos;
    log_debug("publishing Will on %.*s", (int)will->topic.len, (const char *)will->topic.p);
    route_message(bl, will, NULL);
}

static void publish_pending_will(session *s)
{
    session_ext *x = s->x;
    if (!x || !x->pending_will)
        return;
    net_timer_stop(s->bl->loop, &x->will_timer);
    broker_msg *w = x->pending_will;
    x->pending_will = NULL;
    session_publish_will(s->bl, w, x->pending_will_qos);
    broker_msg_unref(w);
}

/* Drops a pending Will without publishing it. */
void session_cancel_will(session *s)
{
    session_ext *x = s->x;
    if (!x || !x->pending_will)
        return;
    net_timer_stop(s->bl->loop, &x->will_timer);
    broker_msg_unref(x->pending_will);
    x->pending_will = NULL;
}

/* Stops the countdown of a session that has a connection again. */
void session_stop_expiry(session *s)
{
    if (s->x)
        net_timer_stop(s->bl->loop, &s->x->expiry_timer);
}

/* Ends the session: its Will (if still pending) is published unless the
 * server is exiting (`at_exit`: Wills are not sent on shutdown), its
 * subscriptions and messages are dropped, and it leaves the table. */
static void session_release(session *s, bool at_exit)
{
    if (s->dead)
        return;
    broker_loop *bl = s->bl;
    log_debug("session %s ended", s->client_id);
    session_stop_expiry(s);
    if (at_exit)
        session_cancel_will(s);
    publish_pending_will(s);
    if (!at_exit)
        persist_session_ended(s);
    session_remove_all_subs(s);
    session_drop_messages(s);
    if (s->x) {
        free(s->x->qos2_in);
        s->x->qos2_in = NULL;
        s->x->nqos2_in = s->x->qos2_in_cap = 0;
    }
    if (s->client) {
        s->client->session = NULL;
        s->client = NULL;
    }
    hmap_del(&bl->sessions, s->client_id, s->client_id_len);
    s->dead = true;
    session_unref(s);
}

void session_end(session *s) { session_release(s, false); }

void session_free_at_exit(session *s) { session_release(s, true); }

static void on_expiry_timer(net_loop *loop, net_timer *t)
{
    (void)loop;
    session *s = ((session_ext *)((char *)t - offsetof(session_ext, expiry_timer)))->s;
    if (!s->client)
        session_end(s);
}

static void on_will_timer(net_loop *loop, net_timer *t)
{
    (void)loop;
    session *s = ((session_ext *)((char *)t - offsetof(session_ext, will_timer)))->s;
    publish_pending_will(s);
}

/*
 * The connection `c` leaves the session. Its Will is published now, or
 * after the Will Delay Interval, or when the session ends, whichever is
 * first [MQTT-3.1.2-8]; a normal DISCONNECT discarded it already. A session
 * with expiry 0 ends here; others wait for their expiry timer.
 */
void session_detach(session *s, broker_client *c)
{
    broker_loop *bl = s->bl;
    s->client = NULL;
    c->session = NULL;
    client_ext *cx = c->x;
    broker_msg *will = cx ? cx->will : NULL;
    if (will && !c->will_suppressed) {
        session_ext *x = NULL;
        if (cx->will_delay == 0 || s->expiry_interval == 0 || !(x = session_extra(s))) {
            session_publish_will(bl, will, cx->will_qos); /* no memory to wait: now */
        } else {
            uint32_t delay = cx->will_delay < s->expiry_interval ? cx->will_delay
                                                                 : s->expiry_interval;
            x->pending_will = broker_msg_ref(will);
            x->pending_will_qos = cx->will_qos;
            net_timer_start(bl->loop, &x->will_timer, (uint64_t)delay * 1000u, on_will_timer);
        }
    }
    if (will) {
        cx->will = NULL;
        broker_msg_unref(will);
        client_trim_extra(c);
    }
    session_drop_app_messages(s);
    if (s->expiry_interval == 0 || !session_start_expiry(s))
        session_end(s);
}

/* Starts counting down a session without a connection (never for 3.1.1's
 * UINT32_MAX). Also used for sessions restored at start-up. False when
 * there is no memory for the timer: the caller ends the session rather
 * than keep one nothing would ever expire. */
bool session_start_expiry(session *s)
{
    if (s->expiry_interval == UINT32_MAX)
        return true;
    session_ext *x = session_extra(s);
    if (!x)
        return false;
    net_timer_start(s->bl->loop, &x->expiry_timer, (uint64_t)s->expiry_interval * 1000u,
                    on_expiry_timer);
    return true;
}

/* Inbound QoS 2 packet ids awaiting PUBREL: a small array; it never holds
 * more than our Receive Maximum. */
bool session_qos2_in_has(const session *s, uint16_t id)
{
    const session_ext *x = session_ext_of(s);
    for (uint32_t i = 0; i < x->nqos2_in; i++)
        if (x->qos2_in[i] == id)
            return true;
    return false;
}

bool session_qos2_in_add(session *s, uint16_t id)
{
    session_ext *x = session_extra(s);
    if (!x)
        return false;
    if (x->nqos2_in == x->qos2_in_cap) {
        uint32_t ncap = x->qos2_in_cap ? x->qos2_in_cap * 2 : 8;
        uint16_t *n = realloc(x->qos2_in, ncap * sizeof *n);
        if (!n)
            return false;
        x->qos2_in = n;
        x->qos2_in_cap = ncap;
    }
    x->qos2_in[x->nqos2_in++] = id;
    return true;
}

bool session_qos2_in_del(session *s, uint16_t id)
{
    session_ext *x = s->x;
    for (uint32_t i = 0; x && i < x->nqos2_in; i++) {
        if (x->qos2_in[i] == id) {
            x->qos2_in[i] = x->qos2_in[--x->nqos2_in];
            return true;
        }
    }
    return false;
}

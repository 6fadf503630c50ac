/*
 * broker/persist.c — sessions that outlive the process.
 *
 * A session with a non-zero expiry (and a 3.1.1 session without Clean
 * Session) is written through the persistence interface (broker.h,
 * broker_persist; main.c connects it to the store): its expiry and
 * subscriptions as one record, and each routed QoS 1/2 message it holds as
 * one record keyed by a per-session sequence number, rewritten when the
 * message is sent (it gets its packet id) or its PUBREC arrives, deleted
 * when it is settled or dropped. At start-up main.c reads them back through
 * broker_restore_session / broker_restore_message, before the loops run.
 *
 * Trade-offs:
 * - Write-behind: the broker does not wait for the store; the store's group
 *   commit makes each write cheap, and a crash loses at most the writes of
 *   the last commit window. A clean shutdown loses nothing (the store is
 *   closed after the loops stop, committing what they queued).
 * - Messages the application sent itself (app_tag != 0, e.g. IoT Hub
 *   commands) are not written here: the application keeps its own durable
 *   queue and would otherwise see them twice.
 * - Inbound QoS 2 packet ids awaiting PUBREL are not persisted: after a
 *   crash, a client resending such a PUBLISH gets it delivered again (at
 *   least once instead of exactly once, for that window only).
 * - Message Expiry restarts from the time of the restart for the seconds
 *   that were left when the record was written (monotonic clocks do not
 *   survive a restart).
 *
 * Encodings (all integers big-endian):
 *   subscriptions: u8 version (1), then per subscription: u8 options,
 *     u32 subscription id, u16 group length, group, u16 filter length, filter
 *   message: u8 version (1), u8 flags (bit 0: PUBREC received),
 *     u16 packet id (0 = not yet sent), u32 subscription id, then the
 *     message as an MQTT 5 PUBLISH packet (our own codec reads it back).
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"
#include "util/log.h"

#define PERSIST_VERSION 1
#define MSG_HEADER 8

static bool persisting(const session *s)
{
    return s->persisted && s->bl->b->persist.msg_put != NULL;
}

/* ---- subscriptions ---------------------------------------------------- */

static uint8_t *put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static uint32_t get_u16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Encodes the session's subscriptions; malloc'd, length in *len. */
static uint8_t *encode_subs(const session *s, size_t *len)
{
    const session_ext *x = session_ext_of(s);
    size_t n = 1;
    for (uint32_t i = 0; i < x->nsubs; i++)
        n += 1 + 4 + 2 + strlen(x->subs[i].group) + 2 + strlen(x->subs[i].filter);
    uint8_t *buf = malloc(n), *p = buf;
    if (!buf)
        return NULL;
    *p++ = PERSIST_VERSION;
    for (uint32_t i = 0; i < x->nsubs; i++) {
        const session_sub *sub = &x->subs[i];
        size_t gl = strlen(sub->group), fl = strlen(sub->filter);
        *p++ = sub->options;
        p = put_u32(p, sub->sub_id);
        p = put_u16(p, (uint32_t)gl);
        memcpy(p, sub->group, gl);
        p += gl;
        p = put_u16(p, (uint32_t)fl);
        memcpy(p, sub->filter, fl);
        p += fl;
    }
    *len = n;
    return buf;
}

/*
 * Writes the session record (expiry and subscriptions) when the session is
 * to outlive its connection, or deletes it when its expiry became 0. Call
 * after anything of that changed.
 */
void persist_session(session *s)
{
    const broker_persist *ops = &s->bl->b->persist;
    if (!ops->session_put || s->dead)
        return;
    if (s->expiry_interval == 0) {
        if (s->persisted)
            ops->session_delete(ops->ctx, s->bl->loop, s->client_id);
        s->persisted = false;
        return;
    }
    size_t len;
    uint8_t *subs = encode_subs(s, &len);
    if (!subs) {
        log_warn("%s: out of memory saving the session", s->client_id);
        return;
    }
    ops->session_put(ops->ctx, s->bl->loop, s->client_id, s->expiry_interval, subs, len);
    free(subs);
    if (!s->persisted) {
        s->persisted = true;
        const session_ext *x = session_ext_of(s);
        for (out_msg *o = x->inflight.head; o; o = o->next)
            persist_message(s, o);
        for (out_msg *o = x->queue.head; o; o = o->next)
            persist_message(s, o);
    }
}

/* The session ended for good (not because the process exits). */
void persist_session_ended(session *s)
{
    const broker_persist *ops = &s->bl->b->persist;
    if (s->persisted && ops->session_delete)
        ops->session_delete(ops->ctx, s->bl->loop, s->client_id);
    s->persisted = false;
}

/* ---- messages --------------------------------------------------------- */

/* Writes (or rewrites) one message the session holds. */
void persist_message(session *s, out_msg *o)
{
    if (!persisting(s) || o->app_tag)
        return;
    if (!o->seq) /* a message is held: the extra part exists */
        o->seq = ++s->x->last_persist_seq;
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    mqtt_publish *p = &pkt.u.publish;
    p->qos = o->qos;
    p->retain = o->retain;
    p->packet_id = 1; /* the real one is in the header: it may still be 0 */
    p->topic = o->msg->topic;
    p->payload = o->msg->payload;
    p->props = o->msg->props;
    if (o->msg->has_expiry) {
        p->props.message_expiry_interval =
            broker_msg_expiry_left(o->msg, net_loop_now_ms(s->bl->loop));
        MQTT_SET(&p->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL);
    }
    size_t n = mqtt_encoded_size(&pkt, MQTT_V5);
    uint8_t *buf = n ? malloc(MSG_HEADER + n) : NULL;
    if (!buf) {
        log_warn("%s: cannot save a message", s->client_id);
        return;
    }
    buf[0] = PERSIST_VERSION;
    buf[1] = o->awaiting_pubcomp ? 1 : 0;
    put_u16(buf + 2, o->packet_id);
    put_u32(buf + 4, o->sub_id);
    mqtt_encode(&pkt, MQTT_V5, buf + MSG_HEADER);
    const broker_persist *ops = &s->bl->b->persist;
    ops->msg_put(ops->ctx, s->bl->loop, s->client_id, o->seq, buf, MSG_HEADER + n);
    free(buf);
}

/* The message left the session (settled, expired or dropped). */
void persist_message_gone(session *s, out_msg *o)
{
    if (o->seq && persisting(s))
        s->bl->b->persist.msg_delete(s->bl->b->persist.ctx, s->bl->loop, s->client_id, o->seq);
    o->seq = 0;
}

/* ---- restoring at start-up -------------------------------------------- */

void broker_set_persist(broker *b, const broker_persist *p)
{
    b->persist = *p;
}

bool broker_restore_session(broker *b, const char *client_id, uint32_t expiry_s,
                            const uint8_t *subs, size_t len)
{
    size_t idlen = strlen(client_id);
    broker_loop *bl = broker_owner_loop(b, client_id, idlen);
    if (len < 1 || subs[0] != PERSIST_VERSION || expiry_s == 0) {
        log_warn("session %s: unreadable stored record, dropped", client_id);
        return false;
    }
    session *s = session_find(bl, client_id, idlen);
    if (!s)
        s = session_create(bl, client_id, idlen);
    if (!s)
        return false;
    s->expiry_interval = expiry_s;
    s->persisted = true;
    size_t off = 1;
    while (off < len) {
        if (len - off < 7)
            break;
        uint8_t options = subs[off];
        uint32_t sub_id = get_u32(subs + off + 1);
        uint32_t gl = get_u16(subs + off + 5);
        if (len - off - 7 < gl + 2)
            break;
        mqtt_bytes group = {subs + off + 7, gl};
        uint32_t fl = get_u16(subs + off + 7 + gl);
        if (len - off - 9 - gl < fl)
            break;
        mqtt_bytes filter = {subs + off + 9 + gl, fl};
        if (!session_restore_sub(s, group, filter, options, sub_id))
            log_warn("session %s: cannot restore a subscription", client_id);
        off += 9 + gl + fl;
    }
    if (off != len)
        log_warn("session %s: stored subscriptions truncated", client_id);
    if (!session_start_expiry(s)) /* kept until its client returns */
        log_warn("session %s: no memory for its expiry timer", client_id);
    return true;
}

bool broker_restore_message(broker *b, const char *client_id, uint64_t seq,
                            const uint8_t *rec, size_t len)
{
    size_t idlen = strlen(client_id);
    broker_loop *bl = broker_owner_loop(b, client_id, idlen);
    session *s = session_find(bl, client_id, idlen);
    mqtt_packet pkt;
    if (!s || len <= MSG_HEADER || rec[0] != PERSIST_VERSION ||
        mqtt_decode(rec + MSG_HEADER, len - MSG_HEADER, MQTT_V5, &pkt) != 0 ||
        pkt.type != MQTT_PUBLISH || pkt.u.publish.qos == 0) {
        log_warn("session %s: unreadable stored message %llu, dropped", client_id,
                 (unsigned long long)seq);
        return false;
    }
    out_msg *o = calloc(1, sizeof *o);
    broker_msg *m = broker_msg_new(&pkt.u.publish, pkt.u.publish.topic, NULL,
                                   net_loop_now_ms(bl->loop));
    if (!o || !m) {
        free(o);
        if (m)
            broker_msg_unref(m);
        return false;
    }
    o->msg = m;
    o->qos = pkt.u.publish.qos;
    o->retain = pkt.u.publish.retain;
    o->awaiting_pubcomp = rec[1] & 1;
    o->packet_id = (uint16_t)get_u16(rec + 2);
    o->sub_id = get_u32(rec + 4);
    o->seq = seq;
    if (!session_restore_message(s, o)) {
        broker_msg_unref(m);
        free(o);
        return false;
    }
    if (seq > s->x->last_persist_seq)
        s->x->last_persist_seq = seq;
    return true;
}

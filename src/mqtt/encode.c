/*
 * mqtt/encode.c — packet encoding, MQTT 3.1.1 and 5.0.
 *
 * Design: one layout pass computes the Remaining Length (and the property
 * section sizes, kept in a small struct so mqtt_encode does not compute them
 * twice); mqtt_encode then writes front to back with unchecked writers into
 * a buffer the caller sized with mqtt_encoded_size(). No allocation, no
 * intermediate buffer. Sizes are summed in 64 bits so nothing can overflow
 * before the check against the protocol maximum.
 *
 * Choices where the standard leaves freedom:
 *  - 5.0 PUBACK/PUBREC/PUBREL/PUBCOMP: Reason Code and Property Length are
 *    omitted when the reason is 0 and there are no properties (Remaining
 *    Length 2), the Property Length alone when there are no properties
 *    (§3.4.2.1). DISCONNECT likewise (0, 1 or more bytes). AUTH: Remaining
 *    Length 0 for reason 0 without properties, else reason + properties
 *    (§3.15.2.1 allows only the complete omission).
 *  - CONNECT: protocol name "MQTT" and level `version` are always written;
 *    protocol_name/protocol_version in the struct are ignored. Will QoS and
 *    Will Retain are written only with the Will Flag.
 *  - 3.1.1: properties are ignored; CONNACK maps a 5.0 reason code to the
 *    nearest 3.1.1 return code (codes 0..5 pass through); SUBACK maps any
 *    failure code (>= 0x80) to 0x80; UNSUBACK carries the packet id only;
 *    AUTH cannot be encoded (0).
 *  - Fields the encoder cannot represent make it return 0: a string longer
 *    than 65,535 bytes, QoS 3, more than MQTT_MAX_SUB_IDS subscription ids,
 *    a Remaining Length above 268,435,455. Semantic rules (packet id 0,
 *    empty topic...) are the caller's responsibility.
 */
#include <string.h>

#include "mqtt/codec.h"

#define TOO_BIG UINT64_MAX
/* Size of a string that does not fit: above any Remaining Length, small
 * enough that a few of them add up without overflowing. */
#define TOO_LONG ((uint64_t)1 << 32)

typedef struct layout {
    uint64_t rl;        /* Remaining Length */
    uint32_t props;     /* property section body of the packet */
    uint32_t will;      /* property section body of the Will (CONNECT) */
    bool props_written; /* whether the packet carries a property section */
} layout;

/* 2 + len, or TOO_LONG if the string does not fit the two-byte length. */
static inline uint64_t str_size(mqtt_bytes b)
{
    return b.len > 0xFFFF ? TOO_LONG : 2 + (uint64_t)b.len;
}

/* Adds a property section (Property Length included) to l->rl and records
 * its body size in *body. */
static inline bool add_props(layout *l, const mqtt_props *p, uint32_t *body)
{
    uint64_t n = mqtt_props_body_size(p);
    if (n == TOO_BIG)
        return false;
    *body = (uint32_t)n;
    l->rl += n + (unsigned)mqtt_varint_size((uint32_t)n);
    return true;
}

static inline uint8_t v311_connack_code(uint8_t rc)
{
    if (rc <= MQTT311_CONNACK_NOT_AUTHORIZED)
        return rc;
    switch (rc) {
    case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
        return MQTT311_CONNACK_BAD_PROTOCOL;
    case MQTT_RC_CLIENT_ID_NOT_VALID:
        return MQTT311_CONNACK_ID_REJECTED;
    case MQTT_RC_BAD_USERNAME_OR_PASSWORD:
    case MQTT_RC_BAD_AUTHENTICATION_METHOD:
        return MQTT311_CONNACK_BAD_CREDENTIALS;
    case MQTT_RC_NOT_AUTHORIZED:
    case MQTT_RC_BANNED:
        return MQTT311_CONNACK_NOT_AUTHORIZED;
    default:
        return MQTT311_CONNACK_UNAVAILABLE;
    }
}

static bool plan(const mqtt_packet *pkt, uint8_t v, layout *l)
{
    const bool v5 = v == MQTT_V5;
    uint64_t n;
    memset(l, 0, sizeof *l);
    if (v != MQTT_V5 && v != MQTT_V311)
        return false;
    switch (pkt->type) {
    case MQTT_CONNECT: {
        const mqtt_connect *c = &pkt->u.connect;
        l->rl = 6 + 1 + 1 + 2 + str_size(c->client_id);
        if (v5 && !add_props(l, &c->props, &l->props))
            return false;
        if (c->will_flag) {
            if (c->will_qos > 2)
                return false;
            if (v5 && !add_props(l, &c->will_props, &l->will))
                return false;
            l->rl += str_size(c->will_topic);
            l->rl += str_size(c->will_payload);
        }
        if (c->username_flag)
            l->rl += str_size(c->username);
        if (c->password_flag)
            l->rl += str_size(c->password);
        break;
    }
    case MQTT_CONNACK:
        l->rl = 2;
        if (v5 && !add_props(l, &pkt->u.connack.props, &l->props))
            return false;
        break;
    case MQTT_PUBLISH: {
        const mqtt_publish *p = &pkt->u.publish;
        if (p->qos > 2)
            return false;
        l->rl = str_size(p->topic) + (p->qos ? 2 : 0) + p->payload.len;
        if (v5 && !add_props(l, &p->props, &l->props))
            return false;
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        l->rl = 2;
        if (v5) {
            n = mqtt_props_body_size(&pkt->u.ack.props);
            if (n == TOO_BIG)
                return false;
            l->props = (uint32_t)n;
            if (n) {
                l->rl = 3 + n + (unsigned)mqtt_varint_size((uint32_t)n);
                l->props_written = true;
            } else if (pkt->u.ack.reason) {
                l->rl = 3;
            }
        }
        break;
    case MQTT_SUBSCRIBE: {
        const mqtt_subscribe *s = &pkt->u.subscribe;
        l->rl = 2;
        if (v5 && !add_props(l, &s->props, &l->props))
            return false;
        if (s->list) {
            for (uint32_t i = 0; i < s->count; i++) {
                l->rl += str_size(s->list[i].filter) + 1;
                if (l->rl > MQTT_MAX_REMAINING_LENGTH)
                    return false;
            }
        } else {
            l->rl += s->entries.len;
        }
        break;
    }
    case MQTT_UNSUBSCRIBE: {
        const mqtt_unsubscribe *u = &pkt->u.unsubscribe;
        l->rl = 2;
        if (v5 && !add_props(l, &u->props, &l->props))
            return false;
        if (u->list) {
            for (uint32_t i = 0; i < u->count; i++) {
                l->rl += str_size(u->list[i]);
                if (l->rl > MQTT_MAX_REMAINING_LENGTH)
                    return false;
            }
        } else {
            l->rl += u->entries.len;
        }
        break;
    }
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        l->rl = 2;
        if (!v5 && pkt->type == MQTT_UNSUBACK)
            break;
        if (v5 && !add_props(l, &pkt->u.suback.props, &l->props))
            return false;
        l->rl += pkt->u.suback.count;
        break;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        l->rl = 0;
        break;
    case MQTT_AUTH:
        if (!v5)
            return false;
        /* fall through */
    case MQTT_DISCONNECT: {
        const mqtt_reason_packet *d =
            pkt->type == MQTT_AUTH ? &pkt->u.auth : &pkt->u.disconnect;
        l->rl = 0;
        if (!v5)
            break;
        n = mqtt_props_body_size(&d->props);
        if (n == TOO_BIG)
            return false;
        l->props = (uint32_t)n;
        if (n || (d->reason && pkt->type == MQTT_AUTH)) {
            l->rl = 1 + n + (unsigned)mqtt_varint_size((uint32_t)n);
            l->props_written = true;
        } else if (d->reason) {
            l->rl = 1;
        }
        break;
    }
    default:
        return false;
    }
    return l->rl <= MQTT_MAX_REMAINING_LENGTH;
}

size_t mqtt_encoded_size(const mqtt_packet *pkt, uint8_t version)
{
    layout l;
    if (!plan(pkt, version, &l))
        return 0;
    return 1 + (size_t)mqtt_varint_size((uint32_t)l.rl) + (size_t)l.rl;
}

size_t mqtt_encode(const mqtt_packet *pkt, uint8_t version, uint8_t *out)
{
    layout l;
    if (!plan(pkt, version, &l))
        return 0;
    const bool v5 = version == MQTT_V5;
    uint8_t *o = out;
    uint8_t flags = 0;
    switch (pkt->type) {
    case MQTT_PUBLISH: {
        const mqtt_publish *p = &pkt->u.publish;
        flags = (uint8_t)((p->dup ? 8 : 0) | p->qos << 1 | (p->retain ? 1 : 0));
        break;
    }
    case MQTT_PUBREL:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        flags = 0x2;
        break;
    }
    *o++ = (uint8_t)(pkt->type << 4 | flags);
    o = mqtt_wr_varint(o, (uint32_t)l.rl);

    switch (pkt->type) {
    case MQTT_CONNECT: {
        const mqtt_connect *c = &pkt->u.connect;
        o = mqtt_wr_bytes(o, MQTT_BYTES_LIT("MQTT"));
        *o++ = version;
        uint8_t f = (uint8_t)((c->clean_start ? 0x02 : 0) |
                              (c->password_flag ? 0x40 : 0) |
                              (c->username_flag ? 0x80 : 0));
        if (c->will_flag)
            f |= (uint8_t)(0x04 | c->will_qos << 3 | (c->will_retain ? 0x20 : 0));
        *o++ = f;
        o = mqtt_wr_u16(o, c->keep_alive);
        if (v5)
            o = mqtt_props_write(&c->props, l.props, o);
        o = mqtt_wr_bytes(o, c->client_id);
        if (c->will_flag) {
            if (v5)
                o = mqtt_props_write(&c->will_props, l.will, o);
            o = mqtt_wr_bytes(o, c->will_topic);
            o = mqtt_wr_bytes(o, c->will_payload);
        }
        if (c->username_flag)
            o = mqtt_wr_bytes(o, c->username);
        if (c->password_flag)
            o = mqtt_wr_bytes(o, c->password);
        break;
    }
    case MQTT_CONNACK: {
        const mqtt_connack *c = &pkt->u.connack;
        *o++ = c->session_present ? 1 : 0;
        *o++ = v5 ? c->reason : v311_connack_code(c->reason);
        if (v5)
            o = mqtt_props_write(&c->props, l.props, o);
        break;
    }
    case MQTT_PUBLISH: {
        const mqtt_publish *p = &pkt->u.publish;
        o = mqtt_wr_bytes(o, p->topic);
        if (p->qos)
            o = mqtt_wr_u16(o, p->packet_id);
        if (v5)
            o = mqtt_props_write(&p->props, l.props, o);
        o = mqtt_wr_raw(o, p->payload.p, p->payload.len);
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        o = mqtt_wr_u16(o, pkt->u.ack.packet_id);
        if (l.rl >= 3)
            *o++ = pkt->u.ack.reason;
        if (l.props_written)
            o = mqtt_props_write(&pkt->u.ack.props, l.props, o);
        break;
    case MQTT_SUBSCRIBE: {
        const mqtt_subscribe *s = &pkt->u.subscribe;
        o = mqtt_wr_u16(o, s->packet_id);
        if (v5)
            o = mqtt_props_write(&s->props, l.props, o);
        if (s->list) {
            for (uint32_t i = 0; i < s->count; i++) {
                o = mqtt_wr_bytes(o, s->list[i].filter);
                *o++ = s->list[i].options;
            }
        } else {
            o = mqtt_wr_raw(o, s->entries.p, s->entries.len);
        }
        break;
    }
    case MQTT_UNSUBSCRIBE: {
        const mqtt_unsubscribe *u = &pkt->u.unsubscribe;
        o = mqtt_wr_u16(o, u->packet_id);
        if (v5)
            o = mqtt_props_write(&u->props, l.props, o);
        if (u->list) {
            for (uint32_t i = 0; i < u->count; i++)
                o = mqtt_wr_bytes(o, u->list[i]);
        } else {
            o = mqtt_wr_raw(o, u->entries.p, u->entries.len);
        }
        break;
    }
    case MQTT_SUBACK:
    case MQTT_UNSUBACK: {
        const mqtt_suback *s = &pkt->u.suback;
        o = mqtt_wr_u16(o, s->packet_id);
        if (!v5 && pkt->type == MQTT_UNSUBACK)
            break;
        if (v5) {
            o = mqtt_props_write(&s->props, l.props, o);
            o = mqtt_wr_raw(o, s->reasons, s->count);
        } else {
            for (uint32_t i = 0; i < s->count; i++)
                *o++ = s->reasons[i] >= 0x80 ? 0x80 : s->reasons[i];
        }
        break;
    }
    case MQTT_DISCONNECT:
    case MQTT_AUTH: {
        const mqtt_reason_packet *d =
            pkt->type == MQTT_AUTH ? &pkt->u.auth : &pkt->u.disconnect;
        if (l.rl >= 1)
            *o++ = d->reason;
        if (l.props_written)
            o = mqtt_props_write(&d->props, l.props, o);
        break;
    }
    }
    return (size_t)(o - out);
}

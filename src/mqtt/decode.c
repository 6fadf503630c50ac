/*
 * mqtt/decode.c — frame parsing and packet decoding, MQTT 3.1.1 and 5.0.
 *
 * Design: mqtt_frame_parse() only reads the fixed header, so an oversized
 * packet is refused before its body is buffered. mqtt_decode() checks the
 * fixed header again (it is given exactly one frame), checks the flags of
 * the packet type, then dispatches to one decode_<type>() function that
 * walks the variable header and payload with the bounds-checked readers of
 * codec.h. Nothing is copied: slices point into the caller's buffer.
 *
 * Order of checks inside a packet: the structure is parsed first (anything
 * running past the end, bad UTF-8, trailing bytes: 0x81), then the rules on
 * values are applied, so a packet that is both truncated and semantically
 * wrong reports 0x81. The exception is CONNECT, where the protocol name and
 * level are judged first (0x84) because what follows depends on them.
 *
 * Reason codes: 0x81 for encoding rule violations, 0x82 for a well-formed
 * value a rule forbids (a reason code not allowed for the packet type, a
 * property twice...). In 3.1.1 there is no such distinction (the only
 * reaction is closing the connection), so the protocol-error class is
 * reported as 0x81 there; see perr(). A few rules have their own code
 * because the standard names one: 0x84 (CONNECT protocol name/level), 0x85
 * (3.1.1 empty client id without CleanSession, [MQTT-3.1.3-8]: the server
 * must answer CONNACK 0x02), 0x90 (wildcards in a PUBLISH or Will topic),
 * 0x99 (Payload Format Indicator 1 with a payload that is not UTF-8, which
 * §3.3.2.3.2 lets a receiver check).
 *
 * The decoder is direction-agnostic: server-to-client packets (CONNACK,
 * SUBACK, UNSUBACK, PINGRESP) decode too, for clients and tests. Whether a
 * packet may be sent in a given direction or state is the caller's business.
 */
#include <string.h>

#include "mqtt/codec.h"

#define MALFORMED MQTT_RC_MALFORMED_PACKET

static inline uint8_t perr(uint8_t version)
{
    return version == MQTT_V5 ? MQTT_RC_PROTOCOL_ERROR : MALFORMED;
}

static inline bool bytes_eq(mqtt_bytes b, const char *s, size_t n)
{
    return b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
}

static inline bool has_wildcard(mqtt_bytes s)
{
    return s.len && (memchr(s.p, '+', s.len) || memchr(s.p, '#', s.len));
}

/* ---- framing ---------------------------------------------------------- */

mqtt_frame_status mqtt_frame_parse(const uint8_t *buf, size_t len,
                                   uint32_t max_packet_size, mqtt_frame *out)
{
    if (len < 1)
        return MQTT_FRAME_NEED_MORE;
    out->type = buf[0] >> 4;
    out->flags = buf[0] & 0x0F;
    if (out->type == 0) {
        out->reason = MALFORMED; /* reserved packet type */
        return MQTT_FRAME_ERROR;
    }
    uint32_t rl;
    int n = mqtt_varint_decode(buf + 1, len - 1, &rl);
    if (n == 0)
        return MQTT_FRAME_NEED_MORE;
    if (n < 0) {
        out->reason = MALFORMED;
        return MQTT_FRAME_ERROR;
    }
    out->header_len = 1 + (uint32_t)n;
    out->total_len = out->header_len + rl;
    if (max_packet_size && out->total_len > max_packet_size) {
        out->reason = MQTT_RC_PACKET_TOO_LARGE;
        return MQTT_FRAME_ERROR;
    }
    out->reason = 0;
    return len >= out->total_len ? MQTT_FRAME_OK : MQTT_FRAME_NEED_MORE;
}

/* ---- reason codes allowed per packet type (§2.4) ------------------------ */

static bool reason_ok(uint8_t type, uint8_t rc)
{
    switch (type) {
    case MQTT_CONNACK:
        switch (rc) {
        case 0x00: case 0x80: case 0x81: case 0x82: case 0x83: case 0x84:
        case 0x85: case 0x86: case 0x87: case 0x88: case 0x89: case 0x8A:
        case 0x8C: case 0x90: case 0x95: case 0x97: case 0x99: case 0x9A:
        case 0x9B: case 0x9C: case 0x9D: case 0x9F:
            return true;
        }
        return false;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
        switch (rc) {
        case 0x00: case 0x10: case 0x80: case 0x83: case 0x87: case 0x90:
        case 0x91: case 0x97: case 0x99:
            return true;
        }
        return false;
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return rc == 0x00 || rc == 0x92;
    case MQTT_SUBACK:
        switch (rc) {
        case 0x00: case 0x01: case 0x02: case 0x80: case 0x83: case 0x87:
        case 0x8F: case 0x91: case 0x97: case 0x9E: case 0xA1: case 0xA2:
            return true;
        }
        return false;
    case MQTT_UNSUBACK:
        switch (rc) {
        case 0x00: case 0x11: case 0x80: case 0x83: case 0x87: case 0x8F:
        case 0x91:
            return true;
        }
        return false;
    case MQTT_DISCONNECT:
        switch (rc) {
        case 0x00: case 0x04: case 0x80: case 0x81: case 0x82: case 0x83:
        case 0x87: case 0x89: case 0x8B: case 0x8D: case 0x8E: case 0x8F:
        case 0x90: case 0x93: case 0x94: case 0x95: case 0x96: case 0x97:
        case 0x98: case 0x99: case 0x9A: case 0x9B: case 0x9C: case 0x9D:
        case 0x9E: case 0x9F: case 0xA0: case 0xA1: case 0xA2:
            return true;
        }
        return false;
    case MQTT_AUTH:
        return rc == 0x00 || rc == 0x18 || rc == 0x19;
    default:
        return false;
    }
}

/* ---- per packet type ---------------------------------------------------- */

/* §3.1 */
static uint8_t decode_connect(mqtt_iter *r, mqtt_connect *c)
{
    mqtt_bytes name;
    uint8_t level, flags;
    if (mqtt_rd_binary(r, &name) || mqtt_rd_u8(r, &level))
        return MALFORMED;
    /* [MQTT-3.1.2-1], [MQTT-3.1.2-2]: "MQTT" level 4 or 5 only; this also
     * refuses 3.1 ("MQIsdp", level 3). */
    if (!bytes_eq(name, "MQTT", 4) || (level != MQTT_V311 && level != MQTT_V5))
        return MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;
    c->protocol_name = name;
    c->protocol_version = level;
    const uint8_t v = level;

    if (mqtt_rd_u8(r, &flags) || mqtt_rd_u16(r, &c->keep_alive))
        return MALFORMED;
    if (flags & 0x01)
        return MALFORMED; /* reserved flag [MQTT-3.1.2-3] */
    c->clean_start = flags & 0x02;
    c->will_flag = flags & 0x04;
    c->will_qos = (flags >> 3) & 0x03;
    c->will_retain = flags & 0x20;
    c->password_flag = flags & 0x40;
    c->username_flag = flags & 0x80;
    if (c->will_qos == 3)
        return MALFORMED; /* [MQTT-3.1.2-12] (5.0), [MQTT-3.1.2-14] (3.1.1) */
    if (!c->will_flag && (c->will_qos || c->will_retain))
        return MALFORMED; /* [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15] */
    if (v == MQTT_V311 && c->password_flag && !c->username_flag)
        return MALFORMED; /* [MQTT-3.1.2-22] (3.1.1 only) */

    uint8_t rc;
    if (v == MQTT_V5 && (rc = mqtt_props_decode(r, MQTT_CONNECT, &c->props)))
        return rc;
    /* [MQTT-3.1.3-4] client id is a UTF-8 string (may be empty). */
    if (mqtt_rd_utf8(r, &c->client_id))
        return MALFORMED;
    if (c->will_flag) {
        if (v == MQTT_V5 &&
            (rc = mqtt_props_decode(r, MQTT_PROPS_WILL, &c->will_props)))
            return rc;
        if (mqtt_rd_utf8(r, &c->will_topic) ||   /* [MQTT-3.1.3-11] */
            mqtt_rd_binary(r, &c->will_payload))
            return MALFORMED;
    }
    if (c->username_flag && mqtt_rd_utf8(r, &c->username)) /* [MQTT-3.1.3-12] */
        return MALFORMED;
    if (c->password_flag && mqtt_rd_binary(r, &c->password))
        return MALFORMED;
    if (r->p != r->end)
        return MALFORMED;

    /* Rules on well-formed values. */
    if (v == MQTT_V5 &&
        MQTT_HAS(&c->props, MQTT_PROP_AUTHENTICATION_DATA) &&
        !MQTT_HAS(&c->props, MQTT_PROP_AUTHENTICATION_METHOD))
        return MQTT_RC_PROTOCOL_ERROR; /* §3.1.2.11.10 */
    if (c->will_flag) {
        /* The Will Topic is a Topic Name: non-empty [MQTT-4.7.3-1], no
         * wildcards [MQTT-4.7.0-1]. */
        if (c->will_topic.len == 0 || has_wildcard(c->will_topic))
            return MQTT_RC_TOPIC_NAME_INVALID;
        if (v == MQTT_V5 && c->will_props.payload_format_indicator == 1 &&
            !mqtt_utf8_data_valid(c->will_payload.p, c->will_payload.len))
            return MQTT_RC_PAYLOAD_FORMAT_INVALID; /* §3.1.3.2.3 */
    }
    if (v == MQTT_V311 && c->client_id.len == 0 && !c->clean_start)
        return MQTT_RC_CLIENT_ID_NOT_VALID; /* [MQTT-3.1.3-8] (3.1.1) */
    return 0;
}

/* §3.2 */
static uint8_t decode_connack(mqtt_iter *r, uint8_t v, mqtt_connack *c)
{
    uint8_t flags, rc;
    if (mqtt_rd_u8(r, &flags) || mqtt_rd_u8(r, &c->reason))
        return MALFORMED;
    if (flags & 0xFE)
        return MALFORMED; /* [MQTT-3.2.2-1] reserved */
    c->session_present = flags & 1;
    if (v == MQTT_V5 && (rc = mqtt_props_decode(r, MQTT_CONNACK, &c->props)))
        return rc;
    if (r->p != r->end)
        return MALFORMED;
    if (v == MQTT_V5 ? !reason_ok(MQTT_CONNACK, c->reason)
                     : c->reason > MQTT311_CONNACK_NOT_AUTHORIZED)
        return perr(v);
    if (c->session_present && c->reason != 0)
        return perr(v); /* [MQTT-3.2.2-6] (5.0), [MQTT-3.2.2-4] (3.1.1) */
    return 0;
}

/* §3.3 */
static uint8_t decode_publish(mqtt_iter *r, uint8_t v, uint8_t flags,
                              mqtt_publish *p)
{
    uint8_t rc;
    p->retain = flags & 1;
    p->qos = (flags >> 1) & 3;
    p->dup = flags & 8;
    if (p->qos == 3)
        return MALFORMED; /* [MQTT-3.3.1-4] */
    if (p->dup && p->qos == 0)
        return MALFORMED; /* [MQTT-3.3.1-2] */
    if (mqtt_rd_utf8(r, &p->topic)) /* [MQTT-3.3.2-1] */
        return MALFORMED;
    if (p->qos) {
        if (mqtt_rd_u16(r, &p->packet_id) || p->packet_id == 0)
            return MALFORMED; /* [MQTT-2.2.1-3] */
    }
    if (v == MQTT_V5 && (rc = mqtt_props_decode(r, MQTT_PUBLISH, &p->props)))
        return rc;
    p->payload = (mqtt_bytes){r->p, (uint32_t)(r->end - r->p)};
    r->p = r->end;

    if (p->topic.len == 0) {
        /* 5.0: allowed only with a Topic Alias (§3.3.2.3.4); 3.1.1: a Topic
         * Name has at least one character [MQTT-4.7.3-1]. */
        if (v != MQTT_V5)
            return MALFORMED;
        if (!MQTT_HAS(&p->props, MQTT_PROP_TOPIC_ALIAS))
            return MQTT_RC_PROTOCOL_ERROR;
    }
    if (has_wildcard(p->topic))
        return MQTT_RC_TOPIC_NAME_INVALID; /* [MQTT-3.3.2-2] */
    if (v == MQTT_V5 && p->props.payload_format_indicator == 1 &&
        !mqtt_utf8_data_valid(p->payload.p, p->payload.len))
        return MQTT_RC_PAYLOAD_FORMAT_INVALID; /* §3.3.2.3.2 */
    return 0;
}

/* PUBACK §3.4, PUBREC §3.5, PUBREL §3.6, PUBCOMP §3.7 */
static uint8_t decode_ack(mqtt_iter *r, uint8_t v, uint8_t type, mqtt_ack *a)
{
    uint8_t rc;
    if (mqtt_rd_u16(r, &a->packet_id) || a->packet_id == 0)
        return MALFORMED; /* [MQTT-2.2.1-3] */
    if (v == MQTT_V5 && r->p < r->end) {
        /* Remaining Length 2: reason 0, no properties; 3: no properties
         * (§3.4.2.1, §3.4.2.2.1 and the same for the other acks). */
        if (mqtt_rd_u8(r, &a->reason))
            return MALFORMED;
        if (r->p < r->end && (rc = mqtt_props_decode(r, type, &a->props)))
            return rc;
    }
    if (r->p != r->end)
        return MALFORMED;
    if (!reason_ok(type, a->reason))
        return MQTT_RC_PROTOCOL_ERROR;
    return 0;
}

/* §3.8 */
static uint8_t decode_subscribe(mqtt_iter *r, uint8_t v, mqtt_subscribe *s)
{
    uint8_t rc;
    if (mqtt_rd_u16(r, &s->packet_id) || s->packet_id == 0)
        return MALFORMED; /* [MQTT-2.2.1-3] */
    if (v == MQTT_V5 && (rc = mqtt_props_decode(r, MQTT_SUBSCRIBE, &s->props)))
        return rc;
    const uint8_t *start = r->p;
    uint8_t proto = 0;
    while (r->p < r->end) {
        mqtt_bytes filter;
        uint8_t o;
        /* Topic filters are UTF-8 strings [MQTT-3.8.3-1]; their syntax is
         * judged per entry by the broker (SUBACK 0x8F). */
        if (mqtt_rd_utf8(r, &filter) || mqtt_rd_u8(r, &o))
            return MALFORMED;
        if (v == MQTT_V5) {
            if (o & 0xC0)
                return MALFORMED; /* reserved bits [MQTT-3.8.3-5] */
            /* §3.8.3.1: QoS 3 and Retain Handling 3 are protocol errors,
             * as is No Local on a shared subscription [MQTT-3.8.3-4]. */
            if (MQTT_SUBOPT_QOS(o) == 3 || MQTT_SUBOPT_RETAIN_HANDLING(o) == 3 ||
                ((o & MQTT_SUBOPT_NO_LOCAL) && filter.len >= 7 &&
                 memcmp(filter.p, "$share/", 7) == 0))
                proto = MQTT_RC_PROTOCOL_ERROR;
        } else if ((o & 0xFC) || MQTT_SUBOPT_QOS(o) == 3) {
            return MALFORMED; /* [MQTT-3-8.3-4] (3.1.1) */
        }
        s->count++;
    }
    if (proto)
        return proto;
    if (s->count == 0)
        return perr(v); /* [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1) */
    s->entries = (mqtt_bytes){start, (uint32_t)(r->end - start)};
    return 0;
}

/* §3.10 */
static uint8_t decode_unsubscribe(mqtt_iter *r, uint8_t v,
                                  mqtt_unsubscribe *u)
{
    uint8_t rc;
    if (mqtt_rd_u16(r, &u->packet_id) || u->packet_id == 0)
        return MALFORMED; /* [MQTT-2.2.1-3] */
    if (v == MQTT_V5 &&
        (rc = mqtt_props_decode(r, MQTT_UNSUBSCRIBE, &u->props)))
        return rc;
    const uint8_t *start = r->p;
    while (r->p < r->end) {
        mqtt_bytes filter;
        if (mqtt_rd_utf8(r, &filter)) /* [MQTT-3.10.3-1] */
            return MALFORMED;
        u->count++;
    }
    if (u->count == 0)
        return perr(v); /* [MQTT-3.10.3-2] */
    u->entries = (mqtt_bytes){start, (uint32_t)(r->end - start)};
    return 0;
}

/* SUBACK §3.9, UNSUBACK §3.11 */
static uint8_t decode_suback(mqtt_iter *r, uint8_t v, uint8_t type,
                             mqtt_suback *s)
{
    uint8_t rc;
    if (mqtt_rd_u16(r, &s->packet_id) || s->packet_id == 0)
        return MALFORMED;
    if (v == MQTT_V311 && type == MQTT_UNSUBACK)
        return r->p == r->end ? 0 : MALFORMED; /* 3.1.1: packet id only */
    if (v == MQTT_V5 && (rc = mqtt_props_decode(r, type, &s->props)))
        return rc;
    s->reasons = r->p;
    s->count = (uint32_t)(r->end - r->p);
    r->p = r->end;
    if (s->count == 0)
        return perr(v); /* one per SUBSCRIBE/UNSUBSCRIBE entry, at least 1 */
    for (uint32_t i = 0; i < s->count; i++) {
        uint8_t x = s->reasons[i];
        if (v == MQTT_V5 ? !reason_ok(type, x) : (x > 2 && x != 0x80))
            return perr(v); /* [MQTT-3.9.3-2] (3.1.1) */
    }
    return 0;
}

/* DISCONNECT §3.14, AUTH §3.15 */
static uint8_t decode_reason_packet(mqtt_iter *r, uint8_t v, uint8_t type,
                                    mqtt_reason_packet *d)
{
    uint8_t rc;
    if (v != MQTT_V5)
        return r->p == r->end ? 0 : MALFORMED;
    /* Remaining Length 0: reason 0x00, no properties; 1: no properties
     * (§3.14.2.2.1; accepted for AUTH alike). */
    if (r->p < r->end) {
        if (mqtt_rd_u8(r, &d->reason))
            return MALFORMED;
        if (r->p < r->end && (rc = mqtt_props_decode(r, type, &d->props)))
            return rc;
    }
    if (r->p != r->end)
        return MALFORMED;
    if (!reason_ok(type, d->reason))
        return MQTT_RC_PROTOCOL_ERROR;
    return 0;
}

/* ---- dispatch ------------------------------------------------------------ */

uint8_t mqtt_decode(const uint8_t *buf, size_t len, uint8_t version,
                    mqtt_packet *out)
{
    memset(out, 0, sizeof *out);
    if (len < 2)
        return MALFORMED;
    uint8_t type = buf[0] >> 4, flags = buf[0] & 0x0F;
    out->type = type;
    out->flags = flags;
    uint32_t rl;
    int n = mqtt_varint_decode(buf + 1, len - 1, &rl);
    if (n <= 0 || (uint64_t)1 + (unsigned)n + rl != len)
        return MALFORMED; /* Remaining Length disagrees with the frame */
    if (type != MQTT_CONNECT && version != MQTT_V311 && version != MQTT_V5)
        return MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;

    /* Fixed header flags (§2.1.3; [MQTT-2.1.3-1] / 3.1.1 [MQTT-2.2.2-1]). */
    switch (type) {
    case MQTT_PUBLISH:
        break;
    case MQTT_PUBREL:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        if (flags != 0x2)
            return MALFORMED; /* [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1] */
        break;
    default:
        if (flags != 0)
            return MALFORMED;
    }

    mqtt_iter r = {buf + 1 + n, buf + len};
    switch (type) {
    case MQTT_CONNECT:
        return decode_connect(&r, &out->u.connect);
    case MQTT_CONNACK:
        return decode_connack(&r, version, &out->u.connack);
    case MQTT_PUBLISH:
        return decode_publish(&r, version, flags, &out->u.publish);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return decode_ack(&r, version, type, &out->u.ack);
    case MQTT_SUBSCRIBE:
        return decode_subscribe(&r, version, &out->u.subscribe);
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return decode_suback(&r, version, type, &out->u.suback);
    case MQTT_UNSUBSCRIBE:
        return decode_unsubscribe(&r, version, &out->u.unsubscribe);
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        return r.p == r.end ? 0 : MALFORMED;
    case MQTT_DISCONNECT:
        return decode_reason_packet(&r, version, type, &out->u.disconnect);
    case MQTT_AUTH:
        if (version != MQTT_V5)
            return MALFORMED; /* reserved packet type in 3.1.1 */
        return decode_reason_packet(&r, version, type, &out->u.auth);
    default:
        return MALFORMED; /* type 0 is reserved */
    }
}

/* ---- iterators over decoded SUBSCRIBE / UNSUBSCRIBE entries -------------- */

void mqtt_subscribe_iter(const mqtt_subscribe *s, mqtt_iter *it)
{
    it->p = s->entries.p;
    it->end = s->entries.p ? s->entries.p + s->entries.len : NULL;
}

bool mqtt_subscribe_next(mqtt_iter *it, mqtt_sub_entry *out)
{
    if (it->p >= it->end || mqtt_rd_binary(it, &out->filter) ||
        mqtt_rd_u8(it, &out->options)) {
        it->p = it->end;
        return false;
    }
    return true;
}

void mqtt_unsubscribe_iter(const mqtt_unsubscribe *u, mqtt_iter *it)
{
    it->p = u->entries.p;
    it->end = u->entries.p ? u->entries.p + u->entries.len : NULL;
}

bool mqtt_unsubscribe_next(mqtt_iter *it, mqtt_bytes *filter)
{
    if (it->p >= it->end || mqtt_rd_binary(it, filter)) {
        it->p = it->end;
        return false;
    }
    return true;
}

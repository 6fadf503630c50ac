/*
 * mqtt/props.c — MQTT 5 properties (section 2.2.2): the property table,
 * decoding a property section into an mqtt_props, encoding one back, and
 * the user property helpers.
 *
 * Design: one table indexed by property id gives each property's data type
 * and the set of packet types allowed to carry it, as a bitmask over packet
 * type numbers, with bit 0 (MQTT_PROPS_WILL, packet type 0 is reserved)
 * standing for the Will Properties of CONNECT. The decoder is a single pass
 * over the section: read the id, look it up, read a value of its type, then
 * store it (duplicate and range checks happen at store time).
 *
 * Errors follow §2.2.2.2: an id that is unknown or not valid for the packet
 * type, a value that runs past the section, or a string that is not valid
 * UTF-8 makes the packet malformed (0x81); a single-valued property given
 * twice or a value out of its range is a protocol error (0x82).
 *
 * User properties are not copied: props->user is the whole property region
 * (set when there is at least one) and props->user_count their number; the
 * iterator skips the other entries using the table. The encoder copies only
 * the 0x26 entries of props->user, so a decoded region can be forwarded as
 * is. Subscription Identifiers: only PUBLISH may carry several (one per
 * matching subscription, §3.3.4); the decoder keeps the first
 * MQTT_MAX_SUB_IDS. The decoder sets both subscription_identifier_count and
 * the present bit; the encoder only looks at the count.
 *
 * Encoding order is by property id, then subscription identifiers, then
 * user properties in their original order.
 */
#include <string.h>

#include "mqtt/codec.h"

enum { T_NONE, T_BYTE, T_U16, T_U32, T_VARINT, T_UTF8, T_BIN, T_PAIR };

#define P(t) (1u << (t))
#define WILL P(MQTT_PROPS_WILL)
#define ACKS (P(MQTT_PUBACK) | P(MQTT_PUBREC) | P(MQTT_PUBREL) | P(MQTT_PUBCOMP))

static const struct prop_info {
    uint8_t type;
    uint16_t packets;
} prop_table[0x2B] = {
    [0x01] = {T_BYTE, P(MQTT_PUBLISH) | WILL},
    [0x02] = {T_U32, P(MQTT_PUBLISH) | WILL},
    [0x03] = {T_UTF8, P(MQTT_PUBLISH) | WILL},
    [0x08] = {T_UTF8, P(MQTT_PUBLISH) | WILL},
    [0x09] = {T_BIN, P(MQTT_PUBLISH) | WILL},
    [0x0B] = {T_VARINT, P(MQTT_PUBLISH) | P(MQTT_SUBSCRIBE)},
    [0x11] = {T_U32, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_DISCONNECT)},
    [0x12] = {T_UTF8, P(MQTT_CONNACK)},
    [0x13] = {T_U16, P(MQTT_CONNACK)},
    [0x15] = {T_UTF8, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_AUTH)},
    [0x16] = {T_BIN, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_AUTH)},
    [0x17] = {T_BYTE, P(MQTT_CONNECT)},
    [0x18] = {T_U32, WILL},
    [0x19] = {T_BYTE, P(MQTT_CONNECT)},
    [0x1A] = {T_UTF8, P(MQTT_CONNACK)},
    [0x1C] = {T_UTF8, P(MQTT_CONNACK) | P(MQTT_DISCONNECT)},
    [0x1F] = {T_UTF8, P(MQTT_CONNACK) | ACKS | P(MQTT_SUBACK) |
                          P(MQTT_UNSUBACK) | P(MQTT_DISCONNECT) | P(MQTT_AUTH)},
    [0x21] = {T_U16, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    [0x22] = {T_U16, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    [0x23] = {T_U16, P(MQTT_PUBLISH)},
    [0x24] = {T_BYTE, P(MQTT_CONNACK)},
    [0x25] = {T_BYTE, P(MQTT_CONNACK)},
    [0x26] = {T_PAIR, 0xFFFF & ~(P(MQTT_PINGREQ) | P(MQTT_PINGRESP))},
    [0x27] = {T_U32, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    [0x28] = {T_BYTE, P(MQTT_CONNACK)},
    [0x29] = {T_BYTE, P(MQTT_CONNACK)},
    [0x2A] = {T_BYTE, P(MQTT_CONNACK)},
};

/* Ids of the single-valued properties: everything in the table but
 * Subscription Identifier and User Property. */
static const uint64_t SINGLE_MASK =
    MQTT_PROP_BIT(0x01) | MQTT_PROP_BIT(0x02) | MQTT_PROP_BIT(0x03) |
    MQTT_PROP_BIT(0x08) | MQTT_PROP_BIT(0x09) | MQTT_PROP_BIT(0x11) |
    MQTT_PROP_BIT(0x12) | MQTT_PROP_BIT(0x13) | MQTT_PROP_BIT(0x15) |
    MQTT_PROP_BIT(0x16) | MQTT_PROP_BIT(0x17) | MQTT_PROP_BIT(0x18) |
    MQTT_PROP_BIT(0x19) | MQTT_PROP_BIT(0x1A) | MQTT_PROP_BIT(0x1C) |
    MQTT_PROP_BIT(0x1F) | MQTT_PROP_BIT(0x21) | MQTT_PROP_BIT(0x22) |
    MQTT_PROP_BIT(0x23) | MQTT_PROP_BIT(0x24) | MQTT_PROP_BIT(0x25) |
    MQTT_PROP_BIT(0x27) | MQTT_PROP_BIT(0x28) | MQTT_PROP_BIT(0x29) |
    MQTT_PROP_BIT(0x2A);

static inline int prop_type(uint8_t id)
{
    return id < sizeof prop_table / sizeof prop_table[0] ? prop_table[id].type
                                                         : T_NONE;
}

/* A value read from the wire, whatever its type. */
typedef struct {
    uint32_t n;
    mqtt_bytes s;
} prop_value;

static uint8_t read_value(mqtt_iter *r, int type, prop_value *v)
{
    uint8_t b;
    uint16_t h;
    mqtt_bytes name;
    switch (type) {
    case T_BYTE:
        if (mqtt_rd_u8(r, &b))
            return MQTT_RC_MALFORMED_PACKET;
        v->n = b;
        return 0;
    case T_U16:
        if (mqtt_rd_u16(r, &h))
            return MQTT_RC_MALFORMED_PACKET;
        v->n = h;
        return 0;
    case T_U32:
        return mqtt_rd_u32(r, &v->n);
    case T_VARINT:
        return mqtt_rd_varint(r, &v->n);
    case T_UTF8:
        return mqtt_rd_utf8(r, &v->s);
    case T_BIN:
        return mqtt_rd_binary(r, &v->s);
    case T_PAIR:
        if (mqtt_rd_utf8(r, &name))
            return MQTT_RC_MALFORMED_PACKET;
        return mqtt_rd_utf8(r, &v->s);
    default:
        return MQTT_RC_MALFORMED_PACKET;
    }
}

static bool has_wildcard(mqtt_bytes s)
{
    return s.len && (memchr(s.p, '+', s.len) || memchr(s.p, '#', s.len));
}

static uint8_t store(mqtt_props *pr, uint8_t ptype, uint8_t id,
                     const prop_value *v)
{
    const uint8_t PE = MQTT_RC_PROTOCOL_ERROR;
    if (id == MQTT_PROP_USER_PROPERTY) {
        pr->user_count++;
        return 0;
    }
    if (id == MQTT_PROP_SUBSCRIPTION_IDENTIFIER) {
        /* 1..268,435,455; 0 is a protocol error (§3.3.2.3.8, §3.8.2.1.2). */
        if (v->n == 0)
            return PE;
        if (ptype != MQTT_PUBLISH && pr->subscription_identifier_count)
            return PE; /* once in SUBSCRIBE */
        if (pr->subscription_identifier_count < MQTT_MAX_SUB_IDS)
            pr->subscription_identifier[pr->subscription_identifier_count++] =
                v->n;
        MQTT_SET(pr, id);
        return 0;
    }
    if (pr->present & MQTT_PROP_BIT(id))
        return PE; /* single-valued property given twice */
    MQTT_SET(pr, id);
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
        pr->payload_format_indicator = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
        pr->message_expiry_interval = v->n;
        return 0;
    case MQTT_PROP_CONTENT_TYPE:
        pr->content_type = v->s;
        return 0;
    case MQTT_PROP_RESPONSE_TOPIC:
        /* A Topic Name: non-empty, no wildcards [MQTT-3.3.2-14]. */
        pr->response_topic = v->s;
        return v->s.len == 0 || has_wildcard(v->s) ? PE : 0;
    case MQTT_PROP_CORRELATION_DATA:
        pr->correlation_data = v->s;
        return 0;
    case MQTT_PROP_SESSION_EXPIRY_INTERVAL:
        pr->session_expiry_interval = v->n;
        return 0;
    case MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER:
        pr->assigned_client_identifier = v->s;
        return 0;
    case MQTT_PROP_SERVER_KEEP_ALIVE:
        pr->server_keep_alive = (uint16_t)v->n;
        return 0;
    case MQTT_PROP_AUTHENTICATION_METHOD:
        pr->authentication_method = v->s;
        return 0;
    case MQTT_PROP_AUTHENTICATION_DATA:
        pr->authentication_data = v->s;
        return 0;
    case MQTT_PROP_REQUEST_PROBLEM_INFORMATION:
        pr->request_problem_information = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_WILL_DELAY_INTERVAL:
        pr->will_delay_interval = v->n;
        return 0;
    case MQTT_PROP_REQUEST_RESPONSE_INFORMATION:
        pr->request_response_information = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_RESPONSE_INFORMATION:
        pr->response_information = v->s;
        return 0;
    case MQTT_PROP_SERVER_REFERENCE:
        pr->server_reference = v->s;
        return 0;
    case MQTT_PROP_REASON_STRING:
        pr->reason_string = v->s;
        return 0;
    case MQTT_PROP_RECEIVE_MAXIMUM:
        pr->receive_maximum = (uint16_t)v->n;
        return v->n == 0 ? PE : 0; /* §3.1.2.11.3, §3.2.2.3.3 */
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
        pr->topic_alias_maximum = (uint16_t)v->n;
        return 0;
    case MQTT_PROP_TOPIC_ALIAS:
        pr->topic_alias = (uint16_t)v->n;
        return v->n == 0 ? PE : 0; /* [MQTT-3.3.2-8] */
    case MQTT_PROP_MAXIMUM_QOS:
        pr->maximum_qos = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_RETAIN_AVAILABLE:
        pr->retain_available = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_MAXIMUM_PACKET_SIZE:
        pr->maximum_packet_size = v->n;
        return v->n == 0 ? PE : 0; /* §3.1.2.11.4 */
    case MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE:
        pr->wildcard_subscription_available = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE:
        pr->subscription_identifier_available = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    case MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE:
        pr->shared_subscription_available = (uint8_t)v->n;
        return v->n > 1 ? PE : 0;
    default:
        return MQTT_RC_MALFORMED_PACKET;
    }
}

uint8_t mqtt_props_decode(mqtt_iter *r, uint8_t ptype, mqtt_props *props)
{
    uint32_t len;
    if (mqtt_rd_varint(r, &len) || (uint64_t)(r->end - r->p) < len)
        return MQTT_RC_MALFORMED_PACKET;
    mqtt_iter pr = {r->p, r->p + len};
    r->p += len;
    while (pr.p < pr.end) {
        /* The identifier is a Variable Byte Integer, but every defined id
         * fits in one byte: a byte >= 0x80 can only start an unknown id. */
        uint8_t id = *pr.p++;
        int type = prop_type(id);
        if (type == T_NONE || !(prop_table[id].packets & P(ptype)))
            return MQTT_RC_MALFORMED_PACKET; /* §2.2.2.2 */
        prop_value v = {0, {NULL, 0}};
        uint8_t rc = read_value(&pr, type, &v);
        if (rc)
            return rc;
        rc = store(props, ptype, id, &v);
        if (rc)
            return rc;
    }
    if (props->user_count)
        props->user = (mqtt_bytes){pr.end - len, len};
    return 0;
}

/* ---- user properties --------------------------------------------------- */

/* Steps over one encoded property entry at it->p; returns its id (0 if the
 * region is malformed) and leaves name/value set for a user property. */
static uint8_t next_entry(mqtt_iter *it, mqtt_bytes *name, mqtt_bytes *value)
{
    if (it->p >= it->end)
        return 0;
    uint8_t id = *it->p++;
    int type = prop_type(id);
    if (type == T_PAIR) {
        if (mqtt_rd_binary(it, name) || mqtt_rd_binary(it, value))
            return 0;
        return id;
    }
    prop_value v;
    if (type == T_NONE || read_value(it, type, &v))
        return 0;
    return id;
}

void mqtt_user_props_iter(const mqtt_props *props, mqtt_iter *it)
{
    if (props->user_count && props->user.len) {
        it->p = props->user.p;
        it->end = props->user.p + props->user.len;
    } else {
        it->p = it->end = NULL;
    }
}

bool mqtt_user_props_next(mqtt_iter *it, mqtt_bytes *name, mqtt_bytes *value)
{
    for (;;) {
        uint8_t id = next_entry(it, name, value);
        if (id == MQTT_PROP_USER_PROPERTY)
            return true;
        if (id == 0) {
            it->p = it->end;
            return false;
        }
    }
}

bool mqtt_user_props_append(uint8_t *block, size_t cap, size_t *len,
                            mqtt_bytes name, mqtt_bytes value)
{
    if (name.len > 0xFFFF || value.len > 0xFFFF)
        return false;
    size_t need = 5 + (size_t)name.len + value.len;
    if (*len > cap || cap - *len < need)
        return false;
    uint8_t *o = block + *len;
    *o++ = MQTT_PROP_USER_PROPERTY;
    o = mqtt_wr_bytes(o, name);
    mqtt_wr_bytes(o, value);
    *len += need;
    return true;
}

/* ---- encoding ----------------------------------------------------------- */

/* Bytes of the 0x26 entries of the user region. */
static uint64_t user_size(const mqtt_props *pr)
{
    if (!pr->user_count)
        return 0;
    mqtt_iter it;
    mqtt_user_props_iter(pr, &it);
    uint64_t n = 0;
    mqtt_bytes k = {NULL, 0}, v = {NULL, 0};
    while (mqtt_user_props_next(&it, &k, &v))
        n += 5 + (uint64_t)k.len + v.len;
    return n;
}

static const mqtt_bytes *str_field(const mqtt_props *pr, unsigned id)
{
    switch (id) {
    case MQTT_PROP_CONTENT_TYPE: return &pr->content_type;
    case MQTT_PROP_RESPONSE_TOPIC: return &pr->response_topic;
    case MQTT_PROP_CORRELATION_DATA: return &pr->correlation_data;
    case MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER:
        return &pr->assigned_client_identifier;
    case MQTT_PROP_AUTHENTICATION_METHOD: return &pr->authentication_method;
    case MQTT_PROP_AUTHENTICATION_DATA: return &pr->authentication_data;
    case MQTT_PROP_RESPONSE_INFORMATION: return &pr->response_information;
    case MQTT_PROP_SERVER_REFERENCE: return &pr->server_reference;
    case MQTT_PROP_REASON_STRING: return &pr->reason_string;
    default: return NULL;
    }
}

static uint32_t num_field(const mqtt_props *pr, unsigned id)
{
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR: return pr->payload_format_indicator;
    case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL: return pr->message_expiry_interval;
    case MQTT_PROP_SESSION_EXPIRY_INTERVAL: return pr->session_expiry_interval;
    case MQTT_PROP_SERVER_KEEP_ALIVE: return pr->server_keep_alive;
    case MQTT_PROP_REQUEST_PROBLEM_INFORMATION:
        return pr->request_problem_information;
    case MQTT_PROP_WILL_DELAY_INTERVAL: return pr->will_delay_interval;
    case MQTT_PROP_REQUEST_RESPONSE_INFORMATION:
        return pr->request_response_information;
    case MQTT_PROP_RECEIVE_MAXIMUM: return pr->receive_maximum;
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM: return pr->topic_alias_maximum;
    case MQTT_PROP_TOPIC_ALIAS: return pr->topic_alias;
    case MQTT_PROP_MAXIMUM_QOS: return pr->maximum_qos;
    case MQTT_PROP_RETAIN_AVAILABLE: return pr->retain_available;
    case MQTT_PROP_MAXIMUM_PACKET_SIZE: return pr->maximum_packet_size;
    case MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE:
        return pr->wildcard_subscription_available;
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE:
        return pr->subscription_identifier_available;
    case MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE:
        return pr->shared_subscription_available;
    default: return 0;
    }
}

uint64_t mqtt_props_body_size(const mqtt_props *pr)
{
    uint64_t n = 0;
    uint64_t bits = pr->present & SINGLE_MASK;
    while (bits) {
        unsigned id = (unsigned)__builtin_ctzll(bits);
        bits &= bits - 1;
        switch (prop_table[id].type) {
        case T_BYTE: n += 2; break;
        case T_U16: n += 3; break;
        case T_U32: n += 5; break;
        default: {
            const mqtt_bytes *s = str_field(pr, id);
            if (s->len > 0xFFFF)
                return UINT64_MAX;
            n += 3 + (uint64_t)s->len;
        }
        }
    }
    if (pr->subscription_identifier_count > MQTT_MAX_SUB_IDS)
        return UINT64_MAX;
    for (unsigned i = 0; i < pr->subscription_identifier_count; i++) {
        int k = mqtt_varint_size(pr->subscription_identifier[i]);
        if (!k)
            return UINT64_MAX;
        n += 1 + (unsigned)k;
    }
    n += user_size(pr);
    return n > MQTT_MAX_REMAINING_LENGTH ? UINT64_MAX : n;
}

size_t mqtt_props_encoded_size(const mqtt_props *props)
{
    uint64_t n = mqtt_props_body_size(props);
    if (n == UINT64_MAX)
        return 0;
    return (size_t)n + (size_t)mqtt_varint_size((uint32_t)n);
}

uint8_t *mqtt_props_write(const mqtt_props *pr, uint32_t body_size,
                          uint8_t *o)
{
    o = mqtt_wr_varint(o, body_size);
    uint64_t bits = pr->present & SINGLE_MASK;
    while (bits) {
        unsigned id = (unsigned)__builtin_ctzll(bits);
        bits &= bits - 1;
        *o++ = (uint8_t)id;
        switch (prop_table[id].type) {
        case T_BYTE: *o++ = (uint8_t)num_field(pr, id); break;
        case T_U16: o = mqtt_wr_u16(o, (uint16_t)num_field(pr, id)); break;
        case T_U32: o = mqtt_wr_u32(o, num_field(pr, id)); break;
        default: o = mqtt_wr_bytes(o, *str_field(pr, id)); break;
        }
    }
    for (unsigned i = 0; i < pr->subscription_identifier_count; i++) {
        *o++ = MQTT_PROP_SUBSCRIPTION_IDENTIFIER;
        o = mqtt_wr_varint(o, pr->subscription_identifier[i]);
    }
    if (pr->user_count) {
        mqtt_iter it;
        mqtt_user_props_iter(pr, &it);
        const uint8_t *start = it.p;
        mqtt_bytes k = {NULL, 0}, v = {NULL, 0};
        while (start < it.end) {
            /* Copy each 0x26 entry verbatim, skip the others. */
            uint8_t id = next_entry(&it, &k, &v);
            if (id == 0)
                break;
            if (id == MQTT_PROP_USER_PROPERTY)
                o = mqtt_wr_raw(o, start, (size_t)(it.p - start));
            start = it.p;
        }
    }
    return o;
}

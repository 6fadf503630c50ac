/*
 * mqtt/compare.c — field-by-field equality of two packets.
 *
 * Design: used by the round-trip tests and the fuzz target to check that
 * decode(encode(p)) == p. It compares what the packet means, not how it
 * is held in memory: slices by content, user properties by iterating them
 * (a decoded region holding other properties equals a block built with
 * mqtt_user_props_append), SUBSCRIBE/UNSUBSCRIBE entries given as an
 * encoder `list` or as a decoded region by iterating both, and the present
 * bit of Subscription Identifier is ignored (the count says it all).
 * Fields that do not exist in 3.1.1 (properties, ack reason codes) are
 * not compared for version MQTT_V311.
 */
#include <string.h>

#include "mqtt/codec.h"

static bool beq(mqtt_bytes a, mqtt_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool props_eq(const mqtt_props *a, const mqtt_props *b)
{
    const uint64_t ign = MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_IDENTIFIER) |
                         MQTT_PROP_BIT(MQTT_PROP_USER_PROPERTY);
    if ((a->present & ~ign) != (b->present & ~ign))
        return false;
#define N(f, id) (MQTT_HAS(a, id) && a->f != b->f)
#define S(f, id) (MQTT_HAS(a, id) && !beq(a->f, b->f))
    if (N(payload_format_indicator, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR) ||
        N(request_problem_information, MQTT_PROP_REQUEST_PROBLEM_INFORMATION) ||
        N(request_response_information, MQTT_PROP_REQUEST_RESPONSE_INFORMATION) ||
        N(maximum_qos, MQTT_PROP_MAXIMUM_QOS) ||
        N(retain_available, MQTT_PROP_RETAIN_AVAILABLE) ||
        N(wildcard_subscription_available,
          MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE) ||
        N(subscription_identifier_available,
          MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE) ||
        N(shared_subscription_available,
          MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE) ||
        N(server_keep_alive, MQTT_PROP_SERVER_KEEP_ALIVE) ||
        N(receive_maximum, MQTT_PROP_RECEIVE_MAXIMUM) ||
        N(topic_alias_maximum, MQTT_PROP_TOPIC_ALIAS_MAXIMUM) ||
        N(topic_alias, MQTT_PROP_TOPIC_ALIAS) ||
        N(message_expiry_interval, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL) ||
        N(session_expiry_interval, MQTT_PROP_SESSION_EXPIRY_INTERVAL) ||
        N(will_delay_interval, MQTT_PROP_WILL_DELAY_INTERVAL) ||
        N(maximum_packet_size, MQTT_PROP_MAXIMUM_PACKET_SIZE) ||
        S(content_type, MQTT_PROP_CONTENT_TYPE) ||
        S(response_topic, MQTT_PROP_RESPONSE_TOPIC) ||
        S(correlation_data, MQTT_PROP_CORRELATION_DATA) ||
        S(assigned_client_identifier, MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER) ||
        S(authentication_method, MQTT_PROP_AUTHENTICATION_METHOD) ||
        S(authentication_data, MQTT_PROP_AUTHENTICATION_DATA) ||
        S(response_information, MQTT_PROP_RESPONSE_INFORMATION) ||
        S(server_reference, MQTT_PROP_SERVER_REFERENCE) ||
        S(reason_string, MQTT_PROP_REASON_STRING))
        return false;
#undef N
#undef S
    if (a->subscription_identifier_count != b->subscription_identifier_count)
        return false;
    for (unsigned i = 0; i < a->subscription_identifier_count && i < MQTT_MAX_SUB_IDS; i++)
        if (a->subscription_identifier[i] != b->subscription_identifier[i])
            return false;
    mqtt_iter ia, ib;
    mqtt_user_props_iter(a, &ia);
    mqtt_user_props_iter(b, &ib);
    mqtt_bytes ka, va, kb, vb;
    uint32_t n = 0;
    for (;;) {
        bool ha = mqtt_user_props_next(&ia, &ka, &va);
        bool hb = mqtt_user_props_next(&ib, &kb, &vb);
        if (ha != hb)
            return false;
        if (!ha)
            break;
        if (!beq(ka, kb) || !beq(va, vb))
            return false;
        n++;
    }
    return n == a->user_count && n == b->user_count;
}

/* Entry i of a SUBSCRIBE given either way. */
typedef struct {
    const mqtt_subscribe *s;
    uint32_t i;
    mqtt_iter it;
} sub_cursor;

static bool sub_next(sub_cursor *c, mqtt_sub_entry *e)
{
    if (c->s->list) {
        if (c->i >= c->s->count)
            return false;
        *e = c->s->list[c->i++];
        return true;
    }
    if (!mqtt_subscribe_next(&c->it, e))
        return false;
    c->i++;
    return true;
}

static bool subscribe_eq(const mqtt_subscribe *a, const mqtt_subscribe *b)
{
    if (a->packet_id != b->packet_id || a->count != b->count)
        return false;
    sub_cursor ca = {a, 0, {NULL, NULL}}, cb = {b, 0, {NULL, NULL}};
    mqtt_subscribe_iter(a, &ca.it);
    mqtt_subscribe_iter(b, &cb.it);
    mqtt_sub_entry ea, eb;
    for (;;) {
        bool ha = sub_next(&ca, &ea), hb = sub_next(&cb, &eb);
        if (ha != hb)
            return false;
        if (!ha)
            return ca.i == a->count;
        if (!beq(ea.filter, eb.filter) || ea.options != eb.options)
            return false;
    }
}

typedef struct {
    const mqtt_unsubscribe *u;
    uint32_t i;
    mqtt_iter it;
} unsub_cursor;

static bool unsub_next(unsub_cursor *c, mqtt_bytes *f)
{
    if (c->u->list) {
        if (c->i >= c->u->count)
            return false;
        *f = c->u->list[c->i++];
        return true;
    }
    if (!mqtt_unsubscribe_next(&c->it, f))
        return false;
    c->i++;
    return true;
}

static bool unsubscribe_eq(const mqtt_unsubscribe *a, const mqtt_unsubscribe *b)
{
    if (a->packet_id != b->packet_id || a->count != b->count)
        return false;
    unsub_cursor ca = {a, 0, {NULL, NULL}}, cb = {b, 0, {NULL, NULL}};
    mqtt_unsubscribe_iter(a, &ca.it);
    mqtt_unsubscribe_iter(b, &cb.it);
    mqtt_bytes fa, fb;
    for (;;) {
        bool ha = unsub_next(&ca, &fa), hb = unsub_next(&cb, &fb);
        if (ha != hb)
            return false;
        if (!ha)
            return ca.i == a->count;
        if (!beq(fa, fb))
            return false;
    }
}

bool mqtt_packet_equal(const mqtt_packet *a, const mqtt_packet *b,
                       uint8_t version)
{
    const bool v5 = version == MQTT_V5;
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case MQTT_CONNECT: {
        const mqtt_connect *x = &a->u.connect, *y = &b->u.connect;
        bool v5c = x->protocol_version == MQTT_V5;
        if (x->protocol_version != y->protocol_version ||
            x->clean_start != y->clean_start || x->keep_alive != y->keep_alive ||
            !beq(x->client_id, y->client_id) || x->will_flag != y->will_flag ||
            x->username_flag != y->username_flag ||
            x->password_flag != y->password_flag ||
            (v5c && !props_eq(&x->props, &y->props)))
            return false;
        if (x->will_flag &&
            (x->will_qos != y->will_qos || x->will_retain != y->will_retain ||
             !beq(x->will_topic, y->will_topic) ||
             !beq(x->will_payload, y->will_payload) ||
             (v5c && !props_eq(&x->will_props, &y->will_props))))
            return false;
        if (x->username_flag && !beq(x->username, y->username))
            return false;
        if (x->password_flag && !beq(x->password, y->password))
            return false;
        return true;
    }
    case MQTT_CONNACK:
        return a->u.connack.session_present == b->u.connack.session_present &&
               a->u.connack.reason == b->u.connack.reason &&
               (!v5 || props_eq(&a->u.connack.props, &b->u.connack.props));
    case MQTT_PUBLISH: {
        const mqtt_publish *x = &a->u.publish, *y = &b->u.publish;
        return x->qos == y->qos && x->dup == y->dup && x->retain == y->retain &&
               beq(x->topic, y->topic) &&
               (x->qos == 0 || x->packet_id == y->packet_id) &&
               beq(x->payload, y->payload) &&
               (!v5 || props_eq(&x->props, &y->props));
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return a->u.ack.packet_id == b->u.ack.packet_id &&
               (!v5 || (a->u.ack.reason == b->u.ack.reason &&
                        props_eq(&a->u.ack.props, &b->u.ack.props)));
    case MQTT_SUBSCRIBE:
        return subscribe_eq(&a->u.subscribe, &b->u.subscribe) &&
               (!v5 || props_eq(&a->u.subscribe.props, &b->u.subscribe.props));
    case MQTT_UNSUBSCRIBE:
        return unsubscribe_eq(&a->u.unsubscribe, &b->u.unsubscribe) &&
               (!v5 ||
                props_eq(&a->u.unsubscribe.props, &b->u.unsubscribe.props));
    case MQTT_SUBACK:
    case MQTT_UNSUBACK: {
        const mqtt_suback *x = &a->u.suback, *y = &b->u.suback;
        if (x->packet_id != y->packet_id)
            return false;
        if (!v5 && a->type == MQTT_UNSUBACK)
            return true;
        return x->count == y->count &&
               (x->count == 0 || memcmp(x->reasons, y->reasons, x->count) == 0) &&
               (!v5 || props_eq(&x->props, &y->props));
    }
    case MQTT_DISCONNECT:
    case MQTT_AUTH: {
        const mqtt_reason_packet *x =
            a->type == MQTT_AUTH ? &a->u.auth : &a->u.disconnect;
        const mqtt_reason_packet *y =
            a->type == MQTT_AUTH ? &b->u.auth : &b->u.disconnect;
        return !v5 || (x->reason == y->reason && props_eq(&x->props, &y->props));
    }
    default:
        return true;
    }
}

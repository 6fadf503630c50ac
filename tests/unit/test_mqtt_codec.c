/*
 * tests/unit/test_mqtt_codec.c — the MQTT codec end to end: every packet
 * type round-trips in 5.0 and 3.1.1 with every property it may carry;
 * hand-written byte vectors decode and re-encode byte for byte; a table of
 * malformed / protocol-error packets each yields its reason code.
 *
 * Packets in the tables are hex strings: "TT | body" (the Remaining Length
 * is computed and inserted) or "!raw bytes" (taken as is).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/codec.h"

/* ---- helpers ------------------------------------------------------------ */

static size_t parse_hex(const char *s, uint8_t *out)
{
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            continue;
        if (hi < 0) {
            hi = d;
        } else {
            out[n++] = (uint8_t)(hi << 4 | d);
            hi = -1;
        }
    }
    return n;
}

/* Builds a packet from a "TT | body" or "!raw" spec. */
static size_t build(const char *spec, uint8_t *out)
{
    if (spec[0] == '!')
        return parse_hex(spec + 1, out);
    const char *bar = strchr(spec, '|');
    assert_non_null(bar);
    uint8_t hdr[4];
    char tmp[8] = {0};
    memcpy(tmp, spec, (size_t)(bar - spec) < 7 ? (size_t)(bar - spec) : 7);
    assert_int_equal(parse_hex(tmp, hdr), 1);
    uint8_t body[4096];
    size_t bl = parse_hex(bar + 1, body);
    out[0] = hdr[0];
    int k = mqtt_varint_encode((uint32_t)bl, out + 1);
    memcpy(out + 1 + k, body, bl);
    return 1 + (size_t)k + bl;
}

static void assert_bytes_eq(mqtt_bytes b, const char *s)
{
    assert_int_equal(b.len, strlen(s));
    if (b.len)
        assert_memory_equal(b.p, s, b.len);
}

static mqtt_bytes B(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

/* Encodes, checks size agreement and framing, decodes, compares, re-encodes
 * and checks identical bytes. Returns the encoded length; the bytes are
 * left in `buf` and the decoded packet in `out`. */
static size_t roundtrip(const mqtt_packet *p, uint8_t v, uint8_t *buf,
                        size_t cap, mqtt_packet *out)
{
    size_t n = mqtt_encoded_size(p, v);
    assert_true(n > 0 && n <= cap);
    memset(buf, 0xEE, cap);
    assert_int_equal(mqtt_encode(p, v, buf), n);
    mqtt_frame f;
    assert_int_equal(mqtt_frame_parse(buf, n, 0, &f), MQTT_FRAME_OK);
    assert_int_equal(f.total_len, n);
    assert_int_equal(f.type, p->type);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mqtt_frame_parse(buf, i, 0, &f), MQTT_FRAME_NEED_MORE);
    uint8_t rc = mqtt_decode(buf, n, v, out);
    if (rc)
        fail_msg("decode of %s v%d failed: 0x%02x", mqtt_packet_type_name(p->type),
                 v, rc);
    assert_int_equal(out->type, p->type);
    assert_true(mqtt_packet_equal(p, out, v));
    assert_true(mqtt_packet_equal(out, p, v));
    uint8_t again[8192];
    assert_true(n <= sizeof again);
    assert_int_equal(mqtt_encoded_size(out, v), n);
    assert_int_equal(mqtt_encode(out, v, again), n);
    assert_memory_equal(buf, again, n);
    return n;
}

/* ---- packets with every property --------------------------------------- */

static uint8_t ublock[512];

static void add_users(mqtt_props *p)
{
    size_t len = 0;
    assert_true(mqtt_user_props_append(ublock, sizeof ublock, &len, B("k1"), B("v1")));
    assert_true(mqtt_user_props_append(ublock, sizeof ublock, &len, B("k2"), B("")));
    assert_true(mqtt_user_props_append(ublock, sizeof ublock, &len, B("k1"),
                                       B("v3 \xc3\xbc\xf0\x9f\x98\x80")));
    p->user = (mqtt_bytes){ublock, (uint32_t)len};
    p->user_count = 3;
}

#define SETN(p, id, field, val)                                               \
    do {                                                                      \
        MQTT_SET(p, id);                                                      \
        (p)->field = (val);                                                   \
    } while (0)

/* Sets every property packet type `t` (or MQTT_PROPS_WILL) may carry
 * (table 2-4 of MQTT 5, restated here independently of props.c). */
static void fill_props(mqtt_props *p, int t)
{
    memset(p, 0, sizeof *p);
    add_users(p);
    switch (t) {
    case MQTT_CONNECT:
        SETN(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, session_expiry_interval, 3600);
        SETN(p, MQTT_PROP_AUTHENTICATION_METHOD, authentication_method, B("SCRAM-SHA-1"));
        SETN(p, MQTT_PROP_AUTHENTICATION_DATA, authentication_data,
             ((mqtt_bytes){(const uint8_t *)"\x00\x01\xff", 3}));
        SETN(p, MQTT_PROP_REQUEST_PROBLEM_INFORMATION, request_problem_information, 0);
        SETN(p, MQTT_PROP_REQUEST_RESPONSE_INFORMATION, request_response_information, 1);
        SETN(p, MQTT_PROP_RECEIVE_MAXIMUM, receive_maximum, 20);
        SETN(p, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, topic_alias_maximum, 10);
        SETN(p, MQTT_PROP_MAXIMUM_PACKET_SIZE, maximum_packet_size, 65536);
        break;
    case MQTT_CONNACK:
        SETN(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, session_expiry_interval, 0xFFFFFFFF);
        SETN(p, MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER, assigned_client_identifier, B("auto-1"));
        SETN(p, MQTT_PROP_SERVER_KEEP_ALIVE, server_keep_alive, 120);
        SETN(p, MQTT_PROP_AUTHENTICATION_METHOD, authentication_method, B("SCRAM-SHA-1"));
        SETN(p, MQTT_PROP_AUTHENTICATION_DATA, authentication_data, B("srv"));
        SETN(p, MQTT_PROP_RESPONSE_INFORMATION, response_information, B("resp/"));
        SETN(p, MQTT_PROP_SERVER_REFERENCE, server_reference, B("other:1883"));
        SETN(p, MQTT_PROP_REASON_STRING, reason_string, B("ok"));
        SETN(p, MQTT_PROP_RECEIVE_MAXIMUM, receive_maximum, 65535);
        SETN(p, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, topic_alias_maximum, 0);
        SETN(p, MQTT_PROP_MAXIMUM_QOS, maximum_qos, 1);
        SETN(p, MQTT_PROP_RETAIN_AVAILABLE, retain_available, 0);
        SETN(p, MQTT_PROP_MAXIMUM_PACKET_SIZE, maximum_packet_size, 268435460);
        SETN(p, MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE, wildcard_subscription_available, 1);
        SETN(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE, subscription_identifier_available, 0);
        SETN(p, MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE, shared_subscription_available, 1);
        break;
    case MQTT_PUBLISH:
        SETN(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, payload_format_indicator, 1);
        SETN(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, message_expiry_interval, 60);
        SETN(p, MQTT_PROP_CONTENT_TYPE, content_type, B("text/plain"));
        SETN(p, MQTT_PROP_RESPONSE_TOPIC, response_topic, B("reply/to/me"));
        SETN(p, MQTT_PROP_CORRELATION_DATA, correlation_data,
             ((mqtt_bytes){(const uint8_t *)"\x00\x80\xff", 3}));
        SETN(p, MQTT_PROP_TOPIC_ALIAS, topic_alias, 5);
        p->subscription_identifier_count = 3;
        p->subscription_identifier[0] = 1;
        p->subscription_identifier[1] = 268435455;
        p->subscription_identifier[2] = 300;
        break;
    case MQTT_PROPS_WILL:
        SETN(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, payload_format_indicator, 1);
        SETN(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, message_expiry_interval, 10);
        SETN(p, MQTT_PROP_CONTENT_TYPE, content_type, B("application/json"));
        SETN(p, MQTT_PROP_RESPONSE_TOPIC, response_topic, B("will/resp"));
        SETN(p, MQTT_PROP_CORRELATION_DATA, correlation_data, B("corr"));
        SETN(p, MQTT_PROP_WILL_DELAY_INTERVAL, will_delay_interval, 30);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        SETN(p, MQTT_PROP_REASON_STRING, reason_string, B("because"));
        break;
    case MQTT_SUBSCRIBE:
        p->subscription_identifier_count = 1;
        p->subscription_identifier[0] = 16384;
        break;
    case MQTT_UNSUBSCRIBE:
        break;
    case MQTT_DISCONNECT:
        SETN(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, session_expiry_interval, 0);
        SETN(p, MQTT_PROP_SERVER_REFERENCE, server_reference, B("elsewhere"));
        SETN(p, MQTT_PROP_REASON_STRING, reason_string, B("bye"));
        break;
    case MQTT_AUTH:
        SETN(p, MQTT_PROP_AUTHENTICATION_METHOD, authentication_method, B("SCRAM-SHA-1"));
        SETN(p, MQTT_PROP_AUTHENTICATION_DATA, authentication_data, B("c=biws"));
        SETN(p, MQTT_PROP_REASON_STRING, reason_string, B("more"));
        break;
    }
}

static const mqtt_sub_entry sub_list[] = {
    {{(const uint8_t *)"sport/#", 7}, 0x00},
    {{(const uint8_t *)"+/temp", 6}, 0x01},
    {{(const uint8_t *)"a/b", 3}, 0x02 | MQTT_SUBOPT_NO_LOCAL | MQTT_SUBOPT_RETAIN_AS_PUBLISHED | 0x20},
    {{(const uint8_t *)"$share/g/x", 10}, 0x01 | 0x10},
};
static const mqtt_sub_entry sub_list311[] = {
    {{(const uint8_t *)"sport/#", 7}, 0},
    {{(const uint8_t *)"+/temp", 6}, 1},
    {{(const uint8_t *)"a/b", 3}, 2},
};
static const mqtt_bytes unsub_list[] = {
    {(const uint8_t *)"sport/#", 7},
    {(const uint8_t *)"x", 1},
    {(const uint8_t *)"\xc3\xa9t\xc3\xa9", 5},
};
static const uint8_t suback_rc5[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F,
                                     0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t suback_rc311[] = {0x00, 0x01, 0x02, 0x80};
static const uint8_t unsuback_rc5[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};

/* The variant-th packet of type t for version v (variant 0 has every
 * property); returns false when there is no such variant. */
static bool make_packet(int t, int variant, uint8_t v, mqtt_packet *p)
{
    memset(p, 0, sizeof *p);
    p->type = (uint8_t)t;
    const bool v5 = v == MQTT_V5;
    switch (t) {
    case MQTT_CONNECT: {
        mqtt_connect *c = &p->u.connect;
        if (variant > 3)
            return false;
        c->protocol_version = v;
        c->protocol_name = B("MQTT");
        c->keep_alive = (uint16_t)(variant * 1000 + 60);
        c->clean_start = variant != 1;
        c->client_id = variant == 2 ? B("") : B("client-\xe2\x82\xac");
        if (variant == 0 || variant == 3) {
            c->will_flag = true;
            c->will_qos = variant == 0 ? 2 : 1;
            c->will_retain = variant == 0;
            c->will_topic = B("will/topic");
            c->will_payload = B("gone \xc3\xa0 away");
            fill_props(&c->will_props, MQTT_PROPS_WILL);
        }
        if (variant != 1) {
            c->username_flag = true;
            c->username = B("user");
            c->password_flag = true;
            c->password = (mqtt_bytes){(const uint8_t *)"p\x00ss\xff", 5};
        }
        if (variant == 3 && v5) { /* 5.0 allows a password without a user */
            c->username_flag = false;
            c->username = B("");
        }
        if (variant == 0)
            fill_props(&c->props, MQTT_CONNECT);
        return true;
    }
    case MQTT_CONNACK:
        if (variant > 2)
            return false;
        p->u.connack.session_present = variant == 0;
        p->u.connack.reason = variant == 0 ? 0 : v5 ? (variant == 1 ? 0x87 : 0x9C) : (uint8_t)(variant + 3);
        if (variant == 0)
            fill_props(&p->u.connack.props, MQTT_CONNACK);
        return true;
    case MQTT_PUBLISH: {
        mqtt_publish *pb = &p->u.publish;
        if (variant > 4)
            return false;
        pb->qos = (uint8_t)(variant % 3);
        pb->retain = variant & 1;
        pb->dup = pb->qos && variant >= 2;
        pb->packet_id = pb->qos ? (uint16_t)(variant == 1 ? 1 : 65535) : 0;
        pb->topic = B("sensors/\xc3\xa9t\xc3\xa9/temp");
        pb->payload = variant == 3 ? B("") : B("21.5 \xc2\xb0""C");
        if (variant == 0)
            fill_props(&pb->props, MQTT_PUBLISH);
        if (variant == 4 && v5) { /* empty topic with a Topic Alias */
            pb->topic = B("");
            MQTT_SET(&pb->props, MQTT_PROP_TOPIC_ALIAS);
            pb->props.topic_alias = 65535;
        }
        return true;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        if (variant > 2)
            return false;
        p->u.ack.packet_id = (uint16_t)(variant + 7);
        if (v5 && variant >= 1)
            p->u.ack.reason = (t == MQTT_PUBREL || t == MQTT_PUBCOMP) ? 0x92 : 0x10;
        if (variant == 2)
            fill_props(&p->u.ack.props, t);
        return true;
    case MQTT_SUBSCRIBE:
        if (variant > 1)
            return false;
        p->u.subscribe.packet_id = 10;
        p->u.subscribe.list = v5 ? sub_list : sub_list311;
        p->u.subscribe.count = v5 ? 4 : 3;
        if (variant == 1)
            p->u.subscribe.count = 1;
        else
            fill_props(&p->u.subscribe.props, MQTT_SUBSCRIBE);
        return true;
    case MQTT_UNSUBSCRIBE:
        if (variant > 1)
            return false;
        p->u.unsubscribe.packet_id = 11;
        p->u.unsubscribe.list = unsub_list;
        p->u.unsubscribe.count = variant ? 1 : 3;
        if (variant == 0)
            fill_props(&p->u.unsubscribe.props, MQTT_UNSUBSCRIBE);
        return true;
    case MQTT_SUBACK:
        if (variant > 1)
            return false;
        p->u.suback.packet_id = 10;
        p->u.suback.reasons = v5 ? suback_rc5 : suback_rc311;
        p->u.suback.count = variant ? 1 : v5 ? sizeof suback_rc5 : sizeof suback_rc311;
        if (variant == 0)
            fill_props(&p->u.suback.props, MQTT_SUBACK);
        return true;
    case MQTT_UNSUBACK:
        if (variant > 1)
            return false;
        p->u.suback.packet_id = 11;
        if (v5) {
            p->u.suback.reasons = unsuback_rc5;
            p->u.suback.count = variant ? 1 : sizeof unsuback_rc5;
            if (variant == 0)
                fill_props(&p->u.suback.props, MQTT_UNSUBACK);
        }
        return true;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        return variant == 0;
    case MQTT_DISCONNECT:
    case MQTT_AUTH: {
        if (t == MQTT_AUTH && !v5)
            return false;
        if (variant > 2)
            return false;
        mqtt_reason_packet *d = t == MQTT_AUTH ? &p->u.auth : &p->u.disconnect;
        if (v5 && variant >= 1)
            d->reason = t == MQTT_AUTH ? 0x18 : 0x04;
        if (variant == 2)
            fill_props(&d->props, t);
        return true;
    }
    }
    return false;
}

static void test_roundtrip_all_types(void **state)
{
    (void)state;
    static uint8_t buf[8192];
    int total = 0;
    for (uint8_t v = MQTT_V311; v <= MQTT_V5; v++) {
        for (int t = MQTT_CONNECT; t <= MQTT_AUTH; t++) {
            int variants = 0;
            mqtt_packet p, d;
            for (int var = 0; make_packet(t, var, v, &p); var++) {
                roundtrip(&p, v, buf, sizeof buf, &d);
                variants++;
            }
            if (!(t == MQTT_AUTH && v == MQTT_V311))
                assert_true(variants >= 1);
            total += variants;
        }
    }
    assert_true(total >= 50);
}

/* The decoded packet has every property, in the right fields. */
static void test_roundtrip_publish_fields(void **state)
{
    (void)state;
    uint8_t buf[1024];
    mqtt_packet p, d;
    make_packet(MQTT_PUBLISH, 0, MQTT_V5, &p);
    roundtrip(&p, MQTT_V5, buf, sizeof buf, &d);
    const mqtt_props *pr = &d.u.publish.props;
    assert_int_equal(pr->payload_format_indicator, 1);
    assert_int_equal(pr->message_expiry_interval, 60);
    assert_bytes_eq(pr->content_type, "text/plain");
    assert_bytes_eq(pr->response_topic, "reply/to/me");
    assert_int_equal(pr->correlation_data.len, 3);
    assert_int_equal(pr->topic_alias, 5);
    assert_int_equal(pr->subscription_identifier_count, 3);
    assert_int_equal(pr->subscription_identifier[1], 268435455);
    assert_true(MQTT_HAS(pr, MQTT_PROP_SUBSCRIPTION_IDENTIFIER));
    assert_int_equal(pr->user_count, 3);
    mqtt_iter it;
    mqtt_bytes k, val;
    mqtt_user_props_iter(pr, &it);
    assert_true(mqtt_user_props_next(&it, &k, &val));
    assert_bytes_eq(k, "k1");
    assert_bytes_eq(val, "v1");
    assert_true(mqtt_user_props_next(&it, &k, &val));
    assert_bytes_eq(k, "k2");
    assert_bytes_eq(val, "");
    assert_true(mqtt_user_props_next(&it, &k, &val));
    assert_bytes_eq(k, "k1");
    assert_bytes_eq(val, "v3 \xc3\xbc\xf0\x9f\x98\x80");
    assert_false(mqtt_user_props_next(&it, &k, &val));
    assert_int_equal(d.u.publish.qos, 0);
    assert_bytes_eq(d.u.publish.payload, "21.5 \xc2\xb0""C");
    assert_bytes_eq(d.u.publish.topic, "sensors/\xc3\xa9t\xc3\xa9/temp");
}

static void test_roundtrip_connect_fields(void **state)
{
    (void)state;
    uint8_t buf[1024];
    mqtt_packet p, d;
    make_packet(MQTT_CONNECT, 0, MQTT_V5, &p);
    roundtrip(&p, MQTT_V5, buf, sizeof buf, &d);
    const mqtt_connect *c = &d.u.connect;
    assert_int_equal(c->protocol_version, 5);
    assert_bytes_eq(c->protocol_name, "MQTT");
    assert_true(c->will_flag && c->will_retain && c->clean_start);
    assert_int_equal(c->will_qos, 2);
    assert_int_equal(c->will_props.will_delay_interval, 30);
    assert_int_equal(c->will_props.user_count, 3);
    assert_int_equal(c->props.receive_maximum, 20);
    assert_int_equal(c->props.maximum_packet_size, 65536);
    assert_bytes_eq(c->props.authentication_method, "SCRAM-SHA-1");
    assert_int_equal(c->password.len, 5);
    /* The decoded CONNECT says which version it is. */
    uint8_t b311[512];
    make_packet(MQTT_CONNECT, 0, MQTT_V311, &p);
    size_t n = roundtrip(&p, MQTT_V311, b311, sizeof b311, &d);
    assert_int_equal(mqtt_decode(b311, n, MQTT_V5, &d), 0);
    assert_int_equal(d.u.connect.protocol_version, MQTT_V311);
    assert_int_equal(d.u.connect.props.present, 0);
}

static void test_subscribe_iter(void **state)
{
    (void)state;
    uint8_t buf[512];
    mqtt_packet p, d;
    make_packet(MQTT_SUBSCRIBE, 0, MQTT_V5, &p);
    roundtrip(&p, MQTT_V5, buf, sizeof buf, &d);
    assert_null(d.u.subscribe.list);
    assert_int_equal(d.u.subscribe.count, 4);
    assert_int_equal(d.u.subscribe.props.subscription_identifier[0], 16384);
    mqtt_iter it;
    mqtt_sub_entry e;
    mqtt_subscribe_iter(&d.u.subscribe, &it);
    for (int i = 0; i < 4; i++) {
        assert_true(mqtt_subscribe_next(&it, &e));
        assert_int_equal(e.filter.len, sub_list[i].filter.len);
        assert_memory_equal(e.filter.p, sub_list[i].filter.p, e.filter.len);
        assert_int_equal(e.options, sub_list[i].options);
    }
    assert_false(mqtt_subscribe_next(&it, &e));

    make_packet(MQTT_UNSUBSCRIBE, 0, MQTT_V311, &p);
    roundtrip(&p, MQTT_V311, buf, sizeof buf, &d);
    mqtt_bytes f;
    mqtt_unsubscribe_iter(&d.u.unsubscribe, &it);
    for (int i = 0; i < 3; i++) {
        assert_true(mqtt_unsubscribe_next(&it, &f));
        assert_int_equal(f.len, unsub_list[i].len);
    }
    assert_false(mqtt_unsubscribe_next(&it, &f));
}

/* Shortest forms (§3.4.2.1, §3.14.2.1) and 3.1.1 layouts. */
static void test_encode_short_forms(void **state)
{
    (void)state;
    uint8_t buf[64];
    mqtt_packet p;
    memset(&p, 0, sizeof p);
    p.type = MQTT_PUBACK;
    p.u.ack.packet_id = 0x1234;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 4);
    assert_memory_equal(buf, "\x40\x02\x12\x34", 4);
    p.u.ack.reason = 0x10;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 5);
    assert_memory_equal(buf, "\x40\x03\x12\x34\x10", 5);
    assert_int_equal(mqtt_encode(&p, MQTT_V311, buf), 4); /* no reason */
    p.type = MQTT_PUBREL;
    p.u.ack.reason = 0;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 4);
    assert_memory_equal(buf, "\x62\x02\x12\x34", 4);

    memset(&p, 0, sizeof p);
    p.type = MQTT_DISCONNECT;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 2);
    assert_memory_equal(buf, "\xe0\x00", 2);
    p.u.disconnect.reason = 0x8E;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 3);
    assert_memory_equal(buf, "\xe0\x01\x8e", 3);
    assert_int_equal(mqtt_encode(&p, MQTT_V311, buf), 2);

    memset(&p, 0, sizeof p);
    p.type = MQTT_AUTH;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 2);
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V311), 0);
    p.u.auth.reason = 0x19;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 4);
    assert_memory_equal(buf, "\xf0\x02\x19\x00", 4);

    memset(&p, 0, sizeof p);
    p.type = MQTT_PINGREQ;
    assert_int_equal(mqtt_encode(&p, MQTT_V311, buf), 2);
    assert_memory_equal(buf, "\xc0\x00", 2);

    /* 3.1.1 CONNACK maps 5.0 reason codes, SUBACK maps failures to 0x80. */
    memset(&p, 0, sizeof p);
    p.type = MQTT_CONNACK;
    p.u.connack.reason = MQTT_RC_BAD_USERNAME_OR_PASSWORD;
    assert_int_equal(mqtt_encode(&p, MQTT_V311, buf), 4);
    assert_memory_equal(buf, "\x20\x02\x00\x04", 4);
    p.u.connack.reason = MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;
    mqtt_encode(&p, MQTT_V311, buf);
    assert_int_equal(buf[3], 1);
    p.u.connack.reason = MQTT_RC_CLIENT_ID_NOT_VALID;
    mqtt_encode(&p, MQTT_V311, buf);
    assert_int_equal(buf[3], 2);
    p.u.connack.reason = MQTT_RC_SERVER_BUSY;
    mqtt_encode(&p, MQTT_V311, buf);
    assert_int_equal(buf[3], 3);
    p.u.connack.reason = MQTT_RC_NOT_AUTHORIZED;
    mqtt_encode(&p, MQTT_V311, buf);
    assert_int_equal(buf[3], 5);
    p.u.connack.reason = 0;
    p.u.connack.session_present = true;
    assert_int_equal(mqtt_encode(&p, MQTT_V5, buf), 5);
    assert_memory_equal(buf, "\x20\x03\x01\x00\x00", 5);

    memset(&p, 0, sizeof p);
    static const uint8_t rcs[] = {0x01, 0x87, 0x02, 0xA2};
    p.type = MQTT_SUBACK;
    p.u.suback.packet_id = 1;
    p.u.suback.reasons = rcs;
    p.u.suback.count = 4;
    assert_int_equal(mqtt_encode(&p, MQTT_V311, buf), 8);
    assert_memory_equal(buf, "\x90\x06\x00\x01\x01\x80\x02\x80", 8);
    p.type = MQTT_UNSUBACK;
    assert_int_equal(mqtt_encode(&p, MQTT_V311, buf), 4);
    assert_memory_equal(buf, "\xb0\x02\x00\x01", 4);
}

static void test_encode_limits(void **state)
{
    (void)state;
    mqtt_packet p;
    memset(&p, 0, sizeof p);
    p.type = MQTT_PUBLISH;
    p.u.publish.topic = B("t");
    static uint8_t big[70000];
    /* A 65,536-byte topic does not fit the two-byte length. */
    p.u.publish.topic = (mqtt_bytes){big, 65536};
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V5), 0);
    p.u.publish.topic = B("t");
    p.u.publish.qos = 3;
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V5), 0);
    p.u.publish.qos = 0;
    /* A payload that makes the Remaining Length exceed the maximum. */
    p.u.publish.payload = (mqtt_bytes){big, MQTT_MAX_REMAINING_LENGTH - 2};
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V311), 0);
    p.u.publish.payload.len = MQTT_MAX_REMAINING_LENGTH - 3;
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V311), 5 + (size_t)MQTT_MAX_REMAINING_LENGTH);
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V5), 0); /* + property length */
    /* Too many subscription identifiers. */
    p.u.publish.payload.len = 0;
    p.u.publish.props.subscription_identifier_count = MQTT_MAX_SUB_IDS + 1;
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V5), 0);
    p.u.publish.props.subscription_identifier_count = 1;
    p.u.publish.props.subscription_identifier[0] = MQTT_MAX_REMAINING_LENGTH + 1;
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V5), 0);
    assert_int_equal(mqtt_props_encoded_size(&p.u.publish.props), 0);
    p.u.publish.props.subscription_identifier[0] = 128;
    assert_int_equal(mqtt_props_encoded_size(&p.u.publish.props), 4);
    p.type = 0;
    assert_int_equal(mqtt_encoded_size(&p, MQTT_V5), 0);
    p.type = MQTT_PINGREQ;
    assert_int_equal(mqtt_encoded_size(&p, 3), 0);
}

/* ---- hand-written vectors ------------------------------------------------ */

static void check_vector(const char *hex, uint8_t v, mqtt_packet *d)
{
    uint8_t buf[512], again[512];
    size_t n = parse_hex(hex, buf);
    mqtt_frame f;
    assert_int_equal(mqtt_frame_parse(buf, n, 0, &f), MQTT_FRAME_OK);
    assert_int_equal(f.total_len, n);
    assert_int_equal(mqtt_decode(buf, n, v, d), 0);
    assert_int_equal(mqtt_encoded_size(d, v), n);
    assert_int_equal(mqtt_encode(d, v, again), n);
    assert_memory_equal(buf, again, n);
}

static void test_vectors(void **state)
{
    (void)state;
    mqtt_packet d;
    /* mosquitto_pub -V mqttv311 -i mosq-abcdefghi: CONNECT */
    check_vector("10 1a 00 04 4d 51 54 54 04 02 00 3c 00 0e"
                 "6d 6f 73 71 2d 61 62 63 64 65 66 67 68 69", MQTT_V311, &d);
    assert_int_equal(d.type, MQTT_CONNECT);
    assert_int_equal(d.u.connect.protocol_version, 4);
    assert_int_equal(d.u.connect.keep_alive, 60);
    assert_true(d.u.connect.clean_start);
    assert_bytes_eq(d.u.connect.client_id, "mosq-abcdefghi");

    /* mosquitto 2 (5.0), empty client id, Receive Maximum 20. */
    check_vector("10 10 00 04 4d 51 54 54 05 02 00 3c 03 21 00 14 00 00", MQTT_V5, &d);
    assert_int_equal(d.u.connect.protocol_version, 5);
    assert_int_equal(d.u.connect.props.receive_maximum, 20);
    assert_int_equal(d.u.connect.client_id.len, 0);

    /* 3.1.1 CONNECT with will, user, password (paho style). */
    check_vector("10 2a 00 04 4d 51 54 54 04 ee 00 0a 00 03 63 69 64"
                 "00 05 77 2f 74 6f 70 00 04 64 65 61 64"
                 "00 04 75 73 65 72 00 06 73 65 63 72 65 74", MQTT_V311, &d);
    assert_true(d.u.connect.will_flag && d.u.connect.will_retain);
    assert_int_equal(d.u.connect.will_qos, 1);
    assert_bytes_eq(d.u.connect.will_topic, "w/top");
    assert_bytes_eq(d.u.connect.will_payload, "dead");
    assert_bytes_eq(d.u.connect.username, "user");
    assert_bytes_eq(d.u.connect.password, "secret");

    /* CONNACK 5.0 success with Topic Alias Maximum 10 and Receive Max. */
    check_vector("20 09 00 00 06 21 00 0a 22 00 0a", MQTT_V5, &d);
    assert_int_equal(d.u.connack.props.topic_alias_maximum, 10);
    check_vector("20 02 01 00", MQTT_V311, &d);
    assert_true(d.u.connack.session_present);

    /* PUBLISH 3.1.1 QoS 1 "a/b/c" id 10 payload "hi!" */
    check_vector("32 0c 00 05 61 2f 62 2f 63 00 0a 68 69 21", MQTT_V311, &d);
    assert_int_equal(d.u.publish.qos, 1);
    assert_int_equal(d.u.publish.packet_id, 10);
    assert_bytes_eq(d.u.publish.payload, "hi!");
    /* PUBLISH 5.0 QoS 0 retain, Message Expiry 100, user property a=b */
    check_vector("31 14 00 03 61 2f 62 0c 02 00 00 00 64 26 00 01 61 00 01 62 78 79",
                 MQTT_V5, &d);
    assert_true(d.u.publish.retain);
    assert_int_equal(d.u.publish.props.message_expiry_interval, 100);
    assert_int_equal(d.u.publish.props.user_count, 1);
    assert_bytes_eq(d.u.publish.payload, "xy");

    check_vector("40 02 00 0a", MQTT_V5, &d);
    assert_int_equal(d.u.ack.reason, 0);
    check_vector("50 03 00 0a 10", MQTT_V5, &d);
    assert_int_equal(d.u.ack.reason, 0x10);
    check_vector("62 02 00 0a", MQTT_V311, &d);
    check_vector("70 08 00 0a 92 04 1f 00 01 78", MQTT_V5, &d);
    assert_bytes_eq(d.u.ack.props.reason_string, "x");

    /* SUBSCRIBE 5.0 "a/b/c" QoS 1 with Subscription Identifier 2 */
    check_vector("82 0d 00 01 02 0b 02 00 05 61 2f 62 2f 63 01", MQTT_V5, &d);
    assert_int_equal(d.u.subscribe.count, 1);
    assert_int_equal(d.u.subscribe.props.subscription_identifier[0], 2);
    check_vector("82 0e 00 02 00 03 61 2f 62 00 00 03 63 2f 64 02", MQTT_V311, &d);
    assert_int_equal(d.u.subscribe.count, 2);
    check_vector("90 04 00 01 00 01", MQTT_V5, &d);
    check_vector("90 03 00 01 80", MQTT_V311, &d);
    check_vector("a2 08 00 03 00 00 03 61 2f 62", MQTT_V5, &d);
    check_vector("a2 07 00 03 00 03 61 2f 62", MQTT_V311, &d);
    check_vector("b0 04 00 03 00 11", MQTT_V5, &d);
    check_vector("b0 02 00 03", MQTT_V311, &d);
    check_vector("c0 00", MQTT_V5, &d);
    check_vector("d0 00", MQTT_V311, &d);
    check_vector("e0 00", MQTT_V5, &d);
    check_vector("e0 00", MQTT_V311, &d);
    check_vector("e0 01 04", MQTT_V5, &d);
    assert_int_equal(d.u.disconnect.reason, 4);
    check_vector("e0 07 00 05 11 00 00 00 00", MQTT_V5, &d);
    assert_true(MQTT_HAS(&d.u.disconnect.props, MQTT_PROP_SESSION_EXPIRY_INTERVAL));
    check_vector("f0 00", MQTT_V5, &d);
    check_vector("f0 0a 18 08 15 00 05 53 43 52 41 4d", MQTT_V5, &d);
    assert_int_equal(d.u.auth.reason, 0x18);
    assert_bytes_eq(d.u.auth.props.authentication_method, "SCRAM");
}

/* Shorter-than-canonical forms the standard allows decode to the same
 * fields. */
static void test_alternative_forms(void **state)
{
    (void)state;
    uint8_t buf[64];
    mqtt_packet d;
    size_t n = parse_hex("40 03 00 0a 00", buf); /* reason 0 given */
    assert_int_equal(mqtt_decode(buf, n, MQTT_V5, &d), 0);
    assert_int_equal(mqtt_encoded_size(&d, MQTT_V5), 4);
    n = parse_hex("40 04 00 0a 00 00", buf); /* and an empty property set */
    assert_int_equal(mqtt_decode(buf, n, MQTT_V5, &d), 0);
    n = parse_hex("e0 02 00 00", buf);
    assert_int_equal(mqtt_decode(buf, n, MQTT_V5, &d), 0);
    assert_int_equal(mqtt_encoded_size(&d, MQTT_V5), 2);
    n = parse_hex("f0 01 18", buf);
    assert_int_equal(mqtt_decode(buf, n, MQTT_V5, &d), 0);
    assert_int_equal(d.u.auth.reason, 0x18);
}

/* ---- malformed packets and protocol errors ------------------------------ */

typedef struct bad_case {
    const char *name;
    const char *bytes;
    uint8_t version;
    uint8_t rc;
} bad_case;

/* CONNECT pieces: "MQTT" level 5 */
#define C5 "00 04 4d 51 54 54 05"
#define C4 "00 04 4d 51 54 54 04"

static const bad_case bad_cases[] = {
    /* ---- fixed header */
    {"type 0", "!00 00", 5, 0x81},
    {"RL longer than data", "!30 05 00 01 61", 5, 0x81},
    {"RL shorter than data", "!c0 00 00", 5, 0x81},
    {"RL non-minimal", "!c0 80 00", 5, 0x81},
    {"RL five bytes", "!30 ff ff ff ff 01", 5, 0x81},
    {"unknown connection version", "30 | 00 01 61", 3, 0x84},
    /* ---- CONNECT */
    {"connect ok v5", "10 | " C5 " 02 00 3c 00 00 01 61", 5, 0},
    {"connect ok v311", "10 | " C4 " 02 00 3c 00 01 61", 5, 0},
    {"connect fixed flags", "11 | " C5 " 02 00 3c 00 00 01 61", 5, 0x81},
    {"connect name MQTX", "10 | 00 04 4d 51 54 58 05 02 00 3c 00 00 01 61", 5, 0x84},
    {"connect MQIsdp level 3", "10 | 00 06 4d 51 49 73 64 70 03 02 00 3c 00 01 61", 4, 0x84},
    {"connect MQTT level 3", "10 | 00 04 4d 51 54 54 03 02 00 3c 00 01 61", 4, 0x84},
    {"connect level 6", "10 | 00 04 4d 51 54 54 06 02 00 3c 00 00 01 61", 5, 0x84},
    {"connect reserved flag", "10 | " C5 " 03 00 3c 00 00 01 61", 5, 0x81},
    {"connect reserved flag v311", "10 | " C4 " 01 00 3c 00 01 61", 4, 0x81},
    {"connect will qos 3", "10 | " C5 " 1e 00 3c 00 00 01 61 00 00 01 74 00 00", 5, 0x81},
    {"connect will qos without will", "10 | " C5 " 0a 00 3c 00 00 01 61", 5, 0x81},
    {"connect will retain without will", "10 | " C4 " 22 00 3c 00 01 61", 4, 0x81},
    {"v311 password without username", "10 | " C4 " 42 00 3c 00 01 61 00 02 70 77", 4, 0x81},
    {"v5 password without username ok", "10 | " C5 " 42 00 3c 00 00 01 61 00 02 70 77", 5, 0},
    {"connect client id overlong utf8", "10 | " C5 " 02 00 3c 00 00 02 c0 80", 5, 0x81},
    {"connect client id U+0000", "10 | " C4 " 02 00 3c 00 01 00", 4, 0x81},
    {"connect username surrogate", "10 | " C4 " 82 00 3c 00 01 61 00 03 ed a0 80", 4, 0x81},
    {"connect will topic bad utf8", "10 | " C4 " 06 00 3c 00 01 61 00 01 ff 00 00", 4, 0x81},
    {"connect will topic wildcard", "10 | " C4 " 06 00 3c 00 01 61 00 03 61 2f 23 00 00", 4, 0x90},
    {"connect will topic empty", "10 | " C5 " 06 00 3c 00 00 01 61 00 00 00 00 00", 5, 0x90},
    {"v311 empty client id, no clean session", "10 | " C4 " 00 00 3c 00 00", 4, 0x85},
    {"v5 empty client id, no clean start ok", "10 | " C5 " 00 00 3c 00 00 00", 5, 0},
    {"connect trailing byte", "10 | " C5 " 02 00 3c 00 00 01 61 00", 5, 0x81},
    {"connect client id past end", "10 | " C5 " 02 00 3c 00 00 05 61", 5, 0x81},
    {"connect missing password", "10 | " C5 " c2 00 3c 00 00 01 61 00 01 75", 5, 0x81},
    {"connect truncated header", "10 | " C5 " 02 00", 5, 0x81},
    {"connect auth data without method", "10 | " C5 " 02 00 3c 04 16 00 01 78 00 01 61", 5, 0x82},
    {"connect topic alias property", "10 | " C5 " 02 00 3c 03 23 00 01 00 01 61", 5, 0x81},
    {"connect will delay outside will", "10 | " C5 " 02 00 3c 05 18 00 00 00 01 00 01 61", 5, 0x81},
    {"connect receive maximum 0", "10 | " C5 " 02 00 3c 03 21 00 00 00 01 61", 5, 0x82},
    {"connect receive maximum twice", "10 | " C5 " 02 00 3c 06 21 00 01 21 00 02 00 01 61", 5, 0x82},
    {"connect maximum packet size 0", "10 | " C5 " 02 00 3c 05 27 00 00 00 00 00 01 61", 5, 0x82},
    {"connect request problem info 2", "10 | " C5 " 02 00 3c 02 17 02 00 01 61", 5, 0x82},
    {"connect request response info 2", "10 | " C5 " 02 00 3c 02 19 02 00 01 61", 5, 0x82},
    {"connect property length past end", "10 | " C5 " 02 00 3c 09 21 00 01", 5, 0x81},
    {"connect property value past end", "10 | " C5 " 02 00 3c 02 21 00", 5, 0x81},
    {"connect unknown property 0x50", "10 | " C5 " 02 00 3c 02 50 00 00 01 61", 5, 0x81},
    {"connect property id 0x00", "10 | " C5 " 02 00 3c 01 00 00 01 61", 5, 0x81},
    {"connect user property bad utf8", "10 | " C5 " 02 00 3c 07 26 00 01 61 00 01 fe 00 01 61", 5, 0x81},
    {"will session expiry not allowed", "10 | " C5 " 06 00 3c 00 00 01 61 05 11 00 00 00 01 00 01 74 00 00", 5, 0x81},
    {"will payload format 1, bad payload", "10 | " C5 " 06 00 3c 00 00 01 61 02 01 01 00 01 74 00 01 ff", 5, 0x99},
    {"will payload format 2", "10 | " C5 " 06 00 3c 00 00 01 61 02 01 02 00 01 74 00 00", 5, 0x82},
    /* ---- CONNACK */
    {"connack reserved ack flags", "20 | 02 00 00", 5, 0x81},
    {"connack v5 reason 0x01", "20 | 00 01 00", 5, 0x82},
    {"connack v311 return code 6", "20 | 00 06", 4, 0x81},
    {"connack session present with error", "20 | 01 87 00", 5, 0x82},
    {"connack v311 length 3", "20 | 00 00 00", 4, 0x81},
    {"connack maximum qos 2", "20 | 00 00 02 24 02", 5, 0x82},
    {"connack retain available 2", "20 | 00 00 02 25 02", 5, 0x82},
    {"connack wildcard available 2", "20 | 00 00 02 28 02", 5, 0x82},
    {"connack sub ids available 2", "20 | 00 00 02 29 02", 5, 0x82},
    {"connack shared available 2", "20 | 00 00 02 2a 02", 5, 0x82},
    {"connack will delay not allowed", "20 | 00 00 05 18 00 00 00 01", 5, 0x81},
    /* ---- PUBLISH */
    {"publish qos 3", "36 | 00 01 61 00 01 00", 5, 0x81},
    {"publish dup with qos 0", "38 | 00 01 61 00", 5, 0x81},
    {"publish qos 1 packet id 0", "32 | 00 01 61 00 00 00", 5, 0x81},
    {"publish qos 2 packet id 0 v311", "34 | 00 01 61 00 00", 4, 0x81},
    {"publish topic with +", "30 | 00 03 61 2f 2b 00", 5, 0x90},
    {"publish topic with # v311", "30 | 00 03 61 2f 23", 4, 0x90},
    {"publish empty topic no alias", "30 | 00 00 00", 5, 0x82},
    {"publish empty topic with alias ok", "30 | 00 00 03 23 00 01", 5, 0},
    {"publish empty topic v311", "30 | 00 00", 4, 0x81},
    {"publish topic alias 0", "30 | 00 01 61 03 23 00 00", 5, 0x82},
    {"publish topic alias twice", "30 | 00 01 61 06 23 00 01 23 00 02", 5, 0x82},
    {"publish subscription id 0", "30 | 00 01 61 02 0b 00", 5, 0x82},
    {"publish subscription id 5 bytes", "30 | 00 01 61 06 0b ff ff ff ff 01", 5, 0x81},
    {"publish subscription id max ok", "30 | 00 01 61 05 0b ff ff ff 7f", 5, 0},
    {"publish payload format 2", "30 | 00 01 61 02 01 02", 5, 0x82},
    {"publish payload format 1, bad payload", "30 | 00 01 61 02 01 01 c3 28", 5, 0x99},
    {"publish payload format 0, binary payload ok", "30 | 00 01 61 02 01 00 c3 28", 5, 0},
    {"publish message expiry twice", "30 | 00 01 61 0a 02 00 00 00 01 02 00 00 00 01", 5, 0x82},
    {"publish topic bad utf8", "30 | 00 02 c3 28 00", 5, 0x81},
    {"publish topic past end", "30 | 00 05 61", 5, 0x81},
    {"publish session expiry not allowed", "30 | 00 01 61 05 11 00 00 00 01", 5, 0x81},
    {"publish response topic wildcard", "30 | 00 01 61 05 08 00 02 61 23", 5, 0x82},
    {"publish correlation data past end", "30 | 00 01 61 04 09 00 05 61", 5, 0x81},
    {"publish packet id past end", "32 | 00 01 61 00", 4, 0x81},
    /* ---- PUBACK / PUBREC / PUBREL / PUBCOMP */
    {"puback flags", "41 | 00 01", 5, 0x81},
    {"puback packet id 0", "40 | 00 00", 5, 0x81},
    {"puback v311 length 3", "40 | 00 01 00", 4, 0x81},
    {"puback length 1", "40 | 00", 5, 0x81},
    {"puback v5 length 2 ok", "40 | 00 01", 5, 0},
    {"puback reason 0x92", "40 | 00 01 92", 5, 0x82},
    {"puback topic alias property", "40 | 00 01 00 03 23 00 01", 5, 0x81},
    {"puback trailing after properties", "40 | 00 01 00 00 ff", 5, 0x81},
    {"pubrec reason 0x04", "50 | 00 01 04", 5, 0x82},
    {"pubrec reason 0x99 ok", "50 | 00 01 99", 5, 0},
    {"pubrel flags 0", "60 | 00 01", 5, 0x81},
    {"pubrel flags 0 v311", "60 | 00 01", 4, 0x81},
    {"pubrel reason 0x10", "62 | 00 01 10", 5, 0x82},
    {"pubrel reason 0x92 ok", "62 | 00 01 92", 5, 0},
    {"pubcomp reason 0x80", "70 | 00 01 80", 5, 0x82},
    {"pubcomp reason string twice", "70 | 00 01 00 08 1f 00 01 61 1f 00 01 62", 5, 0x82},
    /* ---- SUBSCRIBE */
    {"subscribe flags 0", "80 | 00 01 00 00 01 61 00", 5, 0x81},
    {"subscribe packet id 0", "82 | 00 00 00 00 01 61 00", 5, 0x81},
    {"subscribe no entries", "82 | 00 01 00", 5, 0x82},
    {"subscribe no entries v311", "82 | 00 01", 4, 0x81},
    {"subscribe reserved option bits", "82 | 00 01 00 00 01 61 40", 5, 0x81},
    {"subscribe qos 3", "82 | 00 01 00 00 01 61 03", 5, 0x82},
    {"subscribe retain handling 3", "82 | 00 01 00 00 01 61 30", 5, 0x82},
    {"subscribe no local on shared, empty filter", "82 | 00 01 00 00 09 24 73 68 61 72 65 2f 67 2f 04", 5, 0x82},
    {"subscribe no local on shared (full)", "82 | 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 78 04", 5, 0x82},
    {"subscribe v311 no-local bit", "82 | 00 01 00 01 61 04", 4, 0x81},
    {"subscribe v311 qos 3", "82 | 00 01 00 01 61 03", 4, 0x81},
    {"subscribe filter bad utf8", "82 | 00 01 00 00 02 ed b0 00", 5, 0x81},
    {"subscribe missing options", "82 | 00 01 00 00 01 61", 5, 0x81},
    {"subscribe two subscription ids", "82 | 00 01 04 0b 01 0b 02 00 01 61 00", 5, 0x82},
    {"subscribe subscription id 0", "82 | 00 01 02 0b 00 00 01 61 00", 5, 0x82},
    {"subscribe reason string not allowed", "82 | 00 01 04 1f 00 01 61 00 01 61 00", 5, 0x81},
    {"subscribe bad filter syntax is not the decoder's job", "82 | 00 01 00 00 05 61 2f 23 2f 62 02", 5, 0},
    {"subscribe empty filter is not the decoder's job", "82 | 00 01 00 00 00 01", 5, 0},
    /* ---- UNSUBSCRIBE */
    {"unsubscribe flags 0", "a0 | 00 01 00 00 01 61", 5, 0x81},
    {"unsubscribe packet id 0", "a2 | 00 00 00 00 01 61", 5, 0x81},
    {"unsubscribe no entries", "a2 | 00 01 00", 5, 0x82},
    {"unsubscribe no entries v311", "a2 | 00 01", 4, 0x81},
    {"unsubscribe bad utf8", "a2 | 00 01 00 00 01 80", 5, 0x81},
    {"unsubscribe subscription id", "a2 | 00 01 02 0b 01 00 01 61", 5, 0x81},
    {"unsubscribe entry past end", "a2 | 00 01 00 00 04 61", 5, 0x81},
    /* ---- SUBACK / UNSUBACK */
    {"suback v311 return code 3", "90 | 00 01 03", 4, 0x81},
    {"suback reason 0x11", "90 | 00 01 00 11", 5, 0x82},
    {"suback no reasons", "90 | 00 01 00", 5, 0x82},
    {"suback flags", "92 | 00 01 00 00", 5, 0x81},
    {"unsuback v311 length 3", "b0 | 00 01 00", 4, 0x81},
    {"unsuback reason 0x10", "b0 | 00 01 00 10", 5, 0x82},
    {"unsuback packet id 0", "b0 | 00 00 00 00", 5, 0x81},
    /* ---- PINGREQ / PINGRESP */
    {"pingreq with body", "c0 | 00", 5, 0x81},
    {"pingreq flags", "c1 | ", 4, 0x81},
    {"pingresp flags", "d8 | ", 5, 0x81},
    /* ---- DISCONNECT */
    {"disconnect v311 with body", "e0 | 00", 4, 0x81},
    {"disconnect flags", "e2 | ", 5, 0x81},
    {"disconnect reason 0x05", "e0 | 05", 5, 0x82},
    {"disconnect reason 0x18", "e0 | 18 00", 5, 0x82},
    {"disconnect will delay not allowed", "e0 | 00 05 18 00 00 00 01", 5, 0x81},
    {"disconnect property past end", "e0 | 00 05 11 00 00", 5, 0x81},
    {"disconnect trailing", "e0 | 00 00 00", 5, 0x81},
    /* ---- AUTH */
    {"auth in 3.1.1", "f0 | ", 4, 0x81},
    {"auth flags", "f1 | ", 5, 0x81},
    {"auth reason 0x01", "f0 | 01 00", 5, 0x82},
    {"auth reason 0x00 ok", "f0 | 00 00", 5, 0},
    {"auth session expiry not allowed", "f0 | 18 05 11 00 00 00 01", 5, 0x81},
};

static void test_bad_packets(void **state)
{
    (void)state;
    size_t n_cases = sizeof bad_cases / sizeof bad_cases[0];
    int failures = 0;
    for (size_t i = 0; i < n_cases; i++) {
        const bad_case *c = &bad_cases[i];
        uint8_t buf[4096];
        size_t n = build(c->bytes, buf);
        mqtt_packet d;
        uint8_t rc = mqtt_decode(buf, n, c->version, &d);
        if (rc != c->rc) {
            print_error("case '%s': expected 0x%02x, got 0x%02x\n", c->name,
                        c->rc, rc);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
    assert_true(n_cases >= 60);
}

/* The hub decodes what it reads right after framing: a malformed header
 * must also be caught there. */
static void test_bad_packets_frame(void **state)
{
    (void)state;
    uint8_t buf[16];
    mqtt_frame f;
    size_t n = parse_hex("00 00", buf);
    assert_int_equal(mqtt_frame_parse(buf, n, 0, &f), MQTT_FRAME_ERROR);
    assert_int_equal(f.reason, 0x81);
    n = parse_hex("30 80 80 80 80 01", buf);
    assert_int_equal(mqtt_frame_parse(buf, n, 0, &f), MQTT_FRAME_ERROR);
    assert_int_equal(f.reason, 0x81);
    n = parse_hex("30 80 00", buf);
    assert_int_equal(mqtt_frame_parse(buf, n, 0, &f), MQTT_FRAME_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all_types),
        cmocka_unit_test(test_roundtrip_publish_fields),
        cmocka_unit_test(test_roundtrip_connect_fields),
        cmocka_unit_test(test_subscribe_iter),
        cmocka_unit_test(test_encode_short_forms),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_alternative_forms),
        cmocka_unit_test(test_bad_packets),
        cmocka_unit_test(test_bad_packets_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_mqtt_codec.c — the MQTT codec end to end from packets built in
 * memory: every packet type round-trips in 5.0 and 3.1.1 with every
 * property it may carry, the decoded fields land where they belong, and
 * the encoder writes the shortest forms, maps 5.0 reason codes to 3.1.1's
 * and refuses what does not fit.
 *
 * The properties each packet type may carry are restated here from table
 * 2-4 of MQTT 5 (fill_props), not taken from props.c, so a mistake there
 * is not shared by the test. A round trip cannot catch a mistake the
 * encoder and the decoder make alike; bytes written by hand (real clients'
 * packets, malformed and protocol-error packets) are checked in
 * test_mqtt_codec_vectors.c. roundtrip() and the other helpers are in
 * mqtt_testutil.h, shared with that file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/codec.h"
#include "mqtt_testutil.h"

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
    {{(const uint8_t *)"a/b", 3},
     0x02 | MQTT_SUBOPT_NO_LOCAL | MQTT_SUBOPT_RETAIN_AS_PUBLISHED | 0x20},
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
        p->u.connack.reason =
            variant == 0 ? 0 : v5 ? (variant == 1 ? 0x87 : 0x9C) : (uint8_t)(variant + 3);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all_types),
        cmocka_unit_test(test_roundtrip_publish_fields),
        cmocka_unit_test(test_roundtrip_connect_fields),
        cmocka_unit_test(test_subscribe_iter),
        cmocka_unit_test(test_encode_short_forms),
        cmocka_unit_test(test_encode_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

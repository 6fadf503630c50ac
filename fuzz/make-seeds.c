/*
 * fuzz/make-seeds.c — writes the seed corpus of fuzz_mqtt_codec: valid
 * packets of every type in both protocol levels, built with the encoder
 * (whose output the unit tests check byte for byte against the standard).
 * Each seed is: one version byte (5 or 4, as the target reads it), then
 * one or more packets. Run: make -f fuzz/fuzz.mk fuzz-seeds
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"

#define S(s) ((mqtt_bytes){(const uint8_t *)(s), sizeof(s) - 1})

static const char *dir;
static int count;
static uint8_t users[128];
static size_t users_len;

static void emit(uint8_t v, const mqtt_packet *const *pkts, int n, const char *tag)
{
    static uint8_t buf[1 << 16];
    size_t len = 0;
    buf[len++] = v;
    for (int i = 0; i < n; i++) {
        uint8_t pv = pkts[i]->type == MQTT_CONNECT ? pkts[i]->u.connect.protocol_version : v;
        size_t sz = mqtt_encode(pkts[i], pv, buf + len);
        if (!sz) {
            fprintf(stderr, "cannot encode %s\n", tag);
            exit(1);
        }
        len += sz;
    }
    /* Every seed must decode completely: they are meant to be valid. */
    uint8_t dv = v;
    for (size_t at = 1; at < len;) {
        mqtt_frame f;
        mqtt_packet d;
        if (mqtt_frame_parse(buf + at, len - at, 0, &f) != MQTT_FRAME_OK ||
            mqtt_decode(buf + at, f.total_len, dv, &d) != 0) {
            fprintf(stderr, "seed %s does not decode\n", tag);
            exit(1);
        }
        if (d.type == MQTT_CONNECT)
            dv = d.u.connect.protocol_version;
        at += f.total_len;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/seed-v%d-%02d-%s", dir, v == MQTT_V5 ? 5 : 311, count++, tag);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
        perror(path);
        exit(1);
    }
}

static void one(uint8_t v, const mqtt_packet *p, const char *tag)
{
    emit(v, &p, 1, tag);
}

static void with_users(mqtt_props *p)
{
    p->user = (mqtt_bytes){users, (uint32_t)users_len};
    p->user_count = 2;
}

int main(int argc, char **argv)
{
    dir = argc > 1 ? argv[1] : "fuzz/corpus/mqtt_codec";
    mqtt_user_props_append(users, sizeof users, &users_len, S("k"), S("v"));
    mqtt_user_props_append(users, sizeof users, &users_len, S("k"), S("\xc3\xa9"));

    for (uint8_t v = MQTT_V311; v <= MQTT_V5; v++) {
        mqtt_packet c = {.type = MQTT_CONNECT};
        c.u.connect.protocol_version = v;
        c.u.connect.clean_start = true;
        c.u.connect.keep_alive = 60;
        c.u.connect.client_id = S("dev-1");
        mqtt_props *cp = &c.u.connect.props;
        MQTT_SET(cp, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
        cp->session_expiry_interval = 300;
        MQTT_SET(cp, MQTT_PROP_RECEIVE_MAXIMUM);
        cp->receive_maximum = 10;
        MQTT_SET(cp, MQTT_PROP_TOPIC_ALIAS_MAXIMUM);
        cp->topic_alias_maximum = 5;
        MQTT_SET(cp, MQTT_PROP_AUTHENTICATION_METHOD);
        cp->authentication_method = S("PLAIN");
        with_users(cp);
        one(v, &c, "connect");

        mqtt_packet cw = c;
        cw.u.connect.will_flag = true;
        cw.u.connect.will_qos = 1;
        cw.u.connect.will_retain = true;
        cw.u.connect.will_topic = S("dev/1/status");
        cw.u.connect.will_payload = S("offline");
        MQTT_SET(&cw.u.connect.will_props, MQTT_PROP_WILL_DELAY_INTERVAL);
        cw.u.connect.will_props.will_delay_interval = 5;
        MQTT_SET(&cw.u.connect.will_props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR);
        cw.u.connect.will_props.payload_format_indicator = 1;
        cw.u.connect.username_flag = cw.u.connect.password_flag = true;
        cw.u.connect.username = S("user");
        cw.u.connect.password = S("secret");
        one(v, &cw, "connect-will-auth");

        mqtt_packet ca = {.type = MQTT_CONNACK};
        ca.u.connack.session_present = true;
        mqtt_props *ap = &ca.u.connack.props;
        MQTT_SET(ap, MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER);
        ap->assigned_client_identifier = S("auto-7");
        MQTT_SET(ap, MQTT_PROP_MAXIMUM_QOS);
        ap->maximum_qos = 1;
        MQTT_SET(ap, MQTT_PROP_RETAIN_AVAILABLE);
        ap->retain_available = 1;
        MQTT_SET(ap, MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE);
        ap->shared_subscription_available = 1;
        MQTT_SET(ap, MQTT_PROP_MAXIMUM_PACKET_SIZE);
        ap->maximum_packet_size = 1 << 20;
        MQTT_SET(ap, MQTT_PROP_SERVER_KEEP_ALIVE);
        ap->server_keep_alive = 30;
        one(v, &ca, "connack");

        mqtt_packet pub = {.type = MQTT_PUBLISH};
        pub.u.publish.topic = S("sensors/t1/temp");
        pub.u.publish.payload = S("{\"t\":21.5}");
        one(v, &pub, "publish-qos0");
        pub.u.publish.qos = 1;
        pub.u.publish.packet_id = 1;
        pub.u.publish.retain = true;
        mqtt_props *pp = &pub.u.publish.props;
        MQTT_SET(pp, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR);
        pp->payload_format_indicator = 1;
        MQTT_SET(pp, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL);
        pp->message_expiry_interval = 3600;
        MQTT_SET(pp, MQTT_PROP_CONTENT_TYPE);
        pp->content_type = S("application/json");
        MQTT_SET(pp, MQTT_PROP_RESPONSE_TOPIC);
        pp->response_topic = S("reply/t1");
        MQTT_SET(pp, MQTT_PROP_CORRELATION_DATA);
        pp->correlation_data = S("\x01\x02");
        MQTT_SET(pp, MQTT_PROP_TOPIC_ALIAS);
        pp->topic_alias = 3;
        pp->subscription_identifier_count = 2;
        pp->subscription_identifier[0] = 7;
        pp->subscription_identifier[1] = 70000;
        with_users(pp);
        one(v, &pub, "publish-qos1-props");
        pub.u.publish.qos = 2;
        pub.u.publish.dup = true;
        one(v, &pub, "publish-qos2-dup");

        static const uint8_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP};
        for (int i = 0; i < 4; i++) {
            mqtt_packet a = {.type = types[i]};
            a.u.ack.packet_id = 1;
            one(v, &a, mqtt_packet_type_name(types[i]));
            if (v == MQTT_V5) {
                a.u.ack.reason = types[i] >= MQTT_PUBREL ? 0x92 : 0x10;
                MQTT_SET(&a.u.ack.props, MQTT_PROP_REASON_STRING);
                a.u.ack.props.reason_string = S("why");
                with_users(&a.u.ack.props);
                one(v, &a, "ack-props");
            }
        }

        static const mqtt_sub_entry subs[] = {
            {S("sensors/+/temp"), 1},
            {S("$share/g/cmd/#"), 0x02 | 0x10},
            {S("a/b"), 0x0C},
        };
        static const mqtt_sub_entry subs311[] = {
            {S("sensors/+/temp"), 1},
            {S("$share/g/cmd/#"), 2},
            {S("#"), 0},
        };
        mqtt_packet sb = {.type = MQTT_SUBSCRIBE};
        sb.u.subscribe.packet_id = 2;
        sb.u.subscribe.list = v == MQTT_V5 ? subs : subs311;
        sb.u.subscribe.count = 3;
        sb.u.subscribe.props.subscription_identifier_count = 1;
        sb.u.subscribe.props.subscription_identifier[0] = 12;
        with_users(&sb.u.subscribe.props);
        one(v, &sb, "subscribe");

        static const uint8_t rcs[] = {0x01, 0x02, 0x80};
        mqtt_packet sa = {.type = MQTT_SUBACK};
        sa.u.suback.packet_id = 2;
        sa.u.suback.reasons = rcs;
        sa.u.suback.count = 3;
        one(v, &sa, "suback");

        static const mqtt_bytes unsubs[] = {S("sensors/+/temp"), S("a/b")};
        mqtt_packet us = {.type = MQTT_UNSUBSCRIBE};
        us.u.unsubscribe.packet_id = 3;
        us.u.unsubscribe.list = unsubs;
        us.u.unsubscribe.count = 2;
        one(v, &us, "unsubscribe");

        static const uint8_t urcs[] = {0x00, 0x11};
        mqtt_packet ua = {.type = MQTT_UNSUBACK};
        ua.u.suback.packet_id = 3;
        ua.u.suback.reasons = urcs;
        ua.u.suback.count = 2;
        one(v, &ua, "unsuback");

        mqtt_packet pi = {.type = MQTT_PINGREQ}, po = {.type = MQTT_PINGRESP};
        one(v, &pi, "pingreq");
        one(v, &po, "pingresp");

        mqtt_packet d = {.type = MQTT_DISCONNECT};
        one(v, &d, "disconnect");
        if (v == MQTT_V5) {
            d.u.disconnect.reason = 0x04;
            MQTT_SET(&d.u.disconnect.props, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
            MQTT_SET(&d.u.disconnect.props, MQTT_PROP_REASON_STRING);
            d.u.disconnect.props.reason_string = S("bye");
            one(v, &d, "disconnect-props");

            mqtt_packet au = {.type = MQTT_AUTH};
            au.u.auth.reason = 0x18;
            MQTT_SET(&au.u.auth.props, MQTT_PROP_AUTHENTICATION_METHOD);
            au.u.auth.props.authentication_method = S("SCRAM-SHA-256");
            MQTT_SET(&au.u.auth.props, MQTT_PROP_AUTHENTICATION_DATA);
            au.u.auth.props.authentication_data = S("n,,n=user,r=abc");
            one(v, &au, "auth");
        }

        /* A whole session in one stream. */
        mqtt_packet pa = {.type = MQTT_PUBACK};
        pa.u.ack.packet_id = 1;
        const mqtt_packet *session[] = {&c, &sb, &pub, &pa, &pi, &us, &d};
        pub.u.publish.qos = 1;
        pub.u.publish.dup = false;
        emit(v, session, 7, "session");
    }
    printf("%d seeds in %s\n", count, dir);
    return 0;
}

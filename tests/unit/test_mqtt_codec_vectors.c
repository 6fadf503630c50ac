/*
 * test_mqtt_codec_vectors.c — the MQTT codec against bytes written by
 * hand: packets as real clients send them (mosquitto, paho) decode and
 * re-encode byte for byte, shorter forms the standard allows decode to the
 * same fields, and a table of malformed / protocol-error packets each
 * yields its reason code, a malformed fixed header already from framing.
 *
 * These are apart from the round trips in test_mqtt_codec.c because a
 * round trip through our own encoder cannot catch a mistake the encoder
 * and the decoder make alike, nor anything the encoder never writes.
 *
 * Packets in the tables are hex strings: "TT | body" (the Remaining Length
 * is computed and inserted) or "!raw bytes" (taken as is); see build() in
 * mqtt_testutil.h.
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

/* ---- hand-written vectors ------------------------------------------------ */

/* `buf` is static because the slices mqtt_decode leaves in *d point into
 * it and the caller checks them after we return; they stay valid until
 * the next vector. */
static void check_vector(const char *hex, uint8_t v, mqtt_packet *d)
{
    static uint8_t buf[512];
    uint8_t again[512];
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
    {"connect receive maximum twice",
     "10 | " C5 " 02 00 3c 06 21 00 01 21 00 02 00 01 61", 5, 0x82},
    {"connect maximum packet size 0", "10 | " C5 " 02 00 3c 05 27 00 00 00 00 00 01 61", 5, 0x82},
    {"connect request problem info 2", "10 | " C5 " 02 00 3c 02 17 02 00 01 61", 5, 0x82},
    {"connect request response info 2", "10 | " C5 " 02 00 3c 02 19 02 00 01 61", 5, 0x82},
    {"connect property length past end", "10 | " C5 " 02 00 3c 09 21 00 01", 5, 0x81},
    {"connect property value past end", "10 | " C5 " 02 00 3c 02 21 00", 5, 0x81},
    {"connect unknown property 0x50", "10 | " C5 " 02 00 3c 02 50 00 00 01 61", 5, 0x81},
    {"connect property id 0x00", "10 | " C5 " 02 00 3c 01 00 00 01 61", 5, 0x81},
    {"connect user property bad utf8",
     "10 | " C5 " 02 00 3c 07 26 00 01 61 00 01 fe 00 01 61", 5, 0x81},
    {"will session expiry not allowed",
     "10 | " C5 " 06 00 3c 00 00 01 61 05 11 00 00 00 01 00 01 74 00 00", 5, 0x81},
    {"will payload format 1, bad payload",
     "10 | " C5 " 06 00 3c 00 00 01 61 02 01 01 00 01 74 00 01 ff", 5, 0x99},
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
    {"subscribe no local on shared, empty filter",
     "82 | 00 01 00 00 09 24 73 68 61 72 65 2f 67 2f 04", 5, 0x82},
    {"subscribe no local on shared (full)",
     "82 | 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 78 04", 5, 0x82},
    {"subscribe v311 no-local bit", "82 | 00 01 00 01 61 04", 4, 0x81},
    {"subscribe v311 qos 3", "82 | 00 01 00 01 61 03", 4, 0x81},
    {"subscribe filter bad utf8", "82 | 00 01 00 00 02 ed b0 00", 5, 0x81},
    {"subscribe missing options", "82 | 00 01 00 00 01 61", 5, 0x81},
    {"subscribe two subscription ids", "82 | 00 01 04 0b 01 0b 02 00 01 61 00", 5, 0x82},
    {"subscribe subscription id 0", "82 | 00 01 02 0b 00 00 01 61 00", 5, 0x82},
    {"subscribe reason string not allowed", "82 | 00 01 04 1f 00 01 61 00 01 61 00", 5, 0x81},
    {"subscribe bad filter syntax is not the decoder's job",
     "82 | 00 01 00 00 05 61 2f 23 2f 62 02", 5, 0},
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
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_alternative_forms),
        cmocka_unit_test(test_bad_packets),
        cmocka_unit_test(test_bad_packets_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

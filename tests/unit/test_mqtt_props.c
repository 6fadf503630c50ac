/*
 * tests/unit/test_mqtt_props.c — MQTT 5 properties: which packet may carry
 * which property (every id x every packet type, against table 2-4 restated
 * here), duplicates, value ranges, truncation, Subscription Identifiers,
 * user properties in a mixed region, and encoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/codec.h"

enum { BYTE, U16, U32, VARINT, UTF8, BIN, PAIR };

#define W (1u << MQTT_PROPS_WILL)
#define T(x) (1u << MQTT_##x)
#define ACKS (T(PUBACK) | T(PUBREC) | T(PUBREL) | T(PUBCOMP))

/* MQTT 5 table 2-4 (property id, type, packets incl. Will). */
static const struct {
    uint8_t id;
    uint8_t type;
    uint32_t where;
    bool multi;
} spec[] = {
    {0x01, BYTE, T(PUBLISH) | W, false},
    {0x02, U32, T(PUBLISH) | W, false},
    {0x03, UTF8, T(PUBLISH) | W, false},
    {0x08, UTF8, T(PUBLISH) | W, false},
    {0x09, BIN, T(PUBLISH) | W, false},
    {0x0B, VARINT, T(PUBLISH) | T(SUBSCRIBE), false},
    {0x11, U32, T(CONNECT) | T(CONNACK) | T(DISCONNECT), false},
    {0x12, UTF8, T(CONNACK), false},
    {0x13, U16, T(CONNACK), false},
    {0x15, UTF8, T(CONNECT) | T(CONNACK) | T(AUTH), false},
    {0x16, BIN, T(CONNECT) | T(CONNACK) | T(AUTH), false},
    {0x17, BYTE, T(CONNECT), false},
    {0x18, U32, W, false},
    {0x19, BYTE, T(CONNECT), false},
    {0x1A, UTF8, T(CONNACK), false},
    {0x1C, UTF8, T(CONNACK) | T(DISCONNECT), false},
    {0x1F, UTF8, T(CONNACK) | ACKS | T(SUBACK) | T(UNSUBACK) | T(DISCONNECT) | T(AUTH), false},
    {0x21, U16, T(CONNECT) | T(CONNACK), false},
    {0x22, U16, T(CONNECT) | T(CONNACK), false},
    {0x23, U16, T(PUBLISH), false},
    {0x24, BYTE, T(CONNACK), false},
    {0x25, BYTE, T(CONNACK), false},
    {0x26, PAIR, T(CONNECT) | T(CONNACK) | T(PUBLISH) | W | ACKS | T(SUBSCRIBE) |
                     T(SUBACK) | T(UNSUBSCRIBE) | T(UNSUBACK) | T(DISCONNECT) | T(AUTH),
     true},
    {0x27, U32, T(CONNECT) | T(CONNACK), false},
    {0x28, BYTE, T(CONNACK), false},
    {0x29, BYTE, T(CONNACK), false},
    {0x2A, BYTE, T(CONNACK), false},
};
#define NSPEC (sizeof spec / sizeof spec[0])

/* Writes one property with a valid value (1, "a", ("a","b")). */
static size_t put_prop(uint8_t *o, uint8_t id, int type)
{
    size_t n = 0;
    o[n++] = id;
    switch (type) {
    case BYTE: o[n++] = 1; break;
    case U16: o[n++] = 0; o[n++] = 1; break;
    case U32: o[n++] = 0; o[n++] = 0; o[n++] = 0; o[n++] = 1; break;
    case VARINT: o[n++] = 1; break;
    case UTF8:
    case BIN: o[n++] = 0; o[n++] = 1; o[n++] = 'a'; break;
    case PAIR:
        o[n++] = 0; o[n++] = 1; o[n++] = 'a';
        o[n++] = 0; o[n++] = 1; o[n++] = 'b';
        break;
    }
    return n;
}

/* Decodes a property section of body `body` for packet type `pt`. */
static uint8_t decode_section(const uint8_t *body, size_t len, uint8_t pt, mqtt_props *p)
{
    static uint8_t buf[1024];
    size_t k = (size_t)mqtt_varint_encode((uint32_t)len, buf);
    memcpy(buf + k, body, len);
    mqtt_iter r = {buf, buf + k + len};
    memset(p, 0, sizeof *p);
    uint8_t rc = mqtt_props_decode(&r, pt, p);
    if (rc == 0)
        assert_ptr_equal(r.p, r.end);
    return rc;
}

static const uint8_t packet_types[] = {
    MQTT_PROPS_WILL, MQTT_CONNECT, MQTT_CONNACK, MQTT_PUBLISH, MQTT_PUBACK,
    MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP, MQTT_SUBSCRIBE, MQTT_SUBACK,
    MQTT_UNSUBSCRIBE, MQTT_UNSUBACK, MQTT_DISCONNECT, MQTT_AUTH,
};

static void test_allowed_everywhere(void **state)
{
    (void)state;
    int checked = 0;
    for (unsigned id = 0; id < 256; id++) {
        int si = -1;
        for (size_t i = 0; i < NSPEC; i++)
            if (spec[i].id == id)
                si = (int)i;
        for (size_t t = 0; t < sizeof packet_types; t++) {
            uint8_t pt = packet_types[t];
            uint8_t body[16];
            size_t n = put_prop(body, (uint8_t)id, si >= 0 ? spec[si].type : BYTE);
            mqtt_props p;
            uint8_t rc = decode_section(body, n, pt, &p);
            uint8_t want = (si >= 0 && (spec[si].where & (1u << pt))) ? 0 : 0x81;
            if (rc != want)
                fail_msg("property 0x%02x in type %d: got 0x%02x want 0x%02x", id,
                         pt, rc, want);
            if (rc == 0 && id != MQTT_PROP_USER_PROPERTY)
                assert_true(MQTT_HAS(&p, id));
            checked++;
        }
    }
    assert_int_equal(checked, 256 * (int)sizeof packet_types);
}

static uint8_t first_allowed(size_t si)
{
    for (size_t t = 0; t < sizeof packet_types; t++)
        if (spec[si].where & (1u << packet_types[t]))
            return packet_types[t];
    return 0xFF;
}

static void test_duplicates(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSPEC; i++) {
        for (size_t t = 0; t < sizeof packet_types; t++) {
            uint8_t pt = packet_types[t];
            if (!(spec[i].where & (1u << pt)))
                continue;
            uint8_t body[32];
            size_t n = put_prop(body, spec[i].id, spec[i].type);
            n += put_prop(body + n, spec[i].id, spec[i].type);
            mqtt_props p;
            uint8_t rc = decode_section(body, n, pt, &p);
            bool multi = spec[i].multi || (spec[i].id == 0x0B && pt == MQTT_PUBLISH);
            if (rc != (multi ? 0 : 0x82))
                fail_msg("property 0x%02x twice in %d: 0x%02x", spec[i].id, pt, rc);
        }
    }
}

static void test_truncated_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSPEC; i++) {
        uint8_t pt = first_allowed(i);
        uint8_t body[32];
        size_t n = put_prop(body, spec[i].id, spec[i].type);
        mqtt_props p;
        for (size_t k = 1; k < n; k++)
            assert_int_equal(decode_section(body, k, pt, &p), 0x81);
        assert_int_equal(decode_section(body, n, pt, &p), 0);
    }
    /* Property Length beyond the data. */
    static const uint8_t b[] = {0x05, 0x01, 0x01};
    mqtt_iter r = {b, b + sizeof b};
    mqtt_props p;
    memset(&p, 0, sizeof p);
    assert_int_equal(mqtt_props_decode(&r, MQTT_PUBLISH, &p), 0x81);
    /* Property Length itself malformed. */
    static const uint8_t b2[] = {0x80};
    r = (mqtt_iter){b2, b2 + 1};
    assert_int_equal(mqtt_props_decode(&r, MQTT_PUBLISH, &p), 0x81);
    r = (mqtt_iter){b2, b2};
    assert_int_equal(mqtt_props_decode(&r, MQTT_PUBLISH, &p), 0x81);
}

static const struct {
    const char *name;
    uint8_t pt;
    uint8_t body[8];
    size_t len;
    uint8_t rc;
} ranges[] = {
    {"payload format 0", MQTT_PUBLISH, {0x01, 0}, 2, 0},
    {"payload format 1", MQTT_PUBLISH, {0x01, 1}, 2, 0},
    {"payload format 2", MQTT_PUBLISH, {0x01, 2}, 2, 0x82},
    {"will payload format 255", MQTT_PROPS_WILL, {0x01, 255}, 2, 0x82},
    {"request problem 0", MQTT_CONNECT, {0x17, 0}, 2, 0},
    {"request problem 2", MQTT_CONNECT, {0x17, 2}, 2, 0x82},
    {"request response 2", MQTT_CONNECT, {0x19, 2}, 2, 0x82},
    {"maximum qos 0", MQTT_CONNACK, {0x24, 0}, 2, 0},
    {"maximum qos 2", MQTT_CONNACK, {0x24, 2}, 2, 0x82},
    {"retain available 2", MQTT_CONNACK, {0x25, 2}, 2, 0x82},
    {"wildcard available 2", MQTT_CONNACK, {0x28, 2}, 2, 0x82},
    {"sub id available 2", MQTT_CONNACK, {0x29, 2}, 2, 0x82},
    {"shared available 2", MQTT_CONNACK, {0x2A, 2}, 2, 0x82},
    {"receive maximum 0", MQTT_CONNECT, {0x21, 0, 0}, 3, 0x82},
    {"receive maximum 0 connack", MQTT_CONNACK, {0x21, 0, 0}, 3, 0x82},
    {"receive maximum 65535", MQTT_CONNACK, {0x21, 0xFF, 0xFF}, 3, 0},
    {"maximum packet size 0", MQTT_CONNECT, {0x27, 0, 0, 0, 0}, 5, 0x82},
    {"maximum packet size 0 connack", MQTT_CONNACK, {0x27, 0, 0, 0, 0}, 5, 0x82},
    {"topic alias 0", MQTT_PUBLISH, {0x23, 0, 0}, 3, 0x82},
    {"topic alias maximum 0", MQTT_CONNECT, {0x22, 0, 0}, 3, 0},
    {"subscription id 0", MQTT_PUBLISH, {0x0B, 0}, 2, 0x82},
    {"subscription id 0 subscribe", MQTT_SUBSCRIBE, {0x0B, 0}, 2, 0x82},
    {"subscription id max", MQTT_SUBSCRIBE, {0x0B, 0xFF, 0xFF, 0xFF, 0x7F}, 5, 0},
    {"subscription id 5 bytes", MQTT_SUBSCRIBE, {0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, 6, 0x81},
    {"subscription id non-minimal", MQTT_SUBSCRIBE, {0x0B, 0x81, 0x00}, 3, 0x81},
    {"response topic empty", MQTT_PUBLISH, {0x08, 0, 0}, 3, 0x82},
    {"response topic +", MQTT_PUBLISH, {0x08, 0, 1, '+'}, 4, 0x82},
    {"content type bad utf8", MQTT_PUBLISH, {0x03, 0, 1, 0xFF}, 4, 0x81},
    {"content type U+0000", MQTT_PUBLISH, {0x03, 0, 1, 0x00}, 4, 0x81},
    {"correlation data binary ok", MQTT_PUBLISH, {0x09, 0, 2, 0xFF, 0x00}, 5, 0},
    {"reason string bad utf8", MQTT_PUBACK, {0x1F, 0, 1, 0x80}, 4, 0x81},
    {"user name bad utf8", MQTT_PUBACK, {0x26, 0, 1, 0xC0, 0, 0}, 6, 0x81},
    {"user value bad utf8", MQTT_PUBACK, {0x26, 0, 0, 0, 1, 0xC0}, 6, 0x81},
    {"user empty pair ok", MQTT_PUBACK, {0x26, 0, 0, 0, 0}, 5, 0},
    {"two-byte property id", MQTT_PUBLISH, {0x81, 0x01, 0x00}, 3, 0x81},
};

static void test_value_ranges(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        mqtt_props p;
        uint8_t rc = decode_section(ranges[i].body, ranges[i].len, ranges[i].pt, &p);
        if (rc != ranges[i].rc) {
            print_error("range case '%s': got 0x%02x\n", ranges[i].name, rc);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void test_subscription_ids(void **state)
{
    (void)state;
    uint8_t body[64];
    size_t n = 0;
    for (unsigned i = 1; i <= MQTT_MAX_SUB_IDS + 3; i++) {
        body[n++] = 0x0B;
        n += (size_t)mqtt_varint_encode(i * 1000, body + n);
    }
    mqtt_props p;
    assert_int_equal(decode_section(body, n, MQTT_PUBLISH, &p), 0);
    assert_int_equal(p.subscription_identifier_count, MQTT_MAX_SUB_IDS);
    for (unsigned i = 0; i < MQTT_MAX_SUB_IDS; i++)
        assert_int_equal(p.subscription_identifier[i], (i + 1) * 1000);
    assert_true(MQTT_HAS(&p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER));
    /* Encoding writes the count, whether or not the bit is set. */
    p.present = 0;
    assert_int_equal(mqtt_props_encoded_size(&p), 1 + MQTT_MAX_SUB_IDS * 3);
}

/* A region with user properties between other properties. */
static void test_user_props_mixed_region(void **state)
{
    (void)state;
    static const uint8_t body[] = {
        0x26, 0, 1, 'a', 0, 1, '1',             /* a=1 */
        0x02, 0, 0, 0, 9,                       /* Message Expiry 9 */
        0x26, 0, 1, 'b', 0, 0,                  /* b= */
        0x0B, 0x80, 0x01,                       /* Subscription Id 128 */
        0x08, 0, 3, 'r', '/', 't',              /* Response Topic r/t */
        0x26, 0, 1, 'a', 0, 2, '2', '2',        /* a=22 */
        0x09, 0, 1, 0x26,                       /* Correlation "\x26" */
    };
    mqtt_props p;
    assert_int_equal(decode_section(body, sizeof body, MQTT_PUBLISH, &p), 0);
    assert_int_equal(p.user_count, 3);
    assert_int_equal(p.user.len, sizeof body);
    assert_int_equal(p.message_expiry_interval, 9);
    assert_int_equal(p.subscription_identifier[0], 128);
    mqtt_iter it;
    mqtt_bytes k, v;
    const char *want[][2] = {{"a", "1"}, {"b", ""}, {"a", "22"}};
    mqtt_user_props_iter(&p, &it);
    for (int i = 0; i < 3; i++) {
        assert_true(mqtt_user_props_next(&it, &k, &v));
        assert_int_equal(k.len, strlen(want[i][0]));
        assert_memory_equal(k.p, want[i][0], k.len);
        assert_int_equal(v.len, strlen(want[i][1]));
        if (v.len)
            assert_memory_equal(v.p, want[i][1], v.len);
    }
    assert_false(mqtt_user_props_next(&it, &k, &v));
    assert_false(mqtt_user_props_next(&it, &k, &v));

    /* Encoding copies only the user entries of the region, after the
     * others, in order. */
    uint8_t out[128];
    size_t sz = mqtt_props_encoded_size(&p);
    uint64_t body_sz = mqtt_props_body_size(&p);
    assert_int_equal(sz, body_sz + 1);
    uint8_t *end = mqtt_props_write(&p, (uint32_t)body_sz, out);
    assert_int_equal((size_t)(end - out), sz);
    static const uint8_t expect[] = {
        39,
        0x02, 0, 0, 0, 9,
        0x08, 0, 3, 'r', '/', 't',
        0x09, 0, 1, 0x26,
        0x0B, 0x80, 0x01,
        0x26, 0, 1, 'a', 0, 1, '1',
        0x26, 0, 1, 'b', 0, 0,
        0x26, 0, 1, 'a', 0, 2, '2', '2',
    };
    assert_int_equal(sz, sizeof expect);
    assert_memory_equal(out, expect, sizeof expect);

    /* A region without user properties leaves user empty. */
    static const uint8_t body2[] = {0x02, 0, 0, 0, 9};
    assert_int_equal(decode_section(body2, sizeof body2, MQTT_PUBLISH, &p), 0);
    assert_int_equal(p.user_count, 0);
    mqtt_user_props_iter(&p, &it);
    assert_false(mqtt_user_props_next(&it, &k, &v));
}

static void test_user_props_append(void **state)
{
    (void)state;
    uint8_t block[16];
    size_t len = 0;
    mqtt_bytes k = {(const uint8_t *)"key", 3}, v = {(const uint8_t *)"val", 3};
    assert_true(mqtt_user_props_append(block, sizeof block, &len, k, v));
    assert_int_equal(len, 11);
    assert_memory_equal(block, "\x26\x00\x03key\x00\x03val", 11);
    assert_false(mqtt_user_props_append(block, sizeof block, &len, k, v)); /* full */
    assert_int_equal(len, 11);
    mqtt_bytes e = {(const uint8_t *)"", 0};
    assert_true(mqtt_user_props_append(block, sizeof block, &len, e, e));
    assert_int_equal(len, 16);
    static uint8_t big[70000];
    uint8_t huge[70100];
    size_t hl = 0;
    assert_false(mqtt_user_props_append(huge, sizeof huge, &hl,
                                        (mqtt_bytes){big, 65536}, e));
    assert_true(mqtt_user_props_append(huge, sizeof huge, &hl,
                                       (mqtt_bytes){big, 65535}, e));

    mqtt_props p;
    memset(&p, 0, sizeof p);
    p.user = (mqtt_bytes){block, (uint32_t)len};
    p.user_count = 2;
    assert_int_equal(mqtt_props_encoded_size(&p), 1 + 16);
    /* user_count 0: the region is ignored. */
    p.user_count = 0;
    assert_int_equal(mqtt_props_encoded_size(&p), 1);
}

static void test_encode_every_property(void **state)
{
    (void)state;
    mqtt_props p;
    memset(&p, 0, sizeof p);
    /* Every single-valued property present, values of each width. */
    for (size_t i = 0; i < NSPEC; i++)
        if (!spec[i].multi && spec[i].id != 0x0B)
            MQTT_SET(&p, spec[i].id);
    p.payload_format_indicator = 1;
    p.receive_maximum = 0xABCD;
    p.maximum_packet_size = 0x01020304;
    p.reason_string = (mqtt_bytes){(const uint8_t *)"why", 3};
    size_t sz = mqtt_props_encoded_size(&p);
    /* 8 byte props x2, 4 u16 x3, 4 u32 x5, 9 strings x3 + 3 ("why") */
    size_t body = 8 * 2 + 4 * 3 + 4 * 5 + 9 * 3 + 3;
    assert_int_equal(sz, body + 1);
    uint8_t out[256];
    assert_ptr_equal(mqtt_props_write(&p, (uint32_t)body, out), out + sz);
    assert_int_equal(out[0], body);
    /* Decoding it back (as CONNACK would not allow all): check values via a
     * permissive walk of the ids, which must be in increasing order. */
    size_t i = 1;
    int last = 0;
    while (i < sz) {
        int id = out[i];
        assert_true(id > last);
        last = id;
        i++;
        if (id == 0x21) {
            assert_int_equal(out[i] << 8 | out[i + 1], 0xABCD);
        }
        if (id == 0x27)
            assert_memory_equal(out + i, "\x01\x02\x03\x04", 4);
        if (id == 0x1F)
            assert_memory_equal(out + i, "\x00\x03why", 5);
        for (size_t s = 0; s < NSPEC; s++) {
            if (spec[s].id != id)
                continue;
            switch (spec[s].type) {
            case BYTE: i += 1; break;
            case U16: i += 2; break;
            case U32: i += 4; break;
            default: i += 2 + (size_t)(out[i] << 8 | out[i + 1]); break;
            }
        }
    }
    assert_int_equal(i, sz);
    /* Strings too long to encode. */
    static uint8_t big[65536];
    p.content_type = (mqtt_bytes){big, 65536};
    assert_int_equal(mqtt_props_encoded_size(&p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed_everywhere),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_truncated_values),
        cmocka_unit_test(test_value_ranges),
        cmocka_unit_test(test_subscription_ids),
        cmocka_unit_test(test_user_props_mixed_region),
        cmocka_unit_test(test_user_props_append),
        cmocka_unit_test(test_encode_every_property),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * tests/unit/test_mqtt_primitives.c — Variable Byte Integers, UTF-8
 * validation, framing (need-more at every prefix, oversize refused from the
 * header alone), and the names for logs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/codec.h"

static const struct {
    uint32_t value;
    int len;
    uint8_t bytes[4];
} varints[] = {
    {0, 1, {0x00}},
    {1, 1, {0x01}},
    {127, 1, {0x7F}},
    {128, 2, {0x80, 0x01}},
    {16383, 2, {0xFF, 0x7F}},
    {16384, 3, {0x80, 0x80, 0x01}},
    {2097151, 3, {0xFF, 0xFF, 0x7F}},
    {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
    {268435455, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
};

static void test_varint_edges(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof varints / sizeof varints[0]; i++) {
        uint8_t out[8] = {0};
        uint32_t v = 0xDEADBEEF;
        assert_int_equal(mqtt_varint_size(varints[i].value), varints[i].len);
        assert_int_equal(mqtt_varint_encode(varints[i].value, out), varints[i].len);
        assert_memory_equal(out, varints[i].bytes, (size_t)varints[i].len);
        assert_int_equal(mqtt_varint_decode(varints[i].bytes, (size_t)varints[i].len, &v),
                         varints[i].len);
        assert_int_equal(v, varints[i].value);
        /* Every strict prefix needs more bytes. */
        for (int k = 0; k < varints[i].len; k++)
            assert_int_equal(mqtt_varint_decode(varints[i].bytes, (size_t)k, &v), 0);
    }
    uint8_t out[8];
    assert_int_equal(mqtt_varint_encode(268435456u, out), 0);
    assert_int_equal(mqtt_varint_size(268435456u), 0);
    assert_int_equal(mqtt_varint_size(UINT32_MAX), 0);
}

static void test_varint_malformed(void **state)
{
    (void)state;
    uint32_t v;
    static const uint8_t five[] = {0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    assert_int_equal(mqtt_varint_decode(five, 5, &v), -1);
    assert_int_equal(mqtt_varint_decode(five, 4, &v), -1); /* known already */
    static const uint8_t cont4[] = {0x80, 0x80, 0x80, 0x80};
    assert_int_equal(mqtt_varint_decode(cont4, 4, &v), -1);
    /* Not the shortest form [MQTT-1.5.5-1]. */
    static const uint8_t nonmin[] = {0x80, 0x00};
    assert_int_equal(mqtt_varint_decode(nonmin, 2, &v), -1);
    static const uint8_t nonmin3[] = {0xFF, 0x80, 0x00};
    assert_int_equal(mqtt_varint_decode(nonmin3, 3, &v), -1);
    /* Trailing bytes after a complete varint are not read. */
    static const uint8_t more[] = {0x05, 0xFF};
    assert_int_equal(mqtt_varint_decode(more, 2, &v), 1);
    assert_int_equal(v, 5);
}

static void test_varint_reader(void **state)
{
    (void)state;
    static const uint8_t b[] = {0x80, 0x01, 0x7F};
    mqtt_iter r = {b, b + 3};
    uint32_t v;
    assert_int_equal(mqtt_rd_varint(&r, &v), 0);
    assert_int_equal(v, 128);
    assert_int_equal(mqtt_rd_varint(&r, &v), 0);
    assert_int_equal(v, 127);
    assert_int_equal(mqtt_rd_varint(&r, &v), MQTT_RC_MALFORMED_PACKET);
}

static void test_readers_bounds(void **state)
{
    (void)state;
    static const uint8_t b[] = {0x00, 0x03, 'a', 'b'};
    mqtt_iter r = {b, b + 4};
    mqtt_bytes s;
    assert_int_equal(mqtt_rd_binary(&r, &s), MQTT_RC_MALFORMED_PACKET);
    r = (mqtt_iter){b, b + 1};
    uint16_t h;
    assert_int_equal(mqtt_rd_u16(&r, &h), MQTT_RC_MALFORMED_PACKET);
    uint32_t w;
    r = (mqtt_iter){b, b + 3};
    assert_int_equal(mqtt_rd_u32(&r, &w), MQTT_RC_MALFORMED_PACKET);
    r = (mqtt_iter){b, b + 4};
    assert_int_equal(mqtt_rd_u32(&r, &w), 0);
    assert_int_equal(w, 0x00036162);
    uint8_t c;
    assert_int_equal(mqtt_rd_u8(&r, &c), MQTT_RC_MALFORMED_PACKET);
    static const uint8_t z[] = {0x00, 0x00};
    r = (mqtt_iter){z, z + 2};
    assert_int_equal(mqtt_rd_utf8(&r, &s), 0);
    assert_int_equal(s.len, 0);
}

typedef struct {
    const char *name;
    const char *s;
    size_t len; /* 0: strlen */
    bool valid;
} utf8_case;

static const utf8_case utf8_cases[] = {
    {"empty", "", 0, true},
    {"ascii", "hello/world", 0, true},
    {"long ascii", "abcdefghijklmnopqrstuvwxyz0123456789", 0, true},
    {"2-byte", "\xc3\xa9", 0, true},
    {"3-byte euro", "\xe2\x82\xac", 0, true},
    {"4-byte emoji", "\xf0\x9f\x98\x80", 0, true},
    {"U+10FFFF", "\xf4\x8f\xbf\xbf", 0, true},
    {"U+D7FF", "\xed\x9f\xbf", 0, true},
    {"U+E000", "\xee\x80\x80", 0, true},
    {"U+FEFF BOM", "\xef\xbb\xbf", 0, true},
    {"U+0080", "\xc2\x80", 0, true},
    {"U+0800", "\xe0\xa0\x80", 0, true},
    {"U+10000", "\xf0\x90\x80\x80", 0, true},
    {"ascii then 4-byte at 9", "abcdefghi\xf0\x9f\x98\x80xyz", 0, true},
    {"U+0000", "a\0b", 3, false},
    {"U+0000 inside 8-byte block", "abcdefgh\0ijklmnopq", 18, false},
    {"U+0000 at end of long ascii", "abcdefghijklmnop\0", 17, false},
    {"overlong 2-byte C0 80", "\xc0\x80", 0, false},
    {"overlong 2-byte C1 BF", "\xc1\xbf", 0, false},
    {"overlong 3-byte", "\xe0\x80\x80", 0, false},
    {"overlong 3-byte E0 9F", "\xe0\x9f\xbf", 0, false},
    {"overlong 4-byte", "\xf0\x80\x80\x80", 0, false},
    {"overlong 4-byte F0 8F", "\xf0\x8f\xbf\xbf", 0, false},
    {"surrogate U+D800", "\xed\xa0\x80", 0, false},
    {"surrogate U+DFFF", "\xed\xbf\xbf", 0, false},
    {"surrogate pair (CESU)", "\xed\xa0\xbd\xed\xb8\x80", 0, false},
    {"above U+10FFFF", "\xf4\x90\x80\x80", 0, false},
    {"F5 lead", "\xf5\x80\x80\x80", 0, false},
    {"FF byte", "\xff", 0, false},
    {"lone continuation", "\x80", 0, false},
    {"continuation after ascii block", "abcdefgh\xbf", 0, false},
    {"truncated 2-byte", "\xc3", 0, false},
    {"truncated 3-byte", "\xe2\x82", 0, false},
    {"truncated 4-byte", "\xf0\x9f\x98", 0, false},
    {"truncated then ascii", "\xe2\x82z", 0, false},
    {"bad 3rd byte", "\xe2\x82\x41", 0, false},
    {"bad 4th byte", "\xf0\x9f\x98\xc0", 0, false},
    {"5-byte form", "\xf8\x88\x80\x80\x80", 0, false},
};

static void test_utf8(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
        const utf8_case *c = &utf8_cases[i];
        size_t n = c->len ? c->len : strlen(c->s);
        if (mqtt_utf8_valid((const uint8_t *)c->s, n) != c->valid) {
            print_error("utf8 case '%s' expected %d\n", c->name, c->valid);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* Every code point round-trips through a hand-rolled encoder: valid
 * exactly when not a surrogate and not U+0000. */
static void test_utf8_all_code_points(void **state)
{
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        uint8_t b[4];
        size_t n;
        if (cp < 0x80) {
            b[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xC0 | cp >> 6);
            b[1] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xE0 | cp >> 12);
            b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            b[2] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            b[0] = (uint8_t)(0xF0 | cp >> 18);
            b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            b[3] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 4;
        }
        bool expect = cp != 0 && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (mqtt_utf8_valid(b, n) != expect)
            fail_msg("code point U+%04X", (unsigned)cp);
        /* Character Data: the same, except that U+0000 is a character */
        if (mqtt_utf8_data_valid(b, n) != (expect || cp == 0))
            fail_msg("code point U+%04X as data", (unsigned)cp);
    }
}

/* A payload with NULs among other text, on and off the 8-byte fast path. */
static void test_utf8_data_with_nul(void **state)
{
    (void)state;
    static const char text[] = "abc\0defghij\0\0\0\0\0\0\0\0klm\xc3\xa9\0";
    size_t n = sizeof text - 1;
    for (size_t start = 0; start < 8; start++) {
        assert_true(mqtt_utf8_data_valid((const uint8_t *)text + start, n - start));
        assert_false(mqtt_utf8_valid((const uint8_t *)text + start, n - start));
    }
    assert_false(mqtt_utf8_data_valid((const uint8_t *)"\0\0\0\0\0\0\0\0\xff", 9));
    assert_false(mqtt_utf8_data_valid((const uint8_t *)"abc\0\xed\xa0\x80", 7));
}

static void test_frame_need_more_every_prefix(void **state)
{
    (void)state;
    /* PUBLISH with a 200-byte body: 2-byte Remaining Length. */
    uint8_t buf[256];
    memset(buf, 'x', sizeof buf);
    buf[0] = 0x30;
    buf[1] = 0xC8;
    buf[2] = 0x01;
    buf[3] = 0x00;
    buf[4] = 0x01;
    mqtt_frame f;
    for (size_t i = 0; i < 203; i++)
        assert_int_equal(mqtt_frame_parse(buf, i, 0, &f), MQTT_FRAME_NEED_MORE);
    assert_int_equal(mqtt_frame_parse(buf, 203, 0, &f), MQTT_FRAME_OK);
    assert_int_equal(f.type, MQTT_PUBLISH);
    assert_int_equal(f.flags, 0);
    assert_int_equal(f.header_len, 3);
    assert_int_equal(f.total_len, 203);
    /* More bytes behind it (the next packet) do not change the answer. */
    assert_int_equal(mqtt_frame_parse(buf, 256, 0, &f), MQTT_FRAME_OK);
    assert_int_equal(f.total_len, 203);
    /* Exactly at the limit is fine, one over is not. */
    assert_int_equal(mqtt_frame_parse(buf, 3, 203, &f), MQTT_FRAME_NEED_MORE);
    assert_int_equal(mqtt_frame_parse(buf, 3, 202, &f), MQTT_FRAME_ERROR);
    assert_int_equal(f.reason, MQTT_RC_PACKET_TOO_LARGE);
}

static void test_frame_oversize_from_header(void **state)
{
    (void)state;
    /* A 256 MiB PUBLISH announced in 5 bytes is refused at once. */
    static const uint8_t h[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F};
    mqtt_frame f;
    assert_int_equal(mqtt_frame_parse(h, 5, 1 << 20, &f), MQTT_FRAME_ERROR);
    assert_int_equal(f.reason, MQTT_RC_PACKET_TOO_LARGE);
    /* Without a limit, it is just incomplete. */
    assert_int_equal(mqtt_frame_parse(h, 5, 0, &f), MQTT_FRAME_NEED_MORE);
    assert_int_equal(f.total_len, 5 + 268435455u);
    /* The header itself incomplete: need more, whatever the limit. */
    assert_int_equal(mqtt_frame_parse(h, 4, 10, &f), MQTT_FRAME_NEED_MORE);
    assert_int_equal(mqtt_frame_parse(h, 1, 10, &f), MQTT_FRAME_NEED_MORE);
    assert_int_equal(mqtt_frame_parse(h, 0, 10, &f), MQTT_FRAME_NEED_MORE);
}

static void test_frame_errors(void **state)
{
    (void)state;
    mqtt_frame f;
    static const uint8_t t0[] = {0x00, 0x00};
    assert_int_equal(mqtt_frame_parse(t0, 2, 0, &f), MQTT_FRAME_ERROR);
    assert_int_equal(f.reason, MQTT_RC_MALFORMED_PACKET);
    /* Known from the first byte alone. */
    assert_int_equal(mqtt_frame_parse(t0, 1, 0, &f), MQTT_FRAME_ERROR);
    static const uint8_t five[] = {0x30, 0x80, 0x80, 0x80, 0x80, 0x01};
    assert_int_equal(mqtt_frame_parse(five, 6, 0, &f), MQTT_FRAME_ERROR);
    assert_int_equal(f.reason, MQTT_RC_MALFORMED_PACKET);
    assert_int_equal(mqtt_frame_parse(five, 5, 0, &f), MQTT_FRAME_ERROR);
    static const uint8_t ping[] = {0xC0, 0x00};
    assert_int_equal(mqtt_frame_parse(ping, 2, 2, &f), MQTT_FRAME_OK);
    assert_int_equal(f.total_len, 2);
    assert_int_equal(mqtt_frame_parse(ping, 2, 1, &f), MQTT_FRAME_ERROR);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(mqtt_packet_type_name(MQTT_CONNECT), "CONNECT");
    assert_string_equal(mqtt_packet_type_name(MQTT_AUTH), "AUTH");
    assert_string_equal(mqtt_packet_type_name(MQTT_UNSUBACK), "UNSUBACK");
    assert_string_equal(mqtt_packet_type_name(0), "RESERVED");
    assert_string_equal(mqtt_packet_type_name(200), "RESERVED");
    assert_string_equal(mqtt_reason_name(0x81), "Malformed Packet");
    assert_string_equal(mqtt_reason_name(0x95), "Packet too large");
    assert_string_equal(mqtt_reason_name(0xA2), "Wildcard Subscriptions not supported");
    assert_string_equal(mqtt_reason_name(0x00), "Success");
    assert_non_null(mqtt_reason_name(0x7F));
    for (int i = 0; i < 256; i++)
        assert_non_null(mqtt_reason_name((uint8_t)i));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_edges),
        cmocka_unit_test(test_varint_malformed),
        cmocka_unit_test(test_varint_reader),
        cmocka_unit_test(test_readers_bounds),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_utf8_all_code_points),
        cmocka_unit_test(test_utf8_data_with_nul),
        cmocka_unit_test(test_frame_need_more_every_prefix),
        cmocka_unit_test(test_frame_oversize_from_header),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

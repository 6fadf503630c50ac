/*
 * mqtt_testutil.h — what the MQTT codec tests (test_mqtt_codec*.c) share:
 * packets written as hex strings, mqtt_bytes compared with a C string, and
 * a full round trip through the codec.
 *
 * Hex strings are how the tests write bytes from the wire, so a packet
 * reads as it would in a capture: parse_hex skips whatever is not a hex
 * digit (spaces, a split between string literals) and checks no bound, so
 * `out` must be large enough. build() takes "TT | body" and computes and
 * inserts the Remaining Length, so a table row states only the bytes it is
 * about, or "!raw bytes", taken as is, for the rows about the fixed header
 * itself.
 *
 * roundtrip() checks the encoder and the decoder against each other, not
 * just that decode(encode(p)) looks right: the size the encoder announces,
 * that framing finds exactly that packet and asks for more on every
 * shorter prefix, and that re-encoding the decoded packet gives the same
 * bytes.
 *
 * Everything is static inline, so a test file that uses only some of it
 * builds without -Wunused-function warnings.
 */
#ifndef IOTHUBD_TESTS_MQTT_TESTUTIL_H
#define IOTHUBD_TESTS_MQTT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mqtt/codec.h"

static inline size_t parse_hex(const char *s, uint8_t *out)
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
static inline size_t build(const char *spec, uint8_t *out)
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

static inline void assert_bytes_eq(mqtt_bytes b, const char *s)
{
    assert_int_equal(b.len, strlen(s));
    if (b.len)
        assert_memory_equal(b.p, s, b.len);
}

static inline mqtt_bytes B(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

/* Encodes, checks size agreement and framing, decodes, compares, re-encodes
 * and checks identical bytes. Returns the encoded length; the bytes are
 * left in `buf` and the decoded packet in `out`. */
static inline size_t roundtrip(const mqtt_packet *p, uint8_t v, uint8_t *buf,
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

#endif

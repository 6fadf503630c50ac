/*
 * mqtt/primitives.c — the data representations of MQTT section 1.5:
 * Variable Byte Integers and UTF-8 Encoded Strings. (Two- and four-byte
 * integers and Binary Data are trivial and live as inline readers/writers
 * in codec.h.)
 *
 * Design: everything is bounds-checked against an explicit end and never
 * reads past it. Variable Byte Integers must use at most 4 bytes and the
 * minimum number of bytes [MQTT-1.5.5-1]: a non-minimal encoding such as
 * 0x80 0x00 is malformed like a 5-byte one.
 *
 * UTF-8 validation runs per string on every decoded packet (topic names on
 * every PUBLISH), so it has a fast path: 8 bytes at a time while they are
 * all ASCII and non-zero, then a byte-wise DFA-free decoder that checks the
 * well-formed ranges of Unicode Table 3-7 (which excludes overlong forms,
 * surrogates U+D800..U+DFFF and code points above U+10FFFF). U+0000 is
 * rejected as required by [MQTT-1.5.4-2].
 */
#include <string.h>

#include "mqtt/codec.h"
#include "util/utf8.h"

int mqtt_varint_decode(const uint8_t *p, size_t len, uint32_t *value)
{
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= len)
            return 0;
        uint8_t b = p[i];
        v |= (uint32_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                return -1; /* not the shortest form [MQTT-1.5.5-1] */
            *value = v;
            return (int)i + 1;
        }
    }
    return -1; /* a fifth byte would be needed */
}

int mqtt_varint_size(uint32_t value)
{
    if (value < 128u)
        return 1;
    if (value < 16384u)
        return 2;
    if (value < 2097152u)
        return 3;
    if (value <= MQTT_MAX_REMAINING_LENGTH)
        return 4;
    return 0;
}

int mqtt_varint_encode(uint32_t value, uint8_t *out)
{
    if (value > MQTT_MAX_REMAINING_LENGTH)
        return 0;
    return (int)(mqtt_wr_varint(out, value) - out);
}

uint8_t mqtt_rd_varint(mqtt_iter *r, uint32_t *v)
{
    int n = mqtt_varint_decode(r->p, (size_t)(r->end - r->p), v);
    if (n <= 0)
        return MQTT_RC_MALFORMED_PACKET;
    r->p += n;
    return 0;
}

uint8_t mqtt_rd_utf8(mqtt_iter *r, mqtt_bytes *v)
{
    if (mqtt_rd_binary(r, v) || !mqtt_utf8_valid(v->p, v->len))
        return MQTT_RC_MALFORMED_PACKET;
    return 0;
}

/* Well-formed UTF-8, and without U+0000 unless allow_nul. */
static bool utf8_check(const uint8_t *p, size_t len, bool allow_nul)
{
    const uint8_t *end = p + len;
    const uint64_t hi = 0x8080808080808080ull;
    const uint64_t lo = 0x0101010101010101ull;
    while (p < end) {
        /* Fast path: 8 ASCII bytes (none of them NUL, unless allowed). */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if ((w & hi) || (!allow_nul && ((w - lo) & ~w & hi)))
                break;
            p += 8;
        }
        if (p >= end)
            break;
        if (*p == 0 && !allow_nul)
            return false; /* U+0000 [MQTT-1.5.4-2] */
        size_t n = utf8_sequence_length(p, (size_t)(end - p));
        if (n == 0)
            return false; /* surrogates U+D800..U+DFFF included [MQTT-1.5.4-1] */
        p += n;
    }
    return true;
}

bool mqtt_utf8_valid(const uint8_t *p, size_t len)
{
    return utf8_check(p, len, false);
}

bool mqtt_utf8_data_valid(const uint8_t *p, size_t len)
{
    return utf8_check(p, len, true);
}

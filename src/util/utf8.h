/*
 * util/utf8.h — well-formed UTF-8: telling it, cutting it, repairing it.
 *
 * Reason strings, error bodies and log texts quote what clients chose
 * (topics, property names, JSON keys, and jansson's error texts, which
 * quote the bytes near a syntax error and may stop inside a character).
 * MQTT 5 peers must treat a Reason String or user property that is not
 * well-formed UTF-8 as a malformed packet, and jansson refuses to build a
 * JSON error body from such text; so every cut of client text goes
 * through utf8_fit (found by fuzz/fuzz_hub_props), and every text that
 * quotes a parser's error goes through utf8_scrub (found by
 * tests/e2e/test_route_fuzz.py: a 400 went out with no body).
 */
#ifndef IOTHUBD_UTIL_UTF8_H
#define IOTHUBD_UTIL_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The length (1..4) of the well-formed UTF-8 sequence at p (left > 0
 * bytes available), or 0 when none starts there: a continuation byte,
 * C0/C1 or F5..FF, a truncated sequence, an overlong form, a surrogate
 * (U+D800..U+DFFF) or a code point above U+10FFFF (RFC 3629). U+0000 is
 * a sequence of length 1; whoever forbids it checks it. */
static inline size_t utf8_sequence_length(const uint8_t *p, size_t left)
{
    uint8_t c = p[0], lo = 0x80, hi = 0xBF; /* the range of the second byte */
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : lo; /* overlong */
        hi = c == 0xED ? 0x9F : hi; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : lo; /* overlong */
        hi = c == 0xF4 ? 0x8F : hi; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Replaces, in place, every byte of s[0..len) that does not belong to a
 * well-formed sequence with '?', so that the text is well-formed UTF-8 of
 * the same length. */
static inline void utf8_scrub(char *s, size_t len)
{
    uint8_t *p = (uint8_t *)s, *end = p + len;
    while (p < end) {
        size_t n = utf8_sequence_length(p, (size_t)(end - p));
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
}

/* The largest length <= max (and <= len) at which `s` can be cut without
 * splitting a UTF-8 sequence: never before a continuation byte. Assumes
 * `s` (len bytes) is well-formed UTF-8 up to there; for other bytes it
 * still never cuts inside what looks like a sequence. */
static inline size_t utf8_fit(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

#endif

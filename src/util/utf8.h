/*
 * util/utf8.h — cutting UTF-8 text short without breaking a character.
 *
 * Reason strings and log texts quote names that clients chose (topics,
 * property names, JSON keys). Cutting those at a byte count can split a
 * multi-byte character, and MQTT 5 peers must treat a Reason String or user
 * property that is not well-formed UTF-8 as a malformed packet; so every
 * cut of client text goes through utf8_fit. (Found by fuzz/fuzz_hub_props.)
 */
#ifndef IOTHUBD_UTIL_UTF8_H
#define IOTHUBD_UTIL_UTF8_H

#include <stddef.h>

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

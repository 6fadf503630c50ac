/* Unit tests for util/utf8.h. utf8_sequence_length is checked against a
 * reference written the other way round (decode the code point by its
 * bit pattern, then refuse overlong forms, surrogates and what lies above
 * U+10FFFF) on every string of one to three bytes and on every four-byte
 * string with a four-byte lead; utf8_scrub must leave well-formed text
 * alone and turn anything else into well-formed text of the same length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/utf8.h"

/* The reference: the length of the sequence at p, or 0. */
static size_t reference_length(const uint8_t *p, size_t left)
{
    static const uint32_t min_of[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t n = p[0] < 0x80 ? 1 : (p[0] >> 5) == 0x6 ? 2 : (p[0] >> 4) == 0xE ? 3
             : (p[0] >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || left < n)
        return 0;
    uint32_t cp = n == 1 ? p[0] : (uint32_t)(p[0] & (0x7F >> n));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min_of[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0;
    return n;
}

static void check(const uint8_t *p, size_t len)
{
    size_t got = utf8_sequence_length(p, len), want = reference_length(p, len);
    if (got != want)
        fail_msg("%02x %02x %02x %02x (%zu bytes): %zu, want %zu", p[0], len > 1 ? p[1] : 0,
                 len > 2 ? p[2] : 0, len > 3 ? p[3] : 0, len, got, want);
}

static void test_every_short_string(void **state)
{
    (void)state;
    uint8_t b[4];
    for (uint32_t v = 0; v < (1u << 24); v++) {
        b[0] = (uint8_t)(v >> 16), b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)v;
        check(b, 3);
        if ((v & 0xFFFF) == 0)
            check(b, 1);
        if ((v & 0xFF) == 0)
            check(b, 2);
    }
    for (uint32_t v = 0; v < (1u << 24); v++) { /* leads F0..F7, every tail */
        b[0] = (uint8_t)(0xF0 | (v >> 21)), b[1] = (uint8_t)(0x80 | ((v >> 14) & 0x7F));
        b[2] = (uint8_t)(v >> 6), b[3] = (uint8_t)((v & 0x3F) | 0x80);
        check(b, 4);
    }
}

static bool well_formed(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < len;) {
        size_t n = reference_length(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

static void test_scrub(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"cut \xe2\x82", "cut ??"},                      /* a character cut short */
        {"near '\\\xe2'", "near '\\?'"},                  /* what jansson's error text held */
        {"\xed\xa0\x80 surrogate", "??? surrogate"},
        {"\xc0\xaf overlong", "?? overlong"},
        {"\xf4\x90\x80\x80 too high", "???? too high"},
        {"\x80\xbf lone", "?? lone"},
        {"\xff\xfe", "??"},
        {"\xe2\x82\xac\xe2", "\xe2\x82\xac?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        strcpy(buf, cases[i].in);
        utf8_scrub(buf, strlen(buf));
        assert_string_equal(buf, cases[i].out);
    }
    /* any bytes at all come out well-formed, and well-formed text is kept */
    uint32_t x = 12345;
    for (int round = 0; round < 20000; round++) {
        char buf[16], before[16];
        for (size_t i = 0; i < sizeof buf; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (char)(x >> 16);
        }
        memcpy(before, buf, sizeof buf);
        bool was_ok = well_formed(buf, sizeof buf);
        utf8_scrub(buf, sizeof buf);
        assert_true(well_formed(buf, sizeof buf));
        if (was_ok)
            assert_memory_equal(buf, before, sizeof buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_short_string),
        cmocka_unit_test(test_scrub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

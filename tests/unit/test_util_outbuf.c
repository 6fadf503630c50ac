/* Unit tests for util/outbuf.h: pieces are written whole or the buffer
 * is marked overflowed (never a cut piece), numbers match snprintf, and a
 * JSON string is byte for byte what jansson's compact dump writes for
 * every byte that can occur in UTF-8 text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "util/outbuf.h"

static void test_pieces_and_overflow(void **state)
{
    (void)state;
    char buf[16];
    outbuf o = outbuf_over(buf, sizeof buf);
    OUTBUF_LITERAL(&o, "len=");
    outbuf_u64(&o, 1234567);
    outbuf_str(&o, ";");
    assert_false(o.overflow);
    assert_int_equal(outbuf_len(&o), 12);
    assert_memory_equal(buf, "len=1234567;", 12);
    outbuf_str(&o, "12345"); /* one byte too many: not written at all */
    assert_true(o.overflow);
    assert_int_equal(outbuf_len(&o), 12);
    outbuf_str(&o, "1234"); /* fits, but the buffer stays marked */
    assert_true(o.overflow);
    assert_int_equal(outbuf_len(&o), 16);
}

static void test_u64_matches_snprintf(void **state)
{
    (void)state;
    const uint64_t values[] = {0, 9, 10, 99, 100, 4294967295u, 4294967296u, UINT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[32], want[32];
        outbuf o = outbuf_over(buf, sizeof buf);
        outbuf_u64(&o, values[i]);
        int n = snprintf(want, sizeof want, "%llu", (unsigned long long)values[i]);
        assert_int_equal(outbuf_len(&o), n);
        assert_memory_equal(buf, want, (size_t)n);
    }
}

/* `s` through outbuf_json_string and through jansson must be equal. */
static void assert_like_jansson(const char *s)
{
    json_t *j = json_string(s);
    assert_non_null(j);
    char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    char buf[2048];
    outbuf o = outbuf_over(buf, sizeof buf);
    outbuf_json_string(&o, s);
    assert_false(o.overflow);
    assert_int_equal(outbuf_len(&o), strlen(want));
    assert_memory_equal(buf, want, strlen(want));
    free(want);
}

static void test_json_string_like_jansson(void **state)
{
    (void)state;
    char every_ascii[128];
    for (int c = 1; c < 128; c++)
        every_ascii[c - 1] = (char)c;
    every_ascii[127] = '\0';
    assert_like_jansson(every_ascii);
    assert_like_jansson("");
    assert_like_jansson("plain-id:42");
    assert_like_jansson("a\"b\\c/d\te\nf\x01g\x1f");
    assert_like_jansson("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"); /* 2-, 3-, 4-byte UTF-8 */
    char escapes[129]; /* the worst case: every byte written as \u00XX */
    memset(escapes, '\x01', 128);
    escapes[128] = '\0';
    assert_like_jansson(escapes);
}

static void test_json_string_overflow(void **state)
{
    (void)state;
    char buf[8];
    outbuf o = outbuf_over(buf, sizeof buf);
    outbuf_json_string(&o, "\x01\x02"); /* needs 14 bytes */
    assert_true(o.overflow);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces_and_overflow),
        cmocka_unit_test(test_u64_matches_snprintf),
        cmocka_unit_test(test_json_string_like_jansson),
        cmocka_unit_test(test_json_string_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for util/json_load.h: JSON from outside is parsed as jansson
 * parses it, except that a raw NUL byte anywhere refuses the text (jansson
 * 2.14 silently skips a NUL after a literal or a number, so "false\0"
 * and "[1\0]" would pass). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/json_load.h"

#define LOAD(lit, flags, err) json_load_untrusted(lit, sizeof lit - 1, flags, err)

static void test_nul_anywhere_is_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
        int position;
    } bad[] = {
        {"false\0", 6, 5},   {"1\0", 2, 1},        {"null\0 ", 6, 4},    {"[false\0]", 8, 6},
        {"[1\0,2]", 6, 2},   {"{\"a\":1\0}", 8, 6}, {"\0{}", 3, 0},       {"\"a\0b\"", 5, 2},
        {"{} \0", 4, 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_error_t err;
        json_t *j = json_load_untrusted(bad[i].text, bad[i].len, JSON_DECODE_ANY, &err);
        if (j)
            fail_msg("case %zu accepted", i);
        assert_int_equal(err.position, bad[i].position);
        assert_non_null(strstr(err.text, "NUL byte"));
        assert_null(json_load_untrusted(bad[i].text, bad[i].len, JSON_DECODE_ANY, NULL));
    }
    json_error_t err;
    assert_null(LOAD("{\n \"a\": 1,\n  \0}", 0, &err));
    assert_int_equal(err.line, 3);
    assert_int_equal(err.column, 3);
}

static void test_without_nul_it_is_jansson(void **state)
{
    (void)state;
    json_error_t err;
    json_t *j = LOAD("{\"a\":[1,false,\"x\\u0041\"]}", 0, &err);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "a"), 0)), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "a"), 2)), "xA");
    json_decref(j);
    j = LOAD("false", JSON_DECODE_ANY, &err);
    assert_true(json_is_false(j));
    json_decref(j);
    assert_null(LOAD("false", 0, &err)); /* flags pass through: no DECODE_ANY */
    assert_null(LOAD("{\"a\":1,\"a\":2}", JSON_REJECT_DUPLICATES, &err));
    assert_null(LOAD("{\"a\":1", 0, &err));
    assert_null(strstr(err.text, "NUL byte"));
    assert_null(json_load_untrusted(NULL, 0, 0, &err)); /* empty: jansson's error */
    assert_null(strstr(err.text, "NUL byte"));
    j = json_load_untrusted("[1]garbage", 3, 0, &err); /* only len bytes are read */
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nul_anywhere_is_refused),
        cmocka_unit_test(test_without_nul_it_is_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

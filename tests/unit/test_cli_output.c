/* Unit tests for the iothub tool's output (src/tools/iothub/output.c):
 * table alignment (exact text), UTF-8 widths, absent cells, JSON member
 * rendering, and one-line service errors from IoT Hub error bodies.
 * output.c is compiled into this test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/tools/iothub/output.c"

/* Prints the table into a string the caller frees. */
static char *render(const out_table *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_true(out_table_print(t, f));
    fclose(f);
    return text;
}

static void test_table_aligns_columns_without_trailing_blanks(void **state)
{
    (void)state;
    static const char *const headers[] = {"DEVICE ID", "STATUS", "AUTH"};
    out_table t;
    out_table_init(&t, 3, headers);
    const char *row1[] = {"a", "enabled", "sas"};
    const char *row2[] = {"longer-device", NULL, ""};
    out_table_add(&t, row1);
    out_table_add(&t, row2);
    char *text = render(&t);
    assert_string_equal(text, "DEVICE ID      STATUS   AUTH\n"
                              "a              enabled  sas\n"
                              "longer-device  -        -\n");
    free(text);
    out_table_free(&t);
}

static void test_table_without_header_and_utf8(void **state)
{
    (void)state;
    out_table t;
    out_table_init(&t, 2, NULL);
    const char *row1[] = {"Gerät", "x"};
    const char *row2[] = {"Device", "y"};
    out_table_add(&t, row1);
    out_table_add(&t, row2);
    char *text = render(&t);
    assert_string_equal(text, "Gerät   x\nDevice  y\n");
    free(text);
    out_table_free(&t);
    assert_int_equal(out_text_width("Gerät"), 5);
    assert_int_equal(out_text_width(""), 0);
}

static void test_table_grows_past_initial_capacity(void **state)
{
    (void)state;
    out_table t;
    out_table_init(&t, 1, NULL);
    for (int i = 0; i < 100; i++) {
        char cell[16];
        snprintf(cell, sizeof cell, "%d", i);
        const char *row[] = {cell};
        out_table_add(&t, row);
    }
    assert_int_equal(t.rows, 100);
    char *text = render(&t);
    assert_non_null(strstr(text, "\n99\n"));
    free(text);
    out_table_free(&t);
}

static void test_json_text_renders_members(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:i, s:b, s:[s,s], s:n}", "s", "str", "i", 42, "b", 1, "a",
                          "RegistryRead", "ServiceConnect", "n");
    char buf[64];
    assert_string_equal(out_json_text(o, "s", buf, sizeof buf), "str");
    assert_string_equal(out_json_text(o, "i", buf, sizeof buf), "42");
    assert_string_equal(out_json_text(o, "b", buf, sizeof buf), "true");
    assert_string_equal(out_json_text(o, "a", buf, sizeof buf), "RegistryRead, ServiceConnect");
    assert_null(out_json_text(o, "n", buf, sizeof buf));
    assert_null(out_json_text(o, "missing", buf, sizeof buf));
    assert_null(out_json_str(o, "i"));
    json_decref(o);
}

static void check_error(long status, const char *body, const char *expected)
{
    char line[256];
    out_service_error(status, body, body ? strlen(body) : 0, line, sizeof line);
    assert_string_equal(line, expected);
}

static void test_service_error_lines(void **state)
{
    (void)state;
    check_error(404,
                "{\"Message\":\"ErrorCode:DeviceNotFound;Device 'x' not found\","
                "\"ExceptionMessage\":\"\"}",
                "DeviceNotFound: Device 'x' not found (HTTP 404)");
    check_error(409, "{\"Message\":\"ErrorCode:DeviceAlreadyExists;\"}",
                "DeviceAlreadyExists (HTTP 409)");
    check_error(400, "{\"Message\":\"plain text\"}", "plain text (HTTP 400)");
    check_error(502, "Bad gateway\nmore lines", "Bad gateway (HTTP 502)");
    check_error(500, NULL, "HTTP 500");
    check_error(401, "{\"Message\":\"ErrorCode:IotHubUnauthorizedAccess;bad\\nsig\"}",
                "IotHubUnauthorizedAccess: bad sig (HTTP 401)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_aligns_columns_without_trailing_blanks),
        cmocka_unit_test(test_table_without_header_and_utf8),
        cmocka_unit_test(test_table_grows_past_initial_capacity),
        cmocka_unit_test(test_json_text_renders_members),
        cmocka_unit_test(test_service_error_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

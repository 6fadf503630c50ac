/*
 * test_service_devices.c — the HTTP service's device identity routes
 * (src/service/) against the fake registry and the server fixture of
 * service_testutil.h.
 *
 * Covered: every device/module route and status (If-Match / If-None-Match
 * cases), percent-encoded ids, listing with top, statistics, invalid JSON
 * and types, 404/405; invalid JSON is followed by a check that a new
 * connection is still served.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "service_testutil.h"
#include "util/log.h"

/* ---- tests: device identities --------------------------------------------- */

static void test_device_put_get_delete(void **state)
{
    (void)state;
    fake_reset();
    response r;
    char etag[64], hdr[128];
    assert_int_equal(call("PUT", "/devices/dev1?api-version=2021-04-12", NULL,
                          "{\"deviceId\":\"dev1\"}", &r), 201);
    assert_non_null(strstr(r.body, "\"deviceId\":\"dev1\""));
    assert_non_null(strstr(r.body, "\"type\":\"sas\""));
    assert_non_null(strstr(r.body, "\"primaryKey\":\""));
    assert_non_null(strstr(r.body, "\"status\":\"enabled\""));
    assert_non_null(strstr(r.body, "\"connectionState\":\"Disconnected\""));
    assert_non_null(strstr(r.body, "\"capabilities\":{\"iotEdge\":false}"));
    etag_of(&r, etag, sizeof etag);
    assert_non_null(strstr(r.body, etag)); /* unquoted in JSON */
    done(&r);
    /* replace without If-Match: 200 */
    assert_int_equal(call("PUT", "/devices/dev1", NULL, "{\"status\":\"disabled\"}", &r), 200);
    assert_non_null(strstr(r.body, "\"status\":\"disabled\""));
    etag_of(&r, etag, sizeof etag);
    done(&r);
    /* If-Match: stale etag -> 412; current (quoted or not) -> 200; * -> 200 */
    assert_int_equal(call("PUT", "/devices/dev1", "If-Match: \"stale\"\r\n", "{}", &r), 412);
    expect_error(&r, 412, "PreconditionFailed");
    done(&r);
    snprintf(hdr, sizeof hdr, "If-Match: \"%s\"\r\n", etag);
    assert_int_equal(call("PUT", "/devices/dev1", hdr, "{}", &r), 200);
    etag_of(&r, etag, sizeof etag);
    done(&r);
    snprintf(hdr, sizeof hdr, "If-Match: %s\r\n", etag);
    assert_int_equal(call("PUT", "/devices/dev1", hdr, "{}", &r), 200);
    done(&r);
    assert_int_equal(call("PUT", "/devices/dev1", "If-Match: *\r\n", "{}", &r), 200);
    done(&r);
    /* create-only on an existing device -> 409; If-Match: * on a missing one -> 404 */
    assert_int_equal(call("PUT", "/devices/dev1", "If-None-Match: *\r\n", "{}", &r), 409);
    expect_error(&r, 409, "DeviceAlreadyExists");
    done(&r);
    assert_int_equal(call("PUT", "/devices/ghost", "If-Match: *\r\n", "{}", &r), 404);
    expect_error(&r, 404, "DeviceNotFound");
    done(&r);
    /* get */
    assert_int_equal(call("GET", "/devices/dev1", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"deviceId\":\"dev1\""));
    assert_non_null(strcasestr(r.head, "\r\nETag: \""));
    done(&r);
    assert_int_equal(call("GET", "/devices/ghost", NULL, NULL, &r), 404);
    expect_error(&r, 404, "DeviceNotFound");
    done(&r);
    /* delete: stale etag 412, then 204, then 404 */
    assert_int_equal(call("DELETE", "/devices/dev1", "If-Match: \"stale\"\r\n", NULL, &r), 412);
    done(&r);
    assert_int_equal(call("DELETE", "/devices/dev1", "If-Match: *\r\n", NULL, &r), 204);
    assert_int_equal(r.body_len, 0);
    done(&r);
    assert_int_equal(call("DELETE", "/devices/dev1", NULL, NULL, &r), 404);
    expect_error(&r, 404, "DeviceNotFound");
    done(&r);
}

static void test_device_keys_and_percent_ids(void **state)
{
    (void)state;
    fake_reset();
    response r;
    const char *body = "{\"deviceId\":\"a@b\",\"authentication\":{\"type\":\"sas\","
                       "\"symmetricKey\":{\"primaryKey\":\"" OWNER_KEY "\","
                       "\"secondaryKey\":\"" OWNER_KEY2 "\"}},\"capabilities\":{\"iotEdge\":true},"
                       "\"etag\":\"ignored\",\"connectionState\":\"Connected\"}";
    assert_int_equal(call("PUT", "/devices/a%40b", NULL, body, &r), 201);
    assert_non_null(strstr(r.body, "\"deviceId\":\"a@b\""));
    assert_non_null(strstr(r.body, "\"primaryKey\":\"" OWNER_KEY "\""));
    assert_non_null(strstr(r.body, "\"iotEdge\":true"));
    done(&r);
    assert_int_equal(call("GET", "/devices/a@b", NULL, NULL, &r), 200);
    done(&r);
    assert_int_equal(call("GET", "/devices/bad%2Fid", NULL, NULL, &r), 400);
    expect_error(&r, 400, "ArgumentInvalid");
    done(&r);
    assert_int_equal(call("GET", "/devices/x%zz", NULL, NULL, &r), 400);
    done(&r);
}

static void test_list_and_statistics(void **state)
{
    (void)state;
    fake_reset();
    response r;
    assert_int_equal(call("PUT", "/devices/b", NULL, "{}", &r), 201);
    done(&r);
    assert_int_equal(call("PUT", "/devices/a", NULL, "{\"status\":\"disabled\"}", &r), 201);
    done(&r);
    assert_int_equal(call("GET", "/devices", NULL, NULL, &r), 200);
    assert_true(r.body[0] == '[');
    char *a = strstr(r.body, "\"deviceId\":\"a\""), *b = strstr(r.body, "\"deviceId\":\"b\"");
    assert_true(a && b && a < b);
    done(&r);
    assert_int_equal(call("GET", "/devices/?api-version=2021-04-12&top=1", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"deviceId\":\"a\""));
    assert_null(strstr(r.body, "\"deviceId\":\"b\""));
    done(&r);
    assert_int_equal(call("GET", "/devices?top=0", NULL, NULL, &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/devices?top=x", NULL, NULL, &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/devices?api-version=", NULL, NULL, &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/statistics/devices", NULL, NULL, &r), 200);
    assert_string_equal(r.body, "{\"totalDeviceCount\":2,\"enabledDeviceCount\":1,"
                                "\"disabledDeviceCount\":1}");
    done(&r);
}

static void test_modules(void **state)
{
    (void)state;
    fake_reset();
    response r;
    assert_int_equal(call("PUT", "/devices/d/modules/m1", NULL, "{}", &r), 404);
    done(&r);
    assert_int_equal(call("PUT", "/devices/d", NULL, "{}", &r), 201);
    done(&r);
    assert_int_equal(call("PUT", "/devices/d/modules/m1", NULL, "{\"moduleId\":\"m1\"}", &r), 201);
    assert_non_null(strstr(r.body, "\"moduleId\":\"m1\""));
    done(&r);
    assert_int_equal(call("PUT", "/devices/d/modules/m2", NULL, "{\"moduleId\":\"zz\"}", &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/devices/d/modules/m1", NULL, NULL, &r), 200);
    done(&r);
    assert_int_equal(call("GET", "/devices/d/modules", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"moduleId\":\"m1\""));
    done(&r);
    assert_int_equal(call("GET", "/devices/nope/modules", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("DELETE", "/devices/d/modules/m1", NULL, NULL, &r), 204);
    done(&r);
    assert_int_equal(call("GET", "/devices/d/modules/m1", NULL, NULL, &r), 404);
    done(&r);
    /* statistics count devices only */
    assert_int_equal(call("GET", "/statistics/devices", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"totalDeviceCount\":1"));
    done(&r);
}

static void test_invalid_json_and_types(void **state)
{
    (void)state;
    fake_reset();
    static const char *bad[] = {
        "{", "[]", "42", "{\"status\":5}", "{\"status\":\"sleeping\"}",
        "{\"deviceId\":\"other\"}", "{\"moduleId\":\"m\"}", "{\"authentication\":\"sas\"}",
        "{\"authentication\":{\"type\":\"kerberos\"}}",
        "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":1}}}",
        "{\"capabilities\":{\"iotEdge\":\"yes\"}}", "{\"a\":1,\"a\":2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        response r;
        if (call("PUT", "/devices/dev1", NULL, bad[i], &r) != 400)
            fail_msg("%s: %d", bad[i], r.status);
        expect_error(&r, 400, "ArgumentInvalid");
        done(&r);
    }
    still_serving();
}

static void test_routes_404_405(void **state)
{
    (void)state;
    response r;
    assert_int_equal(call("GET", "/nothing", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("GET", "/devices/a/b", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("GET", "/devices//", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("POST", "/devices/x", NULL, "{}", &r), 405);
    done(&r);
    assert_int_equal(call("DELETE", "/statistics/devices", NULL, NULL, &r), 405);
    done(&r);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_put_get_delete),
        cmocka_unit_test(test_device_keys_and_percent_ids),
        cmocka_unit_test(test_list_and_statistics),
        cmocka_unit_test(test_modules),
        cmocka_unit_test(test_invalid_json_and_types),
        cmocka_unit_test(test_routes_404_405),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

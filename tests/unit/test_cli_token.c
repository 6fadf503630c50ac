/* Unit tests for the iothub tool's credentials (src/tools/iothub/token.c):
 * classic device, module and service tokens and the MQTT 5 Authentication
 * Data against vectors computed independently (Python hmac/base64/urllib),
 * and device connection strings. token.c is compiled into this test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/tools/iothub/token.c"

#define KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" /* "0123456789abcdef" x2 */
#define HOST "myhub.example.com"
#define NOW_MS 1700000000123ull

static void test_device_token_vector(void **state)
{
    (void)state;
    cli_device_token t;
    char err[128];
    assert_true(cli_device_token_make(HOST, "dev+1", NULL, NULL, KEY, NOW_MS, 3600, &t, err,
                                      sizeof err));
    assert_string_equal(t.classic, "SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev%2B1"
                                   "&sig=1WymqFGFSNS8WGcCM1NV5%2BTviVXFtN2kXUQa%2BdyOZB8%3D"
                                   "&se=1700003600");
    assert_string_equal(t.resource, HOST "/devices/dev+1");
    assert_int_equal(t.expiry_s, 1700003600);
    assert_string_equal(t.client_id, "dev+1");
    assert_string_equal(t.sas_at, "1700000000123");
    assert_string_equal(t.sas_expiry, "1700003600123");
    assert_string_equal(t.policy, "");
    assert_string_equal(t.auth_data_b64, "w5TJb2iyqk9FAR5Pd/wi8I9Hgw12DGDjuX/MK3WyAFY=");
    cli_device_token_free(&t);
}

static void test_module_token_with_policy_vector(void **state)
{
    (void)state;
    cli_device_token t;
    char err[128];
    assert_true(cli_device_token_make(HOST, "dev+1", "m1", "device", KEY, NOW_MS, 3600, &t, err,
                                      sizeof err));
    assert_string_equal(t.classic,
                        "SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev%2B1%2Fmodules"
                        "%2Fm1&sig=aEO6ZDfH8Fcv9c4%2FoX9d%2Fpnu%2FaLn74xJzOq8YYTqLYk%3D"
                        "&se=1700003600&skn=device");
    assert_string_equal(t.client_id, "dev+1/m1");
    assert_string_equal(t.policy, "device");
    assert_string_equal(t.auth_data_b64, "Lv3R05SG/mp6EjjgHIHo9+zw16fGQ1Ht8fvaOXesOco=");
    cli_device_token_free(&t);
}

static void test_bad_key_is_an_error(void **state)
{
    (void)state;
    cli_device_token t;
    char err[128] = "";
    assert_false(cli_device_token_make(HOST, "d", NULL, NULL, "not base64!", NOW_MS, 60, &t, err,
                                       sizeof err));
    assert_non_null(strstr(err, "base64"));
    cli_device_token_free(&t); /* safe after failure */
}

static void test_service_token_vector(void **state)
{
    (void)state;
    char *token = cli_service_token(HOST, "iothubowner", KEY, 1700003600);
    assert_non_null(token);
    assert_string_equal(token, "SharedAccessSignature sr=myhub.example.com"
                               "&sig=3GA7zjJHfljxjD3retrOn2SBW90HvAyhJg%2BygYrNrBI%3D"
                               "&se=1700003600&skn=iothubowner");
    free(token);
    assert_null(cli_service_token(HOST, "iothubowner", "%%%", 1));
}

static void test_device_connection_strings(void **state)
{
    (void)state;
    char buf[256];
    assert_true(cli_device_connstr("h", "d1", NULL, "K==", buf, sizeof buf));
    assert_string_equal(buf, "HostName=h;DeviceId=d1;SharedAccessKey=K==");
    assert_true(cli_device_connstr("h", "d1", "m", "K==", buf, sizeof buf));
    assert_string_equal(buf, "HostName=h;DeviceId=d1;ModuleId=m;SharedAccessKey=K==");
    assert_true(cli_device_connstr("h", "d1", NULL, NULL, buf, sizeof buf));
    assert_string_equal(buf, "HostName=h;DeviceId=d1;x509=true");
    volatile size_t too_small = 10; /* not a constant, so the compiler cannot object */
    assert_false(cli_device_connstr("h", "d1", NULL, "K==", buf, too_small));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_token_vector),
        cmocka_unit_test(test_module_token_with_policy_vector),
        cmocka_unit_test(test_bad_key_is_an_error),
        cmocka_unit_test(test_service_token_vector),
        cmocka_unit_test(test_device_connection_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

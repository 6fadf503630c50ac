/*
 * test_service_auth.c — the HTTP service's authorization (src/service/)
 * against the fake registry and the server fixture of service_testutil.h,
 * whose policies are iothubowner (two keys), registryRead and
 * registryReadWrite.
 *
 * Covered: 401 (missing, garbage, expired, forged, other host, unknown
 * policy), followed by a check that a new connection is still served; a
 * token remembered by its connection (resource, rights, expiry and every
 * byte still checked); the secondary key, a host in upper case, a token's
 * sr scoping it to a path, 403 by a policy's rights, and who may read the
 * policies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service_testutil.h"
#include "util/log.h"
#include "util/sas.h"
#include "util/time.h"

/* A well-formed key that no policy has. */
#define FORGED_KEY "Zm9yZ2Vmb3JnZWZvcmdlZm9yZ2Vmb3JnZWZvcmdlZm8="

/* ---- tests: authorization ------------------------------------------------- */

static int call_with(const char *auth, const char *method, const char *path, response *r)
{
    client *c = cl_open();
    int st = call_on(c, method, path, auth, NULL, method[0] == 'P' ? "{}" : NULL, r);
    cl_close(c);
    return st;
}

static void test_auth_401(void **state)
{
    (void)state;
    response r;
    char *expired = token_for(HOST, OWNER_KEY, "iothubowner", -10);
    char *forged = token_for(HOST, FORGED_KEY, "iothubowner", 3600);
    char *other_host = token_for("other.test", OWNER_KEY, "iothubowner", 3600);
    char *host_prefix = token_for(HOST "x", OWNER_KEY, "iothubowner", 3600);
    char *unknown = token_for(HOST, OWNER_KEY, "nobody", 3600);
    char *no_skn = token_for(HOST, OWNER_KEY, NULL, 3600);
    const char *bad[] = {NULL, "Bearer x", "SharedAccessSignature sr=a", expired, forged,
                         other_host, host_prefix, unknown, no_skn};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (call_with(bad[i], "GET", "/devices", &r) != 401)
            fail_msg("case %zu: %d", i, r.status);
        expect_error(&r, 401, "IotHubUnauthorizedAccess");
        done(&r);
    }
    free(expired);
    free(forged);
    free(other_host);
    free(host_prefix);
    free(unknown);
    free(no_skn);
    still_serving();
}

static void test_auth_scopes_keys_and_403(void **state)
{
    (void)state;
    fake_reset();
    response r;
    char *secondary = token_for(HOST, OWNER_KEY2, "iothubowner", 3600);
    char *scoped = token_for(HOST "/devices/x", OWNER_KEY, "iothubowner", 3600);
    char *upper = token_for("HUB.TEST", OWNER_KEY, "iothubowner", 3600);
    char *reader = token_for(HOST, READ_KEY, "registryRead", 3600);
    char *writer = token_for(HOST, READ_KEY, "registryReadWrite", 3600);
    assert_int_equal(call_with(secondary, "GET", "/devices", &r), 200);
    done(&r);
    /* sr with a path covers that path and below, segment by segment only */
    assert_int_equal(call_with(scoped, "GET", "/devices", &r), 401);
    expect_error(&r, 401, "IotHubUnauthorizedAccess");
    done(&r);
    assert_int_equal(call_with(scoped, "GET", "/devices/xy", &r), 401);
    done(&r);
    assert_int_equal(call_with(scoped, "GET", "/statistics/devices", &r), 401);
    done(&r);
    assert_int_equal(call_with(upper, "GET", "/devices", &r), 200);
    done(&r);
    assert_int_equal(call_with(reader, "GET", "/statistics/devices", &r), 200);
    done(&r);
    assert_int_equal(call_with(reader, "PUT", "/devices/x", &r), 403);
    expect_error(&r, 403, "IotHubUnauthorized");
    done(&r);
    assert_int_equal(call_with(reader, "DELETE", "/devices/x", &r), 403);
    done(&r);
    assert_int_equal(call_with(writer, "PUT", "/devices/x", &r), 201);
    done(&r);
    assert_int_equal(call_with(scoped, "GET", "/devices/x", &r), 200);
    done(&r);
    /* case-insensitive like IoT Hub: past authorization, but there is no "X" */
    assert_int_equal(call_with(scoped, "GET", "/devices/X/modules", &r), 404);
    done(&r);
    assert_int_equal(call_with(writer, "GET", "/iothubd/policies", &r), 403);
    done(&r);
    assert_int_equal(call_with(secondary, "GET", "/iothubd/policies", &r), 200);
    assert_non_null(strstr(r.body, "{\"keyName\":\"iothubowner\",\"primaryKey\":\"" OWNER_KEY
                                   "\",\"secondaryKey\":\"" OWNER_KEY2 "\",\"rights\":"
                                   "\"RegistryRead, RegistryWrite, ServiceConnect, "
                                   "DeviceConnect\"}"));
    assert_non_null(strstr(r.body, "\"rights\":\"RegistryRead\""));
    done(&r);
    free(secondary);
    free(scoped);
    free(upper);
    free(reader);
    free(writer);
}

/* One request on c; its status, the response freed. */
static int status_on(client *c, const char *auth, const char *method, const char *path,
                     const char *text)
{
    response r;
    int st = call_on(c, method, path, auth, NULL, method[0] == 'P' ? "{}" : NULL, &r);
    if (text && !strstr(r.body, text))
        fail_msg("want \"%s\" in %s", text, r.body);
    done(&r);
    return st;
}

/* A connection remembers the last token whose signature checked out and
 * skips its HMAC when it comes again (auth.c). Everything else is still
 * checked on every request: the resource, the rights, the expiry, and
 * that the token is the same to the last byte. */
static void test_auth_remembered_token(void **state)
{
    (void)state;
    fake_reset();
    client *c = cl_open();
    char *scoped = token_for(HOST "/devices/x", OWNER_KEY, "iothubowner", 3600);
    char *reader = token_for(HOST, READ_KEY, "registryRead", 3600);
    char *tampered = strdup(reader);
    char *sig = strstr(tampered, "sig=") + 4;
    *sig = *sig == 'A' ? 'B' : 'A'; /* same length, one byte off */

    assert_int_equal(status_on(c, scoped, "GET", "/devices/x", NULL), 404); /* past auth */
    assert_int_equal(status_on(c, scoped, "GET", "/devices", "does not cover"), 401);
    assert_int_equal(status_on(c, scoped, "GET", "/devices/x", NULL), 404);
    assert_int_equal(status_on(c, reader, "GET", "/statistics/devices", NULL), 200);
    assert_int_equal(status_on(c, reader, "PUT", "/devices/x", "lacks a right"), 403);
    assert_int_equal(status_on(c, tampered, "GET", "/statistics/devices", "invalid signature"),
                     401);
    assert_int_equal(status_on(c, reader, "GET", "/statistics/devices", NULL), 200);

    /* valid while now < se: remembered, then refused once the second is reached */
    uint64_t se = time_wall_ms() / 1000 + 2;
    char *brief = sas_token_build(HOST, OWNER_KEY, "iothubowner", se);
    assert_int_equal(status_on(c, brief, "GET", "/statistics/devices", NULL), 200);
    while (time_wall_ms() / 1000 < se)
        usleep(50 * 1000);
    assert_int_equal(status_on(c, brief, "GET", "/statistics/devices", "token expired"), 401);
    cl_close(c);
    free(scoped);
    free(reader);
    free(tampered);
    free(brief);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_401),
        cmocka_unit_test(test_auth_remembered_token),
        cmocka_unit_test(test_auth_scopes_keys_and_403),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * test_service_http.c — the HTTP service (src/service/) as an HTTP/1.1
 * server: framing, limits and connection handling, against the fake
 * registry and the server fixture of service_testutil.h. The device
 * routes are in test_service_devices.c, authorization in
 * test_service_auth.c.
 *
 * Covered: 413, 400 on a malformed request line, 431 header flood, 408 on
 * a request that never completes, each followed by a check that a new
 * connection is still served; pipelining (two requests in one write, incl.
 * an asynchronous PUT), chunked bodies, Expect: 100-continue, HTTP/1.0 and
 * Connection: close, and a client gone while its PUT waits for the
 * registry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_testutil.h"
#include "util/log.h"
#include "util/time.h"

/* ---- tests: HTTP protocol ------------------------------------------------- */

static void test_body_too_large_413(void **state)
{
    (void)state;
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    client *c = cl_open();
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "PUT /devices/big HTTP/1.1\r\nAuthorization: %s\r\n"
                     "Content-Length: 2000000\r\n\r\n", tok);
    cl_send(c, head, (size_t)n);
    response r;
    cl_read(c, &r);
    expect_error(&r, 413, "MessageTooLarge");
    assert_non_null(strcasestr(r.head, "\r\nConnection: close"));
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    /* chunked: counted as it arrives */
    c = cl_open();
    n = snprintf(head, sizeof head,
                 "PUT /devices/big HTTP/1.1\r\nAuthorization: %s\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n", tok);
    cl_send(c, head, (size_t)n);
    char *chunk = malloc(65536 + 16);
    n = snprintf(chunk, 16, "10000\r\n");
    memset(chunk + n, ' ', 65536);
    memcpy(chunk + n + 65536, "\r\n", 2);
    for (int i = 0; i < 17; i++)
        cl_send(c, chunk, (size_t)n + 65538);
    cl_read(c, &r);
    expect_error(&r, 413, "MessageTooLarge");
    done(&r);
    free(chunk);
    cl_close(c);
    free(tok);
    still_serving();
}

static void test_malformed_request_400(void **state)
{
    (void)state;
    static const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /devices HTTP/9.9.9\r\n\r\n",
        "GET /devices HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "GET /devices HTTP/1.1\r\nbad header line\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        client *c = cl_open();
        cl_send(c, bad[i], strlen(bad[i]));
        response r;
        cl_read(c, &r);
        expect_error(&r, 400, "ArgumentInvalid");
        assert_true(cl_eof(c));
        done(&r);
        cl_close(c);
    }
    /* a target that is not a path */
    response r;
    client *c = cl_open();
    assert_int_equal(call_on(c, "GET", "*", NULL, NULL, NULL, &r), 400);
    done(&r);
    cl_close(c);
    still_serving();
}

static void test_header_flood_431(void **state)
{
    (void)state;
    /* too many fields */
    client *c = cl_open();
    char *req = malloc(64 * 1024);
    size_t n = (size_t)sprintf(req, "GET /devices HTTP/1.1\r\n");
    for (int i = 0; i < 150; i++)
        n += (size_t)sprintf(req + n, "X-H%d: v\r\n", i);
    n += (size_t)sprintf(req + n, "\r\n");
    cl_send(c, req, n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 431);
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    /* one endless header */
    c = cl_open();
    n = (size_t)sprintf(req, "GET /devices HTTP/1.1\r\nX-Long: ");
    memset(req + n, 'a', 40000);
    n += 40000;
    cl_send(c, req, n);
    cl_read(c, &r);
    assert_int_equal(r.status, 431);
    done(&r);
    cl_close(c);
    free(req);
    still_serving();
}

static void test_pipelining_in_order(void **state)
{
    (void)state;
    fake_reset();
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[4096];
    /* an asynchronous PUT followed by a GET that must see its result */
    int n = snprintf(req, sizeof req,
                     "PUT /devices/p1 HTTP/1.1\r\nAuthorization: %s\r\nContent-Length: 2\r\n\r\n{}"
                     "GET /devices/p1 HTTP/1.1\r\nAuthorization: %s\r\n\r\n"
                     "GET /statistics/devices HTTP/1.1\r\nAuthorization: %s\r\n\r\n",
                     tok, tok, tok);
    client *c = cl_open();
    cl_send(c, req, (size_t)n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 201);
    done(&r);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"deviceId\":\"p1\""));
    done(&r);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "totalDeviceCount\":1"));
    done(&r);
    /* the connection stays usable */
    assert_int_equal(call_on(c, "GET", "/devices/p1", tok, NULL, NULL, &r), 200);
    done(&r);
    cl_close(c);
    free(tok);
}

static void test_chunked_and_expect_continue(void **state)
{
    (void)state;
    fake_reset();
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "PUT /devices/ch HTTP/1.1\r\nAuthorization: %s\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"
                     "5\r\n{\"sta\r\n10\r\ntus\":\"disabled\"}\r\n0\r\n\r\n", tok);
    client *c = cl_open();
    cl_send(c, req, (size_t)n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.body, "\"status\":\"disabled\""));
    done(&r);
    /* Expect: 100-continue on the same connection */
    n = snprintf(req, sizeof req,
                 "PUT /devices/ex HTTP/1.1\r\nAuthorization: %s\r\nExpect: 100-continue\r\n"
                 "Content-Length: 2\r\n\r\n", tok);
    cl_send(c, req, (size_t)n);
    char cont[64] = "";
    size_t want = strlen("HTTP/1.1 100 Continue\r\n\r\n");
    while (c->len < want)
        assert_true(cl_fill(c));
    memcpy(cont, c->buf, want);
    cl_take(c, want);
    assert_string_equal(cont, "HTTP/1.1 100 Continue\r\n\r\n");
    cl_send(c, "{}", 2);
    cl_read(c, &r);
    assert_int_equal(r.status, 201);
    done(&r);
    cl_close(c);
    free(tok);
}

static void test_http10_and_connection_close(void **state)
{
    (void)state;
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[2048];
    /* HTTP/1.0 without keep-alive: answered, then closed */
    int n = snprintf(req, sizeof req,
                     "GET /statistics/devices HTTP/1.0\r\nAuthorization: %s\r\n\r\n", tok);
    client *c = cl_open();
    cl_send(c, req, (size_t)n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    /* HTTP/1.0 with keep-alive: stays open */
    n = snprintf(req, sizeof req,
                 "GET /statistics/devices HTTP/1.0\r\nConnection: keep-alive\r\n"
                 "Authorization: %s\r\n\r\n", tok);
    c = cl_open();
    cl_send(c, req, (size_t)n);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "\r\nConnection: keep-alive"));
    done(&r);
    cl_send(c, req, (size_t)n);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    done(&r);
    cl_close(c);
    /* HTTP/1.1 Connection: close */
    c = cl_open();
    assert_int_equal(call_on(c, "GET", "/statistics/devices", tok, "Connection: close\r\n", NULL,
                             &r), 200);
    assert_non_null(strcasestr(r.head, "\r\nConnection: close"));
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    free(tok);
}

static void test_request_timeout_408(void **state)
{
    (void)state;
    client *c = cl_open();
    cl_send(c, "GET /devices HTTP/1.1\r\n", 23); /* and nothing more */
    uint64_t t0 = time_mono_ms();
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 408);
    assert_true(time_mono_ms() - t0 < 4900);
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    still_serving();
}

/* The client leaves while its PUT waits for the registry: the answer is
 * dropped and nothing leaks (ASan build) or crashes. */
static void test_client_gone_during_async_put(void **state)
{
    (void)state;
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "PUT /devices/gone HTTP/1.1\r\nAuthorization: %s\r\n"
                     "Content-Length: 2\r\n\r\n{}", tok);
    for (int i = 0; i < 20; i++) {
        client *c = cl_open();
        cl_send(c, req, (size_t)n);
        cl_close(c);
    }
    free(tok);
    still_serving();
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_too_large_413),
        cmocka_unit_test(test_malformed_request_400),
        cmocka_unit_test(test_header_flood_431),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_chunked_and_expect_continue),
        cmocka_unit_test(test_http10_and_connection_close),
        cmocka_unit_test(test_request_timeout_408),
        cmocka_unit_test(test_client_gone_during_async_put),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

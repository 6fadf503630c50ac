/*
 * test_http_strict.c — the strict framing scanner (src/service/http_strict.c)
 * on its own: well-formed messages pass however they are split, and each
 * spot where lenient libhttp-parser takes any byte for an LF is refused.
 *
 * Every message is scanned whole and then split at every position (two
 * calls), because the scanner keeps state across calls exactly at those
 * spots (a CR at the end of one read, chunk data running over the end).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "service/internal.h"

/* Scans `msg` in two calls split at `cut`; true if accepted. */
static bool scan_split(const char *msg, size_t cut, bool chunked)
{
    http_strict s;
    http_strict_reset(&s);
    size_t len = strlen(msg);
    return http_strict_scan(&s, (const uint8_t *)msg, cut, chunked) &&
           http_strict_scan(&s, (const uint8_t *)msg + cut, len - cut, chunked);
}

/* The verdict must not depend on where the bytes were split. */
static void expect(const char *msg, bool chunked, bool ok)
{
    for (size_t cut = 0; cut <= strlen(msg); cut++)
        assert_int_equal(scan_split(msg, cut, chunked), ok);
}

#define HEAD "PUT /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_well_formed(void **state)
{
    (void)state;
    expect("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, true);
    expect("\r\nGET / HTTP/1.1\nHost: x\n\n", false, true); /* leading CRLF, bare LF */
    expect("PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\n\r\rx", false, true); /* body unchecked */
    expect(HEAD "5\r\nhello\r\n0\r\n\r\n", true, true);
    expect(HEAD "3;a=b\r\n\r\r\r\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n", true, true);
}

static void test_cr_without_lf(void **state)
{
    (void)state;
    expect("GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n", false, false);
    expect("GET / HTTP/1.1\r\nHost: x\r\n\rX", false, false);
    expect(HEAD "5\rXhello\r\n0\r\n\r\n", true, false);
    expect(HEAD "5\r\nhello\r\n0\r\n\rX", true, false);
    expect(HEAD "3;a\rb\r\nabc\r\n0\r\n\r\n", true, false); /* in a chunk extension */
    expect(HEAD "0\r\nT: 1\rX\r\n\r\n", true, false);          /* in a trailer field */
}

static void test_bad_chunks(void **state)
{
    (void)state;
    expect(HEAD "2\r\n{}XX0\r\n\r\n", true, false);      /* no CRLF after the data */
    expect(HEAD "1\r\n{}\r\n0\r\n\r\n", true, false);     /* data longer than its size */
    expect(HEAD "\r\nab\r\n0\r\n\r\n", true, false);      /* no size */
    expect(HEAD "zz\r\nab\r\n0\r\n\r\n", true, false);    /* not hex */
    expect(HEAD "1000000000000000\r\n", true, false);     /* 16 digits */
    expect(HEAD "2\nab\r\n0\r\n\r\n", true, false);       /* bare LF after the size */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_formed),
        cmocka_unit_test(test_cr_without_lf),
        cmocka_unit_test(test_bad_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for iothub-bench's command line (src/tools/bench/options.c)
 * and its hub-mode inputs (src/tools/bench/hub.c: connection string, URL,
 * derived device keys), both compiled into this test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../src/tools/bench/hub.c"
#include "../../src/tools/bench/options.c"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static bench_options opts;
static char err[4096];

static void test_defaults(void **state)
{
    (void)state;
    char *argv[] = {"iothub-bench", "telemetry"};
    assert_int_equal(bench_options_parse(&opts, ARGC(argv), argv, err, sizeof err), 0);
    assert_int_equal(opts.scenario, SCENARIO_TELEMETRY);
    assert_string_equal(opts.host, "127.0.0.1");
    assert_int_equal(opts.port, 1883);
    assert_int_equal(opts.qos, 1);
    assert_int_equal(opts.payload, 256);
    assert_int_equal(opts.mqtt_version, 5);
    assert_true(opts.threads >= 1 && opts.threads <= 4);
    assert_false(bench_options_hub_mode(&opts));
}

static void test_flags_both_forms(void **state)
{
    (void)state;
    char *argv[] = {"iothub-bench", "telemetry", "--clients", "1000", "--qos=0", "--payload",
                    "64", "--rate", "5000.5", "--port=2883", "--mqtt", "4", "--json", "out.json",
                    "--threads", "3", "--server-pid", "1234"};
    assert_int_equal(bench_options_parse(&opts, ARGC(argv), argv, err, sizeof err), 0);
    assert_int_equal(opts.clients, 1000);
    assert_int_equal(opts.qos, 0);
    assert_int_equal(opts.payload, 64);
    assert_true(opts.rate == 5000.5);
    assert_int_equal(opts.port, 2883);
    assert_int_equal(opts.mqtt_version, 4);
    assert_string_equal(opts.json_path, "out.json");
    assert_int_equal(opts.threads, 3);
    assert_int_equal(opts.server_pid, 1234);
}

static void test_scenario_defaults(void **state)
{
    (void)state;
    char *fan[] = {"iothub-bench", "fanout"};
    assert_int_equal(bench_options_parse(&opts, ARGC(fan), fan, err, sizeof err), 0);
    assert_int_equal(opts.scenario, SCENARIO_FANOUT);
    assert_int_equal(opts.qos, 0);
    assert_int_equal(opts.payload, 64);
    assert_int_equal(opts.subscribers, 100);
    char *fan_q1[] = {"iothub-bench", "fanout", "--qos", "1"};
    assert_int_equal(bench_options_parse(&opts, ARGC(fan_q1), fan_q1, err, sizeof err), 0);
    assert_int_equal(opts.qos, 1);
    char *names[] = {"connect", "idle", "responder"};
    bench_scenario want[] = {SCENARIO_CONNECT, SCENARIO_IDLE, SCENARIO_RESPONDER};
    for (int i = 0; i < 3; i++) {
        char *argv[] = {"iothub-bench", names[i]};
        assert_int_equal(bench_options_parse(&opts, 2, argv, err, sizeof err), 0);
        assert_int_equal(opts.scenario, want[i]);
        assert_string_equal(bench_scenario_name(opts.scenario), names[i]);
    }
}

static void expect_error(char **argv, int argc, const char *fragment)
{
    assert_int_equal(bench_options_parse(&opts, argc, argv, err, sizeof err), -1);
    if (!strstr(err, fragment))
        fail_msg("error '%s' does not mention '%s'", err, fragment);
}

static void test_errors(void **state)
{
    (void)state;
    char *a1[] = {"iothub-bench", "telemtry"};
    expect_error(a1, ARGC(a1), "unknown scenario");
    char *a2[] = {"iothub-bench", "telemetry", "--qos", "2"};
    expect_error(a2, ARGC(a2), "--qos");
    char *a3[] = {"iothub-bench", "telemetry", "--clients"};
    expect_error(a3, ARGC(a3), "--clients");
    char *a4[] = {"iothub-bench", "telemetry", "--clients", "0"};
    expect_error(a4, ARGC(a4), "at least 1");
    char *a5[] = {"iothub-bench", "telemetry", "--mqtt", "3"};
    expect_error(a5, ARGC(a5), "--mqtt");
    char *a6[] = {"iothub-bench", "telemetry", "--hub", "http://127.0.0.1:8080"};
    expect_error(a6, ARGC(a6), "--connstr");
    char *a7[] = {"iothub-bench", "telemetry", "--hub", "https://x:1", "--connstr", "c"};
    expect_error(a7, ARGC(a7), "http://");
    char *a_http[] = {"iothub-bench", "telemetry", "--http-port", "8080"};
    expect_error(a_http, ARGC(a_http), "responder");
    char *r_http[] = {"iothub-bench", "responder", "--http-port", "8080"};
    assert_int_equal(bench_options_parse(&opts, ARGC(r_http), r_http, err, sizeof err), 0);
    assert_int_equal(opts.http_port, 8080);
    assert_false(opts.route);
    char *r_route[] = {"iothub-bench", "responder", "--route", "--port", "2000"};
    assert_int_equal(bench_options_parse(&opts, ARGC(r_route), r_route, err, sizeof err), 0);
    assert_true(opts.route);
    assert_int_equal(opts.port, 2000);
    char *a_route_value[] = {"iothub-bench", "responder", "--route=1"};
    expect_error(a_route_value, ARGC(a_route_value), "--route");
    char *a_route[] = {"iothub-bench", "fanout", "--route"};
    expect_error(a_route, ARGC(a_route), "responder");
    char *a8[] = {"iothub-bench", "fanout", "--payload", "4"};
    expect_error(a8, ARGC(a8), "timestamp");
    char *a9[] = {"iothub-bench", "telemetry", "--frobnicate", "1"};
    expect_error(a9, ARGC(a9), "unknown flag");
    char *a10[] = {"iothub-bench", "telemetry", "--port", "70000"};
    expect_error(a10, ARGC(a10), "--port");
    char *a11[] = {"iothub-bench", "telemetry", "--rate", "-5"};
    expect_error(a11, ARGC(a11), "--rate");
    char *a12[] = {"iothub-bench", "telemetry", "--clients", "12x"};
    expect_error(a12, ARGC(a12), "--clients");
    char *a13[] = {"iothub-bench"};
    expect_error(a13, ARGC(a13), "usage");
    /* --rate is refused where nothing paces by it, not silently ignored */
    char *a14[] = {"iothub-bench", "connect", "--rate", "100"};
    expect_error(a14, ARGC(a14), "--rate paces");
    char *a15[] = {"iothub-bench", "idle", "--rate", "9"};
    expect_error(a15, ARGC(a15), "--rate paces");
}

static void test_help(void **state)
{
    (void)state;
    char *argv[] = {"iothub-bench", "idle", "--help"};
    assert_int_equal(bench_options_parse(&opts, ARGC(argv), argv, err, sizeof err), 1);
    assert_non_null(strstr(err, "--keepalive"));
}

static void test_hub_mode(void **state)
{
    (void)state;
    char *argv[] = {"iothub-bench", "connect", "--hub", "http://127.0.0.1:8080", "--connstr",
                    "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"};
    assert_int_equal(bench_options_parse(&opts, ARGC(argv), argv, err, sizeof err), 0);
    assert_true(bench_options_hub_mode(&opts));
    char *fan[] = {"iothub-bench", "fanout", "--hub", "http://127.0.0.1:8080", "--connstr", "x"};
    expect_error(fan, ARGC(fan), "open topic space");
}

static void test_connstr_and_url(void **state)
{
    (void)state;
    bench_connstr cs;
    assert_true(bench_connstr_parse(
        "HostName=hub.local;SharedAccessKeyName=iothubowner;SharedAccessKey=abc=", &cs));
    assert_string_equal(cs.host, "hub.local");
    assert_string_equal(cs.policy, "iothubowner");
    assert_string_equal(cs.key, "abc=");
    assert_true(bench_connstr_parse("SharedAccessKey=k;HostName=h", &cs));
    assert_string_equal(cs.policy, "");
    assert_false(bench_connstr_parse("HostName=h", &cs));
    assert_false(bench_connstr_parse("SharedAccessKey=k", &cs));

    char host[64];
    uint16_t port;
    assert_true(bench_url_parse("http://127.0.0.1:8080", host, sizeof host, &port));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_true(bench_url_parse("http://10.0.0.1:80/", host, sizeof host, &port));
    assert_false(bench_url_parse("http://127.0.0.1", host, sizeof host, &port));
    assert_false(bench_url_parse("http://127.0.0.1:0", host, sizeof host, &port));
    assert_false(bench_url_parse("http://127.0.0.1:80/x", host, sizeof host, &port));
}

static void test_device_key_vector(void **state)
{
    (void)state;
    /* base64(HMAC-SHA256(b"iothub-bench", b"bench-000007")), from Python */
    char key[48];
    bench_device_key("bench-000007", key);
    assert_string_equal(key, "W0ulC/UsrK4mwpRPsV0MA/3NNQUG+kjEN8J3AS0jHKM=");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flags_both_forms),
        cmocka_unit_test(test_scenario_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_hub_mode),
        cmocka_unit_test(test_connstr_and_url),
        cmocka_unit_test(test_device_key_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

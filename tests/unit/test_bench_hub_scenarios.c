/* Unit tests for the pure parts of iothub-bench's hub scenarios and its
 * rate dispatcher: the options of twin/methods/c2d, the hub request
 * encoder (decoded back with the project's codec), twin Correlation Data,
 * hub status codes, c2d timestamps, the service-API request builders and
 * response parser (src/tools/bench/httpload.c), and the O(1) send ring
 * of rate mode (src/tools/bench/engine.c) and the twin's paced requests.
 * The sources are compiled into
 * this test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../src/tools/bench/engine.c"
#include "../../src/tools/bench/hist.c"
#include "../../src/tools/bench/httpload.c"
#include "../../src/tools/bench/hub.c"
#include "../../src/tools/bench/options.c"
#include "../../src/tools/bench/proto.c"
#include "../../src/tools/bench/scenarios.c"
#include "../../src/tools/bench/scenarios_hub.c"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static mqtt_bytes bytes(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static void test_hub_scenario_options(void **state)
{
    (void)state;
    bench_options o;
    char err[4096];
    char *twin[] = {"iothub-bench", "twin", "--hub", "http://127.0.0.1:8080", "--connstr", "x"};
    assert_int_equal(bench_options_parse(&o, ARGC(twin), twin, err, sizeof err), 0);
    assert_int_equal(o.scenario, SCENARIO_TWIN);
    assert_true(bench_scenario_hub_only(o.scenario));
    assert_false(bench_scenario_uses_http(o.scenario));
    char *methods[] = {"iothub-bench", "methods", "--hub", "http://127.0.0.1:8080", "--connstr",
                       "x", "--http-connections", "64", "--rate", "20000"};
    assert_int_equal(bench_options_parse(&o, ARGC(methods), methods, err, sizeof err), 0);
    assert_int_equal(o.scenario, SCENARIO_METHODS);
    assert_int_equal(o.http_connections, 64);
    assert_true(o.rate == 20000);
    assert_true(bench_scenario_uses_http(o.scenario));
    char *c2d[] = {"iothub-bench", "c2d", "--hub", "http://127.0.0.1:8080", "--connstr", "x"};
    assert_int_equal(bench_options_parse(&o, ARGC(c2d), c2d, err, sizeof err), 0);
    assert_int_equal(o.scenario, SCENARIO_C2D);
    assert_int_equal(o.http_connections, 32);
    assert_string_equal(bench_scenario_name(SCENARIO_C2D), "c2d");
}

static void test_hub_scenario_option_errors(void **state)
{
    (void)state;
    bench_options o;
    char err[4096];
    char *no_hub[] = {"iothub-bench", "twin"};
    assert_int_equal(bench_options_parse(&o, ARGC(no_hub), no_hub, err, sizeof err), -1);
    assert_non_null(strstr(err, "--hub"));
    char *zero[] = {"iothub-bench", "c2d", "--hub", "http://127.0.0.1:1", "--connstr", "x",
                    "--http-connections", "0"};
    assert_int_equal(bench_options_parse(&o, ARGC(zero), zero, err, sizeof err), -1);
    assert_non_null(strstr(err, "--http-connections"));
    char *bad[] = {"iothub-bench", "methods", "--http-connections", "many"};
    assert_int_equal(bench_options_parse(&o, ARGC(bad), bad, err, sizeof err), -1);
}

/* Decodes the single packet in b. */
static void decode_one(const bench_buf *b, mqtt_packet *pkt)
{
    mqtt_frame f;
    assert_int_equal(mqtt_frame_parse(b->data, b->len, 0, &f), MQTT_FRAME_OK);
    assert_int_equal(f.total_len, b->len);
    assert_int_equal(mqtt_decode(b->data, b->len, MQTT_V5, pkt), 0);
}

static void test_hub_request_round_trip(void **state)
{
    (void)state;
    bench_buf b = {0};
    uint8_t corr[TWIN_CORRELATION_LEN];
    twin_correlation_encode(513, TWIN_PATCH, corr);
    assert_true(proto_put_hub_request(&b, bytes("$iothub/twin/patch/reported"),
                                      (mqtt_bytes){corr, sizeof corr}, NULL,
                                      (const uint8_t *)"{\"a\":1}", 7));
    mqtt_packet pkt;
    decode_one(&b, &pkt);
    assert_int_equal(pkt.type, MQTT_PUBLISH);
    assert_int_equal(pkt.u.publish.qos, 0);
    assert_memory_equal(pkt.u.publish.topic.p, "$iothub/twin/patch/reported", 27);
    assert_memory_equal(pkt.u.publish.payload.p, "{\"a\":1}", 7);
    uint16_t slot;
    uint8_t kind;
    assert_true(twin_correlation_decode(pkt.u.publish.props.correlation_data, &slot, &kind));
    assert_int_equal(slot, 513);
    assert_int_equal(kind, TWIN_PATCH);
    mqtt_bytes v;
    assert_false(proto_user_prop(&pkt.u.publish.props, "response-code", &v));
    bench_buf_free(&b);

    assert_true(proto_put_hub_request(&b, bytes("$iothub/responses"), bytes("0123456789abcdef"),
                                      "200", (const uint8_t *)"{}", 2));
    decode_one(&b, &pkt);
    assert_int_equal(pkt.u.publish.props.correlation_data.len, 16);
    assert_true(proto_user_prop(&pkt.u.publish.props, "response-code", &v));
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.p, "200", 3);
    bench_buf_free(&b);

    assert_false(proto_put_hub_request(&b, bytes("$iothub/responses"),
                                       bytes("0123456789abcdefX"), "200", NULL, 0));
    assert_false(proto_put_hub_request(&b, bytes("$iothub/responses"), bytes(""), NULL, NULL, 0));
    bench_buf_free(&b);
}

static void test_correlation_status_stamp(void **state)
{
    (void)state;
    uint16_t slot;
    uint8_t kind, code;
    const uint8_t bad_kind[] = {1, 0, 7};
    assert_false(twin_correlation_decode((mqtt_bytes){bad_kind, 3}, &slot, &kind));
    assert_false(twin_correlation_decode(bytes("ab"), &slot, &kind));
    assert_true(hub_status_code(bytes("0504"), &code));
    assert_int_equal(code, 0x04);
    assert_true(hub_status_code(bytes("06a1"), &code));
    assert_int_equal(code, 0xA1);
    assert_false(hub_status_code(bytes("504"), &code));
    assert_false(hub_status_code(bytes("05x4"), &code));
    assert_true(c2d_stamp_parse(bytes("1234567890123")) == 1234567890123ull);
    assert_true(c2d_stamp_parse(bytes("")) == 0);
    assert_true(c2d_stamp_parse(bytes("12a")) == 0);
    assert_true(c2d_stamp_parse(bytes("99999999999999999999")) == 0);
}

static void test_http_requests(void **state)
{
    (void)state;
    char req[HTTP_REQUEST_MAX];
    size_t n = http_build_method_call(req, sizeof req, "hub.local", "SharedAccessSignature sr=x",
                                      "dev-000001", "bench");
    assert_true(n > 0 && n == strlen(req));
    assert_true(strncmp(req, "POST /twins/dev-000001/methods?api-version=2021-04-12 HTTP/1.1\r\n",
                        64) == 0);
    assert_non_null(strstr(req, "\r\nHost: hub.local\r\n"));
    assert_non_null(strstr(req, "\r\nAuthorization: SharedAccessSignature sr=x\r\n"));
    const char *body = strstr(req, "\r\n\r\n") + 4;
    assert_string_equal(body, "{\"methodName\":\"bench\",\"payload\":null,"
                              "\"responseTimeoutInSeconds\":30,\"connectTimeoutInSeconds\":0}");
    char cl[64];
    snprintf(cl, sizeof cl, "\r\nContent-Length: %zu\r\n", strlen(body));
    assert_non_null(strstr(req, cl));

    n = http_build_c2d_send(req, sizeof req, "h", "tok", "d1", 42);
    assert_true(n > 0);
    assert_true(strncmp(req, "POST /devices/d1/messages/deviceBound?api-version=", 50) == 0);
    assert_string_equal(strstr(req, "\r\n\r\n") + 4, "42");
    assert_non_null(strstr(req, "\r\nContent-Length: 2\r\n"));
    volatile size_t small = 40; /* not a constant: a runtime truncation */
    assert_int_equal(http_build_c2d_send(req, small, "h", "tok", "d1", 42), 0);
}

static void test_http_response_parse(void **state)
{
    (void)state;
    int status = 0;
    size_t total = 0;
    const char ok[] = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX: y\r\n\r\nhelloHTTP/1.1";
    assert_int_equal(http_parse_response(ok, sizeof ok - 1, &status, &total), 1);
    assert_int_equal(status, 200);
    assert_int_equal(total, sizeof ok - 1 - 8);
    assert_int_equal(http_parse_response(ok, 30, &status, &total), 0);
    assert_int_equal(http_parse_response(ok, total - 1, &status, &total), 0);
    const char empty[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(http_parse_response(empty, sizeof empty - 1, &status, &total), 1);
    assert_int_equal(status, 404);
    assert_int_equal(total, sizeof empty - 1);
    const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
    assert_int_equal(http_parse_response(chunked, sizeof chunked - 1, &status, &total), -1);
    const char junk[] = "SMTP 220 hello\r\n\r\n";
    assert_int_equal(http_parse_response(junk, sizeof junk - 1, &status, &total), -1);
}

/* The HTTP --rate clock: request k is due at start + k / rate, exactly
 * (no drift from a rounded interval), none before its time, and requests
 * more than the lateness bound overdue are dropped, counted, and the
 * clock resumes with the first one still within the bound. */
static void test_http_pace(void **state)
{
    (void)state;
    http_pace p;
    uint64_t due = 0, dropped = 0;
    http_pace_start(&p, 3.0, 1000); /* every 333,333,333.3 ns */
    assert_true(http_pace_take(&p, 1000, 50, &due, &dropped));
    assert_int_equal(due, 1000);
    assert_false(http_pace_take(&p, 1000 + 333333332, 50, &due, &dropped));
    assert_true(http_pace_take(&p, 1000 + 333333333, 50, &due, &dropped));
    assert_int_equal(due, 1000 + 333333333);
    assert_false(http_pace_take(&p, 1000 + 333333333, 50, &due, &dropped));
    p.k = 3000; /* after 1,000 s: still on the exact schedule */
    assert_true(http_pace_take(&p, 1000 + 1000000000000ull, 50, &due, &dropped));
    assert_int_equal(due, 1000 + 1000000000000ull);
    assert_int_equal(dropped, 0);

    http_pace_start(&p, 20000.0, 0); /* every 50 µs */
    /* at 1 ms + 20 ns, bound 100 ns: requests 0..19 are over it, 20 is not */
    assert_true(http_pace_take(&p, 1000020, 100, &due, &dropped));
    assert_int_equal(dropped, 20);
    assert_int_equal(due, 1000000);
    assert_false(http_pace_take(&p, 1000020, 100, &due, &dropped));
    /* exactly at the bound is still in time */
    assert_true(http_pace_take(&p, 1050100, 100, &due, &dropped));
    assert_int_equal(due, 1050000);
    assert_int_equal(dropped, 20);

    http_pace_start(&p, 0, 5); /* not paced: nothing is ever due */
    assert_false(http_pace_take(&p, UINT64_MAX / 2, 100, &due, &dropped));
}

static void test_send_ring_fifo_once(void **state)
{
    (void)state;
    bench_client clients[3] = {{0}};
    unsigned ring[3];
    bench_thread t = {.clients = clients, .client_count = 3, .send_ring = ring};
    assert_null(bench_ring_pop(&t));
    bench_ring_push(&t, &clients[2]);
    bench_ring_push(&t, &clients[0]);
    bench_ring_push(&t, &clients[2]); /* already queued: no duplicate */
    assert_int_equal(t.ring_count, 2);
    assert_ptr_equal(bench_ring_pop(&t), &clients[2]);
    bench_ring_push(&t, &clients[1]);
    bench_ring_push(&t, &clients[2]); /* wraps around the end of the array */
    assert_ptr_equal(bench_ring_pop(&t), &clients[0]);
    assert_ptr_equal(bench_ring_pop(&t), &clients[1]);
    assert_ptr_equal(bench_ring_pop(&t), &clients[2]);
    assert_null(bench_ring_pop(&t));
    assert_false(clients[2].in_send_ring);
}

/* Twin rate mode: the first tick starts the clock; each token is one
 * request to the next device with a free slot, each device alternating
 * get and patch; tokens that find every window full are window_full. */
static void test_twin_rate_mode(void **state)
{
    (void)state;
    bench_options o;
    char err[4096];
    char *args[] = {"iothub-bench", "twin", "--hub", "http://127.0.0.1:1", "--connstr", "x",
                    "--clients", "3", "--window", "2", "--rate", "1000"};
    assert_int_equal(bench_options_parse(&o, ARGC(args), args, err, sizeof err), 0);
    bench_run run = {.opt = &o, .total_clients = 3};
    atomic_store(&run.phase, PHASE_RUN);
    bench_client clients[3] = {{0}};
    uint64_t sent_ns[3][2] = {{0}};
    uint16_t free_slots[3][2];
    unsigned ring[3], dirty[3];
    bench_thread t = {.run = &run, .clients = clients, .client_count = 3, .send_ring = ring,
                      .dirty = dirty};
    for (unsigned i = 0; i < 3; i++) {
        clients[i] = (bench_client){.state = CLIENT_READY, .window = 2, .free_count = 2,
                                    .sent_ns = sent_ns[i], .free_slots = free_slots[i]};
        free_slots[i][0] = 1;
        free_slots[i][1] = 0;
        hub_scenario_on_ready(&t, &clients[i]);
    }
    assert_int_equal(t.ring_count, 3);
    assert_int_equal(scenario_poll_timeout_ms(&t), 1);

    const uint64_t start = 1000000000ull;
    hub_scenario_tick(&t, start);
    assert_int_equal(t.stats.sent, 0);
    hub_scenario_tick(&t, start + 4000000); /* 4 ms at 1,000/s */
    assert_int_equal(t.stats.sent, 4);
    assert_int_equal(clients[0].free_count, 0); /* 0, 1, 2, then 0 again */
    assert_int_equal(clients[1].free_count, 1);
    assert_int_equal(clients[2].free_count, 1);
    hub_scenario_tick(&t, start + 9000000); /* 5 more; 2 slots left */
    assert_int_equal(t.stats.sent, 6);
    assert_int_equal(t.stats.errors[ERR_WINDOW_FULL], 3);

    /* device 0 asked get, then patch */
    const char *want[] = {"$iothub/twin/get", "$iothub/twin/patch/reported"};
    bench_buf *b = &clients[0].out;
    size_t at = b->start;
    for (unsigned k = 0; k < 2; k++) {
        mqtt_frame f;
        assert_int_equal(mqtt_frame_parse(b->data + at, b->len - at, 0, &f), MQTT_FRAME_OK);
        mqtt_packet pkt;
        assert_int_equal(mqtt_decode(b->data + at, f.total_len, MQTT_V5, &pkt), 0);
        assert_int_equal(pkt.u.publish.topic.len, strlen(want[k]));
        assert_memory_equal(pkt.u.publish.topic.p, want[k], strlen(want[k]));
        uint16_t slot;
        uint8_t kind;
        assert_true(twin_correlation_decode(pkt.u.publish.props.correlation_data, &slot, &kind));
        assert_int_equal(kind, k == 0 ? TWIN_GET : TWIN_PATCH);
        at += f.total_len;
    }
    assert_int_equal(at, b->start + b->len);

    /* a response frees the slot and puts the device back in the ring */
    while (bench_ring_pop(&t))
        ;
    uint8_t corr[TWIN_CORRELATION_LEN];
    twin_correlation_encode(1, TWIN_GET, corr);
    mqtt_publish resp = {.topic = bytes("$iothub/responses")};
    resp.props.present = MQTT_PROP_BIT(MQTT_PROP_CORRELATION_DATA);
    resp.props.correlation_data = (mqtt_bytes){corr, sizeof corr};
    hub_scenario_on_publish(&t, &clients[0], &resp);
    assert_int_equal(clients[0].free_count, 1);
    assert_ptr_equal(bench_ring_pop(&t), &clients[0]);
    for (unsigned i = 0; i < 3; i++)
        bench_buf_free(&clients[i].out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hub_scenario_options),
        cmocka_unit_test(test_hub_scenario_option_errors),
        cmocka_unit_test(test_hub_request_round_trip),
        cmocka_unit_test(test_correlation_status_stamp),
        cmocka_unit_test(test_http_requests),
        cmocka_unit_test(test_http_response_parse),
        cmocka_unit_test(test_send_ring_fifo_once),
        cmocka_unit_test(test_twin_rate_mode),
        cmocka_unit_test(test_http_pace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

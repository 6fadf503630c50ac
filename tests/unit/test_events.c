/*
 * test_events.c — the events endpoint (src/service/events.c and
 * events_stream.c) over real sockets, with the real store, registry and
 * telemetry: a one-loop net_server runs in a thread, telemetry is produced
 * with telemetry_accept (as the MQTT side will), the tests speak raw HTTP.
 *
 * Covered: query parsing helpers, event JSON rendering (UTF-8 body vs
 * base64, offset, properties), paging with nextSequenceNumber, the 400s,
 * 401/403, partition bounds, checkpoints (PUT/GET, 404, bad bodies, a GET
 * /events starting at a group's checkpoint), and the SSE stream: head,
 * backlog from=start, live events, keep-alive comments, deviceId filter,
 * Last-Event-ID resume, pipelined requests not answered, the group's
 * checkpoint advanced, and the server still serving after clients vanish.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub/registry.h"
#include "hub/telemetry.h"
#include "net/server.h"
#include "socket_testutil.h"
#include "service/internal.h"
#include "service/service.h"
#include "store_testutil.h"
#include "util/log.h"
#include "util/sas.h"
#include "util/time.h"

#define HOST "hub.test"

static struct {
    char dir[64];
    store *st;
    hub_registry *reg;
    hub_telemetry *tel;
    net_server *srv;
    service *svc;
    pthread_t thread;
    int port;
    char owner_key[HUB_KEY_MAX + 1];
    char read_key[HUB_KEY_MAX + 1];
} S;

static void *server_thread(void *arg)
{
    (void)arg;
    net_server_run(S.srv);
    return NULL;
}

static int group_setup(void **state)
{
    (void)state;
    char err[256];
    testutil_tmpdir(S.dir);
    S.st = testutil_open(S.dir, NULL);
    S.reg = registry_open(S.st, err, sizeof err);
    S.tel = telemetry_new(S.st);
    hub_policy p;
    if (!S.reg || !S.tel || !registry_policy_get(S.reg, "iothubowner", &p))
        return -1;
    strcpy(S.owner_key, p.primary_key);
    if (!registry_policy_get(S.reg, "registryRead", &p))
        return -1;
    strcpy(S.read_key, p.primary_key);
    S.srv = net_server_new(1, err, sizeof err);
    service_config cfg = {.hostname = HOST};
    S.svc = S.srv ? service_new(S.srv, S.reg, &cfg) : NULL;
    if (!S.svc || !service_listen(S.svc, "127.0.0.1:0", NULL, &S.port, err, sizeof err))
        return -1;
    service_set_telemetry(S.svc, S.tel, S.st);
    service_set_events_keepalive_ms(S.svc, 300);
    pthread_create(&S.thread, NULL, server_thread, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    net_server_stop(S.srv);
    pthread_join(S.thread, NULL);
    store_close(S.st);
    service_free(S.svc);
    net_server_free(S.srv);
    telemetry_free(S.tel);
    registry_free(S.reg);
    testutil_rmdir(S.dir);
    return 0;
}

/* ---- producing telemetry ----------------------------------------------------- */

static void ignore_done(net_loop *loop, void *arg, hub_status st)
{
    (void)loop;
    *(hub_status *)arg = st;
}

static void send_telemetry(const char *dev, const void *body, size_t len)
{
    hub_status st = HUB_SERVER_ERROR;
    telemetry_prop props[] = {{"@kind", "test"}, {"message-id", "m"}};
    telemetry_msg m = {.device_id = dev, .module_id = "", .auth_method = "sas",
                       .content_type = "text/plain", .props = props, .nprops = 2,
                       .body = body, .body_len = len};
    telemetry_accept(S.tel, &m, NULL, ignore_done, &st);
    store_flush(S.st);
    assert_int_equal(st, HUB_OK);
}

/* ---- a raw HTTP client ----------------------------------------------------------- */

static int cl_open(void)
{
    return loopback_connect(S.port, 5, 0);
}

static char *auth_header(const char *key, const char *policy)
{
    char *tok = sas_token_build(HOST, key, policy, time_wall_ms() / 1000 + 3600);
    char *h = malloc(strlen(tok) + 32);
    sprintf(h, "Authorization: %s\r\n", tok);
    free(tok);
    return h;
}

static void cl_send_request(int fd, const char *method, const char *path, const char *extra,
                            const char *body)
{
    char *auth = auth_header(S.owner_key, "iothubowner");
    char req[4096];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\n%s%sContent-Length: %zu\r\n\r\n%s",
                     method, path, auth, extra ? extra : "", body ? strlen(body) : 0,
                     body ? body : "");
    free(auth);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
}

typedef struct response {
    int status;
    char head[2048];
    json_t *json;
    char *body;
} response;

/* Reads one Content-Length framed response. */
static void cl_read(int fd, response *r)
{
    static char buf[1 << 20];
    size_t len = 0;
    memset(r, 0, sizeof *r);
    char *end = NULL;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
        ssize_t n = recv(fd, buf + len, sizeof buf - len, 0);
        if (n <= 0)
            fail_msg("no response head");
        len += (size_t)n;
    }
    size_t hlen = (size_t)(end - buf) + 4;
    snprintf(r->head, sizeof r->head, "%.*s", (int)hlen, buf);
    sscanf(r->head, "HTTP/1.1 %d", &r->status);
    const char *cl = strcasestr(r->head, "Content-Length: ");
    size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
    while (len < hlen + blen) {
        ssize_t n = recv(fd, buf + len, sizeof buf - len, 0);
        if (n <= 0)
            fail_msg("short body");
        len += (size_t)n;
    }
    r->body = strndup(buf + hlen, blen);
    r->json = json_loads(r->body, 0, NULL);
}

static int call(const char *method, const char *path, const char *body, response *r)
{
    int fd = cl_open();
    cl_send_request(fd, method, path, NULL, body);
    cl_read(fd, r);
    close(fd);
    return r->status;
}

static void done(response *r)
{
    json_decref(r->json);
    free(r->body);
}

static json_int_t int_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("no integer %s", key);
    return json_integer_value(v);
}

/* ---- helpers' tests ------------------------------------------------------------------ */

static void test_parsing_helpers(void **state)
{
    (void)state;
    uint64_t v;
    unsigned p;
    assert_true(events_parse_u64("0", 10, &v) && v == 0);
    assert_true(events_parse_u64("18446744073709551615", UINT64_MAX, &v) && v == UINT64_MAX);
    assert_false(events_parse_u64("18446744073709551616", UINT64_MAX, &v));
    assert_false(events_parse_u64("11", 10, &v));
    assert_false(events_parse_u64("", 10, &v));
    assert_false(events_parse_u64("-1", 10, &v));
    assert_false(events_parse_u64("1x", 10, &v));
    assert_false(events_parse_u64(NULL, 10, &v));
    assert_true(events_parse_event_id("3:42", &p, &v) && p == 3 && v == 42);
    assert_false(events_parse_event_id("3", &p, &v));
    assert_false(events_parse_event_id(":4", &p, &v));
    assert_false(events_parse_event_id("3:", &p, &v));
    assert_false(events_parse_event_id("a:4", &p, &v));
    assert_false(events_parse_event_id("99999999999:4", &p, &v));
    assert_true(events_valid_group("$Default") == false);
    assert_true(events_valid_group("my-group_1.x"));
    assert_false(events_valid_group(""));
    assert_false(events_valid_group("a/b"));
    char long_name[80];
    memset(long_name, 'g', 65);
    long_name[65] = '\0';
    assert_false(events_valid_group(long_name));
}

static void test_event_json(void **state)
{
    (void)state;
    const char *props = "{\"sys\":{\"iothub-connection-device-id\":\"d\"},\"app\":{\"k\":\"v\"}}";
    store_event ev = {.partition = 2, .seq = 7, .enqueued_ms = 1600987195320, .props = props,
                      .props_len = strlen(props), .body = "h\xc3\xa9", .body_len = 3};
    json_t *e = events_event_json(&ev);
    assert_non_null(e);
    assert_int_equal(int_at(e, "partition"), 2);
    assert_int_equal(int_at(e, "sequenceNumber"), 7);
    assert_string_equal(json_string_value(json_object_get(e, "offset")), "7");
    assert_string_equal(json_string_value(json_object_get(e, "enqueuedTime")),
                        "2020-09-24T22:39:55.320Z");
    json_t *sys = json_object_get(e, "systemProperties");
    assert_string_equal(json_string_value(json_object_get(sys, "iothub-enqueuedtime")),
                        "2020-09-24T22:39:55.320Z");
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "properties"), "k")),
                        "v");
    assert_string_equal(json_string_value(json_object_get(e, "body")), "h\xc3\xa9");
    assert_null(json_object_get(e, "bodyBase64"));
    json_decref(e);
    ev.body = "\xff\x00\x01";
    e = events_event_json(&ev);
    assert_null(json_object_get(e, "body"));
    assert_string_equal(json_string_value(json_object_get(e, "bodyBase64")), "/wAB");
    json_decref(e);
    ev.props = "garbage";
    ev.props_len = 7;
    assert_null(events_event_json(&ev));
}

/* ---- paging ------------------------------------------------------------------------- */

static void test_paging(void **state)
{
    (void)state;
    const char *dev = "page-dev";
    unsigned p = store_partition_of(S.st, dev);
    for (int i = 0; i < 5; i++) {
        char body[16];
        int n = snprintf(body, sizeof body, "msg %d", i);
        send_telemetry(dev, body, (size_t)n);
    }
    char path[256];
    response r;
    snprintf(path, sizeof path, "/events?partition=%u&max=2", p);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    assert_non_null(strcasestr(r.head, "application/json"));
    json_t *events = json_object_get(r.json, "events");
    assert_int_equal(json_array_size(events), 2);
    json_int_t first = int_at(json_array_get(events, 0), "sequenceNumber");
    assert_int_equal(int_at(r.json, "nextSequenceNumber"), first + 2);
    json_t *e0 = json_array_get(events, 0);
    assert_string_equal(json_string_value(json_object_get(e0, "body")), "msg 0");
    json_t *sys = json_object_get(e0, "systemProperties");
    assert_string_equal(json_string_value(json_object_get(sys, "iothub-connection-device-id")),
                        dev);
    assert_string_equal(json_string_value(json_object_get(sys, "content-type")), "text/plain");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(e0, "properties"), "kind")), "test");
    json_int_t next = int_at(r.json, "nextSequenceNumber");
    done(&r);
    /* the rest, then an empty page that stays put */
    snprintf(path, sizeof path, "/events?partition=%u&from=%lld&max=100", p, (long long)next);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "events")), 3);
    next = int_at(r.json, "nextSequenceNumber");
    done(&r);
    snprintf(path, sizeof path, "/events?partition=%u&from=%lld", p, (long long)next);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "events")), 0);
    assert_int_equal(int_at(r.json, "nextSequenceNumber"), next);
    done(&r);
    /* a position far ahead is clamped to the end */
    snprintf(path, sizeof path, "/events?partition=%u&from=999999", p);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    assert_int_equal(int_at(r.json, "nextSequenceNumber"), next);
    done(&r);
}

static void test_bad_requests(void **state)
{
    (void)state;
    const char *bad[] = {
        "/events", "/events?partition=99", "/events?partition=x", "/events?partition=0&max=0",
        "/events?partition=0&max=1001", "/events?partition=0&from=-1",
        "/events?partition=0&consumerGroup=a%2Fb", "/events/stream?from=5",
        "/events/stream?from=later", "/events/stream?deviceId=%20",
        "/events/stream?partition=77", "/events/checkpoints/g/77", "/events/checkpoints/a%20b/0",
    };
    response r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (call("GET", bad[i], NULL, &r) != 400)
            fail_msg("%s: %d, want 400", bad[i], r.status);
        assert_non_null(strstr(r.body, "ErrorCode:ArgumentInvalid;"));
        done(&r);
    }
    const char *bodies[] = {"", "[]", "{\"sequenceNumber\":-1}", "{\"sequenceNumber\":\"1\"}",
                            "{}"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        assert_int_equal(call("PUT", "/events/checkpoints/g/0", bodies[i], &r), 400);
        done(&r);
    }
    assert_int_equal(call("POST", "/events", NULL, &r), 405);
    done(&r);
    /* 401 without a token, 403 without ServiceConnect */
    int fd = cl_open();
    const char *noauth = "GET /events?partition=0 HTTP/1.1\r\nHost: x\r\n\r\n";
    send(fd, noauth, strlen(noauth), MSG_NOSIGNAL);
    cl_read(fd, &r);
    assert_int_equal(r.status, 401);
    done(&r);
    close(fd);
    fd = cl_open();
    char *auth = auth_header(S.read_key, "registryRead");
    char req[1024];
    int n = snprintf(req, sizeof req, "GET /events/stream HTTP/1.1\r\nHost: x\r\n%s\r\n", auth);
    free(auth);
    send(fd, req, (size_t)n, MSG_NOSIGNAL);
    cl_read(fd, &r);
    assert_int_equal(r.status, 403);
    done(&r);
    close(fd);
}

static void test_partitions(void **state)
{
    (void)state;
    send_telemetry("bounds-dev", "x", 1);
    response r;
    assert_int_equal(call("GET", "/events/partitions", NULL, &r), 200);
    assert_int_equal(int_at(r.json, "partitionCount"), store_partitions(S.st));
    json_t *parts = json_object_get(r.json, "partitions");
    assert_int_equal(json_array_size(parts), store_partitions(S.st));
    unsigned p = store_partition_of(S.st, "bounds-dev");
    json_t *mine = json_array_get(parts, p);
    assert_int_equal(int_at(mine, "partition"), p);
    assert_false(json_is_true(json_object_get(mine, "empty")));
    assert_int_equal(int_at(mine, "lastSequenceNumber") + 1, int_at(mine, "nextSequenceNumber"));
    assert_true(int_at(mine, "firstSequenceNumber") <= int_at(mine, "lastSequenceNumber"));
    done(&r);
}

static void test_checkpoints(void **state)
{
    (void)state;
    const char *dev = "cp-dev";
    unsigned p = store_partition_of(S.st, dev);
    for (int i = 0; i < 3; i++)
        send_telemetry(dev, "cp", 2);
    char path[128], body[64];
    response r;
    snprintf(path, sizeof path, "/events/checkpoints/grp1/%u", p);
    assert_int_equal(call("GET", path, NULL, &r), 404);
    done(&r);
    /* without a checkpoint a group starts at the oldest event */
    snprintf(path, sizeof path, "/events?partition=%u&consumerGroup=grp1&max=1000", p);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    json_int_t next = int_at(r.json, "nextSequenceNumber");
    json_int_t first = int_at(json_array_get(json_object_get(r.json, "events"), 0),
                              "sequenceNumber");
    assert_int_equal(first, int_at(r.json, "firstSequenceNumber"));
    done(&r);
    snprintf(path, sizeof path, "/events/checkpoints/grp1/%u", p);
    snprintf(body, sizeof body, "{\"sequenceNumber\":%lld}", (long long)(next - 1));
    assert_int_equal(call("PUT", path, body, &r), 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "consumerGroup")), "grp1");
    assert_int_equal(int_at(r.json, "sequenceNumber"), next - 1);
    done(&r);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    assert_int_equal(int_at(r.json, "sequenceNumber"), next - 1);
    done(&r);
    /* now the group resumes at its checkpoint: exactly the last event */
    snprintf(path, sizeof path, "/events?partition=%u&consumerGroup=grp1", p);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    json_t *events = json_object_get(r.json, "events");
    assert_int_equal(json_array_size(events), 1);
    assert_int_equal(int_at(json_array_get(events, 0), "sequenceNumber"), next - 1);
    done(&r);
}

/* ---- the stream -------------------------------------------------------------------- */

typedef struct sse_client {
    int fd;
    char buf[1 << 16];
    size_t len;
} sse_client;

/* Opens a stream and checks its head. */
static void sse_open(sse_client *c, const char *path, const char *extra)
{
    memset(c, 0, sizeof *c);
    c->fd = cl_open();
    cl_send_request(c->fd, "GET", path, extra, NULL);
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1, 0);
        if (n <= 0)
            fail_msg("no stream head");
        c->len += (size_t)n;
    }
    size_t hlen = (size_t)(end - c->buf) + 4;
    c->buf[c->len] = '\0';
    assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strcasestr(c->buf, "Content-Type: text/event-stream\r\n"));
    assert_non_null(strcasestr(c->buf, "Connection: close\r\n"));
    assert_null(strcasestr(c->buf, "Content-Length"));
    memmove(c->buf, c->buf + hlen, c->len - hlen);
    c->len -= hlen;
}

/* The next SSE message (up to a blank line), comments included; NULL on
 * timeout. Returned text is valid until the next call. */
static char *sse_next(sse_client *c)
{
    static char msg[1 << 16];
    char *end;
    while (!(end = memmem(c->buf, c->len, "\n\n", 2))) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1, 0);
        if (n <= 0)
            return NULL;
        c->len += (size_t)n;
    }
    size_t mlen = (size_t)(end - c->buf) + 2;
    memcpy(msg, c->buf, mlen);
    msg[mlen] = '\0';
    memmove(c->buf, c->buf + mlen, c->len - mlen);
    c->len -= mlen;
    return msg;
}

/* The next event message, skipping comments. */
static char *sse_next_event(sse_client *c)
{
    char *m;
    while ((m = sse_next(c)) && m[0] == ':')
        ;
    return m;
}

static void test_stream(void **state)
{
    (void)state;
    const char *dev = "sse-dev";
    unsigned p = store_partition_of(S.st, dev);
    send_telemetry(dev, "backlog", 7);
    char path[256];
    sse_client c;
    /* from=start on the device's partition: the backlog first */
    snprintf(path, sizeof path, "/events/stream?partition=%u&from=start&deviceId=%s", p, dev);
    sse_open(&c, path, NULL);
    char *m = sse_next_event(&c);
    assert_non_null(m);
    assert_true(strncmp(m, "id: ", 4) == 0);
    assert_non_null(strstr(m, "\ndata: {"));
    assert_non_null(strstr(m, "\"body\":\"backlog\""));
    unsigned ep;
    unsigned long long seq;
    assert_int_equal(sscanf(m, "id: %u:%llu", &ep, &seq), 2);
    assert_int_equal(ep, p);
    /* live: a new event arrives without asking; another device's does not */
    send_telemetry("someone-else", "other", 5);
    send_telemetry(dev, "live", 4);
    m = sse_next_event(&c);
    assert_non_null(m);
    assert_non_null(strstr(m, "\"body\":\"live\""));
    /* keep-alive comments flow while idle */
    m = sse_next(&c);
    assert_non_null(m);
    assert_string_equal(m, ": keep-alive\n\n");
    close(c.fd);

    /* Last-Event-ID resumes after the named event */
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %u:%llu\r\n", p, seq);
    snprintf(path, sizeof path, "/events/stream?deviceId=%s", dev);
    sse_open(&c, path, hdr);
    m = sse_next_event(&c);
    assert_non_null(m);
    assert_non_null(strstr(m, "\"body\":\"live\""));
    close(c.fd);

    /* default start is the end: nothing old, only new */
    snprintf(path, sizeof path, "/events/stream?partition=%u", p);
    sse_open(&c, path, NULL);
    usleep(100 * 1000); /* the stream has looked up the end by now */
    send_telemetry(dev, "fresh", 5);
    m = sse_next_event(&c);
    assert_non_null(m);
    assert_non_null(strstr(m, "\"body\":\"fresh\""));
    close(c.fd);
}

static void test_stream_group_and_pipelining(void **state)
{
    (void)state;
    const char *dev = "grp-dev";
    unsigned p = store_partition_of(S.st, dev);
    send_telemetry(dev, "one", 3);
    char path[256];
    sse_client c;
    /* a pipelined request after the stream request is never answered */
    snprintf(path, sizeof path, "/events/stream?partition=%u&from=start&consumerGroup=mon", p);
    sse_open(&c, path, NULL);
    char *m = sse_next_event(&c);
    assert_non_null(m);
    unsigned ep;
    unsigned long long seq;
    assert_int_equal(sscanf(m, "id: %u:%llu", &ep, &seq), 2);
    cl_send_request(c.fd, "GET", "/events/partitions", NULL, NULL);
    m = sse_next(&c);
    assert_non_null(m);
    assert_null(strstr(m, "HTTP/1.1"));
    close(c.fd);
    /* the group's checkpoint moved past what the stream sent */
    response r;
    usleep(100 * 1000);
    snprintf(path, sizeof path, "/events/checkpoints/mon/%u", p);
    assert_int_equal(call("GET", path, NULL, &r), 200);
    assert_true((unsigned long long)int_at(r.json, "sequenceNumber") >= seq + 1);
    done(&r);
    /* a stream for the group (no from) starts there: only new events */
    snprintf(path, sizeof path, "/events/stream?partition=%u&consumerGroup=mon", p);
    sse_open(&c, path, NULL);
    send_telemetry(dev, "two", 3);
    m = sse_next_event(&c);
    assert_non_null(m);
    assert_non_null(strstr(m, "\"body\":\"two\""));
    close(c.fd);
    /* many clients that vanish mid-stream leave a serving server */
    for (int i = 0; i < 20; i++) {
        sse_open(&c, "/events/stream?from=start", NULL);
        close(c.fd);
    }
    assert_int_equal(call("GET", "/events/partitions", NULL, &r), 200);
    done(&r);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsing_helpers),
        cmocka_unit_test(test_event_json),
        cmocka_unit_test(test_paging),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_partitions),
        cmocka_unit_test(test_checkpoints),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_group_and_pipelining),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

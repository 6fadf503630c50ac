/*
 * test_broker_session.c — the broker's session state machines, end to end
 * inside one process.
 *
 * Each test starts a real server as src/main.c wires it (net_server with two
 * event loops on 127.0.0.1, port 0; the open broker application with open
 * topics and anonymous clients; broker_new + broker_listen), runs it on a
 * thread, and talks to it through plain blocking sockets. The test client
 * below speaks MQTT with our own codec (mqtt_encode / mqtt_frame_parse /
 * mqtt_decode), so every byte the broker sends is checked by the decoder.
 *
 * Covered: QoS 1 and QoS 2 in both directions (PUBACK, PUBREC/PUBREL/PUBCOMP,
 * a resent QoS 2 PUBLISH not delivered twice, PUBREL for an unknown id), the
 * client's Receive Maximum holding back messages until a slot is released,
 * session resume (Session Present, redelivery with DUP and of PUBREL,
 * messages queued while offline), Clean Start, Session Expiry 0 (in CONNECT
 * or in DISCONNECT), MQTT 3.1.1 clean session, session take-over, and the
 * application's deadline (broker_client_set_deadline) on the timer it
 * shares with the keep-alive: it passes, moves, clears, and the keep-alive
 * still fires beside it; finding a connected client by its client id
 * (broker_owner_net_loop from the test thread, broker_find_connected in a
 * task on that loop, and in the app's disconnected()) before, during and
 * after a connection, across a take-over, and with a stored session; and
 * broker_client_lookup, which also wants the connection's handle (an
 * earlier connection's finds nothing after a take-over).
 *
 * Every socket has a receive timeout (SOCKET_TIMEOUT_S) so a missing packet
 * fails the test instead of hanging it; "nothing arrives" is checked by
 * polling for SILENCE_MS. Each test stops its server (net_server_stop, join)
 * and frees everything, so the file runs clean under LeakSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/open_app.h"
#include "mqtt/codec.h"
#include "net/server.h"
#include "util/log.h"
#include "util/time.h"

#define SOCKET_TIMEOUT_S 3
#define SILENCE_MS 300
#define SESSION_KEPT_S 60

/* ---- the server under test ------------------------------------------------ */

typedef struct test_server {
    open_app *app;
    net_server *net;
    broker *broker;
    pthread_t thread;
    int run_result;
    int port;
} test_server;

static void *run_server_thread(void *arg)
{
    test_server *srv = arg;
    srv->run_result = net_server_run(srv->net);
    return NULL;
}

/* The deadline tests' application: the open broker's, plus a deadline set
 * in connected() (deadline_app.first_ms from then), moved by a QoS 0
 * PUBLISH to "deadline/move" whose payload is the new distance in ms (0
 * clears it), and DISCONNECT 0x87 when it passes. */
static struct {
    broker_app open;
    uint64_t first_ms;
    atomic_int passed;
} deadline_app;

static void deadline_connected(void *ctx, broker_client *c)
{
    if (deadline_app.open.connected)
        deadline_app.open.connected(ctx, c);
    broker_client_set_deadline(c, time_wall_ms() + deadline_app.first_ms);
}

static broker_publish_action deadline_publish(void *ctx, broker_client *c, mqtt_bytes topic,
                                              const mqtt_publish *pkt, broker_answer *answer)
{
    if (!mqtt_bytes_eq_str(topic, "deadline/move"))
        return deadline_app.open.publish(ctx, c, topic, pkt, answer);
    char ms[16] = "";
    snprintf(ms, sizeof ms, "%.*s", (int)pkt->payload.len, (const char *)pkt->payload.p);
    uint64_t distance = strtoull(ms, NULL, 10);
    broker_client_set_deadline(c, distance ? time_wall_ms() + distance : 0);
    answer->reason = MQTT_RC_SUCCESS;
    return BROKER_PUBLISH_DONE;
}

static void deadline_passed(void *ctx, broker_client *c)
{
    (void)ctx;
    atomic_fetch_add(&deadline_app.passed, 1);
    broker_client_disconnect(c, MQTT_RC_NOT_AUTHORIZED, "deadline passed");
}

/* The finding tests' application: the open broker's, plus a record of
 * what broker_find_connected answers for a client's own id inside the
 * app's disconnected() of that client (the hub relies on it to tell a
 * take-over from the end of the device's connection). */
#define CLOSES_MAX 16
typedef struct close_record {
    broker_client_handle closed; /* the client disconnected() was called for */
    broker_client_handle found;  /* the client connected under its id then; 0 = none */
} close_record;

static struct {
    broker_app open;
    broker *b;
    pthread_mutex_t lock;
    close_record closes[CLOSES_MAX];
    size_t nclosed;
} find_app = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void find_disconnected(void *ctx, broker_client *c, uint8_t reason)
{
    const broker_client_info *info = broker_client_get_info(c);
    broker_client *now = broker_find_connected(find_app.b, broker_client_loop(c),
                                               (const char *)info->client_id.p,
                                               info->client_id.len);
    pthread_mutex_lock(&find_app.lock);
    if (find_app.nclosed < CLOSES_MAX)
        find_app.closes[find_app.nclosed++] =
            (close_record){broker_client_get_handle(c), now ? broker_client_get_handle(now) : 0};
    pthread_mutex_unlock(&find_app.lock);
    if (find_app.open.disconnected)
        find_app.open.disconnected(ctx, c, reason);
}

typedef enum test_app { APP_OPEN, APP_DEADLINES, APP_FIND } test_app;

static int server_start(void **state, test_app kind)
{
    char err[256];
    test_server *srv = calloc(1, sizeof *srv);
    assert_non_null(srv);
    open_app_config app_cfg = {.open_topics = true, .allow_anonymous = true};
    srv->app = open_app_new(&app_cfg, err, sizeof err);
    assert_non_null(srv->app);
    srv->net = net_server_new(2, err, sizeof err);
    assert_non_null(srv->net);
    broker_app callbacks;
    open_app_bind(srv->app, &callbacks);
    if (kind == APP_DEADLINES) {
        deadline_app.open = callbacks;
        atomic_store(&deadline_app.passed, 0);
        callbacks.connected = deadline_connected;
        callbacks.publish = deadline_publish;
        callbacks.deadline_passed = deadline_passed;
    }
    if (kind == APP_FIND) {
        find_app.open = callbacks;
        find_app.nclosed = 0;
        callbacks.disconnected = find_disconnected;
    }
    broker_limits limits;
    broker_limits_default(&limits);
    srv->broker = broker_new(srv->net, &limits, &callbacks);
    assert_non_null(srv->broker);
    find_app.b = srv->broker; /* before the loops' thread starts */
    if (!broker_listen(srv->broker, "127.0.0.1:0", NULL, &srv->port, err, sizeof err))
        fail_msg("broker_listen: %s", err);
    assert_true(srv->port > 0);
    assert_int_equal(pthread_create(&srv->thread, NULL, run_server_thread, srv), 0);
    *state = srv;
    return 0;
}

static int server_setup(void **state) { return server_start(state, APP_OPEN); }
static int deadline_server_setup(void **state) { return server_start(state, APP_DEADLINES); }
static int find_server_setup(void **state) { return server_start(state, APP_FIND); }

static int server_teardown(void **state)
{
    test_server *srv = *state;
    net_server_stop(srv->net);
    pthread_join(srv->thread, NULL);
    assert_int_equal(srv->run_result, 0);
    broker_free(srv->broker);
    net_server_free(srv->net);
    open_app_free(srv->app);
    free(srv);
    return 0;
}

/* ---- a blocking MQTT test client on our codec ---------------------------- */

typedef struct test_client {
    int fd;
    uint8_t version;
    uint8_t buf[16384];
    size_t len;      /* bytes buffered */
    size_t last_len; /* bytes of the packet returned last (dropped on next read) */
} test_client;

typedef struct connect_opts {
    uint8_t version;          /* MQTT_V5 or MQTT_V311 */
    const char *client_id;
    bool clean_start;
    uint32_t session_expiry;  /* MQTT 5; 0 = property left out */
    uint16_t receive_maximum; /* MQTT 5; 0 = property left out */
    uint16_t keep_alive;      /* seconds; 0 = 60 */
} connect_opts;

static test_client *tc_open(int port, uint8_t version)
{
    test_client *tc = calloc(1, sizeof *tc);
    assert_non_null(tc);
    tc->version = version;
    tc->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(tc->fd >= 0);
    struct timeval timeout = {.tv_sec = SOCKET_TIMEOUT_S};
    setsockopt(tc->fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(tc->fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    int one = 1;
    setsockopt(tc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(tc->fd, (struct sockaddr *)&addr, sizeof addr), 0);
    return tc;
}

static void tc_close(test_client *tc)
{
    close(tc->fd);
    free(tc);
}

static void tc_send(test_client *tc, const mqtt_packet *pkt)
{
    uint8_t out[4096];
    size_t n = mqtt_encoded_size(pkt, tc->version);
    assert_true(n > 0 && n <= sizeof out);
    assert_int_equal(mqtt_encode(pkt, tc->version, out), n);
    for (size_t sent = 0; sent < n;) {
        ssize_t w = send(tc->fd, out + sent, n - sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fail_msg("send: %s", strerror(errno));
        sent += (size_t)w;
    }
}

typedef enum recv_result { RECV_PACKET, RECV_EOF, RECV_TIMEOUT } recv_result;

/* Reads the next packet; its slices stay valid until the next call. */
static recv_result tc_recv(test_client *tc, mqtt_packet *out)
{
    memmove(tc->buf, tc->buf + tc->last_len, tc->len - tc->last_len);
    tc->len -= tc->last_len;
    tc->last_len = 0;
    for (;;) {
        mqtt_frame frame;
        mqtt_frame_status st = mqtt_frame_parse(tc->buf, tc->len, 0, &frame);
        assert_int_not_equal(st, MQTT_FRAME_ERROR);
        if (st == MQTT_FRAME_OK) {
            uint8_t rc = mqtt_decode(tc->buf, frame.total_len, tc->version, out);
            if (rc != 0)
                fail_msg("broker sent an undecodable %s (%s)",
                         mqtt_packet_type_name(frame.type), mqtt_reason_name(rc));
            tc->last_len = frame.total_len;
            return RECV_PACKET;
        }
        assert_true(tc->len < sizeof tc->buf);
        ssize_t n = recv(tc->fd, tc->buf + tc->len, sizeof tc->buf - tc->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return RECV_EOF;
        if (n < 0)
            return RECV_TIMEOUT;
        tc->len += (size_t)n;
    }
}

static void tc_expect(test_client *tc, uint8_t type, mqtt_packet *out)
{
    recv_result r = tc_recv(tc, out);
    if (r != RECV_PACKET)
        fail_msg("expected %s, got %s", mqtt_packet_type_name(type),
                 r == RECV_EOF ? "end of connection" : "nothing (timeout)");
    if (out->type != type)
        fail_msg("expected %s, got %s", mqtt_packet_type_name(type),
                 mqtt_packet_type_name(out->type));
}

static void tc_expect_eof(test_client *tc)
{
    mqtt_packet pkt;
    recv_result r = tc_recv(tc, &pkt);
    if (r != RECV_EOF)
        fail_msg("expected the broker to close, got %s",
                 r == RECV_PACKET ? mqtt_packet_type_name(pkt.type) : "a timeout");
}

/* Nothing arrives within SILENCE_MS (neither a packet nor a close). */
static void tc_expect_silence(test_client *tc)
{
    if (tc->len > tc->last_len)
        fail_msg("unexpected bytes already buffered");
    struct pollfd pfd = {.fd = tc->fd, .events = POLLIN};
    int n = poll(&pfd, 1, SILENCE_MS);
    if (n != 0) {
        mqtt_packet pkt;
        recv_result r = tc_recv(tc, &pkt);
        fail_msg("expected silence, got %s",
                 r == RECV_PACKET ? mqtt_packet_type_name(pkt.type) : "end of connection");
    }
}

/* Opens a connection and completes CONNECT/CONNACK (reason 0). */
static test_client *tc_connect(int port, const connect_opts *o, bool *session_present)
{
    test_client *tc = tc_open(port, o->version);
    mqtt_packet pkt = {.type = MQTT_CONNECT};
    mqtt_connect *c = &pkt.u.connect;
    c->protocol_name = MQTT_BYTES_LIT("MQTT");
    c->protocol_version = o->version;
    c->clean_start = o->clean_start;
    c->keep_alive = o->keep_alive ? o->keep_alive : 60;
    c->client_id = (mqtt_bytes){(const uint8_t *)o->client_id, (uint32_t)strlen(o->client_id)};
    if (o->session_expiry) {
        c->props.session_expiry_interval = o->session_expiry;
        MQTT_SET(&c->props, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
    }
    if (o->receive_maximum) {
        c->props.receive_maximum = o->receive_maximum;
        MQTT_SET(&c->props, MQTT_PROP_RECEIVE_MAXIMUM);
    }
    tc_send(tc, &pkt);
    mqtt_packet ack;
    tc_expect(tc, MQTT_CONNACK, &ack);
    assert_int_equal(ack.u.connack.reason, 0);
    if (session_present)
        *session_present = ack.u.connack.session_present;
    return tc;
}

static test_client *tc_connect_v5(int port, const char *client_id)
{
    connect_opts o = {.version = MQTT_V5, .client_id = client_id, .clean_start = true};
    return tc_connect(port, &o, NULL);
}

static void tc_subscribe(test_client *tc, const char *filter, uint8_t qos)
{
    mqtt_sub_entry entry = {
        .filter = {(const uint8_t *)filter, (uint32_t)strlen(filter)},
        .options = qos,
    };
    mqtt_packet pkt = {.type = MQTT_SUBSCRIBE};
    pkt.u.subscribe.packet_id = 1;
    pkt.u.subscribe.count = 1;
    pkt.u.subscribe.list = &entry;
    tc_send(tc, &pkt);
    mqtt_packet ack;
    tc_expect(tc, MQTT_SUBACK, &ack);
    assert_int_equal(ack.u.suback.count, 1);
    assert_int_equal(ack.u.suback.reasons[0], qos);
}

static void tc_publish(test_client *tc, const char *topic, const char *payload, uint8_t qos,
                       uint16_t packet_id, bool dup)
{
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    mqtt_publish *p = &pkt.u.publish;
    p->qos = qos;
    p->dup = dup;
    p->packet_id = packet_id;
    p->topic = (mqtt_bytes){(const uint8_t *)topic, (uint32_t)strlen(topic)};
    p->payload = (mqtt_bytes){(const uint8_t *)payload, (uint32_t)strlen(payload)};
    tc_send(tc, &pkt);
}

static void tc_ack(test_client *tc, uint8_t type, uint16_t packet_id, uint8_t reason)
{
    mqtt_packet pkt = {.type = type};
    pkt.u.ack.packet_id = packet_id;
    pkt.u.ack.reason = reason;
    tc_send(tc, &pkt);
}

/* Expects an acknowledgement of `type` for `packet_id`; returns its reason. */
static uint8_t tc_expect_ack(test_client *tc, uint8_t type, uint16_t packet_id)
{
    mqtt_packet pkt;
    tc_expect(tc, type, &pkt);
    assert_int_equal(pkt.u.ack.packet_id, packet_id);
    return pkt.u.ack.reason;
}

enum { DUP_CLEAR = 0, DUP_SET = 1, DUP_EITHER = -1 };

/* Expects a PUBLISH of this payload at this QoS, with the DUP flag as given
 * (DUP_EITHER: not checked); returns its packet id. */
static uint16_t tc_expect_publish(test_client *tc, const char *payload, uint8_t qos, int dup)
{
    mqtt_packet pkt;
    tc_expect(tc, MQTT_PUBLISH, &pkt);
    if (!mqtt_bytes_eq_str(pkt.u.publish.payload, payload))
        fail_msg("expected payload \"%s\", got \"%.*s\"", payload,
                 (int)pkt.u.publish.payload.len, (const char *)pkt.u.publish.payload.p);
    assert_int_equal(pkt.u.publish.qos, qos);
    if (dup != DUP_EITHER)
        assert_int_equal(pkt.u.publish.dup, dup);
    return pkt.u.publish.packet_id;
}

/* QoS 1 publish answered by PUBACK; returns the PUBACK reason. */
static uint8_t publish_qos1(test_client *tc, const char *topic, const char *payload,
                            uint16_t packet_id)
{
    tc_publish(tc, topic, payload, 1, packet_id, false);
    return tc_expect_ack(tc, MQTT_PUBACK, packet_id);
}

/* The whole QoS 2 exchange from the publisher's side; returns the PUBREC reason. */
static uint8_t publish_qos2(test_client *tc, const char *topic, const char *payload,
                            uint16_t packet_id)
{
    tc_publish(tc, topic, payload, 2, packet_id, false);
    uint8_t reason = tc_expect_ack(tc, MQTT_PUBREC, packet_id);
    tc_ack(tc, MQTT_PUBREL, packet_id, 0);
    assert_int_equal(tc_expect_ack(tc, MQTT_PUBCOMP, packet_id), 0);
    return reason;
}

static void tc_disconnect(test_client *tc, bool with_expiry, uint32_t expiry)
{
    mqtt_packet pkt = {.type = MQTT_DISCONNECT};
    if (with_expiry) {
        pkt.u.disconnect.props.session_expiry_interval = expiry;
        MQTT_SET(&pkt.u.disconnect.props, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
    }
    tc_send(tc, &pkt);
    tc_expect_eof(tc);
    tc_close(tc);
}

/* ---- QoS 1 ----------------------------------------------------------------- */

static void test_qos1_inbound_puback(void **state)
{
    test_server *srv = *state;
    test_client *pub = tc_connect_v5(srv->port, "q1-pub");
    /* nobody subscribed yet: still acknowledged, with 0x10 */
    assert_int_equal(publish_qos1(pub, "q1/t", "lonely", 10), MQTT_RC_NO_MATCHING_SUBSCRIBERS);
    test_client *sub = tc_connect_v5(srv->port, "q1-sub");
    tc_subscribe(sub, "q1/#", 1);
    assert_int_equal(publish_qos1(pub, "q1/t", "heard", 11), MQTT_RC_SUCCESS);
    uint16_t id = tc_expect_publish(sub, "heard", 1, DUP_CLEAR);
    assert_true(id != 0);
    tc_ack(sub, MQTT_PUBACK, id, 0);
    /* the same packet id may be reused once acknowledged */
    assert_int_equal(publish_qos1(pub, "q1/t", "again", 11), MQTT_RC_SUCCESS);
    tc_ack(sub, MQTT_PUBACK, tc_expect_publish(sub, "again", 1, DUP_CLEAR), 0);
    tc_expect_silence(sub);
    tc_disconnect(sub, false, 0);
    tc_disconnect(pub, false, 0);
}

/*
 * The client's Receive Maximum is the broker's outbound window: with
 * window N and N+1 messages, the last one waits until one in flight is
 * settled (PUBACK for QoS 1; PUBCOMP, not PUBREC, for QoS 2).
 */
typedef struct window_case {
    uint16_t receive_maximum;
    uint8_t qos;
} window_case;

static const window_case window_cases[] = {
    {1, 1}, {2, 1}, {5, 1}, {1, 2}, {2, 2},
};

static void test_outbound_window_honours_receive_maximum(void **state)
{
    test_server *srv = *state;
    for (size_t k = 0; k < sizeof window_cases / sizeof *window_cases; k++) {
        const window_case *wc = &window_cases[k];
        char sub_id[32], topic[32], payload[32];
        snprintf(sub_id, sizeof sub_id, "win-sub-%zu", k);
        snprintf(topic, sizeof topic, "win/%zu", k);
        connect_opts o = {.version = MQTT_V5, .client_id = sub_id, .clean_start = true,
                          .receive_maximum = wc->receive_maximum};
        test_client *sub = tc_connect(srv->port, &o, NULL);
        tc_subscribe(sub, topic, wc->qos);
        test_client *pub = tc_connect_v5(srv->port, "win-pub");
        for (uint16_t i = 0; i <= wc->receive_maximum; i++) {
            snprintf(payload, sizeof payload, "m%u", i);
            if (wc->qos == 1)
                assert_int_equal(publish_qos1(pub, topic, payload, (uint16_t)(i + 1)), 0);
            else
                assert_int_equal(publish_qos2(pub, topic, payload, (uint16_t)(i + 1)), 0);
        }
        uint16_t ids[8];
        for (uint16_t i = 0; i < wc->receive_maximum; i++) {
            snprintf(payload, sizeof payload, "m%u", i);
            ids[i] = tc_expect_publish(sub, payload, wc->qos, DUP_CLEAR);
        }
        tc_expect_silence(sub); /* the window is full */
        if (wc->qos == 2) {
            tc_ack(sub, MQTT_PUBREC, ids[0], 0);
            assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, ids[0]), 0);
            tc_expect_silence(sub); /* PUBREC does not free the slot */
            tc_ack(sub, MQTT_PUBCOMP, ids[0], 0);
        } else {
            tc_ack(sub, MQTT_PUBACK, ids[0], 0);
        }
        snprintf(payload, sizeof payload, "m%u", wc->receive_maximum);
        tc_expect_publish(sub, payload, wc->qos, DUP_CLEAR);
        tc_expect_silence(sub);
        tc_disconnect(pub, false, 0);
        tc_disconnect(sub, false, 0);
    }
}

/* ---- QoS 2 ----------------------------------------------------------------- */

static void test_qos2_inbound_exactly_once(void **state)
{
    test_server *srv = *state;
    test_client *sub = tc_connect_v5(srv->port, "q2in-sub");
    tc_subscribe(sub, "q2in", 0);
    test_client *pub = tc_connect_v5(srv->port, "q2in-pub");

    tc_publish(pub, "q2in", "once", 2, 7, false);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBREC, 7), 0);
    tc_expect_publish(sub, "once", 0, DUP_CLEAR);

    /* the publisher did not see PUBREC and resends: acknowledged, not delivered */
    tc_publish(pub, "q2in", "once", 2, 7, true);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBREC, 7), 0);
    tc_expect_silence(sub);

    tc_ack(pub, MQTT_PUBREL, 7, 0);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBCOMP, 7), 0);
    /* PUBREL again, or for an id never used: Packet Identifier not found */
    tc_ack(pub, MQTT_PUBREL, 7, 0);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBCOMP, 7), MQTT_RC_PACKET_ID_NOT_FOUND);
    tc_ack(pub, MQTT_PUBREL, 99, 0);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBCOMP, 99), MQTT_RC_PACKET_ID_NOT_FOUND);

    /* after PUBCOMP the id is free: the same id now carries a new message */
    assert_int_equal(publish_qos2(pub, "q2in", "twice", 7), 0);
    tc_expect_publish(sub, "twice", 0, DUP_CLEAR);
    tc_expect_silence(sub);
    tc_disconnect(pub, false, 0);
    tc_disconnect(sub, false, 0);
}

static void test_qos2_outbound_flow(void **state)
{
    test_server *srv = *state;
    test_client *sub = tc_connect_v5(srv->port, "q2out-sub");
    tc_subscribe(sub, "q2out", 2);
    test_client *pub = tc_connect_v5(srv->port, "q2out-pub");
    assert_int_equal(publish_qos2(pub, "q2out", "exactly", 1), 0);

    uint16_t id = tc_expect_publish(sub, "exactly", 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, id, 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, id), 0);
    tc_ack(sub, MQTT_PUBCOMP, id, 0);
    tc_expect_silence(sub);

    /* a PUBREC for an id not in flight: PUBREL with 0x92 */
    tc_ack(sub, MQTT_PUBREC, (uint16_t)(id + 100), 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, (uint16_t)(id + 100)),
                     MQTT_RC_PACKET_ID_NOT_FOUND);

    /* a failing PUBREC ends the flow at once: no PUBREL */
    assert_int_equal(publish_qos2(pub, "q2out", "refused", 2), 0);
    id = tc_expect_publish(sub, "refused", 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, id, MQTT_RC_QUOTA_EXCEEDED);
    tc_expect_silence(sub);
    tc_disconnect(pub, false, 0);
    tc_disconnect(sub, false, 0);
}

/* ---- sessions ---------------------------------------------------------------- */

/*
 * A subscriber drops its connection with a QoS 1 message unacknowledged
 * and a QoS 2 message between PUBREC and PUBCOMP; one more message is
 * published while it is away. Resuming, it gets Session Present = 1, the
 * QoS 1 PUBLISH again with DUP = 1 and the same id, the PUBREL again, and
 * then the queued message.
 */
static void test_session_resume_redelivers(void **state)
{
    test_server *srv = *state;
    connect_opts o = {.version = MQTT_V5, .client_id = "resume-sub", .clean_start = true,
                      .session_expiry = SESSION_KEPT_S};
    bool present = true;
    test_client *sub = tc_connect(srv->port, &o, &present);
    assert_false(present);
    tc_subscribe(sub, "resume/#", 2);
    test_client *pub = tc_connect_v5(srv->port, "resume-pub");

    assert_int_equal(publish_qos1(pub, "resume/a", "unacked", 1), 0);
    assert_int_equal(publish_qos2(pub, "resume/b", "half-done", 2), 0);
    uint16_t id1 = tc_expect_publish(sub, "unacked", 1, DUP_CLEAR);
    uint16_t id2 = tc_expect_publish(sub, "half-done", 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, id2, 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, id2), 0);
    tc_close(sub); /* network loss: no DISCONNECT */

    /* published while the subscriber is away (or being noticed as gone) */
    assert_int_equal(publish_qos1(pub, "resume/c", "while-away", 3), 0);

    o.clean_start = false;
    sub = tc_connect(srv->port, &o, &present);
    assert_true(present);
    assert_int_equal(tc_expect_publish(sub, "unacked", 1, DUP_SET), id1);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, id2), 0);
    /* DUP is set if the broker sent it before it noticed the connection was gone */
    uint16_t id3 = tc_expect_publish(sub, "while-away", 1, DUP_EITHER);
    assert_true(id3 != id1 && id3 != id2);
    tc_ack(sub, MQTT_PUBACK, id1, 0);
    tc_ack(sub, MQTT_PUBCOMP, id2, 0);
    tc_ack(sub, MQTT_PUBACK, id3, 0);
    tc_expect_silence(sub);

    /* everything settled: a further resume has nothing to resend */
    tc_disconnect(sub, false, 0);
    sub = tc_connect(srv->port, &o, &present);
    assert_true(present);
    tc_expect_silence(sub);
    tc_disconnect(sub, false, 0);
    tc_disconnect(pub, false, 0);
}

/*
 * Whether a session survives from one connection to the next. The first
 * connection subscribes and ends with DISCONNECT (optionally changing the
 * Session Expiry Interval); the second tells by Session Present and by
 * whether the subscription still routes (PUBACK 0x00 versus 0x10 No
 * matching subscribers, answered before the publisher's PUBACK).
 */
typedef struct lifetime_case {
    const char *name;
    uint8_t version;
    bool first_clean_start;
    uint32_t first_expiry;
    bool disconnect_sets_expiry;
    uint32_t disconnect_expiry;
    bool second_clean_start;
    bool expect_kept;
} lifetime_case;

static const lifetime_case lifetime_cases[] = {
    {"v5 expiry 60, resume", MQTT_V5, true, SESSION_KEPT_S, false, 0, false, true},
    {"v5 expiry 60, Clean Start", MQTT_V5, true, SESSION_KEPT_S, false, 0, true, false},
    {"v5 expiry 0, resume", MQTT_V5, true, 0, false, 0, false, false},
    {"v5 expiry 0 at DISCONNECT", MQTT_V5, true, SESSION_KEPT_S, true, 0, false, false},
    {"v5 expiry raised at DISCONNECT", MQTT_V5, true, 1, true, SESSION_KEPT_S, false, true},
    {"3.1.1 persistent, resume", MQTT_V311, false, 0, false, 0, false, true},
    {"3.1.1 persistent, clean", MQTT_V311, false, 0, false, 0, true, false},
    {"3.1.1 clean, then persistent", MQTT_V311, true, 0, false, 0, false, false},
};

static void test_session_lifetime_table(void **state)
{
    test_server *srv = *state;
    test_client *pub = tc_connect_v5(srv->port, "life-pub");
    for (size_t k = 0; k < sizeof lifetime_cases / sizeof *lifetime_cases; k++) {
        const lifetime_case *lc = &lifetime_cases[k];
        char client_id[32], topic[32];
        snprintf(client_id, sizeof client_id, "life-%zu", k);
        snprintf(topic, sizeof topic, "life/%zu", k);
        print_message("  case: %s\n", lc->name);

        connect_opts o = {.version = lc->version, .client_id = client_id,
                          .clean_start = lc->first_clean_start,
                          .session_expiry = lc->first_expiry};
        bool present = true;
        test_client *sub = tc_connect(srv->port, &o, &present);
        assert_false(present);
        tc_subscribe(sub, topic, 1);
        tc_disconnect(sub, lc->disconnect_sets_expiry, lc->disconnect_expiry);

        o.clean_start = lc->second_clean_start;
        o.session_expiry = SESSION_KEPT_S;
        sub = tc_connect(srv->port, &o, &present);
        if (present != lc->expect_kept)
            fail_msg("%s: Session Present = %d", lc->name, present);
        uint8_t reason = publish_qos1(pub, topic, "probe", (uint16_t)(k + 1));
        if (lc->expect_kept) {
            assert_int_equal(reason, MQTT_RC_SUCCESS);
            tc_ack(sub, MQTT_PUBACK, tc_expect_publish(sub, "probe", 1, DUP_CLEAR), 0);
        } else {
            assert_int_equal(reason, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
        }
        tc_expect_silence(sub);
        tc_disconnect(sub, false, 0);
    }
    tc_disconnect(pub, false, 0);
}

/*
 * A second connection with the same client id takes the session over: the
 * first gets DISCONNECT 0x8E (MQTT 5) or is just closed (3.1.1); the
 * session carries on only if the first connection's expiry kept it.
 */
typedef struct takeover_case {
    uint8_t version;
    bool clean_start;      /* both connections */
    uint32_t expiry;       /* MQTT 5, both connections */
    bool expect_present;
} takeover_case;

static const takeover_case takeover_cases[] = {
    {MQTT_V5, true, SESSION_KEPT_S, false},
    {MQTT_V5, false, SESSION_KEPT_S, true},
    {MQTT_V5, false, 0, false},
    {MQTT_V311, false, 0, true},
    {MQTT_V311, true, 0, false},
};

static void test_session_takeover(void **state)
{
    test_server *srv = *state;
    for (size_t k = 0; k < sizeof takeover_cases / sizeof *takeover_cases; k++) {
        const takeover_case *tk = &takeover_cases[k];
        char client_id[32], topic[32];
        snprintf(client_id, sizeof client_id, "takeover-%zu", k);
        snprintf(topic, sizeof topic, "takeover/%zu", k);
        connect_opts o = {.version = tk->version, .client_id = client_id,
                          .clean_start = tk->clean_start, .session_expiry = tk->expiry};
        bool present = true;
        test_client *first = tc_connect(srv->port, &o, &present);
        assert_false(present);
        tc_subscribe(first, topic, 1);

        test_client *second = tc_connect(srv->port, &o, &present);
        if (present != tk->expect_present)
            fail_msg("case %zu: Session Present = %d", k, present);
        if (tk->version == MQTT_V5) {
            mqtt_packet pkt;
            tc_expect(first, MQTT_DISCONNECT, &pkt);
            assert_int_equal(pkt.u.disconnect.reason, MQTT_RC_SESSION_TAKEN_OVER);
        }
        tc_expect_eof(first);
        tc_close(first);

        /* the new connection is fully usable, the old one gets nothing */
        test_client *pub = tc_connect_v5(srv->port, "takeover-pub");
        uint8_t reason = publish_qos1(pub, topic, "after", 1);
        if (tk->expect_present) {
            assert_int_equal(reason, MQTT_RC_SUCCESS);
            tc_ack(second, MQTT_PUBACK, tc_expect_publish(second, "after", 1, DUP_CLEAR), 0);
        } else {
            assert_int_equal(reason, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
        }
        tc_subscribe(second, topic, 1);
        assert_int_equal(publish_qos1(pub, topic, "again", 2), MQTT_RC_SUCCESS);
        tc_ack(second, MQTT_PUBACK, tc_expect_publish(second, "again", 1, DUP_CLEAR), 0);
        tc_expect_silence(second);
        tc_disconnect(second, false, 0);
        tc_disconnect(pub, false, 0);
    }
}

/* ---- the application's deadline ------------------------------------------- */

/* Expects DISCONNECT `reason`, then the close; returns the ms it took from
 * `since` (time_mono_ms). */
static uint64_t expect_disconnect_after(test_client *tc, uint8_t reason, uint64_t since)
{
    mqtt_packet pkt;
    tc_expect(tc, MQTT_DISCONNECT, &pkt);
    uint64_t took = time_mono_ms() - since;
    assert_int_equal(pkt.u.disconnect.reason, reason);
    tc_expect_eof(tc);
    tc_close(tc);
    return took;
}

static void tc_move_deadline(test_client *tc, const char *ms)
{
    tc_publish(tc, "deadline/move", ms, 0, 0, false);
}

static void test_deadline_passes(void **state)
{
    test_server *srv = *state;
    deadline_app.first_ms = 400;
    uint64_t start = time_mono_ms();
    test_client *tc = tc_connect_v5(srv->port, "deadline-passes");
    uint64_t took = expect_disconnect_after(tc, MQTT_RC_NOT_AUTHORIZED, start);
    if (took < 350 || took > 2500)
        fail_msg("DISCONNECT after %llu ms, deadline 400 ms", (unsigned long long)took);
    assert_int_equal(atomic_load(&deadline_app.passed), 1);
}

/* Moving the deadline (a re-authentication) re-arms the shared timer. */
static void test_deadline_moves(void **state)
{
    test_server *srv = *state;
    deadline_app.first_ms = 500;
    test_client *tc = tc_connect_v5(srv->port, "deadline-moves");
    uint64_t moved = time_mono_ms();
    tc_move_deadline(tc, "1500");
    for (int i = 0; i < 3; i++)
        tc_expect_silence(tc); /* 900 ms: the first deadline is gone */
    uint64_t took = expect_disconnect_after(tc, MQTT_RC_NOT_AUTHORIZED, moved);
    if (took < 1400)
        fail_msg("DISCONNECT %llu ms after the move to 1500 ms", (unsigned long long)took);
    assert_int_equal(atomic_load(&deadline_app.passed), 1);
}

/* A deadline cleared before it passes is never heard of, and the
 * keep-alive (1 s: the timeout at 1.5 s) still fires on the same timer;
 * one far away does not hold the keep-alive back either. */
static void test_deadline_beside_keepalive(void **state)
{
    test_server *srv = *state;
    const char *moves[] = {"0", "60000"};
    for (size_t k = 0; k < 2; k++) {
        deadline_app.first_ms = 800; /* moved long before it passes */
        char id[32];
        snprintf(id, sizeof id, "deadline-keepalive-%zu", k);
        connect_opts o = {.version = MQTT_V5, .client_id = id, .clean_start = true,
                          .keep_alive = 1};
        test_client *tc = tc_connect(srv->port, &o, NULL);
        uint64_t start = time_mono_ms();
        tc_move_deadline(tc, moves[k]);
        uint64_t took = expect_disconnect_after(tc, MQTT_RC_KEEP_ALIVE_TIMEOUT, start);
        if (took < 1300 || took > 3000)
            fail_msg("keep-alive timeout after %llu ms", (unsigned long long)took);
    }
    assert_int_equal(atomic_load(&deadline_app.passed), 0);
}

/* ---- finding a connected client by its client id ------------------------ */

/* One broker_find_connected, run as a task on a loop; the test thread
 * waits for its answer. */
typedef struct find_probe {
    broker *b;
    const char *client_id;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    broker_client_handle found; /* 0 = NULL */
    bool on_its_loop;           /* the client found lives on the loop asked */
    bool id_matches;
    bool lookup_agrees;         /* broker_client_lookup finds it by its handle */
    broker_client_handle stale; /* optional: a handle to look up too */
    bool stale_found;           /* broker_client_lookup found one by it */
} find_probe;

static void find_probe_task(net_loop *loop, void *arg)
{
    find_probe *p = arg;
    size_t len = strlen(p->client_id);
    broker_client *c = broker_find_connected(p->b, loop, p->client_id, len);
    pthread_mutex_lock(&p->lock);
    if (c) {
        mqtt_bytes id = broker_client_get_info(c)->client_id;
        p->found = broker_client_get_handle(c);
        p->on_its_loop = broker_client_loop(c) == loop;
        p->id_matches = mqtt_bytes_eq_str(id, p->client_id);
        p->lookup_agrees = broker_client_lookup(p->b, loop, p->client_id, len, p->found) == c;
    }
    if (p->stale)
        p->stale_found = broker_client_lookup(p->b, loop, p->client_id, len, p->stale) != NULL;
    p->done = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* What broker_find_connected answers for `client_id` on `loop` now: the
 * handle of the client found, 0 when none. With `stale`, also asserts that
 * broker_client_lookup finds nothing by that (earlier) handle. */
static broker_client_handle find_on_checking(test_server *srv, net_loop *loop,
                                             const char *client_id, broker_client_handle stale)
{
    find_probe p = {.b = srv->broker, .client_id = client_id, .stale = stale};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.cond, NULL);
    net_loop_post(loop, find_probe_task, &p);
    pthread_mutex_lock(&p.lock);
    while (!p.done)
        pthread_cond_wait(&p.cond, &p.lock);
    pthread_mutex_unlock(&p.lock);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.lock);
    if (p.found) {
        assert_true(p.on_its_loop);
        assert_true(p.id_matches);
        assert_true(p.lookup_agrees);
    }
    assert_false(p.stale_found);
    return p.found;
}

static broker_client_handle find_on(test_server *srv, net_loop *loop, const char *client_id)
{
    return find_on_checking(srv, loop, client_id, 0);
}

static broker_client_handle find_on_owner(test_server *srv, const char *client_id)
{
    return find_on(srv, broker_owner_net_loop(srv->broker, client_id, strlen(client_id)),
                   client_id);
}

/* The record of the close of `closed`, waited for (the app hears of a
 * close after the client saw the connection end). */
static close_record wait_close(broker_client_handle closed)
{
    for (int i = 0; i < SOCKET_TIMEOUT_S * 100; i++) {
        pthread_mutex_lock(&find_app.lock);
        for (size_t k = 0; k < find_app.nclosed; k++) {
            if (find_app.closes[k].closed == closed) {
                close_record r = find_app.closes[k];
                pthread_mutex_unlock(&find_app.lock);
                return r;
            }
        }
        pthread_mutex_unlock(&find_app.lock);
        usleep(10000);
    }
    fail_msg("disconnected() was not called for client %llu", (unsigned long long)closed);
    return (close_record){0};
}

/* The owner loop is a pure function of the client id, and the ids spread
 * over the loops. */
static void test_owner_loop_of_client_id(void **state)
{
    test_server *srv = *state;
    bool used[2] = {false, false};
    for (int i = 0; i < 32; i++) {
        char id[24];
        snprintf(id, sizeof id, "owner-%d", i);
        net_loop *loop = broker_owner_net_loop(srv->broker, id, strlen(id));
        assert_ptr_equal(loop, broker_owner_net_loop(srv->broker, id, strlen(id)));
        unsigned index = net_loop_index(loop);
        assert_true(index < 2);
        assert_ptr_equal(loop, net_server_loop(srv->net, index));
        used[index] = true;
    }
    assert_true(used[0] && used[1]);
}

/* broker_find_connected through a connection's life: nothing before it,
 * the client on its owner loop (and nothing on the other loop), the new
 * connection after a take-over (also inside the old one's disconnected()),
 * nothing once it ended (inside its own disconnected() too), though its
 * session is kept, and the resumed connection after that. */
static void test_find_connected(void **state)
{
    test_server *srv = *state;
    const char *id = "find-me";
    net_loop *owner = broker_owner_net_loop(srv->broker, id, strlen(id));
    net_loop *other = net_server_loop(srv->net, 1 - net_loop_index(owner));
    assert_int_equal(find_on_owner(srv, id), 0);

    connect_opts o = {.version = MQTT_V5, .client_id = id, .clean_start = true,
                      .session_expiry = SESSION_KEPT_S};
    test_client *first = tc_connect(srv->port, &o, NULL);
    broker_client_handle h1 = find_on_owner(srv, id);
    assert_int_not_equal(h1, 0);
    assert_int_equal(find_on(srv, other, id), 0);
    assert_int_equal(find_on_owner(srv, "find-me-not"), 0);

    /* take-over: the new connection, at once and in the old one's close */
    bool present = false;
    o.clean_start = false;
    test_client *second = tc_connect(srv->port, &o, &present);
    assert_true(present);
    mqtt_packet pkt;
    tc_expect(first, MQTT_DISCONNECT, &pkt);
    assert_int_equal(pkt.u.disconnect.reason, MQTT_RC_SESSION_TAKEN_OVER);
    tc_expect_eof(first);
    tc_close(first);
    broker_client_handle h2 = find_on_checking(srv, owner, id, h1); /* h1: gone */
    assert_int_not_equal(h2, 0);
    assert_int_not_equal(h2, h1);
    close_record r1 = wait_close(h1);
    assert_int_equal(r1.found, h2);

    /* the end: nothing, though the session stays for a resume */
    tc_disconnect(second, false, 0);
    close_record r2 = wait_close(h2);
    assert_int_equal(r2.found, 0);
    assert_int_equal(find_on_owner(srv, id), 0);

    test_client *third = tc_connect(srv->port, &o, &present);
    assert_true(present);
    broker_client_handle h3 = find_on_owner(srv, id);
    assert_int_not_equal(h3, 0);
    assert_true(h3 != h1 && h3 != h2);
    tc_close(third); /* network loss: the same as a DISCONNECT here */
    assert_int_equal(wait_close(h3).found, 0);
    assert_int_equal(find_on_owner(srv, id), 0);
}

int main(void)
{
    alarm(180);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qos1_inbound_puback, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_outbound_window_honours_receive_maximum,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_qos2_inbound_exactly_once, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_qos2_outbound_flow, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_session_resume_redelivers, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_session_lifetime_table, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_session_takeover, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_passes, deadline_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_moves, deadline_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_beside_keepalive, deadline_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_owner_loop_of_client_id, find_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_find_connected, find_server_setup, server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
